"""What admission order across problems buys on the simulated GPU profile (issue 17, part 3).

The workload of bench_sim.py's part (a): 64 GSM8K problems, all-to-all [32, 4] + sink, the GPU
profile, one request per sample, at equal semantics (no quorum, no early stop: the same prompts
and the same samples in every arm). The executor's queue order is replaced, for this process
only, by each variant below (``Priority.key`` is patched: a what-if, not a library option), and
every variant runs on several draws of the trajectory lengths (``LengthModel.seed``), beside the
published pattern at its shipped semaphore (1024) on the same draw and the lower bound:

- ``today``: the library's order once nothing more is fed: longest remaining path (in rounds)
  first, then earlier-started runs, then node order;
- ``deeper-first``: deeper rounds first (the order while a study feeds units);
- ``round-robin``: round 1 sample-major across problems (every problem starts at once);
- ``wave:A``: round r of run p is placed with round 1 of run p + A (r - 1): deeper rounds of
  early problems overlap later problems' round 1, A interpolates between the two above;
- ``oracle-problem`` (clairvoyant: reads the simulator's lengths): problems whose chain (the
  longest sample of each round, summed) is longest start first, otherwise as ``today``;
- ``oracle-sample`` (clairvoyant): each sample by its own length plus the longest sample of
  each later round of its problem, longest first.

- ``oracle-sink`` (clairvoyant): problems whose sink is longest start first, otherwise as
  ``today``.

The oracles know what no scheduler knows before the samples end; they say how much of the gap
to the lower bound is an ordering problem at all.

``--quorum 28,3`` runs every variant under ``Policies(quorum=Quorum(q=[28, 3]))`` (stragglers
cancelled; issue 20's part (d)) and reports, per run, each problem's sink start (from the
simulator's records), the last round-1 admission, and a permutation test: the makespan
max_p(sink start_p + sink_p) over 2,000 random assignments of the draw's sink lengths to the
problems. A scheduler that cannot see lengths cannot tell the problems' sinks apart before they
start, so its sink starts are the same whichever problem draws which sink: the test's mean is
what the order delivers on average over that ignorance, and P(<= target) how often it meets it.

    python benchmarks/bench_admission.py [--seeds 0,1,2,3] [--variants today,...] [--quorum 28,3] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import anyio
import bench_sim
from published_sim import SHIPPED_CONCURRENCY
from sim_engine import GPU_PROFILE, LengthModel, SeqRecord, SimEngine, simulate

from pacore_agents import (
    Policies,
    Problem,
    Quorum,
    RunConfig,
    RunTrace,
    SamplingParams,
    Topology,
    all_to_all,
    run,
)
from pacore_agents import _priority as priority_module
from pacore_agents import _scheduler as scheduler_module

WIDTHS = (32, 4)
ROUNDS = ((1, 32), (2, 4), (3, 1))
Key = Callable[[priority_module.Priority, bool], tuple[float, ...]]
LIBRARY_KEY = priority_module.Priority.key
#: run sequence number -> problem id (filled by the patched RunDriver below; oracles read it)
RUN_PROBLEM: dict[int, str] = {}


def _record_runs() -> None:
    init = scheduler_module.RunDriver.__init__

    def patched(self: Any, problem: Any, *args: Any, **kwargs: Any) -> None:
        init(self, problem, *args, **kwargs)
        RUN_PROBLEM[self.binding.default.seq] = str(problem.id)

    scheduler_module.RunDriver.__init__ = patched  # type: ignore[method-assign]


def variant_key(name: str, lengths: LengthModel) -> Key:
    """The queue order of variant ``name`` (see the module docstring)."""
    if name == "today":
        return LIBRARY_KEY  # type: ignore[return-value]
    if name == "deeper-first":
        return lambda p, feeding: (-p.round, p.run, *p.rest)
    if name == "round-robin":
        return lambda p, feeding: (-p.remaining, *p.rest[1:], p.run, *p.rest[:1])
    if name.startswith("wave:"):
        a = float(name.split(":", 1)[1])
        return lambda p, feeding: (p.run + a * (p.round - 1), -p.round, *p.rest)

    def longest(pid: str, round_: int, width: int) -> int:
        return max(lengths.length(pid, f"r{round_}.a{k}")[0] for k in range(width))

    if name == "oracle-problem":
        chains: dict[int, int] = {}

        def by_problem(p: priority_module.Priority, feeding: bool) -> tuple[float, ...]:
            if p.run not in chains:
                chains[p.run] = sum(longest(RUN_PROBLEM[p.run], r, w) for r, w in ROUNDS)
            return (-p.remaining, -chains[p.run], p.run, *p.rest)
        return by_problem
    if name == "oracle-sample":
        def by_sample(p: priority_module.Priority, feeding: bool) -> tuple[float, ...]:
            pid = RUN_PROBLEM[p.run]
            agent = p.rest[0] + (p.rest[1] if len(p.rest) > 1 else 0)  # (first agent, sample)
            own = lengths.length(pid, f"r{p.round}.a{agent}")[0]
            later = sum(longest(pid, r, w) for r, w in ROUNDS if r > p.round)
            return (-(own + later), p.run, *p.rest)
        return by_sample
    if name == "oracle-sink":
        def by_sink(p: priority_module.Priority, feeding: bool) -> tuple[float, ...]:
            return (-p.remaining, -lengths.length(RUN_PROBLEM[p.run], "r3.a0")[0], p.run, *p.rest)
        return by_sink
    raise SystemExit(f"error: unknown variant {name!r}")


VARIANTS = ("today", "deeper-first", "round-robin", "wave:16", "wave:48", "oracle-problem", "oracle-sample")


async def run_recorded(lengths: LengthModel, probs: Sequence[Problem], topo: Topology,
                       policies: Policies | None) -> tuple[float, list[SeqRecord], list[RunTrace]]:
    """bench_sim.run_ours, keeping the simulator's per-sequence records (the timelines)."""
    config = RunConfig.model_validate({"sampling": SamplingParams(temperature=1.0, top_p=1.0,
                                                                  max_tokens=lengths.max_tokens), "seed": 0})
    traces: list[RunTrace] = []
    async with SimEngine(GPU_PROFILE, lengths) as engine:
        start = anyio.current_time()

        async def one(problem: Problem) -> None:
            traces.append((await run(problem, topo, engine, config=config, policies=policies)).trace)

        async with anyio.create_task_group() as tg:
            for problem in probs:
                tg.start_soon(one, problem)
        return anyio.current_time() - start, engine.records, traces


