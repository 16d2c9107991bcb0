"""Cubic B-spline free-form deformation (FFD) composed on a matrix transform.

Convention (elastix's, with its default ``HowToCombineTransforms`` = ``"Compose"``): the matrix
part ``A`` is applied first and the B-spline displacement ``u`` second, at the point ``A`` gives,

    p_moving = A(p) + u(A(p)),        u(q) = sum_k c_k  beta((q - o) / h - k),

for a fixed-image point ``p`` ``(x, y[, z])`` in pixels (voxels), ``beta`` the tensor product of
centred cubic B-splines and ``c_k`` the coefficient (a displacement in pixels of the moving
image) of control point ``k``, which sits at ``o + k h`` (``o`` the grid origin, ``h`` the
spacing, both in pixels of the space ``A`` maps into). elastix places its grid over the bounding
box of the fixed image *after* the initial transform when it composes them
(``elxBSplineTransform.hxx``, ``PreComputeGridInformation``: "Take into account the initial
transform, if composition is used"), centred on it, with ``mesh + 3`` control points per axis
(``ComputeBSplineGrid``); :meth:`BSplineTransform.over` does the same.

Coefficients outside the grid are zero, so ``u`` is a C2 field on the whole plane that fades to
zero within two spacings of the grid; ITK instead returns a zero displacement wherever a point's
4^n support is not entirely inside the grid. The two agree inside the *domain* (the grid less one
spacing at each end, :attr:`ControlGrid.domain`), which :meth:`BSplineTransform.over` makes cover
the fixed image, and which :func:`to_sitk` exports as ITK's transform domain.

Arrays. A :class:`ControlGrid` lists origin, spacing and number of control points in ``(x, y[,
z])`` order; coefficients are an array ``(n, *shape[::-1])`` = ``(2, ny, nx)`` or ``(3, nz, ny,
nx)``: component first (``u_x, u_y[, u_z]``), then the control points in array order, like a
``(C, H, W)`` image.

Operations. :meth:`BSplineTransform.fixed_to_moving` is exact; :meth:`~BSplineTransform.
moving_to_fixed` solves ``q + u(q) = m`` by Newton's method to a residual of
:data:`INVERSE_TOLERANCE` px (NaN where it does not converge); :meth:`~BSplineTransform.warp`
pulls back with ``grid_sample`` on any device. :class:`DenseField` is the differentiable dense
field for an optimiser (separable matrix products, or one ``grid_sample`` of the coefficients);
:func:`bending_energy` is the thin-plate energy in closed form; :func:`refine_coefficients`
halves the spacing exactly (B-spline subdivision), :meth:`~BSplineTransform.resampled` moves to
any other grid by least squares. Storage: :meth:`~BSplineTransform.save` / ``load`` (``.npz``
beside the record, which references it by name) or coefficients embedded in the record when
few (:meth:`~BSplineTransform.to_dict`). :func:`to_sitk` exports to SimpleITK.

Volumes work through the same code (generic in the dimension); the ITK export is in voxel units
(mibench's coordinates taken as ITK physical points), not LPS millimetres.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mibench.transform import MatrixTransform, warp_with

#: Default tolerance of :meth:`BSplineTransform.moving_to_fixed`: the largest residual
#: ``|A(p) + u(A(p)) - m|`` accepted, in moving-image pixels.
INVERSE_TOLERANCE = 1e-8
#: Newton iterations of :meth:`BSplineTransform.moving_to_fixed` before a point is given up
#: (NaN).
INVERSE_ITERATIONS = 50
#: :meth:`BSplineTransform.to_dict` embeds the coefficients when there are at most this many
#: values and no file holds them.
EMBED_LIMIT = 4096


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


def _support(grid: ControlGrid, points: Any, xp: Any, derivative: int = 0):
    """Per axis: first control index ``(K,)`` and weights ``(K, 4)`` (and derivative weights
    ``(K, 4)`` per pixel if ``derivative``) of ``(K, n)`` points."""
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
        support = _support(grid, block, np, derivative=int(jacobian))
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


# --------------------------------------------------------------------- evaluation (torch)


class FieldSampler:
    """Differentiable ``u(q)`` at fixed points ``q`` (torch), exact, with linear fetches.

    Along each axis the four cubic weights pair up, ``w0 c[i-1] + w1 c[i] = g0 lerp(c[i-1],
    c[i], w1 / g0)`` with ``g0 = w0 + w1`` (and likewise ``w2, w3``), so the 4^n-term sum is
    2^n (bi/tri)linear fetches of the coefficient image (Sigg and Hadwiger, "Fast third-order
    texture filtering", GPU Gems 2, ch. 20, 2005), all done by one ``grid_sample``; its zero
    padding gives the zero coefficients outside the grid. Exact up to rounding.

    The fetch positions and weights depend only on the points: they are computed once here,
    so a registration that keeps ``A`` fixed while it optimises the coefficients pays only
    the ``grid_sample`` (forward and backward) per iteration.

    Parameters
    ----------
    grid : ControlGrid
    points : Tensor or ndarray (K, n)
        ``(x, y[, z])`` in the grid's space; NaN points give NaN.
    device : torch device, optional
        Where to keep the precomputed tensors (default: the points' device, CPU for arrays).
    """

    def __init__(self, grid: ControlGrid, points: Any, device=None):
        import torch

        n = grid.ndim
        pts = torch.as_tensor(points, dtype=torch.float64, device=device)
        factors, positions = [], []
        for axis in range(n):
            t = (pts[:, axis] - grid.origin[axis]) / grid.spacing[axis]
            base = torch.floor(t)
            w = cubic_weights(t - base, 0, torch)
            g0, g1 = w[:, 0] + w[:, 1], w[:, 2] + w[:, 3]  # both >= 1/6: no division by 0
            h0 = base - 1 + w[:, 1] / g0  # continuous grid index of each linear fetch
            h1 = base + 1 + w[:, 3] / g1
            # grid_sample's [-1, 1] with align_corners=True spans the first to the last point.
            positions.append([2 * h / (grid.shape[axis] - 1) - 1 for h in (h0, h1)])
            factors.append([g0, g1])
        corners = list(itertools.product(range(2), repeat=n))
        where = torch.stack([torch.stack([positions[a][c[a]] for a in range(n)], -1)
                             for c in corners])  # (2^n, K, n)
        weight = torch.stack([math.prod(factors[a][c[a]] for a in range(n)) for c in corners])
        self.grid = grid
        self.count = len(pts)
        # (1, 2^n, [1,] K, n): one grid_sample call fetches every corner of every point.
        self._where = where.view(1, len(corners), *([1] * (n - 2)), len(pts), n)
        self._weight = weight  # (2^n, K)
        self._cast: dict = {}

    def _tensors(self, dtype):
        if dtype not in self._cast:
            self._cast[dtype] = (self._where.to(dtype), self._weight.to(dtype))
        return self._cast[dtype]

    def __call__(self, coefficients: Any) -> Any:
        """``u`` at the points: Tensor ``(*batch, n, K)`` from coefficients ``(*batch, n,
        *shape[::-1])`` (gradients flow back to them), in their dtype."""
        import torch.nn.functional as F

        n = self.grid.ndim
        batch = coefficients.shape[:-(n + 1)]
        image = coefficients.reshape(-1, *coefficients.shape[-(n + 1):])  # (B, n, [D,] H, W)
        where, weight = self._tensors(coefficients.dtype)
        where = where.to(coefficients.device)
        fetched = F.grid_sample(image, where.expand(len(image), *where.shape[1:]),
                                mode="bilinear", padding_mode="zeros", align_corners=True)
        fetched = fetched.reshape(len(image), n, -1, self.count)  # (B, n, 2^n, K)
        out = (fetched * weight.to(coefficients.device)).sum(2)
        return out.reshape(*batch, n, self.count)


def field_at(coefficients: Any, grid: ControlGrid, points: Any) -> Any:
    """Differentiable ``u(q)`` at arbitrary points (torch): :class:`FieldSampler` used once.

    Parameters
    ----------
    coefficients : Tensor ``(*batch, n, *shape[::-1])``
        Control-point displacements in pixels; gradients flow back to them.
    grid : ControlGrid
    points : Tensor (K, n)
        ``(x, y[, z])`` in the grid's space, same device.

    Returns
    -------
    Tensor ``(*batch, n, K)``, the dtype of ``coefficients``
    """
    return FieldSampler(grid, points, device=coefficients.device)(coefficients)


def axis_matrix(grid: ControlGrid, axis: int, coords: Any) -> Any:
    """Dense ``(len(coords), grid.shape[axis])`` B-spline weights of 1-D positions (torch).

    ``u`` on a tensor-product set of points is then a product of these matrices with the
    coefficients (separable evaluation, :func:`field_on_grid`).
    """
    import torch

    coords = coords.to(torch.float64)
    t = (coords - grid.origin[axis]) / grid.spacing[axis]
    base = torch.floor(t)
    w = cubic_weights(t - base, 0, torch)
    size = grid.shape[axis]
    cols = base.long()[:, None] - 1 + torch.arange(4, device=coords.device)
    # Control points outside the grid have zero coefficients: drop their weights.
    w = w * ((cols >= 0) & (cols < size))
    m = torch.zeros(len(coords), size, dtype=torch.float64, device=coords.device)
    m.scatter_add_(1, cols.clamp(0, size - 1), w)
    return m


def field_on_grid(coefficients: Any, grid: ControlGrid, axes: list[Any]) -> Any:
    """Differentiable ``u`` on the tensor product of 1-D positions (separable evaluation).

    Parameters
    ----------
    coefficients : Tensor ``(*batch, n, *shape[::-1])``
    grid : ControlGrid
    axes : list of n 1-D Tensors
        Positions along ``x, y[, z]`` in the grid's space.

    Returns
    -------
    Tensor ``(*batch, n, len(axes[-1]), ..., len(axes[0]))``: the field in array order
    (``(n, H, W)`` or ``(n, D, H, W)``), the dtype of ``coefficients``.
    """
    mats = [axis_matrix(grid, a, axes[a]).to(coefficients.dtype) for a in range(grid.ndim)]
    return _separable(coefficients, mats)


def _separable(coefficients: Any, mats: list[Any]) -> Any:
    """Apply the per-axis weight matrices ``mats`` (x first) to the coefficient grids."""
    import torch

    if len(mats) == 2:
        return mats[1] @ coefficients @ mats[0].T
    return torch.einsum("...czyx,dz,hy,wx->...cdhw", coefficients, mats[2], mats[1], mats[0])


def _is_axis_aligned(matrix: np.ndarray) -> bool:
    n = matrix.shape[0] - 1
    off = matrix[:n, :n] - np.diag(np.diag(matrix[:n, :n]))
    return not off.any() and not matrix[n, :n].any() and matrix[n, n] == 1


def fixed_grid_points(fixed_shape: tuple[int, ...], affine: np.ndarray, device=None) -> Any:
    """``A(p)`` for every fixed pixel ``p``, as a Tensor ``(N, n)`` float64 in array order."""
    import torch

    n = len(fixed_shape)
    axes = [torch.arange(s, dtype=torch.float64, device=device) for s in fixed_shape[::-1]]
    mesh = torch.meshgrid(*axes[::-1], indexing="ij")  # (z,) y, x
    pts = torch.stack([m.reshape(-1) for m in mesh[::-1]], -1)  # (N, n) as (x, y[, z])
    a = torch.as_tensor(affine, dtype=torch.float64, device=device)
    homog = pts @ a[:n, :n].T + a[:n, n]
    w = pts @ a[n, :n] + a[n, n]
    out = homog / w[:, None]
    # Behind the camera (w <= 0) a point has no image, as in MatrixTransform.
    return torch.where((w > 0)[:, None], out, torch.full_like(out, float("nan")))


class DenseField:
    """The dense, differentiable displacement ``u(A(p))`` over the fixed image (torch).

    Everything that depends only on the grid, the fixed shape and ``A`` is computed once, so
    that calling it on new coefficients (an optimiser's iterations) costs two small matrix
    products when ``A`` is axis-aligned (identity, scaling, translation: separable evaluation)
    and one ``grid_sample`` otherwise (:class:`FieldSampler` at ``A(p)``). The moving position
    of fixed pixel ``p`` is ``A(p) + u(A(p))``.

    Parameters
    ----------
    grid : ControlGrid
    fixed_shape : (H, W) or (D, H, W)
    affine : array_like (n+1, n+1) or MatrixTransform, optional
        The matrix part ``A`` (identity if None).
    device : torch device, optional
    """

    def __init__(self, grid: ControlGrid, fixed_shape: tuple[int, ...], affine: Any = None,
                 device=None):
        import torch

        n = grid.ndim
        a = np.eye(n + 1) if affine is None else np.asarray(getattr(affine, "matrix", affine),
                                                             dtype=np.float64)
        if len(fixed_shape) != n or a.shape != (n + 1, n + 1):
            raise ValueError(f"a {n}-D grid needs a {n}-D fixed shape and a {n + 1}x{n + 1} "
                             f"matrix, got {tuple(fixed_shape)} and {a.shape}")
        self.grid = grid
        self.fixed_shape = tuple(int(s) for s in fixed_shape)
        self.affine = a
        self._mats = self._sampler = None
        points = fixed_grid_points(self.fixed_shape, a, device)
        #: ``A(p)`` of every fixed pixel, Tensor ``(n, *fixed_shape)`` float64.
        self.base = points.T.reshape(n, *self.fixed_shape)
        if _is_axis_aligned(a):
            axes = [torch.arange(s, dtype=torch.float64, device=device) * a[i, i] + a[i, n]
                    for i, s in enumerate(self.fixed_shape[::-1])]
            self._mats = [axis_matrix(grid, i, axes[i]) for i in range(n)]
        else:
            self._sampler = FieldSampler(grid, points, device)

    def __call__(self, coefficients: Any) -> Any:
        """Tensor ``(*batch, n, *fixed_shape)`` (``u_x, u_y[, u_z]`` in pixels) from
        coefficients ``(*batch, n, *grid.shape[::-1])``, in their dtype."""
        if self._sampler is not None:
            out = self._sampler(coefficients)
            return out.reshape(*out.shape[:-1], *self.fixed_shape)
        mats = [m.to(coefficients.device, coefficients.dtype) for m in self._mats]
        return _separable(coefficients, mats)

    def sampling_grid(self, coefficients: Any, moving_shape: tuple[int, ...]) -> Any:
        """The differentiable ``grid_sample`` grid (align_corners=True) of ``A(p) + u(A(p))``.

        Parameters
        ----------
        coefficients : Tensor ``(*batch, n, *grid.shape[::-1])``
        moving_shape : (Hm, Wm) or (Dm, Hm, Wm)
            The image that will be sampled.

        Returns
        -------
        Tensor ``(B, *fixed_shape, n)``, ``B`` the flattened batch (1 without one), the dtype
        of ``coefficients``: ``(x, y[, z])`` scaled to [-1, 1] over the moving image's pixel
        centres; pixels the matrix part sends behind the camera get -2 (padding).
        """
        import torch

        n = self.grid.ndim
        if len(moving_shape) != n:
            raise ValueError(f"a {n}-D field samples {n}-D images, got {tuple(moving_shape)}")
        u = self(coefficients)
        u = u.reshape(-1, *u.shape[-(n + 1):])
        pos = self.base.to(u.device, u.dtype) + u
        scale = torch.tensor([2.0 / max(s - 1, 1) for s in moving_shape[::-1]], dtype=u.dtype,
                             device=u.device).view(n, *([1] * n))
        grid = (pos * scale - 1).movedim(1, -1)
        return torch.where(torch.isfinite(grid), grid, torch.full_like(grid, -2.0))


def displacement_field(coefficients: Any, grid: ControlGrid, fixed_shape: tuple[int, ...],
                       affine: Any = None) -> Any:
    """The dense displacement ``u(A(p))`` over the fixed image, differentiable (torch).

    One-off form of :class:`DenseField` (which an optimiser should build once and call).

    Parameters
    ----------
    coefficients : Tensor ``(*batch, n, *grid.shape[::-1])``
        Gradients flow back to them.
    grid : ControlGrid
    fixed_shape : (H, W) or (D, H, W)
    affine : array_like (n+1, n+1) or MatrixTransform, optional
        The matrix part ``A`` (identity if None).

    Returns
    -------
    Tensor ``(*batch, n, *fixed_shape)``, components ``(u_x, u_y[, u_z])`` in pixels.
    """
    return DenseField(grid, fixed_shape, affine, coefficients.device)(coefficients)


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


# -------------------------------------------------------------------- bending energy


def _gram(grid: ControlGrid, axis: int, order: int) -> np.ndarray:
    """``G[i, j] = integral over the line of beta_i^(order) beta_j^(order)``, per unit of the
    grid's pixels, exact (Gauss-Legendre with 4 nodes integrates these degree <= 6 products)."""
    size, h = grid.shape[axis], grid.spacing[axis]
    nodes, wts = np.polynomial.legendre.leggauss(4)
    frac = (nodes + 1) / 2  # on each knot interval [m, m + 1) of the grid index
    w = cubic_weights(frac, order) / h**order  # (4 nodes, 4 local basis functions)
    local = (w[:, :, None] * w[:, None, :] * (wts / 2)[:, None, None]).sum(0) * h
    g = np.zeros((size + 6, size + 6))
    # Interval m touches control points m - 1 .. m + 2; every interval with support: m = -2 .. s.
    for m in range(-2, size + 1):
        g[m + 2:m + 6, m + 2:m + 6] += local
    return g[3:3 + size, 3:3 + size]


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
    letters = "xyz"[:n]
    spatial = "".join(reversed(letters))  # array order: (z,) y, x
    primed = spatial.upper()
    total = c.new_zeros(c.shape[:-(n + 1)])
    for orders in itertools.product(range(3), repeat=n):
        if sum(orders) != 2:
            continue
        mult = 1.0 if max(orders) == 2 else 2.0  # mixed second derivatives appear twice
        operands = [c, c] + [g[a][orders[a]] for a in range(n)]
        spec = (f"...c{spatial},...c{primed},"
                + ",".join(f"{letters[a]}{letters[a].upper()}" for a in range(n)) + "->...")
        total = total + mult * torch.einsum(spec, *operands)
    if normalise:
        low, high = grid.domain
        total = total / float(np.prod(high - low))
    return total


# ------------------------------------------------------------------------- the transform


class BSplineTransform:
    """A cubic B-spline FFD on a matrix transform: ``p_moving = A(p) + u(A(p))``.

    See the module docstring for the convention. Satisfies :class:`mibench.transform.Transform`.

    Parameters
    ----------
    grid : ControlGrid
    coefficients : array_like ``grid.coefficient_shape``
        Control-point displacements in pixels; stored as float64.
    affine : MatrixTransform or array_like (n+1, n+1), optional
        The matrix part ``A`` (identity if None); a 3x3 (4x4) for a 2-D (3-D) grid.
    """

    def __init__(self, grid: ControlGrid, coefficients: Any, affine: Any = None):
        n = grid.ndim
        c = np.asarray(coefficients, dtype=np.float64)
        if c.shape != grid.coefficient_shape:
            raise ValueError(f"coefficients must have shape {grid.coefficient_shape}, got "
                             f"{c.shape}")
        if affine is None:
            affine = MatrixTransform.identity(n)
        elif not isinstance(affine, MatrixTransform):
            affine = MatrixTransform(affine)
        if affine.ndim != n:
            raise ValueError(f"a {n}-D control grid needs a {n + 1}x{n + 1} matrix, got "
                             f"{affine.matrix.shape}")
        self.grid = grid
        self.coefficients = c
        self.affine = affine
        #: The .npz file the coefficients were last saved to or loaded from (see :meth:`save`).
        self.path: Path | None = None

    @classmethod
    def over(cls, fixed_shape: tuple[int, ...], spacing: Any, affine: Any = None
             ) -> BSplineTransform:
        """A zero field whose domain covers ``A`` of the fixed image (elastix's placement).

        Parameters
        ----------
        fixed_shape : (H, W) or (D, H, W)
        spacing : float or (n,) floats
            Control-point spacing in pixels.
        affine : MatrixTransform or array_like, optional
            The matrix part; the grid covers the bounding box of the fixed image's corner
            pixel centres mapped by it.
        """
        n = len(fixed_shape)
        a = MatrixTransform.identity(n) if affine is None else (
            affine if isinstance(affine, MatrixTransform) else MatrixTransform(affine))
        sizes = np.asarray(fixed_shape[::-1], dtype=np.float64)
        corners = np.array(list(itertools.product(*[(0.0, s - 1) for s in sizes])))
        mapped = a.fixed_to_moving(corners)
        if not np.isfinite(mapped).all():
            raise ValueError("the matrix part sends a corner of the fixed image to infinity")
        grid = ControlGrid.over(mapped.min(0), mapped.max(0), spacing)
        return cls(grid, np.zeros(grid.coefficient_shape), a)

    @property
    def ndim(self) -> int:
        return self.grid.ndim

    def __repr__(self) -> str:
        return (f"BSplineTransform(grid={self.grid!r}, max |c|="
                f"{np.abs(self.coefficients).max():.3g} px, affine={self.affine.matrix.tolist()})")

    def _points(self, points: Any) -> np.ndarray:
        pts = np.asarray(points, dtype=np.float64)
        if pts.size and pts.shape[-1] != self.ndim:
            raise ValueError(f"a {self.ndim}-D transform maps (K, {self.ndim}) points, got "
                             f"shape {pts.shape}")
        return pts.reshape(-1, self.ndim)

    def fixed_to_moving(self, points: Any) -> np.ndarray:
        """Exact ``A(p) + u(A(p))`` for ``(K, n)`` fixed points; NaN where ``A`` has none."""
        q = self.affine.fixed_to_moving(self._points(points))
        return q + evaluate(self.coefficients, self.grid, q)

    def jacobian(self, points: Any) -> np.ndarray:
        """Analytic ``d p_moving / d p`` ``(K, n, n)`` at fixed points: ``(I + Du(q)) DA(p)``."""
        p = self._points(points)
        m = self.affine.matrix
        n = self.ndim
        q = self.affine.fixed_to_moving(p)
        w = p @ m[n, :n] + m[n, n]
        # Derivative of the projective map q = (M p + t) / w.
        da = (m[None, :n, :n] - q[:, :, None] * m[None, n, None, :n]) / w[:, None, None]
        _, du = evaluate(self.coefficients, self.grid, q, jacobian=True)
        return (np.eye(n) + du) @ da

    def moving_to_fixed(self, points: Any, tolerance: float = INVERSE_TOLERANCE,
                        iterations: int = INVERSE_ITERATIONS) -> np.ndarray:
        """Map moving points into the fixed image by Newton's method on ``q + u(q) = m``.

        Parameters
        ----------
        points : array_like (K, n)
            Moving-image points.
        tolerance : float
            Accepted residual ``|q + u(q) - m|`` (Euclidean, moving pixels); the fixed point
            ``A^-1(q)`` is then within ``tolerance * ||A^-1||`` of the exact preimage where the
            map is locally invertible.
        iterations : int
            Newton steps before giving up.

        Returns
        -------
        ndarray (K, n)
            ``A^-1(q)``; NaN for points that did not converge (no preimage found, a singular
            Jacobian on the way: folding) or were NaN.
        """
        m = self._points(points)
        n = self.ndim
        q = m.copy()
        done = np.zeros(len(m), dtype=bool)
        alive = np.isfinite(m).all(axis=1)
        for _ in range(iterations + 1):
            todo = alive & ~done
            if not todo.any():
                break
            u, du = evaluate(self.coefficients, self.grid, q[todo], jacobian=True)
            r = q[todo] + u - m[todo]
            conv = np.linalg.norm(r, axis=1) <= tolerance
            idx = np.flatnonzero(todo)
            done[idx[conv]] = True
            step_idx, r, jac = idx[~conv], r[~conv], np.eye(n) + du[~conv]
            det = np.linalg.det(jac)
            good = np.isfinite(det) & (np.abs(det) > 1e-12)
            alive[step_idx[~good]] = False
            if good.any():
                q[step_idx[good]] -= np.linalg.solve(jac[good], r[good][..., None])[..., 0]
        q[~done] = np.nan
        out = self.affine.moving_to_fixed(q)
        out[~done] = np.nan
        return out

    def sampling_grid(self, fixed_shape: tuple[int, ...], moving_shape: tuple[int, ...],
                      device=None):
        """The ``grid_sample`` grid (align_corners=True) of ``A(p) + u(A(p))``.

        Same layout as :meth:`MatrixTransform.sampling_grid`: Tensor ``(1, H, W, 2)`` or
        ``(1, D, H, W, 3)`` float32, ``(x, y[, z])`` scaled to [-1, 1] over the moving image;
        pixels the matrix part sends behind the camera read the padding value.
        """
        import torch

        n = self.ndim
        if len(fixed_shape) != n or len(moving_shape) != n:
            raise ValueError(f"a {n}-D transform samples {n}-D grids, got fixed "
                             f"{tuple(fixed_shape)} and moving {tuple(moving_shape)}")
        c = torch.as_tensor(self.coefficients, dtype=torch.float64, device=device)
        field = DenseField(self.grid, tuple(fixed_shape), self.affine.matrix, device)
        return field.sampling_grid(c, tuple(moving_shape)).float()

    def warp(self, moving: Any, fixed_shape: tuple[int, ...], *, mode: str = "bilinear",
             padding_value: float = 0.0) -> Any:
        """Pull the moving image back into the fixed frame (as :meth:`MatrixTransform.warp`:
        Tensors stay on their device, arrays give an array back in the same layout)."""
        return warp_with(self, moving, fixed_shape, mode=mode, padding_value=padding_value)

    def displacement(self, fixed_shape: tuple[int, ...]) -> np.ndarray:
        """``p_moving - p`` for every fixed pixel, ndarray ``(n, *fixed_shape)`` float64."""
        import torch

        field = DenseField(self.grid, tuple(fixed_shape), self.affine.matrix)
        u = field(torch.as_tensor(self.coefficients, dtype=torch.float64))
        identity = fixed_grid_points(tuple(fixed_shape), np.eye(self.ndim + 1))
        return (field.base + u - identity.T.reshape(self.ndim, *fixed_shape)).numpy()

    def refined(self) -> BSplineTransform:
        """The same mapping on a grid of half the spacing (exact, :func:`refine_coefficients`)."""
        c, grid = refine_coefficients(self.coefficients, self.grid)
        return BSplineTransform(grid, c, self.affine)

    def resampled(self, grid: ControlGrid, samples: int = 4) -> BSplineTransform:
        """The same mapping on another control grid, by least squares (not exact).

        The new coefficients minimise the squared difference of the two displacements at
        ``samples`` points per new cell and axis over the new grid's domain (cell centres of a
        regular subdivision), solved with ``scipy.sparse.linalg.lsqr`` to machine precision; a
        field the new grid can represent (a coarser grid dividing the new spacing by an
        integer, say) comes back exactly up to that precision. For halving the spacing use
        :meth:`refined`, which is exact everywhere.
        """
        from scipy.sparse import coo_matrix
        from scipy.sparse.linalg import lsqr

        if grid.ndim != self.ndim:
            raise ValueError(f"a {self.ndim}-D transform needs a {self.ndim}-D grid")
        low, high = grid.domain
        axes = [low[a] + (np.arange((grid.shape[a] - 3) * samples) + 0.5)
                * grid.spacing[a] / samples for a in range(grid.ndim)]
        mesh = np.meshgrid(*axes, indexing="ij")
        q = np.column_stack([m.ravel() for m in mesh])  # (x, y[, z])
        target = evaluate(self.coefficients, self.grid, q)
        rows, cols, vals = [], [], []
        strides = np.cumprod((1,) + grid.shape[:-1])
        support = _support(grid, q, np)
        for offsets in itertools.product(range(4), repeat=grid.ndim):
            index = np.zeros(len(q), dtype=np.int64)
            weight = np.ones(len(q))
            for axis, k in enumerate(offsets):
                index += (support[axis][0].astype(np.int64) - 1 + k) * strides[axis]
                weight = weight * support[axis][1][:, k]
            rows.append(np.arange(len(q)))
            cols.append(index)
            vals.append(weight)
        design = coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                            shape=(len(q), int(np.prod(grid.shape)))).tocsr()
        coefficients = np.stack([lsqr(design, target[:, i], atol=1e-14, btol=1e-14,
                                      iter_lim=10000)[0] for i in range(self.ndim)])
        return BSplineTransform(grid, coefficients.reshape(grid.coefficient_shape), self.affine)

    def bending_energy(self, normalise: bool = True) -> float:
        """:func:`bending_energy` of the displacement (the matrix part bends nothing)."""
        return float(bending_energy(self.coefficients, self.grid, normalise))

    # -------------------------------------------------------------------- storage

    def save(self, path: Any) -> Path:
        """Write grid, matrix part and coefficients to an ``.npz`` file; remember the path.

        After this, :meth:`to_dict` references the file instead of embedding the coefficients.
        """
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, coefficients=self.coefficients, origin=np.asarray(self.grid.origin),
                 spacing=np.asarray(self.grid.spacing), shape=np.asarray(self.grid.shape),
                 affine=self.affine.matrix)
        tmp.replace(path)  # atomic, like records
        self.path = path
        return path

    @classmethod
    def load(cls, path: Any) -> BSplineTransform:
        """Read a file written by :meth:`save`."""
        path = Path(path)
        with np.load(path) as data:
            grid = ControlGrid(tuple(data["origin"]), tuple(data["spacing"]),
                               tuple(int(v) for v in data["shape"]))
            out = cls(grid, data["coefficients"], data["affine"])
        out.path = path
        return out

    def to_dict(self, embed: bool = False) -> dict[str, Any]:
        """The record's description: ``type``, ``grid``, ``affine``, and the coefficients.

        The coefficients are referenced by file name (``"coefficients_file"``, relative to the
        record's folder) once :meth:`save` has written them; otherwise embedded as a nested list
        (``"coefficients"``) when there are at most :data:`EMBED_LIMIT` values. A larger unsaved
        transform raises ``ValueError``: save it beside its record first (the contract).
        ``embed=True`` always embeds them (a dataset's ground truth in its ``meta``).
        """
        out = {"type": "bspline", "grid": self.grid.to_dict(),
               "affine": self.affine.matrix.tolist()}
        if embed:
            out["coefficients"] = self.coefficients.tolist()
        elif self.path is not None:
            out["coefficients_file"] = self.path.name
        elif self.coefficients.size <= EMBED_LIMIT:
            out["coefficients"] = self.coefficients.tolist()
        else:
            raise ValueError(f"{self.coefficients.size} B-spline coefficients are too many to "
                             f"embed in a record: save() them to a file beside it first")
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], folder: Any = None) -> BSplineTransform:
        """Rebuild from :meth:`to_dict`; ``folder`` is where a referenced file lies."""
        if "coefficients" in data:
            return cls(ControlGrid.from_dict(data["grid"]), data["coefficients"],
                       data["affine"])
        path = Path(folder or ".") / data["coefficients_file"]
        out = cls.load(path)
        if out.grid != ControlGrid.from_dict(data["grid"]) or not np.array_equal(
                out.affine.matrix, np.asarray(data["affine"], dtype=np.float64)):
            raise ValueError(f"{path} does not hold the transform its record describes")
        return out


