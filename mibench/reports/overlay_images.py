"""The images and points of an overlay, in numpy: grey levels, contrast, checkerboard and
colour composites, the moving image warped at display resolution, and the landmarks' error
vectors. Drawing them is :mod:`mibench.reports.overlays`' business.

Coordinates follow the conventions: points are ``(x, y)`` pixels, images ``(H, W)`` arrays,
transforms map fixed -> moving pixel coordinates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


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


def identity_strided(moving: np.ndarray, fixed_shape: tuple[int, int], step: int
                     ) -> np.ndarray:
    """The identity warp of ``moving`` (``(H, W)``) into ``fixed_shape`` ``(H, W)`` at every
    ``step``-th pixel: the moving pixels where the frames overlap, zero elsewhere (as the warp
    pads). Resampling on the pixel grid itself is a copy, and the "before" panels need it often."""
    shape = (-(-fixed_shape[0] // step), -(-fixed_shape[1] // step))
    out = np.zeros(shape, dtype=np.float32)
    part = moving[:fixed_shape[0]:step, :fixed_shape[1]:step]
    out[:part.shape[0], :part.shape[1]] = part
    return out


def warp_strided(moving: np.ndarray, transform, fixed_shape: tuple[int, int], step: int
                 ) -> np.ndarray:
    """``transform.warp(moving, fixed_shape)[::step, ::step]``, computed at that resolution for
    a matrix transform (composed with the stride ``diag(step, step, 1)``) and for a non-matrix
    one with ``fixed_to_moving`` (a B-spline: its exact points at the strided pixels,
    :func:`sample_mapped`); the identity (or None) is a plain copy (:func:`identity_strided`)."""
    from mibench.transform import MatrixTransform

    if transform is None or (isinstance(transform, MatrixTransform)
                             and np.array_equal(transform.matrix, np.eye(3))):
        return identity_strided(moving, fixed_shape, step)
    shape = (-(-fixed_shape[0] // step), -(-fixed_shape[1] // step))
    if isinstance(transform, MatrixTransform) and transform.matrix.shape == (3, 3):
        stride = np.diag([float(step), float(step), 1.0])
        return sample_matrix(moving, transform.matrix @ stride, shape)
    if not isinstance(transform, MatrixTransform) and hasattr(transform, "fixed_to_moving") \
            and np.ndim(moving) == 2:
        ys, xs = np.mgrid[0:fixed_shape[0]:step, 0:fixed_shape[1]:step].astype(np.float64)
        mapped = transform.fixed_to_moving(np.column_stack([xs.ravel(), ys.ravel()]))
        return sample_mapped(moving, mapped.reshape(*shape, 2))
    return transform.warp(moving, fixed_shape)[::step, ::step]


def sample_mapped(moving: np.ndarray, mapped: np.ndarray) -> np.ndarray:
    """Bilinear (trilinear) samples of ``moving`` ``(H, W)`` (``(D, H, W)``) at the moving
    points ``mapped`` ``(..., n)`` ``(x, y[, z])``, zero outside the image (blended over the
    last pixel, as ``grid_sample`` pads) and at NaN points; shape ``mapped.shape[:-1]``,
    float32. The display warp of a non-matrix transform: the samples its ``warp`` takes."""
    from scipy import ndimage

    pts = np.asarray(mapped, dtype=np.float64)
    coords = np.moveaxis(pts[..., ::-1], -1, 0)  # (row, column) / (slice, row, column)
    bad = ~np.isfinite(coords).all(axis=0)
    coords = np.where(np.isfinite(coords), coords, -2.0)
    out = ndimage.map_coordinates(np.asarray(moving, np.float32), coords, order=1,
                                  mode="grid-constant", cval=0.0, prefilter=False)
    out[bad] = 0.0
    return out


def sample_matrix(moving: np.ndarray, matrix: np.ndarray, shape: tuple[int, int]
                  ) -> np.ndarray:
    """``MatrixTransform(matrix).warp(moving, shape)`` in numpy, for display: bilinear samples
    of ``moving`` ``(H, W)`` at ``matrix @ [x, y, 1]`` for every pixel ``(x, y)`` of ``shape``
    ``(H, W)``, zero outside the moving image (blended over the last pixel, as ``grid_sample``
    pads) and where a perspective maps behind the camera. A tenth of the torch warp's time on
    the report's small panels."""
    from scipy import ndimage

    ys, xs = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float64)
    pts = np.stack([xs, ys, np.ones_like(xs)], axis=-1) @ np.asarray(matrix, np.float64).T
    w = pts[..., 2]
    behind = ~(w > 0)
    w = np.where(behind, 1.0, w)
    coords = np.stack([pts[..., 1] / w, pts[..., 0] / w])  # (row, column) for scipy
    coords = np.where(np.isfinite(coords), coords, -2.0)
    out = ndimage.map_coordinates(np.asarray(moving, np.float32), coords, order=1,
                                  mode="grid-constant", cval=0.0, prefilter=False)
    out[behind] = 0.0
    return out


