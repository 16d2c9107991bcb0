"""The registration result: a transform from fixed-image pixels to moving-image pixels.

Convention (the README's *Conventions*): a point is ``(x, y)`` = (column, row) in pixels, ``(0, 0)``
the centre of the top-left pixel. A transform ``T`` maps *fixed* coordinates to *moving*
coordinates, ``p_moving ~ T @ [x, y, 1]``. Warping the moving image into the fixed frame samples the
moving image at ``T(p)`` for every fixed pixel ``p`` (pull-back); moving landmarks are brought into
the fixed frame with ``T^-1``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Transform(Protocol):
    """What every registration result provides, whether a matrix or a displacement field."""

    def fixed_to_moving(self, points: np.ndarray) -> np.ndarray:
        """Map ``(K, 2)`` fixed-image ``(x, y)`` pixel coordinates into the moving image."""

    def moving_to_fixed(self, points: np.ndarray) -> np.ndarray:
        """Map ``(K, 2)`` moving-image ``(x, y)`` pixel coordinates into the fixed image."""

    def warp(self, moving: Any, fixed_shape: tuple[int, int]) -> Any:
        """Resample the moving image onto the fixed image's ``(H, W)`` pixel grid."""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable description, read back by :func:`transform_from_dict`."""


def _apply_homogeneous(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    homog = np.column_stack([pts, np.ones(len(pts))]) @ matrix.T
    with np.errstate(divide="ignore", invalid="ignore"):
        out = homog[:, :2] / homog[:, 2:3]
    # A point mapped to infinity (w = 0) has no image: mark it NaN rather than inf.
    out[~np.isfinite(out).all(axis=1)] = np.nan
    return out


class MatrixTransform:
    """An affine or perspective transform given as a 3x3 homogeneous matrix (fixed -> moving).

    Parameters
    ----------
    matrix : array_like, shape (3, 3)
        Maps fixed-image pixel coordinates ``[x, y, 1]`` to moving-image pixel coordinates
        (up to the homogeneous scale). Stored as float64.
    """

    def __init__(self, matrix: Any):
        m = np.asarray(matrix, dtype=np.float64)
        if m.shape != (3, 3):
            raise ValueError(f"a transform matrix must be 3x3, got shape {m.shape}")
        self.matrix = m

    @classmethod
    def identity(cls) -> MatrixTransform:
        return cls(np.eye(3))

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
        c = max(1.0, float(np.abs(m[:2, 2]).max()))
        units = np.diag([c, c, 1.0])
        m = np.diag([1 / c, 1 / c, 1.0]) @ m @ units
        scale = np.abs(m).max()
        return scale > 0 and abs(np.linalg.det(m / scale)) > 1e-12

    @property
    def inverse_matrix(self) -> np.ndarray:
        return np.linalg.inv(self.matrix)

    def fixed_to_moving(self, points: np.ndarray) -> np.ndarray:
        return _apply_homogeneous(self.matrix, points)

    def moving_to_fixed(self, points: np.ndarray) -> np.ndarray:
        return _apply_homogeneous(self.inverse_matrix, points)

    def sampling_grid(self, fixed_shape: tuple[int, int], moving_shape: tuple[int, int],
                      device=None):
        """The ``grid_sample`` grid ``(1, H, W, 2)`` (align_corners=True) for this transform.

        Fixed pixels that map behind the camera (perspective, w <= 0) get a grid value outside
        [-1, 1] so that they read the padding value.
        """
        import torch

        h, w = fixed_shape
        hm, wm = moving_shape
        mat = torch.as_tensor(self.matrix, dtype=torch.float64, device=device)
        ys, xs = torch.meshgrid(
            torch.arange(h, dtype=torch.float64, device=device),
            torch.arange(w, dtype=torch.float64, device=device),
            indexing="ij",
        )
        pts = torch.stack([xs, ys, torch.ones_like(xs)], dim=-1) @ mat.T
        z = pts[..., 2]
        behind = z <= 0
        z = torch.where(behind, torch.ones_like(z), z)
        mx, my = pts[..., 0] / z, pts[..., 1] / z
        gx = 2 * mx / max(wm - 1, 1) - 1
        gy = 2 * my / max(hm - 1, 1) - 1
        grid = torch.stack([gx, gy], dim=-1)
        grid = torch.where(behind[..., None], torch.full_like(grid, -2.0), grid)
        return grid[None].float()

    def warp(self, moving: Any, fixed_shape: tuple[int, int], *, mode: str = "bilinear",
             padding_value: float = 0.0) -> Any:
        """Pull the moving image back into the fixed frame.

        Parameters
        ----------
        moving : Tensor ``(B, C, Hm, Wm)`` or ndarray ``(Hm, Wm)`` / ``(Hm, Wm, C)``
            Tensors stay on their device; arrays give an array back in the same layout.
        fixed_shape : (H, W)
            The output grid.
        mode : {"bilinear", "nearest"}
        padding_value : float
            Value of fixed pixels that map outside the moving image.
        """
        import torch
        import torch.nn.functional as F

        as_numpy = isinstance(moving, np.ndarray)
        if as_numpy:
            arr = moving.astype(np.float32, copy=False)
            tensor = torch.from_numpy(np.ascontiguousarray(arr))
            tensor = tensor[None, None] if arr.ndim == 2 else tensor.permute(2, 0, 1)[None]
        else:
            tensor = moving
        b = tensor.shape[0]
        grid = self.sampling_grid(tuple(fixed_shape), tuple(tensor.shape[-2:]), tensor.device)
        grid = grid.to(tensor.dtype).expand(b, -1, -1, -1)
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
            res = out[0].permute(1, 2, 0).numpy()
            return res[..., 0] if moving.ndim == 2 else res
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"type": "matrix", "matrix": self.matrix.tolist()}


def transform_from_dict(data: dict[str, Any] | None) -> Transform | None:
    """Rebuild a transform stored by :meth:`Transform.to_dict` (None stays None)."""
    if data is None:
        return None
    if data.get("type") == "matrix":
        return MatrixTransform(data["matrix"])
    raise ValueError(f"unknown transform type {data.get('type')!r}")


@dataclass
class RegistrationOutput:
    """What a method may return instead of a bare transform: the transform plus diagnostics.

    ``info`` must be JSON-serialisable (numbers, strings, lists); it is stored in the record
    (e.g. the final loss, the number of iterations run).
    """

    transform: Transform
    info: dict[str, Any] = field(default_factory=dict)
