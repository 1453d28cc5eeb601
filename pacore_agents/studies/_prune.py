"""Edge-level pruning (AgentPrune-style), measured from a study's stored samples.

Contract:
- **Usage of an edge** ``u -> v`` (unrolled: ``r1.a0 -> r2.a1``) is reference agreement beyond
  chance: over the graded samples where both ``u`` and ``v`` extracted an answer, ``agree`` is
  the share where ``v``'s answer equals ``u``'s (normalized spelling, ``normalize_answer``);
  ``chance`` is, in the same samples, the mean agreement of ``v`` with the nodes of ``u``'s
  round that do NOT feed ``v`` (same problem, same round: what ``v`` would match if it ignored
  its inputs). ``usage = agree - chance``. An edge whose receiver hears every node of that
  round (all-to-all, the sink) has no chance baseline: its usage is unknown.
- **Pruning at threshold t** removes every edge with known usage below ``t`` seen on at least
  ``min_pairs`` samples, lowest usage first, except an edge that is its sender's last out-edge
  (a node must still reach the sink). Edges of unknown usage are kept: nothing is removed on
  no evidence.
- A pruned graph is written as a topology spec (``kind = "edges"``, its roles and role
  assignment kept), so it can be reused as ``topology = "that.toml"`` by any arm or study.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from pacore_agents._ids import NodeId
from pacore_agents._roles import Role, pacore_synthesis_template
from pacore_agents._topology import Topology, from_edges

from ._grading import normalize_answer
from ._store import SampleOutcome


class EdgeUsage(BaseModel):
    """One unrolled edge's measured usage (see the module contract)."""

    sender: str
    receiver: str
    pairs: int
    agree: float | None
    chance: float | None

    @property
    def usage(self) -> float | None:
        return None if self.agree is None or self.chance is None else self.agree - self.chance


def edge_usage(outcomes: Iterable[SampleOutcome]) -> list[EdgeUsage]:
    """The usage of every edge seen in ``outcomes`` (one arm's topology samples), by edge."""
    agree: dict[tuple[str, str], list[bool]] = {}
    chance: dict[tuple[str, str], list[float]] = {}
    for outcome in outcomes:
        if outcome.kind != "topology":
            continue
        answers = {n.id: normalize_answer(n.answer) for n in outcome.nodes
                   if n.answer is not None and n.status in ("correct", "wrong")}
        rounds: dict[int, list[str]] = {}
        for n in outcome.nodes:
            rounds.setdefault(n.round, []).append(n.id)
        for node in outcome.nodes:
            for sender in node.inputs:
                key = (sender, node.id)
                agree.setdefault(key, [])
                if node.id not in answers or sender not in answers:
                    continue
                agree[key].append(answers[node.id] == answers[sender])
                others = [w for w in rounds.get(node.round - 1, []) if w not in node.inputs and w in answers]
                if others:
                    chance.setdefault(key, []).append(
                        sum(answers[w] == answers[node.id] for w in others) / len(others))
    out = []
    for key, seen in sorted(agree.items()):
        base = chance.get(key)
        out.append(EdgeUsage(sender=key[0], receiver=key[1], pairs=len(seen),
                             agree=sum(seen) / len(seen) if seen else None,
                             chance=sum(base) / len(base) if base else None))
    return out


def prune_edges(topology: Topology, usage: Sequence[EdgeUsage], threshold: float,
                min_pairs: int) -> list[tuple[NodeId, NodeId]]:
    """The edges of ``topology`` removed at ``threshold`` (see the module contract), in the
    order they were removed."""
    out_degree = {n: len(topology.outputs(n)) for n in topology.nodes()}
    present = {(str(u), str(v)) for u, v in topology.graph.edges}
    weak = sorted((e for e in usage if (e.sender, e.receiver) in present and e.pairs >= min_pairs
                   and e.usage is not None and e.usage < threshold),
                  key=lambda e: (e.usage, e.sender, e.receiver))
    removed = []
    for edge in weak:
        u, v = NodeId.parse(edge.sender), NodeId.parse(edge.receiver)
        if out_degree[u] <= 1:
            continue
        out_degree[u] -= 1
        removed.append((u, v))
    return removed


def pruned_topology(topology: Topology, removed: Iterable[tuple[NodeId, NodeId]], name: str) -> Topology:
    """``topology`` without the ``removed`` edges (its nodes and roles kept)."""
    gone = set(removed)
    kept = [(u, v) for u, v in sorted(topology.graph.edges) if (u, v) not in gone]
    pruned = from_edges(kept, name=name, nodes=topology.nodes())
    roles = {n: r for n in topology.nodes() if (r := topology.role_of(n))}
    pruned = pruned.with_roles(roles) if roles else pruned
    return Topology(pruned.graph, name, pruned.description, {}, topology.roles)


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{json.dumps(str(k))} = {_toml(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def _role_table(role: Role) -> dict[str, Any]:
    template = "problem" if role.template is None else \
        "pacore" if role.template == pacore_synthesis_template() else role.template
    table: dict[str, Any] = {"template": template, "compaction": role.compaction}
    if role.system is not None:
        table["system"] = role.system
    if role.sampling is not None and role.sampling.model_dump(exclude_none=True):
        table["sampling"] = role.sampling.model_dump(exclude_none=True)
    if role.description:
        table["description"] = role.description
    if role.engine is not None:
        table["engine"] = role.engine
    return table


def topology_spec_text(topology: Topology, description: str) -> str:
    """A topology spec (TOML, ``kind = "edges"``) that builds ``topology``: its edges, its
    roles and one ``[[assign]]`` per role-assigned node."""
    lines = [f"name = {_toml(topology.name)}", f"description = {_toml(description)}", 'kind = "edges"',
             "edges = ["]
    lines += [f"  [{_toml(str(u))}, {_toml(str(v))}]," for u, v in sorted(topology.graph.edges)]
    lines.append("]")
    for name, role in sorted(topology.roles.items()):
        lines += ["", f"[roles.{json.dumps(name)}]"]
        lines += [f"{k} = {_toml(v)}" for k, v in _role_table(role).items()]
    for node in topology.nodes():
        role_name = topology.role_of(node)
        if role_name:
            lines += ["", "[[assign]]", f"role = {_toml(str(role_name))}", f"rounds = [{node.round}]",
                      f"agents = [{node.agent}]"]
    return "\n".join(lines) + "\n"


def write_pruned(topology: Topology, usage: Sequence[EdgeUsage], threshold: float, min_pairs: int,
                 path: Path) -> tuple[Path | None, list[tuple[NodeId, NodeId]]]:
    """Prune ``topology`` at ``threshold``; write the pruned spec to ``path`` (None when no edge
    goes: the graph is unchanged). Returns (the spec written or None, the edges removed)."""
    removed = prune_edges(topology, usage, threshold, min_pairs)
    if not removed:
        return None, []
    name = path.stem
    pruned = pruned_topology(topology, removed, name)
    gone = ", ".join(f"{u}->{v}" for u, v in removed)
    text = topology_spec_text(pruned, f"{topology.name} pruned at usage < {threshold:g}: removed {gone}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".toml.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)  # whole or absent: a reader (another worker) never sees half a spec
    return path, removed
