"""Stopping and quorum policies on the FunctionEngine: each fires when it should and only then."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import anyio
import pytest

from pacore_agents import (
    AdaptiveWidth,
    ConfigError,
    ConsensusStop,
    EngineError,
    FunctionEngine,
    GenerationRequest,
    Policies,
    Quorum,
    RunConfig,
    RunFailedError,
    RunTrace,
    StopRule,
    all_to_all,
    parse_spec,
    run,
)
from pacore_agents._policies import beta_confidence
from pacore_agents._specs import build


def _answers(table: Callable[[int, int], str]) -> Callable[[GenerationRequest], list[str]]:
    """A handler whose sample for node (round, agent) states ``table(round, agent)``."""

    def handler(request: GenerationRequest) -> list[str]:
        return [f"thinking </think> so \\boxed{{{table(n.round, n.agent)}}}" for n in request.metadata.nodes]

    return handler


def _run(topology: Any, engine: FunctionEngine, policies: Policies | None, **kw: Any) -> RunTrace:
    async def main() -> RunTrace:
        return (await run("What is 3 + 4?", topology, engine, policies=policies, **kw)).trace

    return anyio.run(main)


def _by_id(trace: RunTrace) -> dict[str, Any]:
    return {n.id: n for n in trace.nodes}


def _comparable(trace: RunTrace) -> list[tuple[Any, ...]]:
    return [(n.id, n.status, [m.content for m in n.prompt], n.seed, n.content, n.inputs) for n in trace.nodes]


UNANIMOUS = _answers(lambda r, a: "7")
SPLIT = _answers(lambda r, a: str(a % 2))  # two answers, evenly split


def test_beta_rule_matches_adaptive_consistency() -> None:
    assert beta_confidence(4, 0) == pytest.approx(1 - 1 / 32)
    assert beta_confidence(3, 0) == pytest.approx(1 - 1 / 16)
    rule = StopRule(threshold=0.95)
    assert rule.passes([4]) and not rule.passes([3]) and not rule.passes([4, 3])
    assert StopRule(kind="share", threshold=0.75).passes([3, 1])
    assert not StopRule(kind="share", threshold=0.75, min_answers=5).passes([3, 1])


def test_no_policy_is_byte_identical() -> None:
    topo = all_to_all([4, 4])
    plain = _run(topo, FunctionEngine(SPLIT), None)
    empty = _run(topo, FunctionEngine(SPLIT), Policies())
    unfired = _run(topo, FunctionEngine(SPLIT), Policies(consensus=ConsensusStop()))
    assert _comparable(plain) == _comparable(empty) == _comparable(unfired)
    assert plain.policy_events == unfired.policy_events == [] and plain.policies is None
    assert plain.version == 3 and plain.answered_by == "r3.a0"


def test_consensus_skips_rounds_and_the_sink_reads_the_round() -> None:
    engine = FunctionEngine(UNANIMOUS)
    trace = _run(all_to_all([4, 4]), engine, Policies(consensus=ConsensusStop()))
    nodes = _by_id(trace)
    assert [e.policy for e in trace.policy_events] == ["consensus"]
    event = trace.policy_events[0]
    assert event.round == 1 and event.rounds_skipped == [2] and event.answered_from == "sink"
    assert event.answer == "7" and event.skipped == [f"r2.a{i}" for i in range(4)]
    assert all(nodes[f"r2.a{i}"].status == "skipped" for i in range(4))
    assert sorted(nodes["r3.a0"].inputs) == [f"r1.a{i}" for i in range(4)]
    assert {r.metadata.round for r in engine.requests} == {1, 3}  # round 2 never sent
    assert trace.answered_by == "r3.a0" and trace.answer is not None
    assert trace.effective_ttc == sum(n.usage.completion_tokens for n in trace.nodes if n.round != 2)


def test_consensus_plurality_answers_without_the_sink() -> None:
    engine = FunctionEngine(_answers(lambda r, a: "7" if a else "8"))
    rule = StopRule(kind="share", threshold=0.7)
    trace = _run(all_to_all([4, 4]), engine, Policies(consensus=ConsensusStop(rule=rule, answer_from="plurality")))
    event = trace.policy_events[0]
    assert event.answered_from == "r1.a1" and trace.answered_by == "r1.a1"  # the first node of the plurality
    assert trace.answer == _by_id(trace)["r1.a1"].message
    assert _by_id(trace)["r3.a0"].status == "skipped" and event.rounds_skipped == [2, 3]
    assert {r.metadata.round for r in engine.requests} == {1}


def test_consensus_does_not_fire_on_split_answers() -> None:
    engine = FunctionEngine(SPLIT)
    trace = _run(all_to_all([4, 4]), engine, Policies(consensus=ConsensusStop()))
    assert trace.policy_events == [] and all(n.status == "ok" for n in trace.nodes)


def test_adaptive_width_stops_launching_with_the_same_seeds() -> None:
    engine = FunctionEngine(UNANIMOUS)
    policies = Policies(width=AdaptiveWidth(wave=4))
    trace = _run(all_to_all([8]), engine, policies)
    fixed = _by_id(_run(all_to_all([8]), FunctionEngine(UNANIMOUS), None))
    nodes = _by_id(trace)
    assert [e.policy for e in trace.policy_events] == ["width"]
    assert trace.policy_events[0].skipped == [f"r1.a{i}" for i in range(4, 8)]
    assert [nodes[f"r1.a{i}"].status for i in range(8)] == ["ok"] * 4 + ["skipped"] * 4
    assert [nodes[f"r1.a{i}"].seed for i in range(4)] == [fixed[f"r1.a{i}"].seed for i in range(4)]
    assert all(r.n == 1 for r in engine.requests) and len(engine.requests) == 5
    assert sorted(nodes["r2.a0"].inputs) == [f"r1.a{i}" for i in range(4)]
    assert nodes["r2.a0"].dropped_inputs == [f"r1.a{i}" for i in range(4, 8)]


def test_adaptive_width_launches_every_wave_when_answers_disagree() -> None:
    engine = FunctionEngine(SPLIT)
    trace = _run(all_to_all([8]), engine, Policies(width=AdaptiveWidth(wave=4)))
    assert trace.policy_events == [] and all(n.status == "ok" for n in trace.nodes)
    assert len([r for r in engine.requests if r.metadata.round == 1]) == 8


class _Straggling(FunctionEngine):
    """Agent 3 of round 1 is slow; a cancelled request reports 11 tokens generated so far."""

    def __init__(self, delay: float, **kw: Any) -> None:
        async def handler(request: GenerationRequest) -> list[str]:
            node = request.metadata.nodes[0]
            if node.round == 1 and node.agent == 3:
                await anyio.sleep(delay)
            return [f"</think> \\boxed{{{node.agent}}} from {node}" for _ in range(request.n)]

        super().__init__(handler, **kw)

    def tokens_so_far(self, request: GenerationRequest) -> int | None:
        return 11


def test_quorum_cancels_stragglers_and_counts_their_tokens() -> None:
    t0 = time.monotonic()
    trace = _run(all_to_all([4]), _Straggling(60.0), Policies(quorum=Quorum(q=3)))
    assert time.monotonic() - t0 < 30
    nodes = _by_id(trace)
    event = trace.policy_events[0]
    assert event.policy == "quorum" and event.cancelled == ["r1.a3"] and event.cancelled_tokens == 11
    assert nodes["r1.a3"].status == "cancelled" and nodes["r1.a3"].usage.completion_tokens == 11
    assert trace.effective_ttc == sum(n.usage.completion_tokens for n in trace.nodes)
    assert nodes["r2.a0"].dropped_inputs == ["r1.a3"] and "r1.a3" not in nodes["r2.a0"].inputs


def test_quorum_finish_keeps_the_straggler_unseen() -> None:
    trace = _run(all_to_all([4]), _Straggling(0.3), Policies(quorum=Quorum(q=0.75, stragglers="finish")))
    nodes = _by_id(trace)
    assert trace.policy_events[0].unseen == ["r1.a3"]
    assert nodes["r1.a3"].status == "ok" and nodes["r1.a3"].message  # finished, for the record
    sink_prompt = " ".join(m.content for m in nodes["r2.a0"].prompt)
    assert "from r1.a3" not in sink_prompt and "from r1.a0" in sink_prompt
    assert nodes["r2.a0"].dropped_inputs == ["r1.a3"]


def test_a_straggler_failing_after_its_quorum_does_not_fail_the_run() -> None:
    async def handler(request: GenerationRequest) -> list[str]:
        node = request.metadata.nodes[0]
        if node.round == 1 and node.agent == 3:
            await anyio.sleep(0.2)
            raise EngineError("late and broken", status=400)
        return [f"</think> \\boxed{{{node.agent}}}"]

    trace = _run(all_to_all([4]), FunctionEngine(handler),
                 Policies(quorum=Quorum(q=3, stragglers="finish")), config=RunConfig(on_failure="fail"))
    assert _by_id(trace)["r1.a3"].status == "failed" and trace.answer is not None


def test_quorum_withdraws_queued_stragglers() -> None:
    # a window of 2: the last node still waits for a slot when the quorum of 2 is in: dropped unsent
    engine = _Straggling(0.0, max_sequences=2)
    trace = _run(all_to_all([4]), engine, Policies(quorum=Quorum(q=2)))
    assert _by_id(trace)["r1.a3"].status == "skipped" and "r1.a3" in trace.policy_events[0].skipped
    assert all(str(r.metadata.nodes[0]) != "r1.a3" for r in engine.requests)


def test_policies_are_deterministic_given_the_engine() -> None:
    policies = Policies(consensus=ConsensusStop(), width=AdaptiveWidth(wave=2, rule=StopRule(min_answers=4)))
    handler = _answers(lambda r, a: "7" if a != 1 else "9")
    first = _run(all_to_all([8, 4]), FunctionEngine(handler), policies)
    second = _run(all_to_all([8, 4]), FunctionEngine(handler), policies)
    assert _comparable(first) == _comparable(second)
    assert [e.model_dump() for e in first.policy_events] == [e.model_dump() for e in second.policy_events]


class _Broken:
    name = "broken"

    async def answer(self, text: str | None) -> str | None:
        return text

    async def equivalent(self, a: str, b: str) -> bool:
        raise RuntimeError("checker crashed")


def test_an_equivalence_failure_is_a_clear_run_failure() -> None:
    with pytest.raises(RunFailedError, match=r"policy consensus on round 1: the answer equivalence 'broken' "
                                             r"failed: RuntimeError: checker crashed") as info:
        _run(all_to_all([4, 4]), FunctionEngine(SPLIT),
             Policies(consensus=ConsensusStop(), equivalence="task"), equivalence=_Broken())
    assert info.value.trace is not None


@pytest.mark.parametrize(("widths", "policies", "message"), [
    ([1, 4], Policies(quorum=Quorum(q=1, rounds=[1])), "on round 1 of 1 node.*leaves no straggler"),
    ([4, 4], Policies(quorum=Quorum(q=4)), "leaves no straggler"),
    ([4, 4], Policies(quorum=Quorum(q=2, rounds=[3])), "before the sink"),
    ([4, 4], Policies(width=AdaptiveWidth(wave=2), quorum=Quorum(q=[3, 3])), "adaptive width and a quorum"),
    ([4, 4], Policies(width=AdaptiveWidth(wave=8)), "not more than one wave"),
    ([4, 4], Policies(consensus=ConsensusStop(rounds=[3])), "before the sink"),
])
def test_a_policy_that_cannot_apply_is_a_config_error(widths: list[int], policies: Policies, message: str) -> None:
    engine = FunctionEngine(SPLIT)
    with pytest.raises(ConfigError, match=message):
        _run(all_to_all(widths), engine, policies)
    assert engine.requests == []  # before any request is sent


def test_task_equivalence_needs_an_equivalence() -> None:
    with pytest.raises(ConfigError, match="equivalence="):
        _run(all_to_all([4, 4]), FunctionEngine(SPLIT), Policies(consensus=ConsensusStop(), equivalence="task"))


def test_topology_spec_declares_policies() -> None:
    spec = parse_spec("""
