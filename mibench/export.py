"""Export of registration results beside their records: ITK transform files and warped images.

``mibench run --save-transforms`` writes each task's transform as an ITK transform file that
SimpleITK's ``ReadTransform`` reads (as do the ITK-based tools that read ITK transform
files); ``--save-warped`` writes the moving image resampled onto the fixed image's grid. Both go
beside the task's record, ``records/<group>/<name>.json``, under the record's name with another
suffix (:func:`mibench.paths.beside_record`; the suffixes are :mod:`mibench.paths`'s).

Coordinates of a transform file (``CONTRACTS.md``, *Volumes (3-D) and physical space*):

* With a geometry on both images, ITK's physical space: LPS, in the geometries' unit (mm for
  volumes, um for histology with a pixel size). The file's transform maps a point of the fixed
  image to the matching point of the moving image (fixed world -> moving world), the direction
  ITK resamples with: ``sitk.Resample(moving, fixed, transform)`` with the images placed by
  ``Geometry.to_itk()`` (as :func:`mibench.methods.sitk.itk_image` does) gives the warped
  moving image. It is ``flip_lps(world_transform(T, fixed, moving))``; the LPS flip is
  :func:`mibench.geometry.flip_lps`, also in 2-D.
* Without both geometries (2-D pairs usually), pixel (voxel) coordinates: spacing 1, origin 0,
  identity direction and no LPS flip, so the file's transform is mibench's matrix ``T`` itself
  (fixed pixel ``(x, y)`` -> moving pixel).

An affine matrix becomes an ``AffineTransform`` (centre at the origin) in ITK's text format. A
B-spline (:class:`mibench.bspline.BSplineTransform` on an affine matrix part) of a pair without
both geometries becomes, exactly, ITK's ``CompositeTransform`` of that affine then a cubic
``BSplineTransform`` (:func:`mibench.bspline.to_sitk`; HDF5): ITK's ``TransformPoint`` equals
``fixed_to_moving`` wherever the affine sends the point into the B-spline's domain, which covers
the fixed image (outside it ITK's B-spline adds no displacement). With both geometries it would
have to be conjugated by them (an LPS-flipped, possibly oblique grid in the moving world), which
is not done: it goes the displacement-field way below, like a perspective matrix, which has no
ITK counterpart either: a ``DisplacementFieldTransform`` (HDF5) on the fixed image's grid, whose
displacement at each grid point is exact (``fixed_to_moving`` of that point) and is interpolated
linearly in between.

Warped images: a volume is written as NIfTI (gzip) with the fixed volume's affine (RAS+, the
identity in voxels when the fixed volume has no geometry), float32 in [0, 1]; a 2-D image as an
8-bit PNG (grey or RGB) with values ``round(255 v)``. Failed tasks (no transform) write nothing.
Every file is written atomically (a temporary ``.tmp-*.part`` file beside it, then a rename),
so a killed run leaves either the whole file or a temporary that the next run removes.
"""

from __future__ import annotations

import gzip
import io
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from mibench.geometry import Geometry, flip_lps, world_transform
from mibench.jsonio import write_bytes_atomic
from mibench.paths import (
    FIELD_SUFFIX,
    TRANSFORM_SUFFIX,
    WARPED_IMAGE_SUFFIX,
    WARPED_VOLUME_SUFFIX,
    beside_record,
)
from mibench.transform import MatrixTransform


def _physical(fixed_geometry: Geometry | None, moving_geometry: Geometry | None,
              ndim: int) -> bool:
    """Whether the transform is exported in physical space: both geometries, of ``ndim``."""
    return (fixed_geometry is not None and moving_geometry is not None
            and fixed_geometry.ndim == ndim and moving_geometry.ndim == ndim)


def _is_affine(transform: Any, ndim: int) -> bool:
    if not isinstance(transform, MatrixTransform):
        return False
    if transform.ndim != ndim:
        raise ValueError(f"a {transform.ndim}-D transform for a {ndim}-D pair")
    m = transform.matrix
    return bool(np.array_equal(m[ndim, :ndim], np.zeros(ndim)) and m[ndim, ndim] != 0)


def _is_exportable_bspline(transform: Any, ndim: int) -> bool:
    """A :class:`~mibench.bspline.BSplineTransform` of ``ndim`` on an affine matrix part:
    what :func:`~mibench.bspline.to_sitk` writes exactly."""
    # A B-spline's module is loaded wherever one exists: no import (and its torch) for matrices.
    ffd = sys.modules.get("mibench.bspline.ffd")
    if ffd is None or not isinstance(transform, ffd.BSplineTransform):
        return False
    if transform.ndim != ndim:
        raise ValueError(f"a {transform.ndim}-D transform for a {ndim}-D pair")
    m = transform.affine.matrix
    return bool(np.array_equal(m[ndim, :ndim], np.zeros(ndim)) and m[ndim, ndim] == 1)


