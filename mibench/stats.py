"""Paired statistics of per-pair scores across methods (pure functions over arrays and frames).

Every method is compared with one *reference* method on the pairs both have:

- a paired two-sided t-test (``scipy.stats.ttest_rel``), as in DRMIME's tables;
- a Wilcoxon signed-rank test on the differences rounded to ``DECIMALS`` places (and those
  within ``tolerance`` of zero set to zero), so that float round-off does not turn ties into tiny
  signed differences (the scipy documentation's advice); zero differences are dropped
  (``zero_method="wilcox"``);
- Holm's step-down correction across the comparisons, for each test separately;
- effect sizes: Cohen's d_z (mean difference / std of the differences) and the matched-pairs
  rank-biserial correlation (W+ - W-) / (W+ + W-).

Degenerate comparisons are decided before scipy is called (so that it neither warns about
catastrophic cancellation nor returns a p-value made of float noise), and each gets a ``note``
that the report can show:

- fewer than two pairs: no test (NaN);
- identical values on every pair (all differences zero up to round-off): the data show no
  difference at all, so p = 1 for both tests and zero effects (scipy's exact Wilcoxon test gives
  p = 1 too; the t statistic would be 0 / 0, but NaN would hide an exact tie);
- a constant non-zero difference (zero variance up to round-off): the t statistic and d_z divide
  by a zero standard deviation, so they and the t-test's p-value are undefined (NaN, not p = 0:
  two pairs shifted alike are no proof). The Wilcoxon test stays defined: all ranks tie and it
  is a sign test, p = 2^(1-n) up to 50 pairs (``scipy.stats.wilcoxon``'s exact distribution),
  its normal approximation beyond.

"Up to round-off" means within ``tolerance`` of the values compared, so that a method that is
1 px off on every pair is constant however the float errors of its scores fall.

A Friedman test with mean ranks covers all methods at once, on the pairs every method has.

Differences are ``method - reference``: positive means the method's error is larger.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

#: Differences are rounded to this many decimal places before the Wilcoxon test.
DECIMALS = 12

#: Relative part of the round-off tolerance (see ``tolerance``). Far above float64's 2.2e-16, so
#: that errors accumulated in computing the scores stay below it, and above the 10 eps at which
#: scipy warns of catastrophic cancellation; far below any difference a registration can make.
RTOL = 1e-12

#: Reasons recorded in ``PairedTest.note`` (and ``stats.csv``) for a degenerate comparison.
NOTE_NO_PAIRS = "no pair with values of both methods: no test"
NOTE_ONE_PAIR = "one pair: the tests need two pairs or more"
NOTE_IDENTICAL = "identical values on every pair: no difference (p = 1)"
NOTE_CONSTANT = ("constant difference on every pair: t-test and d_z undefined (zero variance); "
                 "the Wilcoxon test is then a sign test")


def pair_table(results: pd.DataFrame, metric: str = "naed") -> pd.DataFrame:
    """Per-pair values of ``metric``: a ``pair_id x method`` table.

    With several seeds, a pair's value is the mean over its seeds (so that tests see one value
    per pair). Unscored tasks (NaN) are ignored; a method without a value on a pair has NaN.
    """
    cols = ["pair_id", "method", metric]
    if results.empty or metric not in results:
        return pd.DataFrame()
    df = results.loc[results[metric].notna(), cols]
    if df.empty:
        return pd.DataFrame()
    table = df.groupby(["pair_id", "method"], sort=True)[metric].mean().unstack("method")
    table.columns.name = None
    return table


def holm(pvalues: np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error); NaN entries stay NaN.

    The i-th smallest of the m finite p-values is multiplied by ``m - i`` (i from 0), the running
    maximum is taken so that the order is kept, and the result is clipped to 1.
    """
    p = np.asarray(pvalues, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    finite = np.flatnonzero(np.isfinite(p))
    m = finite.size
    if m == 0:
        return out
    order = finite[np.argsort(p[finite], kind="stable")]
    adjusted = np.maximum.accumulate(p[order] * (m - np.arange(m)))
    out[order] = np.minimum(adjusted, 1.0)
    return out


@dataclass
class PairedTest:
    """One method against the reference, over the pairs both have; ``note`` says why a test is
    missing or degenerate (empty otherwise)."""

    method: str
    reference: str
    n_pairs: int
    n_unpaired: int
    mean: float
    std: float
    reference_mean: float
    mean_diff: float
    t_statistic: float
    p_ttest: float
    w_statistic: float
    p_wilcoxon: float
    effect_dz: float
    effect_rank_biserial: float
    p_ttest_holm: float = float("nan")
    p_wilcoxon_holm: float = float("nan")
    note: str = ""


def tolerance(x: np.ndarray, ref: np.ndarray) -> float:
    """How far apart two paired differences (or a difference and zero) may be and still count
    as equal: ``10**-DECIMALS`` absolute or ``RTOL`` times the largest value, whichever is
    larger (float noise in a score grows with the score: a method 10^12 px off has noise of
    about 10^-4 px)."""
    scale = max(float(np.max(np.abs(x), initial=0.0)), float(np.max(np.abs(ref), initial=0.0)))
    return max(10.0 ** -DECIMALS, RTOL * scale)


def paired_test(x: np.ndarray, ref: np.ndarray) -> dict[str, float | str]:
    """Paired t-test, Wilcoxon signed-rank test and effect sizes of ``x - ref``.

    Parameters
    ----------
    x, ref : ndarray ``(N,)``
        Paired values (same pair at the same index), finite.

    Returns
    -------
    dict with ``t_statistic``, ``p_ttest``, ``w_statistic``, ``p_wilcoxon``, ``effect_dz``,
    ``effect_rank_biserial``, ``mean_diff`` and ``note`` (empty, or one of the ``NOTE_*``
    reasons). With fewer than two pairs everything but the mean difference is NaN. Identical
    samples give p = 1 and zero effects; a constant non-zero difference gives NaN for the
    t-test and d_z, and a sign test for Wilcoxon (module docstring).
    """
    from scipy import stats

    x = np.asarray(x, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    raw = x - ref
    n = raw.size
    tol = tolerance(x, ref) if n else 0.0
    # Differences within the tolerance of zero are ties with zero, not tiny signed differences.
    d = np.where(np.abs(raw) <= tol, 0.0, np.round(raw, DECIMALS))
    out: dict[str, float | str] = dict.fromkeys(
        ("t_statistic", "p_ttest", "w_statistic", "p_wilcoxon", "effect_dz",
         "effect_rank_biserial"), float("nan"))
    out["mean_diff"] = float(d.mean()) if n else float("nan")
    out["note"] = ""
    if n < 2:
        out["note"] = NOTE_ONE_PAIR if n else NOTE_NO_PAIRS
        return out
    if not np.any(d):
        out.update(t_statistic=0.0, p_ttest=1.0, w_statistic=0.0, p_wilcoxon=1.0,
                   effect_dz=0.0, effect_rank_biserial=0.0, note=NOTE_IDENTICAL)
        return out
    if np.ptp(raw) <= tol:
        # Zero variance: t = mean / 0 is undefined, and scipy would return a p-value made of
        # the float noise (or warn and give NaN). Every difference is the same one: the
        # Wilcoxon test sees n tied ranks of one sign, which is the sign test.
        d = np.full(n, d.mean())
        out["note"] = NOTE_CONSTANT
    else:
        t = stats.ttest_rel(x, ref)
        sd = raw.std(ddof=1)
        out.update(t_statistic=float(t.statistic), p_ttest=float(t.pvalue),
                   effect_dz=float(raw.mean() / sd))
    w = stats.wilcoxon(d, zero_method="wilcox")
    out.update(w_statistic=float(w.statistic), p_wilcoxon=float(w.pvalue))
    if out["note"] == NOTE_CONSTANT and n <= 50:
        # The exact p-value of n tied ranks of one sign (scipy's "auto" switches to its normal
        # approximation for tied ranks beyond 13 pairs).
        out["p_wilcoxon"] = 2.0 ** (1 - n)
    nz = d[d != 0]
    ranks = stats.rankdata(np.abs(nz))
    w_plus, w_minus = ranks[nz > 0].sum(), ranks[nz < 0].sum()
    out["effect_rank_biserial"] = float((w_plus - w_minus) / (w_plus + w_minus))
    return out


def compare_to_reference(table: pd.DataFrame, reference: str) -> list[PairedTest]:
    """Paired tests of every other column of a ``pair_table`` against ``reference``.

    Each test uses the pairs where both methods have a value; ``n_unpaired`` counts the pairs
    where only one of the two has one (they are left out of that test, and the report says so).
    ``mean``/``std`` (ddof 1) are over all of the method's pairs. Holm's correction runs across
    the comparisons returned. The reference itself is not in the list.
    """
    if reference not in table:
        raise KeyError(f"reference method {reference!r} has no scored pairs")
    ref_all = table[reference]
    tests = []
    for method in table.columns:
        if method == reference:
            continue
        col = table[method]
        both = col.notna() & ref_all.notna()
        one = col.notna() ^ ref_all.notna()
        values = col.dropna().to_numpy()
        res = paired_test(col[both].to_numpy(), ref_all[both].to_numpy())
        tests.append(PairedTest(
            method=str(method), reference=reference, n_pairs=int(both.sum()),
            n_unpaired=int(one.sum()), mean=float(values.mean()) if values.size else math.nan,
            std=float(values.std(ddof=1)) if values.size > 1 else math.nan,
            reference_mean=float(ref_all[both].mean()) if both.any() else math.nan, **res))
    for key in ("p_ttest", "p_wilcoxon"):
        adjusted = holm(np.array([getattr(t, key) for t in tests]))
        for t, p in zip(tests, adjusted, strict=True):
            setattr(t, f"{key}_holm", float(p))
    return tests


def tests_frame(tests: list[PairedTest]) -> pd.DataFrame:
    """The paired tests as a data frame (the rows of ``stats.csv``)."""
    columns = ["method", "reference", "n_pairs", "n_unpaired", "mean", "std", "reference_mean",
               "mean_diff", "t_statistic", "p_ttest", "p_ttest_holm", "w_statistic", "p_wilcoxon",
               "p_wilcoxon_holm", "effect_dz", "effect_rank_biserial", "note"]
    return pd.DataFrame([asdict(t) for t in tests], columns=columns)


@dataclass
class FriedmanResult:
    """Friedman test over the pairs every method has (``n_dropped`` pairs lacked some method)."""

    n_pairs: int
    n_methods: int
    n_dropped: int
    statistic: float
    pvalue: float
    mean_ranks: dict[str, float]


def friedman(table: pd.DataFrame) -> FriedmanResult:
    """Friedman test and mean ranks (1 = smallest value, ties averaged, values rounded to
    ``DECIMALS`` places first) of a ``pair_table``.

    Needs at least three methods and two complete pairs for the test; mean ranks are given
    whenever there is a complete pair.
    """
    from scipy import stats

    complete = table.dropna(axis=0, how="any")
    n, k = complete.shape
    dropped = int(len(table) - n)
    # Values equal up to float noise (an exact 0 and 5e-17) tie, as in the paired tests.
    values = np.round(complete.to_numpy(dtype=np.float64), DECIMALS)
    ranks: dict[str, float] = {}
    if n:
        r = stats.rankdata(values, axis=1, method="average")
        ranks = {str(m): float(v) for m, v in zip(complete.columns, r.mean(axis=0), strict=True)}
    stat = p = math.nan
    if k >= 3 and n >= 2:
        if np.all(values == values[:, :1]):
            stat, p = 0.0, 1.0  # every method equal on every pair
        else:
            res = stats.friedmanchisquare(*values.T)
            stat, p = float(res.statistic), float(res.pvalue)
    return FriedmanResult(n_pairs=int(n), n_methods=int(k), n_dropped=dropped, statistic=stat,
                          pvalue=p, mean_ranks=ranks)


__all__ = ["DECIMALS", "NOTE_CONSTANT", "NOTE_IDENTICAL", "NOTE_NO_PAIRS", "NOTE_ONE_PAIR", "RTOL",
           "FriedmanResult", "PairedTest", "compare_to_reference", "friedman", "holm",
           "pair_table", "paired_test", "tests_frame", "tolerance"]
