"""Physical geometry of an image: where its voxels lie in the world, in millimetres.

Conventions (``CONTRACTS.md``, *Volumes (3-D) and physical space*): a voxel coordinate is
``(x, y, z)`` = (index along W, along H, along D) of a ``(D, H, W)`` array, at voxel centres; in
2-D ``(x, y)`` = (column, row). The world frame is RAS+ (x to the Right, y Anterior, z Superior,
as NIfTI and nibabel use it), in the geometry's ``unit`` (mm for volumes, um for histology with
a pixel size): ``world = affine @ [x, y, z, 1]``.

ITK and SimpleITK describe the same thing in LPS, with a spacing, an origin and a direction
matrix: ``world_LPS = origin + direction @ diag(spacing) @ index``, where ITK's index is our
``(x, y, z)`` (its first index runs fastest, along W). LPS and RAS differ by the sign of their
first two axes; :meth:`Geometry.from_itk` and :meth:`Geometry.to_itk` are the only places where
the flip happens, so no LPS coordinate ever lives inside mibench. In 2-D the same two axes are
flipped, so that a slice of a volume keeps its in-plane coordinates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

#: RAS <-> LPS: negate the first two world axes (its own inverse).
_FLIP = {2: np.diag([-1.0, -1.0, 1.0]), 3: np.diag([-1.0, -1.0, 1.0, 1.0])}


def _points(points: Any, ndim: int, what: str) -> np.ndarray:
    pts = np.asarray(points, dtype=np.float64)
    if pts.size == 0:
        return pts.reshape(0, ndim)
    if pts.ndim not in (1, 2) or pts.shape[-1] != ndim:
        raise ValueError(f"{what} have shape {pts.shape}, expected (K, {ndim})")
    return pts.reshape(-1, ndim)


@dataclass(frozen=True, eq=False)
class Geometry:
    """The voxel -> world map of one image.

    Parameters
    ----------
    affine : array_like, shape (3, 3) or (4, 4)
        Homogeneous matrix mapping voxel coordinates ``(x, y[, z], 1)`` to RAS+ world
        coordinates in ``unit``; last row ``[0, ..., 0, 1]``, invertible. Stored as float64.
    unit : str
        The world unit: ``"mm"`` (volumes) or ``"um"`` (histology), say.

    Attributes
    ----------
    ndim : int
        2 or 3.
    spacing : ndarray (ndim,)
        Length of one voxel step along x, y[, z] (column norms of the linear part).
    origin : ndarray (ndim,)
        World position of voxel ``(0, 0[, 0])``.
    direction : ndarray (ndim, ndim)
        Unit columns: the world direction of each voxel axis.
    """

    affine: np.ndarray
    unit: str = "mm"

    def __post_init__(self):
        a = np.array(self.affine, dtype=np.float64)
        if a.shape not in ((3, 3), (4, 4)):
            raise ValueError(f"a geometry affine must be 3x3 (2-D) or 4x4 (3-D), got {a.shape}")
        n = a.shape[0] - 1
        if not np.isfinite(a).all():
            raise ValueError("a geometry affine must be finite")
        if not np.allclose(a[n], np.eye(n + 1)[n], atol=1e-12):
            raise ValueError(f"a geometry affine's last row must be {[0] * n + [1]}, "
                             f"got {a[n].tolist()}")
        linear = a[:n, :n]
        if abs(np.linalg.det(linear)) <= 1e-12 * max(np.abs(linear).max(), 1e-300) ** n:
            raise ValueError("a geometry affine must be invertible")
        a.setflags(write=False)
        object.__setattr__(self, "affine", a)

    # ------------------------------------------------------------------ constructors

    @classmethod
    def from_nibabel(cls, image: Any) -> Geometry:
        """The geometry of a nibabel image (its ``affine``, RAS+ mm).

        The array that goes with it is ``data.T`` for a 3-D ``data = image.get_fdata()``
        (numpy ``(D, H, W)`` = nibabel ``(k, j, i)``), so that ``(x, y, z) = (i, j, k)``.
        """
        return cls(np.asarray(image.affine, dtype=np.float64)[:4, :4], "mm")

    @classmethod
    def from_spacing(cls, spacing: Any, origin: Any = None, direction: Any = None,
                     unit: str = "mm") -> Geometry:
        """A geometry from its parts, already in mibench's RAS+ frame.

        Parameters
        ----------
        spacing : array_like (ndim,)
            Voxel size along x, y[, z], in ``unit``; positive.
        origin : array_like (ndim,), optional
            World position of voxel 0; zeros by default.
        direction : array_like (ndim, ndim), optional
            Columns are the world directions of the voxel axes; identity by default.
        unit : str
        """
        spacing = np.asarray(spacing, dtype=np.float64).ravel()
        n = len(spacing)
        if n not in (2, 3) or not (spacing > 0).all():
            raise ValueError(f"spacing must be 2 or 3 positive numbers, got {spacing.tolist()}")
        origin = np.zeros(n) if origin is None else np.asarray(origin, np.float64).ravel()
        direction = np.eye(n) if direction is None else np.asarray(direction, np.float64)
        if origin.shape != (n,) or direction.size != n * n:
            raise ValueError(f"origin and direction must match a {n}-D spacing")
        affine = np.eye(n + 1)
        affine[:n, :n] = direction.reshape(n, n) @ np.diag(spacing)
        affine[:n, n] = origin
        return cls(affine, unit)

    @classmethod
    def from_itk(cls, spacing: Any, origin: Any, direction: Any, unit: str = "mm") -> Geometry:
        """A geometry from ITK's (LPS) spacing, origin and direction, converted to RAS+.

        Parameters
        ----------
        spacing, origin : array_like (ndim,)
            As ``GetSpacing()`` and ``GetOrigin()`` of a SimpleITK image.
        direction : array_like (ndim * ndim,) or (ndim, ndim)
            As ``GetDirection()``: the direction matrix, row-major.
        """
        lps = cls.from_spacing(spacing, origin, direction, unit)
        return cls(_FLIP[lps.ndim] @ lps.affine, unit)

    def to_itk(self) -> tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]]:
        """``(spacing, origin, direction)`` in ITK's LPS frame, as SimpleITK's setters take
        them (direction row-major, flattened)."""
        lps = _FLIP[self.ndim] @ self.affine
        n = self.ndim
        spacing = np.linalg.norm(lps[:n, :n], axis=0)
        return (tuple(spacing.tolist()), tuple(lps[:n, n].tolist()),
                tuple((lps[:n, :n] / spacing).ravel().tolist()))

    # ------------------------------------------------------------------ parts

    @property
    def ndim(self) -> int:
        return self.affine.shape[0] - 1

    @property
    def spacing(self) -> np.ndarray:
        n = self.ndim
        return np.linalg.norm(self.affine[:n, :n], axis=0)

    @property
    def origin(self) -> np.ndarray:
        return self.affine[: self.ndim, self.ndim].copy()

    @property
    def direction(self) -> np.ndarray:
        n = self.ndim
        return self.affine[:n, :n] / self.spacing

    def __repr__(self) -> str:
        return f"Geometry({self.affine.tolist()!r}, unit={self.unit!r})"

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Geometry) and self.unit == other.unit
                and self.affine.shape == other.affine.shape
                and bool(np.array_equal(self.affine, other.affine)))

    __hash__ = None  # mutable-looking contents; equality by value only

    # ------------------------------------------------------------------ points

    def voxel_to_world(self, points: Any) -> np.ndarray:
        """Map ``(K, ndim)`` voxel coordinates ``(x, y[, z])`` to world coordinates (RAS+)."""
        pts = _points(points, self.ndim, "voxel points")
        n = self.ndim
        return pts @ self.affine[:n, :n].T + self.affine[:n, n]

    def world_to_voxel(self, points: Any) -> np.ndarray:
        """Map ``(K, ndim)`` world coordinates (RAS+, in ``unit``) to voxel coordinates."""
        pts = _points(points, self.ndim, "world points")
        n = self.ndim
        return np.linalg.solve(self.affine[:n, :n], (pts - self.affine[:n, n]).T).T

    def diagonal(self, shape: tuple[int, ...]) -> float:
        """Length in ``unit`` of the diagonal of an image of numpy ``shape`` with this geometry.

        ``shape`` is ``(D, H, W[, C])`` or ``(H, W[, C])``; the diagonal is the world length of
        the vector ``(W, H[, D])`` voxels (the pixel-count diagonal ``sqrt(w^2 + h^2)`` of
        NAED, in physical units).
        """
        n = self.ndim
        size_xyz = np.asarray(shape[:n][::-1], dtype=np.float64)
        return float(np.linalg.norm(self.affine[:n, :n] @ size_xyz))

    # ------------------------------------------------------------------ records

    def to_dict(self) -> dict[str, Any]:
        return {"affine": self.affine.tolist(), "unit": self.unit}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Geometry:
        return cls(data["affine"], data.get("unit", "mm"))


def rotation_matrix(angles: Any) -> np.ndarray:
    """The rotation ``Rz(az) Ry(ay) Rx(ax)`` (3x3, float64) for ``angles = (ax, ay, az)``
    degrees about the x, y and z axes (of voxel or world coordinates alike), each
    right-handed."""
    ax, ay, az = (math.radians(float(a)) for a in angles)
    cx, sx, cy, sy, cz, sz = (math.cos(ax), math.sin(ax), math.cos(ay), math.sin(ay),
                              math.cos(az), math.sin(az))
    rx = np.array([[1.0, 0.0, 0.0], [0.0, cx, -sx], [0.0, sx, cx]])
    ry = np.array([[cy, 0.0, sy], [0.0, 1.0, 0.0], [-sy, 0.0, cy]])
    rz = np.array([[cz, -sz, 0.0], [sz, cz, 0.0], [0.0, 0.0, 1.0]])
    return rz @ ry @ rx


def _square(matrix: Any, ndim: int) -> np.ndarray:
    m = np.asarray(getattr(matrix, "matrix", matrix), dtype=np.float64)
    if m.shape != (ndim + 1, ndim + 1):
        raise ValueError(f"a {ndim}-D transform must be {ndim + 1}x{ndim + 1}, got {m.shape}")
    return m


def _same_ndim(fixed: Geometry, moving: Geometry) -> int:
    if fixed.ndim != moving.ndim:
        raise ValueError(f"fixed geometry is {fixed.ndim}-D, moving geometry {moving.ndim}-D")
    if fixed.unit != moving.unit:
        raise ValueError(f"fixed geometry is in {fixed.unit}, moving geometry in {moving.unit}")
    return fixed.ndim


def world_transform(matrix: Any, fixed: Geometry, moving: Geometry) -> np.ndarray:
    """The world (RAS+) form of a voxel transform: ``A_moving @ T @ inv(A_fixed)``.

    Parameters
    ----------
    matrix : array_like (ndim + 1, ndim + 1) or a ``MatrixTransform``
        ``T``, fixed voxel -> moving voxel.
    fixed, moving : Geometry
        Of the fixed and the moving image.

    Returns
    -------
    ndarray (ndim + 1, ndim + 1), float64
        Maps fixed-image world points to moving-image world points, in the geometries' unit.
    """
    n = _same_ndim(fixed, moving)
    return moving.affine @ _square(matrix, n) @ np.linalg.inv(fixed.affine)


def voxel_transform(matrix: Any, fixed: Geometry, moving: Geometry) -> np.ndarray:
    """The voxel form of a world transform (inverse of :func:`world_transform`):
    ``inv(A_moving) @ W @ A_fixed``, fixed voxel -> moving voxel."""
    n = _same_ndim(fixed, moving)
    return np.linalg.solve(moving.affine, _square(matrix, n) @ fixed.affine)


def flip_lps(matrix: Any) -> np.ndarray:
    """The same world transform in the other frame, RAS+ <-> LPS: ``F @ W @ F`` with ``F`` the
    flip of the first two axes (its own inverse, so this converts both ways).

    Parameters
    ----------
    matrix : array_like (3, 3) or (4, 4)
        A world transform, e.g. from :func:`world_transform` (fixed world -> moving world),
        which is the direction ITK's resampling and transform files use.

    Returns
    -------
    ndarray, float64, same shape
        For SimpleITK: ``AffineTransform`` with ``SetMatrix(out[:n, :n].ravel())`` and
        ``SetTranslation(out[:n, n])`` (centre at the origin).
    """
    m = np.asarray(matrix, dtype=np.float64)
    if m.shape not in ((3, 3), (4, 4)):
        raise ValueError(f"a world transform must be 3x3 or 4x4, got {m.shape}")
    flip = _FLIP[m.shape[0] - 1]
    return flip @ m @ flip
