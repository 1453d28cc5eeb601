"""The dataflow executor: identical results to rounds mode, no waiting for unrelated nodes,
admission by sequences in priority order, per-sample release, shared by concurrent runs."""

from __future__ import annotations

import random
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from pacore_agents import (
    DEFAULT_WINDOW,
    FunctionEngine,
    GenerationRequest,
    NodeId,
    RunConfig,
    RunTrace,
    Topology,
    all_to_all,
    executor_for,
    from_edges,
    hierarchical,
    load_topology,
    ring,
    run,
    star,
)
from pacore_agents._priority import Priority


def seeded_text(request: GenerationRequest) -> list[str]:
    """Content from the request's seed (sample i: seed + i) and prompt: order-independent."""
    out = []
    for i in range(request.n):
        seed = None if request.sampling.seed is None else request.sampling.seed + i
        rng = random.Random(f"{seed}|{request.messages[-1].content}")
        out.append(f"<think>r</think>ans {rng.randint(0, 9)}" + " x" * rng.randint(0, 20))
    return out


def latency_handler(delays: dict[str, float], *, default: float = 0.0) -> Any:
    """Per-node latency (seconds) and seeded content; each node a different speed."""

    async def handler(request: GenerationRequest) -> list[str]:
        worst = max(delays.get(str(n), default) for n in request.metadata.nodes)
        await anyio.sleep(worst)
        return seeded_text(request)

    return handler


def comparable(trace: RunTrace) -> list[tuple[Any, ...]]:
    """A trace without timings: what must not depend on scheduling."""
    return [(n.id, n.role, n.inputs, n.missing_inputs, [m.content for m in n.prompt], n.content, n.message,
             n.seed, n.request_n, n.status, n.usage.completion_tokens) for n in trace.nodes]


TOPOLOGIES = {
    "all-to-all": lambda: all_to_all([4, 3]),
    "ring": lambda: ring(6, 3, radius=1),
    "hierarchical": lambda: hierarchical([3, 2]),
    "star": lambda: star(4, 3),
    "critic-ring": lambda: load_topology("critic-ring"),
}


@pytest.mark.parametrize("name", sorted(TOPOLOGIES))
@pytest.mark.parametrize("split", [False, True])
def test_dataflow_and_rounds_give_identical_traces(name: str, split: bool) -> None:
    topo = TOPOLOGIES[name]()
    rng = random.Random(name)
    delays = {str(n): rng.random() * 0.02 for n in topo.nodes()}

    def once(mode: str) -> RunTrace:
        engine = FunctionEngine(latency_handler(delays), split_samples=split)
        config = RunConfig(mode=mode, seed=5)  # type: ignore[arg-type]
        return anyio.run(lambda: run("What is 3+4?", topo, engine, config=config)).trace

    dataflow, rounds = once("dataflow"), once("rounds")
    assert dataflow.mode == "dataflow" and rounds.mode == "rounds"
    assert comparable(dataflow) == comparable(rounds)
    assert dataflow.answer == rounds.answer is not None


def test_split_samples_match_the_n_request_they_replace() -> None:
    """vLLM seeds child i of an n request with seed + i: split requests do the same."""
    merged = FunctionEngine(seeded_text)
    split = FunctionEngine(seeded_text, split_samples=True)
    a = anyio.run(lambda: run("Q?", all_to_all([4]), merged)).trace
    b = anyio.run(lambda: run("Q?", all_to_all([4]), split)).trace
    assert comparable(a) == comparable(b)
    assert [r.n for r in merged.requests] == [4, 1]
    assert [r.n for r in split.requests] == [1] * 5
    seeds = [r.sampling.seed for r in split.requests[:4]]
    assert seeds == [seeds[0] + i for i in range(4)]
    assert [n.seed for n in a.nodes[:4]] == seeds  # the trace records each sample's own seed


