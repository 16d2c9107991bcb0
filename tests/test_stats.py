"""Paired tests, Holm's correction and the Friedman test against scipy and brute force (and
the exact sign test where every difference is the same)."""

from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import pandas as pd
import pytest
from helpers.stats import holm_brute_force
from scipy import stats

from mibench.stats import (
    NOTE_CONSTANT,
    NOTE_IDENTICAL,
    NOTE_NO_PAIRS,
    NOTE_ONE_PAIR,
    compare_to_reference,
    friedman,
    holm,
    pair_table,
    paired_test,
    tolerance,
)
from mibench.stats import tests_frame as frame_of_tests  # pytest collects names "test..."


@pytest.mark.parametrize("seed", range(5))
def testholm_brute_force(seed):
    rng = np.random.default_rng(seed)
    p = rng.uniform(0, 0.2, 7)
    p[rng.integers(0, 7)] = np.nan
    p[1] = p[2] if not np.isnan(p[2]) else p[1]  # a tie
    np.testing.assert_allclose(holm(p), holm_brute_force(list(p)), equal_nan=True)
    assert np.isnan(holm(np.array([np.nan, np.nan]))).all()


def test_paired_test_matches_scipy_and_effect_sizes():
    rng = np.random.default_rng(3)
    ref = rng.uniform(0.001, 0.05, 25)
    x = ref + rng.normal(0.004, 0.01, 25)
    res = paired_test(x, ref)
    t = stats.ttest_rel(x, ref)
    assert res["t_statistic"] == pytest.approx(t.statistic, rel=1e-12)
    assert res["p_ttest"] == pytest.approx(t.pvalue, rel=1e-12)
    d = x - ref
    w = stats.wilcoxon(np.round(d, 12))
    assert res["p_wilcoxon"] == pytest.approx(w.pvalue, rel=1e-12)
    assert res["w_statistic"] == w.statistic
    assert res["effect_dz"] == pytest.approx(d.mean() / d.std(ddof=1))
    # rank-biserial from ranks of |d| computed by sorting
    order = np.argsort(np.abs(d))
    ranks = np.empty(d.size)
    ranks[order] = np.arange(1, d.size + 1)
    r = (ranks[d > 0].sum() - ranks[d < 0].sum()) / ranks.sum()
    assert res["effect_rank_biserial"] == pytest.approx(r)
    assert res["mean_diff"] == pytest.approx(d.mean())


def test_paired_test_round_off_does_not_create_differences():
    a = np.array([0.1, 0.2, 0.3, 0.7, 0.9])
    b = a + np.array([1e-17, -1e-17, 3e-4, 5e-4, -2e-4])  # two "ties" up to round-off
    b[:2] = [0.30000000000000004 - 0.2, 0.1 + 0.1]  # classic float noise
    res = paired_test(b, a)
    d = np.round(b - a, 12)
    assert (d[:2] == 0).all()
    assert res["p_wilcoxon"] == pytest.approx(stats.wilcoxon(d[2:]).pvalue)


def test_paired_test_degenerate_cases():
    same = np.array([0.1, 0.2, 0.3])
    res = paired_test(same, same.copy())
    assert res["p_ttest"] == 1.0 and res["p_wilcoxon"] == 1.0 and res["effect_dz"] == 0.0
    assert res["note"] == NOTE_IDENTICAL
    one = paired_test(np.array([0.2]), np.array([0.1]))
    assert math.isnan(one["p_ttest"]) and one["mean_diff"] == pytest.approx(0.1)
    assert math.isnan(one["p_wilcoxon"]) and one["note"] == NOTE_ONE_PAIR
    none = paired_test(np.array([]), np.array([]))
    assert math.isnan(none["p_ttest"]) and none["note"] == NOTE_NO_PAIRS


