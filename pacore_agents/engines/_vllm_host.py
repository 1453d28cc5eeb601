"""Host-side helpers of the in-process vLLM engine (``_vllm``): the CPU's bf16 support, the
reasoning split of a generated text, vLLM errors as ``EngineError``s, and a shutdown that waits
until every process the engine started is gone."""

from __future__ import annotations

import contextlib
import re
from typing import Any

import anyio

from pacore_agents._errors import EngineError
from pacore_agents._logging import get_logger

log = get_logger("pacore_agents.engines.vllm")

_THINK_END = "</think>"
_THINK_START = re.compile(r"^\s*<think>")


def split_reasoning(text: str) -> str | None:
    """The text before the last ``</think>`` (a leading ``<think>`` removed, stripped), or
    ``None`` if ``text`` has no ``</think>``."""
    head, sep, _ = text.rpartition(_THINK_END)
    if not sep:
        return None
    return _THINK_START.sub("", head, count=1).strip()


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX); False if unknown."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


#: the embedded SmolLM2-135M computes in float32 on every CPU: on CPUs with native bf16 its
#: greedy answers change in bfloat16 ("What is the capital of France?" turns from "Paris" into
#: "L'Étoile, la Marseillaise, ..."); one dtype everywhere keeps its answers and example numbers
#: the same on every CPU. The price is speed (bf16 decoded 1.3-2x faster on an AVX2-only CPU);
#: accuracy on the arithmetic study showed no difference (BENCHMARKS.md, "The embedded model's
#: dtype").
EMBEDDED_CPU_DTYPE = "float32"


def cpu_dtype(requested: str, *, embedded: bool, native_bf16: bool) -> str:
    """The dtype vLLM's CPU build gets for ``requested``: an explicit dtype as given; for
    ``auto``, ``EMBEDDED_CPU_DTYPE`` for the embedded model, else float32 unless the CPU
    computes bf16 natively (emulated bf16 decoded ~2.5x slower than float32 on one machine and
    ~1.5x faster on another: BENCHMARKS.md)."""
    if requested != "auto":
        return requested
    if embedded:
        return EMBEDDED_CPU_DTYPE
    return "auto" if native_bf16 else "float32"


def map_error(exc: Exception, llm: Any, request_id: str) -> EngineError:
    """A vLLM exception as an ``EngineError``: a dead engine or a bad request is final."""
    if isinstance(exc, EngineError):
        return exc
    dead = bool(getattr(llm, "errored", False)) or type(exc).__name__ == "EngineDeadError"
    client_error = isinstance(exc, ValueError) or any(
        c.__name__ == "VLLMClientError" for c in type(exc).__mro__)
    cause = exc.__cause__ if type(exc).__name__ == "EngineGenerateError" and exc.__cause__ else exc
    what = "the vLLM engine died" if dead else "vLLM rejected the request" if client_error else "vLLM failed"
    return EngineError(f"{what} ({request_id}): {type(cause).__name__}: {cause}",
                       retryable=not (dead or client_error))


async def shutdown(llm: Any) -> None:
    """Stop the output handler on the loop, then shut the engine down in a worker thread."""
    handler = getattr(llm, "output_handler", None)
    if handler is not None and not handler.done():
        handler.cancel()  # else it logs the engine core's exit as an error
    await anyio.to_thread.run_sync(shutdown_blocking, llm)


def shutdown_blocking(llm: Any) -> None:
    """``llm.shutdown()``, then wait until every process it had started is gone (vLLM SIGKILLs
    a slow engine core after a grace period, but returns before its workers have died)."""
    import multiprocessing

    import psutil  # type: ignore[import-untyped,unused-ignore]  # a dependency of vLLM

    procs = engine_processes(llm)
    try:
        llm.shutdown()
    except Exception as exc:  # shutting down must not mask what ended the run
        log.warning("vLLM shutdown failed", error=f"{type(exc).__name__}: {exc}")
    _, alive = psutil.wait_procs(procs, timeout=10)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            log.warning("killing a vLLM process that outlived shutdown", pid=proc.pid)
            proc.kill()
    psutil.wait_procs(alive, timeout=5)
    multiprocessing.active_children()  # reap exited engine-core processes (no zombies)


def engine_processes(llm: Any) -> list[Any]:
    """The engine-core processes this ``AsyncLLM`` started and their descendants (workers)."""
    import psutil  # type: ignore[import-untyped,unused-ignore]

    manager = getattr(getattr(getattr(llm, "engine_core", None), "resources", None),
                      "engine_manager", None)
    found: list[Any] = []
    for core in getattr(manager, "processes", None) or []:
        with contextlib.suppress(psutil.Error, ValueError, TypeError):
            proc = psutil.Process(core.pid)
            found += [proc, *proc.children(recursive=True)]
    return found
