"""Audit of the ``cmif`` method and its quantisers against independent references: pairs with a
known rigid transform built with ``skimage.transform.warp`` (fixed px -> moving px, the
contract's convention), label rotation against ``warp(order=0)``, and the quantiser's documented
edge cases."""

import math

import numpy as np
import pytest
import torch
from skimage import data
from skimage.transform import resize, warp

from mibench.estimators.quantise import quantise
from mibench.methods import cmif as M


def _scene(n=300):
    return resize(data.camera().astype(np.float64) / 255, (n, n), anti_aliasing=True)


def _rigid(angle, centre, shift):
    """``T(p) = centre + R(angle) (p - shift - centre)``, fixed px -> moving px."""
    a = math.radians(angle)
    rot = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1.0]])
    cx, cy = centre
    to_c = np.array([[1, 0, cx], [0, 1, cy], [0, 0, 1.0]])
    back = np.array([[1, 0, -shift[0] - cx], [0, 1, -shift[1] - cy], [0, 0, 1.0]])
    return to_c @ rot @ back


def _pair(fixed_shape, moving_shape, true, offset=(110, 100), multimodal=True):
    """fixed(p) = scene(p + offset); moving(q) = fixed(T^-1 q), warped by skimage."""
    scene = _scene()
    ox, oy = offset
    fixed = scene[oy:oy + fixed_shape[0], ox:ox + fixed_shape[1]]
    to_scene = np.array([[1, 0, ox], [0, 1, oy], [0, 0, 1.0]]) @ np.linalg.inv(true)
    moving = warp(scene, to_scene, output_shape=moving_shape, order=3)
    if multimodal:
        moving = 0.5 + 0.45 * np.sin(np.pi * (1.7 * moving + 0.3))
    return fixed.astype(np.float32), moving.astype(np.float32)


def _corners(matrix, shape):
    h, w = shape
    pts = np.array([[0, 0, 1], [w - 1, 0, 1], [0, h - 1, 1], [w - 1, h - 1, 1]], float).T
    return (matrix @ pts)[:2].T


def _angle(matrix):
    return math.degrees(math.atan2(matrix[1, 0], matrix[0, 0]))


@pytest.mark.parametrize("angle", [20.0, 90.0, 137.0, -179.0])
def test_rotate_labels_matches_skimage_nearest_neighbour(angle):
    rng = np.random.default_rng(0)
    for h, w in ((20, 20), (21, 17), (16, 23)):
        lab = rng.integers(0, 5, (h, w))
        out = M.rotate_labels(torch.from_numpy(lab), torch.tensor([angle]))[0].numpy()
        # Canvas pixel q takes the label at c + R(angle) (q - c): warp's inverse map.
        c = ((w - 1) / 2, (h - 1) / 2)
        matrix = _rigid(angle, c, (0.0, 0.0))
        ref = warp(lab.astype(float), matrix, order=0, cval=-1, preserve_range=True)
        # A source point exactly half-way between pixels (every pixel at 90 deg when h + w is
        # odd) is a tie that either rounding may break: compare the others.
        ys, xs = np.mgrid[:h, :w]
        src = np.tensordot(matrix[:2, :2], np.stack([xs, ys]), 1) + matrix[:2, 2, None, None]
        tie = (np.abs(np.abs(src - np.floor(src)) - 0.5) < 1e-6).any(axis=0)
        np.testing.assert_array_equal(out[~tie], ref.astype(int)[~tie])


@pytest.mark.parametrize("fixed_shape, moving_shape, angle, shift, coarse_side", [
    ((64, 80), (56, 48), -12.0, (10.0, 5.0), 128),     # smaller, non-square moving image
    ((48, 40), (80, 72), 15.0, (-10.0, -15.0), 128),   # moving larger than fixed
    ((97, 90), (67, 61), -14.0, (12.0, 9.0), 40),      # reduced sweep, factor 3 not dividing
    ((64, 64), (64, 64), 178.0, (3.0, -2.0), 32),      # near +-180 deg, reduced sweep
])
def test_recovers_skimage_warped_pairs(fixed_shape, moving_shape, angle, shift, coarse_side):
    # Rotation about a point off the moving image's centre.
    centre = ((moving_shape[1] - 1) / 2 + 1.5, (moving_shape[0] - 1) / 2 - 2.0)
    true = _rigid(angle, centre, shift)
    fixed, moving = _pair(fixed_shape, moving_shape, true)
    full = angle > 90
    est = M.rigid_align(fixed, moving, max_angle=180.0 if full else 30.0,
                        angle_step=10.0 if full else 5.0, refine=3, candidates=2,
                        coarse_side=coarse_side).matrix
    assert abs((_angle(est) - angle + 180) % 360 - 180) < 1.0
    assert np.abs(_corners(est, fixed_shape) - _corners(true, fixed_shape)).max() < 1.0


