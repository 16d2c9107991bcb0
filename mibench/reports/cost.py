"""The report of ``mibench estimators cost``: time and memory against image size.

From the run's :class:`~mibench.cost.CostRecord` s: ``results.csv`` (one row per record),
``summary.csv`` (per estimator: the log-log slope of the forward time, of forward + backward,
and of peak memory against pixel count, fitted by least squares over the sizes; 1 is linear;
linearity is judged on the forward slope over the largest sizes),
``fig_cost.png`` and ``report.html``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from mibench.cost import CostRecord
from mibench.manifest import read_manifest
from mibench.paths import RESULTS_CSV, SUMMARY_CSV, figure_name
from mibench.records import iter_records
from mibench.reports.formatting import fmt
from mibench.reports.html import environment, write_page
from mibench.reports.plotting import new_figure, png_bytes

FIGURE = figure_name("cost")
#: A slope within this band of 1 is reported as linear in the pixel count.
LINEAR = (0.8, 1.2)
#: Linearity is judged on the largest sizes: at small ones fixed per-call costs (Python,
#: kernel launches, thread start) dominate and flatten the curve.
ASYMPTOTIC = 3


def results_frame(records: list[CostRecord]) -> pd.DataFrame:
    columns = ["estimator", "side", "pixels", "seed", "status", "error", "forward_s",
               "backward_s", "peak_bytes", "memory_source", "device"]
    rows = [{"estimator": r.task.estimator, "side": r.task.side, "pixels": r.pixels,
             "seed": r.task.seed, "status": r.status, "error": r.error,
             "forward_s": r.forward_s, "backward_s": r.backward_s, "peak_bytes": r.peak_bytes,
             "memory_source": r.memory_source, "device": r.device} for r in records]
    return pd.DataFrame(rows, columns=columns).sort_values(
        ["estimator", "side", "seed"], kind="stable").reset_index(drop=True)


def loglog_slope(pixels: np.ndarray, values: np.ndarray) -> float:
    """Least-squares slope of log(value) against log(pixels); NaN with fewer than two
    positive, finite points."""
    x, y = np.asarray(pixels, float), np.asarray(values, float)
    ok = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    if ok.sum() < 2 or np.unique(x[ok]).size < 2:
        return math.nan
    return float(np.polyfit(np.log(x[ok]), np.log(y[ok]), 1)[0])


def summary_frame(results: pd.DataFrame) -> pd.DataFrame:
    """Per estimator: the slopes over the sizes (medians over seeds first)."""
    rows = []
    for estimator, group in results[results["status"] == "ok"].groupby("estimator", sort=False):
        per_size = group.groupby("pixels")[["forward_s", "backward_s", "peak_bytes"]].median()
        large = per_size.iloc[-ASYMPTOTIC:]
        rows.append({"estimator": estimator, "sizes": len(per_size),
                     "forward_slope": loglog_slope(per_size.index, per_size["forward_s"]),
                     "forward_slope_large": loglog_slope(large.index, large["forward_s"]),
                     "backward_slope": loglog_slope(per_size.index, per_size["backward_s"]),
                     "memory_slope": loglog_slope(per_size.index, per_size["peak_bytes"]),
                     "largest_forward_s": per_size["forward_s"].iloc[-1]})
    for row in rows:
        row["linear"] = LINEAR[0] <= row["forward_slope_large"] <= LINEAR[1]
    columns = ["estimator", "sizes", "forward_slope", "forward_slope_large", "backward_slope",
               "memory_slope", "largest_forward_s", "linear"]
    return pd.DataFrame(rows, columns=columns)


def draw(results: pd.DataFrame) -> bytes | None:
    """Forward time against pixel count, log-log, one line per estimator."""
    ok = results[results["status"] == "ok"]
    if ok.empty:
        return None
    fig, ax = new_figure(7.5, 4.5)
    for estimator, group in ok.groupby("estimator", sort=False):
        per_size = group.groupby("pixels")["forward_s"].median()
        ax.plot(per_size.index, per_size.to_numpy(), marker="o", label=estimator)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("pixels per image")
    ax.set_ylabel("forward time per call [s]")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    return png_bytes(fig)


@dataclass(frozen=True)
class CostReport:
    run_dir: Path
    html: Path
    results: pd.DataFrame
    summary: pd.DataFrame


def build_cost_report(run_dir: Path) -> CostReport:
    """Write ``results.csv``, ``summary.csv``, ``fig_cost.png`` and ``report.html``."""
    run_dir = Path(run_dir)
    results = results_frame(list(iter_records(run_dir, CostRecord)))
    summary = summary_frame(results)
    results.to_csv(run_dir / RESULTS_CSV, index=False)
    summary.to_csv(run_dir / SUMMARY_CSV, index=False)
    png = draw(results)
    if png is not None:
        (run_dir / FIGURE).write_bytes(png)
    times = [{"estimator": r.estimator, "side": int(r.side), "forward": fmt(r.forward_s),
              "backward": fmt(r.backward_s),
              "memory": fmt(r.peak_bytes / 2**20) if pd.notna(r.peak_bytes) else "–",
              "status": r.status, "error": r.error or ""}
             for r in results.itertuples(index=False)]
    slopes = [{"estimator": r.estimator, "sizes": int(r.sizes), "forward": fmt(r.forward_slope),
               "large": fmt(r.forward_slope_large),
               "backward": fmt(r.backward_slope), "memory": fmt(r.memory_slope),
               "linear": "yes" if r.linear else "no"} for r in summary.itertuples(index=False)]
    html = write_page(run_dir, environment().get_template("cost.html.j2").render(
        run_dir=str(run_dir), config=read_manifest(run_dir).get("config") or {}, png=png,
        times=times, slopes=slopes, band=LINEAR, asymptotic=ASYMPTOTIC,
        built=datetime.now(UTC).isoformat(timespec="seconds")))
    return CostReport(run_dir, html, results, summary)
