"""Conversions between ITK's physical space and mibench's pixel convention (README).

ITK (SimpleITK, itk-elastix) places pixel index ``i = (column, row)`` at the physical point
``p = origin + D diag(spacing) i``, index 0 being the centre of the first pixel: the same
``(x, y)`` convention as mibench, up to that index-to-physical map. ITK's registration methods
return a transform from *fixed* physical points to *moving* physical points (the pull-back
direction, as mibench). ITK's affine transform with centre ``c``, matrix ``A`` and translation
``t`` maps ``p`` to ``A (p - c) + c + t``; elastix's ``AffineTransform`` uses the same form, with
parameters ``(a11, a12, a21, a22, t1, t2)`` (matrix row by row, then the translation) and the
centre in ``CenterOfRotationPoint``.

So, with ``P_f`` and ``P_m`` the 3x3 index-to-physical matrices of the fixed and moving images,
the pixel transform is ``P_m^-1 [[A, t + c - A c], [0, 1]] P_f``.

This module is pure NumPy (no ITK import), so it can be tested without either toolbox.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class ImageGeometry:
    """Where an ITK image lies in physical space (2-D).

    Attributes
    ----------
    spacing : tuple of float
        Physical size of a pixel along x (columns) and y (rows).
    origin : tuple of float
        Physical position of the centre of pixel index ``(0, 0)``.
    direction : tuple of float
        The 2x2 direction cosine matrix, row by row (ITK's flat layout).
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
        """The 3x3 homogeneous matrix mapping pixel ``(x, y, 1)`` to physical ``(px, py, 1)``."""
        d = np.asarray(self.direction, dtype=np.float64).reshape(2, 2)
        out = np.eye(3)
        out[:2, :2] = d @ np.diag(np.asarray(self.spacing, dtype=np.float64))
        out[:2, 2] = self.origin
        return out


def _affine_matrix(matrix: np.ndarray, translation: np.ndarray, center: np.ndarray
                   ) -> np.ndarray:
    """ITK's ``p -> A (p - c) + c + t`` as a 3x3 homogeneous matrix (physical space)."""
    a = np.asarray(matrix, dtype=np.float64).reshape(2, 2)
    t = np.asarray(translation, dtype=np.float64).reshape(2)
    c = np.asarray(center, dtype=np.float64).reshape(2)
    out = np.eye(3)
    out[:2, :2] = a
    out[:2, 2] = t + c - a @ c
    return out


def itk_affine_to_pixel(matrix: Sequence[float] | np.ndarray,
                        translation: Sequence[float] | np.ndarray,
                        center: Sequence[float] | np.ndarray,
                        fixed: ImageGeometry = ImageGeometry(),
                        moving: ImageGeometry = ImageGeometry()) -> np.ndarray:
    """Convert an ITK affine transform (fixed physical -> moving physical) to a pixel matrix.

    Parameters
    ----------
    matrix : array_like, 4 values or 2x2
        ``A`` of the ITK transform, row by row (``GetMatrix()``).
    translation, center : array_like, 2 values
        ``t`` and ``c`` (``GetTranslation()``, ``GetCenter()``), physical units, ``(x, y)``.
    fixed, moving : ImageGeometry
        Geometry of the fixed and moving images the transform was estimated on.

    Returns
    -------
    ndarray, shape (3, 3), float64
        Maps fixed pixel ``(x, y, 1)`` to moving pixel ``(x, y, 1)``, ``(0, 0)`` the centre of
        the top-left pixel.
    """
    physical = _affine_matrix(np.asarray(matrix), translation, center)
    return np.linalg.solve(moving.index_to_physical(), physical @ fixed.index_to_physical())


def pixel_to_itk_affine(pixel_matrix: np.ndarray, center: Sequence[float] | np.ndarray,
                        fixed: ImageGeometry = ImageGeometry(),
                        moving: ImageGeometry = ImageGeometry()
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`itk_affine_to_pixel`: ITK's ``(A, t)`` for a given centre.

    Parameters
    ----------
    pixel_matrix : ndarray, shape (3, 3)
        An affine fixed-pixel -> moving-pixel matrix (last row ``0, 0, 1``).
    center : array_like, 2 values
        The centre ``c`` the ITK transform is to use, physical units.
    fixed, moving : ImageGeometry

    Returns
    -------
    matrix : ndarray, shape (2, 2)
    translation : ndarray, shape (2,)
    """
    pm = np.asarray(pixel_matrix, dtype=np.float64)
    if not np.allclose(pm[2], [0.0, 0.0, 1.0]):
        raise ValueError("pixel_to_itk_affine needs an affine matrix (last row 0, 0, 1)")
    physical = moving.index_to_physical() @ pm @ np.linalg.inv(fixed.index_to_physical())
    a = physical[:2, :2]
    c = np.asarray(center, dtype=np.float64).reshape(2)
    return a, physical[:2, 2] - c + a @ c


def elastix_affine_to_pixel(parameter_map: Mapping[str, Sequence[str]],
                            fixed: ImageGeometry = ImageGeometry(),
                            moving: ImageGeometry = ImageGeometry()) -> np.ndarray:
    """Convert an elastix ``AffineTransform`` result parameter map to a pixel matrix.

    Parameters
    ----------
    parameter_map : mapping of str to sequence of str
        One transform parameter map as elastix writes it (values are strings), with
        ``Transform = AffineTransform``, ``TransformParameters`` (6 values) and
        ``CenterOfRotationPoint`` (2 values). A transform initialised from another one
        (``InitialTransformParameterFileName`` other than ``NoInitialTransform``) is refused.
    fixed, moving : ImageGeometry

    Returns
    -------
    ndarray, shape (3, 3)
        Fixed pixel -> moving pixel, as :func:`itk_affine_to_pixel`.
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
    if params.shape != (6,) or center.shape != (2,):
        raise ValueError(f"expected 6 affine parameters and a 2-D centre, got {params.size} "
                         f"and {center.size}")
    return itk_affine_to_pixel(params[:4], params[4:], center, fixed, moving)


def grey_arrays(fixed: torch.Tensor, moving: torch.Tensor, *, scale: float = 255.0
                ) -> tuple[np.ndarray, np.ndarray]:
    """Two ``(1, C, H, W)`` tensors as 2-D float32 arrays for ITK, times ``scale``.

    Colour images become grey by the channel mean (as :func:`mibench.methods.inputs.
    prepare_images`, but always, since the toolboxes register scalar images). ``scale=255``
    gives the intensity range of the 8-bit images the toolbox settings were tuned on (it matters
    only to mean squares: the MI metrics bin the range, correlation is scale-free).
    """
    out = []
    for image in (fixed, moving):
        if image.ndim != 4 or image.shape[0] != 1:
            raise ValueError(f"expected a (1, C, H, W) tensor, got shape {tuple(image.shape)}")
        grey = image.detach().float().mean(dim=1)[0] * scale
        out.append(np.ascontiguousarray(grey.cpu().numpy(), dtype=np.float32))
    return out[0], out[1]


def mask_array(mask: torch.Tensor | None) -> np.ndarray | None:
    """A ``(1, 1, H, W)`` bool tensor as a 2-D uint8 array (1 = valid), or None."""
    if mask is None:
        return None
    return np.ascontiguousarray(mask[0, 0].detach().cpu().numpy().astype(np.uint8))
