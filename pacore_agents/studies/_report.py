"""The report of a study: rich tables in the terminal, CSV files and PNG plots.

``build_report(out_dir)`` reads the store (never the engine) and writes into
``<out_dir>/report/``: ``metrics.csv`` (one row per arm row), ``rounds.csv`` (one row per arm
row and round), ``samples.csv`` (one row per stored sample) and the plots of ``_plots``.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table

from ._metrics import ArmMetrics, compute_metrics
from ._plots import plot_accuracy_vs_ttc, plot_rounds, plot_topology
from ._store import ResultStore, SampleOutcome


@dataclass
class Report:
    metrics: list[ArmMetrics]
    files: list[Path] = field(default_factory=list)
    samples: int = 0


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.0f}%"


def _of(n: int, base: int, rate: float | None) -> str:
    return "—" if rate is None else f"{100 * rate:.0f}% ({n}/{base})"


def metrics_table(metrics: Sequence[ArmMetrics], title: str = "study") -> Table:
    """Accuracy in % with its 95% Wilson interval; emergent and right->wrong as rate (n/base)."""
    table = Table(title=title, caption="acc: % [95% Wilson]; TTC: mean effective tokens per sample; "
                  "emerg: sink right, every input wrong; R→W: sink wrong, most inputs right")
    for col in ("arm", "kind", "graded", "acc", "TTC", "emerg", "R→W", "xcheck", "t/o", "err"):
        table.add_column(col, justify="left" if col in ("arm", "kind") else "right", no_wrap=True)
    for m in metrics:
        kind = {"topology": "pacore", "self-consistency": "SC"}.get(m.kind, m.kind)
        kind += "" if m.vote_size is None else f" N={m.vote_size}"
        acc = "—" if m.accuracy is None else (
            f"{100 * m.accuracy:.1f} [{100 * (m.ci_low or 0):.0f}-{100 * (m.ci_high or 0):.0f}]")
        table.add_row(m.label, kind, f"{m.graded}/{m.samples}", acc, f"{m.mean_ttc:,.0f}",
                      _of(m.emergent_n, m.emergent_base, m.emergent), _of(m.flips_n, m.flips_base, m.flips),
                      _pct(m.cross_check), str(m.timeouts), str(m.errors))
    return table


def rounds_table(metrics: Sequence[ArmMetrics]) -> Table:
    table = Table(title="per round (tokens = mean per sample)")
    for col in ("arm", "round", "nodes", "tokens", "accuracy", "consensus", "cross-check"):
        table.add_column(col, justify="left" if col == "arm" else "right")
    for m in metrics:
        for r in m.rounds:
            table.add_row(m.label, str(r.round), str(r.nodes), f"{r.tokens:,.1f}", _pct(r.accuracy),
                          _pct(r.consensus), _pct(r.cross_check))
    return table


def _write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[object]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def write_csvs(metrics: Sequence[ArmMetrics], outcomes: Sequence[SampleOutcome], folder: Path) -> list[Path]:
    cols = ["label", "arm", "kind", "vote_size", "matched_arm", "samples", "problems", "graded", "correct",
            "timeouts", "errors", "accuracy", "ci_low", "ci_high", "mean_ttc", "emergent", "emergent_n",
            "emergent_base", "flips", "flips_n", "flips_base", "cross_check"]
    metric_rows = [[getattr(m, c) for c in cols] for m in metrics]
    round_cols = ["round", "nodes", "tokens", "accuracy", "consensus", "cross_check"]
    round_rows = [[m.label, *[getattr(r, c) for c in round_cols]] for m in metrics for r in m.rounds]
    sample_rows = [[o.arm, o.problem_id, o.sample, o.kind, o.status, o.answer, o.effective_ttc, len(o.nodes),
                    o.degraded] for o in outcomes]
    return [
        _write_csv(folder / "metrics.csv", cols, metric_rows),
        _write_csv(folder / "rounds.csv", ["label", *round_cols], round_rows),
        _write_csv(folder / "samples.csv", ["arm", "problem_id", "sample", "kind", "status", "answer",
                                            "effective_ttc", "nodes", "degraded"], sample_rows),
    ]


def _arm_order_and_sizes(store: ResultStore) -> tuple[list[str], dict[str, dict[str, int]]]:
    spec = json.loads(store.get_meta("fingerprint") or "{}")
    order = [a["name"] for a in spec.get("arms", [])]
    sizes = {}
    for arm in order:
        saved = store.get_meta(f"sc_sizes:{arm}")
        if saved is not None:
            sizes[arm] = json.loads(saved)
    return order, sizes


def build_report(out_dir: str | Path, *, csv_files: bool = True, plots: bool = True,
                 console: Console | None = None) -> Report:
    """Compute the metrics of the study in ``out_dir``, print them, write CSVs and plots."""
    out = Path(out_dir)
    store = ResultStore.open(out)
    try:
        outcomes = store.outcomes()
        order, sizes = _arm_order_and_sizes(store)
        order += sorted({o.arm for o in outcomes} - set(order))
        metrics = compute_metrics(outcomes, order, sizes)
        report = Report(metrics=metrics, samples=len(outcomes))
        folder = out / "report"
        if csv_files or plots:
            folder.mkdir(parents=True, exist_ok=True)
        if csv_files:
            report.files += write_csvs(metrics, outcomes, folder)
        if plots and metrics:
            report.files.append(plot_accuracy_vs_ttc(metrics, folder / "accuracy_vs_ttc.png"))
            report.files.append(plot_rounds(metrics, folder / "rounds.png"))
            for arm in order:
                first = next((o for o in outcomes if o.arm == arm and o.kind == "topology"), None)
                trace = store.trace_json(first.arm, first.problem_id, first.sample) if first else None
                if trace is not None:
                    safe = re.sub(r"[^A-Za-z0-9_.@+-]", "_", arm)
                    report.files.append(plot_topology(arm, trace["topology"], folder / f"topology_{safe}.png"))
    finally:
        store.close()
    if console is not None:
        console.print(metrics_table(metrics, title=f"study {out} ({report.samples} samples stored)"))
        console.print(rounds_table(metrics))
        for f in report.files:
            console.print(f"wrote {f}")
    return report
