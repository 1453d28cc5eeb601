"""The round scheduler with FunctionEngine: who hears whom, in which order, determinism,
the n-merge, retries, failure policy, cancellation, budgets."""

from __future__ import annotations

import random
import re
from collections import Counter
from typing import Any

import anyio
import pytest

from pacore_agents import (
    Completion,
    EngineError,
    FunctionEngine,
    GenerationRequest,
    NodeId,
    RetryPolicy,
    Role,
    RunConfig,
    RunFailedError,
    RunTrace,
    Topology,
    Usage,
    all_to_all,
    hierarchical,
    load_topology,
    ring,
    run,
    star,
)

REF_RE = re.compile(r"Reference \d+:\n(.*?)\n(?=\nReference \d+:|\n\nNow, based)", re.S)


def node_text(node: NodeId) -> str:
    """A unique, variable-length content per node, with reasoning that must never leak."""
    pad = " pad" * ((node.agent * 7 + node.round * 3) % 5)
    return f"<think>secret reasoning of {node}</think>msg from {node}{pad}"


async def jittery(request: GenerationRequest) -> list[str]:
    await anyio.sleep(random.random() * 0.005)
    return [node_text(node) for node in request.metadata.nodes]


def run_topology(topo: Topology, config: RunConfig | None = None, handler: Any = jittery, **kw: Any) -> RunTrace:
    engine = FunctionEngine(handler)

    async def main() -> RunTrace:
        return (await run("What is 2+2?", topo, engine, config=config, **kw)).trace

    return anyio.run(main)


def expected_order(sources: list[NodeId]) -> list[NodeId]:
    """PaCoRe's order, computed independently: sort by raw length (stable), shuffle Random(42)."""
    items = sorted(sources)
    items.sort(key=lambda n: len(node_text(n)))
    random.Random(42).shuffle(items)
    return items


TOPOLOGIES = {
    "all-to-all": lambda: all_to_all([5, 3]),
    "ring": lambda: ring(6, 3, radius=1),
    "hierarchical": lambda: hierarchical([3, 2]),
    "star": lambda: star(5, 2),
    "pacore-low": lambda: load_topology("pacore-low"),
    "critic-ring": lambda: load_topology("critic-ring"),
}


@pytest.mark.parametrize("name", sorted(TOPOLOGIES))
def test_each_node_hears_exactly_its_in_neighbours_in_order(name: str) -> None:
    topo = TOPOLOGIES[name]()
    trace = run_topology(topo)
    for node in topo.nodes():
        record = trace.node(str(node))
        prompt = record.prompt[-1].content
        if node.round == 1:
            assert prompt == "What is 2+2?"
            continue
        sources = expected_order(topo.inputs(node))
        assert record.inputs == [str(s) for s in sources]
        bodies = [m.strip() for m in re.findall(r":\n(msg from r\d+\.a\d+(?: pad)*)\n", prompt)]
        assert bodies == [node_text(s).split("</think>")[1] for s in sources], str(node)
        assert "secret" not in prompt
    assert trace.answer == node_text(topo.sink).split("</think>")[1]


def test_graph_and_seeded_orders() -> None:
    topo = all_to_all([6])
    graph = run_topology(topo, RunConfig(order="graph"))
    assert graph.node("r2.a0").inputs == [f"r1.a{i}" for i in range(6)]
    seeded = run_topology(topo, RunConfig(order="seeded", seed=3))
    again = run_topology(topo, RunConfig(order="seeded", seed=3))
    other = run_topology(topo, RunConfig(order="seeded", seed=4))
    assert seeded.node("r2.a0").inputs == again.node("r2.a0").inputs
    assert sorted(seeded.node("r2.a0").inputs) == graph.node("r2.a0").inputs
    assert seeded.node("r2.a0").inputs != other.node("r2.a0").inputs


