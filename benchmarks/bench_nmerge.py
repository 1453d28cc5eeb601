"""n-merge benchmark: one request with n=K versus K separate requests, on a real vLLM server.

Starts a vLLM OpenAI server on 127.0.0.1 (CPU, the embedded SmolLM2-135M; or uses --base-url),
then for each of a few problems sends a round of K identical prompts
  (a) as ONE request with n=K          (OpenAIEngine(use_n=True))
  (b) as K concurrent requests, n=1    (OpenAIEngine(use_n=False))
with the same prompt and seed, so both modes generate the same samples (vLLM seeds child i
with seed+i; use_n=False sends seed+i) and differ only in how the prompt reaches the server.
The order of (a) and (b) alternates per problem, and the server's prefix cache is emptied
before every round (POST /reset_prefix_cache, server started with VLLM_SERVER_DEV_MODE=1), so
no round reuses another's prefill. Prefill work is read from the server's Prometheus
counter vllm:prompt_tokens_by_source_total (local_compute, local_cache_hit) as deltas.

    python benchmarks/bench_nmerge.py [--k 8] [--problems 3] [--max-tokens 32] [--no-prefix-caching]
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import anyio
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pacore_agents import ChatMessage, GenerationRequest, RequestMetadata, SamplingParams
from pacore_agents._ids import ProblemId
from pacore_agents.engines import ensure_embedded_model
from pacore_agents.engines._openai import OpenAIEngine
from tests._vllm_server import (
    SERVED_NAME,
    delta,
    reset_prefix_cache,
    settled_counters,
    vllm_server,
)


@dataclass
class Row:
    problem: int
    mode: str
    prompt_tokens: int
    computed: int
    cache_hit: int
    completion_tokens: int
    seconds: float


def prompt_for(problem: int, facts: int) -> tuple[ChatMessage, ...]:
    context = " ".join(f"Fact {i}: {i} + {problem + 1} = {i + problem + 1}." for i in range(facts))
    return (
        ChatMessage(role="system", content=f"Case {problem}. You are a careful solver. {context}"),
        ChatMessage(role="user", content=f"What is {problem + 12} + {problem + 29}? Think briefly."),
    )


async def one_round(engine: OpenAIEngine, http: httpx.AsyncClient, url: str, problem: int,
                    mode: str, args: argparse.Namespace) -> Row:
    engine.use_n = mode == "n=K"
    request = GenerationRequest(
        messages=prompt_for(problem, args.facts), n=args.k,
        sampling=SamplingParams(temperature=1.0, top_p=1.0, max_tokens=args.max_tokens, seed=1000 + problem),
        metadata=RequestMetadata(problem_id=ProblemId(f"p{problem}")),
    )
    await reset_prefix_cache(http, url)
    before = await settled_counters(http, url)
    start = time.perf_counter()
    out = await engine.generate(request)
    seconds = time.perf_counter() - start
    d = delta(await settled_counters(http, url), before)
    return Row(problem, mode, out[0].usage.prompt_tokens, d["local_compute"], d["local_cache_hit"],
               sum(c.usage.completion_tokens for c in out), seconds)


async def bench(url: str, args: argparse.Namespace) -> list[Row]:
    rows: list[Row] = []
    async with OpenAIEngine(url, model=SERVED_NAME, timeout=600, seed_requests=True) as engine, httpx.AsyncClient() as http:
        warm = GenerationRequest(messages=prompt_for(99, args.facts), n=2,
                                 sampling=SamplingParams(max_tokens=8, seed=0))
        await engine.generate(warm)
        for problem in range(args.problems):
            modes = ["n=K", "K x n=1"] if problem % 2 == 0 else ["K x n=1", "n=K"]
            for mode in modes:
                row = await one_round(engine, http, url, problem, mode, args)
                rows.append(row)
                print(f"  problem {problem} {mode:8s} computed={row.computed} hit={row.cache_hit} "
                      f"{row.seconds:.2f}s", file=sys.stderr)
    return rows


def report(rows: list[Row], args: argparse.Namespace, command: str) -> None:
    k = args.k
    print(f"\nn-merge benchmark: K={k}, {args.problems} problems, max_tokens={args.max_tokens}, "
          f"prefix caching {'OFF' if args.no_prefix_caching else 'ON'}"
          + (f", server args {' '.join(args.server_arg)}" if args.server_arg else ""))
    print(f"{'problem':>7} {'mode':>8} {'prompt':>6} {'K*prompt':>8} {'computed':>8} {'cache hit':>9} "
          f"{'gen tok':>7} {'wall s':>7}")
    for r in rows:
        print(f"{r.problem:>7} {r.mode:>8} {r.prompt_tokens:>6} {k * r.prompt_tokens:>8} {r.computed:>8} "
              f"{r.cache_hit:>9} {r.completion_tokens:>7} {r.seconds:>7.2f}")
    merged = [r for r in rows if r.mode == "n=K"]
    separate = [r for r in rows if r.mode != "n=K"]
    comp_m, comp_s = sum(r.computed for r in merged), sum(r.computed for r in separate)
    unshared = sum(k * r.prompt_tokens for r in merged)
    wall_m, wall_s = sum(r.seconds for r in merged), sum(r.seconds for r in separate)
    ratios = [m.seconds / s.seconds for m, s in zip(sorted(merged, key=lambda r: r.problem),
                                                     sorted(separate, key=lambda r: r.problem), strict=True)]
    print("\ntotals over problems:")
    print(f"  prefill computed   n=K: {comp_m}   K x n=1: {comp_s}   ratio n=K / separate: "
          f"{comp_m / comp_s:.3f}   (unshared K*prompt: {unshared}; n=K / unshared: {comp_m / unshared:.3f})")
    print(f"  wall time          n=K: {wall_m:.2f}s   K x n=1: {wall_s:.2f}s   ratio: {wall_m / wall_s:.3f} "
          f"(per-problem median {statistics.median(ratios):.3f})")
    gen_m, gen_s = sum(r.completion_tokens for r in merged), sum(r.completion_tokens for r in separate)
    print(f"  generated tokens   n=K: {gen_m}   K x n=1: {gen_s}   (same prompts and seeds: equal samples)")
    print(f"\nreproduce: {command}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--k", type=int, default=8, help="samples per round (default 8)")
    parser.add_argument("--problems", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--facts", type=int, default=30, help="prompt length knob (30 ~ 500 tokens)")
    parser.add_argument("--no-prefix-caching", action="store_true", help="start the server without it")
    parser.add_argument("--server-arg", action="append", default=[], metavar="ARG",
                        help="extra vLLM server argument (repeatable), e.g. --server-arg=--no-enable-chunked-prefill")
    parser.add_argument("--base-url", help="use this running server (started with VLLM_SERVER_DEV_MODE=1)")
    parser.add_argument("--startup-timeout", type=float, default=400.0, help="seconds to wait for /health")
    args = parser.parse_args()
    command = "python benchmarks/bench_nmerge.py " + shlex.join(sys.argv[1:])
    with ExitStack() as stack:
        if args.base_url:
            url = args.base_url
        else:
            extra = (["--no-enable-prefix-caching"] if args.no_prefix_caching else []) + args.server_arg
            print("starting the vLLM server ...", file=sys.stderr)
            url, _proc = stack.enter_context(vllm_server(ensure_embedded_model(progress=False),
                                                         extra_args=extra,
                                                         env={"VLLM_SERVER_DEV_MODE": "1"},
                                                         startup_timeout=args.startup_timeout))
        rows = anyio.run(bench, url, args)
    report(rows, args, command)


if __name__ == "__main__":
    main()
