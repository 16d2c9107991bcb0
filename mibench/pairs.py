"""A pair of images to register: what a dataset yields, and the check it must pass.

Conventions (the README's *Conventions*): images are float32 numpy arrays ``(H, W)`` or ``(H, W,
C)`` with values in [0, 1]; masks are bool ``(H, W)``; landmarks are ``(K, 2)`` float64 arrays of
``(x, y)`` = (column, row) pixel coordinates with ``(0, 0)`` the centre of the top-left pixel.

Volumes (``CONTRACTS.md``, *Volumes (3-D) and physical space*) are ``(D, H, W)`` or ``(D, H, W,
C)``, channels last as in 2-D; masks ``(D, H, W)``; landmarks ``(K, 3)`` ``(x, y, z)`` = (index
along W, along H, along D). Either may carry a :class:`~mibench.geometry.Geometry` (voxel ->
world, mm or um). Whether a 3-axis array is an ``(H, W, C)`` image or a ``(D, H, W)`` volume is
decided by :func:`spatial_ndim`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np

from mibench.geometry import Geometry

#: A ``(D, H, W)`` volume has more than this many voxels along every axis; a 3-axis array with
#: an axis this short is a 2-D ``(H, W, C)`` image (or a channels-first slip), never a volume.
MAX_CHANNELS = 4


@dataclass(frozen=True)
class PairInfo:
    """What is known about a pair without loading it: its id and metadata.

    ``meta`` holds dataset-specific labels used to group results, e.g. ``category`` (FIRE S/P/A),
    ``tissue`` and ``status`` (ANHIR), ``family`` (synthetic).
    """

    id: str
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Pair:
    """A fixed/moving image pair with (optional) corresponding landmarks.

    Attributes
    ----------
    id : str
        Unique within its dataset; used in file names, so only ``[A-Za-z0-9._-]``, starting
        with a letter or digit.
    fixed, moving : ndarray
        float32, ``(H, W)`` or ``(H, W, C)``, values in [0, 1]; volumes ``(D, H, W)`` or ``(D,
        H, W, C)``. Sizes may differ; both are 2-D or both 3-D.
    fixed_landmarks, moving_landmarks : ndarray or None
        ``(K, 2)`` float64 ``(x, y)`` in pixels of the image as given here (the *working* scale);
        ``(K, 3)`` ``(x, y, z)`` voxels for volumes.
        Row k of one corresponds to row k of the other. ``moving_landmarks`` may exist without
        ``fixed_landmarks`` (ANHIR evaluation pairs): such a pair is registered but not scored.
    fixed_mask, moving_mask : ndarray or None
        bool ``(H, W)`` (``(D, H, W)``); True where the image content is valid (field of view).
    native_scale : float
        Native-resolution pixels per working pixel of the fixed image (1.0 when the dataset
        serves native resolution). Errors are multiplied by it so they are reported in native
        pixels.
    native_shape : tuple of int or None
        ``(H, W)`` (``(D, H, W)``) of the fixed image at native resolution; None means the
        fixed image's spatial shape times ``native_scale``, rounded.
    meta : dict
        As :attr:`PairInfo.meta`.
    fixed_geometry, moving_geometry : Geometry or None
        Voxel -> world map of each image as given here, of the images' dimensionality; None
        when unknown (errors are then in pixels only).
    """

    id: str
    fixed: np.ndarray
    moving: np.ndarray
    fixed_landmarks: np.ndarray | None = None
    moving_landmarks: np.ndarray | None = None
    fixed_mask: np.ndarray | None = None
    moving_mask: np.ndarray | None = None
    native_scale: float = 1.0
    native_shape: tuple[int, int] | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    fixed_geometry: Geometry | None = None
    moving_geometry: Geometry | None = None

    @property
    def info(self) -> PairInfo:
        return PairInfo(self.id, dict(self.meta))

    @property
    def ndim(self) -> int:
        """2 for images, 3 for volumes (of the fixed image, see :func:`spatial_ndim`)."""
        return spatial_ndim(self.fixed, self.fixed_geometry)

    @property
    def native_fixed_shape(self) -> tuple[int, ...]:
        if self.native_shape is not None:
            return tuple(self.native_shape)
        return tuple(round(s * self.native_scale) for s in self.fixed.shape[:self.ndim])


def spatial_ndim(image: Any, geometry: Geometry | None = None) -> int:
    """Whether ``image`` is 2-D (``(H, W)``, ``(H, W, C)``) or 3-D (``(D, H, W)``, ``(D, H, W,
    C)``).

    A geometry decides; otherwise 4 axes are a volume with channels, and 3 axes a volume only
    when every axis is longer than :data:`MAX_CHANNELS` (a ``(3, H, W)`` array stays a 2-D
    image, so that its channels-first slip is named as such). A volume thinner than that needs
    a geometry to be recognised.
    """
    if geometry is not None:
        return geometry.ndim
    shape = np.shape(image)
    if len(shape) == 4 or (len(shape) == 3 and min(shape) > MAX_CHANNELS):
        return 3
    return 2


_LAYOUT = {2: "(H, W) or (H, W, C<=4)", 3: "(D, H, W) or (D, H, W, C<=4)"}


def _image_problem(image: Any, what: str, ndim: int = 2) -> str | None:
    if not isinstance(image, np.ndarray):
        return f"{what} is a {type(image).__name__}, expected a numpy array"
    if image.ndim not in (ndim, ndim + 1) or (
            image.ndim == ndim + 1 and not 1 <= image.shape[ndim] <= MAX_CHANNELS):
        hint = ""
        if image.ndim == ndim + 1 and image.shape[0] <= MAX_CHANNELS < image.shape[ndim]:
            hint = " (it looks channels-first)"
        return f"{what} has shape {image.shape}, expected {_LAYOUT[ndim]}{hint}"
    if min(image.shape[:ndim]) < 2:
        return f"{what} has shape {image.shape}: too small to register"
    if not np.issubdtype(image.dtype, np.floating):
        return f"{what} is {image.dtype}, expected float32 values in [0, 1]"
    if not np.isfinite(image).all():
        return f"{what} has NaN or infinite pixels"
    lo, hi = float(image.min()), float(image.max())
    if lo < -1e-6 or hi > 1 + 1e-6:
        return f"{what} has values in [{lo:.4g}, {hi:.4g}], expected [0, 1]"
    return None


def _mask_problem(mask: Any, shape: tuple[int, ...], what: str, ndim: int = 2) -> str | None:
    if mask is None:
        return None
    mask = np.asarray(mask)
    if mask.shape != shape[:ndim]:
        return f"{what} has shape {mask.shape}, its image {shape[:ndim]}"
    if mask.dtype != bool and not np.isin(mask, (0, 1)).all():
        return f"{what} is {mask.dtype} with values other than 0 and 1, expected bool"
    return None


def _landmarks_problem(points: Any, what: str, ndim: int = 2) -> str | None:
    if points is None:
        return None
    points = np.asarray(points)
    if points.ndim != 2 or points.shape[1] != ndim:
        axes = "(x, y)" if ndim == 2 else "(x, y, z)"
        hint = ""
        if points.ndim == 2 and points.shape[0] == ndim and points.shape[1] != ndim:
            hint = " (transposed?)"
        elif points.ndim == 2 and points.shape[1] in (2, 3):
            hint = f" for {'a volume' if ndim == 3 else 'a 2-D image'}"
        return f"{what} have shape {points.shape}, expected (K, {ndim}) {axes} rows{hint}"
    if not np.isfinite(points).all():
        return f"{what} have NaN or infinite coordinates"
    return None


def _geometry_problem(geometry: Any, image: Any, what: str) -> tuple[Geometry | None, str | None]:
    """The geometry if usable, and what is wrong with it (None when nothing)."""
    if geometry is None:
        return None, None
    if not isinstance(geometry, Geometry):
        return None, (f"{what} geometry is a {type(geometry).__name__}, expected a "
                      "mibench.geometry.Geometry")
    if (isinstance(image, np.ndarray) and spatial_ndim(image) != geometry.ndim
            and _image_problem(image, what, geometry.ndim) is not None):
        return None, f"{what} geometry is {geometry.ndim}-D, its image has shape {image.shape}"
    return geometry, None


def _kind(ndim: int) -> str:
    return "a volume" if ndim == 3 else "2-D"


def check_pair(pair: Any, pair_id: str) -> Pair:
    """``pair`` as loaded by a dataset for ``pair_id``, checked against the conventions above.

    Returns the pair with its images as float32 and its masks as bool (float64 images and 0/1
    masks are accepted). Raises ``ValueError`` with one line naming the problem: not a
    :class:`Pair`; another id; images that are not float ``(H, W)`` / ``(H, W, C)`` (volumes
    ``(D, H, W)`` / ``(D, H, W, C)``) in [0, 1] (channels-first arrays and 0..255 values are the
    usual slips) or hold NaN; a 2-D image paired with a volume; a geometry that is not a
    :class:`~mibench.geometry.Geometry` of its image's dimensionality, or fixed and moving
    geometries in different units; masks of another shape than their image, or not 0/1;
    landmarks that are not finite ``(K, 2)`` (``(K, 3)`` for volumes) arrays, or fixed and
    moving landmarks of different counts (row k of one must match row k of the other); a
    ``native_scale`` that is not a positive number. A dataset that breaks these would
    otherwise register garbage silently, or break the scoring of every method.
    """
    if not isinstance(pair, Pair):
        raise ValueError(f"load({pair_id!r}) returned a {type(pair).__name__}, expected a Pair")
    if pair.id != pair_id:
        raise ValueError(f"load({pair_id!r}) returned the pair {pair.id!r}")
    fixed_geometry, fixed_why = _geometry_problem(pair.fixed_geometry, pair.fixed, "fixed")
    moving_geometry, moving_why = _geometry_problem(pair.moving_geometry, pair.moving, "moving")
    nd = spatial_ndim(pair.fixed, fixed_geometry)
    moving_nd = spatial_ndim(pair.moving, moving_geometry)
    problems = [fixed_why, moving_why]
    if not (fixed_why or moving_why):
        problems += [_image_problem(pair.fixed, "fixed image", nd),
                     _image_problem(pair.moving, "moving image", moving_nd)]
        if problems[2] is None:
            problems.append(_mask_problem(pair.fixed_mask, pair.fixed.shape, "fixed mask", nd))
        if problems[3] is None:
            problems.append(_mask_problem(pair.moving_mask, pair.moving.shape, "moving mask",
                                          moving_nd))
        if not any(problems) and nd != moving_nd:
            problems.append(f"fixed image {pair.fixed.shape} is {_kind(nd)}, moving image "
                            f"{pair.moving.shape} {_kind(moving_nd)}: both must be 2-D or both "
                            "volumes")
    if fixed_geometry and moving_geometry and fixed_geometry.unit != moving_geometry.unit:
        problems.append(f"fixed geometry is in {fixed_geometry.unit}, moving geometry in "
                        f"{moving_geometry.unit}")
    problems += [_landmarks_problem(pair.fixed_landmarks, "fixed landmarks", nd),
                 _landmarks_problem(pair.moving_landmarks, "moving landmarks", moving_nd)]
    if (pair.fixed_landmarks is not None and pair.moving_landmarks is not None
            and len(pair.fixed_landmarks) != len(pair.moving_landmarks)):
        problems.append(f"{len(pair.fixed_landmarks)} fixed and {len(pair.moving_landmarks)} "
                        "moving landmarks: row k of one must match row k of the other")
    scale = pair.native_scale
    if not (isinstance(scale, (int, float)) and np.isfinite(scale) and scale > 0):
        problems.append(f"native_scale is {scale!r}, expected a positive number")
    problems = [p for p in problems if p]
    if problems:
        raise ValueError(f"pair {pair_id!r}: " + "; ".join(problems))

    def bool_mask(m):
        return None if m is None else np.asarray(m, dtype=bool)

    def points(p):
        return None if p is None else np.asarray(p, dtype=np.float64)

    return replace(pair, fixed=pair.fixed.astype(np.float32, copy=False),
                   moving=pair.moving.astype(np.float32, copy=False),
                   fixed_mask=bool_mask(pair.fixed_mask), moving_mask=bool_mask(pair.moving_mask),
                   fixed_landmarks=points(pair.fixed_landmarks),
                   moving_landmarks=points(pair.moving_landmarks))


class Dataset(Protocol):
    """What a dataset factory returns.

    ``pairs()`` must be cheap (no image decoding): the runner calls it to plan tasks. ``load`` does
    the work and is called in worker processes.
    """

    def pairs(self) -> Sequence[PairInfo]: ...

    def load(self, pair_id: str) -> Pair: ...
