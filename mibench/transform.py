"""The registration result: a transform from fixed-image pixels to moving-image pixels.

Convention (the README's *Conventions*): a point is ``(x, y)`` = (column, row) in pixels, ``(0, 0)``
the centre of the top-left pixel. A transform ``T`` maps *fixed* coordinates to *moving*
coordinates, ``p_moving ~ T @ [x, y, 1]``. Warping the moving image into the fixed frame samples the
moving image at ``T(p)`` for every fixed pixel ``p`` (pull-back); moving landmarks are brought into
the fixed frame with ``T^-1``.

Volumes (``CONTRACTS.md``, *Volumes (3-D) and physical space*) follow the same rules one
dimension up: a point is ``(x, y, z)`` = (index along W, along H, along D) of a ``(D, H, W)``
array, at voxel centres, and ``T`` is a 4x4 homogeneous matrix, ``p_moving ~ T @ [x, y, z, 1]``.
The world (millimetre) form of ``T`` is :func:`mibench.geometry.world_transform`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Transform(Protocol):
    """What every registration result provides, whether a matrix or a displacement field."""

    def fixed_to_moving(self, points: np.ndarray) -> np.ndarray:
        """Map ``(K, 2)`` fixed-image ``(x, y)`` pixel coordinates (``(K, 3)`` ``(x, y, z)``
        voxel coordinates for volumes) into the moving image."""

    def moving_to_fixed(self, points: np.ndarray) -> np.ndarray:
        """Map ``(K, 2)`` / ``(K, 3)`` moving-image coordinates into the fixed image."""

    def warp(self, moving: Any, fixed_shape: tuple[int, ...]) -> Any:
        """Resample the moving image onto the fixed image's ``(H, W)`` pixel grid (``(D, H,
        W)`` voxel grid for volumes)."""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable description, read back by :func:`transform_from_dict`."""


