"""The ``nifti`` dataset: 2-D slices of NIfTI volumes listed in a CSV manifest (MRI T1/T2, ...).

The manifest (``-o manifest=PATH``, default ``manifest.csv`` in the data directory) has a header
and the columns ``fixed`` and ``moving`` (``.nii`` or ``.nii.gz`` paths relative to the data
directory) and optionally ``fixed_landmarks``, ``moving_landmarks`` (landmark files, see
:func:`mibench.io.read_points`), ``fixed_mask``, ``moving_mask`` (NIfTI volumes, True
where non-zero) and ``id`` (empty: the row number; ids must be unique). Volumes are read with
nibabel; only the chosen slice is read.

Voxel-to-pixel convention (no reorientation is applied). With ``V = img.dataobj`` in nibabel's
voxel order ``(i, j, k)`` and the slice ``S = numpy.take(V, index, axis)``, the image is ``S``
as a numpy array: its rows are the first remaining voxel axis and its columns the second, so
pixel ``(x, y)`` is voxel index ``(row y, column x)`` of ``S``. For ``axis=2`` (the usual
axial slice), pixel ``(x, y)`` is voxel ``(i=y, j=x, k=index)``. The affine (world/mm space) is
ignored: errors are in voxels of the fixed slice; the in-plane voxel size is in the pair
metadata (``spacing_x``, ``spacing_y``, in the units of the header, usually mm).

Landmark files with two columns are ``x y`` pixels of the slice. Files with three columns are
voxel indices ``i j k`` of the volume (0-based); they are projected by dropping the slice axis,
and only landmarks whose *fixed* through-plane coordinate lies within ``slab`` voxels of the
fixed slice are kept (the same rows of the moving file; their through-plane coordinate cannot
be recovered by a 2-D registration and is ignored).

Intensities are mapped to [0, 1] per slice: the 0.5 and 99.5 percentiles go to 0 and 1, with
clipping (NaNs count as 0).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mibench.datasets.layout import (
    check_data_dir,
    common_prefix,
    find_table,
    read_csv_table,
    resolve_inside,
    scaled,
)
from mibench.datasets.pixels import downscale, rescale_percentiles
from mibench.io import check_file, read_points
from mibench.pairs import Pair, PairInfo

REQUIRED = ("fixed", "moving")
OPTIONAL = ("fixed_landmarks", "moving_landmarks", "fixed_mask", "moving_mask", "id")


@dataclass
class _Volume:
    path: Path
    shape: tuple[int, ...]  # spatial shape (trailing singleton axes dropped)
    index: int  # the slice along the chosen axis (unused for 2-D images)
    spacing: tuple[float, float]  # (x, y) voxel size of the slice, header units


@dataclass
class _NiftiPair:
    id: str
    fixed: _Volume
    moving: _Volume
    fixed_mask: _Volume | None
    moving_mask: _Volume | None
    fixed_landmarks: np.ndarray | None
    moving_landmarks: np.ndarray | None
    meta: dict[str, Any] = field(default_factory=dict)


def _expected_bytes(img) -> int:
    """Bytes a single-file NIfTI needs: the data offset plus the voxel data."""
    header = img.header
    # The loaded image's proxy knows the true offset (the header copy may report 0).
    offset = getattr(img.dataobj, "offset", None)
    offset = int(header.get_data_offset() if offset is None else offset)
    count = int(np.prod(header.get_data_shape()))
    return offset + count * header.get_data_dtype().itemsize


def _check_complete(path: Path, img) -> None:
    """Refuse a ``.nii`` / ``.nii.gz`` file cut short, without reading its data.

    An uncompressed file must hold the data offset plus the data; a gzip file stores its
    uncompressed size (mod 2^32) in its last four bytes. Other formats nibabel reads are not
    checked here (a short file then fails when its pair is loaded).
    """
    name = path.name.lower()
    if not name.endswith((".nii", ".nii.gz")):
        return
    expected = _expected_bytes(img)
    if name.endswith(".gz"):
        with open(path, "rb") as fh:
            fh.seek(-4, 2)
            stored = struct.unpack("<I", fh.read(4))[0]
        if stored != expected % 2**32:
            raise ValueError(f"{path}: truncated or corrupt NIfTI file (gzip size field says "
                             f"{stored} bytes, the header needs {expected})")
    elif path.stat().st_size < expected:
        raise ValueError(f"{path}: truncated NIfTI file ({path.stat().st_size} bytes, the header "
                         f"needs {expected})")


def _open(path: Path, what: str):
    import nibabel as nib

    check_file(path, what)
    try:
        img = nib.load(str(path))
    except Exception as exc:  # nibabel raises several unrelated types for a bad file
        raise ValueError(f"{path}: cannot read {what} as NIfTI "
                         f"({type(exc).__name__}: {exc})".splitlines()[0]) from None
    _check_complete(path, img)
    return img


def _spatial_shape(path: Path, shape: tuple[int, ...]) -> tuple[int, ...]:
    spatial = tuple(shape)
    while len(spatial) > 2 and spatial[-1] == 1:
        spatial = spatial[:-1]
    if len(spatial) not in (2, 3):
        raise ValueError(f"{path}: expected a 2-D image or a 3-D volume, got shape {shape}")
    return spatial


def _remaining(axis: int) -> tuple[int, int]:
    """The two voxel axes left by slicing ``axis``: (row axis, column axis)."""
    rows, cols = (a for a in range(3) if a != axis)
    return rows, cols


class NiftiDataset:
    """Pairs of NIfTI slices from a CSV manifest.

    Parameters
    ----------
    data_dir : Path
        The directory the manifest's paths are relative to.
    manifest : str
        The CSV manifest.
    axis : int
        The voxel axis the slice is taken across (0, 1 or 2; ignored for 2-D images).
    index : int
        The slice index along ``axis``; ``-1`` takes the middle slice of each volume.
    slab : float
        Half-thickness, in voxels, within which 3-D landmarks count as on the slice (>= 0).
    working_scale : float
        In (0, 1]: slices (and landmarks) are resized by it before registration.
    """

    def __init__(self, data_dir: Path, *, manifest: str = "manifest.csv", axis: int = 2,
                 index: int = -1, slab: float = 0.5, working_scale: float = 1.0):
        self.data_dir = check_data_dir(data_dir, "nifti")
        self.manifest = find_table(self.data_dir, manifest, "NIfTI manifest", "manifest")
        self.axis, self.index, self.slab = axis, index, float(slab)
        self.working_scale = float(working_scale)
        self.notes: list[str] = []
        # Blank lines are kept as rows (and skipped below) so that row i is line i + 2 of the
        # file, for the messages.
        frame = read_csv_table(self.manifest, "NIfTI manifest", REQUIRED,
                               f"fixed, moving and optionally {', '.join(OPTIONAL)}",
                               keep_blank_lines=True)
        rows = [(line, values) for line, values in
                enumerate(frame.to_dict("records"), start=2)
                if any(str(v).strip() for v in values.values())]
        ids = [values.get("id", "").strip() or f"{row:03d}"
               for row, (_, values) in enumerate(rows)]
        self._check_unique(ids, [line for line, _ in rows])
        self._pairs: dict[str, _NiftiPair] = {}
        for row, (pair_id, (_, values)) in enumerate(zip(ids, rows, strict=True)):
            where = f"{self.manifest.name}, row {row}"
            self._pairs[pair_id] = self._read_row(pair_id, values, where)

    def _check_unique(self, ids: list[str], lines: list[int]) -> None:
        """Refuse repeated pair ids: one pair would silently replace the other (ids key the
        pairs and the result records). An empty ``id`` cell becomes the row number, which may
        also repeat an explicit id."""
        seen: dict[str, list[int]] = {}
        for pair_id, line in zip(ids, lines, strict=True):
            seen.setdefault(pair_id, []).append(line)
        repeated = [(pair_id, found) for pair_id, found in seen.items() if len(found) > 1]
        if repeated:
            listed = "; ".join(f"{pair_id!r} on lines {', '.join(map(str, found))}"
                               for pair_id, found in repeated)
            raise ValueError(f"{self.manifest}: duplicate pair id(s): {listed}; each row needs "
                             "its own id")

    def _volume(self, rel: str, where: str, what: str) -> _Volume:
        path = resolve_inside(self.data_dir, rel, where)
        img = _open(path, what)
        shape = _spatial_shape(path, img.shape)
        zooms = tuple(float(z) for z in img.header.get_zooms()[: len(shape)])
        if len(shape) == 2:
            return _Volume(path, shape, 0, (zooms[1], zooms[0]))
        depth = shape[self.axis]
        index = depth // 2 if self.index == -1 else self.index
        if index >= depth:
            raise ValueError(f"{path}: slice index {index} is out of range: the volume has "
                             f"{depth} slices along axis {self.axis}")
        rows, cols = _remaining(self.axis)
        return _Volume(path, shape, index, (zooms[cols], zooms[rows]))

    def _landmarks(self, rel: str, where: str, volume: _Volume) -> np.ndarray | None:
        if not rel.strip():
            return None
        path = resolve_inside(self.data_dir, rel, where)
        points = read_points(path)
        if points.shape[1] == 2 or len(volume.shape) == 2:
            if points.shape[1] != 2:
                raise ValueError(f"{path}: expected 2 columns (x y) for a 2-D image, got "
                                 f"{points.shape[1]}")
            return points
        if points.shape[1] != 3:
            raise ValueError(f"{path}: expected 2 columns (x y pixels) or 3 (i j k voxels), got "
                             f"{points.shape[1]}")
        return points

    def _pixels(self, voxels: np.ndarray) -> np.ndarray:
        """Voxel ``(i, j, k)`` rows -> pixel ``(x, y)`` of the slice: the slice axis dropped,
        ``x`` along the slice's columns, ``y`` along its rows."""
        rows, cols = _remaining(self.axis)
        return voxels[:, [cols, rows]]

    def _project(self, fixed: np.ndarray, moving: np.ndarray, volume: _Volume,
                 where: str) -> tuple[np.ndarray, np.ndarray]:
        """Keep the landmarks on the fixed slice; voxel ``(i, j, k)`` -> pixel ``(x, y)``."""
        if fixed.shape[1] == 3:
            on_slice = np.abs(fixed[:, self.axis] - volume.index) <= self.slab
            fixed, moving = fixed[on_slice], moving[on_slice]
            if not len(fixed):
                raise ValueError(f"{where}: no fixed landmark lies within {self.slab:g} voxels "
                                 f"of slice {volume.index} (axis {self.axis})")
            fixed = self._pixels(fixed)
        if moving.shape[1] == 3:
            moving = self._pixels(moving)
        return fixed, moving

    def _read_row(self, pair_id: str, values: dict[str, str], where: str) -> _NiftiPair:
        fixed = self._volume(values["fixed"].strip(), where, "fixed volume")
        moving = self._volume(values["moving"].strip(), where, "moving volume")
        masks = [self._volume(values[c].strip(), where, c.replace("_", " "))
                 if values.get(c, "").strip() else None for c in ("fixed_mask", "moving_mask")]
        for vol, mask in ((fixed, masks[0]), (moving, masks[1])):
            if mask is not None and mask.shape != vol.shape:
                raise ValueError(f"{mask.path}: mask shape {mask.shape} differs from the volume's "
                                 f"{vol.shape} ({vol.path.name})")
            if mask is not None:
                mask.index = vol.index
        f = self._landmarks(values.get("fixed_landmarks", ""), where, fixed)
        m = self._landmarks(values.get("moving_landmarks", ""), where, moving)
        if f is not None and m is not None:
            f, m = common_prefix(f, m, f"{self.manifest.name}, pair {pair_id}", self.notes)
            f, m = self._project(f, m, fixed, where)
        elif m is not None and m.shape[1] == 3:
            m = self._pixels(m)
        elif f is not None and f.shape[1] == 3:
            f, _ = self._project(f, f, fixed, where)
        meta = {"spacing_x": fixed.spacing[0], "spacing_y": fixed.spacing[1]}
        if len(fixed.shape) == 3:
            meta["slice"] = fixed.index
        return _NiftiPair(pair_id, fixed, moving, masks[0], masks[1], f, m, meta)

    def _slice(self, volume: _Volume) -> np.ndarray:
        import nibabel as nib

        try:
            img = nib.load(str(volume.path))
            if len(volume.shape) == 2:
                data = np.asarray(img.dataobj).reshape(volume.shape)
            else:
                slicer: list[Any] = [slice(None)] * len(img.shape)
                slicer[self.axis] = volume.index
                for extra in range(3, len(img.shape)):
                    slicer[extra] = 0
                data = np.asarray(img.dataobj[tuple(slicer)])
        except Exception as exc:
            raise ValueError(f"{volume.path}: cannot read the NIfTI data "
                             f"({type(exc).__name__}: {exc})".splitlines()[0]) from None
        return np.nan_to_num(data.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)

    def _intensity(self, volume: _Volume) -> np.ndarray:
        return rescale_percentiles(self._slice(volume), (0.5, 99.5))

    def pairs(self) -> list[PairInfo]:
        return [PairInfo(p.id, dict(p.meta)) for p in self._pairs.values()]

    def load(self, pair_id: str) -> Pair:
        try:
            p = self._pairs[pair_id]
        except KeyError:
            raise ValueError(f"{self.manifest}: no pair {pair_id!r}") from None
        s = self.working_scale
        masks = [None if v is None else downscale(self._slice(v) != 0, s, order=0)
                 for v in (p.fixed_mask, p.moving_mask)]
        fixed = self._intensity(p.fixed)
        return Pair(
            id=p.id,
            fixed=downscale(fixed, s),
            moving=downscale(self._intensity(p.moving), s),
            fixed_landmarks=scaled(p.fixed_landmarks, s),
            moving_landmarks=scaled(p.moving_landmarks, s),
            fixed_mask=masks[0],
            moving_mask=masks[1],
            native_scale=1.0 / s,
            native_shape=fixed.shape[:2],
            meta=dict(p.meta),
        )


def load_dataset(data_dir: Path | None, **params: Any) -> NiftiDataset:
    """Factory of the ``nifti`` dataset: options checked against the spec's bounds and
    choices, missing ones defaulted (also when called directly from Python)."""
    from mibench.datasets import NIFTI

    return NiftiDataset(data_dir, **NIFTI.resolve(params))

