"""Figures of volume pairs: three orthogonal slices of the fixed volume and the warped moving
volume, with the landmarks near each slice (:func:`draw_overlay_3d`, :func:`draw_panels_3d`),
the 3-D counterparts of :mod:`mibench.reports.overlay_drawing`'s figures. The slice geometry
and sampling are :mod:`mibench.reports.overlay_volumes`'s."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mibench.reports.formatting import fmt
from mibench.reports.overlay_drawing import Panel, draw_vectors
from mibench.reports.overlay_images import (
    LandmarkVectors,
    checkerboard,
    colour_overlay,
    landmark_vectors,
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
from mibench.reports.plotting import new_figure
from mibench.reports.units import symbol

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
    """The before/after figure of a volume: one row per orthogonal slice (axial, coronal,
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
    """The per-method figure of a volume: one row per panel (before, then each method), three
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
