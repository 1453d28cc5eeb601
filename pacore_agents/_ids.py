"""Typed identifiers of the unrolled message-passing graph.

A node is one trajectory of one round: ``NodeId(round, agent)``. Rounds are numbered from 1,
agents from 0 within their round. ``NodeId`` orders by (round, agent); every "sorted order" in
the library is this order, which is what makes runs deterministic.
"""

from __future__ import annotations

import re
from typing import NamedTuple, NewType

Round = NewType("Round", int)
AgentIndex = NewType("AgentIndex", int)
ProblemId = NewType("ProblemId", str)
RoleName = NewType("RoleName", str)

_NODE_RE = re.compile(r"^r?(\d+)[.:/]a?(\d+)$")


class NodeId(NamedTuple):
    """One trajectory: agent ``agent`` of round ``round`` (rounds from 1, agents from 0)."""

    round: Round
    agent: AgentIndex

    def __str__(self) -> str:
        return f"r{self.round}.a{self.agent}"

    @classmethod
    def of(cls, round_: int, agent: int) -> NodeId:
        return cls(Round(round_), AgentIndex(agent))

    @classmethod
    def parse(cls, text: str) -> NodeId:
        """Parse ``r2.a3`` (also ``2:3`` or ``2.3``) into a ``NodeId``."""
        match = _NODE_RE.match(text.strip())
        if match is None:
            raise ValueError(f"bad node id {text!r}: write it as r<round>.a<agent>, e.g. r2.a0")
        return cls.of(int(match.group(1)), int(match.group(2)))
