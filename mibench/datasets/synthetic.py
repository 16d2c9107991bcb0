"""The ``synthetic`` dataset: multimodal pairs with an exactly known transform.

Each pair is generated from a scene that ships with scikit-image, so it needs no download (the
scenes and their sampling: :mod:`mibench.datasets.scenes`):

``fundus``
    ``skimage.data.retina()``. The fixed image is its green channel (where the vessels have most
    contrast), in [0, 1] inside the circular field of view (FOV) and 0 outside. The moving image
    maps that intensity through a non-monotonic curve ``0.5 + 0.45 sin(pi (a v + b))`` (so the
    intensity relation is a function, but neither increasing nor decreasing: NCC cannot follow
    it, mutual information can), times a smooth multiplicative bias field, plus Gaussian noise;
    0 outside its FOV.
``histology``
    ``skimage.data.immunohistochemistry()``. The fixed image is its haematoxylin (nuclei)
    channel; the moving image a DAB stain with a haematoxylin counterstain (``DAB + 0.4 *
    haematoxylin`` optical density, what an IHC slide shows), plus mild noise.

Geometry. For pair ``k`` a square crop window (random centre, side 60-100 % of the source) defines
the fixed frame, ``C`` maps fixed pixels to source pixels. A random transform ``T`` (3 x 3, *fixed
-> moving* pixel coordinates, as in the README's *Conventions*) defines the moving frame by
pull-back: ``moving(q) = modality(scene(C T^-1 q))``, where ``scene`` is the source channel (reduced
by powers of two, for speed) smoothed by a Gaussian matched to the crop's remaining downsampling
factor (anti-aliasing) and sampled bilinearly. Fixed and moving are thus samples of one continuous
scene, and landmarks satisfy ``m_k = T(f_k)`` exactly. ``T`` and the crop are stored in ``meta``.

Backgrounds. Fundus pixels outside the FOV are 0 in both images; the masks are the FOV (fixed) and
the warped FOV (moving). Histology moving pixels that map outside the source take the median of
the channel's border pixels (no artificial black edge); the fixed mask is all True and the moving
mask marks the pixels that map inside the source.

Landmarks are Harris corners of the fixed image with a minimum spacing (``size / 16`` pixels) on
structure (smoothed gradient magnitude at least the median over the FOV), at least 5 % of the size
inside both images and both FOVs; when too few exist, gradient-magnitude maxima and then random
usable pixels fill up, so a pair always has the requested number.

Randomness: pair ``k`` draws everything from ``numpy.random.default_rng([seed, k])`` (noise and
fallback landmarks from ``[seed, k, 1]``), in an order that does not depend on the options, so a
pair is the same whatever the number of pairs, and ``easy``/``hard`` or ``affine``/``perspective``
differ only in the magnitude or presence of the same random components. ``transform="rigid"``
uses the same draws for rotation and translation only, over larger ranges (:data:`RIGID`: up to
10/20/30 degrees and 5/10/20 % of the size for easy/medium/hard); scale and shear are exactly 1
and 0, so the matrix is a rotation about the image centre plus a translation.

Elastic pairs (``transform="elastic"``). The affine ``A`` is the one ``transform="affine"``
draws for the same pair (same draws, same crop, so the same fixed image), and a smooth random
displacement ``u`` follows it: ``T(p) = A(p) + u(A(p))``, a cubic B-spline FFD
(:class:`mibench.bspline.BSplineTransform`, elastix's order) on a control grid of spacing
``elastic_spacing`` px placed over ``A`` of the fixed image, with coefficients drawn uniformly in
``[-a, a]`` per component, ``a = elastic_amplitude`` px, from ``default_rng([seed, k, 2])`` (a
stream of its own: the affine draws do not move). A B-spline is a convex combination of its
coefficients, so every displacement component is at most ``a``; its derivatives are at most
``2 a / spacing`` in magnitude, so ``a < spacing / 4`` (enforced) keeps ``q -> q + u(q)`` a
contraction-perturbed identity: one-to-one, no folding. The moving image is rendered by pulling
back through ``T^-1`` (Newton, :meth:`~mibench.bspline.BSplineTransform.moving_to_fixed`, residual
<= 1e-8 px) and landmarks are exact, ``m_k = T(f_k)``. ``meta`` holds ``affine`` (``A``) and
``true_deformation`` (``T`` as :meth:`~mibench.bspline.BSplineTransform.to_dict`, coefficients
embedded; :func:`mibench.transform.transform_from_dict` reads it) instead of the matrix
``true_transform``, which would not be the truth.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from mibench.datasets.layout import comma_list
from mibench.datasets.scenes import FAMILIES, in_fov, level, sample, source_shape
from mibench.pairs import Pair, PairInfo

#: Defaults of the elastic family's options (read with these values when absent, so the
#: generator runs whether or not the dataset's spec lists them).
ELASTIC_DEFAULTS = {"elastic_amplitude": 10.0, "elastic_spacing": 48.0}


@dataclass(frozen=True)
class _Limits:
    """Largest magnitude of each random transform component at one difficulty."""

    rotation_deg: float
    translation: float  # fraction of the image size
    scale: float  # relative change of each axis
    shear: float  # tan of the shear angle
    perspective: float  # relative change of the homogeneous w at the image edge


DIFFICULTY = {
    "easy": _Limits(5.0, 0.03, 0.05, 0.03, 0.03),
    "medium": _Limits(10.0, 0.06, 0.10, 0.06, 0.06),
    "hard": _Limits(20.0, 0.10, 0.15, 0.10, 0.10),
}

#: ``transform="rigid"``: rotation and translation only (no scale, shear or perspective), with
#: larger ranges than the affine ones, as global rigid methods (``cmif``) are meant for.
RIGID = {
    "easy": _Limits(10.0, 0.05, 0.0, 0.0, 0.0),
    "medium": _Limits(20.0, 0.10, 0.0, 0.0, 0.0),
    "hard": _Limits(30.0, 0.20, 0.0, 0.0, 0.0),
}

_CROP_RANGE = (0.6, 1.0)  # crop side as a fraction of the source side
_FUNDUS_NOISE = 0.02  # std of the additive noise, intensity units
_HISTOLOGY_NOISE = 0.01
_BIAS_STRENGTH = 0.3  # largest coefficient of the log bias polynomial


# ------------------------------------------------------------------------------ the plan


@dataclass(frozen=True)
class _Plan:
    """Everything random about one pair, drawn cheaply without touching any image.

    ``matrix`` is the true fixed -> moving transform (its affine part for elastic pairs, whose
    whole transform is ``deformation``); ``crop`` is ``(x0, y0, side)`` of the
    crop window in source pixels (edges, not centres); ``curve`` is ``(a, b)`` of the fundus
    intensity curve; ``bias`` the 5 coefficients of the log bias field.
    """

    family: str
    matrix: np.ndarray
    crop: tuple[float, float, float]
    curve: tuple[float, float]
    bias: tuple[float, ...]
    deformation: Any = None  # BSplineTransform on ``matrix`` for elastic pairs, else None


def _translation(tx: float, ty: float) -> np.ndarray:
    return np.array([[1.0, 0.0, tx], [0.0, 1.0, ty], [0.0, 0.0, 1.0]])


def true_transform(unit: np.ndarray, size: int, limits: _Limits, perspective: bool) -> np.ndarray:
    """Build the 3x3 fixed -> moving pixel transform from unit random draws.

    Parameters
    ----------
    unit : ndarray, shape (8,)
        Draws in [-1, 1]: rotation, x scale, y scale, shear, x and y translation, and the two
        projective coefficients.
    size : int
        Image side in pixels; the transform acts about the image centre ``((size-1)/2,) * 2``.
    limits : _Limits
        Magnitudes the draws are scaled by.
    perspective : bool
        Whether to add the projective part (otherwise the bottom row is ``[0, 0, 1]``).

    Returns
    -------
    ndarray, shape (3, 3), float64
        ``T`` with ``T[2, 2] == 1``, mapping ``[x, y, 1]`` (pixels) of the fixed image to the
        moving image.
    """
    angle = math.radians(limits.rotation_deg * unit[0])
    sx, sy = 1 + limits.scale * unit[1], 1 + limits.scale * unit[2]
    shear = limits.shear * unit[3]
    tx, ty = limits.translation * size * unit[4], limits.translation * size * unit[5]
    cos, sin = math.cos(angle), math.sin(angle)
    rotate = np.array([[cos, -sin, 0.0], [sin, cos, 0.0], [0.0, 0.0, 1.0]])
    shear_m = np.array([[1.0, shear, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    scale_m = np.diag([sx, sy, 1.0])
    project = np.eye(3)
    if perspective:
        # w = 1 + g (x - cx) + h (y - cy); each term is at most `limits.perspective` at the edge.
        half = max(size / 2, 1.0)
        project[2, :2] = limits.perspective * unit[6:8] / half
    centre = (size - 1) / 2
    matrix = (_translation(centre + tx, centre + ty) @ rotate @ shear_m @ scale_m @ project
              @ _translation(-centre, -centre))
    return matrix / matrix[2, 2]


def _plan(index: int, family: str, options: dict[str, Any]) -> _Plan:
    """Draw pair ``index``'s random parameters (always the same draws in the same order)."""
    rng = np.random.default_rng([options["seed"], index])
    unit = rng.uniform(-1.0, 1.0, size=8)
    crop_unit = rng.uniform(0.0, 1.0, size=3)
    curve = (float(rng.uniform(1.2, 2.0)), float(rng.uniform(0.0, 2.0)))
    bias = tuple(float(v) for v in rng.uniform(-_BIAS_STRENGTH, _BIAS_STRENGTH, size=5))

    limits = (RIGID if options["transform"] == "rigid" else DIFFICULTY)[options["difficulty"]]
    matrix = true_transform(unit, options["size"], limits, options["transform"] == "perspective")
    side_px = min(source_shape(family))
    lo, hi = _CROP_RANGE
    side = (lo + (hi - lo) * crop_unit[0]) * side_px
    height, width = source_shape(family)
    crop = (float(crop_unit[1] * (width - side)), float(crop_unit[2] * (height - side)),
            float(side))
    deformation = _deformation(index, matrix, options) if options["transform"] == "elastic" \
        else None
    return _Plan(family, matrix, crop, curve, bias, deformation)


