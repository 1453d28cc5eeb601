"""What a study's policies did and saved: per-arm columns and the paired comparison with a twin.

Contract:
- ``policy_counts(trace)`` (stored per sample in ``SampleOutcome.policy``): 1 per policy that
  fired (``consensus``, ``width``, ``quorum``), ``skipped`` nodes never launched, stragglers
  ``cancelled`` and the ``cancelled_tokens`` they had generated (already in the sample's
  effective TTC), ``rounds_skipped``.
- ``policy_rows``: one row per topology arm with policies, or with a ``twin``: the share of
  samples where each policy fired, nodes skipped and stragglers cancelled per sample, mean
  effective TTC; against its twin (``ArmSpec.twin``, a fixed-width arm on the same problems and
  samples) the tokens saved, 1 - sum(TTC) / sum(twin TTC) over the (problem, sample) pairs both
  hold, with a 95% bootstrap interval over problems, and the paired accuracy difference
  (``_stats.paired_comparison``: its interval should include 0 for a saving that costs nothing).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel
from rich.table import Table

from pacore_agents._policies import Policies
from pacore_agents._richtext import add_text_row, text_table
from pacore_agents._trace import RunTrace

from ._metrics import ArmMetrics
from ._stats import BOOTSTRAP_RESAMPLES, paired_comparison
from ._store import SampleOutcome

POLICY_NAMES = ("consensus", "width", "quorum")


def policy_counts(trace: RunTrace) -> dict[str, int]:
    """The per-sample counts of what the trace's policies did (module contract)."""
    out: dict[str, int] = {}
    for event in trace.policy_events:
        out[event.policy] = 1
        for key, value in (("skipped", len(event.skipped)), ("cancelled", len(event.cancelled)),
                           ("cancelled_tokens", event.cancelled_tokens),
                           ("rounds_skipped", len(event.rounds_skipped))):
            if value:
                out[key] = out.get(key, 0) + value
    return out


class PolicyRow(BaseModel):
    arm: str
    policies: str
    samples: int
    fired: dict[str, float]
    skipped: float
    cancelled: float
    cancelled_tokens: float
    mean_ttc: float
    twin: str | None = None
    pairs: int = 0
    twin_ttc: float | None = None
    saved: float | None = None
    saved_low: float | None = None
    saved_high: float | None = None
    acc_diff: float | None = None
    acc_low: float | None = None
    acc_high: float | None = None


def _saving(mine: Mapping[tuple[str, int], int], twin: Mapping[tuple[str, int], int],
            seed: int = 0) -> tuple[int, float | None, float | None, float | None]:
    """(pairs, saving, low, high): 1 - sum(mine) / sum(twin) over shared keys, bootstrap by problem."""
    keys = sorted(set(mine) & set(twin))
    if not keys:
        return 0, None, None, None
    problems = sorted({p for p, _ in keys})
    a = np.array([sum(mine[k] for k in keys if k[0] == p) for p in problems], dtype=float)
    b = np.array([sum(twin[k] for k in keys if k[0] == p) for p in problems], dtype=float)
    if b.sum() <= 0:
        return len(keys), None, None, None
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(problems), size=(BOOTSTRAP_RESAMPLES, len(problems)))
    boot = 1 - a[idx].sum(axis=1) / np.maximum(b[idx].sum(axis=1), 1e-9)
    lo, hi = np.quantile(boot, [0.025, 0.975])
    return len(keys), float(1 - a.sum() / b.sum()), float(lo), float(hi)


def policy_rows(metrics: Sequence[ArmMetrics], outcomes: Sequence[SampleOutcome],
                arm_tables: Sequence[Mapping[str, Any]]) -> list[PolicyRow]:
    """The rows of the policy table (module contract), in arm order."""
    specs = {str(a.get("name")): a for a in arm_tables}
    by_arm: dict[str, list[SampleOutcome]] = {}
    for o in outcomes:
        by_arm.setdefault(o.arm, []).append(o)
    rows = []
    for m in metrics:
        spec = specs.get(m.arm, {})
        mine = by_arm.get(m.arm, [])
        if m.kind != "topology" or not mine or not (spec.get("policies") or spec.get("twin")):
            continue
        label = Policies.model_validate(spec["policies"]).label() if spec.get("policies") else "(topology's)"
        n = len(mine)
        row = PolicyRow(
            arm=m.arm, policies=label, samples=n, mean_ttc=m.mean_ttc,
            fired={p: sum(o.policy.get(p, 0) for o in mine) / n for p in POLICY_NAMES},
            skipped=sum(o.policy.get("skipped", 0) for o in mine) / n,
            cancelled=sum(o.policy.get("cancelled", 0) for o in mine) / n,
            cancelled_tokens=sum(o.policy.get("cancelled_tokens", 0) for o in mine) / n)
        twin = spec.get("twin")
        other = next((t for t in metrics if t.arm == twin and t.kind == "topology"), None)
        if twin is not None and other is not None:
            theirs = by_arm.get(str(twin), [])
            row.twin, row.twin_ttc = str(twin), other.mean_ttc
            row.pairs, row.saved, row.saved_low, row.saved_high = _saving(
                {(o.problem_id, o.sample): o.effective_ttc for o in mine},
                {(o.problem_id, o.sample): o.effective_ttc for o in theirs})
            pair = paired_comparison(m.label, m.per_sample, other.label, other.per_sample)
            row.acc_diff, row.acc_low, row.acc_high = pair.diff, pair.diff_low, pair.diff_high
        rows.append(row)
    return rows


def _pct(x: float | None, sign: bool = False) -> str:
    return "—" if x is None else (f"{100 * x:+.1f}" if sign else f"{100 * x:.1f}")


def policy_table(rows: Sequence[PolicyRow]) -> Table:
    table = text_table(title="policies (what fired, what it saved; against the fixed-width twin, paired)",
                       caption="fired: % of samples; skipped/cancelled: nodes per sample (cancelled tokens "
                       "count in TTC); saved: 1 - TTC/twin TTC [95% bootstrap over problems]; "
                       "acc diff: points, arm - twin [95% paired bootstrap]")
    cols = ("arm", "policies", "consensus", "width", "quorum", "skipped", "cancelled", "TTC", "twin",
            "twin TTC", "saved % [95%]", "acc diff [95%]")
    for col in cols:
        table.add_column(col, justify="left" if col in ("arm", "policies", "twin") else "right")
    for r in rows:
        saved = "—" if r.saved is None else f"{_pct(r.saved)} [{_pct(r.saved_low)}, {_pct(r.saved_high)}]"
        acc = "—" if r.acc_diff is None else (
            f"{_pct(r.acc_diff, True)} [{_pct(r.acc_low, True)}, {_pct(r.acc_high, True)}]")
        add_text_row(table, r.arm, r.policies, *(f"{100 * r.fired[p]:.0f}" for p in POLICY_NAMES),
                     f"{r.skipped:.1f}", f"{r.cancelled:.1f}", f"{r.mean_ttc:,.0f}", r.twin or "—",
                     "—" if r.twin_ttc is None else f"{r.twin_ttc:,.0f}", saved, acc)
    return table
