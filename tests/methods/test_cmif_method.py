"""The ``cmif`` method (``mibench.methods.cmif``): rotation of label images, the coarse-to-fine
shift conversion, the transform convention and recovery of known rigid transforms, also of pairs
warped by scikit-image (an independent reference of the convention)."""

import math

import numpy as np
import pytest
import torch
from skimage import data
from skimage.transform import resize, warp

import mibench
from mibench.methods import cmif as M
from mibench.transform import MatrixTransform


def test_rotate_labels_matches_numpy_at_right_angles():
    lab = torch.arange(7 * 7).reshape(7, 7)
    out = M.rotate_labels(lab, torch.tensor([0.0, 90.0, 180.0, -90.0]))
    assert torch.equal(out[0], lab)
    # Canvas pixel q takes the label at c + R(a)(q - c): +90 deg is numpy's rot90 (k=1).
    for k, a in ((1, 1), (2, 2), (3, -1)):
        assert np.array_equal(out[k].numpy(), np.rot90(lab.numpy(), a))


def test_rotate_labels_marks_pixels_from_outside_the_image_or_mask():
    lab = torch.zeros(9, 15, dtype=torch.long)
    lab[4, 7] = -1  # a masked-out centre pixel stays masked at every angle
    out = M.rotate_labels(lab, torch.tensor([45.0]))[0]
    assert out[0, 0] == -1 and out[4, 7] == -1 and out[4, 6] == 0


