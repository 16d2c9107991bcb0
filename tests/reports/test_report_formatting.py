"""How the artefacts print numbers: p-values as the paper prints them (never 0, never rounded
across a significance level), in HTML, Markdown and LaTeX alike."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from mibench.metrics import pair_scores
from mibench.registration import Record, RegistrationTask
from mibench.reports import RunAnalysis, results_frame, summary_frame
from mibench.reports.evaluation import evaluate
from mibench.reports.formatting import fmt, fmt_p, fmt_pm
from mibench.reports.html import render_section
from mibench.reports.paper_table import _tex_number, paper_table_latex, paper_table_markdown


def test_fmt_p_prints_like_the_paper():
    assert fmt_p(1.3e-4) == "1.3e-04" and fmt_p(float("nan")) == "–" and fmt_p(1.0) == "1"
    assert fmt(math.nan) == "–" and fmt_pm(0.0048, 0.014) == "0.0048 ± 0.014"


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
    rng = np.random.default_rng(1)
    recs = []
    for i in range(200):
        init = rng.uniform(5, 20, 6)
        for method, errs in (("drmime", init * 0.1), ("worse", init * 0.1 + 10)):
            errs = errs + rng.normal(0, 1e-3, 6)
            task = RegistrationTask(method=method, method_params={}, dataset="fake",
                                    dataset_params={}, pair_id=f"p{i:03d}", seed=0)
            recs.append(Record(
                task, status="ok", scored=True, wall_s=1.0, norm_length=90.5,
                naed_norm="diagonal", landmark_errors=list(errs),
                initial_errors=list(init), metrics=pair_scores(errs, init, 90.5, 90.5)))
    results = results_frame(recs)
    ev = evaluate(results)
    (test,) = ev.tests
    assert test.p_ttest == 0.0 and test.p_ttest_holm == 0.0  # underflow in scipy
    analysis = RunAnalysis(run_dir=tmp_path, manifest={}, records=recs, results=results,
                           summary=summary_frame(results), evaluation=ev)
    for html in (render_section("paper", analysis), render_section("stats", analysis)):
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