def _elastic_options(options: dict[str, Any]) -> tuple[float, float]:
    """``(amplitude, spacing)`` in px, checked: ``0 <= amplitude < spacing / 4``."""
    amplitude = float(options.get("elastic_amplitude", ELASTIC_DEFAULTS["elastic_amplitude"]))
    spacing = float(options.get("elastic_spacing", ELASTIC_DEFAULTS["elastic_spacing"]))
    if not (spacing > 0 and 0 <= amplitude < spacing / 4):
        raise ValueError(f"synthetic: elastic_amplitude must be in [0, elastic_spacing / 4) "
                         f"(no folding), got {amplitude} px with a spacing of {spacing} px")
    return amplitude, spacing


def _deformation(index: int, matrix: np.ndarray, options: dict[str, Any]):
    """The elastic pair's B-spline on ``matrix`` (see the module docstring)."""
    from mibench.bspline import BSplineTransform

    amplitude, spacing = _elastic_options(options)
    size = options["size"]
    deformation = BSplineTransform.over((size, size), spacing, matrix)
    rng = np.random.default_rng([options["seed"], index, 2])
    deformation.coefficients = rng.uniform(-amplitude, amplitude,
                                           deformation.grid.coefficient_shape)
    return deformation


# ---------------------------------------------------------------------------- rendering