def _apply_homogeneous(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    n = matrix.shape[0] - 1
    pts = np.asarray(points, dtype=np.float64)
    if pts.size and pts.shape[-1] != n:
        # A (K, 2) array reshaped to (-1, 3) would be mapped silently as other points.
        raise ValueError(f"a {n}-D transform maps (K, {n}) points, got shape {pts.shape}")
    pts = pts.reshape(-1, n)
    homog = np.column_stack([pts, np.ones(len(pts))]) @ matrix.T
    with np.errstate(divide="ignore", invalid="ignore"):
        out = homog[:, :n] / homog[:, n:]
    # A point mapped to infinity (w = 0) has no image: mark it NaN rather than inf.
    out[~np.isfinite(out).all(axis=1)] = np.nan
    return out


class MatrixTransform:
    """An affine or perspective transform as a homogeneous matrix (fixed -> moving).

    Parameters
    ----------
    matrix : array_like, shape (3, 3) or (4, 4)
        Maps fixed-image pixel coordinates ``[x, y, 1]`` (voxel coordinates ``[x, y, z, 1]``
        for a 4x4 matrix) to moving-image coordinates, up to the homogeneous scale. Stored as
        float64.
    """

    def __init__(self, matrix: Any):
        m = np.asarray(matrix, dtype=np.float64)
        if m.shape not in ((3, 3), (4, 4)):
            raise ValueError(f"a transform matrix must be 3x3 (2-D) or 4x4 (3-D), got shape "
                             f"{m.shape}")
        self.matrix = m

    @classmethod
    def identity(cls, ndim: int = 2) -> MatrixTransform:
        """The identity in ``ndim`` = 2 (3x3) or 3 (4x4) dimensions."""
        return cls(np.eye(ndim + 1))

    @property
    def ndim(self) -> int:
        """2 for a 3x3 matrix (images), 3 for a 4x4 one (volumes)."""
        return self.matrix.shape[0] - 1

    def __repr__(self) -> str:
        return f"MatrixTransform({self.matrix.tolist()!r})"

    @property
    def is_valid(self) -> bool:
        """Finite and invertible (a singular matrix cannot map moving points back).

        Invertibility is judged scale-free: the matrix is first conjugated with a scaling of the
        coordinates that brings its translation to at most 1 (the same map in other units; the
        determinant is unchanged), then divided by its largest entry. Without the first step a
        plain translation of 10^4 px looked singular, and a method that diverged that far was
        scored with the initial error, better than one that diverged less.
        """
        m = self.matrix
        if not np.isfinite(m).all():
            return False
        n = self.ndim
        c = max(1.0, float(np.abs(m[:n, n]).max()))
        units = np.diag([c] * n + [1.0])
        m = np.diag([1 / c] * n + [1.0]) @ m @ units
        scale = np.abs(m).max()
        return scale > 0 and abs(np.linalg.det(m / scale)) > 1e-12

    @property
    def inverse_matrix(self) -> np.ndarray:
        return np.linalg.inv(self.matrix)

    def fixed_to_moving(self, points: np.ndarray) -> np.ndarray:
        return _apply_homogeneous(self.matrix, points)

    def moving_to_fixed(self, points: np.ndarray) -> np.ndarray:
        return _apply_homogeneous(self.inverse_matrix, points)

    def sampling_grid(self, fixed_shape: tuple[int, ...], moving_shape: tuple[int, ...],
                      device=None):
        """The ``grid_sample`` grid (align_corners=True) for this transform.

        Parameters
        ----------
        fixed_shape, moving_shape : (H, W) or (D, H, W)
            Spatial shapes of the output grid and of the image sampled; as many axes as the
            transform has dimensions.

        Returns
        -------
        Tensor ``(1, H, W, 2)`` or ``(1, D, H, W, 3)``, float32
            The last axis is ``(x, y[, z])`` scaled to [-1, 1] over the moving image's voxel
            centres. Fixed pixels that map behind the camera (perspective, w <= 0) get a value
            outside [-1, 1] so that they read the padding value.
        """
        import torch

        n = self.ndim
        if len(fixed_shape) != n or len(moving_shape) != n:
            raise ValueError(f"a {n}-D transform samples {n}-D grids, got fixed "
                             f"{tuple(fixed_shape)} and moving {tuple(moving_shape)}")
        # Each output coordinate is a sum of one broadcast 1-D term per axis: no meshgrid and
        # no (N, n+1) product, which took most of a volume's warp time.
        coords = []
        for axis, size in enumerate(fixed_shape[::-1]):  # x, y[, z]
            shape = [1] * n
            shape[n - 1 - axis] = size
            coords.append(torch.arange(size, dtype=torch.float64, device=device).view(shape))

        def row(i):
            out = coords[0] * float(self.matrix[i, 0]) + float(self.matrix[i, n])
            for j in range(1, n):
                out = out + coords[j] * float(self.matrix[i, j])
            return out.expand(*fixed_shape)

        w = row(n)
        behind = w <= 0
        w = torch.where(behind, torch.ones_like(w), w)
        sizes = moving_shape[::-1]  # (W, H[, D]), matching (x, y[, z])
        grid = torch.stack([2 * row(i) / w / max(sizes[i] - 1, 1) - 1 for i in range(n)],
                           dim=-1)
        grid = torch.where(behind[..., None], torch.full_like(grid, -2.0), grid)
        return grid[None].float()

    def warp(self, moving: Any, fixed_shape: tuple[int, ...], *, mode: str = "bilinear",
             padding_value: float = 0.0) -> Any:
        """Pull the moving image back into the fixed frame.

        Parameters
        ----------
        moving : Tensor or ndarray
            2-D: Tensor ``(B, C, Hm, Wm)`` or ndarray ``(Hm, Wm)`` / ``(Hm, Wm, C)``.
            3-D (4x4 matrix): Tensor ``(B, C, Dm, Hm, Wm)`` or ndarray ``(Dm, Hm, Wm)`` /
            ``(Dm, Hm, Wm, C)``. Tensors stay on their device; arrays give an array back in the
            same layout.
        fixed_shape : (H, W) or (D, H, W)
            The output grid.
        mode : {"bilinear", "nearest"}
            ``"bilinear"`` is trilinear on volumes (``grid_sample``'s name for both).
        padding_value : float
            Value of fixed pixels that map outside the moving image.
        """
        return warp_with(self, moving, fixed_shape, mode=mode, padding_value=padding_value)

    def to_dict(self) -> dict[str, Any]:
        return {"type": "matrix", "matrix": self.matrix.tolist()}


def warp_with(transform: Any, moving: Any, fixed_shape: tuple[int, ...], *,
              mode: str = "bilinear", padding_value: float = 0.0) -> Any:
    """Pull-back warp of any transform that provides ``ndim`` and ``sampling_grid`` (a matrix
    or a B-spline; arguments as :meth:`MatrixTransform.warp`)."""
    import torch
    import torch.nn.functional as F

    n = transform.ndim
    as_numpy = isinstance(moving, np.ndarray)
    if as_numpy:
        if moving.ndim not in (n, n + 1):
            raise ValueError(f"a {n}-D transform warps arrays of {n} or {n + 1} axes, got "
                             f"shape {moving.shape}")
        arr = moving.astype(np.float32, copy=False)
        tensor = torch.from_numpy(np.ascontiguousarray(arr))
        # Channels last in numpy, first in torch.
        tensor = tensor[None, None] if arr.ndim == n else tensor.movedim(-1, 0)[None]
    else:
        tensor = moving
        if tensor.dim() != n + 2:
            raise ValueError(f"a {n}-D transform warps tensors of {n + 2} axes (B, C, ...), "
                             f"got shape {tuple(tensor.shape)}")
    b = tensor.shape[0]
    grid = transform.sampling_grid(tuple(fixed_shape), tuple(tensor.shape[2:]),
                                   tensor.device)
    grid = grid.to(tensor.dtype).expand(b, *([-1] * (n + 1)))
    if padding_value == 0.0:
        out = F.grid_sample(tensor, grid, mode=mode, padding_mode="zeros", align_corners=True)
    else:
        # Sample a ones image alongside to know which pixels fell outside.
        ones = torch.ones_like(tensor[:, :1])
        both = F.grid_sample(torch.cat([tensor, ones], 1), grid, mode=mode,
                             padding_mode="zeros", align_corners=True)
        out, inside = both[:, :-1], both[:, -1:]
        out = out + (1 - inside) * padding_value
    if as_numpy:
        res = out[0].movedim(0, -1).numpy()
        return res[..., 0] if moving.ndim == n else res
    return out


#: Readers of the non-matrix kinds by their ``type``: ``"module:Class.method"`` called with
#: ``(data, folder)``, imported when first needed, so that this core module does not depend on
#: the kinds built on it (as dataset specs name their factories).
TRANSFORM_READERS = {"bspline": "mibench.bspline:BSplineTransform.from_dict"}


def transform_from_dict(data: dict[str, Any] | None, folder: Any = None) -> Transform | None:
    """Rebuild a transform stored by :meth:`Transform.to_dict` (None stays None).

    ``folder`` is where files a record references lie (a B-spline's coefficients, stored beside
    its record: :meth:`mibench.bspline.BSplineTransform.to_dict`); default the working folder.
    """
    if data is None:
        return None
    kind = data.get("type")
    if kind == "matrix":
        return MatrixTransform(data["matrix"])
    if kind in TRANSFORM_READERS:
        import importlib

        module, _, attr = TRANSFORM_READERS[kind].partition(":")
        reader: Any = importlib.import_module(module)
        for part in attr.split("."):
            reader = getattr(reader, part)
        return reader(data, folder)
    raise ValueError(f"unknown transform type {kind!r}")


@dataclass
class RegistrationOutput:
    """What a method may return instead of a bare transform: the transform plus diagnostics.

    ``info`` must be JSON-serialisable (numbers, strings, lists); it is stored in the record
    (e.g. the final loss, the number of iterations run).
    """

    transform: Transform
    info: dict[str, Any] = field(default_factory=dict)
