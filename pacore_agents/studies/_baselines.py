"""Baselines and the shared trajectory pool.

- ``single``: one independent trajectory per (problem, sample); its message is the answer.
- ``self-consistency``: N independent trajectories, answer = majority vote of their extracted
  answers (``extract_answer``); ties go to the answer seen first (lowest trajectory index), and
  the vote is graded by grading the first trajectory that gave the winning answer.
- Budget matching: for a matched topology arm A, ``N_A = max(1, round(TTC_A / t))`` where
  ``TTC_A`` is A's mean effective TTC per sample and ``t`` the mean completion tokens of one
  independent trajectory (all round-1 nodes of the topology arms and all single-baseline
  trajectories of the study). So ``N_A * t ≈ TTC_A``. The self-consistency arm samples
  ``max_A N_A`` trajectories per (problem, sample) once, and SC@N_A votes over the first N_A:
  one set of trajectories serves every budget. The sizes are computed once, after every
  topology/single sample is stored, and saved in the store so a resumed study reuses them.
  ``match_on = "cost"`` matches declared cost instead: ``N_A = max(1, round(C_A / c))`` with
  ``C_A`` A's mean declared cost per sample and ``c`` one trajectory's (``_budgets``), so
  ``|N_A * c - C_A| <= c``. What a match used is saved beside the sizes (``sc_match:<arm>``).
- The trajectory pool (``trajectory_pool = true``): round-1 trajectories are generated once per
  (problem, sample) and reused as trajectory i by every arm that keeps round 1 unchanged (no
  sampling override, built-in explorer role), so arms differ only in what they change.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Protocol

import anyio

from pacore_agents._engine import (
    Completion,
    GenerationRequest,
    RequestMetadata,
    SamplingParams,
)
from pacore_agents._executor import Executor
from pacore_agents._ids import NodeId, Round
from pacore_agents._messages import Problem
from pacore_agents._priority import Priority
from pacore_agents._references import derive_seed
from pacore_agents._roles import COMPACTORS
from pacore_agents._topology import Topology
from pacore_agents._trace import NodeRecord
from pacore_agents._wrappers import RetryPolicy

from ._spec import ArmSpec
from ._store import ResultStore, SampleOutcome


class Generates(Protocol):
    """What baselines need of an engine: ``generate`` (the runner passes ``Admitted``)."""

    async def generate(self, request: GenerationRequest) -> list[Completion]: ...


class Admitted:
    """Baseline and pool requests through the executor (window, priority, retries)."""

    def __init__(self, executor: Executor, retry: RetryPolicy) -> None:
        self.executor, self.retry = executor, retry

    async def generate(self, request: GenerationRequest) -> list[Completion]:
        priority = Priority(1, 0, self.executor.new_run())
        return await self.executor.generate(request, priority=priority, retry=self.retry)


def majority_vote(answers: Sequence[str | None]) -> tuple[str | None, int | None, float]:
    """(winning answer, index of the first trajectory giving it, its share of all votes).
    ``None`` answers (nothing extracted) never win but count in the share's denominator."""
    counts = Counter(a for a in answers if a is not None)
    if not counts:
        return None, None, 0.0
    top = max(counts.values())
    for i, a in enumerate(answers):
        if a is not None and counts[a] == top:
            return a, i, top / len(answers)
    raise AssertionError("unreachable")  # pragma: no cover


def budget_matched_sizes(mean_ttc: dict[str, float], trajectory_tokens: float) -> dict[str, int]:
    """N per matched arm: ``max(1, round(TTC_arm / tokens per trajectory))``."""
    t = max(trajectory_tokens, 1e-9)
    return {arm: max(1, round(ttc / t)) for arm, ttc in mean_ttc.items()}


def ttc_budgets(outcomes: Sequence[SampleOutcome], targets: Sequence[str]) -> tuple[dict[str, float], float]:
    """(mean effective TTC per sample of each target arm, mean completion tokens of one
    independent trajectory): the inputs of a TTC match (see the module)."""
    traj = [nd.tokens for o in outcomes if o.kind in ("topology", "single") for nd in o.nodes if nd.round == 1]
    budgets = {}
    for t in targets:
        ttcs = [o.effective_ttc for o in outcomes if o.arm == t]
        budgets[t] = sum(ttcs) / max(len(ttcs), 1)
    return budgets, sum(traj) / max(len(traj), 1)


