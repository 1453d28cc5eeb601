"""The trace of a run: what each node received, sent and spent. JSON via pydantic.

Contract: ``nodes`` are in sorted ``NodeId`` order, one record per node of the topology;
``inputs`` lists in-neighbour ids in the order their messages appear in the prompt;
``effective_ttc`` is the sum of completion tokens over all nodes of all rounds (the paper's
effective test-time compute), including the tokens that cancelled trajectories generated
before a policy cancelled them (``NodeRecord.usage``, as far as the engine reports them). A
node's ``status`` says how it ended: ``ok``, ``failed`` (the engine failed it after retries),
``cancelled`` (the run failed elsewhere first, or a quorum cancelled it as a straggler),
``timed_out`` (the run's timeout hit before it completed) or ``skipped`` (a policy never
launched it: it holds no message and spent nothing). ``policy_events`` say which policy fired
where and what it saved (``_policies``).

Format version 2 added ``status``, ``mode`` and ``stats``; version-1 traces (no ``version``
field) load with ``status`` derived from ``error``. Version 3 added ``skipped``,
``policy_events``, ``answered_by``, ``policies`` and ``NodeRecord.dropped_inputs``.

``RunObserver``: the callbacks a run calls as its trace is written (live displays, studies
grading as nodes finish, the server's streams); ``QuietObserver`` ignores them all.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol

from pydantic import BaseModel, Field

from ._engine import EngineInfo, Usage
from ._ids import NodeId
from ._messages import ChatMessage
from ._trusted import Trusted


class Truncation(BaseModel):
    """A message shortened to fit the prompt budget."""

    source: str
    original_tokens: int
    kept_tokens: int


NodeStatus = Literal["ok", "failed", "cancelled", "timed_out", "skipped"]
TRACE_VERSION = 3


class NodeRecord(BaseModel):
    """One node (trajectory) of the run."""

    id: str
    round: int
    agent: int
    role: str
    engine: str | None = Field(default=None, description="the name of the engine the node ran on "
                               "(the run's engines; 'default' for one engine)")
    model: str | None = Field(default=None, description="that engine's model")
    inputs: list[str] = Field(default_factory=list)
    missing_inputs: list[str] = Field(default_factory=list, description="in-neighbours that failed")
    dropped_inputs: list[str] = Field(default_factory=list, description="in-neighbours a policy left "
                                      "out (skipped, or stragglers past a quorum): not in the prompt")
    prompt: list[ChatMessage] = Field(default_factory=list)
    content: str | None = None
    reasoning: str | None = None
    message: str | None = None
    finish_reason: str | None = None
    usage: Usage = Field(default_factory=Usage)
    error: str | None = None
    status: NodeStatus | None = Field(default=None, description="None only in version-1 traces")
    attempts: int = 0
    request: int | None = Field(default=None, description="index of the engine request (n-merge groups share one)")
    request_n: int = 1
    seed: int | None = Field(default=None, description="this sample's seed: the request's seed plus the "
                             "sample's index in an n-merged request (as vLLM seeds n children)")
    truncations: list[Truncation] = Field(default_factory=list)
    notes: dict[str, Any] = Field(default_factory=dict)
    started_at: float | None = None
    ended_at: float | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.content is not None

    @property
    def outcome(self) -> NodeStatus:
        """``status``, derived from ``error`` for version-1 traces."""
        if self.status is not None:
            return self.status
        return "ok" if self.ok else "failed"


_TRUSTED_RECORD = Trusted(NodeRecord)


def new_record(node: NodeId, role: str, **fields: Any) -> NodeRecord:
    """A record built from trusted values without re-validating them (a run creates one per
    node: this is on the hot path). ``fields`` must already have the declared types."""
    fields.update(id=str(node), round=node.round, agent=node.agent, role=role)
    if fields.get("usage") is None:
        fields.pop("usage", None)
    return _TRUSTED_RECORD.build(fields)


class PolicyEvent(BaseModel):
    """A policy that fired: where, on what evidence, and what it saved."""

    policy: Literal["consensus", "width", "quorum"]
    round: int
    node: str | None = Field(default=None, description="the node whose message made it fire")
    detail: str = ""
    answer: str | None = Field(default=None, description="the plurality answer (consensus, width)")
    confidence: float | None = Field(default=None, description="the stop rule's statistic")
    skipped: list[str] = Field(default_factory=list, description="nodes never launched")
    rounds_skipped: list[int] = Field(default_factory=list)
    cancelled: list[str] = Field(default_factory=list, description="stragglers cancelled in flight")
    unseen: list[str] = Field(default_factory=list, description="stragglers left to finish for the "
                              "record (stragglers = finish): their messages are not visible")
    cancelled_tokens: int = Field(default=0, description="tokens the cancelled stragglers had generated "
                                  "(counted in effective_ttc)")
    tokens_unknown: int = Field(default=0, description="cancelled stragglers whose engine could not say "
                                "how many tokens they had generated (counted as 0)")
    answered_from: str | None = Field(default=None, description="consensus: 'sink' (the sink synthesised "
                                      "over this round) or the plurality message's node")


class RoundSummary(BaseModel):
    round: int
    nodes: int
    requests: int
    failed: int
    skipped: int = 0
    completion_tokens: int
    started_at: float
    ended_at: float


class RunStats(BaseModel):
    """Where a run's time went, and the prefill it caused where the engine reports it.

    ``orchestration_seconds``: this run's own planning and applying (the framework's overhead);
    ``unique_prompt_tokens``: prompt tokens of its distinct prompts (siblings counted once);
    ``prefill_computed_tokens`` / ``prefill_cached_tokens``: the engine's counters over the run,
    where the engine reports them and the run had the engine to itself (None otherwise: on a
    shared engine they would count other runs' work; studies record them per invocation).
    """

    wall_seconds: float
    orchestration_seconds: float
    requests: int
    unique_prompt_tokens: int
    prefill_computed_tokens: int | None = None
    prefill_cached_tokens: int | None = None


class RunTrace(BaseModel):
    """The whole run. ``answer`` is the sink's message (None if the run failed)."""

    version: int = Field(default=1, description="trace format version (2 since status/mode/stats, "
                         "3 since policies)")
    answer: str | None
    sink: str
    effective_ttc: int
    degraded: bool = Field(default=False, description="a node failed and the run went on without its "
                           "message (on_failure='continue'), and the run completed")
    error: str | None = None
    mode: str | None = Field(default=None, description="dataflow or rounds")
    problem: list[ChatMessage]
    problem_id: str
    config: dict[str, Any]
    engine: EngineInfo
    engines: dict[str, EngineInfo] = Field(default_factory=dict, description="every engine of the run "
                                           "by name (one engine: 'default', the same as engine)")
    tokens: dict[str, dict[str, Usage]] = Field(default_factory=dict, description="usage summed per engine, "
                                                "then per role")
    topology: dict[str, Any]
    topology_name: str
    nodes: list[NodeRecord]
    rounds: list[RoundSummary] = Field(default_factory=list)
    stats: RunStats | None = None
    policies: dict[str, Any] | None = Field(default=None, description="the run's policies (None: none)")
    policy_events: list[PolicyEvent] = Field(default_factory=list)
    answered_by: str | None = Field(default=None, description="the node whose message is the answer "
                                    "(the sink, unless a consensus stop answered from the plurality)")
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


def tokens_by_engine_and_role(nodes: list[NodeRecord]) -> dict[str, dict[str, Usage]]:
    """Usage summed per engine, then per role, over ``nodes`` (sorted names). Prompt tokens
    are summed per node: siblings of one n-request each count the prompt they saw."""
    out: dict[str, dict[str, Usage]] = {}
    for node in nodes:
        usage = out.setdefault(node.engine or "default", {}).setdefault(node.role, Usage())
        usage.prompt_tokens += node.usage.prompt_tokens
        usage.completion_tokens += node.usage.completion_tokens
        usage.cached_tokens += node.usage.cached_tokens
    return {e: dict(sorted(roles.items())) for e, roles in sorted(out.items())}


class RunObserver(Protocol):
    """Progress callbacks; called on the event loop, must not block. An observer may also define
    ``sink_text(delta: str) -> None`` to receive the sink's text as the engine generates it."""

    def round_started(self, round_: int, nodes: int, requests: int) -> None:
        """The round's first node is planned (``requests``: requests planned with it)."""

    def request_finished(self, round_: int, nodes: int, completion_tokens: int, failed: bool) -> None:
        """A request is done (live progress)."""

    def node_finished(self, record: NodeRecord) -> None:
        """A node's record is final."""

    def round_finished(self, summary: RoundSummary) -> None:
        """Every node of the round is final."""


class QuietObserver:
    """A ``RunObserver`` that ignores every callback: subclass it and override what you need."""

    def round_started(self, round_: int, nodes: int, requests: int) -> None:
        pass

    def request_finished(self, round_: int, nodes: int, completion_tokens: int, failed: bool) -> None:
        pass

    def node_finished(self, record: NodeRecord) -> None:
        pass

    def round_finished(self, summary: RoundSummary) -> None:
        pass