def itk_transform(transform: Any, fixed_geometry: Geometry | None,
                  moving_geometry: Geometry | None, ndim: int, *,
                  fixed_shape: tuple[int, ...] | None = None):
    """The SimpleITK transform of a registration result (fixed point -> moving point).

    Parameters
    ----------
    transform : MatrixTransform or Transform
        Fixed voxel -> moving voxel (3x3 in 2-D, 4x4 in 3-D).
    fixed_geometry, moving_geometry : Geometry or None
        Of the pair's images. With both, the result is in ITK's physical LPS space; otherwise
        in pixel (voxel) coordinates without any flip (module docstring).
    ndim : int
        2 or 3.
    fixed_shape : tuple of int, optional
        The fixed image's spatial shape ``(H, W)`` / ``(D, H, W)``; needed only for a transform
        that is not affine (the grid of its displacement field).

    Returns
    -------
    SimpleITK.AffineTransform, SimpleITK.CompositeTransform (affine then B-spline) or
    SimpleITK.DisplacementFieldTransform
    """
    import SimpleITK as sitk

    physical = _physical(fixed_geometry, moving_geometry, ndim)
    if _is_exportable_bspline(transform, ndim) and not physical:
        from mibench.bspline import to_sitk

        return to_sitk(transform)
    if _is_affine(transform, ndim):
        m = transform.matrix / transform.matrix[ndim, ndim]
        world = flip_lps(world_transform(m, fixed_geometry, moving_geometry)) if physical else m
        out = sitk.AffineTransform(ndim)
        out.SetMatrix(tuple(world[:ndim, :ndim].ravel().tolist()))
        out.SetTranslation(tuple(world[:ndim, ndim].tolist()))
        return out
    if fixed_shape is None or len(fixed_shape) != ndim:
        raise ValueError(f"a transform that is not affine needs the fixed image's {ndim}-D "
                         f"shape for its displacement field, got {fixed_shape}")
    return _displacement_field(transform, fixed_geometry, moving_geometry, ndim,
                               tuple(fixed_shape), physical)


def _displacement_field(transform: Any, fixed_geometry: Geometry | None,
                        moving_geometry: Geometry | None, ndim: int,
                        fixed_shape: tuple[int, ...], physical: bool):
    import SimpleITK as sitk

    from mibench.methods.itk_convert import ImageGeometry

    # Numpy order (D, H, W): the last axis (x) runs fastest, as ITK's first index does.
    axes = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in fixed_shape], indexing="ij")
    grid = np.stack(axes[::-1], axis=-1).reshape(-1, ndim)  # (x, y[, z]) per row
    moved = np.asarray(transform.fixed_to_moving(grid), dtype=np.float64)
    if not np.isfinite(moved).all():
        raise ValueError("the transform maps some fixed pixels to no point (perspective "
                         "horizon): no displacement field can hold it")
    # Geometry.to_itk() holds the LPS flip; index -> physical then needs no flip here.
    default = ((1.0,) * ndim, (0.0,) * ndim, tuple(np.eye(ndim).ravel().tolist()))
    f_itk = fixed_geometry.to_itk() if physical else default
    m_itk = moving_geometry.to_itk() if physical else default
    f_phys = ImageGeometry(*f_itk).index_to_physical()
    m_phys = ImageGeometry(*m_itk).index_to_physical()
    start = grid @ f_phys[:ndim, :ndim].T + f_phys[:ndim, ndim]
    end = moved @ m_phys[:ndim, :ndim].T + m_phys[:ndim, ndim]
    field = (end - start).reshape(*fixed_shape, ndim)
    image = sitk.GetImageFromArray(np.ascontiguousarray(field), isVector=True)
    image.SetSpacing(f_itk[0])
    image.SetOrigin(f_itk[1])
    image.SetDirection(f_itk[2])
    return sitk.DisplacementFieldTransform(sitk.Cast(image, sitk.sitkVectorFloat64))


def write_transform(path: Path, transform: Any, fixed_geometry: Geometry | None,
                    moving_geometry: Geometry | None, ndim: int, *,
                    fixed_shape: tuple[int, ...] | None = None) -> Path:
    """Write :func:`itk_transform`'s result to ``path`` (ITK picks the format by the suffix:
    ``.tfm`` text for an affine, ``.h5`` for a displacement field); returns ``path``."""
    import SimpleITK as sitk

    path = Path(path)
    tx = itk_transform(transform, fixed_geometry, moving_geometry, ndim,
                       fixed_shape=fixed_shape)
    # ITK writes only to a named file whose suffix chooses the format: write it in a private
    # folder, then move its bytes into place atomically.
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp) / f"transform{''.join(path.suffixes[-1:])}"
        sitk.WriteTransform(tx, str(scratch))
        write_bytes_atomic(path, scratch.read_bytes())
    return path


