"""The machine-readable artefacts of a run: ``results.csv``, ``summary.csv``, ``stats.csv`` and
``metrics.json``, each written from a :class:`~mibench.reports.analysis.RunAnalysis`.

Missing values are empty CSV cells and JSON nulls.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any

import numpy as np
import pandas as pd

from mibench.jsonio import write_json_atomic
from mibench.paths import METRICS_JSON, RESULTS_CSV, STATS_CSV, SUMMARY_CSV
from mibench.reports.analysis import RunAnalysis
from mibench.reports.evaluation import Evaluation
from mibench.stats import tests_frame


def write_results(analysis: RunAnalysis) -> dict[str, Any]:
    """Write ``results.csv`` and ``summary.csv`` (headers only for an empty run); return
    ``{"results": path, "summary": path}``."""
    run_dir = analysis.run_dir
    paths = {"results": run_dir / RESULTS_CSV, "summary": run_dir / SUMMARY_CSV}
    analysis.results.to_csv(paths["results"], index=False)
    analysis.summary.to_csv(paths["summary"], index=False)
    return paths


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


def _rows(df: pd.DataFrame) -> list[dict[str, Any]]:
    return [{k: (v.item() if isinstance(v, np.generic) else v) for k, v in row.items()}
            for row in df.to_dict(orient="records")]


def metrics_document(analysis: RunAnalysis) -> dict[str, Any]:
    """``metrics.json`` (shaped like the ANHIR / Learn2Reg files).

    Keys: ``aggregates`` per method (the ``summary.csv`` row, whose ``success_auc`` is the same
    number, plus ``success_auc_by_group``: the AUC per group, ``"all"``, the FIRE categories
    and ``mAUC``), ``reference``, ``reference_reason`` and ``reference_failures`` (its failed
    and scored tasks), ``warnings`` (the report's warnings about the comparison, plain text),
    ``comparisons`` (in the paper table's order), ``friedman``, ``paper_table``, ``success``
    curves, ``groups`` and ``counts`` (with ``seeds_per_method``). ``naed_norm`` is the run's
    NAED normaliser (``none``: NAED is the mean TRE in native pixels); ``unit`` the unit of
    every landmark error and threshold here (``px``, ``mm``, ``um``, or ``mixed`` with
    ``unit_counts`` the tasks in each; ``thresholds_px`` keeps its name but is in ``unit``);
    ``protocol`` the
    dataset's evaluation protocol (null when its spec is unknown here; the success curves are
    computed for every run, the report shows them on FIRE data only). NaN becomes null.
    """
    ev = analysis.evaluation
    aggregates = {}
    for row in _rows(analysis.summary):
        method = row.pop("method")
        row["success_auc_by_group"] = ev.aucs.get(method, {})
        aggregates[method] = row
    groups: dict[str, Any] = {}
    for row in _rows(ev.groups):
        key, group, method = row.pop("key"), row.pop("group"), row.pop("method")
        groups.setdefault(key, {}).setdefault(group, {})[method] = row
    failed, scored = ev.failures.get(ev.reference, (0, 0)) if ev.reference else (0, 0)
    return {
        "metric": ev.metric,
        "naed_norm": analysis.naed_norm,
        "unit": ev.unit,
        "unit_counts": ev.unit_counts,
        "dataset": analysis.config.get("dataset"),
        "protocol": analysis.protocol,
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


def write_evaluation(analysis: RunAnalysis) -> dict[str, Any]:
    """Write ``stats.csv`` and ``metrics.json``; return ``{"stats": path, "metrics": path}``."""
    run_dir = analysis.run_dir
    paths = {"stats": run_dir / STATS_CSV, "metrics": run_dir / METRICS_JSON}
    stats_frame(analysis.evaluation).to_csv(paths["stats"], index=False)
    write_json_atomic(paths["metrics"], metrics_document(analysis))
    return paths


__all__ = ["metrics_document", "stats_frame", "write_evaluation", "write_results"]
