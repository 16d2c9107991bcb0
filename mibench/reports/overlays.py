"""Before/after overlays: the reference method's best and worst pairs, and every method on one
representative pair.

The pair is loaded again through the run's registry and dataset (:func:`open_dataset` with the
recorded dataset options and data directory) and the moving image is warped with the record's
transform. A failed record has no transform: its "after" is the identity, as in its scores.
Landmarks are drawn in colours neither image uses (fixed: yellow rings, mapped moving: cyan
dots, both edged in black), joined by the error vector whose length is the landmark's error.
When the dataset cannot be loaded any more (moved data, missing plugin), the report says so
instead of failing. The arrays drawn here (composites, display warps, error vectors) come from
:mod:`mibench.reports.overlay_images`.
"""

from __future__ import annotations

import functools
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from mibench.callables import open_dataset
from mibench.jsonio import canonical_json
from mibench.paths import FIGURE_PREFIX, figure_name
from mibench.registry import Registry
from mibench.reports.analysis import RunAnalysis
from mibench.reports.formatting import fmt
from mibench.reports.overlay_drawing import Panel, draw_overlay_2d, draw_panels_2d
from mibench.reports.overlay_images import (
    LandmarkVectors,
    checkerboard,
    colour_overlay,
    landmark_vectors,
    sample_matrix,
    warp_strided,
)
from mibench.reports.plotting import png_bytes
from mibench.reports.units import record_unit, symbol
from mibench.reports.volume_figures import VOLUME_NOTE, draw_overlay_3d, draw_panels_3d


@dataclass
class PairLink:
    """A per-pair page: the pair, the page's path relative to the run directory, and the
    reference method's NAED on the pair (NaN when it has none)."""

    pair_id: str
    href: str
    naed: float


@dataclass
class Overlay:
    """One overlay figure: PNG name and bytes, and what it shows.

    ``label`` is ``best`` or ``worst`` (a 2 x 2 before/after figure of ``method`` on
    ``pair_id``), or ``methods`` (one panel per method of ``methods`` on ``pair_id``; ``method``,
    ``seed`` and ``naed`` are then the reference's; a volume's figures show three orthogonal
    slices per panel). ``tre_px`` is the shown task's mean landmark error in ``unit``, the
    record's (native pixels of the fixed image for ``"px"``: the name is kept from 2-D);
    ``volume`` whether the pair is 3-D; ``mime`` the type of the bytes in ``png``
    (``image/jpeg`` for the per-method figure); ``page`` the pair's page (relative to the run
    directory) and ``pages`` every pair page, listed with the figure.
    """

    name: str
    png: bytes
    label: str
    method: str
    pair_id: str
    seed: int
    naed: float
    tre_px: float | None = None
    mime: str = "image/png"
    methods: tuple[str, ...] = ()
    page: str | None = None
    pages: tuple[PairLink, ...] = ()
    unit: str = "px"
    volume: bool = False


class OverlayUnavailable(Exception):
    """Overlays cannot be drawn; the message says why, for the page."""


def load_dataset(registry: Registry | None, config: dict[str, Any],
                 dataset_params: dict[str, Any]):
    """The dataset object of a run, opened from its registry and resolved configuration."""
    if registry is None:
        raise RuntimeError("the run's plugins cannot be loaded")
    spec = registry.get("dataset", config["dataset"])
    return open_dataset(spec, config.get("data_dir"), dataset_params).dataset


class PairSource:
    """The pairs of a run, loaded again on demand: the dataset is opened once and the last few
    pairs are kept (the overlays and the pair pages often show the same pairs)."""

    def __init__(self, ctx: RunAnalysis, cached: int = 4):
        self.ctx = ctx
        self._dataset = None
        self.load = functools.lru_cache(maxsize=cached)(self._load)

    def _load(self, pair_id: str, dataset_params: str):
        config = self.ctx.config
        if not config.get("dataset"):
            raise OverlayUnavailable("run.json does not name the dataset: overlays are not "
                                     "available.")
        try:
            if self._dataset is None:
                params = json.loads(dataset_params)
                self._dataset = load_dataset(self.ctx.registry, config, params)
            return self._dataset.load(pair_id)
        except Exception as exc:  # the data may be gone or moved: say so, keep the report
            raise OverlayUnavailable(
                f"The dataset {config.get('dataset')!r} cannot be loaded here "
                f"({type(exc).__name__}: {exc}); overlays are not available.") from exc


def draw_overlay(pair, transform, title: str):
    """The before/after figure of a pair: 2 x 2 panels for an image
    (:func:`~mibench.reports.overlay_drawing.draw_overlay_2d`), three orthogonal slices for a
    volume (:func:`~mibench.reports.volume_figures.draw_overlay_3d`)."""
    if getattr(pair, "ndim", 2) == 3:
        return draw_overlay_3d(pair, transform, title)
    return draw_overlay_2d(pair, transform, title)


