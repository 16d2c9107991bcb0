"""Landmark errors, TRE statistics, NAED and robustness for one pair (pure functions).

Definitions (the README's *Conventions*): for landmark k, ``e_k = ||T^-1(m_k) - f_k||`` in pixels of
the fixed image at the dataset's native resolution. NAED = mean_k e_k / D, with D the fixed image's
diagonal by default. ``rTRE_k = e_k / diagonal``. Robustness = share of landmarks whose error fell
below their initial (identity) error.

Volumes (``CONTRACTS.md``, *Volumes (3-D) and physical space*): landmarks are ``(K, 3)`` voxels
``(x, y, z)`` and the diagonal is ``sqrt(w^2 + h^2 + d^2)``. Where the fixed image's
:class:`~mibench.geometry.Geometry` is known, the same quantities are also measured in its unit
(mm, um): ``e_k`` is the world length ``||A (T^-1(m_k) - f_k)||`` of the voxel offset, with
``A`` the linear part of the fixed voxel -> world affine (so an oblique or anisotropic grid
counts each voxel step at its true length and direction), and D is the world length of the
diagonal (or of the longest side), so NAED stays dimensionless.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from mibench.geometry import Geometry, voxel_transform
from mibench.transform import MatrixTransform, Transform


@dataclass(frozen=True)
class NaedNorm:
    """One choice of the NAED normaliser D (``--naed-norm``), with the words every output uses.

    ``label`` titles a NAED axis; ``definition`` says what D is in a sentence (report, captions);
    ``normalised`` is False when NAED is then a plain mean TRE in pixels.
    """

    name: str
    label: str
    definition: str
    normalised: bool = True

    def length(self, shape: tuple[int, ...], geometry: Geometry | None = None) -> float:
        """D for a fixed image of spatial ``shape`` ``(H, W)`` or ``(D, H, W)``.

        Parameters
        ----------
        shape : tuple of int
            The fixed image's numpy spatial shape: native pixels when ``geometry`` is None,
            else the shape of the image that ``geometry`` describes.
        geometry : Geometry, optional
            The fixed image's geometry: D is then a world length in its unit (the diagonal
            ``Geometry.diagonal(shape)``, the longest side ``max_a n_a * spacing_a``); ``none``
            stays 1.

        Returns
        -------
        float
            In pixels (voxels), or in ``geometry.unit``.
        """
        if self.name not in ("diagonal", "max-side"):
            return 1.0
        if geometry is not None:
            if self.name == "diagonal":
                return geometry.diagonal(tuple(shape))
            sides = np.asarray(shape[:geometry.ndim][::-1], np.float64) * geometry.spacing
            return float(sides.max())
        size = tuple(shape)[::-1]  # (W, H[, D])
        if self.name == "diagonal":
            return math.hypot(*size)
        return float(max(size))


#: The NAED normalisations by name; the first is the default.
NAED_NORMS = {n.name: n for n in (
    NaedNorm("diagonal", "NAED per task (D = image diagonal)",
             "D = the fixed image's diagonal √(w² + h²) (√(w² + h² + d²) for a volume) in "
             "native pixels"),
    NaedNorm("max-side", "NAED per task (D = longest image side)",
             "D = the fixed image's longest side max(w, h[, d]) in native pixels"),
    NaedNorm("none", "mean TRE per task [px] (NAED with D = 1)",
             "D = 1: NAED is the mean landmark error (TRE) in native pixels, not a normalised "
             "value", normalised=False),
)}
DEFAULT_NAED_NORM = "diagonal"


def naed_norm(name: str) -> NaedNorm:
    """The :class:`NaedNorm` called ``name``; ``ValueError`` naming the choices otherwise."""
    try:
        return NAED_NORMS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown NAED normalisation {name!r}; choose from "
                         f"{', '.join(NAED_NORMS)}") from None


def norm_length(shape: tuple[int, ...], how: str = DEFAULT_NAED_NORM,
                geometry: Geometry | None = None) -> float:
    """The NAED normaliser D for a fixed image of native ``(H, W)`` (or ``(D, H, W)``).

    ``diagonal``: sqrt(W^2 + H^2 [+ D^2]); ``max-side``: max(W, H [, D]); ``none``: 1 (NAED =
    mean TRE in px). With the fixed image's ``geometry`` (and ``shape`` the shape it describes),
    the same lengths in its unit (:meth:`NaedNorm.length`).
    """
    return naed_norm(how).length(shape, geometry)


def start_transform(ndim: int, fixed_geometry: Geometry | None = None,
                    moving_geometry: Geometry | None = None) -> MatrixTransform | None:
    """The transform "before registration", whose landmark errors are a pair's initial errors.

    The same definition as the methods' starting point and the ``identity`` method
    (:func:`mibench.methods.initial.start_matrix`): a volume whose fixed and moving geometries
    are both known starts at the *world* identity, fixed voxel -> world -> moving voxel
    ``inv(A_moving) @ A_fixed`` (two scans of one head are aligned in the scanner's
    millimetres, not voxel by voxel); every other pair at the pixel identity.

    Parameters
    ----------
    ndim : {2, 3}
        Spatial dimensions of the pair.
    fixed_geometry, moving_geometry : Geometry, optional

    Returns
    -------
    MatrixTransform (4x4) or None
        None for the pixel identity (what :func:`landmark_errors` takes for "no transform"),
        which the world identity is, exactly, when both images share one geometry.
    """
    if (ndim == 3 and fixed_geometry is not None and moving_geometry is not None
            and fixed_geometry != moving_geometry):
        return MatrixTransform(voxel_transform(np.eye(4), fixed_geometry, moving_geometry))
    return None


def landmark_errors(transform: Transform | None, fixed_landmarks: np.ndarray,
                    moving_landmarks: np.ndarray, scale: float = 1.0, *,
                    geometry: Geometry | None = None) -> np.ndarray:
    """Per-landmark error ``||T^-1(m_k) - f_k|| * scale``; ``transform=None`` means identity.

    Parameters
    ----------
    transform : Transform or None
        Fixed -> moving pixel (voxel) transform at the working scale.
    fixed_landmarks, moving_landmarks : ndarray ``(K, 2)`` or ``(K, 3)``
        ``(x, y)`` pixels or ``(x, y, z)`` voxels at the working scale; rows correspond.
    scale : float
        Native pixels per working pixel, so that errors are in native pixels.
    geometry : Geometry, optional
        The fixed image's geometry (of the image the landmarks are in): the error is then the
        world length ``||A (T^-1(m_k) - f_k)||`` in ``geometry.unit``, ``A`` its linear part,
        which already accounts for any resizing, so ``scale`` must be 1.

    Returns
    -------
    ndarray ``(K,)`` float64: native pixels (voxels), or ``geometry.unit``. A landmark the
    transform cannot map gives NaN.
    """
    f = np.asarray(fixed_landmarks, dtype=np.float64)
    ndim = f.shape[-1] if f.ndim == 2 else 2
    f = f.reshape(-1, ndim)
    m = np.asarray(moving_landmarks, dtype=np.float64).reshape(-1, ndim)
    if len(f) != len(m):
        raise ValueError(f"landmark counts differ: {len(f)} fixed vs {len(m)} moving")
    mapped = m if transform is None else transform.moving_to_fixed(m)
    if geometry is None:
        return np.linalg.norm(mapped - f, axis=1) * scale
    if scale != 1:
        raise ValueError(f"scale {scale} with a geometry: the geometry of the working image "
                         "gives world lengths directly")
    if geometry.ndim != ndim:
        raise ValueError(f"{ndim}-D landmarks with a {geometry.ndim}-D geometry")
    linear = geometry.affine[:ndim, :ndim]
    return np.linalg.norm((mapped - f) @ linear.T, axis=1)


def pair_scores(errors: np.ndarray, initial_errors: np.ndarray, length: float,
                diagonal: float) -> dict[str, float]:
    """Summary statistics of one pair's landmark errors.

    Returns ``tre_mean``, ``tre_median``, ``tre_max`` (in the unit of ``errors``: native px, or
    a geometry's unit), the same before registration as ``ire_*``, ``naed`` (= ``tre_mean /
    length``), ``rtre_mean``, ``rtre_median``, ``rtre_max`` (divided by ``diagonal``) and
    ``robustness`` (share of landmarks with ``e_k < initial e_k``). ``length`` and
    ``diagonal`` must be in the unit of ``errors``.
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


