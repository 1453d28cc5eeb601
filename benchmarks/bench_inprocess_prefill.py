"""Computed prefill of the in-process engine on the perf anchor's workload vs its unique prompt tokens.

Issue 8's target: in-process, computed prefill <= 1.1x the workload's unique prompt tokens
(from the engine's own prefix-cache stats), at a block size that does not slow decode. The
workload is the perf anchor's, read from its study file (``benchmarks/anchor_study.toml``) with
the library's own loaders (``load_study``, ``load_problems``, the arm's topology, roles and
``run_config``): 16 GSM8K problems as raw text, all-to-all widths [8, 4] + sink, 128 tokens,
temperature 1.0, the study's seeds. For each ``--sizes`` block size it starts one ``VLLMEngine``
(the embedded CPU default otherwise), runs every problem at once with ``run(...)`` on it (one
shared executor, as ``pacore study run`` does), and reads ``engine.stats()`` before and after:

  computed / cached   prompt tokens the engine computed / served from its prefix cache;
  unique              the token trie of every prompt actually sent (each node's prompt rendered
                      as the engine renders it): what a perfect prefix cache computes;
  distinct            the lengths of the distinct prompts summed (each prompt whole, siblings
                      once; a looser denominator: prompts of a problem share their head);
  floor_B             what a prefix cache of full ``B``-token blocks computes on the same
                      prompts sent one after another (``bench_blocksize.prefix_cache_floor``);
  wall, completion tok/s and tokens per engine CPU-second (decode speed per block size).

No warm-up request: the prefix cache starts empty, as the floors assume.

    python benchmarks/bench_inprocess_prefill.py [--sizes 32,128] [--out prefill.json]
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_blocksize import engine_cpu_seconds, prefix_cache_floor, unique_tokens

from pacore_agents import RunFailedError, run
from pacore_agents._engine import prefill_between
from pacore_agents._trace import RunTrace
from pacore_agents.engines._embedded import ensure_embedded_model
from pacore_agents.engines._vllm import VLLMEngine
from pacore_agents.studies import load_problems, load_study

FLOOR_BLOCKS = (16, 32, 64, 128)
DEFAULT_STUDY = Path(__file__).resolve().parent / "anchor_study.toml"


async def one_engine(block: int | None, args: argparse.Namespace, model: str) -> dict[str, Any]:
    spec = load_study(args.study)
    problems = load_problems(spec.dataset)
    (arm,) = [a for a in spec.arms if a.baseline is None]
    topology = arm.build_topology()
    roles = arm.build_roles(topology)
    config = spec.run_config(arm, 0)
    engine = VLLMEngine(model, block_size=block, kv_cache_space_gb=args.kv_gb,
                        max_model_len=args.max_model_len)
    traces: list[RunTrace | None] = [None] * len(problems)
    failed: list[str] = []
    async with engine:
        await engine.start()
        details = engine.info.details

        async def one(i: int) -> None:
            problem = problems[i]
            try:
                result = await run(problem, topology, engine, config=config, roles=roles,
                                   unit=f"{problem.id}|{arm.name}|s0")
                traces[i] = result.trace
            except RunFailedError as exc:
                failed.append(f"{problem.id}: {exc}")
                traces[i] = exc.trace

        before = await engine.stats()
        started, cpu = time.perf_counter(), engine_cpu_seconds()
        async with anyio.create_task_group() as tg:
            for i in range(len(problems)):
                tg.start_soon(one, i)
        wall, cpu = time.perf_counter() - started, engine_cpu_seconds() - cpu
        after = await engine.stats()
        prefill = prefill_between(before, after)
        # every prompt sent, rendered as the engine renders it, in round order (problems in
        # file order within a round): the order the floors assume
        nodes = sorted(((i, node) for i, trace in enumerate(traces) if trace is not None
                        for node in trace.nodes if node.started_at is not None),
                       key=lambda item: (item[1].round, item[0], item[1].agent))
        prompts = [engine._render(node.prompt) for _, node in nodes]
        rounds = [node.round for _, node in nodes]
    computed, cached = prefill["prefill_computed_tokens"], prefill["prefill_cached_tokens"]
    assert computed is not None and cached is not None, "the engine reported no prefill counters"
    unique = unique_tokens(prompts)
    distinct = sum(len(p) for p in {tuple(p) for p in prompts})
    completion = sum(node.usage.completion_tokens for _, node in nodes)
    row: dict[str, Any] = {
        "block_size": details.get("block_size"), "kv_cache_tokens": details.get("kv_cache_tokens"),
        "capacity_sequences": details.get("capacity_sequences"), "dtype": details.get("dtype"),
        "problems": len(problems), "runs_failed": len(failed), "failures": failed,
        "runs_degraded": sum(1 for t in traces if t is not None and t.degraded),
        "requests_sent": len(prompts), "prompt_tokens_sent": sum(len(p) for p in prompts),
        "prefill_computed_tokens": computed, "prefill_cached_tokens": cached,
        "unique_prompt_tokens": unique, "computed_over_unique": computed / unique,
        "distinct_prompt_tokens": distinct, "computed_over_distinct": computed / distinct,
        "unique_per_run_sum": sum(t.stats.unique_prompt_tokens for t in traces
                                  if t is not None and t.stats is not None),
        "completion_tokens": completion, "wall_s": wall, "engine_cpu_s": cpu,
        "completion_tok_s": completion / wall, "completion_tok_per_cpu_s": completion / cpu if cpu else None,
    }
    for b in FLOOR_BLOCKS:
        floor = prefix_cache_floor(prompts, b)
        row[f"floor_{b}_tokens"] = floor
        row[f"floor_{b}_over_unique"] = floor / unique
    own = row["block_size"]
    if isinstance(own, int):
        row["computed_over_own_floor"] = computed / prefix_cache_floor(prompts, own)
        row["by_round"] = by_round(prompts, rounds, own)
    return row


def by_round(prompts: list[list[int]], rounds: list[int], block: int) -> list[dict[str, Any]]:
    """Per round (prompts in round order): requests, distinct prompts, mean prompt tokens, and
    the unique tokens / full-block floor it adds to the rounds before it."""
    out: list[dict[str, Any]] = []
    unique_before = floor_before = 0
    for r in sorted(set(rounds)):
        end = max(i for i, x in enumerate(rounds) if x == r) + 1
        mine = [p for p, x in zip(prompts, rounds, strict=True) if x == r]
        unique, floor = unique_tokens(prompts[:end]), prefix_cache_floor(prompts[:end], block)
        out.append({"round": r, "requests": len(mine), "distinct": len({tuple(p) for p in mine}),
                    "mean_prompt_tokens": sum(map(len, mine)) / len(mine),
                    "unique_added": unique - unique_before, f"floor_{block}_added": floor - floor_before})
        unique_before, floor_before = unique, floor
    return out


def report(rows: list[dict[str, Any]]) -> None:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3f}" if v < 10 else f"{v:,.1f}"
        if isinstance(v, int):
            return f"{v:,}"
        return str(v)

    keys = ["prefill_computed_tokens", "prefill_cached_tokens", "prompt_tokens_sent",
            "unique_prompt_tokens", "computed_over_unique", "computed_over_own_floor",
            "distinct_prompt_tokens", "computed_over_distinct",
            *[f"floor_{b}_over_unique" for b in FLOOR_BLOCKS],
            "requests_sent", "runs_failed", "runs_degraded", "completion_tokens", "wall_s",
            "completion_tok_s", "completion_tok_per_cpu_s", "kv_cache_tokens", "capacity_sequences"]
    print("\n| measure | " + " | ".join(f"block {r['block_size']}" for r in rows) + " |")
    print("|---|" + "---|" * len(rows))
    for k in keys:
        print(f"| {k} | " + " | ".join(cell(r.get(k)) for r in rows) + " |")
    for r in rows:
        for d in r.get("by_round", []):
            print(f"block {r['block_size']} round {d['round']}: " + ", ".join(
                f"{k}={cell(v)}" for k, v in d.items() if k != "round"))
    for r in rows:
        for f in r["failures"]:
            print(f"block {r['block_size']}: run failed: {f}", file=sys.stderr)
    print(f"\ncommand: python {shlex.join(sys.argv)}")


async def main(args: argparse.Namespace) -> None:
    model = args.model or str(ensure_embedded_model())
    sizes: list[int | None] = [int(s) for s in args.sizes.split(",")] if args.sizes else [None]
    rows: list[dict[str, Any]] = []
    for block in sizes:
        row = await one_engine(block, args, model)
        rows.append(row)
        print(f"block {row['block_size']}: " + ", ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
            for k, v in row.items() if k not in ("failures", "by_round")), flush=True)
    report(rows)
    if args.out:
        text = json.dumps({"command": shlex.join(sys.argv), "study": str(args.study), "rows": rows}, indent=2)
        await anyio.Path(args.out).write_text(text + "\n", encoding="utf-8")
        print(f"wrote {args.out}")


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--study", type=Path, default=DEFAULT_STUDY,
                        help="study file of the workload (one topology arm; default: the anchor's)")
    parser.add_argument("--model", help="local model directory (default: the embedded SmolLM2-135M)")
    parser.add_argument("--sizes", default="",
                        help="KV block sizes, one engine each, e.g. 32,128 (default: the engine's own)")
    parser.add_argument("--kv-gb", type=float, default=None, help="KV cache GiB (default: the engine's)")
    parser.add_argument("--max-model-len", type=int, default=None)
    parser.add_argument("--out", help="write the rows as JSON here")
    anyio.run(main, parser.parse_args())


if __name__ == "__main__":  # the engine spawns processes (multiprocessing spawn): keep this guard
    cli()
