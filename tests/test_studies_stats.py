"""Paired statistics and clustered intervals, against hand-computed values."""

from __future__ import annotations

import math

import pytest

from pacore_agents.studies import (
    clustered_interval,
    mcnemar_exact,
    paired_comparison,
    wilson_interval,
)
from pacore_agents.studies._stats import effective_size


def _samples(rows: dict[str, list[int]]) -> list[tuple[str, int, str]]:
    return [(pid, s, "correct" if ok else "wrong") for pid, oks in rows.items() for s, ok in enumerate(oks)]


def test_mcnemar_exact_by_hand() -> None:
    # 1 vs 6 discordant: 2 * (C(7,0) + C(7,1)) / 2^7 = 16/128
    assert mcnemar_exact(1, 6) == pytest.approx(0.125)
    assert mcnemar_exact(6, 1) == pytest.approx(0.125)
    assert mcnemar_exact(0, 5) == pytest.approx(2 / 32)
    assert mcnemar_exact(3, 3) == 1.0 and mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(10, 2) == pytest.approx(2 * sum(math.comb(12, i) for i in range(3)) / 2**12)


def test_paired_comparison_one_sample_per_problem() -> None:
    a = _samples({"p1": [1], "p2": [1], "p3": [0], "p4": [1], "p5": [0]})
    b = _samples({"p1": [0], "p2": [1], "p3": [0], "p4": [0], "p5": [0], "p6": [1]})  # p6: A has none
    c = paired_comparison("A", [*a, ("p7", 0, "timeout")], "B", b)
    assert (c.problems, c.samples_per_problem) == (5, 1)
    assert (c.acc_a, c.acc_b, c.diff) == pytest.approx((0.6, 0.2, 0.4))
    assert (c.a_only, c.b_only) == (2, 0) and c.p_value == pytest.approx(0.5)
    # d = (1, 0, 0, 1, 0): a resample's mean is X/5 with X ~ Binomial(5, 2/5); P(X = 0) = 0.078
    # and P(X >= 4) = 0.087 exceed 2.5% while P(X = 5) = 0.010 does not: the interval is [0, 4/5]
    assert (c.diff_low, c.diff_high) == pytest.approx((0.0, 0.8))
    same = paired_comparison("A", a, "A2", a)
    assert (same.diff, same.diff_low, same.diff_high, same.p_value) == (0.0, 0.0, 0.0, 1.0)


def test_paired_bootstrap_two_problems_by_hand() -> None:
    """d = (1, 0): a resample's mean is 0, 1/2 or 1 with probability 1/4, 1/2, 1/4, so the
    2.5% and 97.5% quantiles are 0 and 1; the seed makes it reproducible."""
    a, b = _samples({"x": [1], "y": [0]}), _samples({"x": [0], "y": [0]})
    c = paired_comparison("A", a, "B", b, seed=3)
    assert (c.diff, c.diff_low, c.diff_high) == (0.5, 0.0, 1.0)
    assert paired_comparison("A", a, "B", b, seed=3) == c


def test_paired_comparison_several_samples() -> None:
    a = _samples({"p1": [1, 1], "p2": [1, 0], "p3": [0, 0]})
    b = _samples({"p1": [1, 0], "p2": [0, 0], "p3": [0, 0]})
    c = paired_comparison("A", a, "B", b)
    assert (c.samples_per_problem, c.diff) == (2, pytest.approx(1 / 3))
    assert c.p_value is None and c.a_only is None  # McNemar needs one sample per problem
    assert c.diff_low == pytest.approx(0.0) and c.diff_high == pytest.approx(0.5)  # d = (1/2, 1/2, 0)


def test_clustered_interval_by_hand() -> None:
    # one sample per problem: plain Wilson
    lo, hi, method = clustered_interval({"a": [True], "b": [False], "c": [True]})
    assert method == "wilson" and (lo, hi) == pytest.approx(wilson_interval(2, 3))
    # perfectly correlated samples: p = 1/2, n = 8, G = 4; cluster sums of residuals +-2:
    # v_cluster = 4/3 * 16 / 64 = 1/3, v_binomial = 1/32, n_eff = 8 * (1/32) / (1/3) = 0.75 -> G = 4
    corr = {"a": [True] * 2, "b": [True] * 2, "c": [False] * 2, "d": [False] * 2}
    assert effective_size(corr) == 4.0
    lo, hi, method = clustered_interval(corr)
    assert method == "cluster-wilson" and (lo, hi) == pytest.approx(wilson_interval(2, 4))
    # independent-looking samples: every problem half right -> v_cluster = 0 -> n_eff = n
    half = {"a": [True, False], "b": [False, True], "c": [True, False]}
    assert effective_size(half) == 6.0
    # in between: p = 5/8 (n = 8, G = 4), cluster sums 2, 2, 1, 0 -> residuals 3/4, 3/4, -1/4, -5/4
    # v_cluster = 4/3 * (9/16 + 9/16 + 1/16 + 25/16) / 64 = 11/192; v_binomial = (15/64) / 8 = 15/512
    mixed = {"a": [True, True], "b": [True, True], "c": [True, False], "d": [False, False]}
    n_eff = 8 * (15 / 512) / (11 / 192)
    assert effective_size(mixed) == pytest.approx(n_eff)  # 4.09: between G = 4 and n = 8
    lo, hi, _ = clustered_interval(mixed)
    assert (lo, hi) == pytest.approx(wilson_interval(5 / 8 * n_eff, n_eff))
    wide, narrow = wilson_interval(5 / 8 * n_eff, n_eff), wilson_interval(5, 8)
    assert wide[1] - wide[0] > narrow[1] - narrow[0]
    # all right: n_eff = G
    lo, hi, _ = clustered_interval({"a": [True] * 3, "b": [True] * 3})
    assert (lo, hi) == pytest.approx(wilson_interval(2, 2))


def test_mcnemar_without_scipy_is_the_same_exact_sum(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    with_scipy = [mcnemar_exact(a, b) for a, b in ((1, 6), (10, 2), (4, 4), (0, 9))]
    monkeypatch.setitem(sys.modules, "scipy.stats", None)  # import fails
    assert [mcnemar_exact(a, b) for a, b in ((1, 6), (10, 2), (4, 4), (0, 9))] == pytest.approx(with_scipy)