def draw_panels(pair, panels: Sequence[Panel], title: str, **kw: Any):
    """One panel per method: colour overlays of an image, or a row of three orthogonal slices
    per panel for a volume (``kw``: the 2-D layout's ``max_side`` and ``columns``)."""
    if getattr(pair, "ndim", 2) == 3:
        return draw_panels_3d(pair, panels, title)
    return draw_panels_2d(pair, panels, title, **kw)


def pair_tasks(ctx: RunAnalysis, pair_id: str) -> pd.DataFrame:
    """The scored tasks of ``pair_id`` that ran (not the copies of a seed-independent method's
    record, see :func:`~mibench.reports.results.reuse_single_seed`): the reference method's
    first, then the others in table order, each by seed."""
    df = ctx.results
    if df.empty:
        return df
    rows = df[(df["pair_id"] == pair_id) & df["naed"].notna()]
    if "reused_seed" in rows:
        rows = rows[rows["reused_seed"].isna()]
    ref = ctx.evaluation.reference if ctx.evaluation is not None else None
    rank = {m: i for i, m in enumerate(dict.fromkeys([ref, *ctx.order]))}
    return rows.sort_values(["method", "seed"], key=lambda c: c.map(rank).fillna(len(rank))
                            if c.name == "method" else c, kind="stable")


