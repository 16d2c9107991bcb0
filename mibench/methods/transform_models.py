"""The engines' transform model: a matrix exponential of a Lie-algebra basis, in normalised
coordinates (DRMIME's model, extended to rigid transforms and to volumes).

A transform is ``expm(sum_i v_i B_i)``; ``v = 0`` is the identity. Bases (``E_rc`` = a single 1
at row r, column c, 0-based).

2-D, 3x3 (the order of ``v``)::

    affine (6):       B1 = E_02 (x-translation)   B2 = E_12 (y-translation)
                      B3 = E_01, B4 = E_10 (shears)
                      B5 = diag(1, -1, 0)          B6 = diag(0, -1, 1)
    perspective (8):  the affine six, then B7 = E_20, B8 = E_21
    rigid (3):        E_10 - E_01 (rotation), E_02, E_12 (translations)

3-D, 4x4 (perspective is 2-D only: a ValueError)::

    affine (12):      E_03, E_13, E_23 (x, y, z translations), then the nine E_rc, r, c < 3
                      (the linear part, row by row): the Lie algebra of the affine group, so
                      the last row stays [0, 0, 0, 1]
    rigid (6):        rotations about x (E_21 - E_12), y (E_02 - E_20), z (E_10 - E_01), then
                      E_03, E_13, E_23

Coordinates. ``H`` maps *fixed* grid-normalised coordinates to *moving* ones. An image of size
``(H, W)`` has ``u = 2x/(W-1) - 1``, ``v = 2y/(H-1) - 1``; a volume of size ``(D, H, W)`` also
``w = 2z/(D-1) - 1`` (``grid_sample``'s align_corners=True convention, ``(x, y, z)`` = index
along W, H, D), so the same ``H`` applies unchanged at every pyramid level.
:func:`normalised_to_pixel` and :func:`pixel_to_normalised` convert to and from the voxel
matrices of :class:`mibench.transform.MatrixTransform` (fixed voxel -> moving voxel).

Frames (:class:`TransformModel`). 2-D ``affine`` and ``perspective`` act in the fixed grid frame,
``H = h0 @ expm(V)`` (as before: bit-identical). ``rigid`` (2-D and 3-D) and every 3-D transform
act in a centred, isotropically scaled *physical* frame of the fixed image:
``H = h0 @ F^-1 @ expm(V) @ F`` with ``F = diag(a_x, a_y[, a_z], 1)``, ``a_i = s_i (n_i - 1) /
(2 L)``, ``s_i`` the fixed spacing along axis i (1 without a geometry), ``n_i`` the size along it
and ``L = max_i s_i (n_i - 1) / 2`` (half the largest physical extent). ``F`` maps grid-normalised
coordinates to millimetres from the centre of the fixed image, divided by ``L``: a rotation there
is a rotation in world millimetres (for a geometry whose direction is orthonormal) even with
anisotropic voxels, and one translation unit is ``L`` millimetres on every axis. ``h0`` is the
starting transform (normalised), e.g. the world identity of :mod:`mibench.methods.initial`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mibench.errors import check_choice
from mibench.methods.options import TRANSFORM_PARAMS, TRANSFORM_PARAMS_3D, TRANSFORMS


def _unit(n: int, r: int, c: int) -> np.ndarray:
    e = np.zeros((n, n))
    e[r, c] = 1.0
    return e


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


def _rigid_2d() -> np.ndarray:
    return np.stack([_unit(3, 1, 0) - _unit(3, 0, 1), _unit(3, 0, 2), _unit(3, 1, 2)])


def _affine_3d() -> np.ndarray:
    translations = [_unit(4, i, 3) for i in range(3)]
    linear = [_unit(4, r, c) for r in range(3) for c in range(3)]
    return np.stack(translations + linear)


def _rigid_3d() -> np.ndarray:
    rotations = [_unit(4, 2, 1) - _unit(4, 1, 2), _unit(4, 0, 2) - _unit(4, 2, 0),
                 _unit(4, 1, 0) - _unit(4, 0, 1)]
    return np.stack(rotations + [_unit(4, i, 3) for i in range(3)])


_BASIS = _basis_numpy()
_BASES = {
    (2, "affine"): _BASIS[:6], (2, "perspective"): _BASIS, (2, "rigid"): _rigid_2d(),
    (3, "affine"): _affine_3d(), (3, "rigid"): _rigid_3d(),
}


def _check(kind: str, ndim: int) -> None:
    check_choice("transform", kind, TRANSFORMS)
    if ndim not in (2, 3):
        raise ValueError(f"transforms are 2-D or 3-D, got ndim={ndim!r}")
    if ndim == 3 and kind not in TRANSFORM_PARAMS_3D:
        raise ValueError(f"the {kind!r} transform is 2-D only; volumes take "
                         f"{', '.join(TRANSFORM_PARAMS_3D)}")


def n_params(kind: str, ndim: int = 2) -> int:
    """Number of parameters: 2-D affine 6, perspective 8, rigid 3; 3-D affine 12, rigid 6.

    Raises
    ------
    ValueError
        For an unknown kind, or ``"perspective"`` in 3-D.
    """
    _check(kind, ndim)
    return (TRANSFORM_PARAMS if ndim == 2 else TRANSFORM_PARAMS_3D)[kind]


def basis_matrices(kind: str = "affine", *, ndim: int = 2, dtype: torch.dtype = torch.float32,
                   device: Any = None) -> torch.Tensor:
    """The basis ``(n, ndim + 1, ndim + 1)`` as a tensor (module docstring)."""
    _check(kind, ndim)
    return torch.as_tensor(_BASES[ndim, kind], dtype=dtype, device=device)


def lie_algebra_matrix(v: torch.Tensor, kind: str = "affine", ndim: int = 2) -> torch.Tensor:
    """``sum_i v_i B_i``: ``v`` of shape ``(..., n)`` -> ``(..., ndim + 1, ndim + 1)``."""
    n = n_params(kind, ndim)
    if v.shape[-1] != n:
        raise ValueError(f"a {ndim}-D {kind} transform has {n} parameters, got shape "
                         f"{tuple(v.shape)}")
    basis = basis_matrices(kind, ndim=ndim, dtype=v.dtype, device=v.device)
    return torch.einsum("...i,ijk->...jk", v, basis)


def matrix_exp_transform(v: torch.Tensor, kind: str = "affine", ndim: int = 2) -> torch.Tensor:
    """``torch.linalg.matrix_exp(sum_i v_i B_i)`` (differentiable), ``(..., ndim+1, ndim+1)``.

    In 2-D, ``kind`` is ``"affine"`` (6 entries), ``"perspective"`` (8) or ``"rigid"`` (3).
    Note that the 2-D affine group here is affine only up to the homogeneous scale
    ``H[2, 2] = exp(v6)``, which the projective division removes; the 3-D affine basis keeps
    the last row ``[0, 0, 0, 1]``.
    """
    return torch.linalg.matrix_exp(lie_algebra_matrix(v, kind, ndim))


def taylor_exp_transform(v: torch.Tensor, kind: str = "affine", terms: int = 10,
                         ndim: int = 2) -> torch.Tensor:
    """The truncated series ``sum_{k<terms} C^k / k!`` that the DRMIME code uses instead of
    :func:`matrix_exp_transform` (``terms=10``: the identity plus 9 powers)."""
    c = lie_algebra_matrix(v, kind, ndim)
    eye = torch.eye(ndim + 1, dtype=c.dtype, device=c.device).expand_as(c)
    out = eye
    term = eye
    for k in range(1, terms):
        term = term @ c / k
        out = out + term
    return out


def physical_frame(shape: tuple[int, ...], geometry: Any = None) -> np.ndarray:
    """The diagonal ``(a_x, a_y[, a_z], 1)`` of ``F`` (module docstring), float64.

    Parameters
    ----------
    shape : (H, W) or (D, H, W)
        The fixed image's spatial shape.
    geometry : mibench.geometry.Geometry, optional
        Its geometry; only the spacing is read (1 per axis without one).
    """
    sizes = np.asarray(shape[::-1], dtype=np.float64)  # (W, H[, D]) = x, y[, z]
    spacing = np.ones(len(sizes)) if geometry is None else np.asarray(geometry.spacing,
                                                                      dtype=np.float64)
    if spacing.shape != sizes.shape:
        raise ValueError(f"a {len(sizes)}-D image cannot take a {len(spacing)}-D geometry")
    half = spacing * np.maximum(sizes - 1, 1) / 2
    return np.append(half / half.max(), 1.0)


@dataclass(frozen=True)
class TransformModel:
    """A transform model bound to a fixed image: kind, dimensionality and frame.

    Built by :func:`transform_model`. ``frame`` is the diagonal of ``F`` (float64), or None for
    the grid frame (2-D affine and perspective).
    """

    kind: str
    ndim: int
    frame: np.ndarray | None

    @property
    def n_params(self) -> int:
        return n_params(self.kind, self.ndim)

    def exp(self, v: torch.Tensor, expm: Callable[..., torch.Tensor] = matrix_exp_transform
            ) -> torch.Tensor:
        """The grid-frame matrix of ``v``: ``expm(V)`` or ``F^-1 @ expm(V) @ F``."""
        e = expm(v, self.kind, ndim=self.ndim)
        if self.frame is None:
            return e
        f = torch.as_tensor(self.frame, dtype=e.dtype, device=e.device)
        # F is diagonal: F^-1 M F scales row i by 1/f_i and column j by f_j.
        return e * f[None, :] / f[:, None]

    def compose(self, h0: torch.Tensor, v: torch.Tensor,
                expm: Callable[..., torch.Tensor] = matrix_exp_transform) -> torch.Tensor:
        """``H = h0 @ exp(v)``: fixed normalised -> moving normalised."""
        return h0 @ self.exp(v, expm)


def transform_model(kind: str, fixed_shape: tuple[int, ...], fixed_geometry: Any = None
                    ) -> TransformModel:
    """The model of ``kind`` for a fixed image of spatial shape ``(H, W)`` or ``(D, H, W)``.

    Raises
    ------
    ValueError
        For ``"perspective"`` on a volume, or an unknown kind.
    """
    ndim = len(fixed_shape)
    _check(kind, ndim)
    if ndim == 2 and kind in ("affine", "perspective"):
        return TransformModel(kind, 2, None)
    return TransformModel(kind, ndim, physical_frame(tuple(fixed_shape), fixed_geometry))


def pixel_to_normalised_matrix(shape: tuple[int, ...]) -> np.ndarray:
    """``N`` mapping voxel ``(x, y[, z], 1)`` of an ``(H, W)`` or ``(D, H, W)`` image to
    normalised ``(u, v[, w], 1)``."""
    sizes = [int(s) for s in shape[::-1]]
    n = len(sizes)
    out = np.eye(n + 1)
    for i, size in enumerate(sizes):
        out[i, i] = 2.0 / max(size - 1, 1)
        out[i, n] = -1.0
    return out


def _as_numpy_matrix(m: Any) -> np.ndarray:
    if isinstance(m, torch.Tensor):
        m = m.detach().to("cpu", torch.float64).numpy()
    m = np.asarray(m, dtype=np.float64)
    if m.shape not in ((3, 3), (4, 4)):
        raise ValueError(f"expected a 3x3 or 4x4 matrix, got shape {m.shape}")
    return m


def normalised_to_pixel(h_norm: Any, fixed_shape: tuple[int, ...],
                        moving_shape: tuple[int, ...]) -> np.ndarray:
    """Voxel matrix (fixed voxel -> moving voxel, float64) of a normalised-coordinate matrix.

    ``P = N_m^-1 @ H @ N_f``, each ``N`` built from its own image's ``(H, W)`` or ``(D, H, W)``.
    The result is scaled so that its last diagonal entry is 1 when that entry is not ~0.
    """
    h = _as_numpy_matrix(h_norm)
    n_fixed = pixel_to_normalised_matrix(fixed_shape)
    n_moving = pixel_to_normalised_matrix(moving_shape)
    if n_fixed.shape != h.shape or n_moving.shape != h.shape:
        raise ValueError(f"a {h.shape[0]}x{h.shape[0]} matrix needs {h.shape[0] - 1}-D shapes, "
                         f"got {tuple(fixed_shape)} and {tuple(moving_shape)}")
    p = np.linalg.inv(n_moving) @ h @ n_fixed
    if abs(p[-1, -1]) > 1e-12:
        p = p / p[-1, -1]
    return p


def pixel_to_normalised(pixel: Any, fixed_shape: tuple[int, ...],
                        moving_shape: tuple[int, ...]) -> np.ndarray:
    """Inverse of :func:`normalised_to_pixel`: ``H = N_m @ P @ N_f^-1`` (float64)."""
    p = _as_numpy_matrix(pixel)
    n_fixed = pixel_to_normalised_matrix(fixed_shape)
    n_moving = pixel_to_normalised_matrix(moving_shape)
    if n_fixed.shape != p.shape or n_moving.shape != p.shape:
        raise ValueError(f"a {p.shape[0]}x{p.shape[0]} matrix needs {p.shape[0] - 1}-D shapes, "
                         f"got {tuple(fixed_shape)} and {tuple(moving_shape)}")
    return n_moving @ p @ np.linalg.inv(n_fixed)


def axis_coordinates(size: int, *, dtype: torch.dtype = torch.float32,
                     device: Any = None) -> torch.Tensor:
    """The normalised coordinates ``(size,)`` of one axis's voxel centres (-1 .. 1)."""
    if size > 1:
        return torch.linspace(-1.0, 1.0, size, dtype=dtype, device=device)
    return torch.full((1,), -1.0, dtype=dtype, device=device)


