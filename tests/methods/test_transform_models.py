"""Matrix-exponential transform model, normalised <-> pixel conversion, and the Gaussian pyramid."""

import math

import numpy as np
import pytest
import scipy.linalg
import scipy.ndimage
import torch
from helpers.registration import AFFINE, PERSPECTIVE

from mibench.methods import pyramid as pyr
from mibench.methods.transform_models import (
    basis_matrices,
    matrix_exp_transform,
    normalised_to_pixel,
    pixel_to_normalised,
    pixel_to_normalised_matrix,
    taylor_exp_transform,
    warp_normalised,
)
from mibench.transform import MatrixTransform


def taylor10(c):
    out = np.eye(3)
    term = np.eye(3)
    for k in range(1, 10):
        term = term @ c / k
        out = out + term
    return out


@pytest.mark.parametrize("kind,n", [("affine", 6), ("perspective", 8)])
def test_basis(kind, n):
    b = basis_matrices(kind, dtype=torch.float64).numpy()
    assert b.shape == (n, 3, 3)
    assert np.linalg.matrix_rank(b.reshape(n, 9)) == n
    np.testing.assert_allclose(np.trace(b, axis1=1, axis2=2), 0)  # sl(3)
    assert b[0, 0, 2] == 1 and b[1, 1, 2] == 1 and b[2, 0, 1] == 1 and b[3, 1, 0] == 1
    np.testing.assert_array_equal(np.diag(b[4]), [1, -1, 0])
    np.testing.assert_array_equal(np.diag(b[5]), [0, -1, 1])
    if kind == "affine":
        np.testing.assert_array_equal(b[:, 2, :2], 0)  # no perspective row
    else:
        assert b[6, 2, 0] == 1 and b[7, 2, 1] == 1