def test_dataflow_does_not_wait_for_unrelated_nodes() -> None:
    """hierarchical([2, 2]): r2.a1 hears r1.a2, r1.a3 only; r1.a0 is slow."""
    topo = hierarchical([2, 2])
    delays = {"r1.a0": 0.3}

    def started(mode: str) -> RunTrace:
        engine = FunctionEngine(latency_handler(delays, default=0.01), split_samples=True)
        return anyio.run(lambda: run("Q?", topo, engine, config=RunConfig(mode=mode))).trace  # type: ignore[arg-type]

    flow = started("dataflow")
    slow_end = flow.node("r1.a0").ended_at
    assert flow.node("r2.a1").started_at < slow_end  # type: ignore[operator]
    barrier = started("rounds")
    assert barrier.node("r2.a1").started_at >= barrier.node("r1.a0").ended_at  # type: ignore[operator]


def _two_runs_in_order(feeding: bool) -> list[tuple[str, str]]:
    """Window 1: runs A then B (ring(3, 2), no merging); the order the engine saw nodes."""
    order: list[tuple[str, str]] = []

    async def handler(request: GenerationRequest) -> list[str]:
        order.append((request.metadata.unit or "", str(request.metadata.nodes[0])))
        await anyio.sleep(0.001)
        return ["m"] * request.n

    engine = FunctionEngine(handler, max_sequences=1)
    executor = executor_for(engine)

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            for unit in ("A", "B"):
                tg.start_soon(lambda u=unit: run("Q?", ring(3, 2), engine, config=RunConfig(merge_identical=False),
                                                 unit=u))
                await anyio.lowlevel.checkpoint()

    if feeding:
        with executor.feeder():
            anyio.run(main)
    else:
        anyio.run(main)
    assert executor.stats().peak_in_flight == 1
    return order


def test_while_feeding_deeper_rounds_go_first() -> None:
    """A server or a study still starting units: A's round 2 overtakes B's round 1, so A
    finishes soon (latency) and few problems are in flight."""
    order = _two_runs_in_order(feeding=True)
    a_round2 = [i for i, (u, n) in enumerate(order) if u == "A" and n.startswith("r2")]
    b_round1 = [i for i, (u, n) in enumerate(order) if u == "B" and n.startswith("r1")]
    assert order[:3] == [("A", "r1.a0"), ("A", "r1.a1"), ("A", "r1.a2")]
    assert max(a_round2) < min(b_round1)


def test_when_nothing_more_comes_the_longest_remaining_path_goes_first() -> None:
    """No feeder: B's round 1 (two rounds still to go) overtakes A's round 2 (one to go), so
    no problem is left to run its whole chain in a thin batch at the end (makespan)."""
    order = _two_runs_in_order(feeding=False)
    a_round2 = [i for i, (u, n) in enumerate(order) if u == "A" and n.startswith("r2")]
    b_round1 = [i for i, (u, n) in enumerate(order) if u == "B" and n.startswith("r1")]
    assert order[:3] == [("A", "r1.a0"), ("A", "r1.a1"), ("A", "r1.a2")]
    assert max(b_round1) < min(a_round2)
    assert order[-1] == ("B", "r3.a0")


def test_leaving_the_feeder_reorders_what_waits() -> None:
    executor = executor_for(FunctionEngine(seeded_text), window=1)
    started: list[str] = []
    executor.in_flight = 1  # the window is full: everything below waits

    with executor.feeder():
        executor._enqueue(Priority(2, 0, 0), 1, lambda n: started.append("A sink"))
        executor._enqueue(Priority(1, 1, 1), 1, lambda n: started.append("B round 1"))
        assert [w.priority.run for _, _, w in sorted(executor._heap)] == [0, 1]  # deeper first
    assert [w.priority.run for _, _, w in sorted(executor._heap)] == [1, 0]  # longest path first
    executor.release(1)
    assert started == ["B round 1"]


