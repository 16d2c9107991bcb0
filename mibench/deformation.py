"""Deformation quality: Jacobian determinant of a mapping, folding and SD of log-Jacobian.

The Jacobian is that of the fixed -> moving mapping ``p -> T(p)`` (pixels to pixels), on the
fixed image's pixel grid, by finite differences: :func:`numpy.gradient` with unit step, i.e.
central differences ``(T(p + e) - T(p - e)) / 2`` inside and one-sided ``T(p + e) - T(p)`` at
the image border. Both are exact for an affine mapping; for a smooth field the central error is
``O(h^2)`` with ``h = 1`` px.

The statistics follow the Learn2Reg challenge's evaluation script (``LogJacDetStd``):
``std(log(clip(det J + 3, 1e-9, 1e9)))`` over the voxels, the ``+ 3`` included (it is in their
code; pass ``shift=0`` for the plain SD of ``log det J``, with the same clip), and a fold is a
voxel with ``det J <= 0``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: Learn2Reg's clip of ``det J + shift`` before the logarithm.
LOG_CLIP = (1e-9, 1e9)
#: Learn2Reg's shift of ``det J`` before the clip (their evaluation code adds 3).
LEARN2REG_SHIFT = 3.0


def _pixel_grid(shape: tuple[int, ...]) -> np.ndarray:
    """``(x, y[, z])`` of every pixel in array (C) order, shape ``(N, n)``."""
    axes = np.meshgrid(*[np.arange(s, dtype=np.float64) for s in shape], indexing="ij")
    return np.column_stack([a.ravel() for a in axes[::-1]])


def mapping_jacobian(mapped: np.ndarray) -> np.ndarray:
    """Jacobian matrices of a sampled mapping, by finite differences (see the module docstring).

    Parameters
    ----------
    mapped : ndarray ``(n, *shape)``
        ``T(p)`` for every pixel ``p`` of a ``shape`` = ``(H, W)`` or ``(D, H, W)`` grid, the
        components ``(x, y[, z])`` first.

    Returns
    -------
    ndarray ``(*shape, n, n)``
        ``J[..., i, j] = d T_i / d x_j`` (``x_0 = x`` = column, ``x_1 = y`` = row, ...).
    """
    mapped = np.asarray(mapped, dtype=np.float64)
    n = mapped.shape[0]
    if mapped.ndim != n + 1 or n not in (2, 3):
        raise ValueError(f"a sampled mapping is (n, *shape) with n = 2 or 3 spatial axes, got "
                         f"shape {mapped.shape}")
    if min(mapped.shape[1:]) < 2:
        raise ValueError(f"finite differences need at least 2 pixels per axis, got "
                         f"{mapped.shape[1:]}")
    jac = np.empty(mapped.shape[1:] + (n, n))
    for j in range(n):
        # Coordinate x_j runs along array axis n - 1 - j of the spatial axes.
        jac[..., :, j] = np.moveaxis(np.gradient(mapped, axis=1 + (n - 1 - j)), 0, -1)
    return jac


def jacobian_determinant(transform: Any, fixed_shape: tuple[int, ...]) -> np.ndarray:
    """``det J`` of a transform's fixed -> moving mapping on the fixed pixel grid.

    Parameters
    ----------
    transform : Transform
        Anything with ``fixed_to_moving`` (a matrix, a B-spline, ...); one with a
        ``displacement(shape)`` method (``(n, *shape)`` of ``T(p) - p``) is sampled through it.
    fixed_shape : (H, W) or (D, H, W)

    Returns
    -------
    ndarray ``fixed_shape``, float64
        NaN where the mapping (or a neighbour the difference uses) is undefined.
    """
    shape = tuple(int(s) for s in fixed_shape)
    if hasattr(transform, "displacement"):
        # A field's dense displacement (torch, one pass) is far cheaper than mapping points.
        return determinant_of_displacement(transform.displacement(shape))
    mapped = transform.fixed_to_moving(_pixel_grid(shape))
    return determinant_of_mapping(mapped.T.reshape(len(shape), *shape))


def determinant_of_mapping(mapped: np.ndarray) -> np.ndarray:
    """``det J`` of a sampled mapping ``(n, *shape)`` (:func:`mapping_jacobian`), ``shape``."""
    return np.linalg.det(mapping_jacobian(mapped))


def determinant_of_displacement(displacement: np.ndarray) -> np.ndarray:
    """``det (I + grad u)`` of a displacement field ``u`` ``(n, *shape)`` in pixels (``T(p) = p
    + u(p)``), by the same finite differences."""
    u = np.asarray(displacement, dtype=np.float64)
    n = u.shape[0]
    shape = u.shape[1:]
    identity = _pixel_grid(shape).T.reshape(n, *shape)
    return determinant_of_mapping(identity + u)


def _values(det: np.ndarray, mask: Any) -> np.ndarray:
    det = np.asarray(det, dtype=np.float64)
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != det.shape:
            raise ValueError(f"mask shape {mask.shape} differs from the determinant's "
                             f"{det.shape}")
        det = det[mask]
    return det[np.isfinite(det)].ravel()


def folding_fraction(det: np.ndarray, mask: Any = None) -> float:
    """Share of pixels with ``det J <= 0`` (a fold), in [0, 1].

    Pixels outside ``mask`` and NaN determinants (undefined mapping) are left out; NaN if none
    is left.
    """
    values = _values(det, mask)
    return float(np.mean(values <= 0)) if values.size else float("nan")


def sd_log_jacobian(det: np.ndarray, mask: Any = None, shift: float = LEARN2REG_SHIFT,
                    clip: tuple[float, float] = LOG_CLIP) -> float:
    """Learn2Reg's SD of the log-Jacobian: ``std(log(clip(det J + shift, *clip)))``.

    Parameters
    ----------
    det : ndarray
        Jacobian determinants (:func:`jacobian_determinant`).
    mask : ndarray of bool, optional
        Pixels to include (Learn2Reg: all voxels, or a foreground mask).
    shift : float
        Added before the clip: 3 in Learn2Reg's script; 0 gives the SD of ``log det J``.
    clip : (low, high)
        Bounds of ``det J + shift`` before the logarithm (folds take ``log(low)``).

    Returns
    -------
    float
        Population SD (``ddof=0``, as ``numpy.std``); NaN when no finite value is left.
    """
    values = _values(det, mask)
    if not values.size:
        return float("nan")
    return float(np.std(np.log(np.clip(values + shift, *clip))))


def deformation_stats(det: np.ndarray, mask: Any = None) -> dict[str, float]:
    """The per-task numbers for a record: ``folding`` (share), ``sd_log_jacobian`` (Learn2Reg,
    shift 3), ``sd_log_jacobian_raw`` (shift 0), ``jacobian_min`` and ``jacobian_max``."""
    values = _values(det, mask)
    nan = float("nan")
    return {
        "folding": folding_fraction(det, mask),
        "sd_log_jacobian": sd_log_jacobian(det, mask),
        "sd_log_jacobian_raw": sd_log_jacobian(det, mask, shift=0.0),
        "jacobian_min": float(values.min()) if values.size else nan,
        "jacobian_max": float(values.max()) if values.size else nan,
    }
