"""The ``nifti`` dataset: NIfTI volumes (MRI T1/T2, CT, ...) listed in a CSV manifest.

The manifest (``-o manifest=PATH``, default ``manifest.csv`` in the data directory) has a header
and the columns ``fixed`` and ``moving`` (``.nii`` or ``.nii.gz`` paths relative to the data
directory) and optionally ``fixed_landmarks``, ``moving_landmarks`` (landmark files, see
:func:`mibench.io.read_points`), ``fixed_mask``, ``moving_mask`` (NIfTI volumes, True
where non-zero) and ``id`` (empty: the row number; ids must be unique). Files are read with
nibabel.

Two modes (``mode``):

``volume`` (the default): whole volumes in physical space.
    A volume read by nibabel as ``V[i, j, k]`` becomes the numpy ``(D, H, W)`` array
    ``V.T`` (``CONTRACTS.md``, *Volumes (3-D) and physical space*), so that voxel ``(x, y, z)
    = (i, j, k)``, and carries the file's affine as its
    :class:`~mibench.geometry.Geometry` (``img.affine``: nibabel's choice of sform or qform,
    voxel -> RAS+ millimetres; no reorientation is applied). Errors are then reported in
    voxels and in millimetres. A mask must have its volume's shape and affine. 2-D NIfTI
    images (and volumes one voxel thick) are 2-D images as in ``slice`` mode, without
    geometry; fixed and moving must both be volumes or both 2-D. ``working_scale`` must be 1
    (methods build their own pyramids) and ``index`` is refused (it picks a slice).

``slice``: one 2-D slice of each volume, the affine ignored.
    With ``V = img.dataobj`` in nibabel's voxel order ``(i, j, k)`` and the slice ``S =
    numpy.take(V, index, axis)``, the image is ``S`` as a numpy array: its rows are the
    first remaining voxel axis and its columns the second, so pixel ``(x, y)`` is voxel
    index ``(row y, column x)`` of ``S``. For ``axis=2`` (the usual axial slice), pixel ``(x,
    y)`` is voxel ``(i=y, j=x, k=index)``. Errors are in voxels of the fixed slice; the
    in-plane voxel size is in the pair metadata (``spacing_x``, ``spacing_y``, in the units of
    the header, usually mm). Only the chosen slice is read.

Landmark files. Two columns are ``x y`` pixels of a 2-D image or slice (``slice`` mode, or a
2-D file). Three columns are, by ``landmarks_space``:

- ``voxel`` (the default): voxel indices ``i j k`` (0-based, nibabel's voxel order, voxel
  centres at integers), i.e. ``(x, y, z)`` of the volume;
- ``world``: RAS+ world coordinates ``x y z`` in millimetres (x to the Right, y Anterior, z
  Superior, as nibabel's ``affine`` gives them; ITK/LPS coordinates have x and y negated),
  mapped into each image's voxels through that image's own affine: ``(i, j, k) =
  inv(affine) @ (x, y, z, 1)``.

A CSV file with a header names its columns ``x,y,z`` (any case; other columns such as an index
are ignored); otherwise the first three numbers of a line are taken in that order. In
``volume`` mode every landmark must lie inside its volume (within half a voxel of the outer
voxel centres), which catches world files read as voxels and the reverse. In ``slice`` mode
they are projected by dropping the slice axis, and only landmarks whose *fixed* through-plane
coordinate lies within ``slab`` voxels of the fixed slice are kept (the same rows of the moving
file; their through-plane coordinate cannot be recovered by a 2-D registration and is ignored).

Intensities are mapped to [0, 1] per slice (``slice``) or per volume (``volume``): the 0.5
and 99.5 percentiles go to 0 and 1, with clipping (NaNs count as 0).
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
from mibench.geometry import Geometry
from mibench.io import check_file, read_points
from mibench.pairs import Pair, PairInfo

REQUIRED = ("fixed", "moving")
OPTIONAL = ("fixed_landmarks", "moving_landmarks", "fixed_mask", "moving_mask", "id")

#: How far (in voxels) a landmark may lie beyond the outer voxel centres of its volume: the
#: volume's extent is half a voxel past them.
_INSIDE_TOLERANCE = 0.5


@dataclass
class _Volume:
    path: Path
    shape: tuple[int, ...]  # spatial shape, nibabel's order (trailing singleton axes dropped)
    index: int  # the slice along the chosen axis (unused for 2-D images and whole volumes)
    spacing: tuple[float, ...]  # (x, y) of the slice or 2-D image, (x, y, z) of a volume
    # The file's voxel -> RAS+ map, read where needed: whole volumes, world landmarks.
    world: Geometry | None = None
    geometry: Geometry | None = None  # the pair's geometry: whole volumes only


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


def _geometry(path: Path, img: Any, what: str) -> Geometry:
    """The volume's geometry from nibabel's affine; a singular one is refused naming the
    file."""
    try:
        return Geometry.from_nibabel(img)
    except ValueError as exc:
        raise ValueError(f"{path}: unusable affine of the {what} ({exc}); fix its sform/qform "
                         "or use mode=slice, which ignores it") from None


def _remaining(axis: int) -> tuple[int, int]:
    """The two voxel axes left by slicing ``axis``: (row axis, column axis)."""
    rows, cols = (a for a in range(3) if a != axis)
    return rows, cols


def _kind(volume: _Volume) -> str:
    return "a 3-D volume" if len(volume.shape) == 3 else "a 2-D image"


class NiftiDataset:
    """Pairs of NIfTI volumes (or of their slices) from a CSV manifest.

    Parameters
    ----------
    data_dir : Path
        The directory the manifest's paths are relative to.
    manifest : str
        The CSV manifest.
    mode : {"volume", "slice"}
        Whole volumes with their affine, or one 2-D slice of each (see the module docstring).
    axis : int
        ``slice`` mode: the voxel axis the slice is taken across (0, 1 or 2; ignored for 2-D
        images).
    index : int
        ``slice`` mode: the slice index along ``axis``; ``-1`` takes the middle slice of each
        volume (the only value ``volume`` mode accepts).
    slab : float
        ``slice`` mode: half-thickness, in voxels, within which 3-D landmarks count as on the
        slice (>= 0).
    working_scale : float
        In (0, 1]: slices (and landmarks) are resized by it before registration; 1 in
        ``volume`` mode.
    landmarks_space : {"voxel", "world"}
        What 3-column landmark files hold: voxel indices ``i j k``, or RAS+ world millimetres.

    Raises
    ------
    ValueError
        One line naming the file (or option) for anything the manifest or its files get wrong.
    """

    def __init__(self, data_dir: Path, *, manifest: str = "manifest.csv", mode: str = "volume",
                 axis: int = 2, index: int = -1, slab: float = 0.5, working_scale: float = 1.0,
                 landmarks_space: str = "voxel"):
        if mode not in ("volume", "slice"):
            raise ValueError(f"option 'mode' must be volume or slice, got {mode!r}")
        if landmarks_space not in ("voxel", "world"):
            raise ValueError(f"option 'landmarks_space' must be voxel or world, got "
                             f"{landmarks_space!r}")
        if mode == "volume" and index != -1:
            raise ValueError(f"option 'index' ({index}) picks a slice: add -o mode=slice (the "
                             "default mode registers whole volumes)")
        if mode == "volume" and working_scale != 1:
            raise ValueError(f"option 'working_scale' ({working_scale:g}) applies to "
                             "mode=slice; whole volumes are registered at their resolution")
        self.data_dir = check_data_dir(data_dir, "nifti")
        self.manifest = find_table(self.data_dir, manifest, "NIfTI manifest", "manifest")
        self.mode, self.landmarks_space = mode, landmarks_space
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
        if self.mode == "volume":
            geometry = _geometry(path, img, what)
            return _Volume(path, shape, 0, tuple(geometry.spacing.tolist()), geometry, geometry)
        world = _geometry(path, img, what) if self.landmarks_space == "world" else None
        depth = shape[self.axis]
        index = depth // 2 if self.index == -1 else self.index
        if index >= depth:
            raise ValueError(f"{path}: slice index {index} is out of range: the volume has "
                             f"{depth} slices along axis {self.axis}")
        rows, cols = _remaining(self.axis)
        return _Volume(path, shape, index, (zooms[cols], zooms[rows]), world)

    def _landmarks(self, rel: str, where: str, volume: _Volume) -> np.ndarray | None:
        if not rel.strip():
            return None
        path = resolve_inside(self.data_dir, rel, where)
        points = read_points(path)
        if self.landmarks_space == "world":
            if points.shape[1] != 3 or len(volume.shape) != 3:
                raise ValueError(f"{path}: landmarks_space=world needs 3 columns (x y z, RAS+ "
                                 f"mm) for a 3-D volume, got {points.shape[1]} columns for "
                                 f"{_kind(volume)} ({volume.path.name})")
            points = volume.world.world_to_voxel(points)
        if volume.geometry is not None:  # a whole volume
            if points.shape[1] != 3:
                raise ValueError(f"{path}: expected 3 columns (x y z) for a volume, got "
                                 f"{points.shape[1]} (2-column files are slice pixels: "
                                 "mode=slice)")
            self._check_inside(path, points, volume)
            return points
        if points.shape[1] == 2 or len(volume.shape) == 2:
            if points.shape[1] != 2:
                raise ValueError(f"{path}: expected 2 columns (x y) for a 2-D image, got "
                                 f"{points.shape[1]}")
            return points
        if points.shape[1] != 3:
            raise ValueError(f"{path}: expected 2 columns (x y pixels) or 3 (i j k voxels), got "
                             f"{points.shape[1]}")
        return points

    def _check_inside(self, path: Path, voxels: np.ndarray, volume: _Volume) -> None:
        """Refuse a landmark outside its volume: the file is in the other space, most likely."""
        size = np.asarray(volume.shape, dtype=np.float64)
        outside = ((voxels < -_INSIDE_TOLERANCE)
                   | (voxels > size - 1 + _INSIDE_TOLERANCE)).any(axis=1)
        if outside.any():
            row = int(np.argmax(outside))
            i, j, k = voxels[row]
            hint = ("world files are RAS+ mm (ITK/LPS has x and y negated)"
                    if self.landmarks_space == "world" else
                    "a file of world mm needs -o landmarks_space=world")
            raise ValueError(f"{path}: landmark {row + 1} (of {len(voxels)}) is at voxel "
                             f"({i:.4g}, {j:.4g}, {k:.4g}), outside the "
                             f"{' x '.join(map(str, volume.shape))} volume "
                             f"{volume.path.name}; {hint}")

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

    def _check_mask(self, mask: _Volume, volume: _Volume) -> None:
        if mask.shape != volume.shape:
            raise ValueError(f"{mask.path}: mask shape {mask.shape} differs from the volume's "
                             f"{volume.shape} ({volume.path.name})")
        # A mask on another grid would mask the wrong voxels (1 um: header rounding only).
        if volume.geometry is not None and not np.allclose(mask.world.affine,
                                                           volume.geometry.affine, rtol=0,
                                                           atol=1e-3):
            raise ValueError(f"{mask.path}: mask affine differs from the volume's "
                             f"({volume.path.name}): resample the mask onto the volume's grid")
        mask.index = volume.index

    def _read_row(self, pair_id: str, values: dict[str, str], where: str) -> _NiftiPair:
        fixed = self._volume(values["fixed"].strip(), where, "fixed volume")
        moving = self._volume(values["moving"].strip(), where, "moving volume")
        if (fixed.geometry is None) != (moving.geometry is None):
            raise ValueError(f"{where}: fixed {fixed.path.name} is {_kind(fixed)}, moving "
                             f"{moving.path.name} {_kind(moving)}: both must be volumes or "
                             "both 2-D (or use mode=slice)")
        masks = [self._volume(values[c].strip(), where, c.replace("_", " "))
                 if values.get(c, "").strip() else None for c in ("fixed_mask", "moving_mask")]
        for vol, mask in ((fixed, masks[0]), (moving, masks[1])):
            if mask is not None:
                self._check_mask(mask, vol)
        f = self._landmarks(values.get("fixed_landmarks", ""), where, fixed)
        m = self._landmarks(values.get("moving_landmarks", ""), where, moving)
        whole = fixed.geometry is not None
        if f is not None and m is not None:
            f, m = common_prefix(f, m, f"{self.manifest.name}, pair {pair_id}", self.notes)
            if not whole:
                f, m = self._project(f, m, fixed, where)
        elif whole:
            pass  # voxels (x, y, z) already
        elif m is not None and m.shape[1] == 3:
            m = self._pixels(m)
        elif f is not None and f.shape[1] == 3:
            f, _ = self._project(f, f, fixed, where)
        meta = {"spacing_x": fixed.spacing[0], "spacing_y": fixed.spacing[1]}
        if whole:
            meta["spacing_z"] = fixed.spacing[2]
        elif len(fixed.shape) == 3:
            meta["slice"] = fixed.index
        return _NiftiPair(pair_id, fixed, moving, masks[0], masks[1], f, m, meta)

    def _read(self, volume: _Volume) -> np.ndarray:
        """The voxel data nibabel reads: the whole array (2-D images, whole volumes) or the
        chosen slice, in nibabel's axis order."""
        import nibabel as nib

        try:
            img = nib.load(str(volume.path))
            if len(volume.shape) == 2 or volume.geometry is not None:
                return np.asarray(img.dataobj).reshape(volume.shape)
            slicer: list[Any] = [slice(None)] * len(img.shape)
            slicer[self.axis] = volume.index
            for extra in range(3, len(img.shape)):
                slicer[extra] = 0
            return np.asarray(img.dataobj[tuple(slicer)])
        except Exception as exc:
            raise ValueError(f"{volume.path}: cannot read the NIfTI data "
                             f"({type(exc).__name__}: {exc})".splitlines()[0]) from None

    def _array(self, volume: _Volume, dtype: Any) -> np.ndarray:
        """The image as mibench stores it: a slice or 2-D image as read, a whole volume
        transposed to numpy ``(D, H, W)`` = nibabel ``(k, j, i)``; non-finite values 0."""
        data = self._read(volume).astype(dtype)
        if volume.geometry is not None:
            data = np.ascontiguousarray(data.T)
        return np.nan_to_num(data, nan=0.0, posinf=0.0, neginf=0.0)

    def _intensity(self, volume: _Volume) -> np.ndarray:
        # Slices keep their float64 arithmetic (their results must not change); a volume is
        # float32 throughout, a quarter of the memory at 1 mm.
        dtype = np.float32 if volume.geometry is not None else np.float64
        return rescale_percentiles(self._array(volume, dtype), (0.5, 99.5))

    def _mask(self, volume: _Volume | None) -> np.ndarray | None:
        if volume is None:
            return None
        return downscale(self._array(volume, np.float64) != 0, self.working_scale, order=0)

    def pairs(self) -> list[PairInfo]:
        return [PairInfo(p.id, dict(p.meta)) for p in self._pairs.values()]

    def load(self, pair_id: str) -> Pair:
        try:
            p = self._pairs[pair_id]
        except KeyError:
            raise ValueError(f"{self.manifest}: no pair {pair_id!r}") from None
        s = self.working_scale
        fixed = self._intensity(p.fixed)
        return Pair(
            id=p.id,
            fixed=downscale(fixed, s),
            moving=downscale(self._intensity(p.moving), s),
            fixed_landmarks=scaled(p.fixed_landmarks, s),
            moving_landmarks=scaled(p.moving_landmarks, s),
            fixed_mask=self._mask(p.fixed_mask),
            moving_mask=self._mask(p.moving_mask),
            native_scale=1.0 / s,
            native_shape=fixed.shape[:3 if p.fixed.geometry is not None else 2],
            meta=dict(p.meta),
            fixed_geometry=p.fixed.geometry,
            moving_geometry=p.moving.geometry,
        )


def load_dataset(data_dir: Path | None, **params: Any) -> NiftiDataset:
    """Factory of the ``nifti`` dataset: options checked against the spec's bounds and
    choices, missing ones defaulted (also when called directly from Python)."""
    from mibench.datasets import NIFTI

    return NiftiDataset(data_dir, **NIFTI.resolve(params))