# --------------------------------------------------------------------------- across pairs

#: FIRE thresholds in native pixels: a pair succeeds at t when its mean error is below t.
FIRE_THRESHOLDS = np.arange(1, 26, dtype=np.float64)

#: FIRE's pair categories (S: large overlap, P: small overlap, A: anatomical change).
FIRE_CATEGORIES = ("S", "P", "A")


def success_curve(mean_errors: np.ndarray, thresholds: np.ndarray = FIRE_THRESHOLDS
                  ) -> np.ndarray:
    """Share of pairs whose mean landmark error (native px) is below each threshold.

    Parameters
    ----------
    mean_errors : ndarray ``(N,)``
        One mean error per pair, in native pixels. NaN entries (unscored) are ignored.
    thresholds : ndarray ``(T,)``
        Thresholds in native pixels (FIRE: 1..25).

    Returns
    -------
    ndarray ``(T,)`` float64 in [0, 1]; all NaN when there is no finite error.
    """
    e = np.asarray(mean_errors, dtype=np.float64).ravel()
    e = e[~np.isnan(e)]
    t = np.asarray(thresholds, dtype=np.float64).ravel()
    if e.size == 0:
        return np.full(t.shape, np.nan)
    return (e[None, :] < t[:, None]).mean(axis=1)


def success_auc(mean_errors: np.ndarray, thresholds: np.ndarray = FIRE_THRESHOLDS) -> float:
    """FIRE's area under the success curve: the mean success rate over ``thresholds``."""
    return float(np.mean(success_curve(mean_errors, thresholds)))


def mean_auc(aucs: dict[str, float], categories: tuple[str, ...] = FIRE_CATEGORIES) -> float:
    """FIRE mAUC: the mean of the per-category AUCs; NaN unless every category has one."""
    values = [aucs.get(c, np.nan) for c in categories]
    return float(np.mean(values)) if np.all(np.isfinite(values)) else float("nan")


def average_ranks(values: np.ndarray) -> np.ndarray:
    """ANHIR average rank: rank methods on each pair (1 = smallest value), average over pairs.

    Parameters
    ----------
    values : ndarray ``(N_pairs, M_methods)``
        One value per pair and method (e.g. median rTRE); NaN where a method has no value.

    Returns
    -------
    ndarray ``(M,)``: ties share the average of their ranks; a method missing a pair gets the
    worst rank ``M`` on it (ANHIR's rule). Pairs no method has are skipped; NaN when none is left.
    """
    from scipy.stats import rankdata

    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 2:
        raise ValueError(f"expected a (pairs, methods) array, got shape {v.shape}")
    v = v[~np.isnan(v).all(axis=1)]
    n_methods = v.shape[1]
    if v.shape[0] == 0:
        return np.full(n_methods, np.nan)
    ranks = rankdata(np.where(np.isnan(v), np.inf, v), axis=1, method="average")
    ranks = np.where(np.isnan(v), float(n_methods), ranks)
    return ranks.mean(axis=0)
