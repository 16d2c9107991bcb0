"""Per-pair pages, ``pairs/<pair_id>.html``: every method side by side on one pair.

A page shows one colour overlay per method (its median-NAED task, with the landmarks' error
vectors) after a "before registration" panel, and a table of every task of the pair: status,
NAED, mean landmark error and wall time. Each page is one self-contained file (inline CSS, the
figure as a base64 JPEG), linked from the report's overlays section. A run with many pairs gets
pages for ``limit`` of them, spread evenly over the reference method's NAED ranking, so that
building the report stays quick.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mibench.paths import PAIRS_DIR, TMP_PREFIX
from mibench.reports.analysis import RunAnalysis
from mibench.reports.formatting import DEFORMATION_CAPTION, missing, naed_header
from mibench.reports.html import environment
from mibench.reports.overlays import (
    VOLUME_NOTE,
    Overlay,
    OverlayUnavailable,
    PairLink,
    PairSource,
    draw_panels,
    jpeg_bytes,
    method_panels,
    pair_tasks,
    params_key,
)
from mibench.reports.units import DEFAULT_UNIT, record_unit
from mibench.settings import MAX_PAIR_PAGES

#: A pair id that is a safe file name, as the conventions require of a dataset.
SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,120}")


def page_href(pair_id: str) -> str:
    """The page of ``pair_id``, relative to the run directory: ``pairs/<pair_id>.html``, or
    for an id that is no safe file name (a record may hold anything) a digest of it."""
    name = pair_id if SAFE_ID.fullmatch(pair_id) else (
        "pair-" + hashlib.sha1(pair_id.encode()).hexdigest()[:12])
    return f"{PAIRS_DIR}/{name}.html"


def ranked_pairs(ctx: RunAnalysis) -> pd.Series:
    """Every scored pair's reference NAED, best first; pairs the reference has no value on come
    last (NaN), by id."""
    df = ctx.results
    if df.empty:
        return pd.Series(dtype="float64")
    pairs = sorted(set(df.loc[df["naed"].notna(), "pair_id"].astype(str)))
    ev = ctx.evaluation
    ref = (ev.table[ev.reference] if ev is not None and ev.reference is not None
           else pd.Series(dtype="float64"))
    values = pd.Series({p: ref.get(p, np.nan) for p in pairs}, dtype="float64")
    return values.sort_values(kind="stable", na_position="last")


def page_pairs(ctx: RunAnalysis, limit: int | None = MAX_PAIR_PAGES) -> pd.Series:
    """The pairs that get a page, with their reference NAED, best first: all of them, or
    ``limit`` spread evenly over the ranking (the best and the worst always among them)."""
    ranked = ranked_pairs(ctx)
    if limit is None or len(ranked) <= limit:
        return ranked
    if limit <= 0:
        return ranked.iloc[:0]
    at = np.unique(np.round(np.linspace(0, len(ranked) - 1, limit)).astype(int))
    return ranked.iloc[at]


def task_rows(ctx: RunAnalysis, pair_id: str, shown_keys: set[str]) -> list[dict[str, Any]]:
    """One row per task of the pair that ran, in table order: method, seed, status, NAED, mean
    landmark error (in the records' unit), the initial one, wall time (s), the error's first
    line, whether its overlay is the one shown, and its folding and SD log J (NaN without)."""
    rows = []
    for t in pair_tasks(ctx, pair_id).itertuples(index=False):
        error = "" if missing(t.error) else str(t.error).strip().splitlines()[0][:200]
        rows.append({"method": t.method, "seed": int(t.seed), "status": t.status,
                     "naed": t.naed, "tre_mean": t.tre_mean, "ire_mean": t.ire_mean,
                     "wall_s": t.wall_s, "error": error, "shown": str(t.key) in shown_keys,
                     # Deformation quality (non-matrix transforms; NaN for the others).
                     "folding": getattr(t, "folding", np.nan),
                     "sd_log_jacobian": getattr(t, "sd_log_jacobian", np.nan)})
    return rows


def pair_view(ctx: RunAnalysis, pair_id: str, jpeg: bytes, shown: Sequence[Any],
              volume: bool = False) -> dict[str, Any]:
    """What ``pair.html.j2`` needs for ``pair_id``'s page (``volume``: the pair is 3-D, its
    figure has three slices per method)."""
    first = shown[0] if shown else None
    # The pair's errors are in one unit (its geometry's): the first shown record says which.
    unit = record_unit(first) if first is not None else DEFAULT_UNIT
    ev = ctx.evaluation
    return {
        "title": f"{pair_id}: every method ({ctx.dataset or ctx.run_dir.name})",
        "pair_id": pair_id,
        "jpeg": jpeg,
        "rows": task_rows(ctx, pair_id, {r.key for r in shown}),
        "naed_header": naed_header(first.naed_norm if first else ctx.naed_norm, unit=unit),
        "naed_norm": first.naed_norm if first else ctx.naed_norm,
        "norm_length": first.norm_length if first else None,
        # Labels only (category, family): a stored matrix or crop is no help to a reader.
        "meta": {k: v for k, v in ((first.meta or {}) if first else {}).items()
                 if isinstance(v, str | int | float | bool)},
        "reference": ev.reference if ev is not None else None,
        "several_seeds": bool(ctx.results["seed"].nunique() > 1) if len(ctx.results) else False,
        "unit": unit,
        "volume_note": VOLUME_NOTE if volume else "",
        "deformation": DEFORMATION_CAPTION if "folding" in ctx.results else "",
    }


def write_html(path: Path, html: str) -> Path:
    """Write ``html`` to ``path`` atomically (a reader never sees half a page)."""
    tmp = path.with_name(f"{TMP_PREFIX}{path.name}")
    tmp.write_text(html, encoding="utf-8")
    tmp.replace(path)
    return path


def clear_pages(run_dir: Path) -> None:
    """Remove the pair pages of an earlier build (only the pages: the folder may hold more)."""
    folder = Path(run_dir) / PAIRS_DIR
    for old in folder.glob("*.html") if folder.is_dir() else ():
        old.unlink()


def write_pair_pages(ctx: RunAnalysis, methods: Sequence[str] | None = None,
                     limit: int | None = MAX_PAIR_PAGES, source: PairSource | None = None
                     ) -> tuple[list[PairLink], str]:
    """Write ``pairs/<pair_id>.html`` for the pairs of :func:`page_pairs` (``limit`` None:
    every pair), each with the methods of ``methods`` (default: all that scored the pair).
    Returns the links, best first, and a note (why there are none, or fewer than asked)."""
    clear_pages(ctx.run_dir)
    chosen = page_pairs(ctx, limit)
    if chosen.empty:
        return [], ""
    if not ctx.dataset:
        return [], "run.json does not name the dataset: pair pages are not available."
    source = source or PairSource(ctx)
    records = {rec.key: rec for rec in ctx.records}
    template = environment().get_template("pair.html.j2")
    folder = ctx.run_dir / PAIRS_DIR
    links: list[PairLink] = []
    for pair_id, naed in chosen.items():
        panels, shown = method_panels(ctx, pair_id, methods)
        if not shown:
            continue
        key = str(pair_tasks(ctx, pair_id)["key"].iloc[0])
        try:
            pair = source.load(pair_id, params_key(records[key]))
        except OverlayUnavailable as exc:
            return links, str(exc)
        jpeg = jpeg_bytes(draw_panels(pair, panels, f"every method on {pair_id}"))
        folder.mkdir(exist_ok=True)
        write_html(ctx.run_dir / page_href(pair_id),
                   template.render(**pair_view(ctx, pair_id, jpeg, shown,
                                               getattr(pair, "ndim", 2) == 3)))
        links.append(PairLink(pair_id, page_href(pair_id), float(naed)))
    return links, ""


def link_pages(overlays: list[Overlay], links: Sequence[PairLink]) -> None:
    """Point each overlay at its pair's page, and list every page with the last overlay (the
    per-method figure, where the page list is shown)."""
    hrefs = {link.pair_id: link.href for link in links}
    for o in overlays:
        o.page = hrefs.get(o.pair_id)
    if overlays:
        overlays[-1].pages = tuple(links)


__all__ = ["link_pages", "page_href", "page_pairs",
           "ranked_pairs", "write_pair_pages"]
