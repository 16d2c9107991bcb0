"""DRMIME's transform model: a matrix exponential of the sl(3) basis, in normalised coordinates.

A transform is ``H = expm(sum_i v_i B_i)`` with the 3x3 basis (``E_rc`` = a single 1 at row r,
column c, 0-based)::

    B1 = E_02 (x-translation)   B2 = E_12 (y-translation)
    B3 = E_01, B4 = E_10 (shears)
    B5 = diag(1, -1, 0)          B6 = diag(0, -1, 1)
    perspective adds B7 = E_20, B8 = E_21

``v = 0`` is the identity. ``H`` maps *fixed* normalised coordinates to *moving* normalised
coordinates, ``[u', v', w'] = H @ [u, v, 1]``, where an image of size ``(H, W)`` has
``u = 2x/(W-1) - 1`` and ``v = 2y/(H-1) - 1`` (``grid_sample``'s align_corners=True convention),
so the same ``H`` applies unchanged at every pyramid level. :func:`normalised_to_pixel` and
:func:`pixel_to_normalised` convert to and from the pixel matrices of
:class:`mibench.transform.MatrixTransform` (fixed px -> moving px).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mibench.errors import check_choice
from mibench.methods.options import TRANSFORM_PARAMS, TRANSFORMS


def _basis_numpy() -> np.ndarray:
    b = np.zeros((8, 3, 3), dtype=np.float64)
    b[0, 0, 2] = 1.0
    b[1, 1, 2] = 1.0
    b[2, 0, 1] = 1.0
    b[3, 1, 0] = 1.0
    b[4] = np.diag([1.0, -1.0, 0.0])
    b[5] = np.diag([0.0, -1.0, 1.0])
    b[6, 2, 0] = 1.0
    b[7, 2, 1] = 1.0
    return b


_BASIS = _basis_numpy()


def n_params(kind: str) -> int:
    """6 for ``"affine"``, 8 for ``"perspective"``."""
    check_choice("transform", kind, TRANSFORMS)
    return TRANSFORM_PARAMS[kind]


def basis_matrices(kind: str = "affine", *, dtype: torch.dtype = torch.float32,
                   device: Any = None) -> torch.Tensor:
    """The basis ``(6 or 8, 3, 3)`` as a tensor."""
    return torch.as_tensor(_BASIS[: n_params(kind)], dtype=dtype, device=device)


def lie_algebra_matrix(v: torch.Tensor, kind: str = "affine") -> torch.Tensor:
    """``sum_i v_i B_i``: ``v`` of shape ``(..., n)`` -> ``(..., 3, 3)``."""
    n = n_params(kind)
    if v.shape[-1] != n:
        raise ValueError(f"a {kind} transform has {n} parameters, got shape {tuple(v.shape)}")
    basis = basis_matrices(kind, dtype=v.dtype, device=v.device)
    return torch.einsum("...i,ijk->...jk", v, basis)


def matrix_exp_transform(v: torch.Tensor, kind: str = "affine") -> torch.Tensor:
    """``H = torch.linalg.matrix_exp(sum_i v_i B_i)`` (differentiable), ``(..., 3, 3)``.

    ``kind`` is ``"affine"`` (``v`` has 6 entries) or ``"perspective"`` (8). Note that the
    affine group here is affine only up to the homogeneous scale ``H[2, 2] = exp(v6)``, which
    the projective division removes.
    """
    return torch.linalg.matrix_exp(lie_algebra_matrix(v, kind))


def taylor_exp_transform(v: torch.Tensor, kind: str = "affine", terms: int = 10) -> torch.Tensor:
    """The truncated series ``sum_{k<terms} C^k / k!`` that the DRMIME code uses instead of
    :func:`matrix_exp_transform` (``terms=10``: the identity plus 9 powers)."""
    c = lie_algebra_matrix(v, kind)
    eye = torch.eye(3, dtype=c.dtype, device=c.device).expand_as(c)
    out = eye
    term = eye
    for k in range(1, terms):
        term = term @ c / k
        out = out + term
    return out


def pixel_to_normalised_matrix(shape: tuple[int, int]) -> np.ndarray:
    """``N`` mapping pixel ``(x, y, 1)`` of an ``(H, W)`` image to normalised ``(u, v, 1)``."""
    h, w = int(shape[0]), int(shape[1])
    return np.array(
        [[2.0 / max(w - 1, 1), 0.0, -1.0], [0.0, 2.0 / max(h - 1, 1), -1.0], [0.0, 0.0, 1.0]]
    )


def _as_numpy_matrix(m: Any) -> np.ndarray:
    if isinstance(m, torch.Tensor):
        m = m.detach().to("cpu", torch.float64).numpy()
    m = np.asarray(m, dtype=np.float64)
    if m.shape != (3, 3):
        raise ValueError(f"expected a 3x3 matrix, got shape {m.shape}")
    return m


def normalised_to_pixel(h_norm: Any, fixed_shape: tuple[int, int],
                        moving_shape: tuple[int, int]) -> np.ndarray:
    """Pixel matrix (fixed px -> moving px, float64) of a normalised-coordinate matrix.

    ``P = N_m^-1 @ H @ N_f``, each ``N`` built from its own image's ``(H, W)``. The result is
    scaled so that ``P[2, 2] = 1`` when that entry is not ~0.
    """
    h = _as_numpy_matrix(h_norm)
    n_fixed = pixel_to_normalised_matrix(fixed_shape)
    n_moving = pixel_to_normalised_matrix(moving_shape)
    p = np.linalg.inv(n_moving) @ h @ n_fixed
    if abs(p[2, 2]) > 1e-12:
        p = p / p[2, 2]
    return p


def pixel_to_normalised(pixel: Any, fixed_shape: tuple[int, int],
                        moving_shape: tuple[int, int]) -> np.ndarray:
    """Inverse of :func:`normalised_to_pixel`: ``H = N_m @ P @ N_f^-1`` (float64)."""
    p = _as_numpy_matrix(pixel)
    n_fixed = pixel_to_normalised_matrix(fixed_shape)
    n_moving = pixel_to_normalised_matrix(moving_shape)
    return n_moving @ p @ np.linalg.inv(n_fixed)


def normalised_grid(shape: tuple[int, int], *, dtype: torch.dtype = torch.float32,
                    device: Any = None) -> torch.Tensor:
    """Homogeneous normalised coordinates ``(H, W, 3)`` = ``(u, v, 1)`` of an image's pixels."""
    h, w = int(shape[0]), int(shape[1])
    ys = torch.linspace(-1.0, 1.0, h, dtype=dtype, device=device) if h > 1 else torch.full(
        (1,), -1.0, dtype=dtype, device=device)
    xs = torch.linspace(-1.0, 1.0, w, dtype=dtype, device=device) if w > 1 else torch.full(
        (1,), -1.0, dtype=dtype, device=device)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx, gy, torch.ones_like(gx)], dim=-1)


