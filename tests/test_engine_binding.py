"""Several models in one graph (issue 19): roles bind nodes to named engines. Two
FunctionEngines: which engine each node hit matches the binding on every built-in topology and a
custom graph; merged requests never span engines; per-engine windows hold; one engine's failure
touches only its nodes (named in the error); cancelling the run cancels every engine's work;
traces carry each node's engine and model and per-engine tokens."""

from __future__ import annotations

from collections.abc import Callable

import anyio
import networkx as nx
import pytest

from pacore_agents import (
    ConfigError,
    Engine,
    EngineError,
    FunctionEngine,
    GenerationRequest,
    RoleOverride,
    RunConfig,
    RunFailedError,
    all_to_all,
    builtin_topologies,
    executor_for,
    from_graph,
    load_topology,
    run,
)
from pacore_agents._ids import NodeId

BIG_SINK = {"sink": RoleOverride(engine="big")}


def _engine(name: str, handler: Callable[[GenerationRequest], list[str]] | None = None, **kw: object) -> FunctionEngine:
    def answer(request: GenerationRequest) -> list[str]:
        return [f"{name} says {i} \\boxed{{4}}" for i in range(request.n)]

    def model_name(request: GenerationRequest) -> list[str]:
        return (handler or answer)(request)

    model_name.__name__ = f"{name}-model"
    return FunctionEngine(model_name, name=name, **kw)  # type: ignore[arg-type]


def _nodes_sent(engine: FunctionEngine) -> set[str]:
    return {str(n) for r in engine.requests for n in r.metadata.nodes}


@pytest.mark.parametrize("name", sorted(builtin_topologies()))
def test_each_node_hits_the_engine_its_role_names_on_every_builtin_topology(name: str) -> None:
    small, big = _engine("small"), _engine("big")
    topo = load_topology(name)
    trace = anyio.run(lambda: run("What is 2 + 2?", topo, engines={"default": small, "big": big},
                                  roles=BIG_SINK)).trace
    sink = str(topo.sink)
    assert _nodes_sent(big) == {sink}
    assert _nodes_sent(small) == {str(n) for n in topo.nodes()} - {sink}
    for node in trace.nodes:
        want = "big" if node.id == sink else "default"
        assert (node.engine, node.model) == (want, f"{'big' if want == 'big' else 'small'}-model")
    assert set(trace.engines) == {"default", "big"} and trace.engines["big"].name == "big"
    assert trace.engine.name == "small"  # the default engine
    sink_tokens = trace.tokens["big"]["sink"].completion_tokens
    assert sink_tokens == trace.node(sink).usage.completion_tokens > 0
    assert sum(u.completion_tokens for roles in trace.tokens.values() for u in roles.values()) == trace.effective_ttc


def test_a_custom_graph_binds_its_own_role_and_merges_never_span_engines() -> None:
    small, big = _engine("small"), _engine("big")
    comm = nx.DiGraph([(0, 1), (1, 2), (2, 3), (3, 0)])
    topo = from_graph(comm, 2, roles={2: "critic", 3: "critic"})
    # round 1: agents 0-1 explorers on small, 2-3 the same prompt on big: two requests of n=2
    topo = topo.with_roles({NodeId.of(1, 2): "explorer_big", NodeId.of(1, 3): "explorer_big"})
    roles = {"critic": RoleOverride(template="pacore", engine="big"), "explorer_big": RoleOverride(engine="big")}
    trace = anyio.run(lambda: run("Q?", topo, engines={"default": small, "big": big}, roles=roles)).trace
    assert _nodes_sent(big) == {"r1.a2", "r1.a3", "r2.a2", "r2.a3"}
    assert {r.metadata.nodes for r in big.requests if r.metadata.round == 1} == {(NodeId.of(1, 2), NodeId.of(1, 3))}
    assert {r.metadata.nodes for r in small.requests if r.metadata.round == 1} == {(NodeId.of(1, 0), NodeId.of(1, 1))}
    assert {n.id: n.engine for n in trace.nodes if n.role == "critic"} == {"r2.a2": "big", "r2.a3": "big"}


def test_one_engine_shorthand_and_engine_beside_engines() -> None:
    small, big = _engine("small"), _engine("big")
    trace = anyio.run(lambda: run("Q?", "pacore-low", small)).trace
    assert {n.engine for n in trace.nodes} == {"default"} and set(trace.engines) == {"default"}
    trace = anyio.run(lambda: run("Q?", "pacore-low", small, engines={"big": big}, roles=BIG_SINK)).trace
    assert trace.node("r2.a0").engine == "big" and trace.node("r1.a0").engine == "default"