def _pixel_grid(size: int) -> np.ndarray:
    """``(x, y)`` of every pixel of a ``size x size`` image, row-major, shape ``(size**2, 2)``."""
    ys, xs = np.mgrid[:size, :size].astype(np.float64)
    return np.column_stack([xs.ravel(), ys.ravel()])


def _apply(matrix: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Map ``(N, 2)`` points ``(x, y)``; points sent behind the camera (w <= 0) become NaN."""
    # Written out per coordinate: a (N, 3) @ (3, 3) product goes through BLAS, which is several
    # times slower for such skinny operands.
    x, y = xy[:, 0], xy[:, 1]
    w = matrix[2, 0] * x + matrix[2, 1] * y + matrix[2, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.column_stack([(matrix[0, 0] * x + matrix[0, 1] * y + matrix[0, 2]) / w,
                               (matrix[1, 0] * x + matrix[1, 1] * y + matrix[1, 2]) / w])
    out[~(w > 0)] = np.nan
    return out


def _crop_matrix(crop: tuple[float, float, float], size: int) -> np.ndarray:
    """Fixed pixel -> source pixel for a crop window ``(x0, y0, side)`` resized to ``size``.

    Pixel centres: fixed pixel ``x`` covers ``[x - 0.5, x + 0.5]``, which is the source span
    ``x0 + k [x, x + 1]`` with ``k = side / size``, in source pixel-edge coordinates.
    """
    x0, y0, side = crop
    k = side / size
    return np.array([[k, 0.0, x0 + 0.5 * k - 0.5], [0.0, k, y0 + 0.5 * k - 0.5], [0, 0, 1.0]])


def _bias_field(coefficients: tuple[float, ...], size: int) -> np.ndarray:
    """A smooth multiplicative field in (0, 1], max 1: ``exp`` of a quadratic in [-1, 1]^2."""
    u = np.linspace(-1.0, 1.0, size)
    vv, uu = np.meshgrid(u, u, indexing="ij")
    c = coefficients
    log = c[0] * uu + c[1] * vv + c[2] * uu * vv + c[3] * uu**2 + c[4] * vv**2
    return np.exp(log - log.max()).astype(np.float32)


def _render(plan: _Plan, size: int, modality: str, rng: np.random.Generator):
    """Generate the fixed and moving images and masks of one pair.

    Returns
    -------
    fixed, moving : ndarray (size, size) float32 in [0, 1]
    fixed_mask, moving_mask : ndarray (size, size) bool
    """
    factor = plan.crop[2] / size  # source pixels per output pixel
    times = max(0, math.floor(math.log2(factor)))
    src = level(plan.family, times)
    crop = np.diag([2.0**-times, 2.0**-times, 1.0]) @ _crop_matrix(plan.crop, size)
    grid = _pixel_grid(size)
    fixed_xy = _apply(crop, grid)
    if plan.deformation is None:
        moving_xy = _apply(crop @ np.linalg.inv(plan.matrix), grid)
    else:
        moving_xy = _apply(crop, plan.deformation.moving_to_fixed(grid))
    # Anti-aliasing for what remains of the downsampling, as in skimage.transform.resize.
    sigma = max(0.0, (factor / 2**times - 1) / 2)
    multimodal = modality != "none"
    moving_channel = src.moving if multimodal else src.fixed
    moving_background = src.moving_background if multimodal else src.fixed_background

    fixed, fixed_in = sample(src.fixed, fixed_xy, sigma, src.fixed_background)
    moving, moving_in = sample(moving_channel, moving_xy, sigma, moving_background)
    fixed_mask = fixed_in & in_fov(fixed_xy, src.fov)
    moving_mask = moving_in & in_fov(moving_xy, src.fov)

    shape = (size, size)
    fixed, moving = fixed.reshape(shape), moving.reshape(shape)
    fixed_mask, moving_mask = fixed_mask.reshape(shape), moving_mask.reshape(shape)
    if multimodal and plan.family == "fundus":
        a, b = plan.curve
        moving = 0.5 + 0.45 * np.sin(np.pi * (a * moving + b))
        moving = moving * _bias_field(plan.bias, size)
        moving = moving + rng.normal(0.0, _FUNDUS_NOISE, shape)
    elif multimodal:
        moving = moving + rng.normal(0.0, _HISTOLOGY_NOISE, shape)
    if src.fov is not None:
        fixed = np.where(fixed_mask, fixed, 0.0)
        moving = np.where(moving_mask, moving, 0.0)
    fixed = np.clip(fixed, 0.0, 1.0).astype(np.float32)
    moving = np.clip(moving, 0.0, 1.0).astype(np.float32)
    return fixed, moving, fixed_mask, moving_mask


# ---------------------------------------------------------------------------- landmarks


def _interior(mask: np.ndarray, margin: int) -> np.ndarray:
    """Pixels of ``mask`` at least ``margin`` pixels from its edge and from the image border."""
    from scipy import ndimage

    padded = np.pad(mask, 1, constant_values=False)
    return ndimage.distance_transform_edt(padded)[1:-1, 1:-1] > margin


def _usable(fixed_mask: np.ndarray, moving_mask: np.ndarray, matrix: Any,
            margin: int) -> np.ndarray:
    """Fixed pixels ``p`` well inside the fixed FOV whose ``T(p)`` is well inside the moving FOV.

    ``matrix`` is the 3x3 ``T`` or a callable mapping ``(N, 2)`` points (a deformation).
    """
    fixed_ok, moving_ok = _interior(fixed_mask, margin), _interior(moving_mask, margin)
    rows, cols = np.nonzero(fixed_ok)
    points = np.column_stack([cols, rows]).astype(np.float64)
    mapped = matrix(points) if callable(matrix) else _apply(matrix, points)
    finite = np.isfinite(mapped[:, 0])
    mc = np.rint(np.where(finite, mapped[:, 0], -1)).astype(int)
    mr = np.rint(np.where(finite, mapped[:, 1], -1)).astype(int)
    h, w = moving_mask.shape
    ok = finite & (mc >= 0) & (mc < w) & (mr >= 0) & (mr < h)
    usable = np.zeros_like(fixed_ok)
    usable[rows[ok], cols[ok]] = moving_ok[mr[ok], mc[ok]]
    return usable


def _spaced(candidates: np.ndarray, chosen: list, min_distance: float, count: int) -> None:
    """Append ``(row, col)`` candidates, in order, that keep ``min_distance`` from ``chosen``."""
    for rc in candidates:
        if len(chosen) >= count:
            return
        if all(np.hypot(*(rc - c)) >= min_distance for c in chosen):
            chosen.append(rc)


def find_landmarks(fixed: np.ndarray, fixed_mask: np.ndarray, moving_mask: np.ndarray,
                   matrix: Any, count: int, rng: np.random.Generator) -> np.ndarray:
    """Choose ``count`` well-spread landmarks on structure that stay visible after ``matrix``.

    Parameters
    ----------
    fixed : ndarray (H, W) float
    fixed_mask, moving_mask : ndarray (H, W) bool
        Valid pixels of the fixed and moving images.
    matrix : ndarray (3, 3) or callable
        The fixed -> moving pixel transform, or a function mapping ``(N, 2)`` fixed points to
        moving points (an elastic pair's ``fixed_to_moving``).
    count : int
    rng : Generator
        Used only when too few structured points exist.

    Returns
    -------
    ndarray (count, 2) float64
        ``(x, y)`` fixed-image pixel coordinates (integers), in order of decreasing corner
        strength (structured points first, random fill last).
    """
    from scipy import ndimage
    from skimage.feature import corner_harris, corner_peaks, peak_local_max

    margin = max(3, round(0.05 * min(fixed.shape)))
    min_distance = max(2, round(min(fixed.shape) / 16))
    usable = _usable(fixed_mask, moving_mask, matrix, margin)
    if not usable.any():
        # Cannot happen for the bounded transforms generated here; keep the count anyway.
        usable = _interior(fixed_mask, 0) if fixed_mask.any() else np.ones_like(fixed_mask)
    gradient = ndimage.gaussian_gradient_magnitude(fixed.astype(np.float64), 1.5)
    reference = fixed_mask if fixed_mask.any() else np.ones_like(fixed_mask)
    structured = usable & (gradient >= np.median(gradient[reference]))

    chosen: list = []
    # Zero the response outside the usable region first: strong FOV-edge corners would
    # otherwise suppress the interior peaks near them.
    response = np.where(structured, corner_harris(fixed.astype(np.float64), sigma=1.5), 0.0)
    peaks = corner_peaks(response, min_distance=min_distance, threshold_abs=1e-12,
                         exclude_border=False)
    order = np.argsort(-response[peaks[:, 0], peaks[:, 1]], kind="stable")
    _spaced(peaks[order], chosen, min_distance, count)
    if len(chosen) < count:
        ridges = peak_local_max(np.where(structured, gradient, 0.0), min_distance=min_distance,
                                threshold_abs=1e-12, exclude_border=False)
        _spaced(ridges, chosen, min_distance, count)
    if len(chosen) < count:
        pool = np.argwhere(usable)
        _spaced(pool[rng.permutation(len(pool))], chosen, min_distance / 2, count)
    if len(chosen) < count:
        pool = np.argwhere(usable)
        chosen.extend(pool[rng.integers(0, len(pool), count - len(chosen))])
    rows_cols = np.asarray(chosen[:count], dtype=np.float64).reshape(-1, 2)
    return rows_cols[:, ::-1].copy()


# ----------------------------------------------------------------------------- dataset


class SyntheticDataset:
    """The ``synthetic`` dataset (see the module docstring); built by :func:`load_dataset`."""

    def __init__(self, options: dict[str, Any]):
        self.options = dict(options)
        self.families = comma_list(options["families"], FAMILIES, "families")
        if options["transform"] == "elastic":
            _elastic_options(options)
        self._index = {self._pair_id(i): i for i in range(options["pairs"])}

    def _family(self, index: int) -> str:
        return self.families[index % len(self.families)]

    def _pair_id(self, index: int) -> str:
        return f"{self._family(index)}-{index:03d}"

    def _meta(self, plan: _Plan) -> dict[str, Any]:
        if plan.deformation is not None:
            return {"family": plan.family, "affine": plan.matrix.tolist(),
                    "true_deformation": plan.deformation.to_dict(embed=True),
                    "crop": list(plan.crop)}
        return {"family": plan.family, "true_transform": plan.matrix.tolist(),
                "crop": list(plan.crop)}

    def pairs(self) -> list[PairInfo]:
        """All pairs with their metadata (``family``, ``true_transform``, ``crop``); no images."""
        infos = []
        for pair_id, index in self._index.items():
            plan = _plan(index, self._family(index), self.options)
            infos.append(PairInfo(pair_id, self._meta(plan)))
        return infos

    def load(self, pair_id: str) -> Pair:
        """Generate one pair (about 0.1 s at 256 x 256)."""
        if pair_id not in self._index:
            raise ValueError(f"synthetic: no pair {pair_id!r} (pairs: "
                             f"{', '.join(self._index) or 'none'})")
        index = self._index[pair_id]
        opts = self.options
        plan = _plan(index, self._family(index), opts)
        rng = np.random.default_rng([opts["seed"], index, 1])
        fixed, moving, fixed_mask, moving_mask = _render(plan, opts["size"], opts["modality"], rng)
        truth = plan.matrix if plan.deformation is None else plan.deformation.fixed_to_moving
        fixed_points = find_landmarks(fixed, fixed_mask, moving_mask, truth, opts["landmarks"],
                                      rng)
        moving_points = (_apply(plan.matrix, fixed_points) if plan.deformation is None
                         else plan.deformation.fixed_to_moving(fixed_points))
        return Pair(id=pair_id, fixed=fixed, moving=moving, fixed_landmarks=fixed_points,
                    moving_landmarks=moving_points, fixed_mask=fixed_mask,
                    moving_mask=moving_mask, meta=self._meta(plan))


def load_dataset(data_dir: Any = None, **params: Any) -> SyntheticDataset:
    """Factory of the ``synthetic`` dataset.

    Parameters
    ----------
    data_dir : ignored
        The images ship with scikit-image.
    **params
        Options of the dataset spec (``seed``, ``pairs``, ``size``, ``families``, ``transform``,
        ``difficulty``, ``landmarks``, ``modality``; ``elastic_amplitude`` and
        ``elastic_spacing`` in px for ``transform="elastic"``, :data:`ELASTIC_DEFAULTS` when the
        spec does not list them); missing ones take their defaults.

    Raises
    ------
    UserError
        For an unknown option or a value outside the spec's bounds or choices (checked by
        :meth:`~mibench.specs.PluginSpec.resolve`).
    ValueError
        For a ``families`` list naming an unknown family.
    """
    from mibench.datasets import SYNTHETIC

    return SyntheticDataset(SYNTHETIC.resolve(params))