# ------------------------------------------------------------------------------ ITK export


def to_sitk(transform: BSplineTransform):
    """The transform as a SimpleITK ``CompositeTransform``: ``A`` first, then the B-spline.

    mibench's coordinates are taken as ITK physical points (2-D images: origin 0, spacing 1, no
    LPS flip); the B-spline's ITK transform domain is :attr:`ControlGrid.domain` (mesh =
    ``shape - 3``), where the two agree. Only an affine matrix part can be exported.

    Returns
    -------
    SimpleITK.CompositeTransform
        ``TransformPoint(p)`` equals :meth:`BSplineTransform.fixed_to_moving` for points whose
        ``A(p)`` lies in the domain.
    """
    import SimpleITK as sitk

    n = transform.ndim
    m = transform.affine.matrix
    if np.any(m[n, :n] != 0) or m[n, n] != 1:
        raise ValueError("ITK export needs an affine matrix part (last row [0 ... 0 1])")
    grid = transform.grid
    low, high = grid.domain
    bspline = sitk.BSplineTransform(n, 3)
    bspline.SetTransformDomainOrigin(tuple(float(v) for v in low))
    bspline.SetTransformDomainPhysicalDimensions(tuple(float(v) for v in high - low))
    bspline.SetTransformDomainMeshSize(tuple(int(s) - 3 for s in grid.shape))
    bspline.SetTransformDomainDirection(tuple(np.eye(n).ravel().tolist()))
    # ITK's coefficient images are x-fastest, one per component, concatenated: the C-order
    # ravel of each (.., ny, nx) component.
    bspline.SetParameters(tuple(transform.coefficients.reshape(n, -1).ravel().tolist()))
    affine = sitk.AffineTransform(n)
    affine.SetMatrix(tuple(m[:n, :n].ravel().tolist()))
    affine.SetTranslation(tuple(m[:n, n].tolist()))
    # A CompositeTransform applies its transforms last-added first.
    composite = sitk.CompositeTransform(n)
    composite.AddTransform(bspline)
    composite.AddTransform(affine)
    return composite
