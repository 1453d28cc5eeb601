"""``pacore serve`` benchmarks.

1. ``--part overhead``: the server's cost per request. A zero-latency FunctionEngine
   (``tests.fixtures.handlers:answer``), pacore-low (5 nodes). Side by side: direct ``run()``
   calls in this process vs chat completions through a ``pacore serve`` subprocess (the
   official async ``openai`` client), both sequential (latency) and C concurrent (throughput).
2. ``--part engine``: the embedded vLLM CPU engine. Its ceiling (completion tokens/s of
   ``--ceiling-parallel`` plain requests), then the same P GSM8K problems through pacore-low:
   (a) as a study runs them, concurrent ``run()`` calls on one engine in this process, and
   (b) P concurrent clients of a ``pacore serve`` subprocess on the same engine settings,
   alternating (a) and (b) ``--repeats`` times. Each is reported as effective TTC per second
   and as a fraction of the ceiling.

    python benchmarks/bench_serve.py --part overhead [--requests 400] [--concurrency 16]
    python benchmarks/bench_serve.py --part engine [--problems 16] [--max-tokens 128]
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import httpx
import openai

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")

from pacore_agents import (  # noqa: E402
    FunctionEngine,
    GenerationRequest,
    RunConfig,
    SamplingParams,
    load_topology,
    run,
)
from pacore_agents._messages import ChatMessage  # noqa: E402
from pacore_agents.serve import ServeSettings, create_app  # noqa: E402
from tests.fixtures.handlers import answer  # noqa: E402

PROBLEM = "What is the sum of the integers from 1 to 100?"


# ---- helpers ----------------------------------------------------------------------------------

class ServeProcess:
    """``pacore serve`` on a free port, stopped with SIGTERM."""

    def __init__(self, *flags: str, timeout: float = 900) -> None:
        self.log = Path(f"/tmp/bench-serve-{os.getpid()}.log")
        self._file = self.log.open("w")
        self.proc = subprocess.Popen([sys.executable, "-m", "pacore_agents", "serve", "--port", "0", *flags],
                                     cwd=REPO, stdout=self._file, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while "listening on" not in self.log.read_text():
            self._check(deadline)
        line = next(x for x in self.log.read_text().splitlines() if "listening on" in x)
        self.url = line.split("listening on ")[1].split()[0]
        while httpx.get(self.url.removesuffix("/v1") + "/health").status_code != 200:
            self._check(deadline)

    def _check(self, deadline: float) -> None:
        if self.proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"pacore serve did not start:\n{self.log.read_text()}")
        time.sleep(0.1)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(120)
        self._file.close()


async def concurrently(count: int, concurrency: int, one: Callable[[int], Awaitable[int]]) -> tuple[float, int]:
    """Call ``one(i)`` for i < count with at most ``concurrency`` in flight: (seconds, sum)."""
    limiter = anyio.CapacityLimiter(concurrency)
    total = [0]

    async def guarded(i: int) -> None:
        async with limiter:
            done = await one(i)  # not `total[0] += await ...`: that reads total[0] before awaiting
            total[0] += done

    started = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for i in range(count):
            tg.start_soon(guarded, i)
    return time.perf_counter() - started, total[0]


# ---- 1. overhead --------------------------------------------------------------------------------

async def overhead(args: argparse.Namespace) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    engine = FunctionEngine(answer)
    config = RunConfig(seed=1)
    topology = load_topology("pacore-low")  # loaded once, as the server does

    async def direct(i: int) -> int:
        result = await run([{"role": "user", "content": f"{PROBLEM} ({i})"}], topology, engine, config=config)
        return result.trace.effective_ttc

    server = ServeProcess("--engine", "function:tests.fixtures.handlers:answer", "--keep-traces", "64")
    try:
        async with openai.AsyncOpenAI(base_url=server.url, api_key="none", max_retries=0) as client:
            async def served(i: int) -> int:
                out = await client.chat.completions.create(
                    model="pacore-low", seed=1, messages=[{"role": "user", "content": f"{PROBLEM} ({i})"}])
                return out.usage.completion_tokens if out.usage else 0

            await concurrently(20, 4, served)  # warm-up
            await concurrently(20, 4, direct)
            seq = args.sequential
            d_seq, _ = await concurrently(seq, 1, direct)
            s_seq, _ = await concurrently(seq, 1, served)
            d_par, _ = await concurrently(args.requests, args.concurrency, direct)
            s_par, _ = await concurrently(args.requests, args.concurrency, served)
    finally:
        server.stop()
    app = create_app(FunctionEngine(answer), ServeSettings(keep_traces=64))
    await app.state.pacore.start_engine()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://asgi") as asgi:
        async def in_process(i: int) -> int:
            r = await asgi.post("/v1/chat/completions", json={
                "model": "pacore-low", "seed": 1, "messages": [{"role": "user", "content": f"{PROBLEM} ({i})"}]})
            return int(r.json()["usage"]["completion_tokens"])

        await concurrently(20, 1, in_process)
        a_seq, _ = await concurrently(seq, 1, in_process)
    rows.append((f"sequential, {seq} requests: direct run()", f"{1000 * d_seq / seq:.2f} ms per run"))
    rows.append((f"sequential, {seq} requests: through pacore serve", f"{1000 * s_seq / seq:.2f} ms per request"))
    rows.append(("server overhead per request (latency)", f"{1000 * (s_seq - d_seq) / seq:.2f} ms"))
    rows.append((f"sequential, {seq} requests: the app in-process (ASGI, no network, no openai client)",
                 f"{1000 * a_seq / seq:.2f} ms per request ({1000 * (a_seq - d_seq) / seq:+.2f} ms vs direct)"))
    rows.append((f"{args.concurrency} concurrent, {args.requests} requests: direct run()",
                 f"{args.requests / d_par:.0f} runs/s"))
    rows.append((f"{args.concurrency} concurrent, {args.requests} requests: through pacore serve",
                 f"{args.requests / s_par:.0f} requests/s"))
    rows.append(("server overhead per request (throughput)", f"{1000 * (s_par - d_par) / args.requests:.2f} ms"))
    return rows


# ---- 2. engine ----------------------------------------------------------------------------------

def gsm8k(count: int) -> list[str]:
    from pacore_agents.studies._datasets import DatasetSpec, load_problems

    problems = load_problems(DatasetSpec(name="gsm8k", limit=count))
    return [p.statement for p in problems][:count]


async def engine_part(args: argparse.Namespace) -> list[tuple[str, str]]:
    """The server starts first (its engine idles while this process measures); then the
    ceiling, then ``--repeats`` rounds of (study, serve), alternating, on equal engines."""
    from pacore_agents.engines import create_engine

    rows: list[tuple[str, str]] = []
    problems = gsm8k(args.problems)
    sampling = SamplingParams(temperature=1.0, top_p=1.0, max_tokens=args.max_tokens)
    config = RunConfig(sampling=sampling, seed=1)
    topology = load_topology("pacore-low")
    server = ServeProcess("--max-model-len", str(args.max_model_len), "--max-tokens", str(args.max_tokens))
    engine = create_engine({"kind": "vllm", "max_model_len": args.max_model_len})
    try:
        async with engine, openai.AsyncOpenAI(base_url=server.url, api_key="none", max_retries=0,
                                              timeout=1800) as client:
            await engine.start()
            warm = [{"role": "user", "content": "hi"}]
            await run(warm, topology, engine, config=config.model_copy(update={"sampling": SamplingParams(max_tokens=8)}))
            await client.chat.completions.create(model="pacore-low", max_tokens=8, messages=warm)  # type: ignore[arg-type]
            parallel = args.ceiling_parallel or engine.info.max_sequences or 64

            async def plain(i: int) -> int:
                (done,) = await engine.generate(GenerationRequest(
                    messages=(ChatMessage(role="user", content=f"Story {i}: a robot learns to paint."),),
                    sampling=sampling.model_copy(update={"seed": i})))
                return done.usage.completion_tokens

            wall, tokens = await concurrently(parallel, parallel, plain)
            ceiling = tokens / wall
            rows.append((f"engine ceiling: {parallel} parallel requests (the engine's window), max_tokens "
                         f"{args.max_tokens}", f"{tokens} tokens in {wall:.1f} s = {ceiling:.0f} tok/s"))

            async def study_like(i: int) -> int:
                result = await run(problems[i], topology, engine, config=config)
                return result.trace.effective_ttc

            async def served(i: int) -> int:
                out = await client.chat.completions.create(model="pacore-low", seed=1,  # type: ignore[call-overload]
                                                           messages=[{"role": "user", "content": problems[i]}])
                return out.usage.completion_tokens if out.usage else 0

            for rep in range(1, args.repeats + 1):
                for name, one in ((f"study: {len(problems)} problems x pacore-low, concurrent run()", study_like),
                                  (f"serve: {len(problems)} concurrent clients x pacore-low", served)):
                    wall, ttc = await concurrently(len(problems), len(problems), one)
                    rows.append((f"{name} [{rep}]", f"TTC {ttc} in {wall:.1f} s = {ttc / wall:.0f} tok/s = "
                                                   f"{ttc / wall / ceiling:.0%} of ceiling"))
    finally:
        server.stop()
    return rows


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=["overhead", "engine"], required=True)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--sequential", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--problems", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--max-model-len", type=int, default=2048)
    parser.add_argument("--ceiling-parallel", type=int, default=None, help="default: the engine's window")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    rows = anyio.run(overhead if args.part == "overhead" else engine_part, args)
    width = max(len(name) for name, _ in rows)
    print()
    for name, value in rows:
        print(f"{name.ljust(width)}  {value}")
    print(f"\ncommand: python {shlex.join(sys.argv)}")


if __name__ == "__main__":  # the engine spawns processes (multiprocessing spawn): keep this guard
    cli()