def test_concurrent_runs_share_one_window() -> None:
    live = peak = 0

    async def counting(request: GenerationRequest) -> list[str]:
        nonlocal live, peak
        live += request.n
        peak = max(peak, live)
        await anyio.sleep(0.005)
        live -= request.n
        return ["m"] * request.n

    engine = FunctionEngine(counting, max_sequences=5, split_samples=True)

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            for i in range(6):
                tg.start_soon(lambda i=i: run(f"Q{i}?", all_to_all([4, 2]), engine))

    anyio.run(main)
    stats = executor_for(engine).stats()
    assert peak == 5 == stats.peak_in_flight == stats.window
    assert stats.sequences == 6 * 7 and stats.mean_in_flight > 1
    assert executor_for(engine).in_flight == 0 and executor_for(engine).queued == 0


def test_each_split_sample_frees_its_slot_when_it_ends() -> None:
    """Window 2, three siblings of which r1.a0 is slow: r1.a2 starts as soon as r1.a1 ends,
    not when the slowest sibling does."""
    starts: dict[str, float] = {}
    ends: dict[str, float] = {}

    async def handler(request: GenerationRequest) -> list[str]:
        node = str(request.metadata.nodes[0])
        starts[node] = anyio.current_time()
        await anyio.sleep(0.3 if node == "r1.a0" else 0.02)
        ends[node] = anyio.current_time()
        return ["m"]

    engine = FunctionEngine(handler, max_sequences=2, split_samples=True)
    anyio.run(lambda: run("Q?", all_to_all([3]), engine))
    assert starts["r1.a2"] >= ends["r1.a1"] and starts["r1.a2"] < ends["r1.a0"]


def test_cancelled_run_leaves_nothing_in_the_executor() -> None:
    async def forever(request: GenerationRequest) -> list[str]:
        await anyio.sleep_forever()
        raise AssertionError

    engine = FunctionEngine(forever, max_sequences=2)

    async def main() -> None:
        with anyio.move_on_after(0.1):
            await run("Q?", ring(5, 2), engine, config=RunConfig(merge_identical=False))

    anyio.run(main)
    ex = executor_for(engine)
    assert ex.in_flight == 0 and ex.queued == 0 and len(engine.requests) == 2


def test_window_defaults_and_override() -> None:
    engine = FunctionEngine(seeded_text)
    assert executor_for(engine).window == DEFAULT_WINDOW
    assert executor_for(engine, window=7).window == 7
    sized = FunctionEngine(seeded_text, max_sequences=12)
    ex = executor_for(sized)
    ex.refresh()
    assert ex.window == 12


def test_priority_keys() -> None:
    # (round, remaining, run): an all-to-all [k, k] + sink has rounds 1, 2, 3
    items = [Priority(1, 2, 0), Priority(3, 0, 5), Priority(2, 1, 1), Priority(3, 0, 2, (1,))]
    feeding = sorted(items, key=lambda p: p.key(True))
    assert feeding == [Priority(3, 0, 2, (1,)), Priority(3, 0, 5), Priority(2, 1, 1), Priority(1, 2, 0)]
    draining = sorted(items, key=lambda p: p.key(False))
    assert draining == [Priority(1, 2, 0), Priority(2, 1, 1), Priority(3, 0, 2, (1,)), Priority(3, 0, 5)]
    assert Priority(3, 0, 5).engine_priority(True) < Priority(1, 2, 0).engine_priority(True)
    assert Priority(1, 2, 0).engine_priority(False) < Priority(3, 0, 5).engine_priority(False)


def test_requests_carry_the_engine_priority() -> None:
    engine = FunctionEngine(seeded_text)
    anyio.run(lambda: run("Q?", all_to_all([2]), engine))
    first, sink = engine.requests
    assert sink.metadata.priority > first.metadata.priority  # lower runs sooner: round 1 (path 2)
    feeding = FunctionEngine(seeded_text)
    with executor_for(feeding).feeder():
        anyio.run(lambda: run("Q?", all_to_all([2]), feeding))
    first, sink = feeding.requests
    assert sink.metadata.priority < first.metadata.priority  # while feeding: deeper rounds first


