"""Cubic B-spline basis, control grids, exact evaluation (numpy), refinement, bending energy.

Conventions: :mod:`mibench.bspline`.
"""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

# ------------------------------------------------------------------------------ the basis


def cubic_weights(fraction: Any, derivative: int = 0, xp: Any = np) -> Any:
    """The four cubic B-spline weights (or their derivatives) at a fractional position.

    Parameters
    ----------
    fraction : array, values in [0, 1)
        ``t - floor(t)`` for a continuous grid index ``t``.
    derivative : {0, 1, 2}
        Order of the derivative with respect to ``t``.
    xp : module
        ``numpy`` or ``torch``.

    Returns
    -------
    array ``(*fraction.shape, 4)``
        Weights of control points ``floor(t) - 1 ... floor(t) + 2``; for ``derivative=0`` they
        are non-negative and sum to 1.
    """
    f = fraction
    if derivative == 0:
        w = [(1 - f) ** 3 / 6, (3 * f**3 - 6 * f**2 + 4) / 6,
             (-3 * f**3 + 3 * f**2 + 3 * f + 1) / 6, f**3 / 6]
    elif derivative == 1:
        w = [-((1 - f) ** 2) / 2, (3 * f**2 - 4 * f) / 2, (-3 * f**2 + 2 * f + 1) / 2, f**2 / 2]
    elif derivative == 2:
        w = [1 - f, 3 * f - 2, 1 - 3 * f, f]
    else:
        raise ValueError(f"derivative must be 0, 1 or 2, got {derivative}")
    return xp.stack(w, -1)


def cubic_bspline(t: Any) -> np.ndarray:
    """The centred cubic B-spline ``beta(t)`` (support ``(-2, 2)``, ``beta(0) = 2/3``)."""
    a = np.abs(np.asarray(t, dtype=np.float64))
    return np.where(a < 1, 2 / 3 - a**2 + a**3 / 2, np.where(a < 2, (2 - a) ** 3 / 6, 0.0))


# ------------------------------------------------------------------------------- the grid


