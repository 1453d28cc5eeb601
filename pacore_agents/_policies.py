"""Stopping and quorum policies: spend compute where it pays (declared once, here).

A run's ``Policies`` (``run(..., policies=...)``, a topology spec's ``[policies]`` table, a
study arm's ``policies``) may hold:

- ``consensus`` (``ConsensusStop``): after a round whose visible messages' answers pass the
  ``rule``, the remaining rounds are skipped and the run answers from that round: the sink
  synthesises over that round's messages (``answer_from = "sink"``), or the run's answer is the
  plurality message itself (``"plurality"``: the sink is skipped too). The trace says which.
- ``width`` (``AdaptiveWidth``): a round launches its trajectories in waves of ``wave`` (node
  order) and stops launching when the answers so far pass the ``rule`` (ESC /
  Adaptive-Consistency), up to its K; the nodes never launched are ``skipped``.
- ``quorum`` (``Quorum``): the next round starts when ``q`` of a round's K messages are in; the
  stragglers are cancelled (``stragglers = "cancel"``: their tokens so far count) or left to
  finish for the record (``"finish"``: their messages are never visible to later rounds).

A ``StopRule`` is the Beta rule of Adaptive-Consistency on the top two answer counts (``beta``:
P(p1 > p2 | counts) under Beta(v1 + 1, v2 + 1) >= ``threshold``) or a share threshold
(``share``: v1 / answered >= ``threshold``), never passed on fewer than ``min_answers``
answers. Answers are compared by ``equivalence``: ``string`` (normalised strings) or ``task``
(the task's own: math-verify, the code test-outcome signature; a study supplies it, a direct
``run`` passes ``equivalence=``).

Without policies a run is exactly what it was (same prompts, seeds, results). Consensus and
adaptive width decide from complete rounds and waves, so they are deterministic given the
engine's outputs; a quorum decides by completion order (which q finish first), so it is
deterministic only as far as the engine's timing is.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ._errors import ConfigError

if TYPE_CHECKING:  # the topology carries its spec's policies: the import runs the other way
    from ._topology import Topology

RuleKind = Literal["beta", "share"]
AnswerFrom = Literal["sink", "plurality"]
StragglerMode = Literal["cancel", "finish"]
EquivalenceKind = Literal["string", "task"]


def beta_confidence(top: int, second: int) -> float:
    """P(p1 > p2) for X ~ Beta(top + 1, second + 1): P(X > 1/2), exactly, as
    P(Binomial(top + second + 1, 1/2) <= top) (integer parameters)."""
    n = top + second + 1
    return sum(math.comb(n, k) for k in range(top + 1)) / (1 << n)


class StopRule(BaseModel):
    """When answers agree enough to stop: ``beta``, Adaptive-Consistency's rule, P(p1 > p2) under
    Beta(v1 + 1, v2 + 1) on the top two answer counts; ``share``, v1 / answered."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: RuleKind = Field(default="beta", description="`beta` (Adaptive-Consistency) or `share`")
    threshold: float = Field(default=0.95, gt=0, le=1, description="the rule passes at or above it")
    min_answers: int = Field(default=2, ge=1, description="never pass on fewer answers")

    def confidence(self, counts: list[int]) -> float:
        """The rule's statistic for answer-class counts (largest first)."""
        top = counts[0] if counts else 0
        second = counts[1] if len(counts) > 1 else 0
        if self.kind == "beta":
            return beta_confidence(top, second)
        answered = sum(counts)
        return top / answered if answered else 0.0

    def passes(self, counts: list[int]) -> bool:
        return sum(counts) >= self.min_answers and self.confidence(counts) >= self.threshold


class ConsensusStop(BaseModel):
    """After a round whose messages' answers pass the rule, skip the remaining rounds."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rule: StopRule = StopRule()
    answer_from: AnswerFrom = Field(default="sink", description="`sink`: the sink synthesises over the "
                                    "round it stopped at; `plurality`: the first message of the "
                                    "plurality answer is the answer (the sink is skipped too)")
    rounds: list[int] | None = Field(default=None, description="rounds after which to check "
                                     "(default: every round before the sink's)")


class AdaptiveWidth(BaseModel):
    """Launch a round in waves (node order); stop launching when the answers so far pass the rule."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rule: StopRule = StopRule()
    wave: int = Field(ge=1, description="trajectories launched per wave")
    rounds: list[int] = Field(default=[1], description="rounds launched in waves (default: round 1)")


