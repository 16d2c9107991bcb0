"""The ``cmif`` method (``mibench.methods.cmif``): rotation of label images, the coarse-to-fine
shift conversion, the transform convention and recovery of known rigid transforms."""

import math

import numpy as np
import pytest
import torch
from skimage import data
from skimage.transform import resize

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