def normalised_grid(shape: tuple[int, ...], *, dtype: torch.dtype = torch.float32,
                    device: Any = None) -> torch.Tensor:
    """Homogeneous normalised coordinates of an image's voxels: ``(H, W, 3)`` = ``(u, v, 1)``
    for an ``(H, W)`` image, ``(D, H, W, 4)`` = ``(u, v, w, 1)`` for a ``(D, H, W)`` volume."""
    axes = [axis_coordinates(int(s), dtype=dtype, device=device) for s in shape]
    mesh = torch.meshgrid(*axes, indexing="ij")  # (z,) y, x
    return torch.stack([*mesh[::-1], torch.ones_like(mesh[0])], dim=-1)


def _sampling_grid_3d(hmat: torch.Tensor, out_shape: tuple[int, int, int]) -> torch.Tensor:
    """``(B, D, H, W, 3)``: each output coordinate is a sum of broadcast 1-D terms (no
    ``(N, 4)`` product: it is the largest tensor of a volume's step). Affine only: the last
    row of a 3-D ``H`` is ``[0, 0, 0, 1]`` (no perspective in 3-D)."""
    d, h, w = (int(s) for s in out_shape)
    dtype, device = hmat.dtype, hmat.device
    u = axis_coordinates(w, dtype=dtype, device=device).view(1, 1, 1, w)
    v = axis_coordinates(h, dtype=dtype, device=device).view(1, 1, h, 1)
    z = axis_coordinates(d, dtype=dtype, device=device).view(1, d, 1, 1)
    m = hmat[:, :, :, None, None, None]  # (B, 4, 4, 1, 1, 1)
    coords = [m[:, i, 0] * u + m[:, i, 1] * v + m[:, i, 2] * z + m[:, i, 3] for i in range(3)]
    return torch.stack([c.expand(-1, d, h, w) for c in coords], dim=-1)