class Quorum(BaseModel):
    """Release the next round when q of a round's K messages are in."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    q: float | list[float] = Field(description="messages that release the next round: a count (>= 1) "
                                   "or a fraction of K (< 1); a list gives one per round, from round 1")
    stragglers: StragglerMode = Field(default="cancel", description="`cancel` (their tokens so far count) "
                                      "or `finish` (they finish for the record; never visible)")
    rounds: list[int] | None = Field(default=None, description="rounds it applies to (default: every "
                                     "round before the sink's; with a list q, its rounds)")

    @field_validator("q")
    @classmethod
    def _positive(cls, q: float | list[float]) -> float | list[float]:
        for value in q if isinstance(q, list) else [q]:
            if value <= 0 or (value > 1 and value != int(value)):
                raise ValueError(f"q = {value}: use a count (1, 2, ...) or a fraction in (0, 1)")
        return q

    def needed(self, topology: Topology) -> dict[int, int]:
        """Messages needed per round it applies to; ``ConfigError`` where it cannot apply."""
        last = topology.num_rounds
        if isinstance(self.q, list):
            per = {i + 1: v for i, v in enumerate(self.q)}
            rounds = self.rounds or sorted(per)
            if self.rounds is not None and len(self.q) != len(self.rounds):
                raise ConfigError(f"quorum: q has {len(self.q)} values for {len(self.rounds)} rounds")
            per = dict(zip(rounds, self.q, strict=True))
        else:
            per = {r: self.q for r in (self.rounds or range(1, last))}
        out: dict[int, int] = {}
        for r, value in sorted(per.items()):
            width = topology.widths[r - 1] if 1 <= r <= last else 0
            if r < 1 or r >= last:
                raise ConfigError(f"quorum on round {r}: it applies to rounds 1..{last - 1} (before the sink's)")
            count = math.ceil(value * width) if value < 1 else int(value)
            if width < 2 or count >= width or count < 1:
                raise ConfigError(f"quorum {value} on round {r} of {width} node(s) leaves no straggler: "
                                  f"use q in 1..{width - 1} on a round of at least 2 nodes")
            out[r] = count
        return out


class Policies(BaseModel):
    """A run's stopping and quorum policies (docs/policies.md); none set: a fixed-width run."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    equivalence: EquivalenceKind = Field(default="string", description="how answers are compared: "
                                         "`string` (normalised) or `task` (math-verify; code: test signature)")
    consensus: ConsensusStop | None = Field(default=None, description="consensus stop: skip the remaining rounds")
    width: AdaptiveWidth | None = Field(default=None, description="adaptive width: launch in waves")
    quorum: Quorum | None = Field(default=None, description="quorum: the next round starts at q of K")

    @property
    def empty(self) -> bool:
        return self.consensus is None and self.width is None and self.quorum is None

    def label(self) -> str:
        """A short description for tables (``-`` when empty)."""
        parts = []
        if self.consensus is not None:
            parts.append(f"consensus({self.consensus.rule.kind}>={self.consensus.rule.threshold:g}, "
                         f"{self.consensus.answer_from})")
        if self.width is not None:
            parts.append(f"width(wave {self.width.wave}, {self.width.rule.kind}>={self.width.rule.threshold:g})")
        if self.quorum is not None:
            q = self.quorum.q
            parts.append(f"quorum({'/'.join(f'{v:g}' for v in q) if isinstance(q, list) else f'{q:g}'}, "
                         f"{self.quorum.stragglers})")
        return " + ".join(parts) or "-"

    def check(self, topology: Topology) -> None:
        """``ConfigError`` if a policy cannot apply to ``topology`` (a clear line: what to fix)."""
        last = topology.num_rounds
        if self.consensus is not None:
            for r in self.consensus.rounds or []:
                if not 1 <= r < last:
                    raise ConfigError(f"consensus stop after round {r}: it checks rounds 1..{last - 1} "
                                      f"(before the sink's) of {topology.name!r}")
            if last < 2:
                raise ConfigError(f"consensus stop on {topology.name!r}: a one-round topology has nothing to skip")
        quorum = self.quorum.needed(topology) if self.quorum is not None else {}
        if self.width is not None:
            for r in self.width.rounds:
                if not 1 <= r < last:
                    raise ConfigError(f"adaptive width on round {r}: it applies to rounds 1..{last - 1} "
                                      f"(before the sink's) of {topology.name!r}")
                if topology.widths[r - 1] <= self.width.wave:
                    raise ConfigError(f"adaptive width: round {r} of {topology.name!r} has "
                                      f"{topology.widths[r - 1]} node(s), not more than one wave of "
                                      f"{self.width.wave}: use a smaller wave")
                if r in quorum:
                    raise ConfigError(f"round {r}: adaptive width and a quorum on the same round; give it one")
                inputs = {(topology.input_ids(n), topology.role_of(n)) for n in topology.nodes(r)}
                if len(inputs) > 1:
                    raise ConfigError(f"adaptive width on round {r} of {topology.name!r}: its nodes must "
                                      "read the same inputs and have one role (all-to-all rounds)")

    def consensus_rounds(self, topology: Topology) -> list[int]:
        if self.consensus is None:
            return []
        return self.consensus.rounds or list(range(1, topology.num_rounds))