def test_deterministic_under_random_completion_order() -> None:
    """Content depends on the request's seed; completion order is random. Same trace twice."""

    async def seeded(request: GenerationRequest) -> list[str]:
        await anyio.sleep(random.random() * 0.01)
        rng = random.Random(request.sampling.seed)
        return ["x " * rng.randint(1, 30) + f"ans {rng.randint(0, 9)}" for _ in range(request.n)]

    def fingerprint(trace: RunTrace) -> list[tuple[str, str | None, list[str], int | None]]:
        return [(n.id, n.content, n.inputs, n.seed) for n in trace.nodes]

    topo = ring(6, 3)
    first = run_topology(topo, RunConfig(seed=11), seeded)
    for _ in range(3):
        assert fingerprint(run_topology(topo, RunConfig(seed=11), seeded)) == fingerprint(first)
    assert fingerprint(run_topology(topo, RunConfig(seed=12), seeded)) != fingerprint(first)


def test_identical_prompts_are_one_request_with_n() -> None:
    engine = FunctionEngine(jittery)
    anyio.run(lambda: run("Q?", all_to_all([4, 3]), engine))
    assert [(r.n, r.metadata.round) for r in engine.requests] == [(4, 1), (3, 2), (1, 3)]
    assert engine.requests[0].metadata.nodes == tuple(NodeId.of(1, a) for a in range(4))
    solo = FunctionEngine(jittery)
    trace = anyio.run(lambda: run("Q?", all_to_all([4, 3]), solo, config=RunConfig(merge_identical=False))).trace
    assert [r.n for r in solo.requests] == [1] * 8
    assert len({n.seed for n in trace.nodes}) == 8


def test_ring_prompts_differ_so_requests_split() -> None:
    engine = FunctionEngine(jittery)
    anyio.run(lambda: run("Q?", ring(4, 2), engine))
    rounds = Counter(r.metadata.round for r in engine.requests)
    assert rounds == {1: 1, 2: 4, 3: 1}


def test_trace_fields_and_ttc() -> None:
    trace = run_topology(all_to_all([3]))
    assert trace.sink == "r2.a0"
    assert trace.effective_ttc == sum(n.usage.completion_tokens for n in trace.nodes) > 0
    rec = trace.node("r1.a1")
    assert rec.role == "explorer" and rec.message and rec.content and rec.attempts == 1
    assert rec.started_at is not None and rec.ended_at is not None and rec.ended_at >= rec.started_at
    assert trace.node("r2.a0").role == "sink"
    assert {e["source"] for e in trace.topology["edges"]} == {"r1.a0", "r1.a1", "r1.a2"}
    dumped = RunTrace.model_validate_json(trace.model_dump_json())
    assert dumped == trace


def flaky(fail_times: dict[str, int], permanent: set[str] = frozenset()) -> Any:  # type: ignore[assignment]
    calls: Counter[str] = Counter()

    def handler(request: GenerationRequest) -> list[str]:
        key = str(request.metadata.nodes[0])
        calls[key] += 1
        if key in permanent:
            raise EngineError("bad request", status=400, endpoint="fake")
        if calls[key] <= fail_times.get(key, 0):
            raise EngineError("overloaded", retryable=True, status=503, endpoint="fake")
        return [node_text(n) for n in request.metadata.nodes]

    handler.calls = calls  # type: ignore[attr-defined]
    return handler


FAST_RETRY = RetryPolicy(max_attempts=3, initial_backoff=0.001, max_backoff=0.002)
SOLO = {"retry": FAST_RETRY, "merge_identical": False}


def test_transient_failures_are_retried() -> None:
    handler = flaky({"r1.a0": 2})
    trace = run_topology(ring(3, 1), RunConfig(**SOLO), handler)
    assert handler.calls["r1.a0"] == 3
    assert trace.node("r1.a0").attempts == 3 and not trace.degraded


