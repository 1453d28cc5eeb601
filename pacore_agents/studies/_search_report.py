"""The report of a search (``pacore study search``, ``pacore study search-report OUT``).

Files in ``OUT/report/``:
- ``trials.csv``: every Optuna trial: number, state, the arm it proposed and the arm whose
  result it was told (a pruned arm, or the same), whether that result came from the cache,
  its parameters (JSON), the objectives, or why it failed;
- ``configurations.csv``: every distinct evaluated arm on the search split (accuracy with its
  95% interval, mean TTC, declared cost, the objective cost, built-in, Pareto member, pruned
  edges, the arm table as JSON), then, for the arms re-run on the held-out split, their
  held-out accuracy and interval and the paired difference against the reference (the best
  built-in on the search split) with its 95% bootstrap interval over problems and, with one
  sample per problem, the exact McNemar p-value (``_stats``);
- ``pareto.png``: accuracy (95% interval) against cost, log x, every configuration, the Pareto
  front as a step line, built-ins as squares, held-out re-runs as hollow diamonds.
The search's own spend: prompt and completion tokens the engine generated for it (each
stored node once; trajectories shared through the pool once), per split.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from pacore_agents._richtext import add_text_row, text_table

from ._metrics import ArmMetrics, topology_metrics
from ._plots import _pyplot, _save
from ._report import _write_csv
from ._search import ARM, RESULT
from ._search_journal import best_builtin, open_journal, pareto_front
from ._stats import PairedComparison, paired_comparison
from ._store import ResultStore

TRIAL_COLUMNS = ("trial", "state", "arm", "result_arm", "cached", "params", "accuracy", "cost", "failure")
CONFIG_COLUMNS = ("arm", "builtin", "pareto", "reference", "accuracy", "ci_low", "ci_high", "mean_ttc",
                  "mean_cost", "cost", "pruned", "heldout_accuracy", "heldout_ci_low", "heldout_ci_high",
                  "heldout_diff", "heldout_diff_low", "heldout_diff_high", "heldout_p_value", "table")


@dataclass
class SearchReport:
    trials: list[dict[str, Any]] = field(default_factory=list)
    configurations: list[dict[str, Any]] = field(default_factory=list)
    reference: str | None = None
    spend: dict[str, dict[str, int]] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)


def _spend(store: ResultStore) -> dict[str, int]:
    prompt = completion = samples = 0
    for _, trace in store.samples():
        samples += 1
        for node in trace.get("nodes", []):
            if (node.get("notes") or {}).get("precomputed"):
                continue
            usage = node.get("usage") or {}
            prompt += int(usage.get("prompt_tokens", 0))
            completion += int(usage.get("completion_tokens", 0))
    pooled, pool_prompt, pool_completion = store.pool_usage()
    return {"samples": samples, "prompt_tokens": prompt + pool_prompt,
            "completion_tokens": completion + pool_completion, "pooled_trajectories": pooled}


def _heldout(out: Path, reference: str | None) -> tuple[dict[str, ArmMetrics], dict[str, PairedComparison],
                                                         dict[str, int] | None]:
    if not (out / "heldout" / ResultStore.DB_NAME).exists():
        return {}, {}, None
    store = ResultStore.open_readonly(out / "heldout")
    try:
        outcomes = store.outcomes()
        spend = _spend(store)
    finally:
        store.close()
    by_arm: dict[str, list[Any]] = {}
    for o in outcomes:
        by_arm.setdefault(o.arm, []).append(o)
    metrics = {arm: topology_metrics(arm, rows, rows[0].kind) for arm, rows in by_arm.items()}
    pairs = {}
    if reference in metrics:
        ref = metrics[reference]
        for arm, m in metrics.items():
            if arm != reference:
                pairs[arm] = paired_comparison(arm, m.per_sample, reference, ref.per_sample)
    return metrics, pairs, spend


def build_search_report(out_dir: str | Path, *, csv_files: bool = True, plots: bool = True,
                        console: Console | None = None) -> SearchReport:
    """Read the search in ``out_dir``; write its files; print its tables to ``console``."""
    out = Path(out_dir)
    study = open_journal(out)
    store = ResultStore.open_readonly(out / "search")
    try:
        results = [json.loads(v) for _, v in store.meta_items(RESULT)]
        tables = {k.removeprefix(ARM): json.loads(v) for k, v in store.meta_items(ARM)}
        spend = {"search": _spend(store)}
    finally:
        store.close()
    report = SearchReport(spend=spend)
    for t in study.get_trials(deepcopy=False):
        values = t.values or [None, None]
        report.trials.append({"trial": t.number, "state": t.state.name.lower(), "arm": t.user_attrs.get("arm", ""),
                              "result_arm": t.user_attrs.get("result_arm", ""),
                              "cached": t.user_attrs.get("cached", ""),
                              "params": json.dumps(t.params, sort_keys=True), "accuracy": values[0],
                              "cost": values[1], "failure": t.user_attrs.get("failure", "")})
    front = {r["arm"] for r in pareto_front(results)}
    best = best_builtin(results)
    report.reference = best["arm"] if best else None
    metrics, pairs, held_spend = _heldout(out, report.reference)
    if held_spend is not None:
        report.spend["heldout"] = held_spend
    for r in sorted(results, key=lambda r: (r["cost"], -r["accuracy"], r["arm"])):
        m, pair = metrics.get(r["arm"]), pairs.get(r["arm"])
        report.configurations.append({
            "arm": r["arm"], "builtin": r.get("builtin", False), "pareto": r["arm"] in front,
            "reference": r["arm"] == report.reference, "accuracy": r["accuracy"], "ci_low": r["ci_low"],
            "ci_high": r["ci_high"], "mean_ttc": r["mean_ttc"], "mean_cost": r.get("mean_cost"),
            "cost": r["cost"], "pruned": " ".join(r.get("pruned", [])),
            "heldout_accuracy": m.accuracy if m else None, "heldout_ci_low": m.ci_low if m else None,
            "heldout_ci_high": m.ci_high if m else None, "heldout_diff": pair.diff if pair else None,
            "heldout_diff_low": pair.diff_low if pair else None,
            "heldout_diff_high": pair.diff_high if pair else None,
            "heldout_p_value": pair.p_value if pair else None,
            "table": json.dumps(tables.get(r["arm"], {}), sort_keys=True)})
    folder = out / "report"
    if csv_files or plots:
        folder.mkdir(parents=True, exist_ok=True)
    if csv_files:
        report.files.append(_write_csv(folder / "trials.csv", TRIAL_COLUMNS,
                                       [[t[c] for c in TRIAL_COLUMNS] for t in report.trials]))
        report.files.append(_write_csv(folder / "configurations.csv", CONFIG_COLUMNS,
                                       [[c[k] for k in CONFIG_COLUMNS] for c in report.configurations]))
    if plots and report.configurations:
        report.files.append(plot_pareto(report.configurations, folder / "pareto.png"))
    if console is not None:
        for table in (pareto_table(report), heldout_table(report)):
            console.print(table)
        console.print(spend_line(report), markup=False, highlight=False)
        for f in report.files:
            console.print(f"wrote {f}", markup=False)
    return report


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.1f}%"


def _params(table_json: str) -> str:
    table = json.loads(table_json)
    table.pop("name", None)
    return json.dumps(table, sort_keys=True, separators=(",", ":"))


def pareto_table(report: SearchReport) -> Table:
    shown = [c for c in report.configurations if c["pareto"] or c["reference"]]
    table = text_table(f"search: Pareto set of {len(report.configurations)} configurations (search split; "
                       f"{len(report.trials)} trials)", caption="ref: the best built-in on the search split")
    for col in ("arm", "", "accuracy (95% CI)", "mean TTC", "cost", "arm table"):
        table.add_column(col)
    for c in shown:
        mark = ("pareto " if c["pareto"] else "") + ("ref" if c["reference"] else "")
        add_text_row(table, c["arm"], mark.strip(), f"{_pct(c['accuracy'])} [{_pct(c['ci_low'])}, "
                     f"{_pct(c['ci_high'])}]", f"{c['mean_ttc']:.1f}", f"{c['cost']:.4g}", _params(c["table"]))
    return table


def heldout_table(report: SearchReport) -> Table:
    table = text_table("held-out confirmation (other problems: the paired difference against the reference, "
                       "95% bootstrap interval over problems)")
    for col in ("arm", "search accuracy", "held-out accuracy (95% CI)", "diff vs ref (95% CI)", "p"):
        table.add_column(col)
    for c in report.configurations:
        if c["heldout_accuracy"] is None:
            continue
        diff = "ref" if c["reference"] else (
            f"{100 * c['heldout_diff']:+.1f} pts [{100 * c['heldout_diff_low']:+.1f}, "
            f"{100 * c['heldout_diff_high']:+.1f}]" if c["heldout_diff"] is not None else "—")
        p = "" if c["heldout_p_value"] is None else f"{c['heldout_p_value']:.3g}"
        add_text_row(table, c["arm"], _pct(c["accuracy"]), f"{_pct(c['heldout_accuracy'])} "
                     f"[{_pct(c['heldout_ci_low'])}, {_pct(c['heldout_ci_high'])}]", diff, p)
    return table


def spend_line(report: SearchReport) -> str:
    parts = [f"{split}: {s['completion_tokens']:,} completion + {s['prompt_tokens']:,} prompt tokens over "
             f"{s['samples']} samples" for split, s in report.spend.items()]
    return "the search's own spend (tokens the engine generated): " + "; ".join(parts)


def plot_pareto(configurations: Sequence[Mapping[str, Any]], path: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for group, marker, label in ((False, "o", "configuration"), (True, "s", "built-in")):
        rows = [c for c in configurations if bool(c["builtin"]) == group]
        if rows:
            ax.errorbar([c["cost"] for c in rows], [c["accuracy"] for c in rows],
                        yerr=[[c["accuracy"] - c["ci_low"] for c in rows], [c["ci_high"] - c["accuracy"] for c in rows]],
                        fmt=marker, ms=6, alpha=0.6, capsize=2, label=f"{label} (search split)")
    front = sorted((c for c in configurations if c["pareto"]), key=lambda c: c["cost"])
    if front:
        ax.step([c["cost"] for c in front], [c["accuracy"] for c in front], where="post", color="k",
                lw=1, label="Pareto front (search split)")
    held = [c for c in configurations if c["heldout_accuracy"] is not None]
    if held:
        ax.plot([c["cost"] for c in held], [c["heldout_accuracy"] for c in held], "D", mfc="none", ms=9,
                color="tab:red", label="held-out re-run")
    ax.set_xscale("log")
    ax.set_xlabel("cost per sample (mean effective TTC or declared cost, log scale)")
    ax.set_ylabel("accuracy (95% interval)")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    ax.set_title("search: accuracy against cost")
    return _save(plt, fig, path)
