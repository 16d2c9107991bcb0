"""The images and points of a volume's overlay, in numpy: three orthogonal slices of the fixed
volume and of the warped moving volume, their physical aspect ratios, and the landmarks of a
slab around each slice projected onto it. Drawing them is :mod:`mibench.reports.overlays`'
business; :mod:`mibench.reports.overlay_images` does the same for 2-D images.

Conventions (``CONTRACTS.md``, *Volumes (3-D) and physical space*): a volume is a ``(D, H, W)``
array, a voxel point ``(x, y, z)`` = (index along W, along H, along D), a transform maps fixed
-> moving voxels as a 4x4 matrix. A slice is a 2-D array whose columns run along its
horizontal voxel axis and whose rows run along its vertical one (:data:`PLANES`).

The moving volume is resampled on the slice's plane only, by
:meth:`mibench.transform.MatrixTransform.warp` itself: the transform is composed with the
matrix that places a one-voxel-thick output grid on the plane (and strides it for display), so
a 256³ volume costs three slices, not a whole warp, and no second warp exists to disagree with
the one that scored the registration.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Per plane, named by the voxel axis its slice is normal to: that axis (0 = x, 1 = y, 2 = z)
#: and the in-plane (horizontal, vertical) voxel axes.
PLANES = {"z": (2, (0, 1)), "y": (1, (0, 2)), "x": (0, (1, 2))}

#: The anatomical name of a plane normal to each world (RAS) axis.
VIEW_NAMES = ("sagittal", "coronal", "axial")

#: Landmarks whose fixed point lies within this many voxels of a slice are drawn on it.
SLAB_VOXELS = 8


def grey_volume(image: np.ndarray) -> np.ndarray:
    """``(D, H, W)`` float32 intensities of a ``(D, H, W)`` or ``(D, H, W, C)`` volume."""
    a = np.asarray(image, dtype=np.float32)
    return a.mean(axis=-1) if a.ndim == 4 else a


def _world_axes(geometry) -> np.ndarray:
    """Per voxel axis (x, y, z), its dominant world axis (0 R, 1 A, 2 S) and the sign with which
    it runs along it, as ``(3, 2)`` ints; voxel axes as world axes without a geometry."""
    if geometry is None:
        return np.array([[0, 1], [1, 1], [2, 1]])
    d = np.asarray(geometry.direction, dtype=np.float64)
    out = []
    for i in range(3):
        k = int(np.argmax(np.abs(d[:, i])))
        out.append([k, 1 if d[k, i] >= 0 else -1])
    return np.array(out)


def plane_order(geometry) -> list[str]:
    """The planes (keys of :data:`PLANES`) in the order axial, coronal, sagittal: the voxel axis
    each is normal to is the one that runs closest to the world's S, A and R axis."""
    axes = _world_axes(geometry)[:, 0]
    by_world = {int(w): "xyz"[i] for i, w in enumerate(axes)}
    if len(by_world) < 3:  # an oblique grid with two voxel axes nearest one world axis
        return ["z", "y", "x"]
    return [by_world[2], by_world[1], by_world[0]]


def view_name(plane: str, geometry) -> str:
    """``axial``, ``coronal`` or ``sagittal``: the name of the slice normal to the voxel axis
    ``plane``, by the world axis that voxel axis runs closest to."""
    world = int(_world_axes(geometry)[PLANES[plane][0], 0])
    return VIEW_NAMES[world]


def display_flips(plane: str, geometry) -> tuple[bool, bool]:
    """Whether to flip the slice's horizontal and vertical axes on screen so that its world axes
    increase to the right and upwards (right, anterior, superior: a neurological view), given
    that a slice is drawn with its first row at the bottom."""
    signs = _world_axes(geometry)[:, 1]
    h, v = PLANES[plane][1]
    return bool(signs[h] < 0), bool(signs[v] < 0)


def slice_aspect(plane: str, spacing) -> float:
    """The height / width of one voxel of the slice on screen (``imshow``'s ``aspect``), from the
    fixed volume's ``spacing`` ``(sx, sy, sz)``: anisotropic voxels keep their shape."""
    h, v = PLANES[plane][1]
    s = np.asarray(spacing, dtype=np.float64)
    return float(s[v] / s[h])


def centre_voxel(pair) -> np.ndarray:
    """Where the three slices cross, ``(x, y, z)`` voxel indices of the fixed volume: the
    centre of its landmarks (the mean, rounded), or the volume's centre without landmarks."""
    shape = np.asarray(np.shape(pair.fixed)[:3])[::-1]  # (W, H, D), matching (x, y, z)
    points = pair.fixed_landmarks
    if points is not None and len(points):
        centre = np.asarray(points, dtype=np.float64).reshape(-1, 3).mean(axis=0)
    else:
        centre = (shape - 1) / 2
    return np.clip(np.round(centre), 0, shape - 1).astype(int)