def test_retries_are_bounded_and_fail_the_run_by_default() -> None:
    handler = flaky({"r2.a1": 99})
    with pytest.raises(RunFailedError, match=r"r2\.a1") as info:
        run_topology(ring(3, 2), RunConfig(**SOLO), handler)
    assert handler.calls["r2.a1"] == 3
    trace = info.value.trace
    assert trace.node("r2.a1").error and "status=503" in trace.node("r2.a1").error
    assert trace.answer is None and not trace.degraded
    assert trace.node("r2.a1").status == "failed"
    assert trace.node("r3.a0").status == "cancelled" and trace.node("r3.a0").content is None
    assert {n.id for n in trace.nodes} == {str(n) for n in ring(3, 2).nodes()}


def test_permanent_errors_are_not_retried() -> None:
    handler = flaky({}, permanent={"r1.a2"})
    with pytest.raises(RunFailedError):
        run_topology(ring(3, 1), RunConfig(**SOLO), handler)
    assert handler.calls["r1.a2"] == 1


def test_continue_policy_records_and_degrades() -> None:
    handler = flaky({}, permanent={"r1.a2"})
    trace = run_topology(ring(4, 2), RunConfig(**SOLO, on_failure="continue"), handler)
    assert trace.degraded and trace.answer is not None
    assert trace.node("r1.a2").error and "attempts=1" in trace.node("r1.a2").error
    assert trace.node("r1.a2").status == "failed"
    assert all(n.status == "ok" for n in trace.nodes if n.id != "r1.a2")
    for hearer in ("r2.a1", "r2.a2", "r2.a3"):
        rec = trace.node(hearer)
        assert "r1.a2" not in rec.inputs and rec.missing_inputs == ["r1.a2"]
        assert "r1.a2" not in rec.prompt[-1].content
    assert trace.node("r2.a0").missing_inputs == []


def test_failed_sink_fails_even_when_continuing() -> None:
    handler = flaky({}, permanent={"r2.a0"})
    with pytest.raises(RunFailedError, match="sink"):
        run_topology(all_to_all([2]), RunConfig(on_failure="continue"), handler)


def test_cancellation_reaches_every_request() -> None:
    started: list[str] = []
    cancelled: list[str] = []

    async def forever(request: GenerationRequest) -> list[str]:
        started.append(str(request.metadata.nodes[0]))
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            cancelled.append(str(request.metadata.nodes[0]))
            raise
        return []

    async def main() -> None:
        with anyio.move_on_after(0.2):
            await run("Q?", ring(5, 1), FunctionEngine(forever), config=RunConfig(merge_identical=False))

    anyio.run(main)
    assert len(started) == 5 and sorted(cancelled) == sorted(started)


def test_run_timeout_records_a_failed_trace() -> None:
    async def slow(request: GenerationRequest) -> list[str]:
        await anyio.sleep(5)
        return ["x"] * request.n

    with pytest.raises(RunFailedError, match="timed out") as info:
        run_topology(all_to_all([2]), RunConfig(timeout=0.2), slow)
    trace = info.value.trace
    assert trace.node("r1.a0").prompt and not trace.degraded
    for node in trace.nodes:  # every node says how it ended: none looks like a silent success
        assert node.status == "timed_out" and node.error and "timed out" in node.error
        assert node.content is None
    assert trace.node("r1.a0").started_at is not None  # it was in flight
    assert trace.node("r2.a0").prompt == []  # never planned: its inputs never arrived


def test_engine_capacity_caps_sequences_in_flight() -> None:
    live = 0
    peak = 0

    async def counting(request: GenerationRequest) -> list[str]:
        nonlocal live, peak
        live += 1
        peak = max(peak, live)
        await anyio.sleep(0.01)
        live -= 1
        return [node_text(n) for n in request.metadata.nodes]

    engine = FunctionEngine(counting, max_sequences=3)
    anyio.run(lambda: run("Q?", ring(8, 1), engine, config=RunConfig(merge_identical=False)))
    assert peak == 3


def test_removed_max_in_flight_says_what_to_do() -> None:
    with pytest.raises(ValueError, match=r"max_in_flight was removed.*window"):
        RunConfig(max_in_flight=3)  # type: ignore[call-arg]


