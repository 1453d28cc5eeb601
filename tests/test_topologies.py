"""Topology builders, validation and declarative specs."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import networkx as nx
import pytest

from pacore_agents import (
    ConfigError,
    NodeId,
    Topology,
    TopologyError,
    all_to_all,
    builtin_topologies,
    from_edges,
    from_graph,
    hierarchical,
    load_topology,
    ring,
    star,
)

N = NodeId.of


def edges(topo: Topology) -> set[tuple[str, str]]:
    return {(str(u), str(v)) for u, v in topo.graph.edges}


def test_all_to_all_appends_sink() -> None:
    topo = all_to_all([3, 2])
    assert topo.widths == [3, 2, 1]
    assert topo.sink == N(3, 0)
    assert topo.inputs(N(2, 1)) == [N(1, 0), N(1, 1), N(1, 2)]
    assert topo.inputs(N(3, 0)) == [N(2, 0), N(2, 1)]
    assert topo.graph.number_of_edges() == 3 * 2 + 2


def test_ring_neighbourhoods() -> None:
    topo = ring(5, 2, radius=1)
    assert topo.widths == [5, 5, 1]
    assert topo.inputs(N(2, 0)) == [N(1, 0), N(1, 1), N(1, 4)]
    assert topo.inputs(N(2, 2)) == [N(1, 1), N(1, 2), N(1, 3)]
    assert topo.inputs(N(3, 0)) == [N(2, a) for a in range(5)]
    wide = ring(5, 2, radius=2)
    assert len(wide.inputs(N(2, 0))) == 5
    solo = ring(4, 2, radius=0)
    assert solo.inputs(N(2, 3)) == [N(1, 3)]


def test_hierarchical_groups() -> None:
    topo = hierarchical([4, 4])
    assert topo.widths == [16, 4, 1]
    assert topo.inputs(N(2, 1)) == [N(1, a) for a in range(4, 8)]
    assert topo.inputs(N(3, 0)) == [N(2, a) for a in range(4)]
    assert hierarchical([2, 3]).widths == [6, 3, 1]


def test_star_hub_and_spokes() -> None:
    topo = star(4, rounds=2)
    assert topo.widths == [4, 4, 1]
    assert topo.inputs(N(2, 0)) == [N(1, a) for a in range(4)]
    assert topo.inputs(N(2, 2)) == [N(1, 0), N(1, 2)]


def test_from_graph_repeats_and_roles() -> None:
    comm = nx.DiGraph([("a", "b"), ("b", "a"), ("a", "a")])
    topo = from_graph(comm, 3, roles={"a": "critic"})
    assert topo.widths == [2, 2, 2, 1]
    assert topo.inputs(N(2, 0)) == [N(1, 0), N(1, 1)]  # a hears a and b
    assert topo.inputs(N(2, 1)) == [N(1, 0)]  # b hears a
    assert topo.role_of(N(3, 0)) == "critic"
    assert topo.role_of(N(4, 0)) is None


def test_widths_may_change_between_rounds() -> None:
    assert all_to_all([5, 7, 2]).widths == [5, 7, 2, 1]


@pytest.mark.parametrize(
    ("build", "needle"),
    [
        (lambda: all_to_all([]), "non-empty"),
        (lambda: all_to_all([3, 0]), "width of round 2"),
        (lambda: all_to_all([2.5]), "positive integer"),  # type: ignore[list-item]
        (lambda: all_to_all([True]), "positive integer"),
        (lambda: ring(0, 2), "ring width"),
        (lambda: hierarchical([2, -1]), "branching factor 2"),
        (lambda: from_edges([(N(1, 0), N(2, 0)), (N(2, 0), N(1, 0))]), "cycle across rounds"),
        (lambda: from_edges([(N(1, 0), N(2, 0)), (N(1, 1), N(2, 1))]), "exactly one sink"),
        (lambda: from_edges([(N(1, 0), N(2, 0))], nodes=[N(1, 1)]), "r1.a1"),
        (lambda: from_edges([(N(1, 0), N(3, 0))]), "round 2 is empty"),
        (lambda: from_edges([(N(1, 0), N(2, 0)), (N(1, 2), N(2, 0))]), "missing r1.a1"),
        (lambda: from_edges([(N(1, 0), N(2, 0)), (N(2, 0), N(2, 0))]), "cycle across rounds"),
    ],
)
def test_validation_names_the_problem(build: object, needle: str) -> None:
    with pytest.raises(TopologyError, match=needle):
        build()  # type: ignore[operator]


def test_node_that_cannot_reach_sink_is_named() -> None:
    g = nx.DiGraph()
    g.add_edges_from([(N(1, 0), N(2, 0)), (N(2, 0), N(3, 0)), (N(1, 1), N(2, 1))])
    with pytest.raises(TopologyError, match=r"r2\.a1"):
        Topology(g)


def test_builtin_specs_load() -> None:
    specs = builtin_topologies()
    for name in ("pacore-low", "pacore-medium", "pacore-high", "all-to-all", "ring", "hierarchical", "star"):
        assert name in specs
    assert load_topology("pacore-low").widths == [4, 1]
    assert load_topology("pacore-medium").widths == [16, 1]
    assert load_topology("pacore-high").widths == [32, 4, 1]
    assert load_topology("ring", {"width": 4, "rounds": 2}).widths == [4, 4, 1]


def test_spec_roles_and_assignment() -> None:
    topo = load_topology("critic-ring")
    assert "critic" in topo.roles
    assert topo.role_of(N(2, 3)) == "critic"
    assert topo.role_of(N(1, 0)) is None
    assert topo.role_of(topo.sink) is None


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "spec.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_spec_explicit_edges(tmp_path: Path) -> None:
    path = write(tmp_path, 'name = "chain"\nkind = "edges"\nedges = [["r1.a0", "r2.a0"], ["r1.a1", "r2.a0"]]\n')
    topo = load_topology(path)
    assert topo.name == "chain" and topo.widths == [2, 1]


def test_spec_static_graph(tmp_path: Path) -> None:
    path = write(tmp_path, 'name = "pair"\nkind = "graph"\nparams = { agents = 2, rounds = 2 }\nedges = [[0, 1], [1, 0]]\n')
    topo = load_topology(path)
    assert topo.inputs(N(2, 0)) == [N(1, 1)]


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ('name = "x"\nkind = "ring"\nparams = { width = 4, rounds = 2 }\ncolour = "red"\n', "unknown key: colour"),
        ('name = "x"\nkind = "ring"\nparams = { width = 4, rounds = 2, size = 3 }\n', "unknown parameter 'size'"),
        ('name = "x"\nkind = "blob"\n', "kind"),
        ('name = "x"\nkind = "ring"\nparams = { width = 4, rounds = 0 }\n', "ring rounds"),
        ('name = "x"\nkind = "edges"\nedges = [["r1.a0", "r2.a0"], ["r1.a1", "r2.a1"]]\n', "exactly one sink"),
        ('name = "x"\nkind = "edges"\nedges = [["one", "r2.a0"]]\n', "bad node id 'one'"),
        ("name = [\n", "not valid TOML"),
        ('name = "x"\nkind = "ring"\nparams = { width = 4, rounds = 2 }\n[roles.c]\ntemplate = "{% if %}"\n', "bad Jinja2"),
    ],
)
def test_bad_spec_errors(tmp_path: Path, text: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        load_topology(write(tmp_path, text))


def test_missing_spec_file() -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_topology("no/such/spec.toml")


def test_specs_ship_in_the_wheel(tmp_path: Path) -> None:
    from hatchling.builders.wheel import WheelBuilder

    repo = Path(__file__).resolve().parent.parent
    wheel = next(iter(WheelBuilder(str(repo)).build(directory=str(tmp_path), versions=["standard"])))
    names = zipfile.ZipFile(wheel).namelist()
    for spec in (repo / "topologies").glob("*.toml"):
        assert f"pacore_agents/topologies/{spec.name}" in names
    assert "pacore_agents/templates/pacore_synthesis.jinja" in names
    # installed from the wheel, outside the checkout: built-in topologies still load and run
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target),
                    str(wheel)], check=True, timeout=300)
    (tmp_path / "echo_engine.py").write_text("def handler(req):\n    return ['ok'] * req.n\n")
    env = {**os.environ, "PYTHONPATH": f"{target}{os.pathsep}{tmp_path}"}
    probe = subprocess.run([sys.executable, "-c", "import pacore_agents; print(pacore_agents.__file__)"],
                           capture_output=True, text=True, env=env, cwd=tmp_path, check=True)
    assert probe.stdout.startswith(str(target))
    proc = subprocess.run([sys.executable, "-m", "pacore_agents", "run", "Q?", "--topology", "ring",
                           "--engine", "function:echo_engine:handler", "-q"],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


@pytest.mark.parametrize("topo", [
    all_to_all([3, 2]), ring(5, 3), hierarchical([2, 3]), star(4),
    from_graph(nx.DiGraph([("a", "b"), ("b", "a"), ("a", "a")]), 3, roles={"a": "critic"}),
], ids=["all-to-all", "ring", "hierarchical", "star", "from-graph-roles"])
def test_node_link_is_networkx_node_link_data(topo: Topology) -> None:
    relabeled = nx.relabel_nodes(topo.graph, {n: str(n) for n in topo.graph.nodes})
    assert topo.node_link() == nx.node_link_data(relabeled, edges="edges")
    assert list(topo.node_link()["edges"]) == list(nx.node_link_data(relabeled, edges="edges")["edges"])


def test_builders_hold_one_node_id_object_per_node() -> None:
    """Every edge end is the graph's own key object (a large topology is a third the objects)."""
    for topo in (all_to_all([3, 2]), ring(5, 3), hierarchical([2, 3]), star(4)):
        keys = {id(n) for n in topo.graph.nodes}
        ends = {id(x) for u, v in topo.graph.edges for x in (u, v)}
        preds = {id(p) for n in topo.graph.nodes for p in topo.graph.predecessors(n)}
        assert ends <= keys and preds <= keys
