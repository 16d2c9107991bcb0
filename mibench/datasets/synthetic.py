"""The ``synthetic`` dataset: multimodal pairs with an exactly known transform.

Each pair is generated from an image that ships with scikit-image, so it needs no download:

``fundus``
    ``skimage.data.retina()`` (1411 x 1411 RGB). The fixed image is the green channel (where the
    vessels have most contrast), normalised to [0, 1] inside the circular field of view (FOV) and
    0 outside. The moving image maps that intensity through a non-monotonic curve
    ``0.5 + 0.45 sin(pi (a v + b))`` (so the intensity relation is a function, but neither
    increasing nor decreasing: NCC cannot follow it, mutual information can), times a smooth
    multiplicative bias field, plus Gaussian noise; 0 outside its FOV.
``histology``
    ``skimage.data.immunohistochemistry()`` (512 x 512 RGB), separated with
    ``skimage.color.rgb2hed``. The fixed image is the haematoxylin (nuclei) channel, as a
    haematoxylin-only stain would show it; the moving image is a DAB stain with a haematoxylin
    counterstain, ``DAB + 0.4 * haematoxylin`` optical density (what an IHC slide shows), plus
    mild noise; each rescaled to [0, 1] by its 0.5 and 99.5 percentiles. (The eosin channel of
    this image is empty. DAB alone shares too little with haematoxylin to localise anything: its
    MI with the fixed image falls only from 0.075 to 0.048 nats over a 16 px shift, against 0.15
    to 0.10 over 2 px for the counterstained rendering.)

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
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from mibench.errors import UserError
from mibench.pairs import Pair, PairInfo

FAMILIES = ("fundus", "histology")


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
_MIN_SIZE = 32


# --------------------------------------------------------------------------------- sources


@dataclass(frozen=True)
class _Source:
    """A source scene: the fixed and moving channels, both float32 ``(H, W)`` in [0, 1].

    ``fov`` is the circular field of view ``(cx, cy, r)`` in source pixels, or None when the
    whole image is valid. ``fixed_background`` / ``moving_background`` fill pixels that map
    outside the source.
    """

    fixed: np.ndarray
    moving: np.ndarray
    fov: tuple[float, float, float] | None
    fixed_background: float
    moving_background: float


def _rescale(channel: np.ndarray, where: np.ndarray | None = None,
             percentiles: tuple[float, float] = (0.5, 99.5)) -> np.ndarray:
    """Map the given percentiles of ``channel`` (over ``where``) to 0 and 1, clipping."""
    values = channel if where is None else channel[where]
    lo, hi = np.percentile(values, percentiles)
    return np.clip((channel - lo) / max(hi - lo, 1e-12), 0.0, 1.0).astype(np.float32)


def _border_median(channel: np.ndarray) -> float:
    return float(np.median(np.concatenate(
        [channel[0], channel[-1], channel[1:-1, 0], channel[1:-1, -1]])))


@functools.cache
def _source(family: str) -> _Source:
    """Decode and prepare a family's source image (cached: the retina JPEG takes ~0.6 s)."""
    from skimage import color, data

    if family == "fundus":
        rgb = data.retina()
        # The FOV is a disc on a black background; its bounding box gives centre and radius.
        # Shrinking the radius by 1.5 % drops the dark vignetted rim (and the small notch).
        rows, cols = np.nonzero(rgb[..., 0] > 20)
        cx, cy = (cols.min() + cols.max()) / 2, (rows.min() + rows.max()) / 2
        radius = 0.985 * min(cols.max() - cols.min(), rows.max() - rows.min()) / 2
        ys, xs = np.mgrid[: rgb.shape[0], : rgb.shape[1]]
        inside = (xs - cx) ** 2 + (ys - cy) ** 2 <= radius**2
        green = _rescale(rgb[..., 1].astype(np.float32), inside, (1.0, 99.5))
        green[~inside] = 0.0
        return _Source(green, green, (float(cx), float(cy), float(radius)), 0.0, 0.0)
    if family == "histology":
        hed = color.rgb2hed(data.immunohistochemistry())
        haematoxylin = _rescale(hed[..., 0])
        ihc = _rescale(hed[..., 2] + 0.4 * hed[..., 0])
        return _Source(haematoxylin, ihc, None,
                       _border_median(haematoxylin), _border_median(ihc))
    raise ValueError(f"unknown family {family!r}")