def sampling_grid(h_norm: torch.Tensor, out_shape: tuple[int, int]) -> torch.Tensor:
    """The ``grid_sample`` grid ``(B, h, w, 2)`` of a matrix ``(3, 3)`` or ``(B, 3, 3)``.

    The output grid's normalised coordinates (:func:`normalised_grid`) are mapped by ``H``
    (projective division). Points that map behind the camera (w' <= 0, perspective only) are
    sent outside [-1, 1] so that they read the padding.
    """
    hmat = h_norm if h_norm.ndim == 3 else h_norm[None]
    grid = normalised_grid(out_shape, dtype=hmat.dtype, device=hmat.device)
    pts = torch.einsum("hwj,bij->bhwi", grid, hmat)
    z = pts[..., 2:3]
    behind = z <= 1e-8
    z = torch.where(behind, torch.ones_like(z), z)
    xy = pts[..., :2] / z
    return torch.where(behind, torch.full_like(xy, -2.0), xy)


def warp_normalised(moving: torch.Tensor, h_norm: torch.Tensor, out_shape: tuple[int, int], *,
                    mode: str = "bilinear", padding_mode: str = "zeros",
                    align_corners: bool = True) -> torch.Tensor:
    """Pull ``moving`` ``(B, C, Hm, Wm)`` back onto an ``out_shape`` grid with ``H``.

    Output pixel at normalised ``p`` samples ``moving`` at normalised ``H p``. Differentiable with
    respect to both ``moving`` and ``H``; ``H`` is ``(3, 3)`` (shared) or ``(B, 3, 3)``.
    ``align_corners`` is passed to ``grid_sample`` only (the grid itself is always the
    align_corners=True one); ``False`` reproduces the released DRMIME code, whose grid and
    sampling conventions disagree by up to half a pixel and a ``W/(W-1)`` scale.
    """
    grid = sampling_grid(h_norm.to(moving.dtype), out_shape)
    if grid.shape[0] != moving.shape[0]:
        grid = grid.expand(moving.shape[0], -1, -1, -1)
    return F.grid_sample(moving, grid, mode=mode, padding_mode=padding_mode,
                         align_corners=align_corners)
