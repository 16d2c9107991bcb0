"""The report of ``mibench estimators landscape``: the five properties and the 1-D profiles.

From the run's :class:`~mibench.landscape.LandscapeRecord` s: ``results.csv`` (one row per
record), ``summary.csv`` (per estimator, over pairs: mean and SD of ACC, DO at the smallest
radius, CR, NOM and RON), one profile figure per pair with every estimator (``fig_profiles_*``)
and ``report.html``. The definitions are in ``docs/estimator_landscape.md``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from mibench.landscape import LandscapeRecord
from mibench.manifest import read_manifest
from mibench.paths import RESULTS_CSV, SUMMARY_CSV, figure_name
from mibench.records import iter_records
from mibench.reports.formatting import fmt, fmt_pm
from mibench.reports.html import environment, write_page
from mibench.reports.plotting import new_figure, png_bytes

PROPERTIES = ("acc", "do", "cr", "nom", "ron")
#: Profile figures drawn into the report (the first pairs); every pair's values are in the records.
MAX_FIGURES = 4


def results_frame(records: list[LandscapeRecord]) -> pd.DataFrame:
    columns = ["estimator", "pair_id", "seed", "status", "error", "gold_source",
               "gold_residual_px", "acc", "do_radius", "do", "cr", "nom", "ron", "wall_s",
               "device"]
    rows = [{"estimator": r.task.estimator, "pair_id": r.task.pair_id, "seed": r.task.seed,
             "status": r.status, "error": r.error, "gold_source": r.gold_source,
             "gold_residual_px": r.gold_residual_px, "acc": r.acc,
             "do_radius": r.do_radii[0] if r.do_radii else None,
             "do": r.do[0] if r.do else None, "cr": r.cr, "nom": r.nom, "ron": r.ron,
             "wall_s": r.wall_s, "device": r.device} for r in records]
    return pd.DataFrame(rows, columns=columns).sort_values(
        ["estimator", "pair_id", "seed"], kind="stable").reset_index(drop=True)


def summary_frame(results: pd.DataFrame) -> pd.DataFrame:
    """Per estimator: mean and SD (ddof 1) over its successful tasks of each property."""
    rows = []
    for estimator, group in results.groupby("estimator", sort=False):
        ok = group[group["status"] == "ok"]
        row = {"estimator": estimator, "tasks": len(group), "failed": len(group) - len(ok)}
        for prop in PROPERTIES:
            values = ok[prop].astype(float)
            row[f"{prop}_mean"] = values.mean() if len(values) else math.nan
            row[f"{prop}_sd"] = values.std(ddof=1) if len(values) > 1 else math.nan
        row["time_median_s"] = ok["wall_s"].median()
        rows.append(row)
    return pd.DataFrame(rows)


def draw_profiles(records: list[LandscapeRecord], pair_id: str) -> bytes | None:
    """The 1-D profiles of every estimator on one pair: one panel per parameter, each curve
    scaled to [0, 1] (estimators differ in units) and turned higher-is-better."""
    mine = [r for r in records if r.task.pair_id == pair_id and r.status == "ok"]
    if not mine:
        return None
    names, units = mine[0].parameters, mine[0].units
    fig, axes = new_figure(3.2 * len(names), 3.0, 1, len(names))
    axes = axes if isinstance(axes, list) else [axes]
    for r in mine:
        for i, ax in enumerate(axes):
            v = np.asarray(r.profile_values[i], float) * (1 if r.higher_is_better else -1)
            span = np.nanmax(v) - np.nanmin(v)
            v = (v - np.nanmin(v)) / span if span > 0 else np.zeros_like(v)
            ax.plot(r.profile_offsets[i], v, label=r.task.estimator)
    for ax, name, unit in zip(axes, names, units, strict=True):
        ax.set_xlabel(f"{name} [{unit}]")
        ax.axvline(0, color="#999", lw=0.8)
    axes[0].set_ylabel("similarity (scaled, higher is better)")
    axes[-1].legend(fontsize=7)
    fig.tight_layout()
    return png_bytes(fig)


@dataclass(frozen=True)
class LandscapeReport:
    run_dir: Path
    html: Path
    results: pd.DataFrame
    summary: pd.DataFrame


def build_landscape_report(run_dir: Path) -> LandscapeReport:
    """Write ``results.csv``, ``summary.csv``, the profile figures and ``report.html``."""
    run_dir = Path(run_dir)
    records = list(iter_records(run_dir, LandscapeRecord))
    results = results_frame(records)
    summary = summary_frame(results)
    results.to_csv(run_dir / RESULTS_CSV, index=False)
    summary.to_csv(run_dir / SUMMARY_CSV, index=False)
    figures = []
    for pair_id in list(dict.fromkeys(results["pair_id"]))[:MAX_FIGURES]:
        png = draw_profiles(records, pair_id)
        if png is not None:
            (run_dir / figure_name(f"profiles_{pair_id}")).write_bytes(png)
            figures.append({"png": png, "alt": f"profiles of {pair_id}",
                            "caption": f"1-D profiles around the gold standard of {pair_id}"})
    rows = [{"estimator": r.estimator, "tasks": int(r.tasks), "failed": int(r.failed),
             **{p: fmt_pm(getattr(r, f"{p}_mean"), getattr(r, f"{p}_sd"), 3)
                for p in PROPERTIES}, "time": fmt(r.time_median_s)}
            for r in summary.itertuples(index=False)]
    gold = results[["pair_id", "gold_source", "gold_residual_px"]].drop_duplicates("pair_id")
    failures = results[results["status"] != "ok"][["estimator", "pair_id", "seed", "error"]]
    html = write_page(run_dir, environment().get_template("landscape.html.j2").render(
        run_dir=str(run_dir), config=read_manifest(run_dir).get("config") or {}, rows=rows,
        figures=figures, gold=gold.to_dict("records"), failures=failures.to_dict("records"),
        built=datetime.now(UTC).isoformat(timespec="seconds")))
    return LandscapeReport(run_dir, html, results, summary)
