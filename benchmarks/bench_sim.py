"""Scheduling benchmarks on the simulated continuous-batching engine (issue #8's targets).

Everything runs in virtual time (trio MockClock, see sim_engine.py), so the figures are exact
and the same on every run and machine. Three parts:

(a) GPU-like profile, 64 GSM8K problems, all-to-all widths [32, 4] + sink: many concurrent
    ``run()`` calls over one engine (defaults) vs the published pattern (published_sim.py) on
    the same simulator, at its code's default semaphore (64) and at its shipped example's
    (1024); targets: <= 0.7x the first (issue 8), <= 0.9x the second (issue 17).
(b) ring(16, 4) and hierarchical([4, 4]) over several problems (GPU profile): dataflow and
    rounds mode makespans vs a lower bound = max(critical path, work / capacity); target
    dataflow <= 1.05x the bound.
(c) CPU profile (calibrated on the vLLM CPU server), the anchor workload (16 problems, [8, 4] +
    sink, 128 tokens): ours vs the published pattern vs the compute floor (computed prefill at
    the prefill rate plus completion tokens at the decode ceiling, as perf_anchor defines it).
(d) Quorums (issue 20), the workload of (a): the next round starts when q of a round's
    messages are in, the stragglers cancelled (or left to finish for the record); makespan vs
    the published pattern at 1024 and 64 (target: 28/32 + 3/4 <= 0.7x the 1024 one), and the
    tokens each arm generated, cancelled stragglers' partial tokens included.

The bound (b): per problem, the longest path through the node DAG where a node costs its
minimal prefill (its prompt minus the full blocks it shares with any other prompt of the
problem, at least the last partial block) at the prefill rate plus its tokens at step(1); and,
over all problems, the work bound sum(tokens) * step(C) / C + sum(minimal prefill) / rate. Both
are lower bounds of any schedule on the simulator; the bound is their max.

    python benchmarks/bench_sim.py [--parts a,b,c,d] [--out bench_sim.json] [--feeding]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent))

from published_sim import PUBLISHED_CONCURRENCY, SHIPPED_CONCURRENCY, replay_published
from sim_engine import CPU_PROFILE, GPU_PROFILE, LengthModel, SimEngine, SimProfile, simulate

from pacore_agents import (
    ChatMessage,
    NodeId,
    Policies,
    Problem,
    Quorum,
    RunConfig,
    RunTrace,
    SamplingParams,
    Topology,
    all_to_all,
    executor_for,
    hierarchical,
    ring,
    run,
)
from pacore_agents.studies import DatasetSpec, load_problems

#: reasoning-model trajectories: median 2,000 tokens, heavy tail, capped at 8,192; the message
#: passed on is the conclusion after </think> (200 tokens)
GPU_LENGTHS = LengthModel(median=2000, sigma=0.75, max_tokens=8192, think=True, message_tokens=200)
#: SmolLM2 at temperature 1.0 and 128 tokens: most trajectories hit the cap (mean ~122)
CPU_LENGTHS = LengthModel(median=400, sigma=1.0, max_tokens=128, think=False)
#: run ours inside the executor's feeder (``--feeding``)
FEEDING = False


def problems(n: int) -> list[Problem]:
    return load_problems(DatasetSpec(name="gsm8k", limit=n))


async def run_ours(profile: SimProfile, lengths: LengthModel, probs: Sequence[Problem], topology: Topology,
                   *, mode: str = "dataflow", split: bool = True,
                   policies: Policies | None = None) -> tuple[float, dict[str, Any], list[RunTrace]]:
    """Every problem as a concurrent ``run()`` on one simulated engine; (makespan, engine
    summary, traces)."""
    config = RunConfig.model_validate({"sampling": SamplingParams(temperature=1.0, top_p=1.0,
                                                                  max_tokens=lengths.max_tokens),
                                       "seed": 0, "mode": mode})
    traces: list[RunTrace] = []
    async with SimEngine(profile, lengths, split_samples=split) as engine:
        start = anyio.current_time()

        async def one(problem: Problem) -> None:
            traces.append((await run(problem, topology, engine, config=config, policies=policies)).trace)

        with executor_for(engine).feeder() if FEEDING else nullcontext():
            async with anyio.create_task_group() as tg:
                for problem in probs:
                    tg.start_soon(one, problem)
        return anyio.current_time() - start, engine.summary(), traces


async def run_published(profile: SimProfile, lengths: LengthModel, probs: Sequence[Problem],
                        widths: Sequence[int], concurrency: int = PUBLISHED_CONCURRENCY) -> tuple[float, dict[str, Any]]:
    async with SimEngine(profile, lengths) as engine:
        result = await replay_published(probs, widths, engine, max_tokens=lengths.max_tokens,
                                        concurrency=concurrency)
        return result.makespan, engine.summary()


# ---- the lower bound (b) ---------------------------------------------------------------------
def _block_chain(tokens: Sequence[str], bs: int) -> list[int]:
    chain, prev = [], 0
    for b in range(len(tokens) // bs):
        prev = hash((prev, tuple(tokens[b * bs:(b + 1) * bs])))
        chain.append(prev)
    return chain


def _prompt_tokens(messages: Sequence[ChatMessage]) -> list[str]:
    out: list[str] = []
    for m in messages:
        out.append(f"<|{m.role}|>")
        out.extend(m.content.split())
    return out


def min_prefill(trace: RunTrace, bs: int) -> dict[str, int]:
    """Per node: prompt tokens minus the leading full blocks it shares with another node's
    prompt of the same run (as vLLM, at least the last token's block is computed)."""
    tokens = {r.id: _prompt_tokens(r.prompt) for r in trace.nodes}
    chains = {nid: _block_chain(t, bs) for nid, t in tokens.items()}
    seen: Counter[int] = Counter()
    for chain in chains.values():
        seen.update(set(chain))
    out: dict[str, int] = {}
    for nid, toks in tokens.items():
        cacheable = (len(toks) - 1) // bs
        hits = 0
        for h in chains[nid][:cacheable]:
            if seen[h] < 2:
                break
            hits += 1
        out[nid] = len(toks) - hits * bs
    return out


def lower_bound(traces: Sequence[RunTrace], topology: Topology, profile: SimProfile) -> dict[str, float]:
    """max(critical path, work bound) in seconds (see the module docstring)."""
    step1, cap = profile.step_time(1), profile.capacity
    critical, tokens, prefill = 0.0, 0, 0
    for trace in traces:
        pre = min_prefill(trace, profile.block_size)
        length = {r.id: r.usage.completion_tokens for r in trace.nodes}
        finish: dict[NodeId, float] = {}
        for node in topology.nodes():  # sorted by round: predecessors come first
            start = max((finish[u] for u in topology.inputs(node)), default=0.0)
            finish[node] = start + profile.prefill_time(pre[str(node)]) + length[str(node)] * step1
        critical = max(critical, finish[topology.sink])
        tokens += sum(length.values())
        prefill += sum(pre.values())
    work = tokens * profile.step_time(cap) / cap + profile.prefill_time(prefill)
    return {"critical_path_s": critical, "work_s": work, "bound_s": max(critical, work)}


def lower_bound_seen(traces: Sequence[RunTrace], profile: SimProfile) -> dict[str, float]:
    """The bound of ``lower_bound`` along the edges each node actually read (``inputs``: a quorum's
    stragglers are not on any path), with every generated token in the work bound (cancelled
    stragglers' partial tokens included), and a third: round 1's tokens at full batch plus the
    shortest round-2-and-sink rest of any problem (the last problem to leave round 1 still has
    one)."""
    step1, cap = profile.step_time(1), profile.capacity
    critical, tokens, prefill, first_round, rest = 0.0, 0, 0, 0, float("inf")
    for trace in traces:
        pre = min_prefill(trace, profile.block_size)
        first_round += sum(r.usage.completion_tokens for r in trace.round_nodes(1))
        sink = trace.node(trace.sink)
        rest = min(rest, (max((trace.node(i).usage.completion_tokens for i in sink.inputs), default=0)
                          + sink.usage.completion_tokens) * step1)
        finish: dict[str, float] = {}
        for r in trace.nodes:  # sorted by round: inputs come first
            start = max((finish.get(i, 0.0) for i in r.inputs), default=0.0)
            finish[r.id] = start + profile.prefill_time(pre[r.id]) + r.usage.completion_tokens * step1
            tokens += r.usage.completion_tokens
            prefill += pre[r.id] if r.status != "skipped" else 0
        critical = max(critical, finish[trace.sink])
    work = tokens * profile.step_time(cap) / cap + profile.prefill_time(prefill)
    # the last problem's round 1 ends no sooner than all round-1 tokens take at full batch; then
    # its round 2 and sink still run (at least the shortest such rest of any problem): this
    # schedule's round-1 spend (its stragglers' partial tokens) bounds what any order could do
    tail = first_round * profile.step_time(cap) / cap + rest
    return {"critical_path_s": critical, "work_s": work, "round1_then_rest_s": tail,
            "bound_s": max(critical, work, tail)}


# ---- the parts -------------------------------------------------------------------------------
def part_a(n_problems: int = 64, widths: Sequence[int] = (32, 4)) -> dict[str, Any]:
    probs = problems(n_problems)
    topo = all_to_all(list(widths))
    ours, ours_sum, traces = simulate(lambda: run_ours(GPU_PROFILE, GPU_LENGTHS, probs, topo))
    nk, nk_sum, _ = simulate(lambda: run_ours(GPU_PROFILE, GPU_LENGTHS, probs, topo, split=False))
    rounds, rounds_sum, _ = simulate(lambda: run_ours(GPU_PROFILE, GPU_LENGTHS, probs, topo, mode="rounds"))
    pub, pub_sum = simulate(lambda: run_published(GPU_PROFILE, GPU_LENGTHS, probs, widths))
    shipped, shipped_sum = simulate(lambda: run_published(GPU_PROFILE, GPU_LENGTHS, probs, widths, SHIPPED_CONCURRENCY))
    return {"workload": f"{n_problems} problems, all-to-all {list(widths)} + sink, GPU profile",
            "ours_s": ours, "ours_n_merged_s": nk, "ours_rounds_s": rounds, "published_s": pub,
            "published_1024_s": shipped, "ratio": ours / pub, "target": 0.7,
            "ratio_1024": ours / shipped, "target_1024": 0.9, **lower_bound(traces, topo, GPU_PROFILE),
            "engine": {"ours": ours_sum, "ours_n_merged": nk_sum, "ours_rounds": rounds_sum, "published": pub_sum,
                       "published_1024": shipped_sum}}


def part_b(cases: Sequence[tuple[str, Topology, int]] | None = None) -> list[dict[str, Any]]:
    cases = cases or [
        ("ring(16, 4)", ring(16, 4), 4),
        ("ring(16, 4)", ring(16, 4), 16),
        ("hierarchical([4, 4])", hierarchical([4, 4]), 4),
        ("hierarchical([4, 4])", hierarchical([4, 4]), 32),
    ]
    rows = []
    for name, topo, n in cases:
        probs = problems(n)
        flow, flow_sum, traces = simulate(lambda: run_ours(GPU_PROFILE, GPU_LENGTHS, probs, topo))  # noqa: B023
        rounds, rounds_sum, _ = simulate(lambda: run_ours(GPU_PROFILE, GPU_LENGTHS, probs, topo, mode="rounds"))  # noqa: B023
        bound = lower_bound(traces, topo, GPU_PROFILE)
        rows.append({"workload": f"{name} x {n} problems, GPU profile", "sequences": flow_sum["sequences"],
                     "dataflow_s": flow, "rounds_s": rounds, **bound,
                     "dataflow_over_bound": flow / bound["bound_s"], "rounds_over_bound": rounds / bound["bound_s"],
                     "target": 1.05, "engine": {"dataflow": flow_sum, "rounds": rounds_sum}})
    return rows


def part_c(n_problems: int = 16, widths: Sequence[int] = (8, 4)) -> dict[str, Any]:
    probs = problems(n_problems)
    topo = all_to_all(list(widths))
    prof = CPU_PROFILE
    wide = prof.model_copy(update={"capacity": 128})
    ours, ours_sum, traces = simulate(lambda: run_ours(prof, CPU_LENGTHS, probs, topo))
    ours128, ours128_sum, _ = simulate(lambda: run_ours(wide, CPU_LENGTHS, probs, topo))
    pub, pub_sum = simulate(lambda: run_published(prof, CPU_LENGTHS, probs, widths))
    shipped, shipped_sum = simulate(lambda: run_published(prof, CPU_LENGTHS, probs, widths, SHIPPED_CONCURRENCY))
    ceiling = prof.capacity / prof.step_time(prof.capacity)

    def floor(summary: dict[str, Any]) -> float:
        return float(prof.prefill_time(summary["prefill_computed"]) + summary["completion_tokens"] / ceiling)

    return {"workload": f"{n_problems} problems, all-to-all {list(widths)} + sink, "
                        f"{CPU_LENGTHS.max_tokens} tokens, CPU profile",
            "ours_s": ours, "published_s": pub, "ratio": ours / pub,
            "published_1024_s": shipped, "published_1024_floor_s": floor(shipped_sum),
            "published_1024_over_floor": shipped / floor(shipped_sum), "ratio_1024": ours / shipped,
            "ours_cap128_s": ours128, "ours_cap128_floor_s": floor(ours128_sum),
            "ours_cap128_over_floor": ours128 / floor(ours128_sum),
            "ours_floor_s": floor(ours_sum), "published_floor_s": floor(pub_sum),
            "ours_over_floor": ours / floor(ours_sum), "published_over_floor": pub / floor(pub_sum),
            "ceiling_tok_s": ceiling, **lower_bound(traces, topo, prof),
            "engine": {"ours": ours_sum, "ours_cap128": ours128_sum, "published": pub_sum,
                       "published_1024": shipped_sum}}


#: (label, q per round, stragglers) of part (d)
QUORUM_ARMS: tuple[tuple[str, list[float], str], ...] = (
    ("quorum 28/32 + 3/4, cancel", [28, 3], "cancel"),
    ("quorum 24/32 + 2/4, cancel", [24, 2], "cancel"),
    ("quorum 28/32 + 3/4, finish", [28, 3], "finish"),
)


def _tokens(traces: Sequence[RunTrace]) -> dict[str, int]:
    events = [e for t in traces for e in t.policy_events]
    return {"effective_ttc": sum(t.effective_ttc for t in traces),
            "cancelled": sum(len(e.cancelled) for e in events), "skipped": sum(len(e.skipped) for e in events),
            "cancelled_tokens": sum(e.cancelled_tokens for e in events),
            "tokens_unknown": sum(e.tokens_unknown for e in events)}


def part_d(n_problems: int = 64, widths: Sequence[int] = (32, 4)) -> dict[str, Any]:
    probs = problems(n_problems)
    topo = all_to_all(list(widths))
    fixed, fixed_sum, fixed_traces = simulate(lambda: run_ours(GPU_PROFILE, GPU_LENGTHS, probs, topo))
    shipped, shipped_sum = simulate(lambda: run_published(GPU_PROFILE, GPU_LENGTHS, probs, widths, SHIPPED_CONCURRENCY))
    pub, pub_sum = simulate(lambda: run_published(GPU_PROFILE, GPU_LENGTHS, probs, widths))
    arms = [{"arm": "ours, fixed width (no policy)", "makespan_s": fixed, **_tokens(fixed_traces),
             "mean_problem_s": fixed_sum["mean_problem_s"], "bound": lower_bound_seen(fixed_traces, GPU_PROFILE),
             "occupancy_deciles": fixed_sum["occupancy_deciles"]}]
    for label, q, mode in QUORUM_ARMS:
        policies = Policies(quorum=Quorum(q=q, stragglers=mode))  # type: ignore[arg-type]
        span, summary, traces = simulate(
            lambda: run_ours(GPU_PROFILE, GPU_LENGTHS, probs, topo, policies=policies))  # noqa: B023
        arms.append({"arm": label, "makespan_s": span, **_tokens(traces), "mean_problem_s": summary["mean_problem_s"],
                     "bound": lower_bound_seen(traces, GPU_PROFILE), "occupancy_deciles": summary["occupancy_deciles"]})
    for arm in arms:
        arm["vs_published_1024"] = arm["makespan_s"] / shipped
        arm["vs_published_64"] = arm["makespan_s"] / pub
        arm["tokens_vs_fixed"] = arm["effective_ttc"] / arms[0]["effective_ttc"]
    return {"workload": f"{n_problems} problems, all-to-all {list(widths)} + sink, GPU profile",
            "published_1024_s": shipped, "published_s": pub, "target": 0.7, "arms": arms,
            "published_completion_tokens": {"1024": shipped_sum["completion_tokens"], "64": pub_sum["completion_tokens"]}}


def _print_d(d: dict[str, Any]) -> None:
    print(f"\n(d) quorums, {d['workload']}: published pattern {d['published_1024_s']:.1f} s at semaphore 1024, "
          f"{d['published_s']:.1f} s at 64")
    print(f"  {'arm':<32}{'makespan s':>12}{'vs pub 1024':>13}{'vs pub 64':>11}{'tokens':>12}{'vs fixed':>10}"
          f"{'cancelled':>11}{'their tok':>11}{'latency s':>11}{'bound s':>9}{'/bound':>8}")
    for a in d["arms"]:
        print(f"  {a['arm']:<32}{a['makespan_s']:>12.1f}{a['vs_published_1024']:>13.3f}{a['vs_published_64']:>11.3f}"
              f"{a['effective_ttc']:>12,}{a['tokens_vs_fixed']:>10.3f}{a['cancelled']:>11,}"
              f"{a['cancelled_tokens']:>11,}{a['mean_problem_s']:>11.1f}{a['bound']['bound_s']:>9.1f}"
              f"{a['makespan_s'] / a['bound']['bound_s']:>8.3f}")
    for a in d["arms"]:
        print(f"  batch by tenth of the run, {a['arm']:<32}: {a['occupancy_deciles']}")
    print(f"  target: 28/32 + 3/4 (cancel) <= {d['target']}x the published pattern at 1024")


def _print_a(a: dict[str, Any]) -> None:
    print(f"\n(a) {a['workload']}")
    e = a["engine"]
    print(f"  {'arm':<34}{'makespan s':>12}{'vs published':>14}{'mean batch':>12}{'prefill comp':>14}"
          f"{'mean latency s':>16}")
    for label, key, ek in (("ours (dataflow, split samples)", "ours_s", "ours"),
                           ("ours (dataflow, n=K requests)", "ours_n_merged_s", "ours_n_merged"),
                           ("ours (rounds mode)", "ours_rounds_s", "ours_rounds"),
                           ("published pattern, semaphore 64", "published_s", "published"),
                           ("published pattern, semaphore 1024", "published_1024_s", "published_1024")):
        print(f"  {label:<34}{a[key]:>12.1f}{a[key] / a['published_s']:>14.3f}"
              f"{e[ek]['mean_running']:>12.1f}{e[ek]['prefill_computed']:>14,}{e[ek]['mean_problem_s']:>16.1f}")
    print(f"  ratio ours/published = {a['ratio']:.3f} at semaphore 64 (target <= {a['target']}), "
          f"{a['ratio_1024']:.3f} at 1024 (target <= {a['target_1024']}); lower bound "
          f"{a['bound_s']:.1f} s (critical path {a['critical_path_s']:.1f}, work {a['work_s']:.1f}): "
          f"ours/bound = {a['ours_s'] / a['bound_s']:.3f}, published at 1024/bound = "
          f"{a['published_1024_s'] / a['bound_s']:.3f}")
    for label, ek in (("ours", "ours"), ("published", "published"), ("pub. 1024", "published_1024")):
        print(f"  batch by tenth of the run, {label:<10}: {e[ek]['occupancy_deciles']}")


def _print_b(rows: list[dict[str, Any]]) -> None:
    print("\n(b) dataflow vs the lower bound (GPU profile)")
    print(f"  {'workload':<44}{'seqs':>6}{'CP s':>9}{'work s':>9}{'dataflow':>10}{'/bound':>8}"
          f"{'rounds':>10}{'/bound':>8}")
    for r in rows:
        print(f"  {r['workload']:<44}{r['sequences']:>6}{r['critical_path_s']:>9.1f}{r['work_s']:>9.1f}"
              f"{r['dataflow_s']:>10.1f}{r['dataflow_over_bound']:>8.3f}{r['rounds_s']:>10.1f}"
              f"{r['rounds_over_bound']:>8.3f}")


def _print_c(c: dict[str, Any]) -> None:
    print(f"\n(c) {c['workload']} (ceiling {c['ceiling_tok_s']:.0f} tok/s)")
    e = c["engine"]
    print(f"  {'arm':<22}{'makespan s':>12}{'floor s':>10}{'/floor':>8}{'mean batch':>12}"
          f"{'compl tok':>11}{'prefill comp':>14}{'unique':>9}{'latency':>9}")
    for label, key, ek in (("ours (defaults)", "ours", "ours"), ("ours, capacity 128 *", "ours_cap128", "ours_cap128"),
                           ("published pattern", "published", "published"),
                           ("published, sem. 1024", "published_1024", "published_1024")):
        print(f"  {label:<22}{c[key + '_s']:>12.1f}{c[key + '_floor_s']:>10.1f}{c[key + '_over_floor']:>8.3f}"
              f"{e[ek]['mean_running']:>12.1f}{e[ek]['completion_tokens']:>11,}{e[ek]['prefill_computed']:>14,}"
              f"{e[ek]['unique_prompt_tokens']:>9,}{e[ek]['mean_problem_s']:>9.1f}")
    print(f"  ratio ours/published = {c['ratio']:.3f} (semaphore 64), {c['ratio_1024']:.3f} (1024); lower bound {c['bound_s']:.1f} s "
          f"(critical path {c['critical_path_s']:.1f}, work {c['work_s']:.1f})")
    print("  * the CPU fit extrapolated to 128 sequences (measured only up to 64); floor at the 64-ceiling")
    for label, ek in (("ours", "ours"), ("published", "published")):
        print(f"  batch by tenth of the run, {label:<10}: {e[ek]['occupancy_deciles']}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default="a,b,c,d", help="comma list of a, b, c, d")
    parser.add_argument("--out", type=Path, default=Path("bench_sim.json"), help="JSON results")
    parser.add_argument("--feeding", action="store_true",
                        help="what-if: our runs execute inside executor_for(engine).feeder(), the "
                             "order a study uses while it still feeds units (deeper rounds first) "
                             "instead of the batch order (longest remaining path first)")
    args = parser.parse_args(argv)
    global FEEDING
    FEEDING = args.feeding
    parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    unknown = parts - {"a", "b", "c", "d"}
    if unknown:
        print(f"error: unknown part {sorted(unknown)[0]!r}: use a, b, c or d", file=sys.stderr)
        return 2
    results: dict[str, Any] = {"date": time.strftime("%Y-%m-%d"), "feeding": FEEDING,
                               "profiles": {"gpu": GPU_PROFILE.model_dump(), "cpu": CPU_PROFILE.model_dump()},
                               "lengths": {"gpu": GPU_LENGTHS.model_dump(), "cpu": CPU_LENGTHS.model_dump()}}
    t0 = time.perf_counter()
    if "a" in parts:
        results["a"] = part_a()
        _print_a(results["a"])
    if "b" in parts:
        results["b"] = part_b()
        _print_b(results["b"])
    if "c" in parts:
        results["c"] = part_c()
        _print_c(results["c"])
    if "d" in parts:
        results["d"] = part_d()
        _print_d(results["d"])
    results["host_seconds"] = round(time.perf_counter() - t0, 1)
    args.out.write_text(json.dumps(results, indent=1), encoding="utf-8")
    print(f"\nwrote {args.out} ({results['host_seconds']} s of host time)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
