"""Merge groups and the requests they form: the units the scheduler plans and submits.

A merge group is the nodes of one round with the same in-neighbours and role (they become
ready together); within it, nodes whose prompts and sampling are equal form one
``LogicalRequest`` (``plans[i]`` is sample i, seeded ``seed + i``). ``NodeJob`` is the
executor's job for the samples ``first``.. of one request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ._binding import Lane
from ._engine import SamplingParams
from ._ids import NodeId
from ._messages import ChatMessage
from ._plan import NodePlan, Planner
from ._priority import Priority, Slots
from ._topology import Topology
from ._trace import RoundSummary


class _Driver(Protocol):
    async def execute(self, req: LogicalRequest, plans: list[NodePlan], first: int, priority: Priority,
                      slots: Slots) -> None: ...


#: nodes whose prompts are equal merge; a node that must not merge adds itself to the key
RequestKey = tuple[tuple[ChatMessage, ...], SamplingParams, NodeId | None]


@dataclass(frozen=True, slots=True)
class MergeGroup:
    """Nodes of one round with the same in-neighbours and role: they become ready together."""

    round: int
    nodes: tuple[NodeId, ...]


def merge_groups(topology: Topology, planner: Planner) -> list[MergeGroup]:
    """The run's merge groups, in sorted order of their first node."""
    groups: dict[tuple[int, tuple[NodeId, ...], str], list[NodeId]] = {}
    for node in topology.nodes():
        key = (node.round, topology.input_ids(node), planner.role_of(node).name)
        groups.setdefault(key, []).append(node)
    return [MergeGroup(key[0], tuple(nodes)) for key, nodes in groups.items()]


@dataclass(slots=True)
class LogicalRequest:
    """One logical request: ``plans[i]`` is sample i."""

    index: int
    plans: list[NodePlan]
    seed: int | None
    sampling: SamplingParams
    lane: Lane


@dataclass(slots=True)
class RoundState:
    """A round's progress in a run: nodes not yet released, requests planned, its summary."""

    left: int
    requests: int = 0
    started: bool = False
    summary: RoundSummary | None = None


class NodeJob:
    """The executor's job for one request of a run (an object, not a closure: thousands wait)."""

    __slots__ = ("driver", "first", "plans", "priority", "req")

    def __init__(self, driver: _Driver, req: LogicalRequest, plans: list[NodePlan], first: int,
                 priority: Priority) -> None:
        self.driver, self.req, self.plans, self.first, self.priority = driver, req, plans, first, priority

    async def __call__(self, slots: Slots) -> None:
        await self.driver.execute(self.req, self.plans, self.first, self.priority, slots)
