"""The round scheduler: plan / execute / apply per round (a Pregel superstep).

- plan(r): every node of round r builds its prompt from the messages APPLIED in round r-1
  (a message written in round r is visible only in round r+1). Nodes with identical prompts
  and sampling form one request with n = their count. Plans are made in sorted node order.
- execute(r): the requests run concurrently in one task group; results are buffered, not
  applied. Under ``on_failure="fail"`` the first failure cancels the round's other requests.
- apply(r): results are written in sorted node order, so the state after a round does not
  depend on completion order.

Seeds derive from (run seed, problem id, first node of the request, n): deterministic.
Every request runs inside the caller's cancel scope: cancelling the run cancels them all.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

import anyio

from ._config import RunConfig
from ._engine import Completion, Engine, GenerationRequest, RequestMetadata, SamplingParams
from ._errors import ConfigError, EngineError
from ._ids import NodeId
from ._logging import get_logger
from ._messages import ChatMessage, Problem
from ._references import Reference, derive_seed, fit_references, order_references
from ._roles import PromptContext, Role, RoleBook, default_role
from ._topology import Topology
from ._trace import NodeRecord, RoundSummary

log = get_logger("pacore_agents.scheduler")

#: tokens added per chat message by a chat template, and per reference by the synthesis template
_MESSAGE_OVERHEAD = 8
_REFERENCE_OVERHEAD = 8

#: requests are merged when prompt and sampling are equal; a node that must not merge adds itself
_GroupKey = tuple[tuple[ChatMessage, ...], SamplingParams, NodeId | None]


class RunObserver(Protocol):
    """Progress callbacks; called on the event loop, must not block."""

    def round_started(self, round_: int, nodes: int, requests: int) -> None: ...

    def request_finished(self, round_: int, nodes: int, completion_tokens: int, failed: bool) -> None:
        """A request is done (live progress; its results are not applied yet)."""

    def node_finished(self, record: NodeRecord) -> None:
        """A node's record is final (called in apply, in sorted order)."""

    def round_finished(self, summary: RoundSummary) -> None: ...


@dataclass(frozen=True)
class PlannedRequest:
    """One engine request serving ``nodes`` (sample i goes to ``nodes[i]``)."""

    index: int
    nodes: tuple[NodeId, ...]
    request: GenerationRequest


@dataclass
class RoundResult:
    """Buffered outcomes of a round's requests, keyed by request index."""

    completions: dict[int, list[Completion]] = field(default_factory=dict)
    errors: dict[int, str] = field(default_factory=dict)
    attempts: dict[int, int] = field(default_factory=dict)
    times: dict[int, tuple[float, float]] = field(default_factory=dict)
    first_failure: NodeId | None = None


