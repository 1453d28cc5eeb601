"""Edge pruning from stored samples: a constructed receiver copies one sender and ignores the
other; pruning removes the ignored edge, keeps the used one, and writes a reusable spec."""

from __future__ import annotations

import json
import re
from pathlib import Path

import anyio

from pacore_agents import FunctionEngine, GenerationRequest
from pacore_agents._ids import NodeId
from pacore_agents._specs import load_topology
from pacore_agents.studies._prune import (
    edge_usage,
    prune_edges,
    pruned_topology,
    topology_spec_text,
)
from pacore_agents.studies._search import run_search
from pacore_agents.studies._search_report import build_search_report
from pacore_agents.studies._search_space import load_search
from pacore_agents.studies._store import NodeOutcome, SampleOutcome

# agents 0..2, two rounds: r2.a0 hears r1.a0 and r1.a1; r2.a1 hears r1.a1, r1.a2; r2.a2 hears r1.a0, r1.a2
GRAPH = """name = "copier"
kind = "graph"
params = { agents = 3, rounds = 2 }
edges = [[0, 0], [1, 0], [1, 1], [2, 1], [0, 2], [2, 2]]
"""


def _value(number: int, agent: int) -> int:
    return (number * (2 * agent + 3) + agent * agent) % 5


def handler(request: GenerationRequest) -> list[str]:
    """Round 1: agent a says `from aA: \\boxed{v}`, v varying with the problem. Round 2: r2.a0
    copies what a1 said (ignoring a0); the others say their own value. The sink says 4."""
    text = request.messages[-1].content
    number = int(re.search(r"\((\d+)\)", text).group(1))  # type: ignore[union-attr]
    out = []
    for node in request.metadata.nodes:
        if node.round == 1:
            out.append(f"from a{node.agent}: \\boxed{{{_value(number, node.agent)}}}")
        elif node.round == 2 and node.agent == 0:
            copied = re.search(r"from a1: \\boxed\{(\d+)\}", text)
            assert copied is not None
            out.append(f"\\boxed{{{copied.group(1)}}}")
        elif node.round == 2:
            out.append(f"\\boxed{{{_value(number, node.agent + 3)}}}")
        else:
            out.append("\\boxed{4}")
    return out


SEARCH = """
[engine]
kind = "function"
function = "unused:handler"
[dataset]
path = "d.jsonl"
id_field = "id"
[search]
trials = 3
search_problems = 20
heldout_problems = 4
patience = 20
[[search.dimension]]
name = "graph"
path = "."
choices = [{ topology = "copier.toml" }]
[search.prune]
thresholds = [0.5]
min_pairs = 5
"""


def test_pruning_removes_an_ignored_edge_and_keeps_a_used_one(tmp_path: Path) -> None:
    (tmp_path / "copier.toml").write_text(GRAPH)
    (tmp_path / "d.jsonl").write_text("".join(f'{{"problem": "What is 2+2 ({i})?", "answer": "4", "id": "q{i}"}}\n'
                                              for i in range(24)))
    (tmp_path / "s.toml").write_text(SEARCH)
    engine = FunctionEngine(handler)
    out = tmp_path / "out"
    summary = anyio.run(lambda: run_search(load_search(tmp_path / "s.toml"), out, engine=engine))
    assert summary.failed == []
    report = build_search_report(out)
    pruned = next(c for c in report.configurations if c["arm"].endswith("-p0.5"))
    removed = pruned["pruned"].split()
    assert "r1.a0->r2.a0" in removed  # r2.a0 never uses a0's message
    assert "r1.a1->r2.a0" not in removed  # it copies a1's
    spec = out / "search" / "topologies" / f"{pruned['arm']}.toml"
    topology = load_topology(spec)  # a reusable spec
    edges = {(str(u), str(v)) for u, v in topology.graph.edges}
    assert ("r1.a1", "r2.a0") in edges and ("r1.a0", "r2.a0") not in edges
    assert ("r2.a0", "r3.a0") in edges  # the sink still hears every agent
    assert json.loads(pruned["table"])["topology"] == str(spec)


def _outcome(i: int, answers: dict[str, str], inputs: dict[str, list[str]]) -> SampleOutcome:
    nodes = [NodeOutcome(id=n, round=NodeId.parse(n).round, agent=NodeId.parse(n).agent, inputs=inputs.get(n, []),
                         status="wrong", answer=a) for n, a in answers.items()]
    return SampleOutcome(arm="a", problem_id=f"q{i}", sample=0, kind="topology", status="wrong",
                         effective_ttc=1, nodes=nodes)


def test_edge_usage_is_agreement_beyond_the_non_inputs() -> None:
    inputs = {"r2.a0": ["r1.a0", "r1.a1"], "r3.a0": ["r2.a0"]}
    rows = [_outcome(i, {"r1.a0": str(i % 3), "r1.a1": str(i % 4), "r1.a2": str(i % 2), "r2.a0": str(i % 4),
                         "r3.a0": "x"}, inputs) for i in range(12)]
    usage = {(e.sender, e.receiver): e for e in edge_usage(rows)}
    assert usage[("r1.a1", "r2.a0")].agree == 1.0
    chance = usage[("r1.a1", "r2.a0")].chance  # agreement with r1.a2, the non-input
    assert chance == sum(i % 2 == i % 4 for i in range(12)) / 12
    assert usage[("r1.a0", "r2.a0")].usage == sum(i % 3 == i % 4 for i in range(12)) / 12 - chance
    assert usage[("r2.a0", "r3.a0")].usage is None  # the sink hears all: no baseline, never pruned


def test_pruned_spec_round_trips_roles(tmp_path: Path) -> None:
    topology = load_topology("critic-ring")
    removed = [(NodeId.of(1, 0), NodeId.of(2, 1))]
    pruned = pruned_topology(topology, removed, "critic-ring-pruned")
    path = tmp_path / "p.toml"
    path.write_text(topology_spec_text(pruned, "test"))
    again = load_topology(path)
    assert set(again.graph.edges) == set(topology.graph.edges) - set(removed)
    assert {n: again.role_of(n) for n in again.nodes()} == {n: topology.role_of(n) for n in topology.nodes()}
    assert again.roles["critic"].template == topology.roles["critic"].template
    assert prune_edges(topology, [], 0.5, 1) == []  # no evidence, nothing removed
