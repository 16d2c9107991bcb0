"""The transform convention: fixed pixel (x, y) -> moving pixel, pull-back warping."""

import numpy as np
import pytest
import torch
from helpers.registration import AFFINE, PERSPECTIVE, smooth_image
from scipy import ndimage
from skimage.transform import warp as skimage_warp

from mibench.transform import MatrixTransform, transform_from_dict


def random_affine(rng, perspective=False):
    a = np.eye(3)
    a[:2, :2] += rng.normal(0, 0.1, (2, 2))
    a[:2, 2] = rng.normal(0, 5, 2)
    if perspective:
        a[2, :2] = rng.normal(0, 1e-3, 2)
    return a


@pytest.mark.parametrize("perspective", [False, True])
def test_points_round_trip(perspective):
    rng = np.random.default_rng(1)
    t = MatrixTransform(random_affine(rng, perspective))
    pts = rng.uniform(0, 100, (20, 2))
    np.testing.assert_allclose(t.moving_to_fixed(t.fixed_to_moving(pts)), pts, atol=1e-9)
    np.testing.assert_allclose(t.fixed_to_moving(t.moving_to_fixed(pts)), pts, atol=1e-9)


def test_known_translation_direction():
    # T maps fixed (x, y) to moving (x + 3, y - 2): moving content at (10, 5) appears at (7, 7).
    t = MatrixTransform([[1, 0, 3], [0, 1, -2], [0, 0, 1]])
    np.testing.assert_allclose(t.fixed_to_moving([[7, 7]]), [[10, 5]])
    np.testing.assert_allclose(t.moving_to_fixed([[10, 5]]), [[7, 7]])
    moving = np.zeros((20, 30), np.float32)
    moving[5, 10] = 1.0  # row 5, column 10 = (x=10, y=5)
    warped = t.warp(moving, (20, 30))
    assert warped[7, 7] == pytest.approx(1.0)
    assert warped.sum() == pytest.approx(1.0)


@pytest.mark.parametrize("perspective", [False, True])
def test_warp_agrees_with_point_mapping(perspective):
    """Warped value at fixed pixel p equals the moving image interpolated at T(p) (SciPy)."""
    rng = np.random.default_rng(7)
    moving = ndimage.gaussian_filter(rng.random((60, 80)), 2).astype(np.float32)
    t = MatrixTransform(random_affine(rng, perspective))
    fixed_shape = (50, 70)
    warped = t.warp(moving, fixed_shape)
    ys, xs = np.mgrid[0:50, 0:70]
    mapped = t.fixed_to_moving(np.column_stack([xs.ravel(), ys.ravel()]))
    ref = ndimage.map_coordinates(moving.astype(np.float64), [mapped[:, 1], mapped[:, 0]],
                                  order=1, mode="constant", cval=0.0).reshape(fixed_shape)
    inside = ((mapped[:, 0] >= 0) & (mapped[:, 0] <= 79) & (mapped[:, 1] >= 0)
              & (mapped[:, 1] <= 59)).reshape(fixed_shape)
    assert inside.mean() > 0.5
    np.testing.assert_allclose(warped[inside], ref[inside], atol=1e-4)
    assert np.all(warped[~inside] < 1.0)


def test_warp_tensor_batch_and_rgb_array():
    rng = np.random.default_rng(3)
    t = MatrixTransform(random_affine(rng))
    rgb = rng.random((40, 40, 3)).astype(np.float32)
    out = t.warp(rgb, (30, 35))
    assert out.shape == (30, 35, 3)
    batch = torch.from_numpy(rgb).permute(2, 0, 1)[None].repeat(2, 1, 1, 1)
    out_t = t.warp(batch, (30, 35))
    assert out_t.shape == (2, 3, 30, 35)
    np.testing.assert_allclose(out_t[1].permute(1, 2, 0).numpy(), out, atol=1e-6)


def test_padding_value():
    t = MatrixTransform([[1, 0, 100], [0, 1, 0], [0, 0, 1]])  # everything maps outside
    out = t.warp(np.zeros((10, 10), np.float32), (10, 10), padding_value=0.5)
    np.testing.assert_allclose(out, 0.5)


def test_validity_and_serialisation():
    assert MatrixTransform.identity().is_valid
    assert not MatrixTransform(np.zeros((3, 3))).is_valid
    assert not MatrixTransform([[1, 0, np.nan], [0, 1, 0], [0, 0, 1]]).is_valid
    # Scale-free: a far translation is a valid (if bad) result, a singular linear part is not,
    # however far it translates.
    for shift in (1e4, 2e4, 1e7):
        assert MatrixTransform([[1, 0, shift], [0, 1, -shift], [0, 0, 1]]).is_valid
        assert not MatrixTransform([[1, 2, shift], [0.5, 1, 0], [0, 0, 1]]).is_valid
    assert not MatrixTransform([[1e-13, 0, 0], [0, 1, 0], [0, 0, 1]]).is_valid
    assert MatrixTransform([[1.1, 0.1, 5e3], [-0.1, 0.9, 3], [1e-4, -2e-4, 1]]).is_valid
    t = MatrixTransform(random_affine(np.random.default_rng(0), True))
    back = transform_from_dict(t.to_dict())
    np.testing.assert_array_equal(back.matrix, t.matrix)
    with pytest.raises(ValueError):
        MatrixTransform(np.eye(2))


@pytest.mark.parametrize("matrix", [AFFINE, PERSPECTIVE])
def test_warp_matches_skimage_warp(matrix):
    """skimage's ``warp(image, inverse_map=M)`` samples the input at ``M @ p`` for every output
    pixel ``p``: the same pull-back as mibench's fixed px -> moving px convention."""
    moving = smooth_image((37, 53))
    fixed_shape = (41, 47)
    t = MatrixTransform(matrix)
    got = t.warp(moving, fixed_shape)
    ref = skimage_warp(moving, matrix, output_shape=fixed_shape, order=1, mode="constant",
                       cval=0.0, preserve_range=True)
    inside = t.warp(np.ones_like(moving), fixed_shape) > 0.999
    assert inside.mean() > 0.5
    np.testing.assert_allclose(got[inside], ref[inside], atol=1e-5)
