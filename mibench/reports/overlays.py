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
from mibench.reports.overlay_images import (
    LandmarkVectors,
    checkerboard,
    colour_overlay,
    display_step,
    grey,
    landmark_vectors,
    sample_matrix,
    stretch,
    warp_strided,
)
from mibench.reports.overlay_volumes import (
    PLANES,
    SLAB_VOXELS,
    centre_voxel,
    display_flips,
    fixed_slice,
    grey_volume,
    plane_order,
    slab_vectors,
    slice_aspect,
    view_name,
    warp_slice,
)
from mibench.reports.plotting import new_figure, png_bytes
from mibench.reports.units import record_unit, symbol


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


#: Overlays are drawn at most this many pixels on a side (a stride of the fixed image).
DISPLAY_SIDE = 768
#: A panel of a per-method figure, at most this many pixels on a side.
PANEL_SIDE = 320


def draw_vectors(ax, vectors: LandmarkVectors | None, step: int, shape: tuple[int, int]) -> None:
    """Fixed landmarks (yellow rings), mapped moving landmarks (cyan dots) and the vector
    between them (white, black-edged) on ``ax``, whose image is the fixed frame shown at every
    ``step``-th pixel with ``shape`` ``(H, W)``."""
    from matplotlib import patheffects
    from matplotlib.collections import LineCollection

    if vectors is not None and len(vectors.fixed):
        f, m = vectors.fixed / step, vectors.mapped / step
        # Black edges keep the marks visible on bright and on dark structure alike.
        edge = [patheffects.Stroke(linewidth=2.6, foreground="black"), patheffects.Normal()]
        ax.add_collection(LineCollection(np.stack([f, m], axis=1), colors="white",
                                         linewidths=1.2, path_effects=edge, zorder=2))
        ax.scatter(f[:, 0], f[:, 1], s=34, facecolors="none", edgecolors="yellow", lw=1.4,
                   path_effects=edge, zorder=3)
        ax.scatter(m[:, 0], m[:, 1], s=16, color="cyan", edgecolors="black", lw=0.6, zorder=4)
    # Points mapped outside the image must not widen the axes.
    ax.set_xlim(-0.5, shape[1] - 0.5)
    ax.set_ylim(shape[0] - 0.5, -0.5)


