"""The report of a study: rich tables in the terminal, CSV files and PNG plots.

``build_report(out_dir)`` reads the store (never the engine) and writes into
``<out_dir>/report/`` the CSV files of ``_columns.CSV_FILES`` (metrics, rounds, samples,
paired comparisons of every two rows, each topology arm's effective roles) and the plots of
``_plots`` (the scaling plot when the study has sweeps; accuracy against declared cost when
the engines declare costs). The terminal shows the metrics, what each self-consistency arm
was budget-matched on (effective TTC or declared cost), the rounds, the effective roles, and
the paired comparisons of each topology arm against the single baseline and its
budget-matched self-consistency.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from pacore_agents._errors import ConfigError
from pacore_agents._richtext import add_text_row, text_table

from ._budgets import cost_rows, load_costs, match_lines
from ._columns import (
    COST_COLUMNS,
    ENGINE_TOKEN_COLUMNS,
    METRICS_COLUMNS,
    PAIR_COLUMNS,
    POLICY_COLUMNS,
    ROLE_COLUMNS,
    ROUND_COLUMNS,
    SAMPLE_COLUMNS,
)
from ._engine_figures import (
    engine_table,
    load_engine_figures,
    plot_sequences_in_flight,
    write_engine_csv,
)
from ._engines import EngineCost, engine_token_rows
from ._metrics import ArmMetrics, compute_metrics
from ._plots import (
    plot_accuracy_vs_cost,
    plot_accuracy_vs_ttc,
    plot_rounds,
    plot_scaling,
    plot_topology,
)
from ._policy_report import PolicyRow, policy_rows, policy_table
from ._spec import ArmSpec, role_summary
from ._stats import PairedComparison, paired_comparison
from ._store import ResultStore, SampleOutcome


@dataclass
class Report:
    metrics: list[ArmMetrics]
    files: list[Path] = field(default_factory=list)
    samples: int = 0
    #: every pair of metrics rows (a before b in row order) sharing graded problems
    pairs: list[PairedComparison] = field(default_factory=list)
    #: arm -> role -> ``role_summary`` (topology arms whose spec could be rebuilt)
    roles: dict[str, dict[str, dict[str, str]]] = field(default_factory=dict)
    #: ``engine_tokens.csv``'s rows: tokens (and declared cost) per arm, engine and role
    engine_tokens: list[dict[str, Any]] = field(default_factory=list)
    #: ``cost.csv``'s rows (engines that declare costs only): one per metrics row
    costs: list[dict[str, Any]] = field(default_factory=list)
    #: the latest run's declared costs; each matched SC arm's ``sc_match`` record
    latest_costs: dict[str, EngineCost] = field(default_factory=dict)
    matches: dict[str, Any] = field(default_factory=dict)
    #: code grading figures of each ``pacore study run`` (tests, time, tests/s, sandbox, mode)
    grading: list[dict[str, Any]] = field(default_factory=list)
    #: per arm with policies or a twin: what fired, what it saved (``_policy_report``)
    policies: list[PolicyRow] = field(default_factory=list)


def grading_lines(grading: Sequence[dict[str, Any]]) -> list[str]:
    """One line per run that graded code: tests executed, time and throughput; a run without
    a sandbox says so in capitals."""
    out = []
    for g in grading:
        rate = g.get("tests_per_second")
        line = (f"code grading ({g.get('mode')} mode, sandbox {g.get('sandbox')}, {g.get('workers')} at once): "
                f"{g.get('tests')} tests of {g.get('samples')} programs in {g.get('span_seconds')} s"
                + (f", {rate} tests/s" if rate is not None else ""))
        if g.get("sandbox") == "none":
            line += " -- WARNING: NO SANDBOX, model-written programs ran unisolated"
        out.append(line)
    return out


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.0f}%"


def _of(n: int, base: int, rate: float | None) -> str:
    return "—" if rate is None else f"{100 * rate:.0f}% ({n}/{base})"


def metrics_table(metrics: Sequence[ArmMetrics], title: str = "study") -> Table:
    """Accuracy in % with its 95% interval; emergent and right->wrong as rate (n/base)."""
    clustered = any(m.ci_method != "wilson" for m in metrics)
    table = text_table(title=title, caption="acc: % [95% " + ("Wilson, clustered by problem" if clustered else "Wilson")
                  + "]; TTC: mean effective tokens per sample; emerg: sink right, every input wrong; "
                  "R→W: sink wrong, most inputs right")
    code = any(m.pass_rate is not None for m in metrics)
    cols = ["arm", "kind", "graded", "acc", "TTC", "emerg", "R→W", "xcheck", "t/o", "err"]
    if code:
        cols[4:4] = ["tests", "pass@k"]
        table.caption = str(table.caption) + "; tests: mean share of tests passed; pass@k: unbiased, mean over problems"
    for col in cols:
        table.add_column(col, justify="left" if col in ("arm", "kind") else "right", no_wrap=True)
    for m in metrics:
        kind = {"topology": "pacore", "self-consistency": "SC"}.get(m.kind, m.kind)
        kind += "" if m.vote_size is None else f" N={m.vote_size}"
        acc = "—" if m.accuracy is None else (
            f"{100 * m.accuracy:.1f} [{100 * (m.ci_low or 0):.0f}-{100 * (m.ci_high or 0):.0f}]")
        cells = [m.label, kind, f"{m.graded}/{m.samples}", acc, f"{m.mean_ttc:,.0f}",
                 _of(m.emergent_n, m.emergent_base, m.emergent), _of(m.flips_n, m.flips_base, m.flips),
                 _pct(m.cross_check), str(m.timeouts), str(m.errors)]
        if code:
            cells[4:4] = [_pct(m.pass_rate), " ".join(f"{k}={100 * v:.0f}" for k, v in m.pass_at.items()) or "—"]
        add_text_row(table, *cells)
    return table


def key_pairs(metrics: Sequence[ArmMetrics], pairs: Sequence[PairedComparison]) -> list[PairedComparison]:
    """Each topology arm against every single row and against its budget-matched SC rows."""
    by = {(p.a, p.b): p for p in pairs} | {(p.b, p.a): _swap(p) for p in pairs}
    out = []
    for t in (m for m in metrics if m.kind == "topology"):
        for other in metrics:
            wanted = other.kind == "single" or (other.kind == "self-consistency" and other.matched_arm == t.arm)
            if wanted and (t.label, other.label) in by:
                out.append(by[(t.label, other.label)])
    return out


def _swap(p: PairedComparison) -> PairedComparison:
    flip = None if p.diff is None else -p.diff
    return p.model_copy(update={"a": p.b, "b": p.a, "acc_a": p.acc_b, "acc_b": p.acc_a, "diff": flip,
                                "diff_low": None if p.diff_high is None else -p.diff_high,
                                "diff_high": None if p.diff_low is None else -p.diff_low,
                                "a_only": p.b_only, "b_only": p.a_only})


def pairs_table(pairs: Sequence[PairedComparison]) -> Table:
    table = text_table(title="paired comparisons (same problems)",
                  caption="diff: accuracy points, A - B, [95% paired bootstrap over problems]; "
                  "p: exact McNemar (one sample per problem)")
    for col in ("A", "B", "problems", "acc A", "acc B", "diff [95%]", "A only", "B only", "p"):
        table.add_column(col, justify="left" if col in ("A", "B") else "right", no_wrap=True)
    for p in pairs:
        if p.diff is None:
            continue
        add_text_row(table, p.a, p.b, str(p.problems), _pct(p.acc_a), _pct(p.acc_b),
                      f"{100 * p.diff:+.1f} [{100 * (p.diff_low or 0):+.0f}, {100 * (p.diff_high or 0):+.0f}]",
                      "—" if p.a_only is None else str(p.a_only), "—" if p.b_only is None else str(p.b_only),
                      "—" if p.p_value is None else f"{p.p_value:.3g}")
    return table


def roles_table(roles: dict[str, dict[str, dict[str, str]]]) -> Table:
    table = text_table(title="effective roles per topology arm")
    keys = ("template", "system", "compaction", "sampling", "engine")
    for col in ("arm", "role", *keys):
        table.add_column(col)
    for arm, by_role in roles.items():
        for role, summary in by_role.items():
            add_text_row(table, arm, role, *(summary.get(k) or "—" for k in keys))
    return table


def rounds_table(metrics: Sequence[ArmMetrics]) -> Table:
    table = text_table(title="per round (tokens = mean per sample)")
    skips = any(r.skipped for m in metrics for r in m.rounds)
    cols = ["arm", "round", "nodes", "failed", "tokens", "accuracy", "consensus", "cross-check"]
    if skips:
        cols.insert(3, "skipped")
    for col in cols:
        table.add_column(col, justify="left" if col == "arm" else "right")
    for m in metrics:
        for r in m.rounds:
            cells = [m.label, str(r.round), str(r.nodes), str(r.failed), f"{r.tokens:,.1f}", _pct(r.accuracy),
                     _pct(r.consensus), _pct(r.cross_check)]
            if skips:
                cells.insert(3, str(r.skipped))
            add_text_row(table, *cells)
    return table


def _write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[object]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _csv_value(value: object) -> object:
    return json.dumps(value, sort_keys=True) if isinstance(value, dict) else value


def write_csvs(report: Report, outcomes: Sequence[SampleOutcome], folder: Path) -> list[Path]:
    """The files of ``_columns.CSV_FILES`` (columns in that order)."""
    metric_rows = [[_csv_value(getattr(m, c)) for c in METRICS_COLUMNS] for m in report.metrics]
    round_cols = list(ROUND_COLUMNS)[1:]
    round_rows = [[m.label, *[getattr(r, c) for c in round_cols]] for m in report.metrics for r in m.rounds]
    sample_rows = [[getattr(o, c) if c != "nodes" else len(o.nodes) for c in SAMPLE_COLUMNS] for o in outcomes]
    pair_rows = [[getattr(p, c) for c in PAIR_COLUMNS] for p in report.pairs]
    role_rows = [[arm, role, *(summary.get(c, "") for c in list(ROLE_COLUMNS)[2:])]
                 for arm, by_role in report.roles.items() for role, summary in by_role.items()]
    return [
        _write_csv(folder / "metrics.csv", list(METRICS_COLUMNS), metric_rows),
        _write_csv(folder / "rounds.csv", list(ROUND_COLUMNS), round_rows),
        _write_csv(folder / "samples.csv", list(SAMPLE_COLUMNS), sample_rows),
        _write_csv(folder / "pairs.csv", list(PAIR_COLUMNS), pair_rows),
        _write_csv(folder / "roles.csv", list(ROLE_COLUMNS), role_rows),
    ]


def _engine_tokens(report: Report, store: ResultStore, outcomes: Sequence[SampleOutcome]) -> None:
    """Fill ``report.engine_tokens`` (every stored trace) and, with declared costs (the latest
    run's), ``report.costs``: accuracy against mean cost per sample, per metrics row."""
    costs = load_costs(store)
    pairs = [(o, store.trace_json(o.arm, o.problem_id, o.sample) or {}) for o in outcomes]
    report.engine_tokens = engine_token_rows(((o.arm, t) for o, t in pairs), costs)
    report.costs = cost_rows(report.metrics, pairs, costs)
    report.latest_costs = costs


def engine_tokens_table(report: Report) -> Table:
    """Tokens per engine and role (and declared cost) of each arm."""
    on = sorted({m.match_on for m in report.metrics if m.match_on is not None})
    how = f"self-consistency is budget-matched on {' and '.join(on)}" if on else "no budget-matched self-consistency"
    table = text_table(f"tokens per engine and role (means per sample; {how})")
    for column in ("arm", "engine", "role", "completion", "prompt", "cost"):
        table.add_column(column)
    for r in report.engine_tokens:
        cost = "" if r["cost"] is None else f"{r['cost']:.4g}"
        add_text_row(table, r["arm"], r["engine"], r["role"], f"{r['completion_tokens']:g}",
                     f"{r['prompt_tokens']:g}", cost)
    return table


def _spec_arms(store: ResultStore) -> list[dict[str, Any]]:
    spec = json.loads(store.get_meta("fingerprint") or "{}")
    arms = spec.get("arms", [])
    return [a for a in arms if isinstance(a, dict) and "name" in a]


def _arm_order_and_sizes(store: ResultStore) -> tuple[list[str], dict[str, dict[str, int]], dict[str, Any]]:
    """(arms in spec order, each SC arm's vote sizes, each matched SC arm's ``sc_match``
    record; a store written before records existed matched on TTC)."""
    order = [a["name"] for a in _spec_arms(store)]
    sizes, matches = {}, {}
    for arm in order:
        saved = store.get_meta(f"sc_sizes:{arm}")
        if saved is not None:
            sizes[arm] = json.loads(saved)
            record = store.get_meta(f"sc_match:{arm}")
            matches[arm] = json.loads(record) if record is not None else {"on": "ttc"}
    return order, sizes, matches


def effective_roles(arm_tables: Sequence[dict[str, Any]]) -> dict[str, dict[str, dict[str, str]]]:
    """arm -> role -> ``role_summary`` for each topology arm whose spec still builds (a spec
    file that moved since the study ran is skipped)."""
    out = {}
    for table in arm_tables:
        try:
            arm = ArmSpec.model_validate(table)
            if arm.baseline is not None:
                continue
            out[arm.name] = {n: role_summary(r) for n, r in arm.used_roles(arm.build_topology()).items()}
        except (ValidationError, ConfigError):
            continue
    return out


def all_pairs(metrics: Sequence[ArmMetrics]) -> list[PairedComparison]:
    """``paired_comparison`` of every two rows (row order) that share graded problems."""
    out = []
    for i, a in enumerate(metrics):
        for b in metrics[i + 1 :]:
            pair = paired_comparison(a.label, a.per_sample, b.label, b.per_sample)
            if pair.problems:
                out.append(pair)
    return out


@dataclass
class StudyResults:
    """What a store holds, computed: its outcomes (by arm, problem, sample), the arms in spec
    order (then any others by name), the metrics rows, every pair of rows, and each swept arm's
    (sweep id, sweep point) for the scaling plot."""

    outcomes: list[SampleOutcome]
    order: list[str]
    arm_tables: list[dict[str, Any]]
    metrics: list[ArmMetrics]
    pairs: list[PairedComparison]
    sweeps: dict[str, tuple[str, dict[str, Any]]]
    #: each matched self-consistency arm's ``sc_match`` record (what N was matched on)
    matches: dict[str, Any] = field(default_factory=dict)


def study_results(store: ResultStore) -> StudyResults:
    """The ``StudyResults`` of ``store`` (reads it; writes nothing)."""
    outcomes = store.outcomes()
    order, sizes, matches = _arm_order_and_sizes(store)
    arm_tables = _spec_arms(store)
    order += sorted({o.arm for o in outcomes} - set(order))
    metrics = compute_metrics(outcomes, order, sizes, {a: str(r.get("on", "ttc")) for a, r in matches.items()})
    sweeps = {a["name"]: (a["sweep"], a.get("sweep_point") or {}) for a in arm_tables if a.get("sweep")}
    return StudyResults(outcomes, order, arm_tables, metrics, all_pairs(metrics), sweeps, matches)


def build_report(out_dir: str | Path, *, csv_files: bool = True, plots: bool = True,
                 console: Console | None = None) -> Report:
    """Compute the metrics of the study in ``out_dir``, print them, write CSVs and plots."""
    out = Path(out_dir)
    store = ResultStore.open(out)
    try:
        results = study_results(store)
        outcomes, order, metrics, sweeps = results.outcomes, results.order, results.metrics, results.sweeps
        report = Report(metrics=metrics, samples=len(outcomes), pairs=results.pairs,
                        roles=effective_roles(results.arm_tables), matches=results.matches,
                        policies=policy_rows(metrics, outcomes, results.arm_tables))
        _engine_tokens(report, store, outcomes)
        engine = load_engine_figures(store)
        grading = [json.loads(v) for _, v in store.meta_items("grading_figures:")]
        report.grading = grading
        folder = out / "report"
        if csv_files or plots:
            folder.mkdir(parents=True, exist_ok=True)
        if csv_files:
            report.files += write_csvs(report, outcomes, folder)
            if engine:
                report.files.append(write_engine_csv(engine, folder / "engine.csv"))
            report.files.append(_write_csv(folder / "engine_tokens.csv", list(ENGINE_TOKEN_COLUMNS),
                                           [list(r.values()) for r in report.engine_tokens]))
            if report.policies:
                report.files.append(_write_csv(folder / "policies.csv", list(POLICY_COLUMNS), [
                    [_csv_value(getattr(r, c)) for c in POLICY_COLUMNS] for r in report.policies]))
            if report.costs:
                report.files.append(_write_csv(folder / "cost.csv", list(COST_COLUMNS),
                                               [[r[c] for c in COST_COLUMNS] for r in report.costs]))
        if plots and metrics:
            report.files.append(plot_accuracy_vs_ttc(metrics, folder / "accuracy_vs_ttc.png"))
            if report.costs:
                report.files.append(plot_accuracy_vs_cost(report.costs, folder / "accuracy_vs_cost.png"))
            report.files.append(plot_rounds(metrics, folder / "rounds.png"))
            if any(f.get("timeline") for f in engine):
                report.files.append(plot_sequences_in_flight(engine, folder / "sequences_in_flight.png"))
            if sweeps:
                report.files.append(plot_scaling(metrics, sweeps, folder / "scaling.png"))
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
        for line in match_lines(report.matches, report.metrics, report.latest_costs):
            console.print(line, markup=False, highlight=False)
        console.print(rounds_table(metrics))
        if report.roles:
            console.print(roles_table(report.roles))
        key = key_pairs(metrics, report.pairs)
        if key:
            console.print(pairs_table(key))
        if report.policies:
            console.print(policy_table(report.policies))
        if engine:
            console.print(engine_table(engine))
        if len({r["engine"] for r in report.engine_tokens}) > 1 or report.costs:
            console.print(engine_tokens_table(report))
        for line in grading_lines(grading):
            console.print(line, markup=False, highlight=False)
        for f in report.files:
            console.print(f"wrote {f}", markup=False)
    return report