def test_recovers_a_masked_pair():
    true = _rigid(-8.0, (32.5, 34.5), (6.0, 4.0))
    fixed, moving = _pair((81, 75), (70, 66), true)
    fm = np.ones(fixed.shape, bool)
    fm[:, :18] = False
    mm = np.ones(moving.shape, bool)
    mm[52:] = False
    fixed[~fm] = np.random.default_rng(0).random(int((~fm).sum()))
    moving[~mm] = 1.0
    for coarse_side in (128, 30):
        est = M.rigid_align(fixed, moving, fm, mm, max_angle=30.0, angle_step=5.0, refine=3,
                            candidates=2, coarse_side=coarse_side).matrix
        assert np.abs(_corners(est, fixed.shape) - _corners(true, fixed.shape)).max() < 1.0


def test_subpixel_shift_moves_towards_the_true_shift():
    for shift in ((2.5, -3.3), (-4.6, 1.2)):
        true = _rigid(0.0, (39.5, 39.5), shift)
        fixed, moving = _pair((80, 80), (80, 80), true, multimodal=False)
        inputs = M._inputs(fixed, moving, None, None, "cpu")
        kw = {"max_angle": 6.0, "angle_step": 3.0, "refine": 3, "candidates": 1}
        sub = np.array(M.rigid_search(*inputs, subpixel=True, **kw).shift)
        whole = np.array(M.rigid_search(*inputs, subpixel=False, **kw).shift)
        assert np.array_equal(whole, np.round(shift))
        assert (np.abs(sub - shift) <= np.abs(whole - shift) + 1e-9).all()


@pytest.mark.parametrize("subpixel", [False, True])
def test_angle_refinement_has_no_bias_on_a_flat_peak(subpixel):
    # Reference: a pure (integer) translation, true angle 0. Nearest-neighbour rotation of a
    # 96 px label image leaves it unchanged up to about +-0.4 deg, so the CMIF value is flat
    # there; ties used to go to the first (most negative) angle of each round, and the
    # refinement drifted to -0.56 deg (-0.47 with the parabola), a 0.65 px corner error.
    true = _rigid(0.0, (47.5, 47.5), (1.0, 2.0))
    fixed, moving = _pair((96, 96), (96, 96), true, multimodal=False)
    out = M.rigid_search(*M._inputs(fixed, moving, None, None, "cpu"), max_angle=9.0,
                         angle_step=3.0, refine=4, candidates=1, subpixel=subpixel)
    assert abs(out.angle) < 0.1
    assert np.abs(_corners(out.matrix, (96, 96)) - _corners(true, (96, 96))).max() < 0.25


def test_quantile_of_a_constant_image_is_all_zero():
    # The documented result (quantise's Returns): a constant image is all 0, as for the others.
    img = torch.full((1, 1, 8, 9), 0.3)
    mask = torch.ones(1, 1, 8, 9, dtype=torch.bool)
    mask[..., :2, :] = False
    img2 = img.clone()
    img2[~mask] = 0.9  # constant inside the mask only
    for method in ("equal", "quantile", "kmeans"):
        assert torch.equal(quantise(img, 4, method=method), torch.zeros(1, 8, 9, dtype=torch.long))
        lab = quantise(img2, 4, mask, method=method)
        assert (lab[mask[:, 0]] == 0).all() and (lab[~mask[:, 0]] == -1).all()


def test_quantisers_with_few_values_and_ties():
    vals = torch.tensor([0.0, 0.2, 0.2, 0.5, 1.0]).repeat(40)
    img = vals[torch.randperm(200, generator=torch.Generator().manual_seed(0))]
    img = img.reshape(1, 1, 10, 20)
    for method in ("equal", "quantile", "kmeans"):
        for k in (2, 3, 4, 8):
            lab = quantise(img, k, method=method).flatten()
            # Equal values share a label; labels are in range and grow with the value.
            for v in vals.unique():
                assert lab[img.flatten() == v].unique().numel() == 1
            assert 0 <= int(lab.min()) and int(lab.max()) < k
            order = torch.argsort(img.flatten())
            assert (lab[order].diff() >= 0).all()
