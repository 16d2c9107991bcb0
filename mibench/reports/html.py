"""``report.html``: one self-contained page (inline CSS, figures as base64 PNG) about a run.

The page is rendered from the Jinja2 templates in ``mibench/reports/templates`` with
autoescaping on, so that every value from data (method names, pair ids, error texts, run.json)
is escaped wherever a template prints it; a template writes markup, the views
(:mod:`mibench.reports.views`) only plain values. The page has no script and no external asset:
it opens offline. Its sections, in order, are ``SECTIONS`` (``templates/<section>.html.j2``).
"""

from __future__ import annotations

import base64
import functools
from datetime import UTC, datetime
from pathlib import Path

import jinja2

from mibench.paths import REPORT_HTML, TMP_PREFIX
from mibench.reports.analysis import RunAnalysis
from mibench.reports.formatting import fmt, fmt_p, fmt_pm
from mibench.reports.overlays import Overlay
from mibench.reports.units import long_words, symbol
from mibench.reports.views import page_view

#: The sections of the page, in order (a template each): the main result first (the paper-style
#: table with the NAED figure), the details behind it, what produced the run last.
SECTIONS = ("paper", "methods", "stats", "groups", "success", "timing", "overlays", "failures",
            "run")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@functools.cache
def environment() -> jinja2.Environment:
    """The templates' environment: autoescaping on, undefined names an error (a template that
    names a value its view does not give fails loudly rather than printing nothing)."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("mibench.reports", "templates"),
        autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True,
        lstrip_blocks=True, keep_trailing_newline=True)
    env.filters.update(fmt=fmt, fmt_p=fmt_p, b64=_b64, text=lambda v: "" if v is None else v,
                       unit_symbol=symbol, unit_long=long_words)
    env.globals.update(fmt_pm=fmt_pm)
    return env


def render_page(analysis: RunAnalysis, figures: dict[str, bytes] | None = None,
                overlays: list[Overlay] | None = None, overlay_note: str = "",
                sections: tuple[str, ...] = SECTIONS) -> str:
    """The page as a string: ``sections`` of ``analysis``, with the drawn ``figures``
    (``{file name: PNG bytes}``) and ``overlays``."""
    view = page_view(analysis, figures or {}, overlays or [], overlay_note)
    now = datetime.now(UTC).isoformat(timespec="seconds")
    return environment().get_template("report.html.j2").render(
        **view, built=now, sections=sections)


def render_section(name: str, analysis: RunAnalysis, figures: dict[str, bytes] | None = None,
                   overlays: list[Overlay] | None = None, overlay_note: str = "") -> str:
    """One section of the page alone (an HTML fragment), e.g. to check it."""
    view = page_view(analysis, figures or {}, overlays or [], overlay_note)
    return environment().get_template(f"{name}.html.j2").render(**view)


def write_report_html(analysis: RunAnalysis, figures: dict[str, bytes],
                      overlays: list[Overlay], overlay_note: str) -> Path:
    """Write ``report.html`` into the run directory (atomically); return its path."""
    return write_page(analysis.run_dir, render_page(analysis, figures, overlays, overlay_note))


def write_page(run_dir: Path, html: str) -> Path:
    """Write ``report.html`` into ``run_dir`` atomically (a reader never sees half a page);
    return its path. Every command's report goes through here."""
    path = Path(run_dir) / REPORT_HTML
    tmp = path.with_name(f"{TMP_PREFIX}{REPORT_HTML}")
    tmp.write_text(html, encoding="utf-8")
    tmp.replace(path)
    return path


def template_names() -> list[str]:
    """Every template of the page (what the package must install)."""
    return sorted(environment().list_templates())


__all__ = ["SECTIONS", "environment", "render_page", "render_section", "template_names",
           "write_page", "write_report_html"]
