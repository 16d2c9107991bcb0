"""Before/after overlays of the reference method's best and worst pairs.

The pair is loaded again through the run's registry and dataset (:func:`open_dataset` with the
recorded dataset options and data directory) and the moving image is warped with the record's
transform. A failed record has no transform: its "after" is the identity, as in its scores.
When the dataset cannot be loaded any more (moved data, missing plugin), the report says so
instead of failing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from mibench.callables import open_dataset
from mibench.paths import figure_name
from mibench.registry import Registry
from mibench.reports.analysis import RunAnalysis
from mibench.reports.formatting import fmt
from mibench.reports.plotting import new_figure, png_bytes


@dataclass
class Overlay:
    """One overlay figure: PNG name and bytes, and what it shows."""

    name: str
    png: bytes
    label: str  # "best" or "worst"
    method: str
    pair_id: str
    seed: int
    naed: float


def grey(image: np.ndarray) -> np.ndarray:
    """``(H, W)`` float64 intensities of an ``(H, W)`` or ``(H, W, C)`` image."""
    a = np.asarray(image, dtype=np.float64)
    return a.mean(axis=-1) if a.ndim == 3 else a


def stretch(image: np.ndarray) -> np.ndarray:
    """Contrast stretch to [0, 1] between the 1st and 99th percentiles (for display only)."""
    lo, hi = np.percentile(image, [1, 99])
    return np.clip((image - lo) / (hi - lo), 0, 1) if hi > lo else np.zeros_like(image)


def checkerboard(a: np.ndarray, b: np.ndarray, tiles: int = 8) -> np.ndarray:
    """``a`` on the white squares of a ``tiles`` x ``tiles`` checkerboard, ``b`` on the rest."""
    h, w = a.shape
    rows = (np.arange(h) * tiles // max(h, 1))[:, None]
    cols = (np.arange(w) * tiles // max(w, 1))[None, :]
    return np.where((rows + cols) % 2 == 0, a, b)


def colour_overlay(fixed: np.ndarray, moving: np.ndarray) -> np.ndarray:
    """RGB ``(H, W, 3)``: fixed in green, moving in magenta; aligned structure turns grey."""
    return np.stack([moving, fixed, moving], axis=-1)


def load_dataset(registry: Registry | None, config: dict[str, Any],
                 dataset_params: dict[str, Any]):
    """The dataset object of a run, opened from its registry and resolved configuration."""
    if registry is None:
        raise RuntimeError("the run's plugins cannot be loaded")
    spec = registry.get("dataset", config["dataset"])
    return open_dataset(spec, config.get("data_dir"), dataset_params).dataset


#: Overlays are drawn at most this many pixels on a side (a stride of the fixed image).
DISPLAY_SIDE = 768


def warp_strided(moving: np.ndarray, transform, fixed_shape: tuple[int, int], step: int
                 ) -> np.ndarray:
    """``transform.warp(moving, fixed_shape)[::step, ::step]``, computed at that resolution for
    a matrix transform (composed with the stride ``diag(step, step, 1)``)."""
    from mibench.transform import MatrixTransform

    if isinstance(transform, MatrixTransform):
        shape = (-(-fixed_shape[0] // step), -(-fixed_shape[1] // step))
        stride = np.diag([float(step), float(step), 1.0])
        return MatrixTransform(transform.matrix @ stride).warp(moving, shape)
    return transform.warp(moving, fixed_shape)[::step, ::step]


def draw_overlay(pair, transform, title: str, max_side: int = DISPLAY_SIDE):
    """A 2 x 2 figure: checkerboard and colour overlay, before (identity) and after.

    Large images are shown at every ``step``-th fixed pixel (``step`` keeps the longer side
    within ``max_side``); a matrix transform is composed with that stride, so the moving image
    is sampled once, at display resolution.
    """
    from mibench.transform import MatrixTransform

    fixed = grey(pair.fixed)
    moving = grey(pair.moving).astype(np.float32)
    step = max(1, int(np.ceil(max(fixed.shape) / max_side)))
    shown = fixed[::step, ::step]
    shape = shown.shape
    after_t = transform if transform is not None else MatrixTransform.identity()

    f = stretch(shown)
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
    if pair.fixed_landmarks is not None and pair.moving_landmarks is not None:
        k = min(len(pair.fixed_landmarks), len(pair.moving_landmarks))
        fl, ml = pair.fixed_landmarks[:k] / step, pair.moving_landmarks[:k]
        for ax, t in ((axes[2], None), (axes[3], after_t)):
            mapped = (ml if t is None else t.moving_to_fixed(ml)) / step
            ax.scatter(fl[:, 0], fl[:, 1], s=28, facecolors="none", edgecolors="lime", lw=1.2)
            ax.scatter(mapped[:, 0], mapped[:, 1], s=28, marker="x", color="magenta", lw=1.2)
            ax.set_xlim(-0.5, shape[1] - 0.5)
            ax.set_ylim(shape[0] - 0.5, -0.5)
    fig.suptitle(title, fontsize="medium")
    fig.tight_layout()
    return fig


def make_overlays(ctx: RunAnalysis) -> tuple[list[Overlay], str]:
    """Overlays of the reference method's best and worst pair (by per-pair NAED); within the
    pair, the seed with the lowest (best) or highest (worst) NAED. Returns the overlays and a
    note (why there are none, or what they show). Writes ``fig_overlay_<best|worst>.png`` and
    removes those of an earlier build."""
    from mibench.transform import transform_from_dict

    for old in ctx.run_dir.glob(figure_name("overlay_*")):
        old.unlink()
    ev = ctx.evaluation
    if ev is None or ev.reference is None:
        return [], "No scored pairs: nothing to show."
    ref = ev.reference
    values = ev.table[ref].dropna()
    if values.empty:
        return [], f"The reference method {ref} has no scored pair."
    picks = [("best", values.idxmin())]
    if values.idxmax() != values.idxmin():
        picks.append(("worst", values.idxmax()))
    config = ctx.config
    if not config.get("dataset"):
        return [], "run.json does not name the dataset: overlays are not available."
    records = {rec.key: rec for rec in ctx.records}
    df = ctx.results
    out = []
    dataset = None
    for label, pair_id in picks:
        tasks = df[(df["method"] == ref) & (df["pair_id"] == pair_id) & df["naed"].notna()]
        row = tasks.loc[tasks["naed"].idxmin() if label == "best" else tasks["naed"].idxmax()]
        rec = records[str(row["key"])]
        try:
            transform = transform_from_dict(rec.transform)
        except ValueError as exc:  # a plugin's own Transform type: stored, but not redrawable
            return out, (f"The transform of {ref} on pair {pair_id} cannot be rebuilt from its "
                         f"record ({exc}): overlays need a matrix transform.")
        try:
            if dataset is None:
                dataset = load_dataset(ctx.registry, config, rec.task.dataset_params or {})
            pair = dataset.load(pair_id)
            title = (f"{label}: {ref} on {pair_id} (seed {rec.task.seed}), "
                     f"NAED {fmt(row['naed'])}, {rec.status}")
            png = png_bytes(draw_overlay(pair, transform, title))
        except Exception as exc:  # the data may be gone or moved: say so, keep the report
            return out, (f"The dataset {config.get('dataset')!r} cannot be loaded here "
                         f"({type(exc).__name__}: {exc}); overlays are not available.")
        name = figure_name(f"overlay_{label}")
        (ctx.run_dir / name).write_bytes(png)
        out.append(Overlay(name, png, label, ref, str(pair_id), rec.task.seed,
                           float(row["naed"])))
    return out, ""


__all__ = ["Overlay", "checkerboard", "colour_overlay", "draw_overlay", "load_dataset",
           "make_overlays", "warp_strided"]
