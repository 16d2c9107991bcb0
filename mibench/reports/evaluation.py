"""The cross-method evaluation of a run: reference method, paired tests, Friedman test, the
paper-style table, success curves (FIRE protocol), ANHIR ranks and per-group tables.

Per-pair values (for the tests and the paper-style table) are means over seeds, so that each method
has one value per pair. Success rates count every scored task (pairs x seeds). Failed tasks are
scored with their initial error (the README's *Conventions*) and count everywhere; unscored tasks
(no fixed landmarks) are counted as "registered, not scored" and enter no metric.

The reference is requested or chosen by :func:`mibench.reports.reference.choose_reference`;
``Evaluation.warnings`` says what makes the comparison doubtful (a reference that failed on most
of its tasks, methods with different seeds, comparisons with fewer than two pairs), and
:meth:`Evaluation.notes` adds the degenerate and unpaired comparisons: every artefact that shows
the comparison says these in these words.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from mibench.metrics import FIRE_CATEGORIES, FIRE_THRESHOLDS, mean_auc, success_curve
from mibench.reports.formatting import plural, seed_groups
from mibench.reports.reference import MethodRoles, choose_reference, method_failures
from mibench.reports.results import task_counts
from mibench.reports.units import DEFAULT_UNIT, MIXED, common_unit, mixed_text
from mibench.stats import FriedmanResult, PairedTest, compare_to_reference, friedman, pair_table

#: The metric of the paper-style table and the tests.
METRIC = "naed"

#: Pair-metadata keys that get a table of their own, when the dataset has them.
GROUP_KEYS = ("category", "tissue", "status", "family")

#: Said of the comparisons that left out pairs only one of the two methods has.
UNPAIRED = "pairs left out of a paired test because only one of the two methods has them"


@dataclass
class PaperRow:
    """One row of the paper-style table (per-pair values averaged over seeds)."""

    method: str
    n_pairs: int
    mean: float
    std: float
    p_ttest: float
    p_ttest_holm: float
    is_reference: bool


@dataclass
class Evaluation:
    """Everything computed across methods; see the module docstring."""

    metric: str
    reference: str | None
    reference_reason: str
    table: pd.DataFrame
    tests: list[PairedTest]
    friedman: FriedmanResult | None
    paper: list[PaperRow]
    thresholds: list[float]
    curves: dict[str, dict[str, list[float]]]  # method -> group ("all", "S", ...) -> rates
    aucs: dict[str, dict[str, float]]  # method -> group -> AUC (and "mAUC")
    fire_categories: bool
    groups: pd.DataFrame
    counts: dict[str, Any] = field(default_factory=dict)
    #: Per method, the seeds of its tasks.
    seeds: dict[str, list[int]] = field(default_factory=dict)
    #: Per method, ``(failed, scored)`` tasks (``method_failures``).
    failures: dict[str, tuple[int, int]] = field(default_factory=dict)
    #: The NAED normaliser of the records (several joined by ", "; None without records).
    naed_norm: str | None = None
    #: What a reader must know before trusting the tables (shown by the paper table).
    warnings: list[str] = field(default_factory=list)
    #: The dataset's protocol (``DatasetSpec.protocol``); None: unknown, the pairs decide.
    protocol: str | None = None
    #: Whether FIRE's success curves and AUCs apply (FIRE-protocol data).
    fire_applies: bool = False
    #: Whether ANHIR's rTRE metrics and ranks apply (ANHIR-protocol data).
    anhir_applies: bool = False
    #: The unit of the landmark errors (``px``, ``mm``, ``um``; ``mixed`` when the records mix
    #: units) and how many tasks have each.
    unit: str = DEFAULT_UNIT
    unit_counts: dict[str, int] = field(default_factory=dict)

    def short_tests(self) -> list[PairedTest]:
        """Comparisons of fewer than two pairs: no test at all."""
        return [t for t in self.tests if t.n_pairs < 2]

    def noted_tests(self) -> list[PairedTest]:
        """Comparisons of at least two pairs whose test is degenerate (``note`` says why);
        fewer than two pairs is among ``warnings`` already."""
        return [t for t in self.tests if t.note and t.n_pairs >= 2]

    def unpaired_tests(self) -> list[PairedTest]:
        """Comparisons that left out pairs only one of the two methods has."""
        return [t for t in self.tests if t.n_unpaired]

    def short_text(self) -> str:
        """``"identity (1 pair), ncc (0 pairs)"``: the :meth:`short_tests`."""
        return ", ".join(f"{t.method} ({plural(t.n_pairs, 'pair')})" for t in self.short_tests())

    def noted_texts(self) -> list[str]:
        """``"method: note"`` for each of the :meth:`noted_tests`."""
        return [f"{t.method}: {t.note}" for t in self.noted_tests()]

    def unpaired_text(self) -> str:
        """``"solo: 2, ncc: 1"``: the pairs each of the :meth:`unpaired_tests` left out."""
        return ", ".join(f"{t.method}: {t.n_unpaired}" for t in self.unpaired_tests())

    def notes(self) -> list[str]:
        """Every caveat of the comparison in plain text: the ``warnings``, the degenerate
        tests and the unpaired pairs (as the paper tables print them)."""
        notes = list(self.warnings) + self.noted_texts()
        if self.unpaired_tests():
            notes.append(f"{UNPAIRED}: {self.unpaired_text()}")
        return notes


def _paper_rows(table: pd.DataFrame, reference: str | None,
                tests: list[PairedTest]) -> list[PaperRow]:
    by_method = {t.method: t for t in tests}
    rows = []
    for method in table.columns:
        v = table[method].dropna().to_numpy()
        t = by_method.get(str(method))
        rows.append(PaperRow(
            method=str(method), n_pairs=int(v.size),
            mean=float(v.mean()) if v.size else math.nan,
            std=float(v.std(ddof=1)) if v.size > 1 else math.nan,
            p_ttest=t.p_ttest if t else math.nan,
            p_ttest_holm=t.p_ttest_holm if t else math.nan,
            is_reference=str(method) == reference))
    rows.sort(key=lambda r: (not r.is_reference, math.isnan(r.mean), r.mean, r.method))
    return rows


def protocol_applies(results: pd.DataFrame, protocol: str | None) -> tuple[bool, bool]:
    """``(fire, anhir)``: whether FIRE's and ANHIR's metrics apply to these results. A known
    ``protocol`` decides; without one (None: the dataset's spec is unknown) the pairs do: FIRE
    categories (S, P, A) for FIRE, a ``tissue`` for ANHIR."""
    if protocol is not None:
        return protocol == "fire", protocol == "anhir"
    tissue = "meta_tissue" in results and results["meta_tissue"].notna().any()
    return _is_fire(results), bool(tissue)


def _is_fire(results: pd.DataFrame) -> bool:
    if "meta_category" not in results:
        return False
    scored = results[results["tre_mean"].notna()]  # unscored pairs draw no curve
    cats = set(scored["meta_category"].dropna().astype(str))
    return bool(cats) and cats <= set(FIRE_CATEGORIES)


def success_curves(results: pd.DataFrame, thresholds: np.ndarray = FIRE_THRESHOLDS,
                   fire: bool | None = None) -> tuple[dict, dict, bool]:
    """Success rate of every scored task's mean error at each threshold (both in the records'
    unit: native px for FIRE).

    Returns ``(curves, aucs, fire)``: per method, group ``"all"`` and, when the pairs carry FIRE
    categories (``meta_category`` in S, P, A), one curve per category, their AUCs and ``mAUC``.
    ``fire=False`` draws no category curves (data of another protocol).
    """
    fire = _is_fire(results) and fire is not False
    curves: dict[str, dict[str, list[float]]] = {}
    aucs: dict[str, dict[str, float]] = {}
    scored = results[results["tre_mean"].notna()] if len(results) else results
    for method, g in scored.groupby("method", sort=True):
        groups = {"all": g}
        if fire:
            cat = g["meta_category"].astype(str)
            groups.update({c: g[cat == c] for c in FIRE_CATEGORIES if (cat == c).any()})
        curves[method], aucs[method] = {}, {}
        for name, sub in groups.items():
            rates = success_curve(sub["tre_mean"].to_numpy(), thresholds)
            curves[method][name] = rates.tolist()
            aucs[method][name] = float(np.mean(rates))
        if fire:
            aucs[method]["mAUC"] = mean_auc(aucs[method])
    return curves, aucs, fire


GROUP_COLUMNS = ["key", "group", "method", "n_tasks", "n_scored", "n_failed", "naed_mean",
                 "naed_std", "naed_median", "rtre_median_mean", "success_auc"]


def group_frame(results: pd.DataFrame) -> pd.DataFrame:
    """Per ``GROUP_KEYS`` key, group value and method: tasks, scored, failed, NAED mean, std
    (ddof 1) and median, mean median rTRE, and the success AUC over 1..25 px."""
    rows = []
    for key in GROUP_KEYS:
        col = f"meta_{key}"
        if col not in results or results[col].isna().all():
            continue
        for (value, method), g in results.groupby([col, "method"], sort=True):
            tre = g["tre_mean"].to_numpy(dtype=float)
            counts = task_counts(g)
            rows.append({
                "key": key, "group": str(value), "method": method,
                "n_tasks": counts["n_tasks"], "n_scored": counts["n_scored"],
                "n_failed": counts["n_failed"],
                "naed_mean": g["naed"].mean(), "naed_std": g["naed"].std(ddof=1),
                "naed_median": g["naed"].median(),
                "rtre_median_mean": g["rtre_median"].mean(),
                "success_auc": float(np.mean(success_curve(tre))) if np.isfinite(tre).any()
                else math.nan,
            })
    return pd.DataFrame(rows, columns=GROUP_COLUMNS)


def _warnings(ev: Evaluation) -> list[str]:
    """Plain-text warnings about the comparison (see ``Evaluation.warnings``)."""
    out = [mixed_text(ev.unit_counts)] if ev.unit == MIXED else []
    ref = ev.reference
    failed, scored = ev.failures.get(ref, (0, 0)) if ref is not None else (0, 0)
    if scored and 2 * failed > scored:
        how = "all" if failed == scored else "most"
        out.append(f"The reference {ref} failed on {failed} of {scored} scored tasks; failed "
                   f"tasks are scored with their initial error, so {how} of its values are those "
                   "of no registration at all and the tests compare the other methods with "
                   "that, not with a registration. Choose another reference with --reference.")
    if len({tuple(s) for s in ev.seeds.values()}) > 1:
        out.append(f"The methods ran with different seeds ({seed_groups(ev.seeds)}): their "
                   "per-pair values are means over different numbers of runs, so the comparison "
                   "is not like for like.")
    if ev.short_tests():
        out.append(f"No p-value for {ev.short_text()}: a paired test needs at least two pairs "
                   f"that both the method and the reference {ref} have.")
    return out


def evaluate(results: pd.DataFrame, reference: str | None = None, *,
             roles: MethodRoles | None = None, requested_by: str = "--reference",
             protocol: str | None = None) -> Evaluation:
    """The cross-method evaluation of a ``results_frame``.

    ``reference`` is a requested reference method and ``requested_by`` who requested it, for the
    reason shown; ``roles`` the methods' flags (``choose_reference``). Comparisons are in the
    paper table's order. ``protocol`` is the dataset's (``DatasetSpec.protocol``; None: the
    pairs decide, :func:`protocol_applies`): FIRE's and ANHIR's metrics apply only to theirs.
    """
    table = pair_table(results, METRIC)
    failures = method_failures(results)
    ref, reason = choose_reference(table, reference, failures, roles=roles, metric=METRIC,
                                   requested_by=requested_by)
    tests = compare_to_reference(table, ref) if ref is not None else []
    fr = friedman(table) if table.shape[1] >= 2 else None
    paper = _paper_rows(table, ref, tests)
    order = {r.method: i for i, r in enumerate(paper)}
    tests.sort(key=lambda t: order.get(t.method, len(order)))
    n = len(results)
    fire_applies, anhir_applies = protocol_applies(results, protocol) if n else (False, False)
    unit_counts = ({str(u): int(k) for u, k in results["unit"].value_counts(sort=False).items()}
                   if n and "unit" in results else {})
    unit = common_unit(unit_counts)
    # FIRE's thresholds are pixels: they mean nothing for errors in mm or in several units.
    fire_applies = fire_applies and unit == DEFAULT_UNIT
    # No success curve over errors in several units (thresholds have one unit).
    curves, aucs, fire = (success_curves(results, fire=fire_applies) if n and unit != MIXED
                          else ({}, {}, False))
    seeds = ({str(m): sorted(int(s) for s in g.unique())
              for m, g in results.groupby("method", sort=True)["seed"]} if n else {})
    norms = sorted(set(results["naed_norm"].dropna().astype(str))) if n else []
    counts = task_counts(results)
    ev = Evaluation(
        metric=METRIC, reference=ref, reference_reason=reason, table=table, tests=tests,
        friedman=fr, paper=paper, thresholds=FIRE_THRESHOLDS.tolist(), curves=curves,
        aucs=aucs, fire_categories=fire,
        groups=group_frame(results if n else pd.DataFrame()),
        counts={"tasks": counts["n_tasks"], "scored": counts["n_scored"],
                "failed": counts["n_failed"], "unscored": counts["n_unscored"],
                "pairs": int(results["pair_id"].nunique()) if n else 0,
                "seeds": sorted(int(s) for s in results["seed"].unique()) if n else [],
                "seeds_per_method": seeds},
        seeds=seeds, failures=failures, naed_norm=", ".join(norms) or None,
        protocol=protocol, fire_applies=fire_applies, anhir_applies=anhir_applies,
        unit=unit, unit_counts=unit_counts)
    ev.warnings = _warnings(ev)
    return ev


__all__ = ["GROUP_KEYS", "METRIC", "UNPAIRED", "Evaluation", "PaperRow", "evaluate",
           "group_frame", "protocol_applies", "success_curves"]
