"""Intervals and paired comparisons of a study's arms. Problems are the unit of resampling:
arms share them (and, with the trajectory pool, their round-1 trajectories), and the samples
of one problem are correlated.

- ``wilson_interval``: the 95% Wilson score interval of a proportion.
- ``clustered_interval`` (one arm): with one graded sample per problem, Wilson. With several,
  the Wilson interval at the effective sample size ``n_eff = n / deff``, where the design
  effect ``deff = v_cluster / v_binomial`` compares the cluster-robust variance of the mean,
  ``v_cluster = G/(G-1) * sum_g (sum_j (y_gj - p))^2 / n^2`` (G problems, n samples), with
  the binomial one, ``p(1-p)/n``; ``n_eff`` is kept within [G, n] (G when p is 0 or 1).
- ``paired_comparison`` (two arms): over the problems both arms graded, ``diff`` = mean over
  problems of (A's accuracy on it - B's); its 95% interval is the percentile interval of a
  bootstrap over problems (``numpy.random.default_rng(seed)``, 2,000 resamples by default).
  With exactly one graded sample per problem in both arms, the exact McNemar test: a two-sided
  binomial test (p = 1/2) on the discordant problems (``a_only`` right only in A, ``b_only``
  right only in B); with several samples per problem no p-value is given.
- ``pass_at_k``: the unbiased estimator of pass@k (Chen et al., 2021) from n samples of which c
  passed, ``1 - C(n-c, k) / C(n, k)``; ``mean_pass_at_k`` averages it over problems.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel

Z95 = 1.959963984540054
BOOTSTRAP_RESAMPLES = 2000


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased pass@k estimate from ``n`` samples, ``c`` correct (``1 <= k <= n``)."""
    if not 1 <= k <= n or not 0 <= c <= n:
        raise ValueError(f"pass@k needs 1 <= k <= n and 0 <= c <= n (n={n}, c={c}, k={k})")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def mean_pass_at_k(by_problem: Mapping[str, Sequence[bool]], ks: Sequence[int] = (1, 2, 4, 8, 16)
                   ) -> dict[str, float]:
    """``{"pass@k": mean over problems}`` for every k in ``ks`` that every problem has samples for."""
    if not by_problem:
        return {}
    n_min = min(len(v) for v in by_problem.values())
    return {f"pass@{k}": sum(pass_at_k(len(v), sum(v), k) for v in by_problem.values()) / len(by_problem)
            for k in ks if k <= n_min}


def wilson_interval(correct: float, n: float, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion; (0, 1) for n = 0. Non-integer
    ``correct``/``n`` (an effective sample size) are allowed."""
    if n <= 0:
        return 0.0, 1.0
    p = correct / n
    denom = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(max(p * (1 - p), 0.0) / n + z * z / (4 * n * n)) / denom
    return max(0.0, center - half), min(1.0, center + half)


def effective_size(by_problem: Mapping[str, Sequence[bool]]) -> float:
    """``n_eff`` of the module contract for graded outcomes grouped by problem."""
    n = sum(len(v) for v in by_problem.values())
    groups = len(by_problem)
    if groups <= 1:
        return float(groups)
    p = sum(sum(v) for v in by_problem.values()) / n
    if p in (0.0, 1.0):
        return float(groups)
    v_cluster = groups / (groups - 1) * sum((sum(v) - len(v) * p) ** 2 for v in by_problem.values()) / n**2
    v_binomial = p * (1 - p) / n
    if v_cluster <= 0:
        return float(n)
    return min(float(n), max(float(groups), n * v_binomial / v_cluster))


def clustered_interval(by_problem: Mapping[str, Sequence[bool]]) -> tuple[float, float, str]:
    """(low, high, method): Wilson with one sample per problem, else clustered Wilson."""
    n = sum(len(v) for v in by_problem.values())
    correct = sum(sum(v) for v in by_problem.values())
    if all(len(v) == 1 for v in by_problem.values()):
        return (*wilson_interval(correct, n), "wilson")
    n_eff = effective_size(by_problem)
    lo, hi = wilson_interval(correct / n * n_eff, n_eff)
    return lo, hi, "cluster-wilson"


def mcnemar_exact(a_only: int, b_only: int) -> float:
    """Two-sided exact McNemar p-value: binomial test of ``a_only`` of ``a_only + b_only``
    discordant pairs at p = 1/2 (1.0 when there are none)."""
    n = a_only + b_only
    if n == 0:
        return 1.0
    try:
        stats: Any = importlib.import_module("scipy.stats")
    except ImportError:  # the exact sum: the two tails are equal at p = 1/2
        k = min(a_only, b_only)
        return min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / (1 << n))
    return float(stats.binomtest(a_only, n, 0.5).pvalue)


class PairedComparison(BaseModel):
    """Arm ``a`` against arm ``b`` over their shared graded problems (see the module)."""

    a: str
    b: str
    problems: int
    samples_per_problem: int | None  # None: it varies
    acc_a: float | None
    acc_b: float | None
    diff: float | None
    diff_low: float | None
    diff_high: float | None
    a_only: int | None = None
    b_only: int | None = None
    p_value: float | None = None


def _graded_by_problem(per_sample: Sequence[tuple[str, int, str]]) -> dict[str, list[bool]]:
    out: dict[str, list[bool]] = {}
    for pid, _, status in per_sample:
        if status in ("correct", "wrong"):
            out.setdefault(pid, []).append(status == "correct")
    return out


def paired_comparison(a: str, a_samples: Sequence[tuple[str, int, str]], b: str,
                      b_samples: Sequence[tuple[str, int, str]], *,
                      resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> PairedComparison:
    """Compare two arms from their (problem id, sample, status) triples."""
    ga, gb = _graded_by_problem(a_samples), _graded_by_problem(b_samples)
    shared = sorted(set(ga) & set(gb))
    if not shared:
        return PairedComparison(a=a, b=b, problems=0, samples_per_problem=None, acc_a=None, acc_b=None,
                                diff=None, diff_low=None, diff_high=None)
    ma = np.array([sum(ga[p]) / len(ga[p]) for p in shared])
    mb = np.array([sum(gb[p]) / len(gb[p]) for p in shared])
    d = ma - mb
    rng = np.random.default_rng(seed)
    boot = d[rng.integers(0, len(d), size=(resamples, len(d)))].mean(axis=1)
    lo, hi = np.quantile(boot, [0.025, 0.975])
    sizes = {len(ga[p]) for p in shared} | {len(gb[p]) for p in shared}
    per = sizes.pop() if len(sizes) == 1 else None
    out = PairedComparison(a=a, b=b, problems=len(shared), samples_per_problem=per,
                           acc_a=float(ma.mean()), acc_b=float(mb.mean()), diff=float(d.mean()),
                           diff_low=float(lo), diff_high=float(hi))
    if per == 1:
        out.a_only, out.b_only = int((d > 0).sum()), int((d < 0).sum())
        out.p_value = mcnemar_exact(out.a_only, out.b_only)
    return out
