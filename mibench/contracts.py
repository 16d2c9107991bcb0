"""The data that flows between datasets, methods, the runner and the reports.

Conventions (see ``CONTRACTS.md``): images are float32 numpy arrays ``(H, W)`` or ``(H, W, C)``
with values in [0, 1]; masks are bool ``(H, W)``; landmarks are ``(K, 2)`` float64 arrays of
``(x, y)`` = (column, row) pixel coordinates with ``(0, 0)`` the centre of the top-left pixel.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from mibench.transform import Transform


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


class Dataset(Protocol):
    """What a dataset factory returns.

    ``pairs()`` must be cheap (no image decoding): the runner calls it to plan tasks. ``load`` does
    the work and is called in worker processes.
    """

    def pairs(self) -> Sequence[PairInfo]: ...

    def load(self, pair_id: str) -> Pair: ...


@dataclass
class RegistrationOutput:
    """What a method may return instead of a bare transform: the transform plus diagnostics.

    ``info`` must be JSON-serialisable (numbers, strings, lists); it is stored in the record
    (e.g. the final loss, the number of iterations run).
    """

    transform: Transform
    info: dict[str, Any] = field(default_factory=dict)
