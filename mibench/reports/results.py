"""The results tables of a run: one row per record (``results.csv``) and one per method
(``summary.csv``). Pure functions over records and data frames.

Failed pairs are already scored with their initial error in their records, so they enter every
statistic like any other pair (the README's *Conventions*); only unscored pairs (no fixed landmarks)
have no metric values and are left out of the metric statistics (NaN).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Any

import numpy as np
import pandas as pd

from mibench.jsonio import canonical_json
from mibench.metrics import average_ranks, success_auc
from mibench.registration import Record
from mibench.stats import pair_table

#: Metric columns of ``results.csv``, in order (the keys of ``mibench.metrics.pair_scores``).
METRICS = ("naed", "tre_mean", "tre_median", "tre_max", "ire_mean", "ire_median", "ire_max",
           "rtre_mean", "rtre_median", "rtre_max", "robustness")

#: Columns of ``results.csv`` before the metrics, then after them; ``meta_*`` columns (one per
#: pair-metadata key) follow at the end.
RESULT_HEAD = ("method", "pair_id", "seed", "dataset", "status", "error", "scored", "wall_s",
               "device_s")
RESULT_TAIL = ("n_landmarks", "naed_norm", "norm_length", "device", "torch_threads", "key",
               "method_params")
RESULT_COLUMNS = RESULT_HEAD + METRICS + RESULT_TAIL

SUMMARY_COLUMNS = ("method", "n_pairs", "n_scored", "n_unscored", "n_failed", "naed_mean",
                   "naed_std", "naed_median", "tre_mean", "tre_median", "robustness_mean",
                   "rtre_median_mean", "rtre_max_mean", "rank_rtre_median", "rank_rtre_max",
                   "success_auc", "time_median_s", "time_iqr_s", "time_total_s")


def _scalar(value: Any) -> Any:
    """A CSV-friendly cell: scalars as they are, anything else as compact JSON."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    return canonical_json(value)


def _threads(info: Any) -> Any:
    """The torch threads a task ran with (``info.torch_threads``); None when not recorded."""
    n = info.get("torch_threads") if isinstance(info, dict) else None
    return n if isinstance(n, int) and not isinstance(n, bool) else None


def _float(value: Any) -> float:
    try:
        return float(value) if value is not None else np.nan
    except (TypeError, ValueError):
        return np.nan


def results_frame(records: Iterable[Record]) -> pd.DataFrame:
    """One row per record (method x pair x seed), sorted by method, pair_id, seed.

    Columns: ``RESULT_COLUMNS`` (every metric of ``METRICS``, NaN when not scored; any further
    metric a record carries is appended after them), then ``meta_<key>`` for each pair-metadata
    key (non-scalar values as compact JSON). ``method_params`` is compact JSON;
    ``torch_threads`` the torch threads the task ran with (empty when the record does not say);
    ``naed_norm`` the NAED normaliser the record was scored with.
    """
    rows = []
    extra_metrics: set[str] = set()
    meta_keys: set[str] = set()
    for rec in records:
        task = rec.task
        metrics = rec.metrics or {}
        extra_metrics.update(k for k in metrics if k not in METRICS)
        row: dict[str, Any] = {
            "method": task.method, "pair_id": task.pair_id, "seed": task.seed,
            "dataset": task.dataset, "status": rec.status, "error": rec.error,
            "scored": bool(rec.scored), "wall_s": _float(rec.wall_s),
            "device_s": _float(rec.device_s),
        }
        row.update({k: _float(v) for k, v in metrics.items()})
        row.update({
            "n_landmarks": len(rec.landmark_errors or []), "naed_norm": rec.naed_norm,
            "norm_length": _float(rec.norm_length), "device": rec.device,
            "torch_threads": _threads(rec.info), "key": rec.key,
            "method_params": canonical_json(task.method_params or {}),
        })
        for k, v in (rec.meta or {}).items():
            meta_keys.add(str(k))
            row[f"meta_{k}"] = _scalar(v)
        rows.append(row)
    columns = (list(RESULT_HEAD) + list(METRICS) + sorted(extra_metrics) + list(RESULT_TAIL)
               + [f"meta_{k}" for k in sorted(meta_keys)])
    frame = pd.DataFrame(rows, columns=columns)
    for col in list(METRICS) + sorted(extra_metrics) + ["wall_s", "device_s", "norm_length"]:
        frame[col] = frame[col].astype("float64")
    frame["torch_threads"] = frame["torch_threads"].astype("Int64")  # empty cell when unknown
    if frame.empty:
        return frame
    return frame.sort_values(["method", "pair_id", "seed"], kind="stable").reset_index(drop=True)


