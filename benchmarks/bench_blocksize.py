"""KV block size of the in-process vLLM engine on CPU: decode speed vs prefill computed.

vLLM caches full KV blocks only, so every sibling of an n-merge (and every synthesis prompt
that extends a shared prefix) recomputes its prompt's last partial block: smaller blocks waste
less prefill, if they do not slow decode. For each block size (vLLM CPU takes multiples of 32)
this starts one ``VLLMEngine`` per repeat, alternating the sizes (the order rotates each repeat:
the machine is shared and noisy), and measures on the same seeds:

  decode      ``--decode`` parallel short prompts, ``--decode-tokens`` each: completion tok/s;
  pacore-like ``--problems`` problems at once, each ``--siblings`` n=1 requests (seeds s+i, as
              the executor splits an n-merge) of a ~``--prompt-tokens`` prompt, then one
              synthesis request over the problem and the siblings' answers: wall, decode
              tok/s, and prefill computed / cached (the engine's own stats) vs the unique
              prompt tokens of the workload (the token trie of all its prompts);
  pacore-low  ``run(..., "pacore-low")`` (4 trajectories + sink) on ``--low-problems``
              problems at once, in the first ``--low-repeats`` repeats: prefill computed vs
              unique (skipped if ``run`` fails), and the floor a prefix cache of full blocks
              allows at blocks 16/32/64/128 on the same prompts (``low_floor_B``).

Medians over ``--repeats`` and ratios to block 128 (vLLM's CPU default) are printed. Rates
are given per wall second and per CPU second of the engine's processes (the latter is what to
compare on a shared, loaded machine).

    python benchmarks/bench_blocksize.py [--sizes 32,64,128] [--repeats 3] [--max-tokens 128]
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pacore_agents import ChatMessage, GenerationRequest, SamplingParams
from pacore_agents.engines._embedded import ensure_embedded_model
from pacore_agents.engines._vllm import VLLMEngine

PROBLEMS = [
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May?",
    "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting. "
    "How much did she earn?",
    "Betty is saving money for a new wallet which costs $100. Betty has only half of the money she "
    "needs. Her parents decided to give her $15 for that purpose, and her grandparents twice as "
    "much as her parents. How much more money does Betty need to buy the wallet?",
    "James writes a 3-page letter to 2 different friends twice a week. How many pages does he "
    "write a year?",
]


def engine_cpu_seconds() -> float:
    """CPU seconds used so far by this process's children (the engine core and its workers):
    unlike wall time, it hardly moves when other jobs share the cores."""
    total = 0.0
    for child in psutil.Process().children(recursive=True):
        try:
            times = child.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


def ask(text: str, seed: int, max_tokens: int) -> GenerationRequest:
    return GenerationRequest(messages=(ChatMessage(role="user", content=text),),
                             sampling=SamplingParams(temperature=1.0, top_p=1.0, max_tokens=max_tokens,
                                                     seed=seed))


def unique_tokens(prompts: Sequence[Sequence[int]]) -> int:
    """Distinct prefixes over all prompts: the tokens a perfect prefix cache computes."""
    root: dict[int, Any] = {}
    count = 0
    for ids in prompts:
        node = root
        for token in ids:
            if token not in node:
                node[token] = {}
                count += 1
            node = node[token]
    return count


def prefix_cache_floor(prompts: Sequence[Sequence[int]], block: int) -> int:
    """Prompt tokens vLLM's prefix cache computes for ``prompts`` sent one after another with
    ``block``-token KV blocks: full blocks only are shared, and the last prompt token is always
    computed. (The in-flight order can only add to it.)"""
    cache: set[tuple[int, ...]] = set()
    computed = 0
    for ids in prompts:
        hit = 0
        while hit + block <= len(ids) - 1 and tuple(ids[: hit + block]) in cache:
            hit += block
        computed += len(ids) - hit
        cache.update(tuple(ids[:end]) for end in range(block, len(ids) + 1, block))
    return computed


def context(engine: VLLMEngine, p: int, tokens: int) -> str:
    """A problem statement preceded by ~``tokens`` tokens of problem-specific notes."""
    lines: list[str] = []
    j = 0
    while engine.count_tokens(" ".join(lines)) < tokens - 60:
        lines.append(f"Note {j}: in case {p}, item {j} weighs {(j * 37 + p * 11) % 97} grams.")
        j += 1
    return f"Case {p}. " + " ".join(lines) + "\n\nQuestion: " + PROBLEMS[p % len(PROBLEMS)]


async def stats_delta(engine: VLLMEngine, before: Any) -> tuple[int, int]:
    after = await engine.stats()
    assert after is not None and before is not None
    return (after.prefill_computed_tokens - before.prefill_computed_tokens,
            after.prefill_cached_tokens - before.prefill_cached_tokens)


async def decode_phase(engine: VLLMEngine, args: argparse.Namespace) -> dict[str, float]:
    tokens: list[int] = []

    async def one(i: int) -> None:
        (done,) = await engine.generate(ask(f"Story {i}: write a story about a robot who paints.",
                                            1000 + i, args.decode_tokens))
        tokens.append(done.usage.completion_tokens)

    started, cpu = time.perf_counter(), engine_cpu_seconds()
    async with anyio.create_task_group() as tg:
        for i in range(args.decode):
            tg.start_soon(one, i)
    wall, cpu = time.perf_counter() - started, engine_cpu_seconds() - cpu
    return {"decode_tok_s": sum(tokens) / wall, "decode_tok_per_cpu_s": sum(tokens) / cpu,
            "decode_tokens": sum(tokens)}


async def pacore_like_phase(engine: VLLMEngine, args: argparse.Namespace) -> dict[str, float]:
    prompts: list[list[int]] = []
    tokens: list[int] = []

    async def problem(p: int) -> None:
        # lengths differ per problem (+37 tokens each): no luck of block alignment
        text = context(engine, p, args.prompt_tokens + 37 * p)
        answers: list[str] = [""] * args.siblings

        async def sibling(i: int) -> None:
            (done,) = await engine.generate(ask(text, 100 * p + i, args.max_tokens))
            answers[i] = done.content
            tokens.append(done.usage.completion_tokens)

        prompts.append(engine._render([ChatMessage(role="user", content=text)]))
        async with anyio.create_task_group() as tg:
            for i in range(args.siblings):
                tg.start_soon(sibling, i)
        synthesis = text + "\n\nReference responses:\n" + "\n".join(
            f"{i + 1}. {a}" for i, a in enumerate(answers)) + "\n\nGive the final answer."
        prompts.append(engine._render([ChatMessage(role="user", content=synthesis)]))
        (done,) = await engine.generate(ask(synthesis, 100 * p + 99, args.max_tokens))
        tokens.append(done.usage.completion_tokens)

    before = await engine.stats()
    started, cpu = time.perf_counter(), engine_cpu_seconds()
    async with anyio.create_task_group() as tg:
        for p in range(args.problems):
            tg.start_soon(problem, p)
    wall, cpu = time.perf_counter() - started, engine_cpu_seconds() - cpu
    computed, cached = await stats_delta(engine, before)
    unique = unique_tokens(prompts)
    return {"like_wall_s": wall, "like_cpu_s": cpu, "like_tok_s": sum(tokens) / wall,
            "like_computed": computed,
            "like_cached": cached, "like_unique": unique, "like_ratio": computed / unique}


async def pacore_low_phase(engine: VLLMEngine, args: argparse.Namespace) -> dict[str, float]:
    try:
        from pacore_agents import RunConfig, run
    except ImportError as exc:
        print(f"pacore-low skipped: {exc}", file=sys.stderr)
        return {}
    config = RunConfig(sampling=SamplingParams(temperature=1.0, top_p=1.0, max_tokens=args.max_tokens))
    traces: list[Any] = []

    async def one(p: int) -> None:
        result = await run(PROBLEMS[p % len(PROBLEMS)], "pacore-low", engine,
                           config=config.model_copy(update={"seed": p}))
        traces.append(result.trace)

    before = await engine.stats()
    try:
        async with anyio.create_task_group() as tg:
            for p in range(args.low_problems):
                tg.start_soon(one, p)
    except Exception as exc:  # the run API is being rebuilt: measure what we can
        print(f"pacore-low failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return {}
    computed, cached = await stats_delta(engine, before)
    nodes = sorted(((i, node) for i, trace in enumerate(traces) for node in trace.nodes),
                   key=lambda item: (item[1].round, item[0], item[1].agent))
    prompts = [engine._render(node.prompt) for _, node in nodes]
    unique = unique_tokens(prompts)
    floors = {f"low_floor_{b}": prefix_cache_floor(prompts, b) / unique for b in (16, 32, 64, 128)}
    return {"low_computed": computed, "low_cached": cached, "low_unique": unique,
            "low_ratio": computed / unique, **floors}


async def one_engine(block: int, args: argparse.Namespace, model: str, low: bool) -> dict[str, float]:
    engine = VLLMEngine(model, max_model_len=args.max_model_len, kv_cache_space_gb=args.kv_gb,
                        block_size=block)
    async with engine:
        await engine.start()
        await engine.generate(ask("Hi", 0, 4))  # warm-up
        row: dict[str, float] = {}
        row |= await decode_phase(engine, args)
        row |= await pacore_like_phase(engine, args)
        if low and args.low_problems:
            row |= await pacore_low_phase(engine, args)
        assert engine.info.details["block_size"] == block, engine.info.details
    return row


async def main(args: argparse.Namespace) -> None:
    model = args.model or str(ensure_embedded_model())
    sizes = [int(s) for s in args.sizes.split(",")]
    runs: dict[int, list[dict[str, float]]] = {b: [] for b in sizes}
    for r in range(args.repeats):
        order = sizes[r % len(sizes):] + sizes[: r % len(sizes)]  # rotate: no size always first
        for block in order:
            row = await one_engine(block, args, model, r < args.low_repeats)
            runs[block].append(row)
            print(f"repeat {r} block {block}: " + ", ".join(f"{k}={v:.3g}" for k, v in row.items()),
                  flush=True)
    report(runs, sizes)


def report(runs: dict[int, list[dict[str, float]]], sizes: list[int]) -> None:
    keys = [k for k in runs[sizes[0]][0]]
    med = {b: {k: statistics.median(r[k] for r in runs[b] if k in r) for k in keys} for b in sizes}
    ref = med[max(sizes)]
    print(f"\nmedians over {len(runs[sizes[0]])} repeats (ratio to block {max(sizes)} in brackets)")
    print("| measure | " + " | ".join(f"block {b}" for b in sizes) + " |")
    print("|---|" + "---|" * len(sizes))
    for k in keys:
        cells = []
        for b in sizes:
            v = med[b][k]
            cells.append(f"{v:.3g}" + (f" ({v / ref[k]:.2f}x)" if ref[k] and b != max(sizes) else ""))
        print(f"| {k} | " + " | ".join(cells) + " |")
    for b in sizes:
        for k in ("decode_tok_s", "decode_tok_per_cpu_s"):
            print(f"block {b}: {k} per repeat {[round(r[k], 1) for r in runs[b]]}")
    print(f"\ncommand: python {shlex.join(sys.argv)}")


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="local model directory (default: the embedded SmolLM2-135M)")
    parser.add_argument("--sizes", default="32,64,128", help="KV block sizes (vLLM CPU: multiples of 32)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--decode", type=int, default=16, help="parallel requests of the decode phase")
    parser.add_argument("--decode-tokens", type=int, default=64, help="max_tokens of the decode phase")
    parser.add_argument("--problems", type=int, default=4)
    parser.add_argument("--siblings", type=int, default=8)
    parser.add_argument("--prompt-tokens", type=int, default=500)
    parser.add_argument("--low-problems", type=int, default=4, help="0 skips the pacore-low phase")
    parser.add_argument("--low-repeats", type=int, default=1,
                        help="repeats that run the pacore-low phase (its prefill figures are seeded)")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--max-model-len", type=int, default=4096)
    parser.add_argument("--kv-gb", type=float, default=1.0)
    anyio.run(main, parser.parse_args())


if __name__ == "__main__":  # the engine spawns processes (multiprocessing spawn): keep this guard
    cli()