def _no_warnings(*args):
    """``paired_test`` with every warning turned into an error (scipy's "catastrophic
    cancellation" RuntimeWarning must not reach the user)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return paired_test(*args)


@pytest.mark.parametrize("n", [2, 4, 7])
def test_constant_difference_is_undefined_not_p_zero(n):
    """A method exactly 1 px off on every pair (NAED 1 / diagonal of a 32 px image), with the
    float noise a real run gives its scores: the t-test is undefined, not p = 0."""
    rng = np.random.default_rng(n)
    ref = rng.uniform(0.01, 0.05, n)
    x = ref + 1 / math.hypot(32, 32)
    x *= 1 + rng.choice([-1, 1], n) * np.arange(n) * np.finfo(float).eps  # a few ulps of noise
    assert np.ptp(x - ref) > 0  # not exactly constant: a naive sd check would run the t-test
    res = _no_warnings(x, ref)
    for key in ("t_statistic", "p_ttest", "effect_dz"):
        assert math.isnan(res[key]), key
    assert res["note"] == NOTE_CONSTANT
    # Wilcoxon stays defined: n tied ranks of one sign, the exact sign test
    assert res["p_wilcoxon"] == pytest.approx(2.0 ** (1 - n))
    assert res["p_wilcoxon"] == pytest.approx(stats.wilcoxon(np.ones(n)).pvalue)
    assert res["w_statistic"] == 0.0 and res["effect_rank_biserial"] == 1.0
    assert res["mean_diff"] == pytest.approx(1 / math.hypot(32, 32))
    down = _no_warnings(ref, x)  # the other sign
    assert math.isnan(down["p_ttest"]) and down["effect_rank_biserial"] == -1.0


def test_constant_difference_scipy_would_warn_or_give_noise():
    """The data of the test above are those on which scipy itself misbehaves: it warns of
    catastrophic cancellation and returns a t statistic made of float noise."""
    ref = np.array([0.1, 0.2, 0.3, 0.4])
    x = ref + 1 / math.hypot(32, 32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t = stats.ttest_rel(x, ref)
    assert caught or not np.isfinite(t.statistic) or abs(t.statistic) > 1e12
    assert math.isnan(_no_warnings(x, ref)["p_ttest"])


@pytest.mark.parametrize("n", [14, 20, 33, 50])
def test_constant_difference_wilcoxon_is_the_exact_sign_test_up_to_50_pairs(n):
    """A method 0.01 worse on every pair: n tied ranks of one sign. The exact Wilcoxon p-value
    (all 2^n sign patterns equally likely) is the exact sign test's 2^(1-n), as the module
    promises up to 50 pairs; scipy's "auto" gives its normal approximation here (ties, n > 13),
    several times too large."""
    rng = np.random.default_rng(n)
    ref = rng.uniform(0.01, 0.05, n)
    res = paired_test(ref + 0.01, ref)
    assert res["note"] == NOTE_CONSTANT
    exact = stats.binomtest(n, n, 0.5).pvalue  # the sign test, exact
    assert exact == pytest.approx(2.0 ** (1 - n))
    # scipy's exact Wilcoxon distribution at the same (most extreme) statistic
    assert stats.wilcoxon(np.arange(1.0, n + 1), method="exact").pvalue == pytest.approx(exact)
    assert res["p_wilcoxon"] == pytest.approx(exact, rel=1e-9)
    assert res["w_statistic"] == 0.0 and res["effect_rank_biserial"] == 1.0


def test_constant_difference_beyond_50_pairs_is_scipys_normal_approximation():
    ref = np.linspace(0.01, 0.05, 60)
    res = paired_test(ref - 0.01, ref)
    assert res["p_wilcoxon"] == pytest.approx(stats.wilcoxon(-np.ones(60)).pvalue)


@pytest.mark.parametrize("scale", [1e-3, 1.0, 1e3, 1e12])
def test_round_off_tolerance_scales_with_the_values(scale):
    """Identical and constant up to float noise at any magnitude (NAED, px, a diverged method
    10^12 px off), but a real spread just above the tolerance is tested as scipy tests it."""
    ref = scale * np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    noise = np.array([1, -1, 2, 0, -2]) * 4 * np.finfo(float).eps * scale
    same = _no_warnings(ref + noise, ref)
    assert same["note"] == NOTE_IDENTICAL and same["p_ttest"] == 1.0
    const = _no_warnings(ref + 0.5 * scale + noise, ref)
    assert const["note"] == NOTE_CONSTANT and math.isnan(const["p_ttest"])
    x = ref + 0.5 * scale + np.array([1, -1, 2, 0, -2]) * 1e-9 * scale
    res = _no_warnings(x, ref)
    assert res["note"] == "" and res["p_ttest"] == pytest.approx(stats.ttest_rel(x, ref).pvalue)
    assert 2 * tolerance(x, ref) < np.ptp(x - ref)


def test_constant_difference_in_compare_to_reference_and_holm():
    """The undefined t-test leaves Holm's family (no p = 0 in it); the note reaches the rows."""
    rng = np.random.default_rng(8)
    ref = rng.uniform(0.01, 0.05, 6)
    table = pd.DataFrame({"ref": ref, "shifted": ref + 0.02,
                          "noisy": ref + rng.normal(0.01, 0.01, 6)},
                         index=[f"p{i}" for i in range(6)])
    table.loc["solo", "solo"] = 0.3  # a method with no pair in common with the reference
    tests = {t.method: t for t in compare_to_reference(table, "ref")}
    assert math.isnan(tests["shifted"].p_ttest) and math.isnan(tests["shifted"].p_ttest_holm)
    assert tests["shifted"].note == NOTE_CONSTANT
    p = stats.ttest_rel(table.noisy.dropna(), table.ref.dropna()).pvalue
    assert tests["noisy"].p_ttest_holm == pytest.approx(p)  # a family of one t-test
    assert tests["solo"].note == NOTE_NO_PAIRS and tests["noisy"].note == ""
    frame = frame_of_tests(list(tests.values()))
    assert list(frame.columns)[-1] == "note"
    assert frame.set_index("method").loc["shifted", "note"] == NOTE_CONSTANT


