"""``build_reports``: every artefact of a run directory, computed once and then written.

:func:`~mibench.reports.analysis.analyse_run` reads the records once and computes everything;
then each writer writes its artefact from that one analysis: ``results.csv``, ``summary.csv``,
the warped landmarks, ``stats.csv``, ``metrics.json``, the paper tables, the figures, the
overlays and ``report.html``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mibench.errors import UserError
from mibench.reports.analysis import RunAnalysis, analyse_run
from mibench.reports.figures import draw_figures
from mibench.reports.html import write_report_html
from mibench.reports.landmarks import write_warped_landmarks
from mibench.reports.overlays import PairSource, make_overlays
from mibench.reports.pair_pages import link_pages, write_pair_pages
from mibench.reports.paper_table import paper_tables, write_paper_tables
from mibench.reports.tables import write_evaluation, write_results
from mibench.settings import MAX_PAIR_PAGES


@dataclass
class Reports:
    """What :func:`build_reports` wrote.

    Attributes
    ----------
    run_dir : Path
        The run directory.
    html : Path
        ``report.html``.
    naed_table_markdown : str or None
        The paper-style NAED table as Markdown (the first block of ``paper_table.md``), for a
        terminal; None when no pair is scored.
    files : dict of str to Path
        Every file written, by role (``results``, ``summary``, ``stats``, ``metrics``,
        ``paper_tex``, ``paper_md``, ``report``; figures by file name, pair pages by their
        path ``pairs/<pair_id>.html``; ``warped_landmarks`` not included, see ``landmarks``).
    landmarks : list of Path
        The warped-landmark files (ANHIR's submission format).
    analysis : RunAnalysis
        Everything the artefacts were written from.
    """

    run_dir: Path
    html: Path
    naed_table_markdown: str | None
    files: dict[str, Path] = field(default_factory=dict)
    landmarks: list[Path] = field(default_factory=list)
    analysis: RunAnalysis | None = field(default=None, repr=False)

    def __str__(self) -> str:
        """The page's path, so that a printed ``Reports`` points at the report."""
        return str(self.html)


def check_methods(analysis: RunAnalysis, methods: list[str] | None) -> None:
    """A :class:`~mibench.errors.UserError` naming each of ``methods`` that has no record in
    the run (before anything is written), rather than an overlay silently left out."""
    ran = set(analysis.results["method"]) if len(analysis.results) else set()
    unknown = [m for m in methods or () if m not in ran]
    if unknown:
        raise UserError(f"{analysis.run_dir}: no records of {', '.join(map(repr, unknown))} "
                        f"to draw (methods: {', '.join(sorted(ran)) or 'none'})")


def build_reports(run_dir: Path, *, reference: str | None = None,
                  overlay_methods: list[str] | None = None,
                  pair_pages: int | None = MAX_PAIR_PAGES) -> Reports:
    """Write ``results.csv``, ``summary.csv``, ``stats.csv``, ``metrics.json``, the paper
    tables (``paper_table.tex``, ``.md``), the figures (``fig_*.png``), the pair pages
    (``pairs/<pair_id>.html``),
    ``warped-landmarks/<method>/<pair>.csv`` (ANHIR's submission format) and ``report.html``
    from the records of ``run_dir``.

    ``reference`` is the method the others are tested against (see
    :func:`~mibench.reports.analysis.analyse_run`; one with no records here is a
    :class:`~mibench.errors.UserError`, raised before anything is written).
    ``overlay_methods`` are the methods drawn in the per-method overlays and on the pair pages
    (default: every method that ran); ``pair_pages`` caps the ``pairs/<pair_id>.html`` pages
    (spread over the reference's NAED ranking; None: one per pair, 0: none). A method of
    ``overlay_methods`` with no records here is a :class:`~mibench.errors.UserError` too.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    analysis = analyse_run(run_dir, reference=reference)
    check_methods(analysis, overlay_methods)
    files: dict[str, Path] = {}
    files.update(write_results(analysis))
    landmarks = write_warped_landmarks(run_dir, analysis.records)
    files.update(write_evaluation(analysis))
    tables = paper_tables(analysis)
    files.update(write_paper_tables(run_dir, tables))
    figures = draw_figures(analysis)
    files.update({name: run_dir / name for name in figures})
    source = PairSource(analysis)  # the overlays and the pair pages share the loaded pairs
    overlays, overlay_note = make_overlays(analysis, overlay_methods, source)
    files.update({o.name: run_dir / o.name for o in overlays})
    pages, pages_note = write_pair_pages(analysis, overlay_methods, pair_pages, source)
    files.update({p.href: run_dir / p.href for p in pages})
    link_pages(overlays, pages)
    overlay_note = overlay_note or pages_note
    files["report"] = write_report_html(analysis, figures, overlays, overlay_note)
    return Reports(run_dir=run_dir, html=files["report"],
                   naed_table_markdown=tables.naed_markdown if tables else None, files=files,
                   landmarks=landmarks, analysis=analysis)


__all__ = ["Reports", "build_reports"]