name = "adaptive-low"
kind = "all-to-all"
params = { widths = [8, 4] }

[policies.consensus]
answer_from = "plurality"
rule = { kind = "share", threshold = 0.8 }

[policies.width]
wave = 4
""", source="test")
    topo = build(spec)
    assert topo.policies is not None and topo.policies.width is not None and topo.policies.width.wave == 4
    trace = _run(topo, FunctionEngine(UNANIMOUS), None)
    assert [e.policy for e in trace.policy_events] == ["width", "consensus"]
    with pytest.raises(ConfigError, match=r"unknown key: policies\.quorum\.k"):
        parse_spec('name = "x"\nkind = "all-to-all"\n[policies.quorum]\nq = 2\nk = 3\n', source="t")
    with pytest.raises(ConfigError, match="not more than one wave"):
        build(parse_spec('name = "x"\nkind = "all-to-all"\nparams = { widths = [2] }\n'
                         '[policies.width]\nwave = 2\n', source="t"))


def test_skipped_nodes_survive_the_trace_round_trip() -> None:
    trace = _run(all_to_all([4, 4]), FunctionEngine(UNANIMOUS), Policies(consensus=ConsensusStop()),
                 config=RunConfig(mode="rounds"))
    again = RunTrace.model_validate_json(trace.model_dump_json())
    assert again.policy_events == trace.policy_events
    assert again.node("r2.a0").outcome == "skipped"


def test_the_viewer_shows_skipped_nodes_and_policy_events(tmp_path: Any) -> None:
    from pacore_agents.viewer import ViewSource

    trace = _run(all_to_all([4, 4]), FunctionEngine(UNANIMOUS), Policies(consensus=ConsensusStop()))
    (tmp_path / "t.json").write_text(trace.model_dump_json(), encoding="utf-8")
    view = ViewSource(tmp_path / "t.json").trace("t.json")
    statuses = {n["id"]: n["status"] for n in view["trace"]["nodes"]}
    assert statuses["r2.a0"] == "skipped" and statuses["r1.a0"] == statuses["r3.a0"] == "ok"
    rounds = {r["round"]: r for r in view["rounds"]}
    assert rounds[2]["nodes"] == 0 and rounds[2]["skipped"] == 4 and rounds[2]["failed"] == 0
    assert view["trace"]["policy_events"][0]["policy"] == "consensus"


def test_pacore_run_reads_a_specs_policies_and_says_what_they_did(tmp_path: Any) -> None:
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    spec = tmp_path / "adaptive.toml"
    spec.write_text('name = "adaptive"\nkind = "all-to-all"\nparams = { widths = [8, 4] }\n'
                    '[policies.width]\nwave = 4\n[policies.consensus]\nanswer_from = "sink"\n')
    trace_path = tmp_path / "t.json"
    proc = subprocess.run([sys.executable, "-m", "pacore_agents", "run", "Q?", "--topology", str(spec), "--engine",
                           "function:tests.fixtures.handlers:answer", "--trace", str(trace_path)],
                          capture_output=True, text=True, cwd=repo, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(repo)})
    assert proc.returncode == 0, proc.stderr
    assert "policy width, round 1: 4 launched" in proc.stderr and "answered from sink" in proc.stderr
    data = json.loads(trace_path.read_text())
    assert [e["policy"] for e in data["policy_events"]] == ["width", "consensus"]
    assert sum(n["status"] == "skipped" for n in data["nodes"]) == 8  # 4 of round 1, round 2
