"""The normalised parameter space of the landscape protocol, and its sampling.

A parameter vector ``p`` is a *perturbation of the gold standard* ``G``, applied in the fixed image
about a centre ``c`` (usually the fixed image's centre): the transform at ``p`` is ``G @ A(p)``
(fixed px -> moving px, the README's *Conventions*) with
``A(p) = T(c) T(t) R(theta) S(sx, sy) K(k) T(-c)`` (translation outermost), so ``p = 0`` is ``G``
and every displacement is measured in fixed-image pixels.

The space is **normalised** so that one unit of any parameter moves a point at distance ``rho``
from the centre by about one pixel: translations in px, rotation ``theta = u / rho`` rad,
log-scales ``ln(s) = u / rho``, shear ``k = u / rho``. Distances in it (the protocol's ``R``,
``r``, ACC, CR) are in these "normalised pixels".

Imports numpy and :mod:`mibench.seeds` only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mibench.seeds import is_seed

#: Kinds of parameter space and their parameters, in order.
PARAMETERS = {
    "rigid": ("tx", "ty", "rotation"),
    "affine": ("tx", "ty", "rotation", "log_scale_x", "log_scale_y", "shear"),
}
#: Physical unit of each parameter (:meth:`ParameterSpace.to_physical`).
UNITS = {"tx": "px", "ty": "px", "rotation": "deg", "log_scale_x": "1", "log_scale_y": "1",
         "shear": "1"}


@dataclass(frozen=True)
class ParameterSpace:
    """The normalised parameter space of rigid or affine perturbations about a centre.

    Parameters
    ----------
    kind : {"rigid", "affine"}
        ``"rigid"``: ``(tx, ty, rotation)``; ``"affine"`` adds ``(log_scale_x, log_scale_y,
        shear)``.
    center : (x, y)
        Centre of rotation, scaling and shear in fixed-image pixels (usually the fixed image's
        centre, :meth:`for_image`).
    radius : float
        ``rho`` in px: one normalised unit of rotation, log-scale or shear moves a point at this
        distance from ``center`` by about one pixel (exactly one, to first order).
    """

    kind: str
    center: tuple[float, float]
    radius: float

    def __post_init__(self):
        if self.kind not in PARAMETERS:
            raise ValueError(f"kind must be one of {sorted(PARAMETERS)}, got {self.kind!r}")
        if not (math.isfinite(self.radius) and self.radius > 0):
            raise ValueError(f"radius must be a positive number of pixels, got {self.radius!r}")

    @classmethod
    def for_image(cls, kind: str, fixed_shape: tuple[int, int],
                  radius: float | None = None) -> ParameterSpace:
        """The space about the centre of a fixed image of shape ``(H, W)``.

        ``radius`` defaults to ``min(H, W) / 2``: the largest circle about the centre inside the
        image, so a unit rotation moves its points by a pixel.
        """
        h, w = int(fixed_shape[0]), int(fixed_shape[1])
        rho = min(h, w) / 2.0 if radius is None else float(radius)
        return cls(kind, ((w - 1) / 2.0, (h - 1) / 2.0), rho)

    @property
    def names(self) -> tuple[str, ...]:
        return PARAMETERS[self.kind]

    @property
    def units(self) -> tuple[str, ...]:
        return tuple(UNITS[n] for n in self.names)

    @property
    def dim(self) -> int:
        return len(self.names)

    @property
    def scales(self) -> np.ndarray:
        """Physical value of one normalised unit of each parameter, ``(dim,)``: 1 px for the
        translations, ``degrees(1 / rho)`` for the rotation, ``1 / rho`` for the others."""
        per = 1.0 / self.radius
        full = np.array([1.0, 1.0, math.degrees(per), per, per, per])
        return full[: self.dim]

    def _check(self, points) -> np.ndarray:
        p = np.asarray(points, dtype=np.float64)
        if p.ndim < 1 or p.shape[-1] != self.dim:
            raise ValueError(f"a {self.kind} parameter vector has {self.dim} entries, "
                             f"got shape {p.shape}")
        return p

    def to_physical(self, points) -> np.ndarray:
        """Normalised ``(..., dim)`` -> physical ``(..., dim)`` (units :attr:`units`)."""
        return self._check(points) * self.scales

    def from_physical(self, values) -> np.ndarray:
        """Physical ``(..., dim)`` -> normalised ``(..., dim)``."""
        return self._check(values) / self.scales

    def perturbation(self, points) -> np.ndarray:
        """``A(p)``, ``(..., 3, 3)`` float64, fixed px -> fixed px, for normalised ``(..., dim)``.

        ``A = T(c) T(t) R(theta) S K T(-c)`` with ``R = [[cos, -sin], [sin, cos]]`` (a positive
        angle turns +x towards +y: clockwise on screen, y pointing down),
        ``S = diag(exp(lsx), exp(lsy))`` and ``K = [[1, k], [0, 1]]``. The log-scales keep a
        line's two sides symmetric (shrinking and growing by the same factor) and ``S``
        positive for any radius ``R``.
        """
        p = self._check(points)
        phys = p * self.scales
        zeros = np.zeros(p.shape[:-1])
        tx, ty, theta = phys[..., 0], phys[..., 1], np.radians(phys[..., 2])
        if self.kind == "affine":
            sx, sy, k = np.exp(phys[..., 3]), np.exp(phys[..., 4]), phys[..., 5]
        else:
            sx = sy = np.ones_like(zeros)
            k = zeros
        cos, sin = np.cos(theta), np.sin(theta)
        # R @ S @ K written out: [[c sx, c sx k - s sy], [s sx, s sx k + c sy]].
        lin = np.empty(p.shape[:-1] + (2, 2))
        lin[..., 0, 0] = cos * sx
        lin[..., 0, 1] = cos * sx * k - sin * sy
        lin[..., 1, 0] = sin * sx
        lin[..., 1, 1] = sin * sx * k + cos * sy
        c = np.asarray(self.center, dtype=np.float64)
        out = np.zeros(p.shape[:-1] + (3, 3))
        out[..., :2, :2] = lin
        out[..., :2, 2] = c + np.stack([tx, ty], -1) - np.einsum("...ij,j->...i", lin, c)
        out[..., 2, 2] = 1.0
        return out

    def transforms(self, points, gold) -> np.ndarray:
        """Fixed px -> moving px matrices ``G @ A(p)``, ``(..., 3, 3)`` float64."""
        g = np.asarray(gold, dtype=np.float64)
        if g.shape != (3, 3):
            raise ValueError(f"the gold standard must be a 3x3 matrix, got shape {g.shape}")
        return g @ self.perturbation(points)


@dataclass(frozen=True)
class Lines:
    """The sampling of the protocol: ``N`` lines of ``P = 2M + 1`` points through the origin.

    Attributes
    ----------
    directions : ndarray, shape (N, dim)
        Unit vectors, uniform on the sphere.
    positions : ndarray, shape (P,)
        Signed distance of each point from the gold standard along its line, evenly spaced from
        ``-R`` to ``R`` (normalised px); ``positions[M] = 0`` is the gold standard.
    points : ndarray, shape (N, P, dim)
        ``directions[n] * positions[m]``: normalised parameter vectors.
    """

    directions: np.ndarray
    positions: np.ndarray
    points: np.ndarray


def sample_lines(dim: int, n_lines: int, points_per_side: int, radius: float,
                 seed: int) -> Lines:
    """``n_lines`` random lines through the gold standard, ``2 * points_per_side + 1`` points
    each from ``-radius`` to ``radius`` (normalised px).

    Directions are normalised standard-normal vectors (uniform on the unit sphere), drawn with
    ``numpy.random.default_rng(seed)``; the same arguments give the same lines.
    """
    if not is_seed(seed):
        raise ValueError(f"seed must be an integer in 0 .. 2**32 - 1, got {seed!r}")
    if dim < 1 or n_lines < 1 or points_per_side < 1:
        raise ValueError("dim, n_lines and points_per_side must be at least 1")
    if not (math.isfinite(radius) and radius > 0):
        raise ValueError(f"radius must be positive, got {radius!r}")
    rng = np.random.default_rng(seed)
    d = rng.standard_normal((n_lines, dim))
    norms = np.linalg.norm(d, axis=1, keepdims=True)
    # A zero draw has probability 0 but would divide by zero; redraw is overkill, use an axis.
    d = np.where(norms > 0, d / np.where(norms > 0, norms, 1.0), np.eye(dim)[0])
    positions = np.linspace(-radius, radius, 2 * points_per_side + 1)
    positions[points_per_side] = 0.0
    return Lines(d, positions, d[:, None, :] * positions[None, :, None])


def axis_points(dim: int, points_per_side: int, extent: float | Sequence[float]
                ) -> tuple[np.ndarray, np.ndarray]:
    """Points of the 1-D profiles: one parameter varies, the others stay at the gold standard.

    Parameters
    ----------
    dim : int
    points_per_side : int
        ``M``: each profile has ``2M + 1`` points.
    extent : float or sequence of ``dim`` floats
        Half-width of each profile in normalised px (one for all parameters, or per parameter).

    Returns
    -------
    offsets : ndarray, shape (dim, 2M + 1)
        Normalised offset of the varying parameter (multiply by
        :attr:`ParameterSpace.scales` ``[i]`` for physical units).
    points : ndarray, shape (dim, 2M + 1, dim)
        The parameter vectors.
    """
    ext = np.broadcast_to(np.asarray(extent, dtype=np.float64), (dim,))
    if not (np.isfinite(ext).all() and (ext > 0).all()):
        raise ValueError(f"extent must be positive, got {extent!r}")
    unit = np.linspace(-1.0, 1.0, 2 * points_per_side + 1)
    unit[points_per_side] = 0.0
    offsets = ext[:, None] * unit[None, :]
    points = np.zeros((dim, unit.size, dim))
    for i in range(dim):
        points[i, :, i] = offsets[i]
    return offsets, points