def sampling_grid(h_norm: torch.Tensor, out_shape: tuple[int, ...]) -> torch.Tensor:
    """The ``grid_sample`` grid of a matrix ``(n+1, n+1)`` or ``(B, n+1, n+1)``:
    ``(B, h, w, 2)`` for 2-D, ``(B, d, h, w, 3)`` for 3-D.

    The output grid's normalised coordinates (:func:`normalised_grid`) are mapped by ``H``
    (projective division in 2-D). Points that map behind the camera (w' <= 0, perspective only)
    are sent outside [-1, 1] so that they read the padding.
    """
    hmat = h_norm if h_norm.ndim == 3 else h_norm[None]
    if len(out_shape) == 3:
        return _sampling_grid_3d(hmat, tuple(out_shape))
    grid = normalised_grid(out_shape, dtype=hmat.dtype, device=hmat.device)
    pts = torch.einsum("hwj,bij->bhwi", grid, hmat)
    z = pts[..., 2:3]
    behind = z <= 1e-8
    z = torch.where(behind, torch.ones_like(z), z)
    xy = pts[..., :2] / z
    return torch.where(behind, torch.full_like(xy, -2.0), xy)


def warp_normalised(moving: torch.Tensor, h_norm: torch.Tensor, out_shape: tuple[int, ...], *,
                    mode: str = "bilinear", padding_mode: str = "zeros",
                    align_corners: bool = True) -> torch.Tensor:
    """Pull ``moving`` ``(B, C, Hm, Wm)`` or ``(B, C, Dm, Hm, Wm)`` back onto an ``out_shape``
    grid with ``H``.

    Output voxel at normalised ``p`` samples ``moving`` at normalised ``H p`` (bilinear in 2-D,
    trilinear in 3-D: ``grid_sample``'s ``"bilinear"``). Differentiable with respect to both
    ``moving`` and ``H``; ``H`` is ``(n+1, n+1)`` (shared) or ``(B, n+1, n+1)``.
    ``align_corners`` is passed to ``grid_sample`` only (the grid itself is always the
    align_corners=True one); ``False`` reproduces the released DRMIME code, whose grid and
    sampling conventions disagree by up to half a pixel and a ``W/(W-1)`` scale.
    """
    if moving.dim() != len(out_shape) + 2:
        raise ValueError(f"a {len(out_shape)}-D output grid needs a moving tensor of "
                         f"{len(out_shape) + 2} axes, got shape {tuple(moving.shape)}")
    grid = sampling_grid(h_norm.to(moving.dtype), out_shape)
    if grid.shape[0] != moving.shape[0]:
        grid = grid.expand(moving.shape[0], *([-1] * (grid.dim() - 1)))
    return F.grid_sample(moving, grid, mode=mode, padding_mode=padding_mode,
                         align_corners=align_corners)


def sample_points(moving: torch.Tensor, h_norm: torch.Tensor, points: torch.Tensor
                  ) -> torch.Tensor:
    """Samples ``(N, C)`` of ``moving`` ``(1, C, [Dm,] Hm, Wm)`` at ``H @ points``.

    ``points`` are homogeneous normalised coordinates ``(N, n+1)`` of fixed voxels. Bilinear
    (2-D) or trilinear (3-D), zero padding; 2-D points mapped behind the camera (perspective,
    ``w' <= 0``) read the padding.
    """
    n = points.shape[1] - 1
    mapped = points @ h_norm.T
    if n == 2:
        z = mapped[:, 2:]
        behind = z <= 1e-8
        xy = mapped[:, :2] / torch.where(behind, torch.ones_like(z), z)
        xy = torch.where(behind, torch.full_like(xy, -2.0), xy)
        grid = xy.view(1, 1, -1, 2)
    else:
        grid = mapped[:, :3].reshape(1, 1, 1, -1, 3)
    out = F.grid_sample(moving, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    return out.reshape(out.shape[1], -1).T