def _results(rows):
    return pd.DataFrame(rows, columns=["method", "pair_id", "seed", "naed"])


def test_pair_table_means_over_seeds_and_keeps_missing():
    df = _results([("a", "p1", 0, 1.0), ("a", "p1", 1, 3.0), ("a", "p2", 0, 5.0),
                   ("b", "p1", 0, 2.0), ("b", "p2", 0, np.nan), ("b", "p3", 0, 4.0)])
    t = pair_table(df)
    assert list(t.columns) == ["a", "b"] and list(t.index) == ["p1", "p2", "p3"]
    assert t.loc["p1", "a"] == 2.0 and np.isnan(t.loc["p2", "b"]) and np.isnan(t.loc["p3", "a"])


def test_compare_to_reference_unpaired_pairs_are_counted_not_hidden():
    rng = np.random.default_rng(4)
    pairs = [f"p{i}" for i in range(12)]
    rows = []
    for m, shift in (("ref", 0.0), ("good", 0.001), ("bad", 0.02)):
        for i, p in enumerate(pairs):
            if m == "bad" and i < 3:
                continue  # "bad" lacks three pairs
            rows.append((m, p, 0, 0.01 + 0.002 * i + shift + rng.normal(0, 0.003)))
    t = pair_table(_results(rows))
    tests = {r.method: r for r in compare_to_reference(t, "ref")}
    assert set(tests) == {"good", "bad"}
    assert tests["bad"].n_pairs == 9 and tests["bad"].n_unpaired == 3
    assert tests["good"].n_pairs == 12 and tests["good"].n_unpaired == 0
    both = t[["bad", "ref"]].dropna()
    assert tests["bad"].p_ttest == pytest.approx(stats.ttest_rel(both.bad, both.ref).pvalue)
    assert tests["bad"].mean == pytest.approx(t.bad.mean())
    assert tests["bad"].std == pytest.approx(t.bad.dropna().std(ddof=1))
    assert tests["bad"].reference_mean == pytest.approx(both.ref.mean())
    holm_t = holm_brute_force([tests["good"].p_ttest, tests["bad"].p_ttest])
    assert [tests["good"].p_ttest_holm, tests["bad"].p_ttest_holm] == pytest.approx(holm_t)
    with pytest.raises(KeyError):
        compare_to_reference(t, "absent")


def test_friedman_matches_scipy_and_brute_force_ranks():
    rng = np.random.default_rng(5)
    values = rng.normal(0, 1, (10, 4)) + np.array([0, 0.5, 1.0, 0.2])
    values[0, :2] = 0.3  # a tie
    t = pd.DataFrame(values, columns=list("abcd"))
    t.loc[10] = [np.nan, 1, 2, 3]  # incomplete: dropped
    res = friedman(t)
    ref = stats.friedmanchisquare(*values.T)
    assert res.statistic == pytest.approx(ref.statistic) and res.pvalue == pytest.approx(ref.pvalue)
    assert (res.n_pairs, res.n_methods, res.n_dropped) == (10, 4, 1)
    for j, m in enumerate("abcd"):
        expected = np.mean([1 + sum(v < row[j] for v in row) + 0.5 * (sum(v == row[j] for v in row)
                            - 1) for row in values])
        assert res.mean_ranks[m] == pytest.approx(expected)
    two = friedman(t[["a", "b"]])
    assert math.isnan(two.pvalue) and set(two.mean_ranks) == {"a", "b"}
    # the mean ranks of k methods always sum to k(k+1)/2
    assert sum(res.mean_ranks.values()) == pytest.approx(10)
    assert list(itertools.islice(res.mean_ranks, 4)) == list("abcd")


def test_friedman_ties_values_equal_up_to_float_noise():
    t = pd.DataFrame({"oracle": [5e-17, 0.0, 1e-16], "exact": [0.0, 5e-17, 0.0],
                      "worse": [0.1, 0.2, 0.3]})
    res = friedman(t)
    assert res.mean_ranks == {"oracle": 1.5, "exact": 1.5, "worse": 3.0}
