"""Helpers of the in-process vLLM engine (``_vllm``) that hold no engine state: the CPU's bf16
support, the reasoning split of a generated text, a request's sampling parameters, one request
run to its end, vLLM errors as ``EngineError``s, a started engine's capacity, and a shutdown that
waits until every process the engine started is gone."""

from __future__ import annotations

import contextlib
import re
from typing import Any

import anyio

from pacore_agents._engine import GenerationRequest, Tally, TextCallback
from pacore_agents._errors import EngineError
from pacore_agents._logging import get_logger

log = get_logger("pacore_agents.engines.vllm")

#: the sequence length ``info.max_sequences`` assumes when it bounds the batch by the KV cache
TYPICAL_SEQUENCE_TOKENS = 1024
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
    computes bf16 natively (emulated bf16 decoded ~2.5x slower than float32 on one machine,
    ~1.5x faster on another and ~4x slower on a third, where a bf16 matmul took 80x a float32
    one: BENCHMARKS.md; the safe default is the one that is never pathological)."""
    if requested != "auto":
        return requested
    if embedded:
        return EMBEDDED_CPU_DTYPE
    return "auto" if native_bf16 else "float32"


def sampling_params(request: GenerationRequest, defaults: dict[str, Any], max_tokens: int) -> Any:
    """vLLM's ``SamplingParams`` for ``request`` over the model's ``defaults``, with
    ``FINAL_ONLY`` outputs; values vLLM refuses are a non-retryable ``EngineError``."""
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    kwargs = dict(defaults)
    s = request.sampling
    for name in ("temperature", "top_p", "top_k", "seed", "presence_penalty", "frequency_penalty"):
        value = getattr(s, name)
        if value is not None:
            kwargs[name] = value
    if s.stop:
        kwargs["stop"] = list(s.stop)
    kwargs.update(n=request.n, max_tokens=max_tokens, output_kind=RequestOutputKind.FINAL_ONLY)
    try:
        return SamplingParams(**kwargs)
    except Exception as exc:  # vLLM's VLLMValidationError, ValueError, TypeError
        raise EngineError(f"invalid sampling parameters for vLLM: {exc}", retryable=False) from exc


async def run_request(llm: Any, ids: list[int], params: Any, request_id: str, priority: int,
                      on_text: TextCallback | None, tally: Tally | None) -> Any:
    """One request to the end; cancellation aborts it (vLLM's generator does, and we make
    sure with a shielded abort). With ``on_text`` or a ``tally`` the outputs are deltas
    (each holds the new text and token ids only), merged into one final output: ``on_text``
    gets each piece of text, ``tally`` counts the token ids."""
    final: Any = None
    try:
        if on_text is not None or tally is not None:
            from vllm.sampling_params import RequestOutputKind

            params.output_kind = RequestOutputKind.DELTA
        prompt: Any = {"prompt_token_ids": ids}
        renderer = getattr(llm, "renderer", None)
        if renderer is not None and hasattr(renderer, "render_cmpl_async"):
            (prompt,) = await renderer.render_cmpl_async([prompt])
        stream_it = llm.generate(prompt, params, request_id, priority=priority)
        async with contextlib.aclosing(stream_it) as stream:
            async for out in stream:
                if on_text is None and tally is None:
                    final = out
                    continue
                for piece in out.outputs:
                    if piece.text and on_text is not None:
                        on_text(piece.text)
                    if tally is not None:
                        tally.tokens = (tally.tokens or 0) + len(piece.token_ids)
                if final is None:
                    final = out
                else:
                    final.add(out, aggregate=True)
    except anyio.get_cancelled_exc_class():
        with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
            await llm.abort(request_id)
        raise
    except Exception as exc:
        raise map_error(exc, llm, request_id) from exc
    if final is None or not final.finished:
        raise EngineError(f"vLLM request {request_id} ended without a final output", retryable=True)
    return final


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


def capacity(config: Any, max_model_len: int) -> dict[str, Any]:
    """Block size, scheduling policy, ``max_num_seqs``, KV cache tokens and the sequences the
    KV cache holds at the typical length (see ``_vllm``'s docstring) of a started engine."""
    cache, scheduler = config.cache_config, config.scheduler_config
    block = int(cache.block_size)
    kv_tokens = int(cache.num_gpu_blocks or 0) * block
    max_num_seqs = int(scheduler.max_num_seqs)
    typical = max(1, min(max_model_len, TYPICAL_SEQUENCE_TOKENS))
    return {"block_size": block, "scheduling_policy": str(scheduler.policy),
            "max_num_seqs": max_num_seqs, "kv_cache_tokens": kv_tokens,
            "capacity_sequences": max(1, min(max_num_seqs, kv_tokens // typical))}


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
