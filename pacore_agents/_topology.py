"""Topologies: builders of the unrolled message-passing graph.

The graph is a ``networkx.DiGraph`` whose nodes are ``NodeId(round, agent)`` and whose edge
``u -> v`` means v (round r+1) receives u's (round r) compacted message. Node attribute
``role`` names the node's role (absent = the default for its position: explorer in round 1,
sink for the sink, synthesizer otherwise).

Invariants (checked by ``validate``): rounds are 1..R with no empty round, agents of a round are
0..w-1, edges go from round r to round r+1 only, the last round has exactly one node (the sink),
and every node reaches the sink.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from itertools import pairwise
from typing import Any

import networkx as nx

from ._errors import TopologyError
from ._ids import NodeId, RoleName
from ._policies import Policies
from ._roles import Role

ROLE_ATTR = "role"


@dataclass(frozen=True)
class Topology:
    """A validated unrolled graph with a name. Build it with the builders below."""

    graph: nx.DiGraph
    name: str = "custom"
    description: str = ""
    params: Mapping[str, Any] = field(default_factory=dict)
    roles: Mapping[str, Role] = field(default_factory=dict)
    #: the spec's ``[policies]`` (``_policies``); ``run(..., policies=...)`` replaces them
    policies: Policies | None = None

    def __post_init__(self) -> None:
        validate(self.graph)

    # The graph is never mutated after validation (builders copy it), so the derived views
    # below are computed once: a run asks for them once per node.
    @cached_property
    def _by_round(self) -> tuple[tuple[NodeId, ...], ...]:
        nodes: Iterable[NodeId] = self.graph.nodes
        ordered = sorted(nodes)
        rounds: list[list[NodeId]] = [[] for _ in range(ordered[-1].round)]
        for node in ordered:
            rounds[node.round - 1].append(node)
        return tuple(tuple(r) for r in rounds)

    @cached_property
    def _inputs(self) -> dict[NodeId, tuple[NodeId, ...]]:
        return {n: tuple(sorted(self.graph.predecessors(n))) for n in self.graph.nodes}

    @cached_property
    def _outputs(self) -> dict[NodeId, tuple[NodeId, ...]]:
        return {n: tuple(sorted(self.graph.successors(n))) for n in self.graph.nodes}

    @property
    def widths(self) -> list[int]:
        """Nodes per round, round 1 first (the sink's round included)."""
        return [len(r) for r in self._by_round]

    @property
    def num_rounds(self) -> int:
        return len(self._by_round)

    @property
    def sink(self) -> NodeId:
        return self._by_round[-1][0]

    def nodes(self, round_: int | None = None) -> list[NodeId]:
        """Nodes in sorted order, optionally of one round."""
        if round_ is None:
            return [n for r in self._by_round for n in r]
        if 1 <= round_ <= len(self._by_round):
            return list(self._by_round[round_ - 1])
        return []

    def inputs(self, node: NodeId) -> list[NodeId]:
        """The node's in-neighbours, in sorted (graph) order."""
        return list(self._inputs[node])

    def input_ids(self, node: NodeId) -> tuple[NodeId, ...]:
        """``inputs`` as the topology's own cached tuple (no copy: a run asks once per node)."""
        return self._inputs[node]

    def outputs(self, node: NodeId) -> list[NodeId]:
        """The node's out-neighbours, in sorted (graph) order."""
        return list(self._outputs[node])

    def role_of(self, node: NodeId) -> RoleName | None:
        role = self.graph.nodes[node].get(ROLE_ATTR)
        return RoleName(role) if role else None

    def with_roles(self, assignment: Mapping[NodeId, str]) -> Topology:
        """A copy with the given nodes' roles set."""
        graph = self.graph.copy()
        for node, role in assignment.items():
            if node not in graph:
                raise TopologyError(f"role assignment names node {node}, which is not in the topology")
            graph.nodes[node][ROLE_ATTR] = role
        return Topology(graph, self.name, self.description, self.params, self.roles, self.policies)

    def node_link(self) -> dict[str, Any]:
        """JSON-ready node-link data (node ids as ``r1.a0`` strings): exactly
        ``nx.node_link_data(relabeled graph, edges="edges")``, built in one pass (every trace
        carries it)."""
        graph = self.graph
        return {
            "directed": True,
            "multigraph": False,
            "graph": dict(graph.graph),
            "nodes": [{**attrs, "id": str(n)} for n, attrs in graph.nodes(data=True)],
            "edges": [{**attrs, "source": str(u), "target": str(v)} for u, v, attrs in graph.edges(data=True)],
        }


def widths_of(graph: nx.DiGraph) -> list[int]:
    rounds: dict[int, int] = {}
    for node in graph.nodes:
        rounds[node.round] = rounds.get(node.round, 0) + 1
    return [rounds[r] for r in sorted(rounds)]


def validate(graph: nx.DiGraph) -> None:
    """Raise ``TopologyError`` naming the first offending node, or return."""
    if graph.number_of_nodes() == 0:
        raise TopologyError("the topology has no nodes")
    for node in graph.nodes:
        if not isinstance(node, NodeId):
            raise TopologyError(f"node {node!r} is not a NodeId(round, agent)")
        if node.round < 1 or node.agent < 0:
            raise TopologyError(f"node {node}: rounds start at 1 and agents at 0")
    by_round: dict[int, list[int]] = {}
    for node in graph.nodes:
        by_round.setdefault(node.round, []).append(node.agent)
    last = max(by_round)
    for r in range(1, last + 1):
        agents = sorted(by_round.get(r, []))
        if not agents:
            raise TopologyError(f"round {r} is empty: every round from 1 to {last} needs a node")
        if agents != list(range(len(agents))):
            missing = sorted(set(range(max(agents) + 1)) - set(agents))
            raise TopologyError(f"round {r}: agents must be numbered 0..{len(agents) - 1}; missing r{r}.a{missing[0]}")
    for u, v in graph.edges:
        if v.round != u.round + 1:
            kind = "a cycle across rounds" if v.round <= u.round else "an edge that skips a round"
            raise TopologyError(f"edge {u} -> {v} is {kind}: edges must go from round r to round r+1")
    if len(by_round[last]) != 1:
        raise TopologyError(
            f"the last round (round {last}) has {len(by_round[last])} nodes: it must hold exactly one sink"
        )
    sink = NodeId.of(last, 0)
    for node in sorted(graph.nodes):
        if node != sink and graph.out_degree(node) == 0:
            raise TopologyError(
                f"node {node} has no out-edges: a second sink (only {sink}, the last round's node, may end a path)"
            )
    reaching = nx.ancestors(graph, sink)
    for node in sorted(graph.nodes):
        if node != sink and node not in reaching:
            raise TopologyError(f"node {node} cannot reach the sink {sink}")


def _check_width(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TopologyError(f"{what} must be a positive integer, got {value!r}")
    if value <= 0:
        raise TopologyError(f"{what} must be a positive integer, got {value}")
    return value


def _layered(widths: Sequence[int]) -> tuple[nx.DiGraph, list[list[NodeId]]]:
    """A graph with the nodes of rounds of ``widths`` and no edge, and its ids by round
    (``ids[r][a]``; ``ids[0]`` is empty). Builders take every edge end from ``ids``, so the graph
    holds one ``NodeId`` object per node: a large topology is then a third of the objects (and
    of the garbage collector's work during a run)."""
    ids: list[list[NodeId]] = [[]] + [[NodeId.of(r, a) for a in range(w)] for r, w in enumerate(widths, start=1)]
    graph = nx.DiGraph()
    for row in ids:
        graph.add_nodes_from(row)
    return graph, ids


def all_to_all(widths: Sequence[int], *, name: str = "all-to-all") -> Topology:
    """PaCoRe: rounds of the given widths plus a final round of width 1; every node of round
    r+1 hears every node of round r. ``all_to_all([32, 4])`` runs 32, 4 and 1 trajectories."""
    if isinstance(widths, (str, bytes)) or not isinstance(widths, Sequence) or not widths:
        raise TopologyError(f"widths must be a non-empty list of positive integers, got {widths!r}")
    ws = [_check_width(w, f"width of round {i + 1}") for i, w in enumerate(widths)] + [1]
    graph, ids = _layered(ws)
    for r, (w_prev, w_next) in enumerate(pairwise(ws), start=1):
        graph.add_edges_from((ids[r][a], ids[r + 1][b]) for a in range(w_prev) for b in range(w_next))
    return Topology(graph, name, f"all-to-all, widths {list(widths)} + sink", {"widths": list(widths)})


def ring(width: int, rounds: int, radius: int = 1, *, name: str = "ring") -> Topology:
    """``rounds`` rounds of ``width`` agents; agent i hears agents i-radius..i+radius (mod width,
    itself included) of the previous round; then a sink hears all of the last round."""
    width = _check_width(width, "ring width")
    rounds = _check_width(rounds, "ring rounds")
    if isinstance(radius, bool) or not isinstance(radius, int) or radius < 0:
        raise TopologyError(f"ring radius must be a non-negative integer, got {radius!r}")
    comm = nx.DiGraph()
    comm.add_nodes_from(range(width))
    for i in range(width):
        for d in range(-radius, radius + 1):
            comm.add_edge((i + d) % width, i)
    return Topology(_unrolled(comm, rounds), name, f"ring of {width}, radius {radius}, {rounds} rounds + sink",
                    {"width": width, "rounds": rounds, "radius": radius})


def hierarchical(branching: Sequence[int], *, name: str = "hierarchical") -> Topology:
    """Groups report to leaders: ``[4, 4]`` runs 16 agents, whose groups of 4 report to 4
    leaders, who report to the sink. Round r's agent a hears agents a*b..a*b+b-1 of round r-1."""
    if isinstance(branching, (str, bytes)) or not isinstance(branching, Sequence) or not branching:
        raise TopologyError(f"branching must be a non-empty list of positive integers, got {branching!r}")
    bs = [_check_width(b, f"branching factor {i + 1}") for i, b in enumerate(branching)]
    ws = [1]
    for b in reversed(bs):
        ws.insert(0, ws[0] * b)
    graph, ids = _layered(ws)
    for r, b in enumerate(bs, start=1):
        graph.add_edges_from((ids[r][a], ids[r + 1][a // b]) for a in range(ws[r - 1]))
    return Topology(graph, name, f"hierarchical, branching {bs}: widths {ws}", {"branching": bs})


def star(width: int, rounds: int = 2, *, name: str = "star") -> Topology:
    """Agent 0 is the hub: it hears every agent, every spoke hears the hub and itself; repeated
    for ``rounds`` rounds, then a sink hears all of the last round."""
    width = _check_width(width, "star width")
    comm = nx.DiGraph()
    comm.add_nodes_from(range(width))
    for i in range(width):
        comm.add_edge(i, 0)
        comm.add_edge(0, i)
        comm.add_edge(i, i)
    return Topology(_unrolled(comm, rounds), name, f"star of {width} (hub 0), {rounds} rounds + sink",
                    {"width": width, "rounds": rounds})


def from_graph(
    comm: nx.DiGraph, rounds: int, *, name: str = "from-graph", roles: Mapping[Any, str] | None = None
) -> Topology:
    """Unroll a static communication graph: edge ``u -> v`` of ``comm`` becomes, for each round
    r < ``rounds``, an edge from (r, u) to (r+1, v); then a sink round hears all of the last round.
    Agents are ``comm``'s nodes in sorted order (any sortable labels); ``roles`` maps a label to
    the role it plays in rounds 2..``rounds`` (in round 1 nobody has heard anything yet, so
    every agent explores)."""
    graph = _unrolled(comm, rounds, roles)
    return Topology(graph, name, f"{name}: {comm.number_of_nodes()} agents, {rounds} rounds + sink",
                    {"rounds": rounds})


def _unrolled(comm: nx.DiGraph, rounds: int, roles: Mapping[Any, str] | None = None) -> nx.DiGraph:
    """``from_graph``'s unrolled graph (not yet validated)."""
    rounds = _check_width(rounds, "rounds")
    if not isinstance(comm, nx.DiGraph) or comm.number_of_nodes() == 0:
        raise TopologyError("from_graph needs a non-empty networkx DiGraph")
    labels = sorted(comm.nodes)
    index = {label: i for i, label in enumerate(labels)}
    graph, ids = _layered([len(labels)] * rounds + [1])
    if roles:
        for r in range(2, rounds + 1):
            for label in labels:
                if label in roles:
                    graph.nodes[ids[r][index[label]]][ROLE_ATTR] = roles[label]
    for r in range(1, rounds):
        graph.add_edges_from((ids[r][index[u]], ids[r + 1][index[v]]) for u, v in comm.edges)
    graph.add_edges_from((node, ids[rounds + 1][0]) for node in ids[rounds])
    return graph


def from_edges(edges: Iterable[tuple[NodeId, NodeId]], *, name: str = "custom",
               nodes: Iterable[NodeId] = ()) -> Topology:
    """A topology from explicit unrolled edges (and optional isolated nodes)."""
    graph = nx.DiGraph()
    graph.add_nodes_from(nodes)
    graph.add_edges_from(edges)
    return Topology(graph, name, f"{name}: explicit edges")
