"""One role merge everywhere (issue 23, item 6): a partial role override (a topology spec's
``[roles.sink]`` with only ``sampling``, a study arm over that spec, ``run(roles=...)`` over a
``from_graph`` topology, a topology ``pacore serve`` loads) keeps the synthesis of the role it
names; a ``Role`` object replaces; anything else is refused with a clear error."""

from __future__ import annotations

from pathlib import Path

import anyio
import networkx as nx
import pytest

from pacore_agents import (
    ConfigError,
    FunctionEngine,
    GenerationRequest,
    Role,
    RoleOverride,
    SamplingParams,
    from_graph,
    load_topology,
    merge_roles,
    run,
)
from pacore_agents._roles import builtin_roles, pacore_synthesis_template
from pacore_agents.serve._models import ChatCompletionRequest
from pacore_agents.serve._runs import TopologyCatalog
from pacore_agents.studies import parse_study
from pacore_agents.studies._spec import describe_role

SPEC = """name = "cool-sink"
kind = "all-to-all"
params = { widths = [2] }
[roles.sink]
sampling = { temperature = 0.3 }
"""


def _engine() -> FunctionEngine:
    return FunctionEngine(lambda req: [f"answer {i} to {req.messages[-1].content[:12]}" for i in range(req.n)])


@pytest.fixture
def spec_path(tmp_path: Path) -> Path:
    path = tmp_path / "cool-sink.toml"
    path.write_text(SPEC, encoding="utf-8")
    return path


def _sink_request(engine: FunctionEngine) -> GenerationRequest:
    (request,) = [r for r in engine.requests if r.metadata.round == 2]
    return request


def test_a_spec_sampling_only_sink_keeps_its_synthesis(spec_path: Path) -> None:
    topo = load_topology(spec_path)
    sink = topo.roles["sink"]
    assert sink.template == pacore_synthesis_template() and sink.compaction == "pacore"
    assert sink.sampling == SamplingParams(temperature=0.3)
    engine = _engine()
    trace = anyio.run(lambda: run("What is 2 + 2?", spec_path, engine)).trace
    request = _sink_request(engine)
    # the sink's prompt carries its inputs' messages (it listed them; they were dropped before)
    assert "answer 0 to What is 2 + " in request.messages[-1].content
    assert "answer 1 to What is 2 + " in request.messages[-1].content
    assert request.sampling.temperature == 0.3
    (record,) = [n for n in trace.nodes if n.round == 2]
    assert sorted(record.inputs) == ["r1.a0", "r1.a1"]


def test_a_study_arm_over_the_spec_reports_the_synthesis(spec_path: Path) -> None:
    spec = parse_study(f'[dataset]\nname = "gsm8k"\nlimit = 1\n[[arms]]\nname = "a"\ntopology = "{spec_path}"\n')
    arm = spec.arms[0]
    topo = arm.build_topology()
    used = {n: describe_role(r) for n, r in arm.used_roles(topo).items()}
    assert used["sink"] == "template=pacore compaction=pacore sampling=temperature=0.3"


def test_serve_loads_the_spec_with_the_merged_sink(spec_path: Path) -> None:
    catalog = TopologyCatalog([str(spec_path)])
    request = ChatCompletionRequest.model_validate({"model": "cool-sink",
                                                    "messages": [{"role": "user", "content": "Q"}]})
    topo = catalog.resolve("cool-sink", request)
    assert topo.roles["sink"].template == pacore_synthesis_template()


def test_run_merges_an_override_onto_a_from_graph_role() -> None:
    comm = nx.DiGraph([("a", "b"), ("b", "a")])
    topo = from_graph(comm, 2, roles={"a": "sink"})  # agent a of round 2 takes the sink's role
    engine = _engine()
    anyio.run(lambda: run("What is 3 + 4?", topo, engine,
                          roles={"sink": RoleOverride(sampling=SamplingParams(max_tokens=9)),
                                 "synthesizer": RoleOverride(system="Be brief.")}))
    round2 = [r for r in engine.requests if r.metadata.round == 2]
    assert round2, "round 2 was sent"
    for request in round2:
        assert "Reference 1:\nanswer " in request.messages[-1].content  # synthesis kept
    by_node = {r.metadata.nodes[0].agent: r for r in round2}
    assert by_node[0].sampling.max_tokens == 9 and by_node[0].messages[0].role == "user"
    assert by_node[1].messages[0].content == "Be brief."


def test_merge_roles_replaces_with_a_role_and_refuses_anything_else() -> None:
    base = builtin_roles()
    bare = Role("sink")
    assert merge_roles(base, [bare])["sink"] is bare  # a whole definition replaces
    merged = merge_roles(base, {"sink": RoleOverride(compaction="boxed")}, compaction=None)
    assert merged["sink"].template == pacore_synthesis_template() and merged["sink"].compaction == "boxed"
    assert base["sink"].compaction == "pacore"  # the base is untouched
    with pytest.raises(ConfigError, match=r"neither a pacore_agents\.Role"):
        merge_roles(base, {"sink": {"sampling": {"temperature": 0.3}}})  # type: ignore[dict-item]
    with pytest.raises(ConfigError, match="given under the name 'judge'"):
        merge_roles(base, {"judge": Role("sink")})


def test_a_spec_role_with_a_misspelled_field_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(SPEC.replace("sampling =", "samplng ="), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"unknown key: roles\.sink\.samplng"):
        load_topology(path)
