"""The gold standard of a landmark dataset: the least-squares affine of its landmark pairs.

Points are ``(x, y)`` = (column, row) pixels, ``(0, 0)`` the centre of the top-left pixel, and the
transform maps **fixed to moving** pixels (the README's *Conventions*), as
:class:`mibench.transform.MatrixTransform` does.
"""

from __future__ import annotations

import numpy as np


def _points(name: str, points) -> np.ndarray:
    arr = np.asarray(points, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"{name} landmarks must have shape (K, 2), got {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} landmarks must be finite")
    return arr


def fit_affine(fixed_points, moving_points) -> tuple[np.ndarray, float]:
    """Least-squares affine mapping fixed landmarks onto moving ones, and its RMS residual.

    Minimises ``sum_k ||A f_k - m_k||^2`` over the 6 affine parameters (the x and y rows are
    independent linear least-squares problems on the design ``[x, y, 1]``).

    Parameters
    ----------
    fixed_points, moving_points : array_like, shape (K, 2)
        Corresponding ``(x, y)`` pixel positions in the fixed and the moving image, ``K >= 3``
        and not all on one line (else the affine is not determined).

    Returns
    -------
    matrix : ndarray, shape (3, 3), float64
        Fixed px -> moving px, last row ``[0, 0, 1]``.
    rms : float
        ``sqrt(mean_k ||A f_k - m_k||^2)`` in moving-image pixels (0 for exact landmarks; with
        ``K = 3`` it is always 0, the fit interpolates).

    Raises
    ------
    ValueError
        Shapes differ, ``K < 3``, non-finite points, or collinear fixed landmarks.
    """
    f = _points("fixed", fixed_points)
    m = _points("moving", moving_points)
    if f.shape != m.shape:
        raise ValueError(f"fixed and moving landmarks differ in shape: {f.shape} vs {m.shape}")
    if len(f) < 3:
        raise ValueError(f"an affine needs at least 3 landmark pairs, got {len(f)}")
    design = np.column_stack([f, np.ones(len(f))])
    coef, _, rank, _ = np.linalg.lstsq(design, m, rcond=None)
    if rank < 3:
        raise ValueError("the fixed landmarks are collinear: the affine is not determined")
    matrix = np.eye(3)
    matrix[:2] = coef.T
    residual = design @ coef - m
    rms = float(np.sqrt(np.mean(np.sum(residual**2, axis=1))))
    return matrix, rms
