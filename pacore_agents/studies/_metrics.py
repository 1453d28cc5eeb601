"""The paper's metrics per arm, from stored ``SampleOutcome``s. Definitions:

- ``accuracy``: correct samples / graded samples (a sample is graded when math-verify reached
  a verdict; grader timeouts and errors are counted apart, not as wrong). ``ci_low``/
  ``ci_high``: the 95% **Wilson score** interval over the graded samples (samples of one
  problem are treated as independent, so the interval is optimistic when samples > 1).
- ``mean_ttc``: mean effective TTC per sample (sum of completion tokens over all nodes).
- per round r: ``tokens`` = mean over samples of the round's completion tokens;
  ``accuracy`` = correct / graded messages of round r (every node's message is graded);
  ``consensus`` = mean over samples of the share of round r's nodes whose extracted answer is
  the round's majority answer (nodes with no answer count in the denominator only);
  ``cross_check`` = share of round r's nodes (with inputs) whose trajectory mentions a
  reference (``CROSS_REF_RE``).
- ``emergent``: among samples whose sink has >= 1 input and EVERY input message was graded
  wrong, the share whose sink is correct (``emergent_n`` of ``emergent_base``).
- ``flips`` (right-to-wrong): among samples where a strict majority of the sink's inputs
  were graded correct (more than half of ALL its inputs), the share whose sink is graded
  wrong (``flips_n`` of ``flips_base``).
- A self-consistency arm gives one row per vote size N (SC@N over its first N trajectories,
  see ``_baselines``); its only round is round 1; emergent and flips do not apply.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from pydantic import BaseModel

from ._baselines import majority_vote
from ._store import NodeOutcome, SampleOutcome

Z95 = 1.959963984540054


def wilson_interval(correct: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion; (0, 1) for n = 0."""
    if n == 0:
        return 0.0, 1.0
    p = correct / n
    denom = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, center - half), min(1.0, center + half)


class RoundMetrics(BaseModel):
    round: int
    nodes: int
    tokens: float
    accuracy: float | None
    consensus: float
    cross_check: float | None


class ArmMetrics(BaseModel):
    label: str
    arm: str
    kind: str
    vote_size: int | None = None
    matched_arm: str | None = None
    samples: int
    problems: int
    graded: int
    correct: int
    timeouts: int
    errors: int
    accuracy: float | None
    ci_low: float | None
    ci_high: float | None
    mean_ttc: float
    rounds: list[RoundMetrics]
    emergent: float | None = None
    emergent_n: int = 0
    emergent_base: int = 0
    flips: float | None = None
    flips_n: int = 0
    flips_base: int = 0
    cross_check: float | None = None


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def _round_metrics(samples: Sequence[Sequence[NodeOutcome]]) -> list[RoundMetrics]:
    rounds = sorted({nd.round for nodes in samples for nd in nodes})
    out = []
    for r in rounds:
        per_sample = [[nd for nd in nodes if nd.round == r] for nodes in samples]
        flat = [nd for nodes in per_sample for nd in nodes]
        graded = [nd for nd in flat if nd.status in ("correct", "wrong")]
        with_inputs = [nd for nd in flat if nd.inputs]
        consensus = [majority_vote([nd.answer for nd in nodes])[2] for nodes in per_sample if nodes]
        out.append(RoundMetrics(
            round=r, nodes=len(flat),
            tokens=sum(nd.tokens for nd in flat) / max(len(samples), 1),
            accuracy=_ratio(sum(nd.status == "correct" for nd in graded), len(graded)),
            consensus=sum(consensus) / max(len(consensus), 1),
            cross_check=_ratio(sum(nd.cross_refs for nd in with_inputs), len(with_inputs))))
    return out


def _base(label: str, arm: str, kind: str, statuses: Sequence[str], ttcs: Sequence[int],
          problems: int, nodes: Sequence[Sequence[NodeOutcome]]) -> ArmMetrics:
    graded = sum(s in ("correct", "wrong") for s in statuses)
    correct = sum(s == "correct" for s in statuses)
    lo, hi = wilson_interval(correct, graded) if graded else (None, None)
    with_inputs = [nd for ns in nodes for nd in ns if nd.inputs]
    return ArmMetrics(
        label=label, arm=arm, kind=kind, samples=len(statuses), problems=problems, graded=graded,
        correct=correct, timeouts=sum(s == "timeout" for s in statuses),
        errors=sum(s in ("error", "failed") for s in statuses), accuracy=_ratio(correct, graded),
        ci_low=lo, ci_high=hi, mean_ttc=sum(ttcs) / max(len(ttcs), 1), rounds=_round_metrics(nodes),
        cross_check=_ratio(sum(nd.cross_refs for nd in with_inputs), len(with_inputs)))


def topology_metrics(arm: str, outcomes: Sequence[SampleOutcome], kind: str = "topology") -> ArmMetrics:
    """Metrics of a topology (or single) arm."""
    m = _base(arm, arm, kind, [o.status for o in outcomes], [o.effective_ttc for o in outcomes],
              len({o.problem_id for o in outcomes}), [o.nodes for o in outcomes])
    for o in outcomes:
        if o.sink is None:
            continue
        by_id = {nd.id: nd for nd in o.nodes}
        sink = by_id[o.sink]
        inputs = [by_id[i] for i in sink.inputs if i in by_id]
        if inputs and all(nd.status == "wrong" for nd in inputs):
            m.emergent_base += 1
            m.emergent_n += sink.status == "correct"
        if inputs and sum(nd.status == "correct" for nd in inputs) * 2 > len(inputs):
            m.flips_base += 1
            m.flips_n += sink.status == "wrong"
    m.emergent, m.flips = _ratio(m.emergent_n, m.emergent_base), _ratio(m.flips_n, m.flips_base)
    return m


def self_consistency_metrics(arm: str, outcomes: Sequence[SampleOutcome], size: int,
                             label: str, matched: str | None) -> ArmMetrics:
    """SC@``size``: majority vote over each sample's first ``size`` trajectories."""
    statuses, ttcs, nodes = [], [], []
    for o in outcomes:
        first = o.nodes[:size]
        _, rep, _ = majority_vote([nd.answer for nd in first])
        statuses.append(first[rep].status if rep is not None else "wrong")
        ttcs.append(sum(nd.tokens for nd in first))
        nodes.append(first)
    m = _base(label, arm, "self-consistency", statuses, ttcs, len({o.problem_id for o in outcomes}), nodes)
    m.vote_size, m.matched_arm = size, matched
    return m


def compute_metrics(outcomes: Sequence[SampleOutcome], arm_order: Sequence[str],
                    sc_sizes: Mapping[str, Mapping[str, int]]) -> list[ArmMetrics]:
    """One ``ArmMetrics`` per arm in ``arm_order`` (SC arms: one per vote size)."""
    out: list[ArmMetrics] = []
    for arm in arm_order:
        mine = [o for o in outcomes if o.arm == arm]
        if not mine:
            continue
        kind = mine[0].kind
        if kind != "self-consistency":
            out.append(topology_metrics(arm, mine, kind))
            continue
        sizes = sc_sizes.get(arm) or {f"n={len(mine[0].nodes)}": len(mine[0].nodes)}
        for target, size in sizes.items():
            matched = None if target.startswith("n=") else target
            label = f"{arm}@{target}" if matched else f"{arm}@{size}"
            out.append(self_consistency_metrics(arm, mine, size, label, matched))
    return out
