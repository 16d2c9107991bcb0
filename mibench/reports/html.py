"""``report.html``: one self-contained page (inline CSS, figures as base64 PNG) about a run.

The page is the list of sections in ``mibench.reports.sections.SECTIONS``; the figures are in
``mibench.reports.figures.FIGURES`` and are also written as PNG files next to the report. The page
has no script and no external asset: it opens offline. Every string that comes from data goes
through ``esc``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from mibench.errors import UserError
from mibench.records import iter_records
from mibench.reports.evaluation import evaluate, write_evaluation
from mibench.reports.figures import FIGURES, draw_figures
from mibench.reports.landmarks import write_warped_landmarks
from mibench.reports.overlays import make_overlays
from mibench.reports.page import ReportContext, esc, fmt
from mibench.reports.paper_table import write_paper_tables
from mibench.reports.results import (
    load_manifest,
    load_results,
    results_frame,
    summary_frame,
    write_results,
)
from mibench.reports.sections import SECTIONS

REPORT_HTML = "report.html"

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2em auto;
max-width:72em;padding:0 1em;color:#222;line-height:1.4}
h1{margin-bottom:0.2em}h2{border-bottom:1px solid #ccc;margin-top:1.6em}
table{border-collapse:collapse;margin:0.5em 0;font-size:0.92em}
th,td{border:1px solid #ddd;padding:0.25em 0.6em;text-align:left;vertical-align:top}
th{background:#f3f3f3}table.num td+td{text-align:right;font-variant-numeric:tabular-nums;
white-space:nowrap}.scroll{overflow-x:auto;max-width:100%}
table.paper{font-size:1em}table.wide{font-size:0.8em}
table.paper tbody tr:first-child{background:#eef5ff}
dl{display:grid;grid-template-columns:max-content auto;gap:0.15em 1em}dt{font-weight:600}
dd{margin:0}code{font-size:0.9em;word-break:break-all}
pre{margin:0;white-space:pre-wrap;max-height:12em;overflow:auto;font-size:0.85em}
.note{color:#555;font-size:0.9em}.warn{color:#8a4b00}figure{margin:1em 0}img{max-width:100%}
figcaption{color:#555;font-size:0.9em}
"""


def render(ctx: ReportContext, sections: list[Callable[[ReportContext], str]] | None = None
           ) -> str:
    """The whole page as a string."""
    title = f"mibench report: {ctx.config.get('dataset') or ctx.run_dir.name}"
    now = datetime.now(UTC).isoformat(timespec="seconds")
    body = "\n".join(s(ctx) for s in (SECTIONS if sections is None else sections))
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{esc(title)}</title><style>{CSS}</style></head><body>"
            f"<h1>{esc(title)}</h1><p class=\"note\">Run directory <code>{esc(ctx.run_dir)}"
            f"</code>; report built {esc(now)}.</p>\n{body}\n</body></html>\n")


def write_report(run_dir: Path, results: pd.DataFrame | None = None, *,
                 reference: str | None = None) -> Path:
    """Write ``stats.csv``, ``metrics.json``, ``paper_table.tex`` and ``paper_table.md``, the
    figures (``fig_*.png``) and ``report.html`` into ``run_dir``; return the report's path.

    ``reference`` is the method the others are tested against; None takes the run's
    ``reference`` setting from ``run.json`` (``mibench run --reference``; a merged directory
    has one only when every merged run had the same), else the automatic choice of
    ``mibench.reports.evaluation.choose_reference``.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if results is None:
        results = load_results(run_dir)
    manifest = load_manifest(run_dir)
    ctx = ReportContext(run_dir=run_dir, manifest=manifest, results=results,
                        summary=summary_frame(results))
    if reference is not None and len(results) and reference not in set(results["method"]):
        methods = ", ".join(sorted(set(results["method"])))
        raise UserError(f"{run_dir}: reference method {reference!r} has no records here "
                        f"(methods: {methods})")
    requested_by = "--reference"
    if reference is None:
        reference = ctx.config.get("reference") or None
        # Say where it came from: this report was not asked for it, the run (or runs) were.
        requested_by = ("--reference of every merged run" if manifest.get("merged_from")
                        else "--reference of mibench run")
    ctx.evaluation = evaluate(results, reference if isinstance(reference, str) else None,
                              requested_by=requested_by)
    write_evaluation(run_dir, ctx.evaluation, ctx.summary, manifest)
    norm, dataset = ctx.config.get("normalisation"), ctx.config.get("dataset")
    write_paper_tables(run_dir, ctx.evaluation, norm if isinstance(norm, str) else None,
                       dataset if isinstance(dataset, str) else None, ctx.summary)
    ctx.figures = draw_figures(ctx)
    ctx.overlays, ctx.overlay_note = make_overlays(ctx)
    path = run_dir / REPORT_HTML
    tmp = path.with_name(f".tmp-{REPORT_HTML}")
    tmp.write_text(render(ctx), encoding="utf-8")
    tmp.replace(path)
    return path


def build_reports(run_dir: Path, *, reference: str | None = None) -> Path:
    """Write ``results.csv``, ``summary.csv``, ``stats.csv``, ``metrics.json``, the paper
    tables (``paper_table.tex``, ``.md``), the figures,
    ``warped-landmarks/<method>/<pair>.csv`` (ANHIR's submission format) and ``report.html``
    from the records of ``run_dir``. Returns the path of ``report.html``."""
    run_dir = Path(run_dir)
    records = list(iter_records(run_dir))  # read once: the tables and the landmarks use them
    results = results_frame(records)
    write_results(run_dir, results)
    write_warped_landmarks(run_dir, records)
    return write_report(run_dir, results, reference=reference)


__all__ = ["CSS", "FIGURES", "REPORT_HTML", "SECTIONS", "ReportContext", "build_reports", "esc",
           "fmt", "render", "write_report"]