def draw_overlay(pair, transform, title: str, max_side: int = DISPLAY_SIDE):
    """A 2 x 2 figure: checkerboard and colour overlay, before (identity) and after, with the
    landmarks' error vectors on the colour overlays.

    Large images are shown at every ``step``-th fixed pixel (``step`` keeps the longer side
    within ``max_side``); a matrix transform is composed with that stride, so the moving image
    is sampled once, at display resolution.
    """
    from mibench.transform import MatrixTransform

    if getattr(pair, "ndim", 2) == 3:
        return draw_overlay_3d(pair, transform, title)
    fixed = grey(pair.fixed)
    moving = grey(pair.moving).astype(np.float32)
    step = display_step(fixed.shape, max_side)
    shape = fixed[::step, ::step].shape
    after_t = transform if transform is not None else MatrixTransform.identity()

    f = stretch(fixed[::step, ::step])
    b = stretch(warp_strided(moving, MatrixTransform.identity(), fixed.shape, step))
    a = stretch(warp_strided(moving, after_t, fixed.shape, step))
    fig, axes = new_figure(width=8.0, height=8.6, nrows=2, ncols=2)
    panels = [(checkerboard(f, b), "checkerboard, before"),
              (checkerboard(f, a), "checkerboard, after"),
              (colour_overlay(f, b), "overlay, before"), (colour_overlay(f, a), "overlay, after")]
    for ax, (img, name) in zip(axes, panels, strict=True):
        ax.imshow(img, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(name, fontsize="small")
        ax.set_axis_off()
    for ax, t in ((axes[2], None), (axes[3], after_t)):
        vectors = landmark_vectors(pair, t)
        draw_vectors(ax, vectors, step, shape)
        if vectors is not None and len(vectors.errors):
            ax.set_title(f"{ax.get_title()}: mean error {fmt(vectors.errors.mean())} "
                         f"{symbol(vectors.unit)}",
                         fontsize="small")
    fig.suptitle(title, fontsize="medium")
    fig.tight_layout()
    return fig


@dataclass
class Panel:
    """One panel of a per-method figure: a title and the transform to show (None: identity;
    ``note`` set: nothing can be warped, the note is shown instead)."""

    title: str
    transform: Any = None
    note: str = ""


def draw_panels(pair, panels: Sequence[Panel], title: str, max_side: int = PANEL_SIDE,
                columns: int | None = None):
    """One colour overlay (fixed green, warped moving magenta) per panel, each with its error
    vectors, in rows of ``columns`` (default 3, 4 beyond 9 panels); panels at most
    ``max_side`` pixels on a side. A volume gets :func:`draw_panels_3d` (one row of three
    orthogonal slices per panel)."""
    if getattr(pair, "ndim", 2) == 3:
        return draw_panels_3d(pair, panels, title)
    fixed = grey(pair.fixed)
    moving = grey(pair.moving).astype(np.float32)
    step = display_step(fixed.shape, max_side)
    f = stretch(fixed[::step, ::step])
    ncols = min(columns or (3 if len(panels) <= 9 else 4), len(panels))
    nrows = -(-len(panels) // ncols)
    # A fixed layout in inches (panel, two title lines, the figure title): tight_layout
    # measured every hidden tick and cost more than drawing the panels.
    side, titles, top, gap = 2.8, 0.45, 0.4, 0.1
    aspect = f.shape[0] / f.shape[1]
    width = ncols * (side + gap) + gap
    height = nrows * (side * aspect + titles + gap) + top
    fig, axes = new_figure(width=width, height=height, nrows=nrows, ncols=ncols)
    fig.subplots_adjust(left=gap / width, right=1 - gap / width, bottom=gap / height,
                        top=1 - (top + titles) / height, wspace=gap / side,
                        hspace=(titles + gap) / (side * aspect))
    axes = axes if isinstance(axes, list) else [axes]
    for ax in axes:
        ax.set_axis_off()
    for ax, panel in zip(axes, panels, strict=False):
        if panel.note:
            ax.imshow(f, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            ax.text(0.5, 0.5, panel.note, transform=ax.transAxes, ha="center", va="center",
                    wrap=True, fontsize="small", color="black",
                    bbox={"facecolor": "white", "alpha": 0.85})
            vectors = None
        else:
            warped = warp_strided(moving, panel.transform, fixed.shape, step)
            ax.imshow(colour_overlay(f, stretch(warped)),
                      interpolation="nearest")
            vectors = landmark_vectors(pair, panel.transform)
        draw_vectors(ax, vectors, step, f.shape)
        ax.set_title(panel.title, fontsize="small")
    fig.suptitle(title, fontsize="medium", y=1 - 0.1 / height, va="top")
    return fig


#: A slice of a volume's figure, at most this many display pixels on a side.
SLICE_SIDE = 256

#: How a volume's overlay is laid out, said in its captions.
VOLUME_NOTE = ("Volumes are shown by three orthogonal slices (axial, coronal, sagittal) through "
               "the centre of the fixed landmarks, in physical proportions (the fixed volume's "
               "voxel spacing), right, anterior and superior towards the right and the top; "
               f"landmarks within ±{SLAB_VOXELS} voxels of a slice are drawn projected onto it.")


@dataclass
class VolumeViews:
    """What every figure of one volume pair shares: the fixed volume and the moving one (grey),
    where the three slices cross, their planes in the order axial, coronal, sagittal, the
    display stride, the voxel spacing and the fixed geometry (None: 1 unit per voxel)."""

    fixed: np.ndarray
    moving: np.ndarray
    centre: np.ndarray
    planes: list[str]
    step: int
    spacing: np.ndarray
    geometry: Any

    @classmethod
    def of(cls, pair, max_side: int = SLICE_SIDE) -> VolumeViews:
        fixed = grey_volume(pair.fixed)
        geometry = getattr(pair, "fixed_geometry", None)
        spacing = (np.asarray(geometry.spacing, np.float64) if geometry is not None
                   else np.ones(3))
        return cls(fixed, grey_volume(pair.moving), centre_voxel(pair), plane_order(geometry),
                   max(1, int(np.ceil(max(fixed.shape) / max_side))), spacing, geometry)

    def index(self, plane: str) -> int:
        """The slice's voxel index along the plane's normal."""
        return int(self.centre[PLANES[plane][0]])

    def fixed_slices(self) -> list[np.ndarray]:
        """The fixed volume's three slices, contrast-stretched together."""
        return stretch_together([fixed_slice(self.fixed, p, self.index(p), self.step)
                                 for p in self.planes])

    def warped_slices(self, transform) -> list[np.ndarray]:
        """The moving volume warped by ``transform`` (None: identity), three slices,
        contrast-stretched together."""
        return stretch_together([warp_slice(self.moving, transform, self.fixed.shape, p,
                                            self.index(p), self.step) for p in self.planes])

    def label(self, plane: str) -> str:
        """``axial z = 40``: the view's name and where it cuts."""
        return f"{view_name(plane, self.geometry)} {plane} = {self.index(plane)}"

    def aspect(self, plane: str) -> float:
        return slice_aspect(plane, self.spacing)

    def extents(self) -> list[tuple[float, float]]:
        """The physical (width, height) of each slice, in the spacing's unit: figures size
        their rows and columns by them, so that the three views share one scale."""
        out = []
        for p in self.planes:
            h, v = PLANES[p][1]
            n = self.fixed.shape[::-1]  # (W, H, D), matching (x, y, z)
            out.append((n[h] * self.spacing[h], n[v] * self.spacing[v]))
        return out


def stretch_together(images: list[np.ndarray]) -> list[np.ndarray]:
    """:func:`stretch` with one contrast for all of ``images`` (the three slices of a volume
    look alike)."""
    flat = np.concatenate([np.ravel(i) for i in images])
    lo, hi = np.percentile(flat, [1, 99])
    if not hi > lo:
        return [np.zeros_like(i, dtype=np.float64) for i in images]
    return [np.clip((np.asarray(i, np.float64) - lo) / (hi - lo), 0, 1) for i in images]


def draw_slice(ax, image: np.ndarray, views: VolumeViews, plane: str,
               vectors: LandmarkVectors | None, slab: int = SLAB_VOXELS) -> int:
    """One slice on ``ax``: first row at the bottom, physical aspect, world axes increasing to
    the right and upwards (:func:`display_flips`), with the error vectors of the landmarks
    within ``slab`` voxels of it projected onto it. Returns how many landmarks are drawn."""
    grey_image = image.ndim == 2
    ax.imshow(image, cmap="gray" if grey_image else None, vmin=0, vmax=1,
              interpolation="nearest", origin="lower", aspect=views.aspect(plane))
    shown = None
    if vectors is not None and len(vectors.fixed):
        shown = slab_vectors(vectors.fixed, vectors.mapped, plane, views.index(plane), slab)
    draw_vectors(ax, shown, views.step, image.shape[:2])
    flip_h, flip_v = display_flips(plane, views.geometry)
    h, w = image.shape[:2]
    ax.set_xlim(*((w - 0.5, -0.5) if flip_h else (-0.5, w - 0.5)))
    ax.set_ylim(*((h - 0.5, -0.5) if flip_v else (-0.5, h - 0.5)))
    ax.set_xticks([])
    ax.set_yticks([])
    return 0 if shown is None else len(shown.which)


def error_text(vectors: LandmarkVectors | None) -> str:
    """``mean error 1.23 mm`` over every landmark of the pair (not only those drawn)."""
    if vectors is None or not len(vectors.errors):
        return ""
    return f"mean error {fmt(vectors.errors.mean())} {symbol(vectors.unit)}"


def draw_overlay_3d(pair, transform, title: str, max_side: int = SLICE_SIDE,
                    slab: int = SLAB_VOXELS):
    """:func:`draw_overlay` for a volume: one row per orthogonal slice (axial, coronal,
    sagittal, through the centre of the fixed landmarks), columns checkerboard and colour
    overlay, before (identity) and after; error vectors of the landmarks within ``slab``
    voxels of each slice on the colour overlays, the mean error over all landmarks (in the
    pair's unit) in the column titles."""
    from mibench.transform import MatrixTransform

    views = VolumeViews.of(pair, max_side)
    after_t = transform if transform is not None else MatrixTransform.identity(3)
    fixed = views.fixed_slices()
    before, after = views.warped_slices(None), views.warped_slices(after_t)
    # Rows as tall as their slices are, at the scale of the widest one.
    extents = views.extents()
    scale = 2.4 / max(w for w, _ in extents)
    heights = [h * scale for _, h in extents]
    fig, axes = new_figure(width=10.4, height=sum(heights) + 1.6, nrows=3, ncols=4,
                           height_ratios=heights)
    vec_before, vec_after = landmark_vectors(pair, None), landmark_vectors(pair, after_t)
    heads = ["checkerboard, before", "checkerboard, after",
             f"overlay, before: {error_text(vec_before)}".rstrip(": "),
             f"overlay, after: {error_text(vec_after)}".rstrip(": ")]
    for r, plane in enumerate(views.planes):
        row = axes[4 * r:4 * r + 4]
        f, b, a = fixed[r], before[r], after[r]
        images = [(checkerboard(f, b), None), (checkerboard(f, a), None),
                  (colour_overlay(f, b), vec_before), (colour_overlay(f, a), vec_after)]
        for c, (ax, (img, vec)) in enumerate(zip(row, images, strict=True)):
            n = draw_slice(ax, img, views, plane, vec, slab)
            name = views.label(plane) + (f", {n} landmarks" if vec is not None else "")
            ax.set_title(f"{heads[c]}\n{name}" if r == 0 else name, fontsize="x-small")
    fig.suptitle(title, fontsize="medium")
    fig.tight_layout()
    return fig


def draw_panels_3d(pair, panels: Sequence[Panel], title: str, max_side: int = SLICE_SIDE,
                   slab: int = SLAB_VOXELS):
    """:func:`draw_panels` for a volume: one row per panel (before, then each method), three
    colour overlays per row (fixed green, warped moving magenta) of the axial, coronal and
    sagittal slices through the centre of the fixed landmarks, each with the error vectors of
    the landmarks within ``slab`` voxels of it."""
    views = VolumeViews.of(pair, max_side)
    fixed = views.fixed_slices()
    # One scale for the three views: columns as wide, rows as tall as the slices are.
    extents = views.extents()
    scale = 7.2 / sum(w for w, _ in extents)  # inches per unit of length
    row = max(h for _, h in extents) * scale + 0.6  # the slices and two lines of titles
    fig, axes = new_figure(width=7.6, height=len(panels) * row + 0.9, nrows=len(panels),
                           ncols=3, width_ratios=[w for w, _ in extents])
    for r, panel in enumerate(panels):
        row = axes[3 * r:3 * r + 3]
        if panel.note:
            images, vectors = [np.stack([f] * 3, axis=-1) for f in fixed], None
        else:
            warped = views.warped_slices(panel.transform)
            images = [colour_overlay(f, w) for f, w in zip(fixed, warped, strict=True)]
            vectors = landmark_vectors(pair, panel.transform)
        for ax, plane, img in zip(row, views.planes, images, strict=True):
            n = draw_slice(ax, img, views, plane, vectors, slab)
            ax.set_title(views.label(plane) + (f", {n} lm" if vectors is not None else ""),
                         fontsize="x-small")
            if panel.note:
                ax.text(0.5, 0.5, panel.note, transform=ax.transAxes, ha="center",
                        va="center", fontsize="x-small", color="black",
                        bbox={"facecolor": "white", "alpha": 0.85})
        head = row[0].annotate(panel.title, xy=(0, 1), xycoords="axes fraction",
                               xytext=(0, 14), textcoords="offset points", ha="left",
                               va="bottom", fontsize="small", annotation_clip=False)
        # A long title runs over the row's other slices: it must not squeeze the first one.
        head.set_in_layout(False)
    fig.suptitle(title, fontsize="medium")
    # Room above the first row for the figure title and the row's own two-line title.
    fig.tight_layout(h_pad=3.6, rect=(0, 0, 1, 1 - 0.7 / fig.get_figheight()))
    return fig


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


def method_panels(ctx: RunAnalysis, pair_id: str, methods: Sequence[str] | None = None
                  ) -> tuple[list[Panel], list[Any]]:
    """A "before" panel and one per method of ``methods`` (default: every method with a
    scored task on the pair, in table order) showing its median-NAED task; returns the panels
    and the records shown (the "before" panel's is the first shown record)."""
    from mibench.transform import transform_from_dict

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
            panels.append(Panel(title, transform_from_dict(rec.transform)))
        except ValueError:  # a plugin's own Transform type: stored, but not redrawable
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
    from mibench.transform import transform_from_dict

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
            transform = None if label == "methods" else transform_from_dict(rec.transform)
        except ValueError as exc:  # a plugin's own Transform type: stored, but not redrawable
            return out, (f"The transform of {ref} on pair {pair_id} cannot be rebuilt from its "
                         f"record ({exc}): overlays need a matrix transform.")
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
           "pair_tasks", "params_key", "sample_matrix", "warp_strided"]
