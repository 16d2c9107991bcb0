"""The cross-method evaluation of a run: reference method, paired tests, Friedman test, the
paper-style table, success curves (FIRE protocol), ANHIR ranks and per-group tables; written as
``stats.csv`` and ``metrics.json``.

Per-pair values (for the tests and the paper-style table) are means over seeds, so that each method
has one value per pair. Success rates count every scored task (pairs x seeds). Failed tasks are
scored with their initial error (the README's *Conventions*) and count everywhere; unscored tasks
(no fixed landmarks) are counted as "registered, not scored" and enter no metric.

The reference is requested or chosen by ``choose_reference``; ``Evaluation.warnings`` says what
makes the comparison doubtful (a reference that failed on most of its tasks, methods with
different seeds, comparisons with fewer than two pairs), in ``metrics.json`` and by the report's
paper-style table.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mibench.metrics import FIRE_CATEGORIES, FIRE_THRESHOLDS, mean_auc, success_curve
from mibench.records import write_json_atomic
from mibench.stats import (
    FriedmanResult,
    PairedTest,
    compare_to_reference,
    friedman,
    pair_table,
    tests_frame,
)

STATS_CSV = "stats.csv"
METRICS_JSON = "metrics.json"

#: The method compared with all others unless ``--reference`` names another one.
DEFAULT_REFERENCE = "drmime"

#: The metric of the paper-style table and the tests.
METRIC = "naed"

#: Pair-metadata keys that get a table of their own, when the dataset has them.
GROUP_KEYS = ("category", "tissue", "status", "family")

BASELINE = "identity"


def method_failures(results: pd.DataFrame) -> dict[str, tuple[int, int]]:
    """Per method, ``(failed, scored)``: how many of its scored tasks failed, out of how many.

    Failed tasks are scored with their initial error, so a method that failed on most of its
    tasks has values in the tables that are mostly those of no registration at all.
    """
    if results.empty:
        return {}
    scored = results[results["scored"].astype(bool)]
    failed = (scored["status"] == "failed").groupby(scored["method"]).sum()
    return {str(m): (int(failed[m]), int(n))
            for m, n in scored.groupby("method").size().items()}


def choose_reference(table: pd.DataFrame, requested: str | None,
                     failures: dict[str, tuple[int, int]] | None = None, *,
                     requested_by: str = "--reference") -> tuple[str | None, str]:
    """The reference method of a ``pair_table`` and why it was chosen.

    Parameters
    ----------
    table : DataFrame
        ``mibench.stats.pair_table`` of the metric.
    requested : str or None
        A method asked for by name; it wins when it has scored pairs, even when it failed on
        all of them (the evaluation then warns).
    failures : dict, optional
        ``method_failures`` of the results. Without it, no method counts as failed.
    requested_by : str
        Who asked for ``requested`` (``--reference``, a run's setting), for the reason.

    Returns
    -------
    (str or None, str)
        The reference (None when nothing is scored) and the reason. Without a usable request
        the choice is automatic among the methods that succeeded on at least one scored task
        (a method that failed on every one is scored with its initial errors: it is no
        registration at all; all methods when none succeeded): ``drmime`` when it is among
        them, else the one with the lowest mean other than the ``identity`` baseline, so that
        the tests still compare every method with the best one.
    """
    methods = [str(m) for m in table.columns]
    if not methods:
        return None, "no scored pairs"
    if requested:
        if requested in methods:
            return requested, f"requested ({requested_by})"
        why = f"requested reference {requested!r} has no scored pairs; "
    else:
        why = ""
    failures = failures or {}
    never = [m for m in methods
             if failures.get(m, (0, 0))[1] and failures[m][0] >= failures[m][1]]
    usable = [m for m in methods if m not in never] or methods
    dropped = [m for m in never if m not in usable]
    if DEFAULT_REFERENCE in usable:
        return DEFAULT_REFERENCE, why + f"default: {DEFAULT_REFERENCE} ran"
    candidates = [m for m in usable if m != BASELINE] or usable
    means = table[candidates].mean(axis=0)
    best = str(means.idxmin())
    head = (f"{DEFAULT_REFERENCE} failed on every scored task" if DEFAULT_REFERENCE in dropped
            else f"{DEFAULT_REFERENCE} did not run")
    excluded = [f"the {BASELINE} baseline"] if BASELINE in usable and BASELINE != best else []
    failing = [m for m in dropped if m != DEFAULT_REFERENCE]
    if failing:
        excluded.append(f"{', '.join(failing)}, which failed on every scored task")
    return best, why + (f"{head}: lowest mean {METRIC.upper()}"
                        + (f", excluding {' and '.join(excluded)}" if excluded else ""))


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
    #: The NAED normalisation of the records (several joined by ", "; None without records).
    normalisation: str | None = None
    #: What a reader must know before trusting the tables (shown by the paper table).
    warnings: list[str] = field(default_factory=list)

    def noted_tests(self) -> list[PairedTest]:
        """Comparisons of at least two pairs whose test is degenerate (``note`` says why);
        fewer than two pairs is among ``warnings`` already."""
        return [t for t in self.tests if t.note and t.n_pairs >= 2]

    def unpaired_tests(self) -> list[PairedTest]:
        """Comparisons that left out pairs only one of the two methods has."""
        return [t for t in self.tests if t.n_unpaired]


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


def _is_fire(results: pd.DataFrame) -> bool:
    if "meta_category" not in results:
        return False
    scored = results[results["tre_mean"].notna()]  # unscored pairs draw no curve
    cats = set(scored["meta_category"].dropna().astype(str))
    return bool(cats) and cats <= set(FIRE_CATEGORIES)


def success_curves(results: pd.DataFrame, thresholds: np.ndarray = FIRE_THRESHOLDS
                   ) -> tuple[dict, dict, bool]:
    """Success rate of every scored task's mean error (native px) at each threshold.

    Returns ``(curves, aucs, fire)``: per method, group ``"all"`` and, when the pairs carry FIRE
    categories (``meta_category`` in S, P, A), one curve per category, their AUCs and ``mAUC``.
    """
    fire = _is_fire(results)
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


def group_frame(results: pd.DataFrame) -> pd.DataFrame:
    """Per ``GROUP_KEYS`` key, group value and method: tasks, scored, failed, NAED mean, std
    (ddof 1) and median, mean median rTRE, and the success AUC over 1..25 px."""
    columns = ["key", "group", "method", "n_tasks", "n_scored", "n_failed", "naed_mean",
               "naed_std", "naed_median", "rtre_median_mean", "success_auc"]
    rows = []
    for key in GROUP_KEYS:
        col = f"meta_{key}"
        if col not in results or results[col].isna().all():
            continue
        for (value, method), g in results.groupby([col, "method"], sort=True):
            tre = g["tre_mean"].to_numpy(dtype=float)
            rows.append({
                "key": key, "group": str(value), "method": method, "n_tasks": len(g),
                "n_scored": int(g["scored"].astype(bool).sum()),
                "n_failed": int((g["status"] == "failed").sum()),
                "naed_mean": g["naed"].mean(), "naed_std": g["naed"].std(ddof=1),
                "naed_median": g["naed"].median(),
                "rtre_median_mean": g["rtre_median"].mean(),
                "success_auc": float(np.mean(success_curve(tre))) if np.isfinite(tre).any()
                else math.nan,
            })
    return pd.DataFrame(rows, columns=columns)


def seed_text(seeds: list[int], limit: int = 6) -> str:
    """``"seed 0"``, ``"seeds 0, 1, 2"``, or for many ``"40 seeds (0 … 39)"``."""
    if len(seeds) == 1:
        return f"seed {seeds[0]}"
    if len(seeds) <= limit:
        return "seeds " + ", ".join(map(str, seeds))
    return f"{len(seeds)} seeds ({seeds[0]} … {seeds[-1]})"


def seed_groups(seeds: dict[str, list[int]]) -> str:
    """Methods grouped by their seeds: ``"seed 0: identity, ncc; seeds 0, 1, 2: drmime"``."""
    groups: dict[tuple[int, ...], list[str]] = {}
    for method, s in seeds.items():
        groups.setdefault(tuple(s), []).append(method)
    return "; ".join(f"{seed_text(list(s))}: {', '.join(ms)}" for s, ms in groups.items())


def _warnings(ref: str | None, failures: dict[str, tuple[int, int]],
              seeds: dict[str, list[int]], tests: list[PairedTest]) -> list[str]:
    """Plain-text warnings about the comparison (see ``Evaluation.warnings``)."""
    out = []
    failed, scored = failures.get(ref, (0, 0)) if ref is not None else (0, 0)
    if scored and 2 * failed > scored:
        how = "all" if failed == scored else "most"
        out.append(f"The reference {ref} failed on {failed} of {scored} scored tasks; failed "
                   f"tasks are scored with their initial error, so {how} of its values are those "
                   "of no registration at all and the tests compare the other methods with "
                   "that, not with a registration. Choose another reference with --reference.")
    if len({tuple(s) for s in seeds.values()}) > 1:
        out.append(f"The methods ran with different seeds ({seed_groups(seeds)}): their "
                   "per-pair values are means over different numbers of runs, so the comparison "
                   "is not like for like.")
    short = [t for t in tests if t.n_pairs < 2]
    if short:
        each = ", ".join(f"{t.method} ({t.n_pairs} pair{'s' if t.n_pairs != 1 else ''})"
                         for t in short)
        out.append(f"No p-value for {each}: a paired test needs at least two pairs that both "
                   f"the method and the reference {ref} have.")
    return out


def evaluate(results: pd.DataFrame, reference: str | None = None, *,
             requested_by: str = "--reference") -> Evaluation:
    """The cross-method evaluation of a ``results_frame``.

    ``reference`` is a requested reference method (``choose_reference``) and ``requested_by``
    who requested it, for the reason shown. Comparisons are in the paper table's order.
    """
    table = pair_table(results, METRIC)
    failures = method_failures(results)
    ref, reason = choose_reference(table, reference, failures, requested_by=requested_by)
    tests = compare_to_reference(table, ref) if ref is not None else []
    fr = friedman(table) if table.shape[1] >= 2 else None
    paper = _paper_rows(table, ref, tests)
    order = {r.method: i for i, r in enumerate(paper)}
    tests.sort(key=lambda t: order.get(t.method, len(order)))
    curves, aucs, fire = (success_curves(results) if len(results) else ({}, {}, False))
    n = len(results)
    seeds = ({str(m): sorted(int(s) for s in g.unique())
              for m, g in results.groupby("method", sort=True)["seed"]} if n else {})
    norms = sorted(set(results["normalisation"].dropna().astype(str))) if n else []
    counts = {
        "tasks": n,
        "scored": int(results["scored"].astype(bool).sum()) if n else 0,
        "failed": int((results["status"] == "failed").sum()) if n else 0,
        "unscored": int((~results["scored"].astype(bool)).sum()) if n else 0,
        "pairs": int(results["pair_id"].nunique()) if n else 0,
        "seeds": sorted(int(s) for s in results["seed"].unique()) if n else [],
        "seeds_per_method": seeds,
    }
    return Evaluation(metric=METRIC, reference=ref, reference_reason=reason, table=table,
                      tests=tests, friedman=fr, paper=paper,
                      thresholds=FIRE_THRESHOLDS.tolist(), curves=curves, aucs=aucs,
                      fire_categories=fire, groups=group_frame(results) if n else
                      group_frame(pd.DataFrame()), counts=counts, seeds=seeds,
                      failures=failures, normalisation=", ".join(norms) or None,
                      warnings=_warnings(ref, failures, seeds, tests))


def stats_frame(ev: Evaluation) -> pd.DataFrame:
    """``stats.csv``: the reference's row (no test) then one row per paired comparison, in the
    paper-table order, with the Friedman mean rank of each method."""
    df = tests_frame(ev.tests)
    if ev.reference is not None:
        ref = ev.table[ev.reference].dropna().to_numpy()
        ref_row = {c: math.nan for c in df.columns}
        ref_row.update(method=ev.reference, reference=ev.reference, n_pairs=int(ref.size),
                       n_unpaired=0, mean=float(ref.mean()),
                       std=float(ref.std(ddof=1)) if ref.size > 1 else math.nan,
                       reference_mean=float(ref.mean()), mean_diff=0.0)
        df = pd.concat([pd.DataFrame([ref_row], columns=df.columns).astype(df.dtypes), df],
                       ignore_index=True) if len(df) else pd.DataFrame([ref_row])
    if df.empty:
        return pd.DataFrame(columns=["metric", *tests_frame([]).columns, "friedman_mean_rank"])
    order = {r.method: i for i, r in enumerate(ev.paper)}
    df = df.sort_values("method", key=lambda s: s.map(order)).reset_index(drop=True)
    df.insert(0, "metric", ev.metric)
    ranks = ev.friedman.mean_ranks if ev.friedman else {}
    df["friedman_mean_rank"] = df["method"].map(ranks).astype("float64")
    return df


def _records(df: pd.DataFrame) -> list[dict[str, Any]]:
    return [{k: (v.item() if isinstance(v, np.generic) else v) for k, v in row.items()}
            for row in df.to_dict(orient="records")]


def metrics_document(ev: Evaluation, summary: pd.DataFrame,
                     manifest: dict[str, Any] | None = None) -> dict[str, Any]:
    """``metrics.json`` (shaped like the ANHIR / Learn2Reg files).

    Keys: ``aggregates`` per method (the ``summary.csv`` row, whose ``success_auc`` is the same
    number, plus ``success_auc_by_group``: the AUC per group, ``"all"``, the FIRE categories
    and ``mAUC``), ``reference``, ``reference_reason`` and ``reference_failures`` (its failed
    and scored tasks), ``warnings`` (the report's warnings about the comparison, plain text),
    ``comparisons`` (in the paper table's order), ``friedman``, ``paper_table``, ``success``
    curves, ``groups`` and ``counts`` (with ``seeds_per_method``). ``normalisation`` is the
    run's NAED normalisation (``none``: NAED is the mean TRE in native pixels). NaN becomes
    null.
    """
    manifest = manifest or {}
    config = manifest.get("config") if isinstance(manifest.get("config"), dict) else {}
    aggregates = {}
    for row in _records(summary):
        method = row.pop("method")
        row["success_auc_by_group"] = ev.aucs.get(method, {})
        aggregates[method] = row
    groups: dict[str, Any] = {}
    for row in _records(ev.groups):
        key, group, method = row.pop("key"), row.pop("group"), row.pop("method")
        groups.setdefault(key, {}).setdefault(group, {})[method] = row
    failed, scored = ev.failures.get(ev.reference, (0, 0)) if ev.reference else (0, 0)
    return {
        "metric": ev.metric,
        "normalisation": config.get("normalisation") or ev.normalisation,
        "dataset": config.get("dataset"),
        "reference": ev.reference,
        "reference_reason": ev.reference_reason,
        "reference_failures": ({"failed": failed, "scored": scored} if ev.reference else None),
        "warnings": list(ev.warnings),
        "per_pair_values": "mean over seeds",
        "aggregates": aggregates,
        "paper_table": [asdict(r) for r in ev.paper],
        "comparisons": [asdict(t) for t in ev.tests],
        "friedman": asdict(ev.friedman) if ev.friedman else None,
        "success": {"thresholds_px": ev.thresholds, "fire_categories": ev.fire_categories,
                    "curves": ev.curves, "auc": ev.aucs},
        "groups": groups,
        "counts": ev.counts,
    }


def write_evaluation(run_dir: Path, ev: Evaluation, summary: pd.DataFrame,
                     manifest: dict[str, Any] | None = None) -> dict[str, Path]:
    """Write ``stats.csv`` and ``metrics.json`` into ``run_dir``; return their paths."""
    run_dir = Path(run_dir)
    paths = {"stats": run_dir / STATS_CSV, "metrics": run_dir / METRICS_JSON}
    stats_frame(ev).to_csv(paths["stats"], index=False)
    write_json_atomic(paths["metrics"], metrics_document(ev, summary, manifest))
    return paths


__all__ = ["DEFAULT_REFERENCE", "GROUP_KEYS", "METRICS_JSON", "STATS_CSV", "Evaluation",
           "PaperRow", "choose_reference", "evaluate", "group_frame", "method_failures",
           "metrics_document", "seed_groups", "seed_text", "stats_frame", "success_curves",
           "write_evaluation"]