@functools.cache
def _level(family: str, level: int) -> _Source:
    """The source reduced ``level`` times by 2 (Gaussian sigma 1, keep every other pixel).

    Pixel ``(x, y)`` of level ``l`` is pixel ``(2^l x, 2^l y)`` of the source, so coordinates
    scale exactly by ``2^-l``. Sampling a small output from the 1411-pixel retina is then cheap
    (the anti-aliasing blur is applied where it is small) with the same result for both images.
    """
    from scipy import ndimage

    if level == 0:
        return _source(family)
    up = _level(family, level - 1)

    def reduce(channel: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(ndimage.gaussian_filter(channel, 1.0)[::2, ::2])

    fixed = reduce(up.fixed)
    moving = fixed if up.moving is up.fixed else reduce(up.moving)
    fov = None if up.fov is None else tuple(v / 2 for v in up.fov)
    return _Source(fixed, moving, fov, up.fixed_background, up.moving_background)


# ------------------------------------------------------------------------------ the plan


@dataclass(frozen=True)
class _Plan:
    """Everything random about one pair, drawn cheaply without touching any image.

    ``matrix`` is the true fixed -> moving transform; ``crop`` is ``(x0, y0, side)`` of the
    crop window in source pixels (edges, not centres); ``curve`` is ``(a, b)`` of the fundus
    intensity curve; ``bias`` the 5 coefficients of the log bias field.
    """

    family: str
    matrix: np.ndarray
    crop: tuple[float, float, float]
    curve: tuple[float, float]
    bias: tuple[float, ...]


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
    side_px = min(_source_shape(family))
    lo, hi = _CROP_RANGE
    side = (lo + (hi - lo) * crop_unit[0]) * side_px
    height, width = _source_shape(family)
    crop = (float(crop_unit[1] * (width - side)), float(crop_unit[2] * (height - side)),
            float(side))
    return _Plan(family, matrix, crop, curve, bias)


def _source_shape(family: str) -> tuple[int, int]:
    # Known without decoding, so that planning (and pairs()) stays cheap.
    return {"fundus": (1411, 1411), "histology": (512, 512)}[family]


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


def _sample(channel: np.ndarray, xy: np.ndarray, sigma: float, background: float
            ) -> tuple[np.ndarray, np.ndarray]:
    """Sample the smoothed ``channel`` at source points ``xy`` ``(N, 2)`` (x, y), bilinearly.

    Only the bounding box of the points (plus the Gaussian's reach) is smoothed, which equals
    smoothing the whole source there but costs far less for small crops.

    Returns
    -------
    values : ndarray (N,), float32
        ``background`` where a point lies outside the source.
    inside : ndarray (N,), bool
        Whether the point lies inside the source (between the outer pixel centres).
    """
    from scipy import ndimage

    height, width = channel.shape
    finite = np.isfinite(xy[:, 0])  # _apply makes both coordinates NaN together
    inside = finite.copy()
    inside[finite] = ((xy[finite, 0] >= 0) & (xy[finite, 0] <= width - 1)
                      & (xy[finite, 1] >= 0) & (xy[finite, 1] <= height - 1))
    values = np.full(len(xy), background, dtype=np.float32)
    if not inside.any():
        return values, inside
    pts = xy[inside]
    reach = int(4.0 * sigma + 0.5) + 2
    c0 = max(int(np.floor(pts[:, 0].min())) - reach, 0)
    c1 = min(int(np.ceil(pts[:, 0].max())) + reach + 1, width)
    r0 = max(int(np.floor(pts[:, 1].min())) - reach, 0)
    r1 = min(int(np.ceil(pts[:, 1].max())) + reach + 1, height)
    window = channel[r0:r1, c0:c1]
    if sigma > 0:
        window = ndimage.gaussian_filter(window, sigma, mode="reflect", truncate=4.0)
    values[inside] = ndimage.map_coordinates(
        window, [pts[:, 1] - r0, pts[:, 0] - c0], order=1, mode="nearest")
    return values, inside


def _in_fov(xy: np.ndarray, fov: tuple[float, float, float] | None) -> np.ndarray:
    if fov is None:
        return np.isfinite(xy[:, 0])
    cx, cy, r = fov
    with np.errstate(invalid="ignore"):
        return (xy[:, 0] - cx) ** 2 + (xy[:, 1] - cy) ** 2 <= r**2


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
    level = max(0, math.floor(math.log2(factor)))
    src = _level(plan.family, level)
    crop = np.diag([2.0**-level, 2.0**-level, 1.0]) @ _crop_matrix(plan.crop, size)
    grid = _pixel_grid(size)
    fixed_xy = _apply(crop, grid)
    moving_xy = _apply(crop @ np.linalg.inv(plan.matrix), grid)
    # Anti-aliasing for what remains of the downsampling, as in skimage.transform.resize.
    sigma = max(0.0, (factor / 2**level - 1) / 2)
    multimodal = modality != "none"
    moving_channel = src.moving if multimodal else src.fixed
    moving_background = src.moving_background if multimodal else src.fixed_background

    fixed, fixed_in = _sample(src.fixed, fixed_xy, sigma, src.fixed_background)
    moving, moving_in = _sample(moving_channel, moving_xy, sigma, moving_background)
    fixed_mask = fixed_in & _in_fov(fixed_xy, src.fov)
    moving_mask = moving_in & _in_fov(moving_xy, src.fov)

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


def _usable(fixed_mask: np.ndarray, moving_mask: np.ndarray, matrix: np.ndarray,
            margin: int) -> np.ndarray:
    """Fixed pixels ``p`` well inside the fixed FOV whose ``T(p)`` is well inside the moving FOV."""
    fixed_ok, moving_ok = _interior(fixed_mask, margin), _interior(moving_mask, margin)
    rows, cols = np.nonzero(fixed_ok)
    mapped = _apply(matrix, np.column_stack([cols, rows]).astype(np.float64))
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
                   matrix: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """Choose ``count`` well-spread landmarks on structure that stay visible after ``matrix``.

    Parameters
    ----------
    fixed : ndarray (H, W) float
    fixed_mask, moving_mask : ndarray (H, W) bool
        Valid pixels of the fixed and moving images.
    matrix : ndarray (3, 3)
        The fixed -> moving pixel transform.
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


def _parse_families(text: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(n.strip().lower() for n in text.split(",") if n.strip()))
    unknown = [n for n in names if n not in FAMILIES]
    if unknown or not names:
        raise UserError(f"synthetic: families must be a comma list of {', '.join(FAMILIES)}; "
                        f"got {text!r}")
    return names


def _check(options: dict[str, Any]) -> None:
    for name, lowest in (("seed", 0), ("pairs", 0), ("size", _MIN_SIZE), ("landmarks", 1)):
        if options[name] < lowest:
            raise UserError(f"synthetic: option {name!r} must be >= {lowest}; "
                            f"got {options[name]!r}")


class SyntheticDataset:
    """The ``synthetic`` dataset (see the module docstring); built by :func:`load_dataset`."""

    def __init__(self, options: dict[str, Any]):
        self.options = dict(options)
        self.families = _parse_families(options["families"])
        self._index = {self._pair_id(i): i for i in range(options["pairs"])}

    def _family(self, index: int) -> str:
        return self.families[index % len(self.families)]

    def _pair_id(self, index: int) -> str:
        return f"{self._family(index)}-{index:03d}"

    def _meta(self, plan: _Plan) -> dict[str, Any]:
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
            raise UserError(f"synthetic: no pair {pair_id!r} (pairs: "
                            f"{', '.join(self._index) or 'none'})")
        index = self._index[pair_id]
        opts = self.options
        plan = _plan(index, self._family(index), opts)
        rng = np.random.default_rng([opts["seed"], index, 1])
        fixed, moving, fixed_mask, moving_mask = _render(plan, opts["size"], opts["modality"], rng)
        fixed_points = find_landmarks(fixed, fixed_mask, moving_mask, plan.matrix,
                                      opts["landmarks"], rng)
        moving_points = _apply(plan.matrix, fixed_points)
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
        ``difficulty``, ``landmarks``, ``modality``); missing ones take their defaults.

    Raises
    ------
    UserError
        For an unknown option or an invalid value.
    """
    from mibench.datasets import SYNTHETIC

    options = SYNTHETIC.resolve(params)
    _check(options)
    return SyntheticDataset(options)