def median_task(tasks: pd.DataFrame) -> pd.Series:
    """The task with the median NAED (the lower middle one of an even count)."""
    ordered = tasks.sort_values(["naed", "seed"], kind="stable")
    return ordered.iloc[(len(ordered) - 1) // 2]


def score_title(rec, method: str, seed: int | None = None) -> str:
    """``method``'s panel title: its mean landmark error in the record's unit (native px, mm)
    and its NAED as the tables print them (a failed task's are its initial error)."""
    metrics = rec.metrics or {}
    who = method if seed is None else f"{method} (seed {seed})"
    failed = "FAILED, initial error " if rec.status == "failed" else ""
    return (f"{who}\n{failed}{fmt(metrics.get('tre_mean'))} {symbol(record_unit(rec))}, "
            f"NAED {fmt(metrics.get('naed'))}")


def record_transform(ctx: RunAnalysis, rec):
    """The record's transform, rebuilt (None for a failed task), reading a file it references
    (a B-spline's coefficients) beside the record in ``ctx.run_dir``. Raises ``ValueError``
    when it cannot be rebuilt (a plugin's own type, a missing or mismatched file)."""
    from mibench.transform import transform_from_dict

    folder = rec.task.record_path(ctx.run_dir).parent
    try:
        return transform_from_dict(rec.transform, folder=folder)
    except OSError as exc:  # its file is gone (deleted, or a partial copy of the run)
        raise ValueError(f"{type(exc).__name__}: {exc}") from exc


def method_panels(ctx: RunAnalysis, pair_id: str, methods: Sequence[str] | None = None
                  ) -> tuple[list[Panel], list[Any]]:
    """A "before" panel and one per method of ``methods`` (default: every method with a
    scored task on the pair, in table order) showing its median-NAED task; returns the panels
    and the records shown (the "before" panel's is the first shown record)."""
    tasks = pair_tasks(ctx, pair_id)
    wanted = list(dict.fromkeys(tasks["method"])) if methods is None else list(methods)
    records = {rec.key: rec for rec in ctx.records}
    panels, shown = [], []
    for method in wanted:
        mine = tasks[tasks["method"] == method]
        if mine.empty:
            continue
        row = median_task(mine)
        rec = records[str(row["key"])]
        seed = int(row["seed"]) if mine["seed"].nunique() > 1 else None
        title = score_title(rec, method, seed)
        try:
            panels.append(Panel(title, record_transform(ctx, rec)))
        except ValueError:  # a plugin's own Transform type, or its file gone: not redrawable
            panels.append(Panel(title, note="its transform cannot be\nrebuilt from the record"))
        shown.append(rec)
    if shown:
        first = shown[0]
        before = (f"before registration\n{fmt(first.metrics.get('ire_mean'))} "
                  f"{symbol(record_unit(first))}, NAED "
                  f"{fmt(first.metrics.get('ire_mean', np.nan) / (first.norm_length or np.nan))}")
        panels.insert(0, Panel(before))
    return panels, shown


def _picks(ctx: RunAnalysis) -> list[tuple[str, str]]:
    """``(label, pair_id)``: the reference's best and worst pair by per-pair NAED (the worst
    left out when it is the best), then its median pair (``methods``)."""
    ev = ctx.evaluation
    values = ev.table[ev.reference].dropna()
    ordered = values.sort_values(kind="stable")
    picks = [("best", values.idxmin())]
    if values.idxmax() != values.idxmin():
        picks.append(("worst", values.idxmax()))
    picks.append(("methods", ordered.index[(len(ordered) - 1) // 2]))
    return [(label, str(pair_id)) for label, pair_id in picks]


def make_overlays(ctx: RunAnalysis, methods: Sequence[str] | None = None,
                  source: PairSource | None = None) -> tuple[list[Overlay], str]:
    """Overlays of the reference method's best and worst pair (by per-pair NAED; within the
    pair, the seed with the lowest or highest NAED), and one figure with every method of
    ``methods`` (default: all that ran) on the reference's median pair. Returns the overlays
    and a note (why there are none). Writes ``fig_overlay_<best|worst|methods>.png`` and
    removes those of an earlier build."""
    for old in (*ctx.run_dir.glob(figure_name("overlay_*")),
                *ctx.run_dir.glob(f"{FIGURE_PREFIX}overlay_*.jpg")):
        old.unlink()
    ev = ctx.evaluation
    if ev is None or ev.reference is None:
        return [], "No scored pairs: nothing to show."
    ref = ev.reference
    if ev.table[ref].dropna().empty:
        return [], f"The reference method {ref} has no scored pair."
    if not ctx.config.get("dataset"):
        return [], "run.json does not name the dataset: overlays are not available."
    source = source or PairSource(ctx)
    records = {rec.key: rec for rec in ctx.records}
    df = ctx.results
    out = []
    for label, pair_id in _picks(ctx):
        tasks = df[(df["method"] == ref) & (df["pair_id"] == pair_id) & df["naed"].notna()]
        pick = {"best": tasks["naed"].idxmin(), "worst": tasks["naed"].idxmax()}
        row = tasks.loc[pick[label]] if label in pick else median_task(tasks)
        rec = records[str(row["key"])]
        try:  # (the per-method figure shows such a method's panel with a note instead)
            transform = None if label == "methods" else record_transform(ctx, rec)
        except ValueError as exc:  # a plugin's own Transform type, or its file gone
            return out, (f"The transform of {ref} on pair {pair_id} cannot be rebuilt from its "
                         f"record ({exc}).")
        try:
            pair = source.load(pair_id, params_key(rec))
        except OverlayUnavailable as exc:
            return out, str(exc)
        names: tuple[str, ...] = ()
        name, mime = figure_name(f"overlay_{label}"), "image/png"
        if label == "methods":
            panels, shown = method_panels(ctx, pair_id, methods)
            title = f"every method on {pair_id} (the reference's median pair)"
            # JPEG: a grid of colour overlays is a third of its PNG's size.
            png = jpeg_bytes(draw_panels(pair, panels, title))
            names = tuple(r.task.method for r in shown)
            name, mime = f"{FIGURE_PREFIX}overlay_{label}.jpg", "image/jpeg"
        else:
            title = (f"{label}: {ref} on {pair_id} (seed {rec.task.seed}), "
                     f"{fmt(rec.metrics.get('tre_mean'))} {symbol(record_unit(rec))}, "
                     f"NAED {fmt(row['naed'])}, "
                     f"{rec.status}")
            png = png_bytes(draw_overlay(pair, transform, title))
        (ctx.run_dir / name).write_bytes(png)
        out.append(Overlay(name, png, label, ref, pair_id, rec.task.seed, float(row["naed"]),
                           tre_px=rec.metrics.get("tre_mean"), mime=mime, methods=names,
                           unit=record_unit(rec), volume=getattr(pair, "ndim", 2) == 3))
    return out, ""


def jpeg_bytes(fig, quality: int = 85) -> bytes:
    """The figure as JPEG bytes: colour overlays take a third of their PNG's size, with no
    visible loss at this quality."""
    buf = io.BytesIO()
    fig.savefig(buf, format="jpeg", pil_kwargs={"quality": quality})
    return buf.getvalue()


def params_key(rec) -> str:
    """The record's dataset options as a hashable string (the pair cache's key)."""
    return canonical_json(rec.task.dataset_params or {})


__all__ = ["VOLUME_NOTE", "LandmarkVectors", "Overlay", "OverlayUnavailable", "Panel", "PairLink",
           "PairSource", "checkerboard", "colour_overlay", "draw_overlay", "draw_panels",
           "jpeg_bytes", "landmark_vectors", "load_dataset", "make_overlays", "method_panels",
           "pair_tasks", "params_key", "record_transform", "sample_matrix",
           "warp_strided"]
