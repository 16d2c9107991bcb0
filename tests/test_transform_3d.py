"""4x4 matrix transforms on volumes: points by hand, warping against scipy.ndimage."""

import numpy as np
import pytest
import torch
from scipy import ndimage

from mibench.transform import MatrixTransform, transform_from_dict


def _affine(seed=0):
    """A fixed -> moving voxel affine: rotation about each axis, anisotropic scale, shear and
    translation, about the centre of a (D, H, W) = (14, 18, 22) volume."""
    rng = np.random.default_rng(seed)
    a = np.eye(4)
    a[:3, :3] = np.eye(3) + rng.uniform(-0.12, 0.12, (3, 3))
    centre = np.array([10.5, 8.5, 6.5])  # (x, y, z) of the volume centre
    a[:3, 3] = centre - a[:3, :3] @ centre + rng.uniform(-2, 2, 3)
    return a


def _volume(shape=(14, 18, 22), seed=1):
    rng = np.random.default_rng(seed)
    return ndimage.gaussian_filter(rng.random(shape), 1.5).astype(np.float32)


def _scipy_matrix(t):
    """The (z, y, x) index form of an (x, y, z) voxel transform, for scipy.ndimage."""
    flip = np.eye(4)[[2, 1, 0, 3]]
    return flip @ t @ flip


def test_points_map_by_hand_both_ways():
    t = MatrixTransform([[1, 0, 0, 2.0], [0, 0, -1, 5.0], [0, 1, 0, -1.0], [0, 0, 0, 1]])
    assert t.ndim == 3 and t.is_valid
    points = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    # x' = x + 2, y' = -z + 5, z' = y - 1
    np.testing.assert_allclose(t.fixed_to_moving(points), [[3.0, 2.0, 1.0], [2.0, 5.0, -1.0]])
    np.testing.assert_allclose(t.moving_to_fixed(t.fixed_to_moving(points)), points, atol=1e-12)
    with pytest.raises(ValueError, match=r"3-D transform maps \(K, 3\) points"):
        t.fixed_to_moving(np.zeros((4, 2)))
    with pytest.raises(ValueError, match=r"2-D transform maps \(K, 2\) points"):
        MatrixTransform.identity().fixed_to_moving(np.zeros((4, 3)))


def test_a_volume_warps_as_scipy_affine_transform_does():
    moving = _volume()
    t = _affine()
    fixed_shape = (12, 20, 16)
    ours = MatrixTransform(t).warp(moving, fixed_shape)
    m = _scipy_matrix(t)
    ref = ndimage.affine_transform(moving.astype(np.float64), m[:3, :3], m[:3, 3],
                                   output_shape=fixed_shape, order=1, mode="constant", cval=0.0)
    assert ours.shape == fixed_shape and ours.dtype == np.float32
    # Voxels whose sample lies within one voxel of the edge differ: scipy drops a sample that
    # falls even slightly outside, grid_sample blends it with the zero padding.
    zz, yy, xx = np.indices(fixed_shape)
    pts = np.column_stack([xx.ravel(), yy.ravel(), zz.ravel()]).astype(float)
    mapped = MatrixTransform(t).fixed_to_moving(pts)
    inner = ((mapped >= 1) & (mapped <= np.array(moving.shape[::-1]) - 2)).all(1)
    inner = inner.reshape(fixed_shape)
    assert inner.mean() > 0.3
    np.testing.assert_allclose(ours[inner], ref[inner], atol=1e-5)


def test_channels_tensors_and_padding_in_3d():
    moving = _volume()
    t = MatrixTransform(_affine(2))
    grey = t.warp(moving, moving.shape)
    stacked = t.warp(np.stack([moving, 1 - moving], -1), moving.shape)
    assert stacked.shape == moving.shape + (2,)
    np.testing.assert_allclose(stacked[..., 0], grey, atol=1e-6)
    tensor = torch.from_numpy(np.stack([moving, 1 - moving]))[None]  # (1, C, D, H, W)
    out = t.warp(tensor, moving.shape)
    assert out.shape == (1, 2, *moving.shape)
    np.testing.assert_allclose(out[0, 0].numpy(), grey, atol=1e-6)
    # The identity samples voxel centres exactly ((0, 0, 0) is the first voxel's centre).
    same = MatrixTransform.identity(3).warp(moving, moving.shape)
    np.testing.assert_allclose(same, moving, atol=1e-6)
    # A shift by more than the volume leaves only padding.
    far = np.eye(4)
    far[:3, 3] = 100.0
    assert np.all(MatrixTransform(far).warp(moving, (4, 5, 6), padding_value=0.25) == 0.25)
    with pytest.raises(ValueError, match="3-D transform warps arrays of 3 or 4 axes"):
        t.warp(moving[0], (4, 4))


def test_4x4_round_trips_and_validity():
    t = MatrixTransform(_affine(3))
    back = transform_from_dict(t.to_dict())
    assert isinstance(back, MatrixTransform) and back.ndim == 3
    np.testing.assert_array_equal(back.matrix, t.matrix)
    # A plain translation of 1e4 voxels is invertible, a flat matrix is not.
    shift = np.eye(4)
    shift[:3, 3] = 1e4
    assert MatrixTransform(shift).is_valid
    assert not MatrixTransform(np.diag([1.0, 1.0, 0.0, 1.0])).is_valid
    assert not MatrixTransform(np.full((4, 4), np.nan)).is_valid
    with pytest.raises(ValueError, match="3x3 .* or 4x4"):
        MatrixTransform(np.eye(5))
