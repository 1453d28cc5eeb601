"""The paper's metrics per arm, from stored ``SampleOutcome``s. Definitions:

- ``accuracy``: correct samples / graded samples (a sample is graded when math-verify reached
  a verdict; grader timeouts and errors are counted apart, not as wrong). ``ci_low``/
  ``ci_high``: a 95% interval; with one graded sample per problem the **Wilson score**
  interval, with several the Wilson interval at the effective sample size of samples
  clustered by problem (``ci_method``, see ``_stats.clustered_interval``).
- ``mean_ttc``: mean effective TTC per sample (sum of completion tokens over all nodes).
- per round r: ``tokens`` = mean over samples of the round's completion tokens (a quorum's
  cancelled stragglers' partial tokens included); ``skipped`` = nodes a policy never launched:
  they are not in ``nodes`` nor in any denominator (shown, not hidden); ``failed`` = launched
  nodes that sent no message (engine failure, cancelled; ``cancelled`` of them by a quorum):
  they are left out of every per-round denominator below;
  ``accuracy`` = correct / graded messages of round r (every node's message is graded);
  ``consensus`` = mean over samples (with >= 1 message in round r) of the share of round r's
  messages whose extracted answer is the round's majority answer (messages with no answer
  count in the denominator only);
  ``cross_check`` = share of round r's messages (of nodes with inputs) whose trajectory
  mentions a reference (``CROSS_REF_RE``); the arm's ``cross_check`` is the same over all rounds.
- ``emergent``: among samples whose sink has >= 1 input and EVERY input message was graded
  wrong, the share whose sink is correct (``emergent_n`` of ``emergent_base``).
- ``flips`` (right-to-wrong): among samples where a strict majority of the sink's inputs
  were graded correct (more than half of ALL its inputs), the share whose sink is graded
  wrong (``flips_n`` of ``flips_base``).
- Code studies (nodes carry per-test outcomes): ``pass_rate`` = mean over graded samples of the
  final program's share of tests passed (the paper's code reward; the final program is the
  sink's, the single trajectory's, or the vote's representative); ``pass_at`` = the unbiased
  pass@k over each problem's graded samples, averaged over problems, for k = 1, 2, 4, ... up to
  the fewest samples any problem has. A self-consistency vote groups programs by their output
  signature on the tests (what they printed or returned), never by the expected outputs.
- A self-consistency arm gives one row per vote size N (SC@N over its first N trajectories,
  see ``_baselines``); its only round is round 1; emergent and flips do not apply. A row
  matched to an arm says what it was matched on (``match_on``: ``ttc`` or ``cost``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pydantic import BaseModel, Field

from ._baselines import majority_vote
from ._stats import clustered_interval, mean_pass_at_k
from ._store import NodeOutcome, SampleOutcome


class RoundMetrics(BaseModel):
    round: int
    nodes: int
    failed: int = 0
    skipped: int = 0
    cancelled: int = 0
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
    match_on: str | None = None
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
    ci_method: str = "wilson"
    pass_rate: float | None = None
    pass_at: dict[str, float] = Field(default_factory=dict)
    #: (problem id, sample, status) of every sample, for the paired statistics (not in CSVs)
    per_sample: list[tuple[str, int, str]] = Field(default_factory=list, exclude=True, repr=False)


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def _round_metrics(samples: Sequence[Sequence[NodeOutcome]]) -> list[RoundMetrics]:
    rounds = sorted({nd.round for nodes in samples for nd in nodes})
    out = []
    for r in rounds:
        per_sample = [[nd for nd in nodes if nd.round == r and nd.status != "skipped"] for nodes in samples]
        skipped = sum(nd.round == r and nd.status == "skipped" for nodes in samples for nd in nodes)
        flat = [nd for nodes in per_sample for nd in nodes]
        sent = [[nd for nd in nodes if nd.status not in ("failed", "cancelled")] for nodes in per_sample]
        graded = [nd for nd in flat if nd.status in ("correct", "wrong")]
        with_inputs = [nd for nodes in sent for nd in nodes if nd.inputs]
        consensus = [majority_vote([nd.answer for nd in nodes])[2] for nodes in sent if nodes]
        out.append(RoundMetrics(
            round=r, nodes=len(flat), failed=len(flat) - sum(map(len, sent)), skipped=skipped,
            cancelled=sum(nd.status == "cancelled" for nd in flat),
            tokens=sum(nd.tokens for nd in flat) / max(len(samples), 1),
            accuracy=_ratio(sum(nd.status == "correct" for nd in graded), len(graded)),
            consensus=sum(consensus) / max(len(consensus), 1),
            cross_check=_ratio(sum(nd.cross_refs for nd in with_inputs), len(with_inputs))))
    return out


def _base(label: str, arm: str, kind: str, keyed: Sequence[tuple[str, int, str]], ttcs: Sequence[int],
          nodes: Sequence[Sequence[NodeOutcome]], final: Sequence[NodeOutcome | None] = ()) -> ArmMetrics:
    statuses = [s for _, _, s in keyed]
    problems = len({pid for pid, _, _ in keyed})
    graded = sum(s in ("correct", "wrong") for s in statuses)
    correct = sum(s == "correct" for s in statuses)
    by_problem: dict[str, list[bool]] = {}
    for pid, _, s in keyed:
        if s in ("correct", "wrong"):
            by_problem.setdefault(pid, []).append(s == "correct")
    lo, hi, method = clustered_interval(by_problem) if graded else (None, None, "wilson")
    with_inputs = [nd for ns in nodes for nd in ns if nd.inputs and nd.status not in ("failed", "skipped", "cancelled")]
    return ArmMetrics(
        label=label, arm=arm, kind=kind, samples=len(statuses), problems=problems, graded=graded,
        correct=correct, timeouts=sum(s == "timeout" for s in statuses),
        errors=sum(s in ("error", "failed") for s in statuses), accuracy=_ratio(correct, graded),
        ci_low=lo, ci_high=hi, ci_method=method, per_sample=list(keyed),
        mean_ttc=sum(ttcs) / max(len(ttcs), 1), rounds=_round_metrics(nodes),
        cross_check=_ratio(sum(nd.cross_refs for nd in with_inputs), len(with_inputs)),
        pass_rate=_pass_rate(keyed, final), pass_at=mean_pass_at_k(by_problem) if _is_code(final) else {})


def _is_code(final: Sequence[NodeOutcome | None]) -> bool:
    return any(nd is not None and nd.pass_rate is not None for nd in final)


def _pass_rate(keyed: Sequence[tuple[str, int, str]], final: Sequence[NodeOutcome | None]) -> float | None:
    """Mean share of tests passed by the final programs of graded samples (code grading)."""
    if not _is_code(final):
        return None
    rates = [(nd.pass_rate or 0.0) if nd is not None else 0.0  # a vote with no program: 0
             for (_, _, s), nd in zip(keyed, final, strict=True) if s in ("correct", "wrong")]
    return sum(rates) / len(rates) if rates else None


def _final_node(o: SampleOutcome) -> NodeOutcome | None:
    final = o.answered_by or o.sink
    if final is not None:
        return next((nd for nd in o.nodes if nd.id == final), None)
    return o.nodes[0] if o.nodes else None


class SinkFlags(BaseModel):
    """One sample's part in ``emergent`` and ``flips`` (see the module): in each base, and
    counted (the sink right with every input wrong; wrong with most inputs right)."""

    emergent_base: bool = False
    emergent: bool = False
    flip_base: bool = False
    flip: bool = False


def sink_flags(o: SampleOutcome) -> SinkFlags:
    """The ``SinkFlags`` of one sample (all False without a sink or inputs)."""
    if o.sink is None or o.answered_by is not None:  # no sink synthesised the answer
        return SinkFlags()
    by_id = {nd.id: nd for nd in o.nodes}
    sink = by_id.get(o.sink)
    inputs = [by_id[i] for i in sink.inputs if i in by_id] if sink is not None else []
    if sink is None or not inputs:
        return SinkFlags()
    emergent_base = all(nd.status == "wrong" for nd in inputs)
    flip_base = sum(nd.status == "correct" for nd in inputs) * 2 > len(inputs)
    return SinkFlags(emergent_base=emergent_base, emergent=emergent_base and sink.status == "correct",
                     flip_base=flip_base, flip=flip_base and sink.status == "wrong")


def topology_metrics(arm: str, outcomes: Sequence[SampleOutcome], kind: str = "topology") -> ArmMetrics:
    """Metrics of a topology (or single) arm."""
    m = _base(arm, arm, kind, [(o.problem_id, o.sample, o.status) for o in outcomes],
              [o.effective_ttc for o in outcomes], [o.nodes for o in outcomes],
              [_final_node(o) for o in outcomes])
    for o in outcomes:
        flags = sink_flags(o)
        m.emergent_base += flags.emergent_base
        m.emergent_n += flags.emergent
        m.flips_base += flags.flip_base
        m.flips_n += flags.flip
    m.emergent, m.flips = _ratio(m.emergent_n, m.emergent_base), _ratio(m.flips_n, m.flips_base)
    return m


def self_consistency_metrics(arm: str, outcomes: Sequence[SampleOutcome], size: int,
                             label: str, matched: str | None) -> ArmMetrics:
    """SC@``size``: majority vote over each sample's first ``size`` trajectories."""
    keyed, ttcs, nodes, final = [], [], [], []
    for o in outcomes:
        first = o.nodes[:size]
        _, rep, _ = majority_vote([nd.answer for nd in first])
        keyed.append((o.problem_id, o.sample, first[rep].status if rep is not None else "wrong"))
        ttcs.append(sum(nd.tokens for nd in first))
        nodes.append(first)
        final.append(first[rep] if rep is not None else None)
    m = _base(label, arm, "self-consistency", keyed, ttcs, nodes, final)
    m.vote_size, m.matched_arm = size, matched
    return m


def compute_metrics(outcomes: Sequence[SampleOutcome], arm_order: Sequence[str],
                    sc_sizes: Mapping[str, Mapping[str, int]],
                    match_on: Mapping[str, str] | None = None) -> list[ArmMetrics]:
    """One ``ArmMetrics`` per arm in ``arm_order`` (SC arms: one per vote size); ``match_on``:
    per SC arm, what its matched sizes were matched on (default ``ttc``)."""
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
            row = self_consistency_metrics(arm, mine, size, label, matched)
            row.match_on = (match_on or {}).get(arm, "ttc") if matched else None
            out.append(row)
    return out
