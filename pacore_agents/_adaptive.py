"""The runtime state of a run's policies (``_policies``), which the scheduler consults.

Contract (what the scheduler sees):
- ``per_sample(round)``: a policy round's nodes are sent one sample per request (sample i of a
  merged request keeps the seed ``seed + i``, as on engines that split samples), so each can
  be cancelled, and waves can launch part of a merge group.
- ``launch(requests)`` (adaptive width) submits the first wave and keeps the rest; a wave's
  check runs when its last node is final; if the rule passes, the nodes not launched are
  ``skipped`` (never sent), else the next wave is submitted.
- ``final(node)`` is told every final record; it returns whether the scheduler should release
  the node's dependents now. A quorum releases the round when q of its messages are in: the
  stragglers are released at once (their messages ``hidden`` from every later plan), then
  cancelled through their cancel scope (or withdrawn while queued: ``skipped``), or left to
  finish for the record. A consensus round holds its releases until every node is final or
  released, checks the rule on the visible messages, and if it passes skips the later rounds
  (the sink reads this round, or is skipped and the plurality message answers), then releases.
- Every decision comes from complete waves and rounds (deterministic given the engine's
  outputs), except which messages make a quorum (completion order). A failing equivalence
  check fails the run with a ``PolicyError`` naming the policy and round (``error``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio

from ._answers import AnswerEquivalence, answer_counts
from ._engine import Usage
from ._errors import PolicyError
from ._ids import NodeId
from ._policies import Policies, StopRule
from ._trace import NodeRecord, PolicyEvent

if TYPE_CHECKING:
    from ._plan import LogicalRequest
    from ._priority import Ticket
    from ._scheduler import RunDriver


class Adaptive:
    """One run's policy state (module docstring)."""

    def __init__(self, driver: RunDriver, policies: Policies, equivalence: AnswerEquivalence) -> None:
        topo = driver.topology
        policies.check(topo)
        self.driver, self.policies, self.equivalence = driver, policies, equivalence
        self.events: list[PolicyEvent] = []
        self.hidden: set[NodeId] = set()  # released before their record: never visible
        self.closed: set[NodeId] = set()  # skipped by a policy before they were planned
        self.sources: dict[NodeId, tuple[NodeId, ...]] = {}
        self.answer: tuple[NodeId, str | None] | None = None  # (node, message): the plurality's
        self.error: PolicyError | None = None
        self.fired = False  # a consensus stop fired
        self._quorum = policies.quorum.needed(topo) if policies.quorum is not None else {}
        self._consensus = set(policies.consensus_rounds(topo))
        self._width = set(policies.width.rounds) if policies.width is not None else set()
        self._in: dict[int, int] = {}  # ok messages in, per quorum round
        self._accounted: dict[int, int] = {}  # final or released nodes, per consensus round
        self._held: dict[int, list[NodeId]] = {}
        self._released: set[NodeId] = set()
        self._scopes: dict[NodeId, anyio.CancelScope] = {}
        self._tickets: dict[NodeId, tuple[Any, Ticket]] = {}
        self._doomed: set[NodeId] = set()
        self._waves: list[tuple[LogicalRequest, int]] = []
        self._wave: set[NodeId] = set()
        self._quorum_event: dict[int, PolicyEvent] = {}

    # ---- what the scheduler asks ------------------------------------------------------------
    def per_sample(self, round_: int) -> bool:
        return round_ in self._quorum or round_ in self._width

    def cancellable(self, round_: int) -> bool:
        """Whether ``round_``'s requests may be cancelled as stragglers (a quorum that cancels)."""
        return round_ in self._quorum and self.policies.quorum is not None \
            and self.policies.quorum.stragglers == "cancel"

    def launch(self, requests: list[LogicalRequest]) -> bool:
        """Take a width round's requests (False: not one); submit the first wave."""
        first = requests[0].plans[0].node.round if requests else 0
        if first not in self._width:
            return False
        self._waves = sorted(((req, i) for req in requests for i in range(len(req.plans))),
                             key=lambda ri: ri[0].plans[ri[1]].node)
        self._next_wave()
        return True

    def keep_ticket(self, node: NodeId, executor: Any, ticket: Ticket) -> None:
        self._tickets[node] = (executor, ticket)

    def scope(self, node: NodeId) -> anyio.CancelScope:
        """The cancel scope ``node``'s request runs in (cancelled at once if it is a straggler)."""
        scope = self._scopes[node] = anyio.CancelScope()
        if node in self._doomed:
            scope.cancel()
        return scope

    def straggler_record(self, node: NodeId, tokens: int | None) -> dict[str, Any]:
        """The fields of a cancelled straggler's record; counts its tokens in the event."""
        self._scopes.pop(node, None)
        event = self._quorum_event[node.round]
        if tokens is None:
            event.tokens_unknown += 1
        else:
            event.cancelled_tokens += tokens
        return {"status": "cancelled", "usage": Usage(completion_tokens=tokens or 0),
                "notes": {"policy": "quorum", "tokens_reported": tokens is not None},
                "error": f"cancelled: a straggler past the quorum of round {node.round}"}

    def final(self, node: NodeId, record: NodeRecord) -> bool:
        """``record`` is final; whether to release ``node``'s dependents now."""
        self._scopes.pop(node, None)
        self._tickets.pop(node, None)
        if node in self._released:  # a straggler, released at the quorum
            event = self._quorum_event.get(node.round)
            if event is not None and record.status == "ok" and str(node) in event.cancelled:
                event.cancelled.remove(str(node))  # it ended before its cancellation took effect
                event.unseen.append(str(node))
            return False
        round_ = node.round
        if node in self._wave:
            self._wave.discard(node)
            if not self._wave:
                self._start(self._check_wave, round_)
        if round_ in self._quorum and record.status == "ok":
            self._in[round_] = self._in.get(round_, 0) + 1
            if self._in[round_] == self._quorum[round_]:
                self._fire_quorum(node)
        return self._account(node)

    # ---- consensus ----------------------------------------------------------------------------
    def _account(self, node: NodeId) -> bool:
        round_ = node.round
        if round_ not in self._consensus or self.fired:
            return True
        self._held.setdefault(round_, []).append(node)
        self._accounted[round_] = self._accounted.get(round_, 0) + 1
        if self._accounted[round_] == len(self.driver.topology.nodes(round_)):
            self._start(self._check_consensus, round_)
        return False

    async def _check_consensus(self, round_: int) -> None:
        assert self.policies.consensus is not None
        consensus, topo = self.policies.consensus, self.driver.topology
        visible = self._visible(round_)
        counts, classes = await self._counts(visible, "consensus", round_)
        plurality = consensus.answer_from == "plurality"
        # after the round before the sink's only the plurality answer saves anything (the sink)
        if consensus.rule.passes(counts) and not self.fired and (plurality or round_ < topo.num_rounds - 1):
            self.fired = True
            later = list(range(round_ + 1, topo.num_rounds))
            skipped = [n for r in later for n in topo.nodes(r)]
            event = PolicyEvent(policy="consensus", round=round_, detail=self._detail(consensus.rule, counts),
                                answer=classes[0].answer, confidence=consensus.rule.confidence(counts),
                                rounds_skipped=later + ([topo.num_rounds] if plurality else []))
            if plurality:
                node = visible[classes[0].first]
                self.answer = (node, self.driver.records[node].message)
                skipped.append(topo.sink)
                event.node = event.answered_from = str(node)
            else:
                self.sources[topo.sink] = tuple(visible)
                event.answered_from = "sink"
            self.closed.update(skipped)
            event.skipped = [str(n) for n in skipped]
            self.events.append(event)
        for node in self._held.pop(round_, []):
            self.driver.release(node)

    # ---- adaptive width -----------------------------------------------------------------------
    def _next_wave(self) -> None:
        assert self.policies.width is not None
        wave, self._waves = self._waves[:self.policies.width.wave], self._waves[self.policies.width.wave:]
        self._wave = {req.plans[i].node for req, i in wave}
        for req, i in wave:
            self.driver.submit_sample(req, i)

    async def _check_wave(self, round_: int) -> None:
        assert self.policies.width is not None
        if not self._waves:
            return
        visible = self._visible(round_)
        counts, classes = await self._counts(visible, "adaptive width", round_)
        rule = self.policies.width.rule
        if not rule.passes(counts):
            self._next_wave()
            return
        rest, self._waves = self._waves, []
        self.events.append(PolicyEvent(
            policy="width", round=round_, node=str(visible[-1]) if visible else None,
            detail=f"{len(visible)} launched; " + self._detail(rule, counts), answer=classes[0].answer,
            confidence=rule.confidence(counts), skipped=[str(req.plans[i].node) for req, i in rest]))
        for req, i in rest:
            self.driver.skip(req.plans[i].node, req.plans[i])

    # ---- quorum -------------------------------------------------------------------------------
    def _fire_quorum(self, node: NodeId) -> None:
        assert self.policies.quorum is not None
        round_ = node.round
        mode = self.policies.quorum.stragglers
        records = self.driver.records
        stragglers = [n for n in self.driver.topology.nodes(round_) if n not in records]
        event = self._quorum_event[round_] = PolicyEvent(
            policy="quorum", round=round_, node=str(node),
            detail=f"{self._quorum[round_]} of {len(self.driver.topology.nodes(round_))} messages in; "
                   f"{len(stragglers)} straggler(s), stragglers = {mode}")
        self.events.append(event)
        self.hidden.update(stragglers)
        never: list[NodeId] = []
        for straggler in stragglers:
            if straggler not in self.driver.plans:  # not planned yet: never launched
                self.closed.add(straggler)
                event.skipped.append(str(straggler))
                continue
            if mode == "finish":
                event.unseen.append(str(straggler))
                continue
            queued = self._tickets.pop(straggler, None)
            if queued is not None and not queued[1].started:
                queued[0].withdraw([queued[1]])
                never.append(straggler)
                continue
            event.cancelled.append(str(straggler))
            self._doomed.add(straggler)
            scope = self._scopes.get(straggler)
            if scope is not None:
                scope.cancel()
        event.skipped += [str(n) for n in never]
        for straggler in stragglers:  # released now: the next round plans without them
            self._released.add(straggler)
            if self._account(straggler):
                self.driver.release(straggler)
        for straggler in never:  # never sent: recorded as skipped
            self.driver.skip(straggler, self.driver.plans.get(straggler))

    # ---- helpers ------------------------------------------------------------------------------
    def _visible(self, round_: int) -> list[NodeId]:
        records = self.driver.records
        return [n for n in self.driver.topology.nodes(round_)
                if n not in self.hidden and n in records and records[n].status == "ok"]

    async def _counts(self, nodes: list[NodeId], policy: str, round_: int) -> tuple[list[int], list[Any]]:
        try:
            classes = await answer_counts(self.equivalence, [self.driver.records[n].message for n in nodes])
        except PolicyError as exc:
            raise PolicyError(f"policy {policy} on round {round_}: {exc}") from exc
        return [c.count for c in classes], classes

    @staticmethod
    def _detail(rule: StopRule, counts: list[int]) -> str:
        top = counts[0] if counts else 0
        return (f"top answer {top} of {sum(counts)} answered ({rule.kind} {rule.confidence(counts):.3f} "
                f">= {rule.threshold:g})")

    def _start(self, check: Callable[[int], Any], round_: int) -> None:
        async def guarded() -> None:
            try:
                await check(round_)
            except PolicyError as exc:
                if self.error is None:
                    self.error = exc
                    self.driver.abort()

        assert self.driver.task_group is not None
        self.driver.task_group.start_soon(guarded)
