"""Pair the same-named arms of two study folders run on the same problems (e.g. one study file
run twice with different engine options), with the studies' own statistics.

    python benchmarks/compare_studies.py OUT_A OUT_B [--label-a float32 --label-b bfloat16]

Prints, per arm present in both, each folder's accuracy, the paired difference A - B with its
95% paired bootstrap interval over problems, the exact McNemar p (one sample per problem), and
each folder's mean effective TTC; then each folder's engine model and dtype (the engine side
the report stores). Decode speed: benchmarks/bench_engine.py --dtype, both dtypes in one run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pacore_agents.studies import build_report
from pacore_agents.studies._engine_figures import load_engine_figures
from pacore_agents.studies._stats import paired_comparison
from pacore_agents.studies._store import ResultStore


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("a", type=Path)
    parser.add_argument("b", type=Path)
    parser.add_argument("--label-a", default="A")
    parser.add_argument("--label-b", default="B")
    args = parser.parse_args()
    ra = build_report(args.a, csv_files=False, plots=False)
    rb = build_report(args.b, csv_files=False, plots=False)
    by_b = {m.label: m for m in rb.metrics}
    la, lb = args.label_a, args.label_b
    print(f"| arm | {la} acc | {lb} acc | {la} - {lb} [95% paired] | McNemar p | {la} TTC | {lb} TTC |")
    print("|---|---|---|---|---|---|---|")
    for ma in ra.metrics:
        mb = by_b.get(ma.label)
        if mb is None:
            continue
        pair = paired_comparison(la, ma.per_sample, lb, mb.per_sample)
        diff = "—" if pair.diff is None else (
            f"{100 * pair.diff:+.1f} [{100 * (pair.diff_low or 0):+.1f}, {100 * (pair.diff_high or 0):+.1f}]")
        p = "—" if pair.p_value is None else f"{pair.p_value:.3g}"
        print(f"| {ma.label} | {_pct(pair.acc_a)} | {_pct(pair.acc_b)} | {diff} | {p} | "
              f"{ma.mean_ttc:,.0f} | {mb.mean_ttc:,.0f} |")
    print()
    for label, folder in ((la, args.a), (lb, args.b)):
        store = ResultStore.open(folder)
        try:
            figures = load_engine_figures(store)
            outcomes = store.outcomes()
        finally:
            store.close()
        models = sorted({str(f.get("model")) for f in figures})
        dtypes = sorted({str(f.get("dtype")) for f in figures})
        print(f"{label}: model {', '.join(models)}, dtype {', '.join(dtypes)}; {len(outcomes)} samples")


if __name__ == "__main__":
    main()
