"""Batched evaluation of a similarity measure at many poses around a gold standard.

Warps follow :meth:`mibench.transform.MatrixTransform.warp` (``grid_sample`` with
align_corners=True, zero padding, the grid computed in float64 then cast to the image's dtype),
with ``B`` poses per call, so that a GPU evaluates a whole batch of the protocol's points at once.
The measure sees only the overlap: fixed pixels that map outside the moving image are masked out.

Imports numpy, torch and :mod:`mibench.assessment.parameter_space` only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from mibench.assessment.parameter_space import ParameterSpace, axis_points

#: A fixed pixel counts as inside the moving image when it maps within this many pixels of its
#: border; absorbs the float64 rounding of poses that put a border pixel exactly on the border.
INSIDE_TOL_PX = 1e-6

#: ``f(fixed (B, C, H, W), moving (B, C, H, W), mask=(B, 1, H, W) bool) -> Tensor (B,)``.
Measure = Callable[..., torch.Tensor]


def sampling_grids(matrices: torch.Tensor, fixed_shape: tuple[int, int],
                   moving_shape: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """``grid_sample`` grids (align_corners=True) and inside masks of pixel matrices.

    Parameters
    ----------
    matrices : Tensor, shape (B, 3, 3)
        Fixed px -> moving px; computed in their own dtype (float64 recommended, as
        :meth:`MatrixTransform.sampling_grid` does).
    fixed_shape, moving_shape : (H, W)

    Returns
    -------
    grid : Tensor, shape (B, H, W, 2)
        Normalised moving coordinates; pixels that map behind the camera (w <= 0) get -2.
    inside : Tensor, shape (B, 1, H, W), bool
        True where the fixed pixel maps inside the moving image (within
        :data:`INSIDE_TOL_PX` of ``[0, Wm - 1] x [0, Hm - 1]``).
    """
    h, w = fixed_shape
    hm, wm = moving_shape
    dtype, device = matrices.dtype, matrices.device
    ys, xs = torch.meshgrid(torch.arange(h, dtype=dtype, device=device),
                            torch.arange(w, dtype=dtype, device=device), indexing="ij")
    homog = torch.stack([xs, ys, torch.ones_like(xs)], dim=-1)
    pts = torch.einsum("hwj,bij->bhwi", homog, matrices)
    z = pts[..., 2]
    behind = z <= 0
    z = torch.where(behind, torch.ones_like(z), z)
    mx, my = pts[..., 0] / z, pts[..., 1] / z
    inside = (~behind & (mx >= -INSIDE_TOL_PX) & (mx <= wm - 1 + INSIDE_TOL_PX)
              & (my >= -INSIDE_TOL_PX) & (my <= hm - 1 + INSIDE_TOL_PX))
    grid = torch.stack([2 * mx / max(wm - 1, 1) - 1, 2 * my / max(hm - 1, 1) - 1], dim=-1)
    grid = torch.where(behind[..., None], torch.full_like(grid, -2.0), grid)
    return grid, inside[:, None]


def warp_batch(moving: torch.Tensor, matrices, fixed_shape: tuple[int, int], *,
               mode: str = "bilinear") -> tuple[torch.Tensor, torch.Tensor]:
    """Pull one moving image back into the fixed frame under ``B`` poses at once.

    The conventions of :meth:`mibench.transform.MatrixTransform.warp` (align_corners=True,
    zero padding, grid computed in float64 then cast to the image's dtype), batched.

    Parameters
    ----------
    moving : Tensor, shape (1, C, Hm, Wm)
    matrices : array_like or Tensor, shape (B, 3, 3)
        Fixed px -> moving px.
    fixed_shape : (H, W)
    mode : {"bilinear", "nearest"}

    Returns
    -------
    warped : Tensor, shape (B, C, H, W), dtype and device of ``moving``
    inside : Tensor, shape (B, 1, H, W), bool
        The overlap: fixed pixels that map inside the moving image.
    """
    if moving.ndim != 4 or moving.shape[0] != 1:
        raise ValueError(f"moving must be a (1, C, H, W) tensor, got {tuple(moving.shape)}")
    if not isinstance(matrices, torch.Tensor):
        matrices = np.asarray(matrices, dtype=np.float64)
    mats = torch.as_tensor(matrices, dtype=torch.float64, device=moving.device)
    if mats.ndim != 3 or mats.shape[1:] != (3, 3):
        raise ValueError(f"matrices must have shape (B, 3, 3), got {tuple(mats.shape)}")
    grid, inside = sampling_grids(mats, tuple(fixed_shape), tuple(moving.shape[-2:]))
    grid = grid.to(moving.dtype)
    warped = F.grid_sample(moving.expand(mats.shape[0], -1, -1, -1), grid, mode=mode,
                           padding_mode="zeros", align_corners=True)
    return warped, inside


def evaluate(measure: Measure, fixed: torch.Tensor, moving: torch.Tensor, gold, space:
             ParameterSpace, points, *, fixed_mask: torch.Tensor | None = None,
             batch_size: int = 64, mode: str = "bilinear") -> np.ndarray:
    """The measure at every parameter point, many poses per call.

    For each batch of points the moving image is warped with ``G @ A(p)``
    (:meth:`ParameterSpace.transforms`, :func:`warp_batch`) and
    ``measure(fixed_batch, warped_batch, mask=mask)`` is called once, with ``fixed_batch`` the
    fixed image expanded to ``(B, C, H, W)`` and ``mask`` ``(B, 1, H, W)`` bool: the overlap
    (fixed pixels that map inside the moving image) and ``fixed_mask`` when given. Runs under
    ``torch.no_grad()`` on the fixed image's device.

    Parameters
    ----------
    measure : callable ``f(fixed, moving, mask=None) -> Tensor (B,)``
    fixed : Tensor, shape (1, C, H, W)
    moving : Tensor, shape (1, C, Hm, Wm)
        Moved to the fixed image's device and dtype.
    gold : array_like, shape (3, 3)
        Gold-standard fixed px -> moving px.
    space : ParameterSpace
    points : array_like, shape (..., dim)
        Normalised parameter vectors (e.g. :attr:`Lines.points`, :func:`axis_points`).
    fixed_mask : Tensor, shape (1, 1, H, W), bool, optional
    batch_size : int
        Poses per call. Peak memory is about ``batch_size * H * W * (C + 16) * 4`` bytes
        (the warped batch plus the float64 sampling grid and its intermediates).
    mode : {"bilinear", "nearest"}

    Returns
    -------
    ndarray, shape ``points.shape[:-1]``, float64
    """
    if fixed.ndim != 4 or fixed.shape[0] != 1:
        raise ValueError(f"fixed must be a (1, C, H, W) tensor, got {tuple(fixed.shape)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    pts = np.asarray(points, dtype=np.float64)
    mats = space.transforms(pts, gold).reshape(-1, 3, 3)
    moving = moving.to(device=fixed.device, dtype=fixed.dtype)
    if fixed_mask is not None:
        fixed_mask = fixed_mask.to(device=fixed.device, dtype=torch.bool)
    shape = tuple(fixed.shape[-2:])
    out = np.empty(len(mats))
    with torch.no_grad():
        for start in range(0, len(mats), batch_size):
            chunk = mats[start:start + batch_size]
            warped, mask = warp_batch(moving, chunk, shape, mode=mode)
            if fixed_mask is not None:
                mask = mask & fixed_mask
            values = measure(fixed.expand(len(chunk), -1, -1, -1), warped, mask=mask)
            values = torch.as_tensor(values).reshape(-1)
            if values.numel() != len(chunk):
                raise ValueError(f"the measure returned {values.numel()} values for a batch of "
                                 f"{len(chunk)}")
            out[start:start + len(chunk)] = values.detach().to("cpu", torch.float64).numpy()
    return out.reshape(pts.shape[:-1])


@dataclass(frozen=True)
class Profiles:
    """1-D profiles of a measure, one per parameter.

    Attributes
    ----------
    names, units : tuple of str
        The parameters (:attr:`ParameterSpace.names`, :attr:`ParameterSpace.units`).
    offsets : ndarray, shape (dim, P)
        Physical offset of the varying parameter from the gold standard, in its unit.
    values : ndarray, shape (dim, P)
        The measure there.
    """

    names: tuple[str, ...]
    units: tuple[str, ...]
    offsets: np.ndarray
    values: np.ndarray


def profiles(measure: Measure, fixed: torch.Tensor, moving: torch.Tensor, gold,
             space: ParameterSpace, *, extent: float | Sequence[float], points_per_side: int,
             fixed_mask: torch.Tensor | None = None, batch_size: int = 64,
             mode: str = "bilinear") -> Profiles:
    """The measure along each parameter with the others at the gold standard.

    ``extent`` is the half-width in normalised px (one value, or one per parameter); each
    profile has ``2 * points_per_side + 1`` points. See :func:`evaluate` for the rest.
    """
    offsets, points = axis_points(space.dim, points_per_side, extent)
    values = evaluate(measure, fixed, moving, gold, space, points, fixed_mask=fixed_mask,
                      batch_size=batch_size, mode=mode)
    return Profiles(space.names, space.units, offsets * space.scales[:, None], values)


