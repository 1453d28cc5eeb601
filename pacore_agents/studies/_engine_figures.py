"""The engine side of a study: what the executor saw during each ``pacore study run``.

Each invocation saves one ``engine_figures:<start time>`` entry in the store (see
``_runner._engine_figures``): samples run, the executor's window, sequences in flight (time-
weighted mean over the time the engine was busy, peak, and a timeline sampled at most every
50 ms), engine busy seconds, orchestration seconds (the library's own planning and applying),
and the engine's computed and cached prefill tokens where it reports them (a vLLM server's
``/metrics``, the in-process engine's own statistics). The report prints them, writes
``engine.csv`` and plots ``sequences_in_flight.png``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.table import Table

from pacore_agents._richtext import add_text_row, text_table

from ._columns import ENGINE_COLUMNS
from ._store import ResultStore

COLUMNS = tuple(ENGINE_COLUMNS)


def load_engine_figures(store: ResultStore) -> list[dict[str, Any]]:
    """Every invocation's figures, oldest first (entries that do not parse are skipped)."""
    out = []
    for _, value in store.meta_items("engine_figures:"):
        try:
            figures = json.loads(value)
        except json.JSONDecodeError:
            continue
        if isinstance(figures, dict):
            out.append(figures)
    return out


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.2f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def engine_table(figures: Sequence[dict[str, Any]]) -> Table:
    table = text_table(title="engine side, per `pacore study run` (sequences in flight: the executor's)")
    for name in ("run", "samples", "window", "mean seqs", "peak", "busy s", "orchestration",
                 "prefill computed", "prefill cached"):
        table.add_column(name, justify="right")
    for i, f in enumerate(figures, start=1):
        busy, orch = f.get("engine_busy_seconds") or 0.0, f.get("orchestration_seconds") or 0.0
        share = f" ({orch / busy:.2%})" if busy else ""
        add_text_row(table, str(i), _fmt(f.get("samples_run")), _fmt(f.get("window")),
                      _fmt(f.get("mean_sequences_in_flight")), _fmt(f.get("peak_sequences_in_flight")),
                      _fmt(busy), f"{orch:.3f} s{share}", _fmt(f.get("prefill_computed_tokens")),
                      _fmt(f.get("prefill_cached_tokens")))
    return table


def write_engine_csv(figures: Sequence[dict[str, Any]], path: Path) -> Path:
    import csv

    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(COLUMNS)
        for f in figures:
            writer.writerow([f.get(c) for c in COLUMNS])
    return path


def plot_sequences_in_flight(figures: Sequence[dict[str, Any]], path: Path) -> Path:
    """One step line per invocation: sequences in flight against seconds since it started."""
    from ._plots import _pyplot

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for i, f in enumerate(figures, start=1):
        points = f.get("timeline") or []
        if not points:
            continue
        xs, ys = zip(*points, strict=True)
        ax.step(xs, ys, where="post", label=f"run {i}: mean {f.get('mean_sequences_in_flight', 0):.1f}")
        if f.get("window"):
            ax.axhline(f["window"], color="grey", linestyle=":", linewidth=0.8)
    ax.set_xlabel("seconds since the run started")
    ax.set_ylabel("sequences in flight")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize="small")
    ax.set_title("sequences in flight on the engine (dotted: the executor's window)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
