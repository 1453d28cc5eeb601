"""Budgets: declared cost per sample (what self-consistency is matched on with ``match_on =
"cost"``, and what ``cost.csv`` / ``accuracy_vs_cost.png`` put accuracy against), and what each
self-consistency arm's N was matched on (``sc_match:<arm>``, the report's lines).

Contract:
- A node's cost is its engine's declared cost (``EngineCost.of``) of its prompt + completion
  tokens (the trace's ``usage``; a node without an engine name ran on ``default``). A sample's
  cost is the sum over its nodes; a self-consistency row SC@N's over its first N trajectories.
- One independent trajectory's cost (the unit of a cost match): the mean cost, at the
  ``default`` engine's rate (baselines run there), of the round-1 trajectories without inputs
  of the topology and single arms that ran on ``default``; if none did, of all of them (their
  token counts priced at ``default``'s rate).
- The costs used are the latest run's (``costs:<time>`` in the store); a cost match saves the
  costs it used with its sizes (``sc_match:<arm>``), so a report can say when they differ.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pacore_agents._binding import DEFAULT_ENGINE

from ._engines import EngineCost
from ._metrics import ArmMetrics
from ._store import ResultStore, SampleOutcome

Trace = Mapping[str, Any]


def load_costs(store: ResultStore) -> dict[str, EngineCost]:
    """The latest run's declared costs ({} when none were declared)."""
    saved = store.meta_items("costs:")
    return {k: EngineCost.model_validate(v) for k, v in json.loads(saved[-1][1]).items()} if saved else {}


def _tokens(node: Mapping[str, Any]) -> int:
    usage = node.get("usage") or {}
    return int(usage.get("prompt_tokens", 0)) + int(usage.get("completion_tokens", 0))


def node_cost(node: Mapping[str, Any], costs: Mapping[str, EngineCost]) -> float:
    """A trace node's declared cost (see the module contract)."""
    return costs[node.get("engine") or DEFAULT_ENGINE].of(_tokens(node))


def sample_cost(trace: Trace, costs: Mapping[str, EngineCost], first: int | None = None) -> float:
    """A stored sample's cost: every node's, or the first ``first`` nodes' (SC@N)."""
    nodes = list(trace.get("nodes") or [])
    return sum(node_cost(n, costs) for n in (nodes if first is None else nodes[:first]))


def trajectory_cost(pairs: Iterable[tuple[SampleOutcome, Trace]], costs: Mapping[str, EngineCost]) -> float:
    """One independent trajectory's cost on ``default`` (see the module contract)."""
    on_default: list[int] = []
    every: list[int] = []
    for outcome, trace in pairs:
        if outcome.kind not in ("topology", "single"):
            continue
        for node in trace.get("nodes") or []:
            if node.get("round") == 1 and not node.get("inputs"):
                every.append(_tokens(node))
                if (node.get("engine") or DEFAULT_ENGINE) == DEFAULT_ENGINE:
                    on_default.append(_tokens(node))
    chosen = on_default or every
    return sum(costs[DEFAULT_ENGINE].of(t) for t in chosen) / len(chosen) if chosen else 0.0


def mean_sample_costs(pairs: Sequence[tuple[SampleOutcome, Trace]], costs: Mapping[str, EngineCost],
                      arms: Iterable[str]) -> dict[str, float]:
    """Each arm's mean cost per stored sample."""
    out = {}
    for arm in arms:
        mine = [sample_cost(t, costs) for o, t in pairs if o.arm == arm]
        out[arm] = sum(mine) / max(len(mine), 1)
    return out


def stored_pairs(store: ResultStore) -> list[tuple[SampleOutcome, Trace]]:
    """Every stored sample with its trace JSON (blocking: read in a worker thread)."""
    return [(o, store.trace_json(o.arm, o.problem_id, o.sample) or {}) for o in store.outcomes()]


def cost_rows(metrics: Sequence[ArmMetrics], pairs: Sequence[tuple[SampleOutcome, Trace]],
              costs: Mapping[str, EngineCost]) -> list[dict[str, Any]]:
    """``cost.csv``'s rows: one per metrics row, its accuracy and interval against its mean
    declared cost per sample (columns in ``_columns.COST_COLUMNS``)."""
    if not costs:
        return []
    unit = next(iter(costs.values())).unit
    rows = []
    for m in metrics:
        mine = [t for o, t in pairs if o.arm == m.arm]
        first = m.vote_size if m.kind == "self-consistency" else None
        cost = sum(sample_cost(t, costs, first) for t in mine) / max(len(mine), 1)
        rows.append({"label": m.label, "arm": m.arm, "kind": m.kind, "vote_size": m.vote_size,
                     "matched_arm": m.matched_arm, "match_on": m.match_on, "accuracy": m.accuracy,
                     "ci_low": m.ci_low, "ci_high": m.ci_high, "mean_ttc": m.mean_ttc, "mean_cost": cost,
                     "cost_unit": unit})
    return rows


def match_record(on: str, unit: float, budgets: Mapping[str, float],
                 costs: Mapping[str, EngineCost]) -> dict[str, Any]:
    """What a budget match chose N from (saved as ``sc_match:<arm>`` beside the sizes)."""
    return {"on": on, "unit": unit, "budgets": dict(budgets),
            "costs": {k: v.model_dump(exclude_none=True) for k, v in costs.items()} if on == "cost" else {}}


def match_lines(matches: Mapping[str, Mapping[str, Any]], metrics: Sequence[ArmMetrics],
                latest_costs: Mapping[str, EngineCost]) -> list[str]:
    """One line per budget-matched self-consistency arm (``matches``: its ``sc_match`` record):
    what N was matched on, and to what; a cost match whose costs differ from the latest says so."""
    lines = []
    for arm, record in matches.items():
        rows = [m for m in metrics if m.arm == arm and m.matched_arm is not None]
        if not rows:
            continue
        on = record.get("on", "ttc")
        if on == "cost":
            unit: Mapping[str, Any] = next(iter(record.get("costs", {}).values()), {})
            kind = "price" if "cost_per_1k_tokens" in unit else "FLOPs"
            what = f"matched on cost (mean declared cost per sample, {kind}; one trajectory = {record['unit']:.4g})"
            latest = {k: v.model_dump(exclude_none=True) for k, v in latest_costs.items()}
            if latest and latest != record.get("costs"):
                what += " [the costs declared then differ from the latest run's]"
        else:
            what = f"matched on effective TTC (one trajectory = {record.get('unit', 0):.4g} tokens)"
        budgets = record.get("budgets", {})
        targets = ", ".join(f"N={m.vote_size} for {m.matched_arm} ({budgets.get(m.matched_arm, 0):.4g})"
                            for m in rows)
        lines.append(f"self-consistency {arm}: {what}: {targets}")
    return lines
