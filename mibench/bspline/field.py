"""Differentiable B-spline displacement fields in torch: at points, on grids, over an image.

Conventions: :mod:`mibench.bspline`.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np

from mibench.bspline.grid import ControlGrid, cubic_weights

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

    With ``exact=False`` and a general ``A``, ``u`` is evaluated separably on the 1-px grid
    that covers ``A`` of the fixed image and interpolated linearly at ``A(p)`` instead: faster
    (field, warp and backward about 2.5x faster at 512 x 512 on one CPU thread, measured under
    load), not exact: per component the error is at most ``(max |u_xx| + max |u_yy| [+ max
    |u_zz|]) / 8`` px (multilinear interpolation over 1 px), e.g. 0.006 px for coefficients
    drawn in +-3 px on a 16 px grid.

    Parameters
    ----------
    grid : ControlGrid
    fixed_shape : (H, W) or (D, H, W)
    affine : array_like (n+1, n+1) or MatrixTransform, optional
        The matrix part ``A`` (identity if None).
    device : torch device, optional
    exact : bool
        Whether a general ``A`` evaluates the spline exactly at ``A(p)`` (default) or
        interpolates it from a 1-px grid.
    """

    def __init__(self, grid: ControlGrid, fixed_shape: tuple[int, ...], affine: Any = None,
                 device=None, exact: bool = True):
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
        self._mats = self._sampler = self._where = None
        points = fixed_grid_points(self.fixed_shape, a, device)
        #: ``A(p)`` of every fixed pixel, Tensor ``(n, *fixed_shape)`` float64.
        self.base = points.T.reshape(n, *self.fixed_shape)
        if _is_axis_aligned(a):
            axes = [torch.arange(s, dtype=torch.float64, device=device) * a[i, i] + a[i, n]
                    for i, s in enumerate(self.fixed_shape[::-1])]
            self._mats = [axis_matrix(grid, i, axes[i]) for i in range(n)]
        elif exact:
            self._sampler = FieldSampler(grid, points, device)
        else:
            finite = points[torch.isfinite(points).all(1)]
            low = torch.floor(finite.min(0).values) - 1
            high = torch.ceil(finite.max(0).values) + 1
            axes = [torch.arange(float(low[i]), float(high[i]) + 0.5, dtype=torch.float64,
                                 device=device) for i in range(n)]
            self._mats = [axis_matrix(grid, i, axes[i]) for i in range(n)]
            where = 2 * (points - low) / (high - low) - 1  # align_corners=True over the box
            self._where = where.view(1, *self.fixed_shape, n)

    def __call__(self, coefficients: Any) -> Any:
        """Tensor ``(*batch, n, *fixed_shape)`` (``u_x, u_y[, u_z]`` in pixels) from
        coefficients ``(*batch, n, *grid.shape[::-1])``, in their dtype."""
        import torch.nn.functional as F

        if self._sampler is not None:
            out = self._sampler(coefficients)
            return out.reshape(*out.shape[:-1], *self.fixed_shape)
        mats = [m.to(coefficients.device, coefficients.dtype) for m in self._mats]
        dense = _separable(coefficients, mats)
        if self._where is None:
            return dense
        n = self.grid.ndim
        image = dense.reshape(-1, *dense.shape[-(n + 1):])
        where = self._where.to(coefficients.device, coefficients.dtype)
        out = F.grid_sample(image, where.expand(len(image), *where.shape[1:]), mode="bilinear",
                            padding_mode="border", align_corners=True)
        return out.reshape(*coefficients.shape[:-n], *self.fixed_shape)

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
