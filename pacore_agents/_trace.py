"""The trace of a run: what each node received, sent and spent. JSON via pydantic.

Contract: ``nodes`` are in sorted ``NodeId`` order; ``inputs`` lists in-neighbour ids in the
order their messages appear in the prompt; ``effective_ttc`` is the sum of completion tokens
over all nodes of all rounds (the paper's effective test-time compute).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from ._engine import EngineInfo, Usage
from ._messages import ChatMessage


class Truncation(BaseModel):
    """A message shortened to fit the prompt budget."""

    source: str
    original_tokens: int
    kept_tokens: int


class NodeRecord(BaseModel):
    """One node (trajectory) of the run."""

    id: str
    round: int
    agent: int
    role: str
    inputs: list[str] = Field(default_factory=list)
    missing_inputs: list[str] = Field(default_factory=list, description="in-neighbours that failed")
    prompt: list[ChatMessage] = Field(default_factory=list)
    content: str | None = None
    reasoning: str | None = None
    message: str | None = None
    finish_reason: str | None = None
    usage: Usage = Usage()
    error: str | None = None
    attempts: int = 0
    request: int | None = Field(default=None, description="index of the engine request (n-merge groups share one)")
    request_n: int = 1
    seed: int | None = None
    truncations: list[Truncation] = Field(default_factory=list)
    notes: dict[str, Any] = Field(default_factory=dict)
    started_at: float | None = None
    ended_at: float | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.content is not None


class RoundSummary(BaseModel):
    round: int
    nodes: int
    requests: int
    failed: int
    completion_tokens: int
    started_at: float
    ended_at: float


class RunTrace(BaseModel):
    """The whole run. ``answer`` is the sink's message (None if the run failed)."""

    answer: str | None
    sink: str
    effective_ttc: int
    degraded: bool = Field(default=False, description="some node failed and the run continued")
    error: str | None = None
    problem: list[ChatMessage]
    problem_id: str
    config: dict[str, Any]
    engine: EngineInfo
    topology: dict[str, Any]
    topology_name: str
    nodes: list[NodeRecord]
    rounds: list[RoundSummary] = Field(default_factory=list)
    started_at: float
    ended_at: float

    def node(self, node_id: str) -> NodeRecord:
        for rec in self.nodes:
            if rec.id == node_id:
                return rec
        raise KeyError(node_id)

    def round_nodes(self, round_: int) -> list[NodeRecord]:
        return [n for n in self.nodes if n.round == round_]

    @property
    def num_rounds(self) -> int:
        return max((n.round for n in self.nodes), default=0)
