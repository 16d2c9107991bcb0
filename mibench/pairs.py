"""A pair of images to register: what a dataset yields, and the check it must pass.

Conventions (the README's *Conventions*): images are float32 numpy arrays ``(H, W)`` or ``(H, W,
C)`` with values in [0, 1]; masks are bool ``(H, W)``; landmarks are ``(K, 2)`` float64 arrays of
``(x, y)`` = (column, row) pixel coordinates with ``(0, 0)`` the centre of the top-left pixel.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np


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
        float32, ``(H, W)`` or ``(H, W, C)``, values in [0, 1]. Sizes may differ.
    fixed_landmarks, moving_landmarks : ndarray or None
        ``(K, 2)`` float64 ``(x, y)`` in pixels of the image as given here (the *working* scale).
        Row k of one corresponds to row k of the other. ``moving_landmarks`` may exist without
        ``fixed_landmarks`` (ANHIR evaluation pairs): such a pair is registered but not scored.
    fixed_mask, moving_mask : ndarray or None
        bool ``(H, W)``; True where the image content is valid (field of view).
    native_scale : float
        Native-resolution pixels per working pixel of the fixed image (1.0 when the dataset
        serves native resolution). Errors are multiplied by it so they are reported in native
        pixels.
    native_shape : tuple of int or None
        ``(H, W)`` of the fixed image at native resolution; None means ``fixed.shape[:2]`` times
        ``native_scale``, rounded.
    meta : dict
        As :attr:`PairInfo.meta`.
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

    @property
    def info(self) -> PairInfo:
        return PairInfo(self.id, dict(self.meta))

    @property
    def native_fixed_shape(self) -> tuple[int, int]:
        if self.native_shape is not None:
            return tuple(self.native_shape)
        h, w = self.fixed.shape[:2]
        return (round(h * self.native_scale), round(w * self.native_scale))


def _image_problem(image: Any, what: str) -> str | None:
    if not isinstance(image, np.ndarray):
        return f"{what} is a {type(image).__name__}, expected a numpy array"
    if image.ndim not in (2, 3) or (image.ndim == 3 and not 1 <= image.shape[2] <= 4):
        hint = ""
        if image.ndim == 3 and image.shape[0] <= 4 < image.shape[2]:
            hint = " (it looks channels-first)"
        return f"{what} has shape {image.shape}, expected (H, W) or (H, W, C<=4){hint}"
    if min(image.shape[:2]) < 2:
        return f"{what} has shape {image.shape}: too small to register"
    if not np.issubdtype(image.dtype, np.floating):
        return f"{what} is {image.dtype}, expected float32 values in [0, 1]"
    if not np.isfinite(image).all():
        return f"{what} has NaN or infinite pixels"
    lo, hi = float(image.min()), float(image.max())
    if lo < -1e-6 or hi > 1 + 1e-6:
        return f"{what} has values in [{lo:.4g}, {hi:.4g}], expected [0, 1]"
    return None


def _mask_problem(mask: Any, shape: tuple[int, ...], what: str) -> str | None:
    if mask is None:
        return None
    mask = np.asarray(mask)
    if mask.shape != shape[:2]:
        return f"{what} has shape {mask.shape}, its image {shape[:2]}"
    if mask.dtype != bool and not np.isin(mask, (0, 1)).all():
        return f"{what} is {mask.dtype} with values other than 0 and 1, expected bool"
    return None


def _landmarks_problem(points: Any, what: str) -> str | None:
    if points is None:
        return None
    points = np.asarray(points)
    if points.ndim != 2 or points.shape[1] != 2:
        hint = " (transposed?)" if points.ndim == 2 and points.shape[0] == 2 else ""
        return f"{what} have shape {points.shape}, expected (K, 2) (x, y) rows{hint}"
    if not np.isfinite(points).all():
        return f"{what} have NaN or infinite coordinates"
    return None


def check_pair(pair: Any, pair_id: str) -> Pair:
    """``pair`` as loaded by a dataset for ``pair_id``, checked against the conventions above.

    Returns the pair with its images as float32 and its masks as bool (float64 images and 0/1
    masks are accepted). Raises ``ValueError`` with one line naming the problem: not a
    :class:`Pair`; another id; images that are not float ``(H, W)`` / ``(H, W, C)`` in [0, 1]
    (channels-first arrays and 0..255 values are the usual slips) or hold NaN; masks of another
    shape than their image, or not 0/1; landmarks that are not finite ``(K, 2)`` arrays, or
    fixed and moving landmarks of different counts (row k of one must match row k of the other);
    a ``native_scale`` that is not a positive number. A dataset that breaks these would
    otherwise register garbage silently, or break the scoring of every method.
    """
    if not isinstance(pair, Pair):
        raise ValueError(f"load({pair_id!r}) returned a {type(pair).__name__}, expected a Pair")
    if pair.id != pair_id:
        raise ValueError(f"load({pair_id!r}) returned the pair {pair.id!r}")
    problems = [_image_problem(pair.fixed, "fixed image"),
                _image_problem(pair.moving, "moving image")]
    if problems[0] is None:
        problems.append(_mask_problem(pair.fixed_mask, pair.fixed.shape, "fixed mask"))
    if problems[1] is None:
        problems.append(_mask_problem(pair.moving_mask, pair.moving.shape, "moving mask"))
    problems += [_landmarks_problem(pair.fixed_landmarks, "fixed landmarks"),
                 _landmarks_problem(pair.moving_landmarks, "moving landmarks")]
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
