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
from mibench.reports.units import MIXED, common_unit, record_unit
from mibench.stats import pair_table

#: Metric columns of ``results.csv``, in order (the keys of ``mibench.metrics.pair_scores``).
METRICS = ("naed", "tre_mean", "tre_median", "tre_max", "ire_mean", "ire_median", "ire_max",
           "rtre_mean", "rtre_median", "rtre_max", "robustness")

#: Columns of ``results.csv`` before the metrics, then after them; ``meta_*`` columns (one per
#: pair-metadata key) follow at the end.
RESULT_HEAD = ("method", "pair_id", "seed", "dataset", "status", "error", "scored", "wall_s",
               "device_s") + ("cpu_s", "peak_rss_mb", "peak_gpu_mb", "load_cpus", "cpus",
                              "contended")

#: The cost fields of a record (seconds, MiB, CPUs), None or absent in records written before
#: they were measured. ``contended``: the task did not get the CPU its threads needed.
COST_FIELDS = ("cpu_s", "peak_rss_mb", "peak_gpu_mb", "load_cpus", "cpus")
RESULT_TAIL = ("n_landmarks", "naed_norm", "norm_length", "unit", "device", "torch_threads",
               "key", "method_params", "reused_seed")
RESULT_COLUMNS = RESULT_HEAD + METRICS + RESULT_TAIL

SUMMARY_COLUMNS = ("method", "n_pairs", "n_scored", "n_unscored", "n_failed", "naed_mean",
                   "naed_std", "naed_median", "tre_mean", "tre_median", "robustness_mean",
                   "rtre_median_mean", "rtre_max_mean", "rank_rtre_median", "rank_rtre_max",
                   "success_auc", "time_median_s", "time_iqr_s", "time_total_s", "unit")

#: Deformation columns of ``summary.csv`` (``summary column``, ``results.csv`` column, how),
#: present only when some record has the result column (non-matrix transforms, see
#: :func:`mibench.registration.deformation_metrics`): mean and max over tasks of the share of
#: folding pixels, mean of Learn2Reg's SD of log-Jacobian.
DEFORMATION_SUMMARY = (("folding_mean", "folding", "mean"), ("folding_max", "folding", "max"),
                       ("sd_log_jacobian_mean", "sd_log_jacobian", "mean"))


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


def _contended(value: Any) -> Any:
    return bool(value) if isinstance(value, (bool, np.bool_, int)) else None