def task_counts(tasks: pd.DataFrame) -> dict[str, int]:
    """How many rows of a ``results_frame`` (tasks) there are, and how many of them were scored,
    not scored (no fixed landmarks) and failed: the one count behind every table."""
    if tasks.empty:
        return {"n_tasks": 0, "n_scored": 0, "n_unscored": 0, "n_failed": 0}
    scored = tasks["scored"].astype(bool)
    return {"n_tasks": int(len(tasks)), "n_scored": int(scored.sum()),
            "n_unscored": int((~scored).sum()),
            "n_failed": int((tasks["status"] == "failed").sum())}


def method_order(summary: pd.DataFrame, baseline: Collection[str] = ()) -> list[str]:
    """Methods by ascending NAED mean (no value last), the ``baseline`` methods (those that do
    not register) at the very end."""
    if summary.empty:
        return []
    s = summary.assign(_base=summary["method"].isin(set(baseline)))
    s = s.sort_values(["_base", "naed_mean", "method"], na_position="last", kind="stable")
    return list(s["method"])


def summary_frame(results: pd.DataFrame, baseline: Collection[str] = ()) -> pd.DataFrame:
    """Per-method statistics of a ``results_frame`` (see ``SUMMARY_COLUMNS``).

    ``n_pairs`` counts tasks (pairs x seeds); failed pairs count in every statistic; ``naed_std``
    uses ddof=1 (NaN for a single pair). ``tre_mean`` is the mean over pairs of their mean TRE,
    ``tre_median`` the median over pairs of their median TRE. Times are ``wall_s`` (registration
    alone); ``time_iqr_s`` their interquartile range. ``rtre_*_mean`` are ANHIR's average median
    / max rTRE; ``rank_rtre_*`` ANHIR's average rank of them (per pair, means over seeds; a
    method missing a pair gets the worst rank); ``success_auc`` the mean success rate of the
    tasks' mean error over 1..25 native px (FIRE's AUC, over all pairs). ``n_unscored``: tasks
    registered but not scored (no fixed landmarks). Rows: by ascending ``naed_mean``, the
    ``baseline`` methods last (:func:`method_order`).
    """
    if results.empty:
        return pd.DataFrame(columns=list(SUMMARY_COLUMNS))
    rows = []
    for method, g in results.groupby("method", sort=True):
        counts = task_counts(g)
        rows.append({
            "method": method,
            "n_pairs": counts["n_tasks"],
            "n_scored": counts["n_scored"],
            "n_unscored": counts["n_unscored"],
            "n_failed": counts["n_failed"],
            "naed_mean": g["naed"].mean(),
            "naed_std": g["naed"].std(ddof=1),
            "naed_median": g["naed"].median(),
            "tre_mean": g["tre_mean"].mean(),
            "tre_median": g["tre_median"].median(),
            "robustness_mean": g["robustness"].mean(),
            "rtre_median_mean": g["rtre_median"].mean(),
            "rtre_max_mean": g["rtre_max"].mean(),
            "success_auc": success_auc(g["tre_mean"].to_numpy(dtype=float))
            if g["tre_mean"].notna().any() else np.nan,
            "time_median_s": g["wall_s"].median(),
            "time_iqr_s": g["wall_s"].quantile(0.75) - g["wall_s"].quantile(0.25),
            "time_total_s": g["wall_s"].sum(min_count=1),
        })
    summary = pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))
    for metric in ("rtre_median", "rtre_max"):
        table = pair_table(results, metric)
        if not table.empty:
            ranks = dict(zip(table.columns, average_ranks(table.to_numpy()), strict=True))
            summary[f"rank_{metric}"] = summary["method"].map(ranks).astype("float64")
    rank = {m: i for i, m in enumerate(method_order(summary, baseline))}
    return summary.sort_values("method", key=lambda s: s.map(rank)).reset_index(drop=True)


__all__ = ["METRICS", "RESULT_COLUMNS", "SUMMARY_COLUMNS", "method_order", "results_frame",
           "summary_frame", "task_counts"]