def nifti_bytes(array: np.ndarray, geometry: Geometry | None) -> bytes:
    """A numpy ``(D, H, W)`` / ``(D, H, W, C)`` volume as gzip-compressed NIfTI-1 bytes.

    Stored as nibabel's ``data[i, j, k(, c)]`` = ``array[k, j, i(, c)]`` (the transpose of
    mibench's layout, ``CONTRACTS.md``) with ``geometry``'s affine (RAS+, its unit as the
    header's spatial unit) or the identity (voxels) when None; float32.
    """
    import nibabel as nib

    arr = np.asarray(array, dtype=np.float32)
    if arr.ndim not in (3, 4):
        raise ValueError(f"a volume is (D, H, W) or (D, H, W, C), got shape {arr.shape}")
    data = arr.transpose(2, 1, 0, *range(3, arr.ndim))
    affine = np.eye(4) if geometry is None else geometry.affine
    image = nib.Nifti1Image(np.ascontiguousarray(data), affine)
    image.header.set_xyzt_units(xyz={"mm": "mm", "um": "micron"}.get(
        geometry.unit if geometry is not None else "", "unknown"))
    return gzip.compress(image.to_bytes(), mtime=0)


def png_bytes(array: np.ndarray) -> bytes:
    """A 2-D ``(H, W)`` / ``(H, W, 1)`` (grey) or ``(H, W, 3)`` (RGB) image in [0, 1] as 8-bit
    PNG bytes (``round(255 v)``, values clipped to [0, 1])."""
    from PIL import Image

    arr = np.asarray(array, dtype=np.float32)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] != 3):
        raise ValueError(f"a PNG holds (H, W) grey or (H, W, 3) RGB, got shape {arr.shape}")
    pixels = np.round(np.clip(np.nan_to_num(arr), 0.0, 1.0) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def write_warped(path: Path, warped: np.ndarray, fixed_geometry: Geometry | None = None, *,
                 ndim: int | None = None) -> Path:
    """Write a warped moving image (on the fixed grid): NIfTI for a volume, PNG for 2-D.

    Parameters
    ----------
    path : Path
        Ends in ``.nii.gz`` (volume) or ``.png`` (2-D).
    warped : ndarray
        ``(D, H, W[, C])`` or ``(H, W[, C])`` float, values in [0, 1].
    fixed_geometry : Geometry or None
        The fixed image's; its affine goes into the NIfTI header.
    ndim : int, optional
        Spatial dimensionality (default: 3 when ``path`` ends in ``.nii.gz`` or ``.nii``).
    """
    path = Path(path)
    volume = ndim == 3 if ndim is not None else path.name.endswith((".nii.gz", ".nii"))
    if volume:
        data = nifti_bytes(warped, fixed_geometry)
        if not path.name.endswith(".gz"):
            data = gzip.decompress(data)
    else:
        data = png_bytes(warped)
    write_bytes_atomic(path, data)
    return path


def write_task_outputs(record_path: Path, pair: Any, transform: Any, *, transforms: bool,
                       warped: bool) -> dict[str, str]:
    """Write a task's transform file and/or warped moving image beside its record.

    Parameters
    ----------
    record_path : Path
        ``records/<group>/<name>.json`` (:func:`mibench.paths.record_path`); the files are
        ``<name>.tfm`` (or ``<name>.h5``) and ``<name>.warped.nii.gz`` (or ``.warped.png``) in
        the same folder.
    pair : Pair
        The pair as registered (images, geometries).
    transform : Transform or None
        The task's result, fixed voxel -> moving voxel; None (a failed task) writes nothing.
    transforms, warped : bool
        Which of the two to write (``--save-transforms``, ``--save-warped``).

    Returns
    -------
    dict of str to str
        ``{"transform": file name, "warped": file name}`` for what was written, names relative
        to the record's folder; empty when nothing was.
    """
    out: dict[str, str] = {}
    if transform is None or not (transforms or warped):
        return out
    ndim = pair.ndim
    fixed_shape = tuple(pair.fixed.shape[:ndim])
    if transforms:
        suffix = TRANSFORM_SUFFIX if _is_affine(transform, ndim) else FIELD_SUFFIX
        path = write_transform(beside_record(record_path, suffix), transform,
                               pair.fixed_geometry, pair.moving_geometry, ndim,
                               fixed_shape=fixed_shape)
        out["transform"] = path.name
    if warped:
        image = transform.warp(pair.moving, fixed_shape)
        image = np.asarray(image, dtype=np.float32)
        suffix = WARPED_VOLUME_SUFFIX if ndim == 3 else WARPED_IMAGE_SUFFIX
        path = write_warped(beside_record(record_path, suffix), image, pair.fixed_geometry,
                            ndim=ndim)
        out["warped"] = path.name
    return out
