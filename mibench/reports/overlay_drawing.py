"""Drawing a 2-D pair: the before/after overlay (:func:`draw_overlay_2d`), a row of panels, one per
method (:func:`draw_panels_2d`), and the landmarks with their error vectors (:func:`draw_vectors`).
The arrays drawn (composites, display warps, error vectors) come from
:mod:`mibench.reports.overlay_images`; volumes are drawn by :mod:`mibench.reports.volume_figures`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mibench.reports.formatting import fmt
from mibench.reports.overlay_images import (
    LandmarkVectors,
    checkerboard,
    colour_overlay,
    display_step,
    grey,
    landmark_vectors,
    stretch,
    warp_strided,
)
from mibench.reports.plotting import new_figure
from mibench.reports.units import symbol

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


def draw_overlay_2d(pair, transform, title: str, max_side: int = DISPLAY_SIDE):
    """A 2 x 2 figure: checkerboard and colour overlay, before (identity) and after, with the
    landmarks' error vectors on the colour overlays.

    Large images are shown at every ``step``-th fixed pixel (``step`` keeps the longer side
    within ``max_side``); a matrix transform is composed with that stride, so the moving image
    is sampled once, at display resolution.
    """
    from mibench.transform import MatrixTransform

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


def draw_panels_2d(pair, panels: Sequence[Panel], title: str, max_side: int = PANEL_SIDE,
                   columns: int | None = None):
    """One colour overlay (fixed green, warped moving magenta) per panel, each with its error
    vectors, in rows of ``columns`` (default 3, 4 beyond 9 panels); panels at most
    ``max_side`` pixels on a side."""
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
