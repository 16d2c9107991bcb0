"""Maps that keep mutual information, and the rescalings of samples into [0, 1].

MI is invariant under a bijection of X alone and a bijection of Y alone (smooth, or any
measurable bijection for discrete variables): ``I(f(X); g(Y)) = I(X; Y)``. It is *not* invariant
under a general bijection of the pair ``(X, Y)``, which can mix the two.

- :data:`MONOTONE_MAPS` are strictly increasing maps of one scalar, applied to X and Y each:
  MI is unchanged, NCC and MSE are not. ``cdf`` (the normal CDF), ``cube``, ``exp``,
  ``halfcube`` (bmi's ``x sqrt|x|``) and ``asinh`` (bmi's tail-shortening map).
- :func:`spiral` is bmi's spiral, a bijection of a *vector* ``x in R^d`` (``d >= 2``) that
  rotates each point by an angle growing with ``|x|^2``. It keeps ``I(X; Y)`` when applied to X
  (or Y) alone. A scalar has no rotation (SO(1) is trivial), so it has no scalar-image task; it
  is here for multi-channel tasks and is tested as a bijection.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.special import ndtr
from scipy.stats import rankdata

from mibench.errors import check_choice


def half_cube(x: np.ndarray) -> np.ndarray:
    """bmi's half-cube ``x sqrt(|x|)`` (a signed ``|x|^(3/2)``): strictly increasing."""
    return x * np.sqrt(np.abs(x))


def cube(x: np.ndarray) -> np.ndarray:
    """``x^3``: strictly increasing."""
    return x**3


#: Strictly increasing maps of a scalar, by the name used in task names (``gaussian-cube``).
MONOTONE_MAPS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "cdf": ndtr,
    "cube": cube,
    "exp": np.exp,
    "halfcube": half_cube,
    "asinh": np.arcsinh,
}


def spiral(x: np.ndarray, speed: float = 1.0, plane: tuple[int, int] = (0, 1)) -> np.ndarray:
    """bmi's spiral ``x -> exp(speed |x|^2 A) x`` of points ``x`` of shape ``(n, d)``, ``d >= 2``.

    ``A`` is the generator of rotations in ``plane`` (``A[i, j] = 1``, ``A[j, i] = -1``), so
    each point turns by ``speed |x|^2`` radians in that plane. The rotation keeps ``|x|``, hence
    the inverse is ``spiral(y, -speed)``: a bijection of the variable X. Apply it to X or Y
    alone (not to the pair) to keep MI.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] < 2:
        raise ValueError(f"spiral needs points of shape (n, d) with d >= 2, got {x.shape}")
    i, j = plane
    angle = speed * (x * x).sum(axis=1)
    c, s = np.cos(angle), np.sin(angle)
    out = x.copy()
    # exp(t A) with A[i, j] = 1, A[j, i] = -1 is the rotation [[c, s], [-s, c]] in (i, j).
    out[:, i] = c * x[:, i] + s * x[:, j]
    out[:, j] = -s * x[:, i] + c * x[:, j]
    return out


#: Rescalings of a sample into [0, 1] (:func:`rescale`).
RESCALINGS = ("minmax", "rank", "none")


def rescale(values: np.ndarray, how: str = "minmax") -> np.ndarray:
    """A strictly increasing map of a 1-D sample onto [0, 1] (float64), so MI is unchanged.

    ``minmax``
        ``(v - min) / (max - min)``: affine, keeps the shape of the marginal (heavy tails stay
        heavy, so the monotone-map tasks differ from each other). A constant sample gives 0.
        No clipping: clipping a tail would merge values and change MI.
    ``rank``
        The empirical CDF ``rank / (n - 1)`` (ranks 0 .. n-1, ties averaged): uniform
        marginals, the sample's copula. Every monotone map of a task gives the *same* ranks.
    ``none``
        The values as they are (the image tasks, already in [0, 1] on aligned levels).
    """
    check_choice("rescale", how, RESCALINGS)
    v = np.asarray(values, dtype=np.float64)
    if how == "none" or v.size == 0:
        return v
    if how == "rank":
        return (rankdata(v) - 1) / max(v.size - 1, 1)
    lo, hi = v.min(), v.max()
    return (v - lo) / (hi - lo) if hi > lo else np.zeros_like(v)
