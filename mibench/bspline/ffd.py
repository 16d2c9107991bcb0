"""The B-spline free-form deformation transform on a matrix part, and its SimpleITK export.

Conventions: :mod:`mibench.bspline`.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np

from mibench.bspline.field import DenseField, fixed_grid_points
from mibench.bspline.grid import (
    ControlGrid,
    bending_energy,
    evaluate,
    local_support,
    refine_coefficients,
)
from mibench.bspline.inverse import lattice_start, newton_solve
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


# ------------------------------------------------------------------------- the transform


def fit_coefficients(grid: ControlGrid, points: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Least-squares coefficients whose field takes ``target`` ``(K, n)`` at ``points``.

    The normal equations of the sparse design (the ``4^n`` cubic weights of each point), with a
    ridge of 1e-10 times their mean diagonal so that control points no sample depends on come
    out 0, solved directly (``scipy.sparse.linalg.spsolve``). An iterative solver to a tight
    tolerance runs to its iteration limit when the target is not exactly a B-spline on the
    grid (a toolbox's field never is: minutes for a 128 x 128 image).

    Returns
    -------
    ndarray ``grid.coefficient_shape``, float64
    """
    from scipy.sparse import coo_matrix, identity
    from scipy.sparse.linalg import spsolve

    n = grid.ndim
    size = int(np.prod(grid.shape))
    rows, cols, vals = [], [], []
    strides = np.cumprod((1,) + grid.shape[:-1])
    support = local_support(grid, points, np)
    for offsets in itertools.product(range(4), repeat=n):
        index = np.zeros(len(points), dtype=np.int64)
        weight = np.ones(len(points))
        for axis, k in enumerate(offsets):
            i = support[axis][0].astype(np.int64) - 1 + k
            inside = (i >= 0) & (i < grid.shape[axis])  # no coefficient outside the grid
            index += np.clip(i, 0, grid.shape[axis] - 1) * strides[axis]
            weight = weight * support[axis][1][:, k] * inside
        rows.append(np.arange(len(points)))
        cols.append(index)
        vals.append(weight)
    design = coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                        shape=(len(points), size)).tocsc()
    normal = (design.T @ design).tocsc()
    ridge = 1e-10 * max(float(normal.diagonal().mean()), 1e-300)
    lhs = (normal + ridge * identity(size, format="csc")).tocsc()
    rhs = np.asarray(design.T @ np.asarray(target, dtype=np.float64))
    coefficients = np.stack([spsolve(lhs, rhs[:, i]) for i in range(n)])
    return coefficients.reshape(grid.coefficient_shape)


