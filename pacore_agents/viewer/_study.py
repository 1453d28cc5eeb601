"""The study view's data, from a read-only ``ResultStore``: every figure is the report's own
(``studies._report.study_results``: metrics with intervals, paired comparisons, the scaling
plot's lines); the browser only formats and sorts them.

Contract of ``study_view``: ``arms`` are the metrics rows in report order; ``pairs`` every pair
of rows sharing graded problems, ``key_pairs`` the report's headline pairs (each topology arm
against single and its budget-matched self-consistency) as [a, b] labels; ``scaling`` the
scaling plot's lines (or, without sweeps, one point per row: accuracy against TTC); ``problems``
one row per (problem, sample) in problem order, with each arm's stored outcome (``status``,
``answer``, ``ttc``, failed nodes, and the sink's flags: right-to-wrong flip, emergent).
"""

from __future__ import annotations

import json
from typing import Any

from pacore_agents.studies._metrics import ArmMetrics, sink_flags
from pacore_agents.studies._plots import scaling_lines
from pacore_agents.studies._report import key_pairs, study_results
from pacore_agents.studies._store import ResultStore, SampleOutcome


def _point(m: ArmMetrics) -> dict[str, Any]:
    return {"label": m.label, "kind": m.kind, "ttc": m.mean_ttc, "acc": m.accuracy, "lo": m.ci_low, "hi": m.ci_high}


def _cell(o: SampleOutcome) -> dict[str, Any]:
    flags = sink_flags(o)
    return {"status": o.status, "answer": o.answer, "ttc": o.effective_ttc, "kind": o.kind,
            "failed": sum(nd.status == "failed" for nd in o.nodes), "degraded": o.degraded,
            "flip": flags.flip, "emergent": flags.emergent}


def study_view(store: ResultStore) -> dict[str, Any]:
    """The JSON the study view draws (see the module)."""
    res = study_results(store)
    spec = json.loads(store.get_meta("fingerprint") or "{}")
    if res.sweeps:
        lines = [{"label": ln.label, "dashed": ln.dashed, "points": [_point(m) for m in ln.rows]}
                 for ln in scaling_lines(res.metrics, res.sweeps)]
    else:
        lines = [{"label": m.label, "dashed": m.kind == "self-consistency", "points": [_point(m)]}
                 for m in res.metrics if m.accuracy is not None and m.kind != "single"]
    singles = [_point(m) for m in res.metrics if m.kind == "single" and m.accuracy is not None]
    rows: dict[tuple[str, int], dict[str, Any]] = {}
    for o in res.outcomes:
        row = rows.setdefault((o.problem_id, o.sample), {"problem": o.problem_id, "sample": o.sample, "cells": {}})
        row["cells"][o.arm] = _cell(o)
    n, last = store.version()
    return {
        "name": spec.get("name") if isinstance(spec.get("name"), str) else None,
        "out": str(store.out_dir), "samples": n, "last_write": last,
        "arm_names": res.order,
        "arms": [m.model_dump(mode="json") for m in res.metrics],
        "pairs": [p.model_dump(mode="json") for p in res.pairs],
        "key_pairs": [[p.a, p.b] for p in key_pairs(res.metrics, res.pairs)],
        "scaling": {"swept": bool(res.sweeps), "lines": lines, "singles": singles},
        "problems": [rows[k] for k in sorted(rows, key=_problem_order)],
    }


def _problem_order(key: tuple[str, int]) -> tuple[tuple[int, str], ...]:
    """Natural order: ``arith-2`` before ``arith-10``."""
    import re

    pid, sample = key
    parts = re.split(r"(\d+)", pid)
    return (*((int(p), "") if p.isdigit() else (-1, p) for p in parts), (sample, ""))
