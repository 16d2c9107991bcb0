"""Conversions between ITK's physical space and mibench's pixel convention (README).

ITK (SimpleITK, itk-elastix) places pixel index ``i = (column, row)`` (voxel index ``(x, y, z)``
= (along W, along H, along D) of a volume) at the physical point
``p = origin + D diag(spacing) i``, index 0 being the centre of the first pixel: the same
``(x, y)`` convention as mibench, up to that index-to-physical map. ITK's registration methods
return a transform from *fixed* physical points to *moving* physical points (the pull-back
direction, as mibench). ITK's affine transform with centre ``c``, matrix ``A`` and translation
``t`` maps ``p`` to ``A (p - c) + c + t``; elastix's ``AffineTransform`` uses the same form, with
parameters ``(a11, a12, a21, a22, t1, t2)`` (matrix row by row, then the translation; 12
values in 3-D) and the centre in ``CenterOfRotationPoint``.

So, with ``P_f`` and ``P_m`` the homogeneous index-to-physical matrices of the fixed and moving
images (3x3, or 4x4 for volumes), the pixel transform is ``P_m^-1 [[A, t + c - A c], [0, 1]] P_f``.

Volumes with a :class:`mibench.geometry.Geometry` (RAS+ millimetres): ITK's physical space is
LPS, and the images handed to a toolbox get ``Geometry.to_itk()``'s spacing, origin and direction
(:func:`itk_geometry`); the result goes back with :func:`itk_affine_to_voxel`, which flips the
world transform to RAS+ (:func:`mibench.geometry.flip_lps`) and takes its voxel form
(:func:`mibench.geometry.voxel_transform`). The LPS flip itself lives only in
:mod:`mibench.geometry`.

This module is pure NumPy (no ITK import), so it can be tested without either toolbox.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from mibench.geometry import Geometry, flip_lps, voxel_transform


@dataclass(frozen=True)
class ImageGeometry:
    """Where an ITK image lies in physical space (2-D by default; 3-D with 3 spacings).

    Attributes
    ----------
    spacing : tuple of float
        Physical size of a pixel along x (columns) and y (rows) (and z, slices, for a volume).
    origin : tuple of float
        Physical position of the centre of pixel index ``(0, 0)`` (``(0, 0, 0)``).
    direction : tuple of float
        The ``n x n`` direction cosine matrix, row by row (ITK's flat layout).
    """

    spacing: tuple[float, float] = (1.0, 1.0)
    origin: tuple[float, float] = (0.0, 0.0)
    direction: tuple[float, float, float, float] = (1.0, 0.0, 0.0, 1.0)

    @classmethod
    def of(cls, image) -> ImageGeometry:
        """Read the geometry of a SimpleITK or ITK image (anything with ``GetSpacing``,
        ``GetOrigin`` and ``GetDirection``)."""
        direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(-1)
        return cls(tuple(map(float, image.GetSpacing())), tuple(map(float, image.GetOrigin())),
                   tuple(map(float, direction)))

    def index_to_physical(self) -> np.ndarray:
        """The ``(n+1) x (n+1)`` homogeneous matrix mapping pixel ``(x, y[, z], 1)`` to physical
        ``(px, py[, pz], 1)`` (``n = len(spacing)``)."""
        n = len(self.spacing)
        d = np.asarray(self.direction, dtype=np.float64).reshape(n, n)
        out = np.eye(n + 1)
        out[:n, :n] = d @ np.diag(np.asarray(self.spacing, dtype=np.float64))
        out[:n, n] = self.origin
        return out


def itk_affine_matrix(matrix: Sequence[float] | np.ndarray,
                      translation: Sequence[float] | np.ndarray,
                      center: Sequence[float] | np.ndarray) -> np.ndarray:
    """ITK's ``p -> A (p - c) + c + t`` as a homogeneous matrix in ITK's physical space.

    ``A`` has ``n * n`` values (row by row), ``t`` and ``c`` ``n``; ``n`` (2 or 3) is read from
    ``c``. Returns an ``(n+1) x (n+1)`` float64 matrix.
    """
    n = np.asarray(center).size
    a = np.asarray(matrix, dtype=np.float64).reshape(n, n)
    t = np.asarray(translation, dtype=np.float64).reshape(n)
    c = np.asarray(center, dtype=np.float64).reshape(n)
    out = np.eye(n + 1)
    out[:n, :n] = a
    out[:n, n] = t + c - a @ c
    return out


def itk_affine_to_pixel(matrix: Sequence[float] | np.ndarray,
                        translation: Sequence[float] | np.ndarray,
                        center: Sequence[float] | np.ndarray,
                        fixed: ImageGeometry = ImageGeometry(),
                        moving: ImageGeometry = ImageGeometry()) -> np.ndarray:
    """Convert an ITK affine transform (fixed physical -> moving physical) to a pixel matrix.

    Parameters
    ----------
    matrix : array_like, 4 values or 2x2 (9 or 3x3 in 3-D)
        ``A`` of the ITK transform, row by row (``GetMatrix()``).
    translation, center : array_like, 2 (3) values
        ``t`` and ``c`` (``GetTranslation()``, ``GetCenter()``), physical units, ``(x, y[, z])``.
    fixed, moving : ImageGeometry
        Geometry of the fixed and moving images the transform was estimated on (the defaults
        are 2-D pixel space).

    Returns
    -------
    ndarray, shape (3, 3) or (4, 4), float64
        Maps fixed pixel ``(x, y[, z], 1)`` to moving pixel ``(x, y[, z], 1)``, ``(0, 0)`` the
        centre of the top-left pixel.
    """
    physical = itk_affine_matrix(np.asarray(matrix), translation, center)
    return np.linalg.solve(moving.index_to_physical(), physical @ fixed.index_to_physical())


def pixel_to_itk_affine(pixel_matrix: np.ndarray, center: Sequence[float] | np.ndarray,
                        fixed: ImageGeometry = ImageGeometry(),
                        moving: ImageGeometry = ImageGeometry()
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`itk_affine_to_pixel`: ITK's ``(A, t)`` for a given centre.

    Parameters
    ----------
    pixel_matrix : ndarray, shape (3, 3) or (4, 4)
        An affine fixed-pixel -> moving-pixel matrix (last row ``0, ..., 0, 1``).
    center : array_like, 2 (3) values
        The centre ``c`` the ITK transform is to use, physical units.
    fixed, moving : ImageGeometry

    Returns
    -------
    matrix : ndarray, shape (n, n)
    translation : ndarray, shape (n,)
    """
    pm = np.asarray(pixel_matrix, dtype=np.float64)
    n = pm.shape[0] - 1
    if not np.allclose(pm[n], np.eye(n + 1)[n]):
        raise ValueError("pixel_to_itk_affine needs an affine matrix (last row 0, ..., 0, 1)")
    physical = moving.index_to_physical() @ pm @ np.linalg.inv(fixed.index_to_physical())
    a = physical[:n, :n]
    c = np.asarray(center, dtype=np.float64).reshape(n)
    return a, physical[:n, n] - c + a @ c


def elastix_affine_parameters(parameter_map: Mapping[str, Sequence[str]]
                              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(A, t, c)`` of an elastix ``AffineTransform`` result parameter map, in 2-D or 3-D.

    Parameters
    ----------
    parameter_map : mapping of str to sequence of str
        One transform parameter map as elastix writes it (values are strings), with
        ``Transform = AffineTransform``, ``TransformParameters`` (6 values in 2-D, 12 in 3-D:
        the matrix row by row, then the translation) and ``CenterOfRotationPoint`` (2 or 3
        values). A transform initialised from another one (``InitialTransformParameterFileName``
        other than ``NoInitialTransform``) is refused.

    Returns
    -------
    matrix : ndarray (n, n)
    translation, center : ndarray (n,)
        In elastix's (ITK's) physical space.
    """
    kind = str(parameter_map.get("Transform", ["?"])[0])
    if kind != "AffineTransform":
        raise ValueError(f"expected an elastix AffineTransform, got {kind!r}")
    initial = str(parameter_map.get("InitialTransformParameterFileName",
                                    ["NoInitialTransform"])[0])
    if initial != "NoInitialTransform":
        raise ValueError("composed elastix transforms are not supported")
    params = np.array([float(v) for v in parameter_map["TransformParameters"]])
    center = np.array([float(v) for v in parameter_map["CenterOfRotationPoint"]])
    n = center.size
    if n not in (2, 3) or params.shape != (n * n + n,):
        raise ValueError(f"expected 6 affine parameters and a 2-D centre, or 12 and a 3-D "
                         f"centre; got {params.size} and {center.size}")
    return params[:n * n].reshape(n, n), params[n * n:], center


def elastix_affine_to_pixel(parameter_map: Mapping[str, Sequence[str]],
                            fixed: ImageGeometry = ImageGeometry(),
                            moving: ImageGeometry = ImageGeometry()) -> np.ndarray:
    """Convert an elastix ``AffineTransform`` result parameter map to a pixel matrix.

    Parameters
    ----------
    parameter_map : mapping of str to sequence of str
        As :func:`elastix_affine_parameters` reads it.
    fixed, moving : ImageGeometry

    Returns
    -------
    ndarray, shape (3, 3) or (4, 4)
        Fixed pixel -> moving pixel, as :func:`itk_affine_to_pixel`.
    """
    a, t, c = elastix_affine_parameters(parameter_map)
    return itk_affine_to_pixel(a.ravel(), t, c, fixed, moving)


def itk_geometry(geometry: Geometry | None, ndim: int) -> Geometry:
    """The geometry an image is handed to ITK with: ``geometry`` itself, or, for None, the one
    whose ITK form is unit spacing, zero origin and identity direction (ITK's physical space is
    then the voxel space; in RAS+ that is the LPS flip of the voxel axes)."""
    if geometry is not None:
        if geometry.ndim != ndim:
            raise ValueError(f"a {geometry.ndim}-D geometry for a {ndim}-D image")
        return geometry
    return Geometry.from_itk(np.ones(ndim), np.zeros(ndim), np.eye(ndim), unit="px")


def itk_affine_to_voxel(matrix: Sequence[float] | np.ndarray,
                        translation: Sequence[float] | np.ndarray,
                        center: Sequence[float] | np.ndarray,
                        fixed: Geometry, moving: Geometry) -> np.ndarray:
    """Convert an ITK affine transform estimated on images placed by :func:`itk_geometry`
    (fixed LPS physical -> moving LPS physical) to the voxel matrix.

    Parameters
    ----------
    matrix : array_like, n * n values
        ``A``, row by row (``GetMatrix()``).
    translation, center : array_like, n values
        ``t`` and ``c``, in ITK's LPS physical units.
    fixed, moving : Geometry
        The geometries the images were given (:func:`itk_geometry`'s result), RAS+.

    Returns
    -------
    ndarray, shape (n+1, n+1), float64
        Fixed voxel ``(x, y[, z], 1)`` -> moving voxel: ``inv(A_m) F W_lps F A_f`` with ``F``
        the RAS <-> LPS flip (:func:`~mibench.geometry.flip_lps`,
        :func:`~mibench.geometry.voxel_transform`).
    """
    world_lps = itk_affine_matrix(np.asarray(matrix), translation, center)
    return voxel_transform(flip_lps(world_lps), fixed, moving)


def _grey(image: torch.Tensor, scale: float) -> np.ndarray:
    if image.ndim not in (4, 5) or image.shape[0] != 1:
        raise ValueError(f"expected a (1, C, H, W) or (1, C, D, H, W) tensor, got shape "
                         f"{tuple(image.shape)}")
    grey = image.detach().float().mean(dim=1)[0] * scale
    return np.ascontiguousarray(grey.cpu().numpy(), dtype=np.float32)


def grey_arrays(fixed: torch.Tensor, moving: torch.Tensor, *, scale: float = 255.0
                ) -> tuple[np.ndarray, np.ndarray]:
    """Two ``(1, C, H, W)`` (or ``(1, C, D, H, W)``) tensors as 2-D ``(H, W)`` (3-D ``(D, H,
    W)``) float32 arrays for ITK, times ``scale``.

    Colour images become grey by the channel mean (as :func:`mibench.methods.inputs.
    prepare_images`, but always, since the toolboxes register scalar images). ``scale=255``
    gives the intensity range of the 8-bit images the toolbox settings were tuned on (it matters
    only to mean squares: the MI metrics bin the range, correlation is scale-free). The two
    tensors must have the same number of axes.
    """
    if fixed.ndim != moving.ndim:
        raise ValueError(f"fixed tensor {tuple(fixed.shape)} and moving tensor "
                         f"{tuple(moving.shape)} differ in dimensionality")
    return _grey(fixed, scale), _grey(moving, scale)


def mask_array(mask: torch.Tensor | None) -> np.ndarray | None:
    """A ``(1, 1, H, W)`` (``(1, 1, D, H, W)``) bool tensor as a uint8 ``(H, W)`` (``(D, H,
    W)``) array (1 = valid), or None."""
    if mask is None:
        return None
    return np.ascontiguousarray(mask[0, 0].detach().cpu().numpy().astype(np.uint8))