class RoundScheduler:
    """Runs one problem over one topology. Holds the applied state: ``records`` and ``raw``."""

    def __init__(
        self,
        problem: Problem,
        topology: Topology,
        engine: Engine,
        config: RunConfig,
        roles: RoleBook,
        *,
        precomputed: Mapping[NodeId, Completion] | None = None,
        observer: RunObserver | None = None,
    ) -> None:
        self.problem = problem
        self.topology = topology
        self.engine = engine
        self.config = config
        self.roles = roles
        self.precomputed = dict(precomputed or {})
        self.observer = observer
        self.records: dict[NodeId, NodeRecord] = {}
        self.raw: dict[NodeId, str | None] = {}
        self._request_counter = 0
        unknown = sorted(set(self.precomputed) - set(topology.graph.nodes))
        if unknown:
            raise ConfigError(f"precomputed completion for node {unknown[0]}, which is not in the topology")

    def role_of(self, node: NodeId) -> Role:
        name = self.topology.role_of(node) or default_role(node, self.topology.sink)
        return self.roles.get(name, node)

    # ---- plan -------------------------------------------------------------------------
    def _prompt(self, node: NodeId, role: Role, record: NodeRecord, sampling: SamplingParams) -> tuple[ChatMessage, ...]:
        inputs = [
            Reference(src, self.raw.get(src), self.records[src].message) for src in self.topology.inputs(node)
        ]
        ordered = order_references(inputs, self.config.order, seed=self.config.seed, node=node)
        record.inputs = [str(ref.source) for ref in ordered]
        record.missing_inputs = [str(ref.source) for ref in inputs if self.records[ref.source].error]
        ctx = PromptContext(self.problem, node, self.topology.num_rounds, [])
        available = self._available_tokens(role, ctx, sampling, len(ordered))
        extra = 0
        for _ in range(4):
            messages, cuts = fit_references(
                ordered,
                count=self.engine.count_tokens,
                truncate=self.engine.truncate_tokens,
                max_message_tokens=self.config.max_message_tokens,
                available_tokens=None if available is None else available - extra,
            )
            ctx = PromptContext(self.problem, node, self.topology.num_rounds, messages)
            prompt = role.build_prompt(ctx)
            over = self._overflow(prompt, sampling)
            if over <= 0 or not ordered:
                break
            extra += over
        record.truncations = cuts
        return prompt

    def _reserve(self, sampling: SamplingParams, context: int) -> int:
        if self.config.context_reserve_tokens is not None:
            return self.config.context_reserve_tokens
        return min(sampling.max_tokens or context // 4, context // 2)

    def _prompt_tokens(self, prompt: tuple[ChatMessage, ...]) -> int:
        return sum(self.engine.count_tokens(m.content) + _MESSAGE_OVERHEAD for m in prompt)

    def _available_tokens(self, role: Role, ctx: PromptContext, sampling: SamplingParams, n_refs: int) -> int | None:
        context = self.engine.info.max_context
        if context is None:
            return None
        base = self._prompt_tokens(role.build_prompt(ctx))
        return context - self._reserve(sampling, context) - base - n_refs * _REFERENCE_OVERHEAD

    def _overflow(self, prompt: tuple[ChatMessage, ...], sampling: SamplingParams) -> int:
        context = self.engine.info.max_context
        if context is None:
            return 0
        return self._prompt_tokens(prompt) + self._reserve(sampling, context) - context

    def plan(self, round_: int) -> list[PlannedRequest]:
        """Build the prompts of round ``round_`` and group identical ones (sorted order)."""
        groups: dict[_GroupKey, tuple[SamplingParams, list[NodeId]]] = {}
        for node in self.topology.nodes(round_):
            role = self.role_of(node)
            sampling = self.config.sampling.merged(role.sampling)
            record = NodeRecord(id=str(node), round=node.round, agent=node.agent, role=role.name)
            self.records[node] = record
            prompt = self._prompt(node, role, record, sampling)
            record.prompt = list(prompt)
            if node in self.precomputed:
                continue
            solo = None if self.config.merge_identical and sampling.seed is None else node
            key = (prompt, sampling, solo)
            groups.setdefault(key, (sampling, []))[1].append(node)
        plans = []
        for sampling, nodes in groups.values():
            seed = sampling.seed
            if self.config.seed is not None and seed is None:
                seed = derive_seed(self.config.seed, self.problem.id, nodes[0], len(nodes))
            request = GenerationRequest(
                messages=tuple(self.records[nodes[0]].prompt),
                n=len(nodes),
                sampling=sampling.model_copy(update={"seed": seed}),
                metadata=RequestMetadata(problem_id=self.problem.id, round=nodes[0].round, nodes=tuple(nodes)),
            )
            plans.append(PlannedRequest(self._request_counter, tuple(nodes), request))
            self._request_counter += 1
        return plans

    # ---- execute ----------------------------------------------------------------------
    async def execute(self, plans: list[PlannedRequest]) -> RoundResult:
        """Run the requests concurrently; buffer their outcomes."""
        result = RoundResult()
        fail_fast = self.config.on_failure == "fail"

        async def one(plan: PlannedRequest, tg: anyio.abc.TaskGroup) -> None:
            start = time.time()
            try:
                completions = await self.engine.generate(plan.request)
                if len(completions) != plan.request.n:
                    raise EngineError(f"engine returned {len(completions)} samples for n={plan.request.n}")
            except EngineError as exc:
                result.errors[plan.index] = exc.describe()
                result.attempts[plan.index] = exc.attempts
                log.warning("node failed", nodes=[str(n) for n in plan.nodes], error=exc.describe())
                if fail_fast and result.first_failure is None:
                    result.first_failure = plan.nodes[0]
                    tg.cancel_scope.cancel()
            else:
                result.completions[plan.index] = completions
            finally:
                result.times[plan.index] = (start, time.time())
            if self.observer is not None:
                tokens = sum(c.usage.completion_tokens for c in result.completions.get(plan.index, []))
                self.observer.request_finished(plan.request.metadata.round or 0, len(plan.nodes), tokens,
                                               plan.index in result.errors)

        async with anyio.create_task_group() as tg:
            for plan in plans:
                tg.start_soon(one, plan, tg)
        if result.first_failure is not None:
            for plan in plans:
                if plan.index not in result.completions and plan.index not in result.errors:
                    result.errors[plan.index] = f"cancelled: the run failed at node {result.first_failure}"
                    result.attempts[plan.index] = 0
        return result

    # ---- apply ------------------------------------------------------------------------
    def _apply_completion(self, node: NodeId, completion: Completion) -> None:
        record = self.records[node]
        record.content = completion.content
        record.reasoning = completion.reasoning
        record.message = self.role_of(node).compact(completion)
        record.finish_reason = completion.finish_reason
        record.usage = completion.usage
        record.attempts = completion.attempts
        record.notes.update(completion.notes)
        self.raw[node] = completion.content

    def apply(self, round_: int, plans: list[PlannedRequest], result: RoundResult) -> RoundSummary:
        """Write the round's outcomes in sorted node order; return the round's summary."""
        by_node: dict[NodeId, tuple[PlannedRequest, int]] = {}
        for plan in plans:
            for i, node in enumerate(plan.nodes):
                by_node[node] = (plan, i)
        for node in self.topology.nodes(round_):
            record = self.records[node]
            if node in self.precomputed:
                self._apply_completion(node, self.precomputed[node])
                record.notes["precomputed"] = True
            else:
                plan, i = by_node[node]
                record.request, record.request_n, record.seed = plan.index, plan.request.n, plan.request.sampling.seed
                record.started_at, record.ended_at = result.times.get(plan.index, (None, None))
                if plan.index in result.completions:
                    self._apply_completion(node, result.completions[plan.index][i])
                else:
                    record.error = result.errors[plan.index]
                    record.attempts = result.attempts.get(plan.index, 0)
                    self.raw[node] = None
            if self.observer is not None:
                self.observer.node_finished(record)
        times = list(result.times.values())
        now = time.time()
        round_records = [self.records[n] for n in self.topology.nodes(round_)]
        return RoundSummary(
            round=round_,
            nodes=len(round_records),
            requests=len(plans),
            failed=sum(1 for r in round_records if r.error),
            completion_tokens=sum(r.usage.completion_tokens for r in round_records),
            started_at=min((t[0] for t in times), default=now),
            ended_at=max((t[1] for t in times), default=now),
        )
