"""Planning one node: its references (order, budget), its prompt and its sampling; and the
units the scheduler plans and submits.

Contract: ``Planner.plan`` is pure. It reads the APPLIED records of the node's in-neighbours
(a message becomes visible only once its node is applied) and writes nothing; the record of a
node is created when its result is applied (``_scheduler``). So a node's prompt depends only on
its inputs' final records, never on when or in which order they completed.

A merge group is the nodes of one round with the same in-neighbours and role (they become
ready together); within it, nodes whose prompts and sampling are equal form one
``LogicalRequest`` (``plans[i]`` is sample i, seeded ``seed + i``). ``NodeJob`` is the
executor's job for the samples ``first``.. of one request.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from ._config import RunConfig
from ._engine import Engine, SamplingParams
from ._ids import NodeId
from ._messages import ChatMessage, Problem
from ._references import Reference, fit_references, order_references
from ._roles import PromptContext, Role, RoleBook, default_role
from ._topology import Topology
from ._trace import NodeRecord, RoundSummary, Truncation, new_record

if TYPE_CHECKING:
    from ._binding import Lane
    from ._priority import Priority, Slots

#: tokens added per chat message by a chat template, and per reference by the synthesis template
MESSAGE_OVERHEAD = 8
REFERENCE_OVERHEAD = 8


@dataclass(slots=True)
class NodePlan:
    """What a node will send: prompt, sampling, and the references it saw (prompt order)."""

    node: NodeId
    role: Role
    sampling: SamplingParams
    prompt: tuple[ChatMessage, ...]
    inputs: tuple[str, ...] = ()
    missing_inputs: tuple[str, ...] = ()
    truncations: tuple[Truncation, ...] = ()
    dropped_inputs: tuple[str, ...] = ()

    def record(self, **outcome: Any) -> NodeRecord:
        """A fresh record of this plan with ``outcome``'s fields (already of their types)."""
        if self.dropped_inputs:
            outcome["dropped_inputs"] = list(self.dropped_inputs)
        return new_record(self.node, self.role.name, inputs=list(self.inputs),
                          missing_inputs=list(self.missing_inputs), prompt=list(self.prompt),
                          truncations=list(self.truncations), **outcome)


