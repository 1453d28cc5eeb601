"""In-process vLLM engine benchmark (CPU, the embedded SmolLM2-135M by default).

Measures
  1. engine start: from ``VLLMEngine(...)`` to ready (the converted model already cached),
  2. decode throughput: completion tokens per second of P parallel requests (n=1 each),
  3. a pacore-low run (K=[4] + sink) on one problem: effective TTC per second of wall time.

    python benchmarks/bench_engine.py [--parallel 8] [--max-tokens 128] [--model DIR]
                                      [--max-model-len 2048] [--kv-gb 1] [--no-pacore]
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pacore_agents import ChatMessage, GenerationRequest, SamplingParams
from pacore_agents.engines._embedded import ensure_embedded_model
from pacore_agents.engines._vllm import VLLMEngine

PROBLEM = ("Natalia sold clips to 48 of her friends in April, and then she sold half as many clips "
           "in May. How many clips did Natalia sell altogether in April and May?")


def request(i: int, max_tokens: int) -> GenerationRequest:
    text = f"Story {i}: write a short story about a robot who learns to paint."
    return GenerationRequest(messages=(ChatMessage(role="user", content=text),),
                             sampling=SamplingParams(temperature=1.0, top_p=1.0, max_tokens=max_tokens,
                                                     seed=i))


async def main(args: argparse.Namespace) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    model = args.model or str(ensure_embedded_model())
    engine = VLLMEngine(model, max_model_len=args.max_model_len, kv_cache_space_gb=args.kv_gb, dtype=args.dtype)
    async with engine:
        started = time.perf_counter()
        await engine.start()
        rows.append(("engine start (model cached)", f"{time.perf_counter() - started:.1f} s"))
        await engine.generate(request(-1, 8))  # warm-up

        results: list[int] = []

        async def one(i: int) -> None:
            (done,) = await engine.generate(request(i, args.max_tokens))
            results.append(done.usage.completion_tokens)

        started = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for i in range(args.parallel):
                tg.start_soon(one, i)
        wall = time.perf_counter() - started
        tokens = sum(results)
        rows.append((f"{args.parallel} parallel requests, max_tokens {args.max_tokens}",
                     f"{tokens} tokens in {wall:.1f} s = {tokens / wall:.0f} tok/s"))

        if not args.no_pacore:
            from pacore_agents import RunConfig, run

            config = RunConfig(sampling=SamplingParams(temperature=1.0, top_p=1.0,
                                                       max_tokens=args.max_tokens))
            before = await engine.stats()
            started = time.perf_counter()
            result = await run(PROBLEM, "pacore-low", engine, config=config)
            wall = time.perf_counter() - started
            after = await engine.stats()
            ttc = result.trace.effective_ttc
            rows.append((f"pacore-low run (5 nodes), max_tokens {args.max_tokens}",
                         f"TTC {ttc} tokens in {wall:.1f} s = {ttc / wall:.0f} tok/s"))
            if before is not None and after is not None:
                computed = (after.prefill_computed_tokens or 0) - (before.prefill_computed_tokens or 0)
                cached = (after.prefill_cached_tokens or 0) - (before.prefill_cached_tokens or 0)
                rows.append(("pacore-low prefill (engine stats)",
                             f"{computed} tokens computed, {cached} from the prefix cache "
                             f"(block {engine.info.details.get('block_size')})"))
    return rows


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="local model directory (default: the embedded SmolLM2-135M)")
    parser.add_argument("--parallel", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--max-model-len", type=int, default=2048)
    parser.add_argument("--kv-gb", type=float, default=1.0)
    parser.add_argument("--dtype", default="auto", help="vLLM dtype (auto: the engine's CPU default)")
    parser.add_argument("--no-pacore", action="store_true", help="skip the pacore-low run")
    args = parser.parse_args()
    rows = anyio.run(main, args)
    width = max(len(name) for name, _ in rows)
    print()
    print(f"{'measure'.ljust(width)}  result")
    print(f"{'-' * width}  {'-' * 40}")
    for name, value in rows:
        print(f"{name.ljust(width)}  {value}")
    print(f"\ncommand: python {shlex.join(sys.argv)}")


if __name__ == "__main__":  # the engine spawns processes (multiprocessing spawn): keep this guard
    cli()