def plane_shape(fixed_shape: tuple[int, int, int], plane: str, step: int) -> tuple[int, ...]:
    """The ``(D, H, W)`` output grid of one slice, strided by ``step``: one voxel thick along the
    plane's normal."""
    size = [-(-n // step) for n in fixed_shape]  # (D, H, W)
    size[2 - PLANES[plane][0]] = 1
    return tuple(size)


def plane_matrix(plane: str, index: int, step: int) -> np.ndarray:
    """The 4x4 map from a voxel of :func:`plane_shape`'s grid to the fixed voxel it stands for:
    in-plane axes scaled by ``step``, the normal axis fixed at ``index``."""
    normal = PLANES[plane][0]
    m = np.diag([float(step)] * 3 + [1.0])
    m[normal, normal] = 0.0
    m[normal, 3] = float(index)
    return m


def fixed_slice(volume: np.ndarray, plane: str, index: int, step: int = 1) -> np.ndarray:
    """The slice of ``volume`` ``(D, H, W)`` through voxel ``index`` along the plane's normal,
    every ``step``-th voxel: rows along the vertical voxel axis, columns along the horizontal
    one (:data:`PLANES`)."""
    v = np.asarray(volume)
    if plane == "z":
        return v[index, ::step, ::step]
    if plane == "y":
        return v[::step, index, ::step]
    return v[::step, ::step, index]


def warp_slice(moving: np.ndarray, transform, fixed_shape: tuple[int, int, int], plane: str,
               index: int, step: int = 1) -> np.ndarray:
    """``transform.warp(moving, fixed_shape)``'s slice through ``index`` (as
    :func:`fixed_slice`), float32.

    A :class:`~mibench.transform.MatrixTransform` (None: the identity) warps the slice alone,
    through its own ``warp`` composed with :func:`plane_matrix`; a non-matrix transform with
    ``fixed_to_moving`` (a B-spline) maps the slice's voxels alone and samples the moving volume
    there trilinearly (:func:`~mibench.reports.overlay_images.sample_mapped`, the samples its
    ``warp`` takes); any other transform warps the whole volume once and is sliced.
    """
    from mibench.reports.overlay_images import sample_mapped
    from mibench.transform import MatrixTransform

    if transform is None:
        transform = MatrixTransform.identity(3)
    if not isinstance(transform, MatrixTransform):
        if not hasattr(transform, "fixed_to_moving"):
            return fixed_slice(transform.warp(moving, tuple(fixed_shape)), plane, index, step)
        shape = plane_shape(fixed_shape, plane, step)
        axes = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij")
        grid = np.column_stack([a.ravel() for a in axes[::-1]])  # (x, y, z) of the grid
        m = plane_matrix(plane, index, step)
        mapped = transform.fixed_to_moving(grid @ m[:3, :3].T + m[:3, 3])
        out = sample_mapped(np.asarray(moving, dtype=np.float32), mapped.reshape(*shape, 3))
        return out.squeeze(axis=2 - PLANES[plane][0])
    placed = MatrixTransform(transform.matrix @ plane_matrix(plane, index, step))
    out = placed.warp(np.asarray(moving, dtype=np.float32), plane_shape(fixed_shape, plane, step))
    return np.asarray(out).squeeze(axis=2 - PLANES[plane][0])


@dataclass(frozen=True)
class SlabVectors:
    """The error vectors of the landmarks near one slice, projected onto it.

    Attributes
    ----------
    fixed, mapped : ndarray ``(K, 2)``
        (horizontal, vertical) voxel coordinates of the slice (full resolution, not strided):
        the fixed landmarks, and the moving landmarks mapped into the fixed frame.
    which : ndarray ``(K,)`` int
        Their rows in the pair's landmarks.
    """

    fixed: np.ndarray
    mapped: np.ndarray
    which: np.ndarray


def slab_vectors(fixed: np.ndarray, mapped: np.ndarray, plane: str, index: int,
                 slab: int = SLAB_VOXELS) -> SlabVectors:
    """The landmarks whose fixed point lies within ``slab`` voxels of the slice through
    ``index`` (``|p_normal - index| <= slab``), with their mapped points, both projected onto
    the slice (the normal coordinate dropped). ``fixed`` and ``mapped`` are ``(K, 3)`` voxel
    points ``(x, y, z)``."""
    normal, (h, v) = PLANES[plane]
    f = np.asarray(fixed, dtype=np.float64).reshape(-1, 3)
    m = np.asarray(mapped, dtype=np.float64).reshape(-1, 3)
    which = np.flatnonzero(np.abs(f[:, normal] - index) <= slab)
    return SlabVectors(f[which][:, [h, v]], m[which][:, [h, v]], which)


__all__ = ["PLANES", "SLAB_VOXELS", "SlabVectors", "centre_voxel", "display_flips",
           "fixed_slice", "grey_volume", "plane_matrix", "plane_order", "plane_shape",
           "slab_vectors", "slice_aspect", "view_name", "warp_slice"]
