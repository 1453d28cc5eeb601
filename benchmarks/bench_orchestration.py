"""Orchestration alone: N agents x R rounds of a ring on a zero-latency FunctionEngine.

The handler returns a short string at once, so the wall time is the library's own work
(planning, prompt building, reference ordering, executor admission, applying, the trace).
The run's CPU time is printed beside its wall time: on a loaded machine it is the steadier figure.
Target (issue #8): 10,000 agents x 10 rounds in < 10 s. Topology construction is timed apart.

    python benchmarks/bench_orchestration.py [--sizes 100,1000,10000] [--rounds 10]
                                             [--timeout 300] [--profile] [--no-gc] [--out orchestration.json]

``--profile`` runs the largest size under cProfile and prints the top 20 functions by
internal time (and by cumulative time). ``--no-gc`` disables the cyclic garbage collector, to
measure its share (it walks every live object on each full collection: with 100k node records
alive, it is a large part of the time).
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import json
import os
import pstats
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio

from pacore_agents import (
    FunctionEngine,
    GenerationRequest,
    RunConfig,
    RunFailedError,
    SamplingParams,
    Topology,
    ring,
    run,
)


def instant(request: GenerationRequest) -> list[str]:
    """Zero latency: a short answer per sample."""
    return ["The answer is 42."] * request.n


async def one(topology: Topology, limit_s: float, keep_requests: bool = False) -> tuple[float, float, int, str | None]:
    """(wall seconds, CPU seconds of this process, nodes done, error)."""
    engine = FunctionEngine(instant, name="instant", keep_requests=keep_requests)
    config = RunConfig(sampling=SamplingParams(max_tokens=16), timeout=limit_s)
    start, cpu = time.perf_counter(), time.process_time()
    try:
        result = await run("What is 6 * 7?", topology, engine, config=config)
        error = None
        nodes = len(result.trace.nodes)
    except RunFailedError as exc:
        error = str(exc)
        nodes = sum(1 for r in exc.trace.nodes if r.status == "ok") if exc.trace is not None else 0
    return time.perf_counter() - start, time.process_time() - cpu, nodes, error


def measure(width: int, rounds: int, timeout: float, profile: bool = False,
            keep_requests: bool = False) -> dict[str, Any]:
    t0 = time.perf_counter()
    topology = ring(width, rounds)
    build = time.perf_counter() - t0
    profiler = cProfile.Profile() if profile else None
    if profiler is not None:
        profiler.enable()
    wall, cpu, nodes, error = anyio.run(one, topology, timeout, keep_requests)
    row: dict[str, Any] = {"agents": width, "rounds": rounds, "nodes": width * rounds + 1,
                           "build_s": round(build, 3), "run_s": round(wall, 3), "run_cpu_s": round(cpu, 3),
                           "nodes_done": nodes,
                           "us_per_node": round(wall / (width * rounds + 1) * 1e6, 1), "error": error}
    if profiler is not None:
        profiler.disable()
        for sort in ("tottime", "cumulative"):
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats(sort).print_stats(20)
            row[f"profile_{sort}"] = out.getvalue()
    return row


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100,1000,10000", help="ring widths, comma list")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--timeout", type=float, default=300.0, help="per run, seconds")
    parser.add_argument("--profile", action="store_true", help="cProfile the largest size")
    parser.add_argument("--out", type=Path, default=None, help="write the rows as JSON")
    parser.add_argument("--keep-requests", action="store_true",
                        help="the engine keeps its log of every request (FunctionEngine's test default)")
    parser.add_argument("--no-gc", action="store_true",
                        help="what-if: run with the cyclic garbage collector disabled (its share of the time)")
    args = parser.parse_args(argv)
    if args.no_gc:
        gc.disable()
    try:
        sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    except ValueError:
        print(f"error: --sizes must be a comma list of integers, got {args.sizes!r}", file=sys.stderr)
        return 2
    if not sizes or min(sizes) < 1 or args.rounds < 1:
        print("error: --sizes and --rounds must be positive integers", file=sys.stderr)
        return 2
    rows = []
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; gc {'off' if args.no_gc else 'on'}; "
          f"engine request log {'kept' if args.keep_requests else 'off'}")
    print(f"{'agents x rounds':>16}{'nodes':>9}{'build s':>9}{'run s':>9}{'run CPU s':>11}{'us/node':>10}  status")
    for size in sizes:
        row = measure(size, args.rounds, args.timeout, profile=args.profile and size == max(sizes),
                      keep_requests=args.keep_requests)
        rows.append(row)
        status = "ok" if row["error"] is None else f"FAILED: {row['error'][:80]}"
        print(f"{size:>9} x {args.rounds:<5}{row['nodes']:>9,}{row['build_s']:>9.2f}{row['run_s']:>9.2f}"
              f"{row['run_cpu_s']:>11.2f}{row['us_per_node']:>10.1f}  {status}", flush=True)
    for row in rows:
        if "profile_tottime" in row:
            print(f"\ncProfile, {row['agents']} x {row['rounds']}, top 20 by internal time:")
            print(row["profile_tottime"])
            print("top 20 by cumulative time:")
            print(row["profile_cumulative"])
    if args.out is not None:
        args.out.write_text(json.dumps({"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                                        "gc": not args.no_gc, "load_average": os.getloadavg(),
                                        "rows": rows}, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