def test_fine_shift_is_the_conjugated_coarse_transform():
    rng = np.random.default_rng(0)
    for factor, fine in ((2, (64, 80)), (3, (61, 47)), (4, (100, 101))):
        coarse_shape = (fine[0] // factor, fine[1] // factor)
        angle = float(rng.uniform(-40, 40))
        cdy, cdx = (int(v) for v in rng.integers(-5, 6, 2))
        cc = ((coarse_shape[1] - 1) / 2, (coarse_shape[0] - 1) / 2)
        coarse = M.RigidResult(angle, (cdx, cdy), 0.0, cc).matrix
        g = np.array([[factor, 0, (factor - 1) / 2], [0, factor, (factor - 1) / 2], [0, 0, 1]])
        expected = g @ coarse @ np.linalg.inv(g)
        dx, dy = M._fine_shift((cdy, cdx), angle, factor, coarse_shape, fine)
        fc = ((fine[1] - 1) / 2, (fine[0] - 1) / 2)
        np.testing.assert_allclose(M.RigidResult(angle, (dx, dy), 0.0, fc).matrix, expected,
                                   atol=1e-9)


def test_top_peaks():
    v = [0.1, 0.5, 0.2, 0.9, 0.3, -math.inf, 0.4, 0.4, 0.0, 0.6]
    assert M._top_peaks(v, 3, circular=True) == [3, 9, 1]
    assert M._top_peaks(v, 5, circular=False) == [3, 9, 1, 6]


def _pair(angle_deg, shift, size=96, margin=40):
    """A multimodal pair: the fixed image is the centre of camera(); the moving image sees the
    same scene through T (rotation about the centre plus a shift), with a non-monotonic
    intensity map. Returns fixed, moving and the true fixed -> moving matrix."""
    big = resize(data.camera().astype(np.float32) / 255, (size + 2 * margin,) * 2,
                 anti_aliasing=True).astype(np.float32)
    fixed = big[margin:margin + size, margin:margin + size]
    c = (size - 1) / 2
    a = math.radians(angle_deg)
    rot = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    tr = np.array([[1, 0, c + shift[0]], [0, 1, c + shift[1]], [0, 0, 1.0]])
    back = np.array([[1, 0, -c], [0, 1, -c], [0, 0, 1.0]])
    true = tr @ rot @ back  # fixed px -> moving px
    # moving(q) = scene(T^-1 q); the scene's fixed-frame pixel p is big pixel p + margin.
    to_big = np.array([[1, 0, margin], [0, 1, margin], [0, 0, 1.0]]) @ np.linalg.inv(true)
    seen = MatrixTransform(to_big).warp(big, (size, size))
    moving = (0.5 + 0.45 * np.sin(np.pi * (1.7 * seen + 0.3))).astype(np.float32)
    return fixed, moving, true


def _corner_error(est, true, size):
    pts = np.array([[0, 0], [size - 1, 0], [0, size - 1], [size - 1, size - 1]], float)
    return np.abs(MatrixTransform(est).fixed_to_moving(pts)
                  - MatrixTransform(true).fixed_to_moving(pts)).max()


@pytest.mark.parametrize("angle, shift, coarse_side", [
    (17.0, (6.0, -4.0), 128),   # sweep at full resolution
    (-23.0, (-9.0, 5.0), 48),   # reduced sweep (factor 2), then full-resolution refinement
])
def test_recovers_a_known_rigid_transform_across_modalities(angle, shift, coarse_side):
    fixed, moving, true = _pair(angle, shift)
    t = M.rigid_align(fixed, moving, max_angle=40.0, angle_step=4.0, coarse_side=coarse_side)
    assert isinstance(t, MatrixTransform)
    est_angle = math.degrees(math.atan2(t.matrix[1, 0], t.matrix[0, 0]))
    assert abs(est_angle - angle) < 1.0
    assert _corner_error(t.matrix, true, 96) < 1.5


def test_integer_peak_without_subpixel_is_on_the_grid():
    fixed, moving, true = _pair(0.0, (5.0, -7.0))
    out = M.rigid_search(torch.from_numpy(fixed)[None, None],
                         torch.from_numpy(moving)[None, None], max_angle=6.0, angle_step=3.0,
                         subpixel=False)
    # T(p) = p + (5, -7): moving pixel q lies on fixed pixel q - (5, -7), i.e. shift (-5, 7).
    assert out.shift == (-5.0, 7.0)
    assert out.angle == pytest.approx(0.0, abs=1.0)
    assert np.allclose(out.matrix[:2, 2], true[:2, 2], atol=1.0)


def test_method_is_registered_and_returns_an_output_with_info():
    fixed, moving, true = _pair(8.0, (3.0, 2.0))
    mask = np.ones_like(fixed, dtype=bool)
    mask[:10] = False
    method = mibench.method("cmif", max_angle=15.0, angle_step=5.0, refine=2, candidates=1)
    out = method(fixed, moving, fixed_mask=mask, moving_mask=np.ones_like(mask))
    assert out.transform.is_valid
    assert {"value", "angle_deg", "shift_px", "angles_evaluated"} <= set(out.info)
    assert out.info["angles_evaluated"] >= 7
    assert _corner_error(out.transform.matrix, true, 96) < 2.0


def test_bad_options_raise():
    x = torch.rand(1, 1, 20, 20)
    with pytest.raises(ValueError):
        M.rigid_search(x, x, angle_step=0)
    with pytest.raises(ValueError):
        M.rigid_search(torch.rand(2, 1, 20, 20), x)


def test_highpass_removes_smooth_content_and_ignores_pixels_outside_the_mask():
    yy, xx = torch.meshgrid(torch.arange(40.0), torch.arange(50.0), indexing="ij")
    ramp = (0.02 * xx + 0.01 * yy)[None, None]
    # A linear ramp is its own Gaussian blur away from the border (and, normalised, at it
    # up to the one-sided bias): the high-pass is ~0 in the interior.
    out = M.highpass(ramp, None, 2.0)
    assert out[..., 8:-8, 8:-8].abs().max() < 1e-5
    assert torch.equal(M.highpass(ramp, None, 0.0), ramp)
    mask = torch.zeros(1, 1, 40, 50, dtype=torch.bool)
    mask[..., :, :25] = True
    spoiled = ramp.clone()
    spoiled[..., :, 25:] = 100.0  # outside the mask: must not leak into the masked pixels
    a, b = M.highpass(ramp, mask, 3.0), M.highpass(spoiled, mask, 3.0)
    assert torch.allclose(a[..., :25], b[..., :25], atol=1e-5)


# --------------------------------------------------------------------------------------------
# Against independent references: pairs with a known rigid transform built with
# skimage.transform.warp (fixed px -> moving px, the contract's convention), label rotation
# against warp(order=0)


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


def _warped_pair(fixed_shape, moving_shape, true, offset=(110, 100), multimodal=True):
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
    fixed, moving = _warped_pair(fixed_shape, moving_shape, true)
    full = angle > 90
    est = M.rigid_align(fixed, moving, max_angle=180.0 if full else 30.0,
                        angle_step=10.0 if full else 5.0, refine=3, candidates=2,
                        coarse_side=coarse_side).matrix
    assert abs((_angle(est) - angle + 180) % 360 - 180) < 1.0
    assert np.abs(_corners(est, fixed_shape) - _corners(true, fixed_shape)).max() < 1.0


def test_recovers_a_masked_pair():
    true = _rigid(-8.0, (32.5, 34.5), (6.0, 4.0))
    fixed, moving = _warped_pair((81, 75), (70, 66), true)
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
        fixed, moving = _warped_pair((80, 80), (80, 80), true, multimodal=False)
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
    fixed, moving = _warped_pair((96, 96), (96, 96), true, multimodal=False)
    out = M.rigid_search(*M._inputs(fixed, moving, None, None, "cpu"), max_angle=9.0,
                         angle_step=3.0, refine=4, candidates=1, subpixel=subpixel)
    assert abs(out.angle) < 0.1
    assert np.abs(_corners(out.matrix, (96, 96)) - _corners(true, (96, 96))).max() < 0.25