@dataclass(frozen=True)
class LandmarkVectors:
    """Error vectors of a pair under a transform.

    Attributes
    ----------
    fixed, mapped : ndarray ``(K, 2)`` or ``(K, 3)``
        ``(x, y)`` in working pixels of the fixed image (``(x, y, z)`` voxels of a volume): the
        fixed landmarks, and the moving landmarks mapped into the fixed frame (``T⁻¹(m_k)``).
    errors : ndarray ``(K,)``
        ``‖mapped_k - fixed_k‖`` in ``unit``, the records' unit: native pixels of the fixed
        image (``"px"``), or the fixed image's physical unit where the pair has a geometry
        (the length of the difference mapped by the geometry's linear part).
    unit : str
        ``"px"``, or the fixed geometry's unit (``"mm"``, ``"um"``).
    """

    fixed: np.ndarray
    mapped: np.ndarray
    errors: np.ndarray
    unit: str = "px"


def landmark_vectors(pair, transform) -> LandmarkVectors | None:
    """The error vectors of ``pair`` under ``transform`` (fixed -> moving, working pixels;
    None is the identity, a failed task's "after"); None when the pair lacks landmarks."""
    if pair.fixed_landmarks is None or pair.moving_landmarks is None:
        return None
    k = min(len(pair.fixed_landmarks), len(pair.moving_landmarks))
    nd = np.shape(pair.fixed_landmarks)[-1] if np.ndim(pair.fixed_landmarks) == 2 else 2
    fixed = np.asarray(pair.fixed_landmarks[:k], dtype=np.float64).reshape(-1, nd)
    moving = np.asarray(pair.moving_landmarks[:k], dtype=np.float64).reshape(-1, nd)
    mapped = moving if transform is None else transform.moving_to_fixed(moving)
    geometry = getattr(pair, "fixed_geometry", None)
    if geometry is None:
        return LandmarkVectors(fixed, mapped,
                               np.linalg.norm(mapped - fixed, axis=1) * pair.native_scale)
    linear = np.asarray(geometry.affine, dtype=np.float64)[:nd, :nd]
    errors = np.linalg.norm((mapped - fixed) @ linear.T, axis=1)
    return LandmarkVectors(fixed, mapped, errors, geometry.unit)


def display_step(shape: tuple[int, ...], max_side: int) -> int:
    """The stride that keeps the longer side of ``shape`` ``(H, W, ...)`` within ``max_side``."""
    return max(1, int(np.ceil(max(shape[:2]) / max_side)))


__all__ = ["LandmarkVectors", "checkerboard", "colour_overlay", "display_step", "grey",
           "identity_strided", "landmark_vectors", "sample_mapped", "sample_matrix", "stretch",
           "warp_strided"]