def pool_compatible(arm: ArmSpec, topology: Topology) -> bool:
    """True if the arm's round 1 is the pool's: plain explorer prompts, study sampling, and no
    policy that launches round 1 in waves or cancels its stragglers (precomputed nodes are
    never launched, so there would be nothing to stop)."""
    if arm.sampling is not None or "explorer" in arm.roles or "explorer" in topology.roles:
        return False
    policies = arm.build_policies(topology)
    if policies is not None and ((policies.width is not None and 1 in policies.width.rounds)
                                 or (policies.quorum is not None and 1 in policies.quorum.needed(topology))):
        return False
    return all(topology.role_of(n) in (None, "explorer") for n in topology.nodes(1))


class TrajectoryPool:
    """Round-1 trajectories per (problem, sample), generated on demand, stored, shared."""

    def __init__(self, store: ResultStore, engine: Generates, sampling: SamplingParams, seed: int | None) -> None:
        self.store, self.engine, self.sampling, self.seed = store, engine, sampling, seed
        #: generate at least this many trajectories when a (problem, sample) needs new ones, so
        #: the arms of a phase share one request instead of topping the pool up one by one
        self.batch = 1
        self._locks: dict[tuple[str, int], anyio.Lock] = {}

    async def get(self, problem: Problem, sample: int, count: int) -> list[Completion]:
        """The first ``count`` trajectories of (problem, sample), generating missing ones (up to
        ``max(count, batch)`` in one request)."""
        lock = self._locks.setdefault((problem.id, sample), anyio.Lock())
        async with lock:
            have = await self.store.call(self.store.pool_get, problem.id, sample)
            missing = [i for i in range(count) if i not in have]
            if missing:
                start, stop = missing[0], max(count, self.batch)
                new = await generate_trajectories(
                    self.engine, problem, self.sampling, n=stop - start, first=start,
                    seed=None if self.seed is None else derive_seed(self.seed, "pool", problem.id, sample, start),
                    tag=f"{problem.id}|pool|s{sample}")
                fresh = {start + i: c for i, c in enumerate(new)}
                await self.store.call(self.store.pool_put, problem.id, sample, fresh)
                have.update(fresh)
        return [have[i] for i in range(count)]

    def batch_for(self, arms: Sequence[ArmSpec], topologies: dict[str, Topology], sc_size: int = 0) -> int:
        """The most trajectories any arm of a phase takes from the pool."""
        sizes = [sc_size, 1 if any(a.baseline == "single" and a.sampling is None for a in arms) else 0]
        sizes += [len(topologies[a.name].nodes(1)) for a in arms
                  if a.baseline is None and pool_compatible(a, topologies[a.name])]
        return max(sizes)


async def generate_trajectories(engine: Generates, problem: Problem, sampling: SamplingParams, *,
                                n: int, first: int, seed: int | None, tag: str) -> list[Completion]:
    """``n`` independent round-1 trajectories (nodes r1.a{first}..) in one request; ``seed``
    is used unless the sampling sets one (None: no seed)."""
    request = GenerationRequest(
        messages=problem.messages, n=n,
        sampling=sampling.model_copy(update={"seed": seed}) if sampling.seed is None and seed is not None else sampling,
        metadata=RequestMetadata(problem_id=problem.id, unit=tag, round=Round(1),
                                 nodes=tuple(NodeId.of(1, first + i) for i in range(n))))
    return await engine.generate(request)


def trajectory_records(problem: Problem, completions: Sequence[Completion], compaction: str,
                       *, pooled: bool) -> list[NodeRecord]:
    """Trace records of independent trajectories (round 1, agents 0..n-1)."""
    compact = COMPACTORS[compaction]
    return [NodeRecord(id=str(NodeId.of(1, i)), round=1, agent=i, role="explorer",
                       prompt=list(problem.messages), content=c.content, reasoning=c.reasoning,
                       message=compact(c.content), finish_reason=c.finish_reason, usage=c.usage,
                       attempts=c.attempts, notes={"precomputed": True} if pooled else {})
            for i, c in enumerate(completions)]
