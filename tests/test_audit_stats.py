"""Audit of the statistics and their printing against independent references (scipy)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from mibench.reports.page import fmt_p
from mibench.reports.paper_table import _tex_number
from mibench.stats import NOTE_CONSTANT, paired_test


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


def test_p_value_that_underflows_is_not_printed_as_zero():
    """scipy returns p = 0.0 when the p-value underflows (a clear difference over a few hundred
    pairs): the true p-value is positive, below 1e-300, and a table must not say "0"."""
    rng = np.random.default_rng(0)
    ref = rng.random(200)
    x = ref + 1 + rng.normal(0, 0.001, 200)
    p = stats.ttest_rel(x, ref).pvalue
    assert p == 0.0  # what scipy gives
    text = fmt_p(p)
    assert text != "0" and not math.isclose(float(text.lstrip("<")), 0.0)
    assert text == "<1e-300"
    assert _tex_number(text) == r"$<1 \times 10^{-300}$"
    assert fmt_p(1e-300) == "1.0e-300" and fmt_p(5e-324) == "4.9e-324"


def test_underflowed_p_value_in_the_report_tables_is_escaped_not_zero(tmp_path):
    """The paper-style and statistics tables of a run whose t-test p-value underflows."""
    from mibench.metrics import pair_scores
    from mibench.records import Record, Task
    from mibench.reports import results_frame, summary_frame
    from mibench.reports.evaluation import evaluate
    from mibench.reports.page import ReportContext
    from mibench.reports.paper_table import paper_table_latex, paper_table_markdown
    from mibench.reports.sections import section_paper, section_stats

    rng = np.random.default_rng(1)
    recs = []
    for i in range(200):
        init = rng.uniform(5, 20, 6)
        for method, errs in (("drmime", init * 0.1), ("worse", init * 0.1 + 10)):
            errs = errs + rng.normal(0, 1e-3, 6)
            task = Task(method=method, method_params={}, dataset="fake", dataset_params={},
                        pair_id=f"p{i:03d}", seed=0)
            recs.append(Record.for_task(
                task, status="ok", scored=True, wall_s=1.0, norm_length=90.5,
                normalisation="diagonal", landmark_errors=list(errs),
                initial_errors=list(init), metrics=pair_scores(errs, init, 90.5, 90.5)))
    results = results_frame(recs)
    ev = evaluate(results)
    (test,) = ev.tests
    assert test.p_ttest == 0.0 and test.p_ttest_holm == 0.0  # underflow in scipy
    ctx = ReportContext(run_dir=tmp_path, manifest={}, results=results,
                        summary=summary_frame(results), evaluation=ev)
    for html in (section_paper(ctx), section_stats(ctx)):
        assert "<td>&lt;1e-300</td><td>&lt;1e-300</td>" in html  # p and p (Holm)
        assert "<td><1e-300" not in html
    assert "| <1e-300 | <1e-300 |" in paper_table_markdown(ev)
    assert r"$<1 \times 10^{-300}$ & $<1 \times 10^{-300}$" in paper_table_latex(ev)


@pytest.mark.parametrize("p, text", [(0.0496, "4.96e-02"), (0.04996, "4.996e-02"),
                                     (0.00999, "9.99e-03"), (0.000996, "9.96e-04"),
                                     (0.0504, "5.0e-02"), (0.013, "1.3e-02"),
                                     (0.05, "5.0e-02"), (0.0123, "1.2e-02")])
def test_p_value_is_never_rounded_across_a_significance_level(p, text):
    """Two significant digits would print 0.0496 as 5.0e-02: a reader takes that as not below
    0.05. The printed value stays on the true value's side of 0.05, 0.01 and 0.001."""
    assert fmt_p(p) == text
    for level in (0.05, 0.01, 0.001):
        assert (float(fmt_p(p)) < level) == (p < level)