def test_bad_bindings_are_refused_before_any_request() -> None:
    small, big = _engine("small"), _engine("big")
    with pytest.raises(ConfigError, match="engine 'huge', which this run does not have: engines are default, big"):
        anyio.run(lambda: run("Q?", "pacore-low", engines={"default": small, "big": big},
                              roles={"sink": RoleOverride(engine="huge")}))
    with pytest.raises(ConfigError, match="names no engine and there is no 'default' engine"):
        anyio.run(lambda: run("Q?", "pacore-low", engines={"small": small, "big": big}, roles=BIG_SINK))
    with pytest.raises(ConfigError, match="needs an engine"):
        anyio.run(lambda: run("Q?", "pacore-low"))
    with pytest.raises(ConfigError, match=r"not a pacore_agents\.Engine"):
        anyio.run(lambda: run("Q?", "pacore-low", engines={"default": "vllm"}))  # type: ignore[dict-item]
    assert small.requests == [] and big.requests == []


def test_each_engine_keeps_its_own_window() -> None:
    peak = {"small": 0, "big": 0}
    now = {"small": 0, "big": 0}

    def slow(name: str) -> Callable[[GenerationRequest], object]:
        async def handler(request: GenerationRequest) -> list[str]:
            now[name] += request.n
            peak[name] = max(peak[name], now[name])
            await anyio.sleep(0.01)
            now[name] -= request.n
            return ["ok \\boxed{1}"] * request.n
        return handler

    small = FunctionEngine(slow("small"), name="small", max_sequences=3)  # type: ignore[arg-type]
    big = FunctionEngine(slow("big"), name="big", max_sequences=1)  # type: ignore[arg-type]
    topo = all_to_all([4, 2]).with_roles({NodeId.of(2, 0): "judge", NodeId.of(2, 1): "judge"})
    roles = {"judge": RoleOverride(template="pacore", engine="big"), **BIG_SINK}

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            for i in range(4):
                tg.start_soon(lambda i=i: run(f"Q{i}?", topo, engines={"default": small, "big": big}, roles=roles,
                                              config=RunConfig(merge_identical=False)))  # n=1 requests

    anyio.run(main)
    assert peak == {"small": 3, "big": 1}
    assert executor_for(small).window == 3 and executor_for(big).window == 1
    assert executor_for(small).stats().peak_in_flight == 3 and executor_for(big).stats().peak_in_flight == 1
    assert executor_for(small).in_flight == executor_for(big).in_flight == 0


def test_one_engine_failing_fails_only_its_nodes_and_names_it() -> None:
    def down(request: GenerationRequest) -> list[str]:
        raise EngineError("connection refused", retryable=False, endpoint="http://big:8000/v1")

    small, big = _engine("small"), _engine("big", down)
    topo = all_to_all([3, 2]).with_roles({NodeId.of(2, 0): "judge", NodeId.of(2, 1): "judge"})
    roles = {"judge": RoleOverride(template="pacore", engine="big")}
    config = RunConfig(on_failure="continue", retry=None)
    trace = anyio.run(lambda: run("Q?", topo, engines={"default": small, "big": big}, roles=roles,
                                  config=config)).trace
    status = {n.id: n.status for n in trace.nodes}
    assert status == {"r1.a0": "ok", "r1.a1": "ok", "r1.a2": "ok", "r2.a0": "failed", "r2.a1": "failed",
                      "r3.a0": "ok"}
    for node in ("r2.a0", "r2.a1"):
        error = trace.node(node).error or ""
        assert error.startswith("engine 'big': connection refused") and "endpoint=http://big:8000/v1" in error
    assert trace.degraded and trace.answer is not None


class NoStart(FunctionEngine):
    async def start(self) -> None:
        raise EngineError("no server at http://127.0.0.1:9/v1", retryable=True)


def test_an_engine_that_does_not_start_fails_only_its_nodes() -> None:
    small, big = _engine("small"), NoStart(lambda r: ["x"] * r.n, name="big")
    config = RunConfig(on_failure="continue", retry=None)
    with pytest.raises(RunFailedError, match=r"the sink r2\.a0 failed: engine 'big' did not start: no server") as info:
        anyio.run(lambda: run("Q?", "pacore-low", engines={"default": small, "big": big}, roles=BIG_SINK,
                              config=config))
    trace = info.value.trace
    assert trace is not None and [n.status for n in trace.nodes] == ["ok"] * 4 + ["failed"]
    assert big.requests == []


def test_a_failure_on_one_engine_cancels_the_work_on_the_other() -> None:
    cancelled: list[str] = []

    async def hang(request: GenerationRequest) -> list[str]:
        try:
            await anyio.sleep_forever()
        finally:
            cancelled.append(str(request.metadata.nodes[0]))
        return []

    def fail(request: GenerationRequest) -> list[str]:
        raise EngineError("boom", retryable=False)

    slow: Engine = FunctionEngine(hang, name="slow")  # type: ignore[arg-type]
    broken = _engine("broken", fail)
    topo = all_to_all([2]).with_roles({NodeId.of(1, 1): "other"})
    roles = {"other": RoleOverride(system="Other.", engine="broken")}

    async def main() -> None:
        with anyio.fail_after(5):
            await run("Q?", topo, engines={"default": slow, "broken": broken}, roles=roles)

    with pytest.raises(RunFailedError, match=r"node r1\.a1 failed: engine 'broken': boom"):
        anyio.run(main)
    assert cancelled == ["r1.a0"]
    assert executor_for(slow).in_flight == 0 and executor_for(slow).queued == 0