def test_version_1_traces_still_load() -> None:
    trace = anyio.run(lambda: run("Q?", all_to_all([2]), FunctionEngine(seeded_text))).trace
    data = trace.model_dump(mode="json")
    assert data["version"] == 3 and data["stats"]["requests"] == 2
    for key in ("version", "mode", "stats"):
        data.pop(key)
    for node in data["nodes"]:
        node.pop("status")
    old = RunTrace.model_validate(data)
    assert old.version == 1 and all(n.outcome == "ok" for n in old.nodes)


def test_run_stats_count_unique_prompts_once() -> None:
    engine = FunctionEngine(seeded_text)
    trace = anyio.run(lambda: run("alpha beta?", all_to_all([4]), engine)).trace
    assert trace.stats is not None
    sink_prompt = trace.node("r2.a0").usage.prompt_tokens
    assert trace.stats.unique_prompt_tokens == 2 + sink_prompt  # 4 siblings share one prompt
    assert trace.stats.orchestration_seconds > 0 and trace.stats.wall_seconds > 0


def test_a_custom_graph_runs_in_dataflow_order() -> None:
    edges = [(NodeId.of(1, 0), NodeId.of(2, 0)), (NodeId.of(1, 1), NodeId.of(2, 1)),
             (NodeId.of(2, 0), NodeId.of(3, 0)), (NodeId.of(2, 1), NodeId.of(3, 0))]
    topo: Topology = from_edges(edges)
    engine = FunctionEngine(latency_handler({"r1.a0": 0.1}), split_samples=True)
    trace = anyio.run(lambda: run("Q?", topo, engine)).trace
    assert trace.node("r2.a1").ended_at <= trace.node("r1.a0").ended_at  # type: ignore[operator]
    assert trace.answer is not None


def test_a_finished_job_carries_on_with_its_runs_next_work() -> None:
    """Window 1: every request is admitted as the previous one releases its slot, so one task
    runs them all (no task per request), while other tasks still get their turns between."""
    tasks: set[object] = set()
    ticks = 0

    def handler(request: GenerationRequest) -> list[str]:
        tasks.add(anyio.get_current_task().id)
        return ["m"] * request.n

    engine = FunctionEngine(handler, max_sequences=1)

    async def main() -> None:
        nonlocal ticks
        async with anyio.create_task_group() as tg:
            async def ticker() -> None:
                nonlocal ticks
                while True:
                    ticks += 1
                    await anyio.lowlevel.checkpoint()

            tg.start_soon(ticker)
            await run("Q?", ring(6, 4), engine, config=RunConfig(merge_identical=False))
            tg.cancel_scope.cancel()

    anyio.run(main)
    assert len(engine.requests) == 6 * 4 + 1
    assert len(tasks) <= 2  # the first job's task (and a sink's hand-off at most), not 25
    assert ticks >= len(engine.requests)  # the chain yields between jobs
    ex = executor_for(engine)
    assert ex.in_flight == 0 and ex.queued == 0 and not ex._heap


def test_a_failure_in_a_carried_on_job_returns_every_slot() -> None:
    calls = 0

    def handler(request: GenerationRequest) -> list[str]:
        nonlocal calls
        calls += 1
        if calls == 4:
            raise RuntimeError("boom")
        return ["m"] * request.n

    engine = FunctionEngine(handler, max_sequences=1)

    async def main() -> None:
        with pytest.raises(Exception, match="boom"):
            await run("Q?", ring(4, 3), engine, config=RunConfig(merge_identical=False))

    anyio.run(main)
    ex = executor_for(engine)
    assert ex.in_flight == 0 and ex.queued == 0 and not ex._heap