def sink_figures(records: Sequence[SeqRecord], target_s: float, draws: int = 2000) -> dict[str, float]:
    """Sink starts, the last round-1 admission, and the permutation test (module docstring)."""
    sinks = [r for r in records if r.node.startswith("r3.")]
    starts = [r.admitted or 0.0 for r in sinks]
    seconds = [r.length * GPU_PROFILE.step_time(1) for r in sinks]
    rng = random.Random(0)
    spans = []
    for _ in range(draws):
        rng.shuffle(seconds)
        spans.append(max(a + b for a, b in zip(starts, seconds, strict=True)))
    return {"sink_start_min_s": round(min(starts), 1), "sink_start_max_s": round(max(starts), 1),
            "last_round1_admitted_s": round(max(r.admitted or 0.0 for r in records if r.node.startswith("r1.")), 1),
            "permuted_mean_s": round(sum(spans) / draws, 1),
            "permuted_p_target": round(sum(s <= target_s for s in spans) / draws, 3)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0,1,2,3", help="length draws (LengthModel.seed), comma list")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--quorum", default="", help="q per round, e.g. 28,3 (stragglers cancelled); "
                                                     "default: none (equal semantics)")
    parser.add_argument("--out", type=Path, default=Path("bench_admission.json"))
    args = parser.parse_args(argv)
    policies = Policies(quorum=Quorum(q=[float(q) for q in args.quorum.split(",")])) if args.quorum else None
    target = 0.7 if policies else 0.9
    seeds = [int(s) for s in args.seeds.split(",")]
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    _record_runs()
    probs = bench_sim.problems(64)
    topo = all_to_all(list(WIDTHS))
    rows: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    for seed in seeds:
        lengths = bench_sim.GPU_LENGTHS.model_copy(update={"seed": seed})
        shipped, _ = simulate(lambda: bench_sim.run_published(GPU_PROFILE, lengths, probs, WIDTHS,  # noqa: B023
                                                               SHIPPED_CONCURRENCY))
        for name in variants:
            key = variant_key(name, lengths)
            priority_module.Priority.key = key  # type: ignore[assignment,method-assign]
            try:
                ours, records, traces = simulate(lambda: run_recorded(lengths, probs, topo, policies))  # noqa: B023
            finally:
                priority_module.Priority.key = LIBRARY_KEY  # type: ignore[method-assign]
            bound = (bench_sim.lower_bound_seen(traces, GPU_PROFILE) if policies
                     else bench_sim.lower_bound(traces, topo, GPU_PROFILE))
            rows.append({"seed": seed, "variant": name, "ours_s": round(ours, 1),
                         "published_1024_s": round(shipped, 1), "ratio_1024": round(ours / shipped, 3),
                         "bound_s": round(bound["bound_s"], 1), "over_bound": round(ours / bound["bound_s"], 3),
                         **sink_figures(records, target * shipped)})
            print(json.dumps(rows[-1]), flush=True)
    print(f"\n{'variant':<16}" + "".join(f"{'seed ' + str(s):>22}" for s in seeds) + f"{'mean ratio':>12}")
    for name in variants:
        mine = [r for r in rows if r["variant"] == name]
        cells = "".join(f"{r['ours_s']:>8.0f} s {r['ratio_1024']:.3f}x{r['over_bound']:>6.2f}b" for r in mine)
        mean = sum(r["ratio_1024"] for r in mine) / len(mine)
        print(f"{name:<16}{cells}{mean:>12.3f}")
    pubs = {r["seed"]: (r["published_1024_s"], r["bound_s"]) for r in rows}
    print(f"{'published 1024':<16}" + "".join(f"{pubs[s][0]:>8.0f} s 1.000x{pubs[s][0] / pubs[s][1]:>6.2f}b"
                                             for s in seeds))
    print("(cells: makespan, ratio to the published pattern at semaphore 1024 on the same draw, "
          "ratio to the lower bound)")
    print(f"\n{'variant':<16}" + "".join(f"{'seed ' + str(s):>34}" for s in seeds))
    for name in variants:
        mine = [r for r in rows if r["variant"] == name]
        print(f"{name:<16}" + "".join(
            f"{r['sink_start_min_s']:>6.0f}-{r['sink_start_max_s']:<4.0f}{r['last_round1_admitted_s']:>5.0f}"
            f"{r['permuted_mean_s'] / r['published_1024_s']:>7.3f}x{r['permuted_p_target']:>7.3f}  " for r in mine))
    print(f"(cells: sink starts first-last, last round-1 admission, permuted sinks: mean / published at 1024, "
          f"P(<= {target}x))")
    args.out.write_text(json.dumps({"rows": rows, "host_seconds": round(time.perf_counter() - t0, 1)}, indent=1),
                        encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