def results_frame(records: Iterable[Record]) -> pd.DataFrame:
    """One row per record (method x pair x seed), sorted by method, pair_id, seed.

    Columns: ``RESULT_COLUMNS`` (every metric of ``METRICS``, NaN when not scored; any further
    metric a record carries is appended after them), then ``meta_<key>`` for each pair-metadata
    key (non-scalar values as compact JSON). ``method_params`` is compact JSON;
    ``torch_threads`` the torch threads the task ran with (empty when the record does not say);
    ``naed_norm`` the NAED normaliser the record was scored with; ``unit`` the unit of its
    errors and ``norm_length`` (``px``, ``mm`` or ``um``; ``px`` for records that do not say).
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
            **{k: _float(getattr(rec, k)) for k in COST_FIELDS},
            "contended": _contended(rec.contended),
        }
        row.update({k: _float(v) for k, v in metrics.items()})
        row.update({
            "n_landmarks": len(rec.landmark_errors or []), "naed_norm": rec.naed_norm,
            "norm_length": _float(rec.norm_length), "unit": record_unit(rec),
            "device": rec.device,
            "torch_threads": _threads(rec.info), "key": rec.key,
            "method_params": canonical_json(task.method_params or {}), "reused_seed": None,
        })
        for k, v in (rec.meta or {}).items():
            meta_keys.add(str(k))
            row[f"meta_{k}"] = _scalar(v)
        rows.append(row)
    columns = (list(RESULT_HEAD) + list(METRICS) + sorted(extra_metrics) + list(RESULT_TAIL)
               + [f"meta_{k}" for k in sorted(meta_keys)])
    frame = pd.DataFrame(rows, columns=columns)
    for col in (list(METRICS) + sorted(extra_metrics) + ["wall_s", "device_s", "norm_length"]
                + list(COST_FIELDS)):
        frame[col] = frame[col].astype("float64")
    # empty cells when unknown
    frame["contended"] = frame["contended"].astype("boolean")
    for col in ("torch_threads", "reused_seed"):
        frame[col] = frame[col].astype("Int64")
    if frame.empty:
        return frame
    return frame.sort_values(["method", "pair_id", "seed"], kind="stable").reset_index(drop=True)


def reuse_single_seed(results: pd.DataFrame, methods: Collection[str],
                      seeds: list[int]) -> pd.DataFrame:
    """``results`` with the one record of each seed-independent method reused for every seed.

    A method in ``methods`` (run.json's ``single_seed_methods``: it does not use the seed) runs
    only with ``seeds[0]`` in a multi-seed run; its row of each pair is copied for every other
    seed of ``seeds`` that has no record of its own, so that every method has one value per
    (pair, seed) and paired tests stay paired. A copy says which seed it reuses
    (``reused_seed``) and has no timings or cost (the task ran once: its time counts once).
    """
    if results.empty or len(seeds) < 2 or not methods:
        return results
    first = seeds[0]
    have = set(zip(results["method"], results["pair_id"], results["seed"], strict=True))
    source = results[results["method"].isin(set(methods)) & (results["seed"] == first)]
    copies = []
    for seed in seeds[1:]:
        missing_rows = [(m, p, seed) not in have
                        for m, p in zip(source["method"], source["pair_id"], strict=True)]
        rows = source[missing_rows].copy()
        if rows.empty:
            continue
        rows["seed"], rows["reused_seed"] = seed, first
        rows[["wall_s", "device_s", *COST_FIELDS]] = np.nan
        rows["contended"] = pd.NA
        copies.append(rows)
    if not copies:
        return results
    out = pd.concat([results, *copies], ignore_index=True)
    return out.sort_values(["method", "pair_id", "seed"], kind="stable").reset_index(drop=True)


TIMING_COLUMNS = ("method", "n_timed", "wall_median_s", "cpu_median_s", "device_median_s",
                  "cpu_per_wall", "rss_median_mb", "rss_max_mb", "gpu_max_mb", "n_contended",
                  "n_contention_known", "load_cpus_mean")


def timing_frame(results: pd.DataFrame, order: list[str] | None = None) -> pd.DataFrame:
    """Per method, the cost of its tasks that ran (reused copies left out, see
    :func:`reuse_single_seed`): medians of wall, CPU and device time [s], the median of CPU time
    / wall time (about the cores a task kept busy), median and max peak resident memory and max
    peak GPU memory [MiB], how many tasks were contended out of how many say, and the mean
    number of CPUs other processes kept busy. Rows in ``order`` (default: by name)."""
    if results.empty:
        return pd.DataFrame(columns=list(TIMING_COLUMNS))
    ran = results[results["reused_seed"].isna()] if "reused_seed" in results else results
    rows = []
    for method, g in ran.groupby("method", sort=True):
        wall, cpu = g["wall_s"], g["cpu_s"]
        ratio = (cpu / wall.where(wall > 0)).dropna()
        known = g["contended"].dropna()
        rows.append({
            "method": method, "n_timed": int(wall.notna().sum()),
            "wall_median_s": wall.median(), "cpu_median_s": cpu.median(),
            "device_median_s": g["device_s"].median(),
            "cpu_per_wall": ratio.median() if len(ratio) else np.nan,
            "rss_median_mb": g["peak_rss_mb"].median(), "rss_max_mb": g["peak_rss_mb"].max(),
            "gpu_max_mb": g["peak_gpu_mb"].max(),
            "n_contended": int(known.astype(bool).sum()), "n_contention_known": int(len(known)),
            "load_cpus_mean": g["load_cpus"].mean(),
        })
    frame = pd.DataFrame(rows, columns=list(TIMING_COLUMNS))
    if order:
        rank = {m: i for i, m in enumerate(order)}
        frame = frame.sort_values("method", key=lambda s: s.map(lambda m: rank.get(m, len(rank))),
                                  kind="stable").reset_index(drop=True)
    return frame


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
    registered but not scored (no fixed landmarks). ``unit``: the unit of the method's errors
    (``px`` for results without a ``unit`` column); ``mixed`` when its tasks have errors in
    several units, which are not averaged: its ``tre_mean``, ``tre_median`` and
    ``success_auc`` are then NaN (NAED is dimensionless and stays). When some record holds
    deformation statistics (a non-matrix transform), :data:`DEFORMATION_SUMMARY`'s columns
    follow: ``folding_mean`` / ``folding_max`` (share of fixed pixels with ``det J <= 0``) and
    ``sd_log_jacobian_mean`` (Learn2Reg's), over the tasks that have them (NaN for a method
    whose results are matrices). Rows: by ascending ``naed_mean``, the ``baseline`` methods
    last (:func:`method_order`).
    """
    if results.empty:
        return pd.DataFrame(columns=list(SUMMARY_COLUMNS))
    rows = []
    for method, g in results.groupby("method", sort=True):
        counts = task_counts(g)
        unit = common_unit(g["unit"]) if "unit" in g else common_unit(())
        # Errors in different units have no mean: blank the absolute columns, keep NAED.
        blank = np.nan if unit == MIXED else 1.0
        tre = g["tre_mean"] * blank
        rows.append({
            "method": method,
            "n_pairs": counts["n_tasks"],
            "n_scored": counts["n_scored"],
            "n_unscored": counts["n_unscored"],
            "n_failed": counts["n_failed"],
            "naed_mean": g["naed"].mean(),
            "naed_std": g["naed"].std(ddof=1),
            "naed_median": g["naed"].median(),
            "tre_mean": tre.mean(),
            "tre_median": (g["tre_median"] * blank).median(),
            "robustness_mean": g["robustness"].mean(),
            "rtre_median_mean": g["rtre_median"].mean(),
            "rtre_max_mean": g["rtre_max"].mean(),
            "success_auc": success_auc(tre.to_numpy(dtype=float))
            if tre.notna().any() else np.nan,
            "time_median_s": g["wall_s"].median(),
            "time_iqr_s": g["wall_s"].quantile(0.75) - g["wall_s"].quantile(0.25),
            "time_total_s": g["wall_s"].sum(min_count=1),
            "unit": unit,
            **{col: getattr(g[src], how)() for col, src, how in DEFORMATION_SUMMARY
               if src in g},
        })
    extra = [col for col, src, _ in DEFORMATION_SUMMARY if src in results]
    summary = pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS) + extra)
    for col in extra:
        summary[col] = summary[col].astype("float64")
    for metric in ("rtre_median", "rtre_max"):
        table = pair_table(results, metric)
        if not table.empty:
            ranks = dict(zip(table.columns, average_ranks(table.to_numpy()), strict=True))
            summary[f"rank_{metric}"] = summary["method"].map(ranks).astype("float64")
    rank = {m: i for i, m in enumerate(method_order(summary, baseline))}
    return summary.sort_values("method", key=lambda s: s.map(rank)).reset_index(drop=True)


__all__ = ["COST_FIELDS", "DEFORMATION_SUMMARY", "METRICS", "RESULT_COLUMNS", "SUMMARY_COLUMNS",
           "method_order", "results_frame", "reuse_single_seed", "summary_frame", "task_counts",
           "timing_frame"]