def fixed_box(fixed_shape: tuple[int, ...], affine: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(low, high)``: the bounding box of the fixed image's corner pixel centres mapped by the
    matrix part ``affine`` (MatrixTransform or ``(n+1, n+1)`` array), where the B-spline is
    evaluated; ``(x, y[, z])`` pixels.

    Raises
    ------
    ValueError
        If a corner is sent to infinity.
    """
    a = affine if isinstance(affine, MatrixTransform) else MatrixTransform(affine)
    sizes = np.asarray(fixed_shape[::-1], dtype=np.float64)
    corners = np.array(list(itertools.product(*[(0.0, s - 1) for s in sizes])))
    mapped = a.fixed_to_moving(corners)
    if not np.isfinite(mapped).all():
        raise ValueError("the matrix part sends a corner of the fixed image to infinity")
    return mapped.min(0), mapped.max(0)


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
        grid = ControlGrid.over(*fixed_box(fixed_shape, a), spacing)
        return cls(grid, np.zeros(grid.coefficient_shape), a)

    @property
    def ndim(self) -> int:
        return self.grid.ndim

    def __repr__(self) -> str:
        return (f"BSplineTransform(grid={self.grid!r}, max |c|="
                f"{np.abs(self.coefficients).max():.3g} px, affine={self.affine.matrix.tolist()})")

    @property
    def is_valid(self) -> bool:
        """Finite coefficients on a valid (finite, invertible) matrix part. Folding is not
        checked here: it is measured (:mod:`mibench.deformation`), not a failure."""
        return bool(np.isfinite(self.coefficients).all()) and self.affine.is_valid

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

        Newton starts at ``q = m``; a point it does not bring within ``tolerance`` restarts
        from the nearest image ``q + u(q)`` of a lattice (a quarter of the grid spacing) over
        the grid, with step halving, so a large or folding field still finds a preimage (a
        folding one may have several: this is one of them).

        Parameters
        ----------
        points : array_like (K, n)
            Moving-image points.
        tolerance : float
            Accepted residual ``|q + u(q) - m|`` (Euclidean, moving pixels); the fixed point
            ``A^-1(q)`` is then within ``tolerance * ||A^-1||`` of the exact preimage where the
            map is locally invertible.
        iterations : int
            Newton steps of each of the two attempts before giving up.

        Returns
        -------
        ndarray (K, n)
            ``A^-1(q)``; NaN for points that did not converge (no preimage found) or were NaN.
        """
        m = self._points(points)
        q = m.copy()
        done = newton_solve(self.coefficients, self.grid, m, q, tolerance, iterations)
        retry = np.flatnonzero(~done & np.isfinite(m).all(axis=1))
        if len(retry) and iterations > 0:
            start = lattice_start(self.coefficients, self.grid, m[retry])
            done[retry] = newton_solve(self.coefficients, self.grid, m[retry], start,
                                       tolerance, iterations, damped=True)
            q[retry] = start
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
        if grid.ndim != self.ndim:
            raise ValueError(f"a {self.ndim}-D transform needs a {self.ndim}-D grid")
        low, high = grid.domain
        axes = [low[a] + (np.arange((grid.shape[a] - 3) * samples) + 0.5)
                * grid.spacing[a] / samples for a in range(grid.ndim)]
        mesh = np.meshgrid(*axes, indexing="ij")
        q = np.column_stack([m.ravel() for m in mesh])  # (x, y[, z])
        coefficients = fit_coefficients(grid, q, evaluate(self.coefficients, self.grid, q))
        return BSplineTransform(grid, coefficients, self.affine)

    @classmethod
    def fit(cls, mapping: Any, fixed_shape: tuple[int, ...], spacing: Any, affine: Any = None,
            step: float = 1.0) -> BSplineTransform:
        """The least-squares B-spline (on ``affine``) closest to any fixed -> moving mapping.

        Parameters
        ----------
        mapping : callable
            ``(K, n)`` fixed points -> ``(K, n)`` moving points (another toolbox's transform,
            a dense field's interpolant, ...); NaN rows are left out.
        fixed_shape : (H, W) or (D, H, W)
            The fit covers the fixed image, sampled every ``step`` px along each axis.
        spacing : float or (n,) floats
            Control-point spacing in px; the grid is :meth:`over` the fixed image under
            ``affine``.
        affine : MatrixTransform or array_like, optional
            The matrix part ``A`` (identity if None); the B-spline fits ``mapping(p) - A(p)``
            at ``A(p)``.

        Returns
        -------
        BSplineTransform
            Exact (to solver precision) when the mapping is such a B-spline on that grid;
            otherwise its least-squares approximation at the samples.
        """
        out = cls.over(fixed_shape, spacing, affine)
        axes = [np.arange(0.0, s - 1 + 1e-9, step) for s in fixed_shape[::-1]]
        mesh = np.meshgrid(*axes[::-1], indexing="ij")
        p = np.column_stack([m.ravel() for m in mesh[::-1]])  # (x, y[, z])
        q = out.affine.fixed_to_moving(p)
        target = np.asarray(mapping(p), dtype=np.float64) - q
        keep = np.isfinite(target).all(axis=1) & np.isfinite(q).all(axis=1)
        out.coefficients = fit_coefficients(out.grid, q[keep], target[keep])
        return out

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


def from_sitk(transform: Any) -> BSplineTransform:
    """Read a SimpleITK transform in mibench's order back into a :class:`BSplineTransform`.

    Accepted, exactly: a cubic ``BSplineTransform`` (identity matrix part), or a
    ``CompositeTransform`` of a matrix transform applied first and a cubic ``BSplineTransform``
    second (what :func:`to_sitk` writes, elastix's order); both with an identity direction, in
    mibench's coordinates (see :func:`to_sitk`). Anything else (ITK's registration framework
    puts a moving initial transform *after* the optimised one) raises ``ValueError``: use
    :meth:`BSplineTransform.fit` on its ``TransformPoint`` instead.
    """
    import SimpleITK as sitk

    parts = [transform]
    if transform.GetName() == "CompositeTransform":
        composite = sitk.CompositeTransform(transform)
        # Last added is applied first: reverse to the order of application.
        parts = [composite.GetNthTransform(i) for i in
                 range(composite.GetNumberOfTransforms())][::-1]
    parts = [p.Downcast() for p in parts]
    if not 1 <= len(parts) <= 2 or not isinstance(parts[-1], sitk.BSplineTransform):
        raise ValueError("from_sitk reads a B-spline, or a matrix transform then a B-spline; "
                         "fit other mappings with BSplineTransform.fit")
    bspline = parts[-1]
    n = bspline.GetDimension()
    if bspline.GetOrder() != 3:
        raise ValueError(f"only cubic B-splines are read, got order {bspline.GetOrder()}")
    if not np.allclose(np.reshape(bspline.GetTransformDomainDirection(), (n, n)), np.eye(n)):
        raise ValueError("only an identity B-spline direction maps to mibench's grid")
    matrix = np.eye(n + 1)
    if len(parts) == 2:
        first = parts[0]
        if not all(hasattr(first, name) for name in ("GetMatrix", "GetTranslation",
                                                      "GetCenter")):
            raise ValueError(f"the first transform must be a matrix transform, got "
                             f"{first.GetName()}")
        m = np.reshape(first.GetMatrix(), (n, n))
        centre = np.asarray(first.GetCenter())
        matrix[:n, :n] = m
        matrix[:n, n] = np.asarray(first.GetTranslation()) + centre - m @ centre
    mesh = np.asarray(bspline.GetTransformDomainMeshSize())
    spacing = np.asarray(bspline.GetTransformDomainPhysicalDimensions()) / mesh
    origin = np.asarray(bspline.GetTransformDomainOrigin()) - spacing
    grid = ControlGrid(tuple(origin), tuple(spacing), tuple(mesh + 3))
    coefficients = np.asarray(bspline.GetParameters()).reshape(grid.coefficient_shape)
    return BSplineTransform(grid, coefficients, matrix)