class Planner:
    """Builds ``NodePlan``s for one run (problem, topology, roles, config, engine budget).

    ``engine_of(role)``: the engine a role's nodes run on (several models in one graph): its
    context length and tokenizer budget those nodes' prompts. Default: ``engine`` for all."""

    def __init__(self, problem: Problem, topology: Topology, engine: Engine, config: RunConfig,
                 roles: RoleBook, *, engine_of: Callable[[Role], Engine] | None = None) -> None:
        self.problem = problem
        self.topology = topology
        self.engine = engine
        self.config = config
        self.roles = roles
        self._engine_of = engine_of
        self._sampling: dict[str, SamplingParams] = {}
        self._roles: dict[NodeId, Role] = {}
        self._budgets: dict[str, tuple[Engine, int | None]] = {}

    def budget_of(self, role: Role) -> tuple[Engine, int | None]:
        """The engine that counts ``role``'s prompts, and its context length (None: unknown)."""
        found = self._budgets.get(role.name)
        if found is None:
            engine = self.engine if self._engine_of is None else self._engine_of(role)
            found = self._budgets[role.name] = (engine, engine.info.max_context)
        return found

    def role_of(self, node: NodeId) -> Role:
        role = self._roles.get(node)
        if role is None:
            name = self.topology.role_of(node) or default_role(node, self.topology.sink)
            role = self._roles[node] = self.roles.get(name, node)
        return role

    def sampling_of(self, role: Role) -> SamplingParams:
        cached = self._sampling.get(role.name)
        if cached is None:
            cached = self._sampling[role.name] = self.config.sampling.merged(role.sampling)
        return cached

    def plan(self, node: NodeId, applied: Mapping[NodeId, NodeRecord], *,
             sources: tuple[NodeId, ...] | None = None, hidden: Collection[NodeId] = ()) -> NodePlan:
        """The node's plan from its in-neighbours' applied records (all must be applied).

        Policies (``_adaptive``): ``sources`` replaces the topology's in-neighbours (a consensus
        stop's sink reads the round it stopped at); in-neighbours in ``hidden`` (stragglers past
        a quorum) or ``skipped`` are left out of the prompt and listed as ``dropped_inputs``."""
        role = self.role_of(node)
        sampling = self.sampling_of(role)
        sources = self.topology.input_ids(node) if sources is None else sources
        dropped: tuple[str, ...] = ()
        if hidden or any(applied[s].status == "skipped" for s in sources if s in applied):
            gone = [s for s in sources if s in hidden or applied[s].status == "skipped"]
            dropped = tuple(str(s) for s in gone)
            sources = tuple(s for s in sources if s not in gone)
        if not sources:
            ctx = PromptContext(self.problem, node, self.topology.num_rounds, [])
            return NodePlan(node, role, sampling, role.build_prompt(ctx), dropped_inputs=dropped)
        refs = []
        for src in sources:
            record = applied[src]
            refs.append(Reference(src, record.content if record.ok else None, record.message))
        ordered = order_references(refs, self.config.order, seed=self.config.seed, node=node)
        missing = tuple(str(ref.source) for ref in refs if ref.raw is None)  # raw is None: not ok
        prompt, cuts = self._fit(node, role, sampling, ordered)
        return NodePlan(node, role, sampling, prompt, tuple(str(r.source) for r in ordered), missing,
                        tuple(cuts), dropped)

    # ---- budget ------------------------------------------------------------------------
    def _fit(self, node: NodeId, role: Role, sampling: SamplingParams,
             ordered: list[Reference]) -> tuple[tuple[ChatMessage, ...], list[Truncation]]:
        """Cut references to ``max_message_tokens`` and, if the context is known, until the
        prompt plus the generation reserve fits (longest first, keeping their ends)."""
        rounds = self.topology.num_rounds
        engine, context = self.budget_of(role)
        available = None if context is None else self._available_tokens(
            engine, context, role, PromptContext(self.problem, node, rounds, []), sampling, len(ordered))
        if available is None and self.config.max_message_tokens is None:
            messages = [ref.message or "" for ref in ordered]
            return role.build_prompt(PromptContext(self.problem, node, rounds, messages)), []
        extra = 0
        for _ in range(4):
            messages, cuts = fit_references(
                ordered,
                count=engine.count_tokens,
                truncate=engine.truncate_tokens,
                max_message_tokens=self.config.max_message_tokens,
                available_tokens=None if available is None else available - extra,
            )
            prompt = role.build_prompt(PromptContext(self.problem, node, rounds, messages))
            over = 0 if context is None else self._overflow(engine, context, prompt, sampling)
            if over <= 0 or not ordered:
                break
            extra += over
        return prompt, cuts

    def _reserve(self, sampling: SamplingParams, context: int) -> int:
        if self.config.context_reserve_tokens is not None:
            return self.config.context_reserve_tokens
        return min(sampling.max_tokens or context // 4, context // 2)

    @staticmethod
    def _prompt_tokens(engine: Engine, prompt: tuple[ChatMessage, ...]) -> int:
        return sum(engine.count_tokens(m.content) + MESSAGE_OVERHEAD for m in prompt)

    def _available_tokens(self, engine: Engine, context: int, role: Role, ctx: PromptContext,
                          sampling: SamplingParams, n_refs: int) -> int:
        base = self._prompt_tokens(engine, role.build_prompt(ctx))
        return context - self._reserve(sampling, context) - base - n_refs * REFERENCE_OVERHEAD

    def _overflow(self, engine: Engine, context: int, prompt: tuple[ChatMessage, ...],
                  sampling: SamplingParams) -> int:
        return self._prompt_tokens(engine, prompt) + self._reserve(sampling, context) - context


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
