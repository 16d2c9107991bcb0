"""The report of ``mibench estimators accuracy``: estimates of known MI, scored.

From the run's :class:`~mibench.accuracy.AccuracyRecord` s: ``results.csv`` (one row per
record), ``summary.csv`` (per estimator, task and sample size: truth, mean estimate, bias, SD,
RMSE over seeds, log2(estimate / truth), time), ``rank_agreement.csv`` (per estimator, task
family and size: the Spearman correlation of the mean estimates with the true MI across the
family's sweep, sign-flipped for lower-is-better measures) and ``report.html``. The rules are
those of :mod:`mibench.assessment.scoring`: bias and log2 ratios are in nats and mean something
only for estimators of MI; rank agreement judges every measure (NMI, NCC, MSE included).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from mibench.accuracy import AccuracyRecord, known_tasks
from mibench.assessment.scoring import rank_agreement, score
from mibench.manifest import read_manifest
from mibench.paths import RESULTS_CSV, SUMMARY_CSV
from mibench.records import iter_records
from mibench.reports.formatting import fmt
from mibench.reports.html import environment, write_page
from mibench.reports.plotting import new_figure, png_bytes

RANK_CSV = "rank_agreement.csv"
KEYS = ("estimator", "task", "n")


def results_frame(records: list[Any]) -> pd.DataFrame:
    """One row per record, in a stable order."""
    rows = [{"estimator": r.task.estimator, "task": r.task.task, "family": r.family,
             "parameter": r.parameter, "n": r.task.n, "seed": r.task.seed, "status": r.status,
             "error": r.error, "estimate": r.estimate, "truth": r.truth,
             "higher_is_better": r.higher_is_better, "wall_s": r.wall_s, "device": r.device}
            for r in records]
    columns = ["estimator", "task", "family", "parameter", "n", "seed", "status", "error",
               "estimate", "truth", "higher_is_better", "wall_s", "device"]
    frame = pd.DataFrame(rows, columns=columns)
    # The library's order (each family's sweep in order), not the names' alphabetical one.
    order = {name: i for i, name in enumerate(known_tasks())}
    frame["_order"] = frame["task"].map(order)
    return frame.sort_values(["estimator", "_order", "n", "seed"], kind="stable").drop(
        columns="_order").reset_index(drop=True)


def summary_frame(results: pd.DataFrame) -> pd.DataFrame:
    """Per estimator, task and size: the scores over the seeds that succeeded."""
    rows = []
    for (estimator, task, n), group in results.groupby(list(KEYS), sort=False):
        ok = group[group["status"] == "ok"]
        row = {"estimator": estimator, "task": task, "family": group["family"].iloc[0],
               "n": n, "seeds": len(group), "failed": int((group["status"] != "ok").sum()),
               "truth": group["truth"].dropna().iloc[0] if group["truth"].notna().any()
               else math.nan, "time_median_s": ok["wall_s"].median()}
        if len(ok) and not math.isnan(row["truth"]):
            s = asdict(score(ok["estimate"].to_numpy(float), row["truth"]))
            row.update({k: s[k] for k in ("mean", "bias", "sd", "rmse", "log2_ratio")})
        rows.append(row)
    columns = ["estimator", "task", "family", "n", "seeds", "failed", "truth", "mean", "bias",
               "sd", "rmse", "log2_ratio", "time_median_s"]
    return pd.DataFrame(rows).reindex(columns=columns)


def rank_frame(summary: pd.DataFrame, results: pd.DataFrame) -> pd.DataFrame:
    """Per estimator, family and size: rank agreement of the mean estimates with the truth
    (families whose tasks have at least two distinct true MIs, every task scored)."""
    direction = results.groupby("estimator")["higher_is_better"].first()
    rows = []
    for (estimator, family, n), group in summary.groupby(["estimator", "family", "n"],
                                                         sort=False):
        if group["truth"].nunique() < 2:
            continue
        complete = group["mean"].notna().all()
        rho = rank_agreement(group["mean"], group["truth"], bool(direction[estimator])) \
            if complete else math.nan
        rows.append({"estimator": estimator, "family": family, "n": n, "tasks": len(group),
                     "rank_agreement": rho})
    return pd.DataFrame(rows, columns=["estimator", "family", "n", "tasks", "rank_agreement"])


def draw_bias(summary: pd.DataFrame) -> bytes | None:
    """Bias against sample size, one panel per task family (the mean bias over its tasks),
    one line per estimator: how fast each estimator's bias shrinks with N (bmi's view)."""
    scored = summary.dropna(subset=["bias"])
    if scored.empty or scored["n"].nunique() < 2:
        return None
    families = list(dict.fromkeys(scored["family"]))
    cols = min(4, len(families))
    rows = math.ceil(len(families) / cols)
    fig, axes = new_figure(3.2 * cols, 2.6 * rows, rows, cols)
    axes = axes if isinstance(axes, list) else [axes]
    for ax, family in zip(axes, families, strict=False):
        mine = scored[scored["family"] == family]
        for estimator, group in mine.groupby("estimator", sort=False):
            curve = group.groupby("n")["bias"].mean()
            ax.plot(curve.index, curve.to_numpy(), marker="o", label=estimator)
        ax.axhline(0, color="#999", lw=0.8)
        ax.set_xscale("log")
        sizes = sorted(mine["n"].unique())
        ax.minorticks_off()  # only the sizes run, labelled plainly
        ax.set_xticks(sizes, [str(int(n)) for n in sizes], fontsize=7)
        ax.set_title(family, fontsize=9)
        ax.set_xlabel("values per variable (N)")
    for ax in axes[len(families):]:
        ax.set_visible(False)
    axes[0].set_ylabel("bias [nats]")
    axes[0].legend(fontsize=6)
    fig.tight_layout()
    return png_bytes(fig)


@dataclass(frozen=True)
class AccuracyReport:
    """What :func:`build_accuracy_report` wrote."""

    run_dir: Path
    html: Path
    results: pd.DataFrame
    summary: pd.DataFrame
    ranks: pd.DataFrame


def _colour(log2_ratio: Any) -> str:
    """bmi's table colour: white at 0, red above (over-estimate), blue below, saturating at
    a factor of 4."""
    if log2_ratio is None or not isinstance(log2_ratio, float) or math.isnan(log2_ratio):
        return "#ffffff"
    t = max(-1.0, min(1.0, log2_ratio / 2))
    fade = int(255 * (1 - abs(t)))
    return f"#ff{fade:02x}{fade:02x}" if t > 0 else f"#{fade:02x}{fade:02x}ff"


def _render(run_dir: Path, manifest: dict[str, Any], summary: pd.DataFrame,
            ranks: pd.DataFrame, results: pd.DataFrame) -> str:
    cells = []
    for row in summary.itertuples(index=False):
        cells.append({"estimator": row.estimator, "task": row.task, "n": int(row.n),
                      "truth": fmt(row.truth), "mean": fmt(row.mean), "bias": fmt(row.bias),
                      "sd": fmt(row.sd), "rmse": fmt(row.rmse), "log2": fmt(row.log2_ratio),
                      "colour": _colour(row.log2_ratio), "failed": int(row.failed),
                      "time": fmt(row.time_median_s)})
    # One row per estimator, one column per family, at the largest size (all sizes: the CSV).
    largest = ranks[ranks["n"] == ranks["n"].max()] if len(ranks) else ranks
    families = list(dict.fromkeys(largest["family"]))
    table = largest.pivot(index="estimator", columns="family", values="rank_agreement")
    rank_rows = [{"estimator": e, "values": [fmt(table.loc[e].get(f), 2) for f in families]}
                 for e in dict.fromkeys(largest["estimator"])]
    failures = results[results["status"] != "ok"][["estimator", "task", "n", "seed", "error"]]
    return environment().get_template("accuracy.html.j2").render(
        run_dir=str(run_dir), config=manifest.get("config") or {}, cells=cells,
        bias_png=draw_bias(summary), rank_families=families,
        rank_n=int(largest["n"].max()) if len(largest) else None,
        ranks=rank_rows, failures=failures.to_dict("records"),
        built=datetime.now(UTC).isoformat(timespec="seconds"))


def build_accuracy_report(run_dir: Path) -> AccuracyReport:
    """Write ``results.csv``, ``summary.csv``, ``rank_agreement.csv`` and ``report.html`` of an
    accuracy run from its records; return what was written."""
    run_dir = Path(run_dir)
    results = results_frame(list(iter_records(run_dir, AccuracyRecord)))
    summary = summary_frame(results)
    ranks = rank_frame(summary, results)
    results.to_csv(run_dir / RESULTS_CSV, index=False)
    summary.to_csv(run_dir / SUMMARY_CSV, index=False)
    ranks.to_csv(run_dir / RANK_CSV, index=False)
    html = write_page(run_dir, _render(run_dir, read_manifest(run_dir), summary, ranks, results))
    return AccuracyReport(run_dir, html, results, summary, ranks)