@pytest.mark.parametrize("kind,n", [("affine", 6), ("perspective", 8)])
def test_matrix_exp_against_taylor_and_scipy(kind, n):
    rng = np.random.default_rng(7)
    for scale in (0.05, 0.3):
        v = rng.normal(scale=scale, size=n)
        c = np.einsum("i,ijk->jk", v, basis_matrices(kind, dtype=torch.float64).numpy())
        got = matrix_exp_transform(torch.tensor(v), kind).numpy()
        np.testing.assert_allclose(got, scipy.linalg.expm(c), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(got, taylor10(c), rtol=1e-6, atol=1e-8)
        ours = taylor_exp_transform(torch.tensor(v), kind, terms=10).numpy()
        np.testing.assert_allclose(ours, taylor10(c), rtol=1e-12, atol=1e-14)
    eye = matrix_exp_transform(torch.zeros(n), kind)
    torch.testing.assert_close(eye, torch.eye(3))


def test_matrix_exp_batched_differentiable_and_checked():
    v = torch.zeros(4, 6, dtype=torch.float64, requires_grad=True)
    h = matrix_exp_transform(v)
    assert h.shape == (4, 3, 3)
    assert torch.autograd.gradcheck(lambda x: matrix_exp_transform(x, "perspective"),
                                    (torch.full((8,), 0.1, dtype=torch.float64,
                                                requires_grad=True),))
    with pytest.raises(ValueError):
        matrix_exp_transform(torch.zeros(8), "affine")
    with pytest.raises(ValueError):
        matrix_exp_transform(torch.zeros(6), "rigid")


def test_affine_group_gives_affine_pixel_matrix():
    v = torch.tensor([0.1, -0.2, 0.05, -0.03, 0.1, 0.2], dtype=torch.float64)
    p = normalised_to_pixel(matrix_exp_transform(v), (40, 50), (30, 60))
    np.testing.assert_allclose(p[2], [0, 0, 1], atol=1e-12)


FIXED_SHAPE = (30, 40)  # (H, W)
MOVING_SHAPE = (36, 28)


def known_pixel_transforms():
    a = np.deg2rad(7)
    affine = np.array([[1.05 * np.cos(a), -np.sin(a), 3.2], [np.sin(a), 0.95 * np.cos(a), -1.7],
                       [0, 0, 1]])
    persp = affine.copy()
    persp[2, :2] = [4e-4, -3e-4]
    return [affine, persp]


@pytest.mark.parametrize("pixel", known_pixel_transforms())
def test_conversion_roundtrip_and_points(pixel):
    h = pixel_to_normalised(pixel, FIXED_SHAPE, MOVING_SHAPE)
    back = normalised_to_pixel(h, FIXED_SHAPE, MOVING_SHAPE)
    np.testing.assert_allclose(back, pixel / pixel[2, 2], rtol=1e-12, atol=1e-12)
    # Points: fixed px -> normalised -> H -> moving normalised -> moving px == pixel matrix.
    rng = np.random.default_rng(0)
    pts = rng.uniform([0, 0], [39, 29], size=(10, 2))
    hf, wf = FIXED_SHAPE
    hm, wm = MOVING_SHAPE
    u = np.column_stack([2 * pts[:, 0] / (wf - 1) - 1, 2 * pts[:, 1] / (hf - 1) - 1])
    un = MatrixTransform(h).fixed_to_moving(u)
    moving_px = np.column_stack([(un[:, 0] + 1) * (wm - 1) / 2, (un[:, 1] + 1) * (hm - 1) / 2])
    np.testing.assert_allclose(moving_px, MatrixTransform(pixel).fixed_to_moving(pts), atol=1e-9)
    # ...and back from moving pixels to fixed pixels.
    np.testing.assert_allclose(MatrixTransform(back).moving_to_fixed(moving_px), pts, atol=1e-9)


@pytest.mark.parametrize("matrix", [AFFINE, PERSPECTIVE])
def test_normalised_conversion_by_hand(matrix):
    """Point by point with the align_corners=True formula ``u = 2x/(W-1) - 1`` written out by
    hand, for non-square fixed and moving images of different sizes."""
    fixed_shape, moving_shape = (41, 47), (37, 53)  # (H, W), non-square, different sizes
    h_norm = pixel_to_normalised(matrix, fixed_shape, moving_shape)
    pts = np.array([[0.0, 0.0], [46.0, 40.0], [10.0, 20.0], [33.5, 7.25]])
    (hf, wf), (hm, wm) = fixed_shape, moving_shape
    for x, y in pts:
        u = np.array([2 * x / (wf - 1) - 1, 2 * y / (hf - 1) - 1, 1.0])
        q = h_norm @ u
        q = q[:2] / q[2]
        by_hand = [(q[0] + 1) * (wm - 1) / 2, (q[1] + 1) * (hm - 1) / 2]
        np.testing.assert_allclose(by_hand, MatrixTransform(matrix).fixed_to_moving([[x, y]])[0],
                                   atol=1e-10)
    back = normalised_to_pixel(h_norm, fixed_shape, moving_shape)
    np.testing.assert_allclose(back, matrix / matrix[2, 2], atol=1e-12)


def test_pixel_to_normalised_matrix_corners():
    n = pixel_to_normalised_matrix((30, 40))
    corners = np.array([[0, 0, 1], [39, 29, 1]], dtype=float) @ n.T
    np.testing.assert_allclose(corners[:, :2], [[-1, -1], [1, 1]])


@pytest.mark.parametrize("pixel", known_pixel_transforms())
def test_warp_normalised_matches_pixel_warp(pixel):
    g = torch.Generator().manual_seed(0)
    moving = torch.rand(2, 3, *MOVING_SHAPE, generator=g, dtype=torch.float64)
    h = torch.tensor(pixel_to_normalised(pixel, FIXED_SHAPE, MOVING_SHAPE))
    got = warp_normalised(moving, h, FIXED_SHAPE)
    ref = MatrixTransform(pixel).warp(moving, FIXED_SHAPE)
    assert got.shape == (2, 3, *FIXED_SHAPE)
    torch.testing.assert_close(got, ref.to(torch.float64), atol=1e-5, rtol=0)


def test_warp_normalised_identity_and_gradient():
    g = torch.Generator().manual_seed(0)
    img = torch.rand(1, 1, 16, 20, generator=g)
    torch.testing.assert_close(warp_normalised(img, torch.eye(3), (16, 20)), img)
    v = torch.zeros(6, requires_grad=True)
    out = warp_normalised(img, matrix_exp_transform(v), (16, 20))
    ((out - img.roll(1, -1)) ** 2).mean().backward()
    assert torch.isfinite(v.grad).all() and v.grad.abs().sum() > 0


# ---------------------------------------------------------------------------------- pyramid


def test_level_shapes():
    assert pyr.level_shapes((256, 256), 4) == [(256, 256), (128, 128), (64, 64), (32, 32)]
    assert pyr.level_shapes((256, 256), 6) == [(256, 256), (128, 128), (64, 64), (32, 32)]
    assert pyr.level_shapes((255, 301), 3, 16) == [(255, 301), (128, 151), (64, 76)]
    assert pyr.level_shapes((100, 300), 4) == [(100, 300), (50, 150)]
    assert pyr.level_shapes((20, 20), 4) == [(20, 20)]
    assert pyr.num_levels((1941, 1941), 6) == 6


def test_gaussian_blur_matches_scipy():
    rng = np.random.default_rng(0)
    img = rng.random((2, 3, 21, 17))
    sigma = 2 * 2 / 6
    got = pyr.gaussian_blur(torch.tensor(img), sigma).numpy()
    # torch "reflect" padding is scipy's "mirror".
    ref = scipy.ndimage.gaussian_filter(img, sigma=(0, 0, sigma, sigma), mode="mirror")
    np.testing.assert_allclose(got, ref, atol=1e-10)


def test_pyramid_keeps_normalised_coordinates_aligned():
    # A linear ramp in normalised coordinates stays the same ramp at every level.
    h, w = 101, 130
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    ramp = (0.3 * xs - 0.2 * ys)[None, None].double()
    levels = pyr.gaussian_pyramid(ramp, 4, min_size=8)
    assert [tuple(x.shape[-2:]) for x in levels] == pyr.level_shapes((h, w), 4, 8)
    for lvl in levels:
        lh, lw = lvl.shape[-2:]
        yy, xx = torch.meshgrid(torch.linspace(-1, 1, lh), torch.linspace(-1, 1, lw),
                                indexing="ij")
        expected = (0.3 * xx - 0.2 * yy).double()
        # Away from the border (reflect padding bends the ramp there).
        torch.testing.assert_close(lvl[0, 0, 3:-3, 3:-3], expected[3:-3, 3:-3], atol=1e-6,
                                   rtol=0)
    const = torch.full((1, 2, 40, 50), 0.7)
    for lvl in pyr.gaussian_pyramid(const, 3, min_size=8):
        torch.testing.assert_close(lvl, torch.full_like(lvl, 0.7))
    assert len(pyr.gaussian_pyramid(const, 5, min_size=8, n=2)) == 2


def test_mask_pyramid():
    assert pyr.mask_pyramid(None, 3) == [None, None, None]
    full = torch.ones(1, 1, 64, 50, dtype=torch.bool)
    masks = pyr.mask_pyramid(full, 3)
    assert [tuple(m.shape[-2:]) for m in masks] == [(64, 50), (32, 25), (16, 13)]
    assert all(m.all() for m in masks)
    part = full.clone()
    part[..., :, 30:] = False
    masks = pyr.mask_pyramid(part, 3)
    for m in masks:
        assert m.dtype == torch.bool
        lw = m.shape[-1]
        cols = torch.nonzero(m[0, 0].all(dim=0)).flatten()
        # Valid columns of a level lie inside the valid fraction of the full image.
        assert cols.max() * 49 / (lw - 1) <= 29 + 1e-6
        assert m[..., :2].all()
    assert math.isclose(float(masks[1].float().mean()), 14 / 25, abs_tol=0.1)


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
    """A pyramid level of a shifted image is aligned, at every level, by the full-resolution
    transform converted to normalised coordinates (odd, even and mixed sizes)."""
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
                h = torch.from_numpy(pixel_to_normalised(t, fixed_shape, moving_shape))
                warped = warp_normalised(moving[s], h, out_shape)
                valid = warp_normalised(torch.ones_like(moving[s]), h, out_shape) > 0.999
                valid = -torch.nn.functional.max_pool2d(-valid.double(), 7, 1, 3) > 0.5
                valid[..., :4, :] = valid[..., -4:, :] = False
                valid[..., :4] = valid[..., -4:] = False
                errs.append(float(((warped - fixed[s]) ** 2)[valid].mean()))
            best = offsets[int(np.argmin(errs))]
            assert abs(best) <= 0.15, (s, axis, best)
