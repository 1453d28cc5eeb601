"""Declarative topology specs (``topologies/*.toml``): data only, never executed.

A spec names a ``kind`` (a builder) and its ``params``, or explicit ``edges``; it may define
custom ``roles`` (templates) and ``assign`` them to nodes, and declare ``[policies]``
(stopping and quorum policies, ``_policies``: checked against the built graph). A ``[roles.NAME]`` table is a
``RoleOverride``: it changes only the fields it sets of the built-in role of that name (a
``[roles.sink]`` with only ``sampling`` keeps the sink's synthesis); a new name defines a role. Unknown keys are errors that name
the key. Built-in specs ship inside the wheel (``pacore_agents/topologies``); in a source
checkout they are read from the repository's ``topologies/``.
"""

from __future__ import annotations

import tomllib
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, Literal

import networkx as nx
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ._errors import ConfigError, TopologyError
from ._ids import NodeId
from ._policies import Policies
from ._role_merge import RoleOverride, merge_roles
from ._roles import builtin_roles
from ._topology import Topology, all_to_all, from_edges, from_graph, hierarchical, ring, star


class Assignment(BaseModel):
    """Give ``role`` to the listed rounds' listed agents (default: every round but the sink's,
    every agent)."""

    model_config = ConfigDict(extra="forbid")

    role: str
    rounds: list[int] | None = None
    agents: list[int] | None = None


class TopologySpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    description: str = ""
    kind: Literal["all-to-all", "ring", "hierarchical", "star", "graph", "edges"]
    params: dict[str, Any] = Field(default_factory=dict)
    edges: list[tuple[str, str]] | list[tuple[int, int]] | None = None
    roles: dict[str, RoleOverride] = Field(default_factory=dict)
    assign: list[Assignment] = Field(default_factory=list)
    policies: Policies | None = None


_BUILDERS: dict[str, tuple[Any, set[str]]] = {
    "all-to-all": (all_to_all, {"widths"}),
    "ring": (ring, {"width", "rounds", "radius"}),
    "hierarchical": (hierarchical, {"branching"}),
    "star": (star, {"width", "rounds"}),
    "graph": (None, {"agents", "rounds"}),
    "edges": (None, set()),
}


def _builtin_dir() -> Traversable:
    packaged = resources.files("pacore_agents") / "topologies"
    if packaged.is_dir():
        return packaged
    return resources.files("pacore_agents").joinpath("..", "topologies")


def builtin_topologies() -> dict[str, TopologySpec]:
    """The shipped specs by name, sorted."""
    out: dict[str, TopologySpec] = {}
    for entry in sorted(_builtin_dir().iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".toml"):
            spec = parse_spec(entry.read_text(encoding="utf-8"), source=f"built-in {entry.name}")
            out[spec.name] = spec
    return out


def parse_spec(text: str, *, source: str) -> TopologySpec:
    """Parse and validate a spec; errors name the source and the key."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"topology spec {source}: not valid TOML: {exc}") from exc
    try:
        return TopologySpec.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        what = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        raise ConfigError(f"topology spec {source}: {what}: {where}") from exc


def build(spec: TopologySpec, overrides: dict[str, Any] | None = None) -> Topology:
    """The validated ``Topology`` a spec describes, with ``overrides`` replacing params."""
    params = {**spec.params, **(overrides or {})}
    builder, allowed = _BUILDERS[spec.kind]
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise ConfigError(f"topology {spec.name!r} ({spec.kind}): unknown parameter {unknown[0]!r}; "
                          f"it takes {', '.join(sorted(allowed)) or 'no parameters'}")
    if spec.kind == "edges":
        if not spec.edges:
            raise ConfigError(f"topology {spec.name!r}: kind 'edges' needs edges = [[\"r1.a0\", \"r2.a0\"], ...]")
        try:
            edges = [(NodeId.parse(str(u)), NodeId.parse(str(v))) for u, v in spec.edges]
        except ValueError as exc:
            raise ConfigError(f"topology {spec.name!r}: {exc}") from exc
        topo = from_edges(edges, name=spec.name)
    elif spec.kind == "graph":
        comm = nx.DiGraph()
        comm.add_nodes_from(range(int(params.get("agents", 0))))
        comm.add_edges_from((int(u), int(v)) for u, v in spec.edges or [])
        topo = from_graph(comm, params.get("rounds", 2), name=spec.name)
    else:
        try:
            topo = builder(**params, name=spec.name)
        except TypeError as exc:
            raise ConfigError(f"topology {spec.name!r}: {exc}") from exc
    # a [roles.NAME] table changes the fields it sets of the built-in role of that name
    merged = merge_roles(builtin_roles(), spec.roles)
    roles = {name: merged[name] for name in spec.roles}
    assignment: dict[NodeId, str] = {}
    for a in spec.assign:
        for node in topo.nodes():
            in_rounds = node != topo.sink if a.rounds is None else node.round in a.rounds
            if in_rounds and (a.agents is None or node.agent in a.agents):
                assignment[node] = a.role
    topo = topo.with_roles(assignment) if assignment else topo
    topo = Topology(topo.graph, spec.name, spec.description or topo.description,
                    {**topo.params, **params}, roles, spec.policies)
    if spec.policies is not None:
        spec.policies.check(topo)
    return topo


def load_topology(name_or_path: str | Path, overrides: dict[str, Any] | None = None) -> Topology:
    """A built-in topology by name, or a spec file by path, with optional param overrides."""
    text = str(name_or_path)
    path = Path(text)
    if text.endswith(".toml") or path.exists():
        if not path.is_file():
            raise ConfigError(f"topology spec file {text!r} does not exist")
        spec = parse_spec(path.read_text(encoding="utf-8"), source=text)
    else:
        specs = builtin_topologies()
        if text not in specs:
            raise ConfigError(f"unknown topology {text!r}: use one of {', '.join(specs)} or a path to a .toml spec")
        spec = specs[text]
    try:
        return build(spec, overrides)
    except TopologyError as exc:
        raise TopologyError(f"topology {spec.name!r}: {exc}") from exc
