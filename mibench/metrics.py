"""Landmark errors, TRE statistics, NAED and robustness for one pair (pure functions).

Definitions (``CONTRACTS.md``): for landmark k, ``e_k = ||T^-1(m_k) - f_k||`` in pixels of the fixed
image at the dataset's native resolution. NAED = mean_k e_k / D, with D the fixed image's diagonal
by default. ``rTRE_k = e_k / diagonal``. Robustness = share of landmarks whose error fell below
their initial (identity) error.
"""

from __future__ import annotations

import math

import numpy as np

from mibench.transform import Transform

#: Choices for the NAED normalisation length D.
NORMALISATIONS = ("diagonal", "max-side", "none")


def norm_length(shape: tuple[int, int], how: str = "diagonal") -> float:
    """The NAED normaliser D for a fixed image of native ``(H, W)``.

    ``diagonal``: sqrt(W^2 + H^2); ``max-side``: max(W, H); ``none``: 1 (NAED = mean TRE in px).
    """
    h, w = shape
    if how == "diagonal":
        return math.hypot(w, h)
    if how == "max-side":
        return float(max(w, h))
    if how == "none":
        return 1.0
    raise ValueError(f"unknown NAED normalisation {how!r}; choose from {NORMALISATIONS}")


def landmark_errors(transform: Transform | None, fixed_landmarks: np.ndarray,
                    moving_landmarks: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """Per-landmark error ``||T^-1(m_k) - f_k|| * scale``; ``transform=None`` means identity.

    Parameters
    ----------
    transform : Transform or None
        Fixed -> moving pixel transform at the working scale.
    fixed_landmarks, moving_landmarks : ndarray ``(K, 2)``
        ``(x, y)`` pixels at the working scale; rows correspond.
    scale : float
        Native pixels per working pixel, so that errors are in native pixels.

    Returns
    -------
    ndarray ``(K,)`` float64. A landmark the transform cannot map gives NaN.
    """
    f = np.asarray(fixed_landmarks, dtype=np.float64).reshape(-1, 2)
    m = np.asarray(moving_landmarks, dtype=np.float64).reshape(-1, 2)
    if len(f) != len(m):
        raise ValueError(f"landmark counts differ: {len(f)} fixed vs {len(m)} moving")
    mapped = m if transform is None else transform.moving_to_fixed(m)
    return np.linalg.norm(mapped - f, axis=1) * scale


def pair_scores(errors: np.ndarray, initial_errors: np.ndarray, length: float,
                diagonal: float) -> dict[str, float]:
    """Summary statistics of one pair's landmark errors.

    Returns ``tre_mean``, ``tre_median``, ``tre_max`` (native px), the same before registration
    as ``ire_*``, ``naed`` (= ``tre_mean / length``), ``rtre_mean``, ``rtre_median``, ``rtre_max``
    (divided by ``diagonal``) and ``robustness`` (share of landmarks with ``e_k < initial e_k``).
    """
    e = np.asarray(errors, dtype=np.float64)
    e0 = np.asarray(initial_errors, dtype=np.float64)
    out = {
        "tre_mean": float(e.mean()),
        "tre_median": float(np.median(e)),
        "tre_max": float(e.max()),
        "ire_mean": float(e0.mean()),
        "ire_median": float(np.median(e0)),
        "ire_max": float(e0.max()),
        "robustness": float(np.mean(e < e0)),
    }
    out["naed"] = out["tre_mean"] / length
    for stat in ("mean", "median", "max"):
        out[f"rtre_{stat}"] = out[f"tre_{stat}"] / diagonal
    return out
