"""Audit of the transform conventions and pyramids against independent references.

- ``MatrixTransform.warp`` against ``skimage.transform.warp`` with the same matrix (skimage's
  ``warp(image, inverse_map=M)`` samples the input at ``M @ p`` for every output pixel ``p``, the
  same pull-back as mibench's fixed px -> moving px convention);
- the normalised-coordinate conversion checked point by point with the align_corners=True
  formula ``u = 2x/(W-1) - 1`` written out by hand, for non-square fixed and moving images of
  different sizes;
- ITK's centred affine converted by hand (``p -> A (p - c) + c + t``);
- a pyramid level of a shifted image is aligned, at every level, by the *full-resolution*
  transform converted to normalised coordinates (odd, even and mixed sizes).
"""

import numpy as np
import pytest
import torch
from skimage.transform import warp as skimage_warp

from mibench.methods import itk_convert as ic
from mibench.methods import pyramid as pyr
from mibench.methods import transform_models as tm
from mibench.transform import MatrixTransform

AFFINE = np.array([[1.02, 0.05, 3.3], [-0.04, 0.97, -2.1], [0.0, 0.0, 1.0]])
PERSPECTIVE = np.array([[1.02, 0.05, 3.3], [-0.04, 0.97, -2.1], [1e-3, -5e-4, 1.0]])


def _smooth(shape, seed=0):
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    return gaussian_filter(rng.random(shape), 2.0).astype(np.float32)


@pytest.mark.parametrize("matrix", [AFFINE, PERSPECTIVE])
def test_warp_matches_skimage_warp(matrix):
    moving = _smooth((37, 53))
    fixed_shape = (41, 47)
    t = MatrixTransform(matrix)
    got = t.warp(moving, fixed_shape)
    ref = skimage_warp(moving, matrix, output_shape=fixed_shape, order=1, mode="constant",
                       cval=0.0, preserve_range=True)
    inside = t.warp(np.ones_like(moving), fixed_shape) > 0.999
    assert inside.mean() > 0.5
    np.testing.assert_allclose(got[inside], ref[inside], atol=1e-5)


@pytest.mark.parametrize("matrix", [AFFINE, PERSPECTIVE])
def test_normalised_conversion_by_hand(matrix):
    fixed_shape, moving_shape = (41, 47), (37, 53)  # (H, W), non-square, different sizes
    h_norm = tm.pixel_to_normalised(matrix, fixed_shape, moving_shape)
    pts = np.array([[0.0, 0.0], [46.0, 40.0], [10.0, 20.0], [33.5, 7.25]])
    (hf, wf), (hm, wm) = fixed_shape, moving_shape
    for x, y in pts:
        u = np.array([2 * x / (wf - 1) - 1, 2 * y / (hf - 1) - 1, 1.0])
        q = h_norm @ u
        q = q[:2] / q[2]
        by_hand = [(q[0] + 1) * (wm - 1) / 2, (q[1] + 1) * (hm - 1) / 2]
        np.testing.assert_allclose(by_hand, MatrixTransform(matrix).fixed_to_moving([[x, y]])[0],
                                   atol=1e-10)
    back = tm.normalised_to_pixel(h_norm, fixed_shape, moving_shape)
    np.testing.assert_allclose(back, matrix / matrix[2, 2], atol=1e-12)


def test_itk_centred_affine_by_hand():
    # A 90 degree rotation about c = (10, 5), then t = (1, 2): c itself goes to c + t.
    a = np.array([[0.0, -1.0], [1.0, 0.0]])
    m = ic.itk_affine_to_pixel(a.ravel(), (1.0, 2.0), (10.0, 5.0))
    t = MatrixTransform(m)
    np.testing.assert_allclose(t.fixed_to_moving([[10.0, 5.0]]), [[11.0, 7.0]], atol=1e-12)
    # (11, 5) is c + (1, 0) -> c + A (1, 0) + t = (10, 6) + (1, 2).
    np.testing.assert_allclose(t.fixed_to_moving([[11.0, 5.0]]), [[11.0, 8.0]], atol=1e-12)


def _analytic(shape, matrix=None):
    """A smooth image g(x, y); with ``matrix`` (fixed px -> moving px), g(T^-1 q) on the moving
    grid, so that pulling it back with T gives g."""
    h, w = shape
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    if matrix is not None:
        p = np.stack([xs, ys, np.ones_like(xs)], -1) @ np.linalg.inv(matrix).T
        xs, ys = p[..., 0] / p[..., 2], p[..., 1] / p[..., 2]
    g = 0.5 + 0.2 * np.sin(xs / 7.0 + 0.3) * np.cos(ys / 9.0) + 0.1 * np.sin((xs + 2 * ys) / 11)
    return torch.from_numpy(g)[None, None]


@pytest.mark.parametrize("fixed_shape,moving_shape", [
    ((96, 96), (96, 96)), ((97, 81), (97, 81)), ((96, 70), (81, 99)),
])
def test_pyramid_levels_are_aligned_by_the_full_resolution_transform(fixed_shape, moving_shape):
    truth = np.array([[1.0, 0.0, 3.7], [0.0, 1.0, -2.3], [0.0, 0.0, 1.0]])
    levels = 3
    fixed = pyr.gaussian_pyramid(_analytic(fixed_shape), levels, n=levels)
    moving = pyr.gaussian_pyramid(_analytic(moving_shape, truth), levels, n=levels)
    offsets = np.linspace(-1.0, 1.0, 21)  # full-resolution px added to the true shift
    for s in range(levels):
        out_shape = tuple(fixed[s].shape[-2:])
        for axis in (0, 1):
            errs = []
            for d in offsets:
                t = truth.copy()
                t[axis, 2] += d
                h = torch.from_numpy(tm.pixel_to_normalised(t, fixed_shape, moving_shape))
                warped = tm.warp_normalised(moving[s], h, out_shape)
                valid = tm.warp_normalised(torch.ones_like(moving[s]), h, out_shape) > 0.999
                valid = -torch.nn.functional.max_pool2d(-valid.double(), 7, 1, 3) > 0.5
                valid[..., :4, :] = valid[..., -4:, :] = False
                valid[..., :4] = valid[..., -4:] = False
                errs.append(float(((warped - fixed[s]) ** 2)[valid].mean()))
            best = offsets[int(np.argmin(errs))]
            assert abs(best) <= 0.15, (s, axis, best)
