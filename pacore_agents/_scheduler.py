"""Driving one run: plan / execute / apply per node, as soon as the node's inputs are applied.

- **Readiness.** ``dataflow`` (default): a node is planned when all of its in-neighbours are
  applied, so ring, hierarchical and custom graphs never wait for unrelated nodes (all-to-all
  rounds still wait for their whole previous round: their inputs say so). ``rounds``: a node is
  planned when its whole previous round is applied (a barrier per round).
- **Plan** is pure (``_plan``); **apply** writes a node's record once, from its plan and its
  outcome. A message is visible only to nodes planned after it is applied.
- **The n-merge.** Nodes of one round with the same in-neighbours and role form a merge group
  (they become ready together); within it, nodes whose prompts and sampling are equal form one
  request with ``n`` = their count and one seed (sample i: seed + i). Both modes use the same
  groups, so they send the same prompts with the same seeds: results are identical.
- **Determinism.** Seeds derive from (run seed, problem id, first node of the request, n); a
  node's prompt depends only on its inputs' records; records are listed in sorted order. Nothing
  depends on completion order.
- **Execution** goes through the engine's shared ``Executor`` (admission by sequences in
  priority order, see ``Priority``; retries with back-off outside the window). With several
  engines (``_binding``), each request goes to the executor of its role's engine; a merge
  group has one role, so a merged request never spans engines.
- **Failures.** ``on_failure="fail"``: the first failed node cancels the run's other work;
  ``continue``: the failure is recorded and dependents go on without that message. Nodes that
  never completed are marked ``cancelled`` or ``timed_out`` (``finish``).
- **Policies** (``_policies``; their state in ``_adaptive``) may send a round one sample per
  request (the same seeds), launch it in waves, release a round at a quorum (stragglers
  cancelled through their cancel scope; a cancelling quorum's requests are sent marked
  ``cancellable``, so the engine counts their tokens) or skip rounds; without policies nothing
  changes.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from typing import Any

import anyio
import anyio.abc

from ._adaptive import Adaptive
from ._answers import AnswerEquivalence, StringEquivalence
from ._binding import EngineBinding, named_error
from ._config import RunConfig
from ._engine import (
    TRUSTED_METADATA,
    TRUSTED_REQUEST,
    TRUSTED_SAMPLING,
    Completion,
    GenerationRequest,
)
from ._errors import ConfigError, EngineError
from ._executor import Executor
from ._ids import NodeId, ProblemId, Round
from ._logging import get_logger
from ._messages import Problem
from ._plan import LogicalRequest, NodeJob, NodePlan, Planner, RequestKey, RoundState, merge_groups
from ._policies import Policies
from ._priority import Priority, Slots, Ticket
from ._references import derive_seed
from ._roles import RoleBook
from ._topology import Topology
from ._trace import NodeRecord, NodeStatus, RoundSummary, RunObserver, new_record

__all__ = ["RunDriver", "RunObserver", "merge_groups"]

log = get_logger("pacore_agents.scheduler")


class RunDriver:
    """One run of one problem over one topology on a shared executor (see the module doc)."""

    def __init__(self, problem: Problem, topology: Topology, executor: Executor, config: RunConfig,
                 roles: RoleBook, *, precomputed: Mapping[NodeId, Completion] | None = None,
                 observer: RunObserver | None = None, unit: str | None = None,
                 run_seq: int | None = None, binding: EngineBinding | None = None,
                 policies: Policies | None = None, equivalence: AnswerEquivalence | None = None) -> None:
        """``binding``: the run's named engines (``_binding``); None: ``executor``'s engine alone.
        ``policies``: checked against the topology here (``ConfigError``); ``equivalence``
        compares their answers (default: normalised strings)."""
        if binding is None:
            binding = EngineBinding.single(executor, executor.new_run() if run_seq is None else run_seq)
        self.binding = binding
        executor = binding.default.executor
        self.problem, self.topology, self.executor, self.config = problem, topology, executor, config
        self.planner = Planner(problem, topology, executor.engine, config, roles,
                               engine_of=lambda role: binding.lane_for(role).engine)
        self.precomputed = dict(precomputed or {})
        self.observer = observer
        self.unit = unit
        unknown = sorted(set(self.precomputed) - set(topology.graph.nodes))
        if unknown:
            raise ConfigError(f"precomputed completion for node {unknown[0]}, which is not in the topology")
        # each group's nodes (the MergeGroup objects themselves are not kept: a large run has
        # ~one group per node, and every long-lived object costs the garbage collector)
        self.groups = [g.nodes for g in merge_groups(topology, self.planner)]  # also checks every role exists
        for nodes in self.groups:  # ... and has an engine
            binding.lane_for(self.planner.role_of(nodes[0]))
        self.records: dict[NodeId, NodeRecord] = {}
        self.plans: dict[NodeId, NodePlan] = {}
        self.sent: dict[NodeId, float] = {}
        self.failure: NodeId | None = None
        self.orchestration = 0.0
        self.unique_prompt_tokens = 0
        self._requests = 0
        self._rounds = [RoundState(left=w) for w in topology.widths]
        self._pending: dict[int, int] = {}
        self._waiting_node: dict[NodeId, tuple[int, ...]] = {}
        self._waiting_round: dict[int, list[int]] = {}
        self._tg: anyio.abc.TaskGroup | None = None
        self._queued: dict[str, set[Ticket]] = {lane.name: set() for lane in binding}
        self._left = len(topology.nodes())
        self._done = anyio.Event()
        self.adaptive = None if policies is None or policies.empty else Adaptive(
            self, policies, equivalence or StringEquivalence())

    @property
    def task_group(self) -> anyio.abc.TaskGroup | None:
        return self._tg

    @property
    def summaries(self) -> list[RoundSummary]:
        return [s.summary for s in self._rounds if s.summary is not None]

    # ---- readiness ---------------------------------------------------------------------
    async def drive(self) -> None:
        """Run every node; returns when all are applied or the run failed (``failure``)."""
        rounds_mode = self.config.mode == "rounds"
        ready: list[int] = []
        waiting_node: dict[NodeId, list[int]] = {}
        for i, nodes in enumerate(self.groups):
            round_ = nodes[0].round
            if round_ == 1:
                ready.append(i)
            elif rounds_mode:
                self._pending[i] = 1
                self._waiting_round.setdefault(round_ - 1, []).append(i)
            else:
                deps = self.topology.input_ids(nodes[0])
                self._pending[i] = len(deps)
                for dep in deps:
                    waiting_node.setdefault(dep, []).append(i)
        # tuples of ints: the garbage collector stops tracking them
        self._waiting_node = {dep: tuple(groups) for dep, groups in waiting_node.items()}
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                # queued work is not a task: keep the group open until every node is applied
                tg.start_soon(self._done.wait)
                for i in ready:
                    self._ready(i)
                self.binding.queued()
        finally:
            for lane in self.binding:
                lane.executor.withdraw(self._queued[lane.name])

    def _release(self, waiting: Sequence[int] | None) -> None:
        for i in waiting or ():
            self._pending[i] -= 1
            if self._pending[i] == 0:
                self._ready(i)

    # ---- plan --------------------------------------------------------------------------
    def _ready(self, index: int) -> None:
        """Plan a ready merge group and submit its requests (precomputed nodes apply at once)."""
        t0 = time.perf_counter()
        nodes = self.groups[index]
        round_ = nodes[0].round
        requests: dict[RequestKey, list[NodePlan]] = {}
        now_applied: list[NodePlan] = []
        adaptive = self.adaptive
        for node in nodes:
            if adaptive is not None and node in adaptive.closed:
                self.skip(node, None)
                continue
            plan = self.planner.plan(node, self.records) if adaptive is None else self.planner.plan(
                node, self.records, sources=adaptive.sources.get(node), hidden=adaptive.hidden)
            self.plans[node] = plan
            if node in self.precomputed:
                now_applied.append(plan)
                continue
            solo = None if self.config.merge_identical and plan.sampling.seed is None else node
            requests.setdefault((plan.prompt, plan.sampling, solo), []).append(plan)
        state = self._rounds[round_ - 1]
        state.requests += len(requests)
        if not state.started:
            state.started = True
            if self.observer is not None:
                self.observer.round_started(round_, len(self.topology.nodes(round_)), len(requests))
        made = []
        for (_, sampling, _), plans in requests.items():
            seed = sampling.seed
            if self.config.seed is not None and seed is None:
                seed = derive_seed(self.config.seed, self.problem.id, plans[0].node, len(plans))
            made.append(LogicalRequest(self._requests, plans, seed, sampling, self.binding.lane_for(plans[0].role)))
            self._requests += 1
        if adaptive is None or not adaptive.launch(made):
            for req in made:
                self._submit(req)
        self._account(t0)
        for plan in now_applied:
            self._apply(plan, self.precomputed[plan.node], None, precomputed=True)

    def _account(self, t0: float) -> None:
        spent = time.perf_counter() - t0
        self.orchestration += spent
        self.executor.add_orchestration(spent)

    def _engine_request(self, req: LogicalRequest, plans: list[NodePlan], first: int,
                        priority: Priority) -> GenerationRequest:
        seed = None if req.seed is None else req.seed + first
        node = plans[0].node
        # built from validated parts without re-validation: one per request, on the hot path
        sampling = req.sampling if seed == req.sampling.seed else TRUSTED_SAMPLING.copy(req.sampling, seed=seed)
        return TRUSTED_REQUEST.build({
            "messages": plans[0].prompt, "n": len(plans), "sampling": sampling,
            "metadata": TRUSTED_METADATA.build({
                "problem_id": ProblemId(self.problem.id), "round": Round(node.round),
                "nodes": tuple(p.node for p in plans), "unit": self.unit,
                "priority": priority.engine_priority(req.lane.executor.feeding),
                "cancellable": self.adaptive is not None and self.adaptive.cancellable(node.round)})})

    def _submit(self, req: LogicalRequest) -> None:
        assert self._tg is not None
        first = req.plans[0].node
        remaining = self.topology.num_rounds - first.round
        lane = req.lane
        executor, queued = lane.executor, self._queued[lane.name]
        per_sample = self.adaptive is not None and self.adaptive.per_sample(first.round)
        if (executor.split or per_sample) and len(req.plans) > 1:
            for i in range(len(req.plans)):
                self.submit_sample(req, i)
        else:
            pri = Priority(first.round, remaining, lane.seq, (first.agent,))
            ticket = executor.submit(self._tg, pri, len(req.plans), NodeJob(self, req, req.plans, 0, pri), queued)
            if per_sample and self.adaptive is not None:
                self.adaptive.keep_ticket(first, executor, ticket)

    def submit_sample(self, req: LogicalRequest, i: int) -> None:
        """Submit sample ``i`` of ``req`` alone (seed + i, as an engine that splits samples)."""
        assert self._tg is not None
        first, lane = req.plans[0].node, req.lane
        pri = Priority(first.round, self.topology.num_rounds - first.round, lane.seq, (first.agent, i))
        ticket = lane.executor.submit(self._tg, pri, 1, NodeJob(self, req, [req.plans[i]], i, pri),
                                      self._queued[lane.name])
        if self.adaptive is not None:
            self.adaptive.keep_ticket(req.plans[i].node, lane.executor, ticket)

    # ---- execute -----------------------------------------------------------------------
    async def execute(self, req: LogicalRequest, plans: list[NodePlan], first: int, priority: Priority,
                      slots: Slots) -> None:
        """Send ``plans`` (samples ``first``.. of ``req``) within ``slots``; apply the results."""
        request = self._engine_request(req, plans, first, priority)
        sink = self.topology.sink
        on_text = getattr(self.observer, "sink_text", None) if plans[0].node == sink else None
        started = time.time()
        for plan in plans:
            self.sent[plan.node] = started
        applied: set[int] = set()

        def sample_ended(i: int, completion: Completion) -> None:  # samples released one by one
            applied.add(i)
            self._apply(plans[i], completion, None, req=req, sample=first + i, times=(started, time.time()))

        lane = req.lane
        watched = self.adaptive is not None and self.adaptive.per_sample(plans[0].node.round)
        scope = self.adaptive.scope(plans[0].node) if watched and self.adaptive is not None else None
        try:
            if lane.start_error is not None:  # its engine did not start: fail its nodes only
                raise lane.start_error
            with scope or nullcontext():
                out = await lane.executor.generate(request, priority=priority, retry=self.config.retry,
                                                   slots=slots, on_text=on_text,
                                                   on_sample=sample_ended if len(plans) > 1 else None)
            if scope is not None and scope.cancelled_caught:  # a straggler past its quorum
                assert self.adaptive is not None
                fields = self.adaptive.straggler_record(plans[0].node, lane.engine.tokens_so_far(request))
                self._store(plans[0].record(engine=lane.name, model=lane.model, request=req.index,
                                            request_n=len(req.plans), seed=request.sampling.seed,
                                            started_at=started, ended_at=time.time(), **fields))
                return
        except EngineError as raw:
            exc = named_error(lane, raw) if self.binding.several else raw
            # samples that ended before the failure stand (their records are applied): the log
            # names only the nodes that failed, and the progress keeps the others' tokens
            ended = time.time()
            failed = [i for i in range(len(plans)) if i not in applied]
            log.warning("node failed", problem=self.problem.id, unit=self.unit,
                        nodes=[str(plans[i].node) for i in failed], error=exc.describe())
            for i in failed:
                self._apply(plans[i], None, exc, req=req, sample=first + i, times=(started, ended))
            if self.observer is not None:
                tokens = sum(self.records[plans[i].node].usage.completion_tokens for i in sorted(applied))
                self.observer.request_finished(plans[0].node.round, len(plans), tokens, True)
            return
        ended = time.time()
        if first == 0:
            self.unique_prompt_tokens += out[0].usage.prompt_tokens
        for i, (plan, completion) in enumerate(zip(plans, out, strict=True)):
            if i not in applied:
                self._apply(plan, completion, None, req=req, sample=first + i, times=(started, ended))
        if self.observer is not None:
            tokens = sum(c.usage.completion_tokens for c in out)
            self.observer.request_finished(plans[0].node.round, len(plans), tokens, False)

    # ---- apply -------------------------------------------------------------------------
    def _apply(self, plan: NodePlan, completion: Completion | None, error: EngineError | None, *,
               req: LogicalRequest | None = None, sample: int = 0, times: tuple[float, float] | None = None,
               precomputed: bool = False) -> None:
        """Write the node's record once; release the nodes waiting for it."""
        t0 = time.perf_counter()
        lane = self.binding.lane_for(plan.role)
        fields: dict[str, Any] = {"engine": lane.name, "model": lane.model}  # one construction per node
        if req is not None:
            fields.update(request=req.index, request_n=len(req.plans),
                          seed=None if req.seed is None else req.seed + sample)
        if times is not None:
            fields.update(started_at=times[0], ended_at=times[1])
        if completion is not None:
            notes = dict(completion.notes)
            if precomputed:
                notes["precomputed"] = True
            fields.update(status="ok", content=completion.content, reasoning=completion.reasoning,
                          message=plan.role.compact(completion), finish_reason=completion.finish_reason,
                          usage=completion.usage, attempts=completion.attempts, notes=notes)
        else:
            assert error is not None
            fields.update(status="failed", error=error.describe(), attempts=error.attempts)
        self._account(t0)
        self._store(plan.record(**fields))

    def _store(self, record: NodeRecord) -> None:
        """Keep a node's final record; release the nodes waiting for it (or fail the run)."""
        node = NodeId.of(record.round, record.agent)
        self.records[node] = record
        self.plans.pop(node, None)  # kept only while the node is unfinished (for ``finish``)
        self.sent.pop(node, None)
        if self.observer is not None:
            self.observer.node_finished(record)
        late = self.adaptive is not None and node in self.adaptive.hidden  # a straggler: not needed
        if record.status == "failed" and self.config.on_failure == "fail" and not late:
            if self.failure is None:
                self.failure = node
                self.abort()
            return
        self._left -= 1
        if self._left == 0:
            self._done.set()
        if self.adaptive is None or self.adaptive.final(node, record):
            self.release(node)
        elif self._rounds[node.round - 1].summary is not None:  # a late straggler (quorum)
            self._rounds[node.round - 1].summary = self._summary(node.round)

    def skip(self, node: NodeId, plan: NodePlan | None) -> None:
        """A policy never launches ``node``: its record says ``skipped``."""
        lane = self.binding.lane_for(self.planner.role_of(node))
        record = new_record(node, self.planner.role_of(node).name) if plan is None else plan.record()
        record.status, record.engine, record.model = "skipped", lane.name, lane.model
        self._store(record)

    def abort(self) -> None:
        """Cancel the run's work (a failure under ``fail``, or a policy's error)."""
        assert self._tg is not None
        self._tg.cancel_scope.cancel()

    def release(self, node: NodeId) -> None:
        """``node``'s message is settled for later rounds: release the nodes waiting for it."""
        state = self._rounds[node.round - 1]
        state.left -= 1
        if state.left == 0:
            state.summary = self._summary(node.round)
            if self.observer is not None and state.started:  # not a round a policy skipped whole
                self.observer.round_finished(state.summary)
            self._release(self._waiting_round.pop(node.round, None))
        self._release(self._waiting_node.pop(node, None))

    def _summary(self, round_: int) -> RoundSummary:
        records = [self.records[n] for n in self.topology.nodes(round_) if n in self.records]
        starts = [r.started_at for r in records if r.started_at is not None]
        ends = [r.ended_at for r in records if r.ended_at is not None]
        now = time.time()
        return RoundSummary(round=round_, nodes=len(records), requests=self._rounds[round_ - 1].requests,
                            failed=sum(1 for r in records if r.status not in ("ok", "skipped")),
                            skipped=sum(1 for r in records if r.status == "skipped"),
                            completion_tokens=sum(r.usage.completion_tokens for r in records),
                            started_at=min(starts, default=now), ended_at=max(ends, default=now))

    # ---- the end -----------------------------------------------------------------------
    def finish(self, status: NodeStatus, reason: str) -> None:
        """Record every node that did not complete as ``status`` with ``reason``."""
        for node in self.topology.nodes():
            if node in self.records:
                continue
            plan = self.plans.get(node)
            record = new_record(node, self.planner.role_of(node).name) if plan is None else plan.record()
            record.status, record.error = status, reason
            record.engine, record.started_at = self.binding.lane_for(self.planner.role_of(node)).name, self.sent.get(node)
            self.records[node] = record
        for i, state in enumerate(self._rounds):
            if state.summary is None and state.started:
                state.summary = self._summary(i + 1)