@dataclass(frozen=True)
class ControlGrid:
    """A regular grid of control points.

    Parameters
    ----------
    origin : tuple of float
        ``(x, y[, z])`` position of control point 0, in pixels of the space the B-spline is
        evaluated in (the image of the fixed grid under the matrix part).
    spacing : tuple of float
        Distance between control points along each axis, in pixels (> 0).
    shape : tuple of int
        Number of control points along ``x, y[, z]``; at least 4 (ITK's ``mesh + 3`` with a
        mesh of at least 1 cell).
    """

    origin: tuple[float, ...]
    spacing: tuple[float, ...]
    shape: tuple[int, ...]

    def __post_init__(self):
        object.__setattr__(self, "origin", tuple(float(v) for v in self.origin))
        object.__setattr__(self, "spacing", tuple(float(v) for v in self.spacing))
        object.__setattr__(self, "shape", tuple(int(v) for v in self.shape))
        n = len(self.origin)
        if n not in (2, 3) or len(self.spacing) != n or len(self.shape) != n:
            raise ValueError(f"a control grid has 2 or 3 axes and as many origins, spacings and "
                             f"sizes, got {self.origin}, {self.spacing}, {self.shape}")
        if min(self.spacing) <= 0 or not all(map(math.isfinite, self.origin + self.spacing)):
            raise ValueError(f"control grid spacing must be finite and > 0, got {self.spacing}")
        if min(self.shape) < 4:
            raise ValueError(f"a cubic control grid needs at least 4 points per axis, got "
                             f"{self.shape}")

    @property
    def ndim(self) -> int:
        return len(self.origin)

    @property
    def coefficient_shape(self) -> tuple[int, ...]:
        """``(n, *shape[::-1])``: the shape of a coefficient array on this grid."""
        return (self.ndim, *self.shape[::-1])

    @property
    def domain(self) -> tuple[np.ndarray, np.ndarray]:
        """``(low, high)`` corners of ITK's transform domain: the grid less one spacing at each
        end, where every point's 4^n support lies inside the grid."""
        o, h, s = (np.asarray(v, dtype=np.float64) for v in (self.origin, self.spacing,
                                                             self.shape))
        return o + h, o + (s - 2) * h

    @classmethod
    def over(cls, low: Any, high: Any, spacing: Any) -> ControlGrid:
        """The grid whose domain covers the box ``[low, high]``, centred on it (elastix's rule).

        Parameters
        ----------
        low, high : array_like, shape (n,)
            Corners of the box, ``(x, y[, z])`` pixels.
        spacing : float or array_like (n,)
            Control-point spacing in pixels.

        Returns
        -------
        ControlGrid
            ``mesh = max(1, ceil(extent / spacing))`` cells per axis and ``mesh + 3`` control
            points, the mesh centred on the box.
        """
        low, high = np.asarray(low, np.float64), np.asarray(high, np.float64)
        h = np.broadcast_to(np.asarray(spacing, np.float64), low.shape)
        extent = high - low
        mesh = np.maximum(1, np.ceil(extent / h - 1e-9)).astype(int)
        origin = low - (mesh * h - extent) / 2 - h
        return cls(tuple(origin), tuple(h), tuple(mesh + 3))

    def refined(self) -> ControlGrid:
        """The grid of half the spacing that represents every spline of this grid exactly.

        Coarse point ``i`` becomes fine point ``2 i + 2``; the fine grid starts two fine
        spacings before the coarse one and has ``2 shape + 3`` points, which holds every
        non-zero coefficient of the subdivided spline (see :func:`refine_coefficients`).
        """
        h = tuple(v / 2 for v in self.spacing)
        origin = tuple(o - 2 * s for o, s in zip(self.origin, h, strict=True))
        return ControlGrid(origin, h, tuple(2 * s + 3 for s in self.shape))

    def to_dict(self) -> dict[str, Any]:
        return {"origin": list(self.origin), "spacing": list(self.spacing),
                "shape": list(self.shape)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ControlGrid:
        return cls(tuple(data["origin"]), tuple(data["spacing"]), tuple(data["shape"]))


def local_support(grid: ControlGrid, points: Any, xp: Any, derivative: int = 0):
    """The cubic support of ``(K, n)`` points along each axis.

    Returns
    -------
    list of n lists ``[floor(t), weights]`` (``[floor(t), weights, slopes]`` if
    ``derivative``): ``floor(t)`` ``(K,)`` of the continuous grid index ``t`` (float; the four
    supporting control points are ``floor(t) - 1 ... floor(t) + 2``), their weights ``(K, 4)``
    and the weights' derivatives ``(K, 4)`` with respect to the coordinate (per pixel).
    """
    out = []
    for axis in range(grid.ndim):
        t = (points[:, axis] - grid.origin[axis]) / grid.spacing[axis]
        base = xp.floor(t)
        frac = t - base
        weights = cubic_weights(frac, 0, xp)
        entry = [base, weights]
        if derivative:
            entry.append(cubic_weights(frac, 1, xp) / grid.spacing[axis])
        out.append(entry)
    return out


# --------------------------------------------------------------------- evaluation (numpy)


def _combine(gathered: np.ndarray, factors: list[np.ndarray]) -> np.ndarray:
    """``sum_m gathered[:, k, m] * prod(factors)[k, m]`` -> ``(K, n)``."""
    w = factors[0]
    for f in factors[1:]:
        w = w * f
    return np.einsum("nkm,km->kn", gathered, w.reshape(gathered.shape[1], -1))


def evaluate(coefficients: np.ndarray, grid: ControlGrid, points: Any,
             jacobian: bool = False, chunk: int = 1 << 16):
    """The displacement ``u(q)`` (and its Jacobian) at arbitrary points, in float64.

    Parameters
    ----------
    coefficients : ndarray ``grid.coefficient_shape``
        Control-point displacements in pixels.
    grid : ControlGrid
    points : array_like (K, n)
        ``(x, y[, z])`` in the grid's space. NaN points give NaN.
    jacobian : bool
        Also return ``du_i / dq_j``.
    chunk : int
        Points evaluated at once (bounds the ``(chunk, 4^n)`` temporaries).

    Returns
    -------
    u : ndarray (K, n)
    jac : ndarray (K, n, n), only if ``jacobian``
        ``jac[k, i, j] = d u_i / d q_j`` at point ``k``.
    """
    c = np.asarray(coefficients, dtype=np.float64)
    n = grid.ndim
    if c.shape != grid.coefficient_shape:
        raise ValueError(f"coefficients must have shape {grid.coefficient_shape}, got {c.shape}")
    pts = np.asarray(points, dtype=np.float64).reshape(-1, n)
    u = np.full((len(pts), n), np.nan)
    jac = np.full((len(pts), n, n), np.nan) if jacobian else None
    flat = c.reshape(n, -1)
    strides = np.cumprod((1,) + grid.shape[:-1])  # x fastest in the flattened array order
    for start in range(0, len(pts), chunk):
        block = pts[start:start + chunk]
        ok = np.isfinite(block).all(axis=1)
        block = np.where(ok[:, None], block, 0.0)
        support = local_support(grid, block, np, derivative=int(jacobian))
        # Broadcast the per-axis (K, 4) supports to (K, 4[, 4], 4), x on the last axis, so that
        # one gather fetches all 4^n coefficients of every point.
        index = 0
        weights, slopes = [], []
        for axis in range(n):
            shape = [len(block)] + [1] * n
            shape[n - axis] = 4
            i = support[axis][0].astype(np.int64)[:, None] - 1 + np.arange(4)
            inside = (i >= 0) & (i < grid.shape[axis])  # zero coefficients outside the grid
            index = index + (np.clip(i, 0, grid.shape[axis] - 1) * strides[axis]).reshape(shape)
            weights.append((support[axis][1] * inside).reshape(shape))
            if jacobian:
                slopes.append((support[axis][2] * inside).reshape(shape))
        gathered = flat[:, index].reshape(n, len(block), -1)  # (n, K, 4^n)
        u[start:start + chunk][ok] = _combine(gathered, weights)[ok]
        if jacobian:
            for j in range(n):
                factors = [slopes[a] if a == j else weights[a] for a in range(n)]
                jac[start:start + chunk, :, j][ok] = _combine(gathered, factors)[ok]
    return (u, jac) if jacobian else u


# ------------------------------------------------------------------------ refinement


def refine_coefficients(coefficients: np.ndarray, grid: ControlGrid
                        ) -> tuple[np.ndarray, ControlGrid]:
    """Subdivide the spline onto the grid of half the spacing, exactly (not least squares).

    Uniform cubic B-spline subdivision (Lane-Riesenfeld): along each axis, fine coefficients are
    ``f[2i] = (c[i-1] + 6 c[i] + c[i+1]) / 8`` and ``f[2i+1] = (c[i] + c[i+1]) / 2`` with
    coarse point ``i`` at fine position ``2i``; missing coarse coefficients are 0. The fine
    grid (:meth:`ControlGrid.refined`) holds every non-zero fine coefficient, so the field is
    the same everywhere, not only inside the domain.

    Returns
    -------
    coefficients : ndarray ``fine.coefficient_shape``, float64
    fine : ControlGrid
    """
    c = np.asarray(coefficients, dtype=np.float64)
    n = grid.ndim
    for axis in range(1, n + 1):  # array axes of the spatial dimensions
        c = np.moveaxis(c, axis, -1)
        # Pad two zeros each side: coarse index -2 .. s+1 -> fine index -4 .. 2s+2; keep the
        # fine indices -2 .. 2s, shifted to start at 0.
        p = np.pad(c, [(0, 0)] * (c.ndim - 1) + [(2, 2)])
        even = (p[..., :-2] + 6 * p[..., 1:-1] + p[..., 2:]) / 8  # fine 2i, i = -1 .. s
        odd = (p[..., 1:-1] + p[..., 2:]) / 2  # fine 2i + 1, i = -1 .. s
        s = c.shape[-1]
        fine = np.zeros(c.shape[:-1] + (2 * s + 3,))
        # fine index j = 2i (+1) maps to slot j + 2; even[k] is i = k - 1.
        fine[..., 0::2] = even[..., : s + 2]
        fine[..., 1::2] = odd[..., : s + 1]
        c = np.moveaxis(fine, -1, axis)
    return c, grid.refined()


def crop_coefficients(coefficients: np.ndarray, grid: ControlGrid, low: Any, high: Any
                      ) -> tuple[np.ndarray, ControlGrid]:
    """Keep the control points whose support meets the box ``[low, high]``: the field inside
    the box is unchanged, and the box stays inside the grid's (ITK) domain.

    Refinement grows the grid by two fine spacings at each end (:meth:`ControlGrid.refined`),
    so after a few levels most control points lie where no pixel is scored; cropping keeps an
    optimiser's work and the bending energy's terms to the points that matter.

    Parameters
    ----------
    coefficients : ndarray ``grid.coefficient_shape``
    grid : ControlGrid
    low, high : array_like (n,)
        Corners of the box, ``(x, y[, z])`` pixels of the grid's space, inside its domain.

    Returns
    -------
    coefficients : ndarray, the kept points (a copy)
    grid : ControlGrid
        At least 4 points per axis; the points ``k`` with ``|o + k h - q| < 2 h`` for some ``q``
        in the box.
    """
    c = np.asarray(coefficients)
    o, h = np.asarray(grid.origin), np.asarray(grid.spacing)
    low, high = np.asarray(low, np.float64), np.asarray(high, np.float64)
    first = np.maximum(np.floor((low - o) / h - 2).astype(int) + 1, 0)
    last = np.minimum(np.ceil((high - o) / h + 2).astype(int) - 1, np.asarray(grid.shape) - 1)
    short = last - first + 1 < 4
    last = np.where(short, np.minimum(first + 3, np.asarray(grid.shape) - 1), last)
    first = np.where(short, last - 3, first)
    index = (slice(None),) + tuple(slice(int(a), int(b) + 1)
                                   for a, b in zip(first[::-1], last[::-1], strict=True))
    cropped = ControlGrid(tuple(o + first * h), grid.spacing, tuple(last - first + 1))
    return c[index].copy(), cropped


# -------------------------------------------------------------------- bending energy


def _gram(grid: ControlGrid, axis: int, order: int) -> np.ndarray:
    """``G[i, j] = integral over the line of beta_i^(order) beta_j^(order)``, per unit of the
    grid's pixels, exact (Gauss-Legendre with 4 nodes integrates these degree <= 6 products)."""
    return _gram_1d(grid.shape[axis], grid.spacing[axis], order).copy()


@functools.lru_cache(maxsize=64)  # an optimiser asks for the same few at every step
def _gram_1d(size: int, h: float, order: int) -> np.ndarray:
    nodes, wts = np.polynomial.legendre.leggauss(4)
    frac = (nodes + 1) / 2  # on each knot interval [m, m + 1) of the grid index
    w = cubic_weights(frac, order) / h**order  # (4 nodes, 4 local basis functions)
    local = (w[:, :, None] * w[:, None, :] * (wts / 2)[:, None, None]).sum(0) * h
    g = np.zeros((size + 6, size + 6))
    # Interval m touches control points m - 1 .. m + 2; every interval with support: m = -2 .. s.
    for m in range(-2, size + 1):
        g[m + 2:m + 6, m + 2:m + 6] += local
    out = g[3:3 + size, 3:3 + size]
    out.flags.writeable = False
    return out


def bending_energy(coefficients: Any, grid: ControlGrid, normalise: bool = True) -> Any:
    """The thin-plate bending energy of ``u``, in closed form, differentiable (torch).

    ``E = sum_i integral sum_{j,k} (d^2 u_i / dq_j dq_k)^2 dq`` over the whole plane (space),
    computed exactly from the coefficients with the Gram matrices of the B-spline's
    derivatives (no sampling, no finite differences): ``integral (u_xx^2 + 2 u_xy^2 + u_yy^2)``
    in 2-D, the 6 second derivatives (3 mixed ones twice) in 3-D.

    Parameters
    ----------
    coefficients : Tensor ``(*batch, n, *grid.shape[::-1])`` (an ndarray is converted)
    grid : ControlGrid
    normalise : bool
        Divide by the domain's area (volume), giving the mean over it as elastix's
        ``TransformBendingEnergyPenalty`` averages over fixed-image samples; unit 1/px^2.
        Otherwise unit px^(n-2).

    Returns
    -------
    Tensor ``batch``, the dtype of ``coefficients``
    """
    import torch

    c = torch.as_tensor(coefficients)
    n = grid.ndim
    dt = c.dtype if c.dtype.is_floating_point else torch.float64
    c = c.to(dt)
    g = [[torch.as_tensor(_gram(grid, a, k), dtype=dt, device=c.device) for k in range(3)]
         for a in range(n)]
    total = c.new_zeros(c.shape[:-(n + 1)])
    for orders in itertools.product(range(3), repeat=n):
        if sum(orders) != 2:
            continue
        mult = 1.0 if max(orders) == 2 else 2.0  # mixed second derivatives appear twice
        # sum c (G_x (x) G_y [(x) G_z]) c, one Gram matrix along each axis in turn: a generic
        # einsum of all the operands would build the outer product c c (points^2 entries).
        smoothed = c
        for a in range(n):
            smoothed = torch.movedim(torch.movedim(smoothed, -1 - a, -1) @ g[a][orders[a]],
                                     -1, -1 - a)
        total = total + mult * (c * smoothed).flatten(-(n + 1)).sum(-1)
    if normalise:
        low, high = grid.domain
        total = total / float(np.prod(high - low))
    return total