def test_custom_role_and_sampling_override() -> None:
    critic = Role("critic", template="Check: {{ ref_responses | length }} refs for {{ original_prompt }}",
                  system="You are strict.", sampling=None)
    from pacore_agents import SamplingParams

    cold = Role("cold", sampling=SamplingParams(temperature=0.1))
    topo = ring(3, 2).with_roles({NodeId.of(2, 0): "critic", NodeId.of(1, 1): "cold"})
    engine = FunctionEngine(jittery)
    trace = anyio.run(lambda: run("Q?", topo, engine, roles=[critic, cold])).trace
    rec = trace.node("r2.a0")
    assert rec.role == "critic"
    assert [m.role for m in rec.prompt] == ["system", "user"]
    assert rec.prompt[1].content == "Check: 3 refs for Q?"
    temps = {r.metadata.nodes[0]: r.sampling.temperature for r in engine.requests}
    assert temps[NodeId.of(1, 1)] == 0.1 and temps[NodeId.of(1, 0)] == 1.0


def test_unknown_role_fails_before_any_request() -> None:
    from pacore_agents import ConfigError

    engine = FunctionEngine(jittery)
    topo = ring(3, 1).with_roles({NodeId.of(1, 0): "nobody"})
    with pytest.raises(ConfigError, match=r"unknown role 'nobody' on node r1\.a0"):
        anyio.run(lambda: run("Q?", topo, engine))
    assert engine.requests == []


def test_message_budget_truncates_and_records() -> None:
    def long(request: GenerationRequest) -> list[str]:
        return [" ".join(f"w{i}" for i in range(50)) + " FINAL" for _ in request.metadata.nodes]

    trace = run_topology(all_to_all([2]), RunConfig(max_message_tokens=10), long)
    sink = trace.node("r2.a0")
    assert [t.kept_tokens for t in sink.truncations] == [10, 10]
    assert sink.truncations[0].original_tokens == 51
    assert "FINAL" in sink.prompt[-1].content and "w5 " not in sink.prompt[-1].content


def test_context_budget_fits_prompt() -> None:
    def long(request: GenerationRequest) -> list[str]:
        return [" ".join(f"w{i}" for i in range(400)) for _ in request.metadata.nodes]

    engine = FunctionEngine(long, max_context=600)
    config = RunConfig(sampling=RunConfig().sampling.model_copy(update={"max_tokens": 100}))
    trace = anyio.run(lambda: run("Q?", all_to_all([3]), engine, config=config)).trace
    sink = trace.node("r2.a0")
    prompt_tokens = sum(engine.count_tokens(m.content) + 8 for m in sink.prompt)
    assert prompt_tokens + 100 <= 600
    assert len(sink.truncations) == 3 and all(t.original_tokens == 400 for t in sink.truncations)


def test_precomputed_nodes_skip_the_engine() -> None:
    engine = FunctionEngine(jittery)
    pre = {NodeId.of(1, 0): Completion(content="pooled", usage=Usage(completion_tokens=7))}
    trace = anyio.run(lambda: run("Q?", all_to_all([2]), engine, precomputed=pre)).trace
    assert trace.node("r1.a0").content == "pooled" and trace.node("r1.a0").notes["precomputed"]
    assert [r.metadata.nodes for r in engine.requests] == [(NodeId.of(1, 1),), (NodeId.of(2, 0),)]
    assert trace.effective_ttc >= 7


def test_problem_as_chat_messages_keeps_system_prompt() -> None:
    engine = FunctionEngine(jittery)
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Q?"}]
    trace = anyio.run(lambda: run(msgs, all_to_all([2]), engine)).trace
    sink = trace.node("r2.a0").prompt
    assert sink[0].content == "Be brief." and sink[1].content.startswith("You are given a problem")
    assert "Original Problem:\nQ?\n" in sink[1].content
