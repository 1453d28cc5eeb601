"""Two engines in one graph on the simulator (issue 19): explorers on one engine, the sink on
another, each with its own executor.

64 GSM8K problems, all-to-all [32, 4] + sink, every problem a concurrent ``run()`` with
``engines={"default": explore, "sink": sink}``: explorers and synthesizers (rounds 1-2) run on
the ``default`` engine, the sink (round 3) on ``sink`` (``roles={"sink": RoleOverride(engine=
"sink")}``). Both engines are the GPU profile of sim_engine.py (256 sequences, 25 ms steps).
Virtual time (trio MockClock): the figures are exact and the same on every run and machine.

Reported:
- the makespan against lower bounds: per engine, the work bound (its tokens x step(C) / C plus
  its minimal prefill / rate, as bench_sim.py's), and the critical path over both (a node costs
  its minimal prefill and its tokens at step(1), on whichever engine it runs);
- idle-with-work per engine: virtual seconds during which the engine's executor held queued
  work while it had free slots in its window (the executor withheld work it could send; 0 means
  no engine idles while work it could take waits), and the mean time a sequence waited in the
  engine's own queue (arrival to admission: at most a step while the batch has room);
- each engine's busy time and mean batch, and the one-engine run of the same workload (every
  node on one engine) for comparison.

    python benchmarks/bench_engines.py [--problems 64] [--out bench_engines.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_sim import GPU_LENGTHS, lower_bound, min_prefill, problems
from sim_engine import GPU_PROFILE, LengthModel, SimEngine, SimProfile, simulate

from pacore_agents import (
    Executor,
    NodeId,
    Problem,
    RoleOverride,
    RunConfig,
    RunTrace,
    SamplingParams,
    Topology,
    all_to_all,
    executor_for,
    run,
)

POLL_S = 0.05  # the monitor's sampling period, virtual seconds


class IdleMonitor:
    """Samples an executor every ``POLL_S``: time with queued work and free window slots."""

    def __init__(self, executor: Executor) -> None:
        self.executor = executor
        self.withheld_s = 0.0
        self.samples = 0

    async def watch(self, done: anyio.Event) -> None:
        while not done.is_set():
            ex = self.executor
            if ex.queued > 0 and ex.in_flight < ex.window:
                self.withheld_s += POLL_S
            self.samples += 1
            await anyio.sleep(POLL_S)


def engine_bounds(traces: Sequence[RunTrace], profile: SimProfile) -> dict[str, dict[str, float]]:
    """The work bound of each engine (tokens and minimal prefill of the nodes it ran)."""
    out: dict[str, dict[str, float]] = {}
    for trace in traces:
        pre = min_prefill(trace, profile.block_size)
        for r in trace.nodes:
            acc = out.setdefault(r.engine or "default", {"tokens": 0.0, "prefill": 0.0})
            acc["tokens"] += r.usage.completion_tokens
            acc["prefill"] += pre[r.id]
    cap = profile.capacity
    for acc in out.values():
        acc["work_s"] = acc["tokens"] * profile.step_time(cap) / cap + profile.prefill_time(int(acc["prefill"]))
    return out


async def run_two(profile: SimProfile, lengths: LengthModel, probs: Sequence[Problem],
                  topology: Topology) -> dict[str, Any]:
    config = RunConfig(sampling=SamplingParams(temperature=1.0, top_p=1.0, max_tokens=lengths.max_tokens), seed=0)
    traces: list[RunTrace] = []
    async with SimEngine(profile, lengths, name="explore") as explore, \
            SimEngine(profile, lengths, name="sink") as sink:
        monitors = {"default": IdleMonitor(executor_for(explore)), "sink": IdleMonitor(executor_for(sink))}
        done = anyio.Event()
        start = anyio.current_time()

        async def one(problem: Problem) -> None:
            result = await run(problem, topology, engines={"default": explore, "sink": sink}, config=config,
                               roles={"sink": RoleOverride(engine="sink")})
            traces.append(result.trace)

        async with anyio.create_task_group() as outer:
            for m in monitors.values():
                outer.start_soon(m.watch, done)
            async with anyio.create_task_group() as tg:
                for problem in probs:
                    tg.start_soon(one, problem)
            done.set()
        makespan = anyio.current_time() - start
        engines = {"default": explore, "sink": sink}
        return {
            "makespan_s": makespan, "traces": traces,
            "engines": {name: {**engine.summary(), "withheld_s": round(monitors[name].withheld_s, 3),
                               "window": executor_for(engine).window}
                        for name, engine in engines.items()},
        }


async def run_one(profile: SimProfile, lengths: LengthModel, probs: Sequence[Problem],
                  topology: Topology) -> float:
    config = RunConfig(sampling=SamplingParams(temperature=1.0, top_p=1.0, max_tokens=lengths.max_tokens), seed=0)
    async with SimEngine(profile, lengths) as engine:
        start = anyio.current_time()
        async with anyio.create_task_group() as tg:
            for problem in probs:
                tg.start_soon(lambda p=problem: run(p, topology, engine, config=config))
        return anyio.current_time() - start


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=64)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    probs = problems(args.problems)
    topo = all_to_all([32, 4])
    two = simulate(lambda: run_two(GPU_PROFILE, GPU_LENGTHS, probs, topo))
    one = simulate(lambda: run_one(GPU_PROFILE, GPU_LENGTHS, probs, topo))
    traces = two.pop("traces")
    bound = lower_bound(traces, topo, GPU_PROFILE)  # critical path over both engines
    per_engine = engine_bounds(traces, GPU_PROFILE)
    bound_s = max([bound["critical_path_s"], *(e["work_s"] for e in per_engine.values())])
    sinks = {t.node(str(topo.sink)).engine for t in traces}
    explorers = {r.engine for t in traces for r in t.nodes if r.id != str(topo.sink)}
    assert sinks == {"sink"} and explorers == {"default"}, (sinks, explorers)
    assert all(r.status == "ok" for t in traces for r in t.nodes)
    result = {
        "workload": f"{args.problems} problems, all-to-all [32, 4] + sink, GPU profile; rounds 1-2 on "
                    "'default', the sink on 'sink'",
        "makespan_s": round(two["makespan_s"], 3),
        "critical_path_s": round(bound["critical_path_s"], 3),
        "work_bound_s": {k: round(v["work_s"], 3) for k, v in per_engine.items()},
        "bound_s": round(bound_s, 3),
        "ratio_to_bound": round(two["makespan_s"] / bound_s, 4),
        "one_engine_makespan_s": round(one, 3),
        "engines": two["engines"],
        "sink_tokens_share": round(per_engine["sink"]["tokens"] / sum(e["tokens"] for e in per_engine.values()), 4),
    }
    NodeId.parse(str(topo.sink))  # the sink's id parses (a check on the workload)
    print(f"{result['workload']}")
    print(f"  makespan {result['makespan_s']:.1f} s; bound {result['bound_s']:.1f} s "
          f"(critical path {result['critical_path_s']:.1f} s, work default {result['work_bound_s']['default']:.1f} s, "
          f"work sink {result['work_bound_s']['sink']:.1f} s): {result['ratio_to_bound']:.3f}x")
    print(f"  one engine for every node: {result['one_engine_makespan_s']:.1f} s")
    for name, e in result["engines"].items():
        print(f"  {name}: busy {e['busy_s']:.1f} s, mean batch {e['mean_running_busy']:.1f}, sequences {e['sequences']}, "
              f"withheld with free slots {e['withheld_s']:.2f} s, mean wait in the engine's queue {e['mean_queue_s']:.3f} s")
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
