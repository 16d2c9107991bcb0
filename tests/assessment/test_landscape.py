"""The landscape protocol (mibench.assessment.landscape, .landmarks) against closed forms and
hand computations: analytic profiles with known properties, brute-force MSE profiles,
MatrixTransform.warp one pose at a time, and numpy's lstsq."""

import math

import numpy as np
import pytest
import torch

from mibench.assessment.landmarks import fit_affine
from mibench.assessment.landscape import (
    ParameterSpace,
    accuracy,
    axis_points,
    capture_range,
    distinctiveness,
    evaluate,
    number_of_maxima,
    optimum_indices,
    profiles,
    properties,
    risk_of_nonconvergence,
    sample_lines,
    warp_batch,
)
from mibench.transform import MatrixTransform

STEP = 0.5
M = 20
X = STEP * np.arange(-M, M + 1)  # positions along a line, R = 10


def cone(a=2.0, n=5, centre=0.0):
    return np.tile(-a * np.abs(X - centre), (n, 1))


def masked_mse(fixed, moving, mask=None):
    w = torch.ones_like(fixed[:, :1]) if mask is None else mask.to(fixed.dtype)
    return ((fixed - moving) ** 2 * w).sum(dim=(1, 2, 3)) / w.sum(dim=(1, 2, 3)).clamp_min(1)


def smooth_image(h=24, w=28, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.zeros((h, w))
    for _ in range(6):
        cx, cy, s = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(2, 6)
        img += rng.uniform(0.3, 1) * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * s * s))
    return img.astype(np.float32)


# --------------------------------------------------------------------------- properties


def test_cone_has_perfect_properties():
    v = cone(a=2.0)
    assert accuracy(v, X) == 0.0
    assert number_of_maxima(v, X) == 0.0
    assert risk_of_nonconvergence(v, X) == 0.0
    np.testing.assert_allclose(distinctiveness(v, X, [0.5, 1.0, 5.0, 10.0]), 2.0)
    # No false optimum: censored at the sampled radius, whichever definition.
    assert capture_range(v, X) == pytest.approx(10.0)
    assert capture_range(v, X, to="basin") == pytest.approx(10.0)


def test_quadratic_bowl_distinctiveness_grows_linearly():
    v = np.tile(-3.0 * X**2, (4, 1))
    r = np.array([0.5, 2.0, 7.5])
    np.testing.assert_allclose(distinctiveness(v, X, r), 3.0 * r)
    assert distinctiveness(v, X, 2.0) == pytest.approx(6.0)


def test_lower_is_better_flag_mirrors_the_values():
    v = cone(a=1.5, centre=1.0)
    cost = 7.0 - v
    for f in (accuracy, capture_range, number_of_maxima, risk_of_nonconvergence):
        assert f(cost, X, higher_is_better=False) == pytest.approx(f(v, X))
    assert distinctiveness(cost, X, 1.0, higher_is_better=False) == pytest.approx(1.5)


def test_accuracy_is_rms_of_the_optima():
    v = np.stack([-np.abs(X - c) for c in (1.0, -2.0, 0.0, 0.5)])
    assert accuracy(v, X) == pytest.approx(math.sqrt((1 + 4 + 0 + 0.25) / 4))


def test_ties_go_to_the_gold_standard():
    v = np.zeros((2, X.size))
    np.testing.assert_array_equal(optimum_indices(v, X), [M, M])
    assert accuracy(v, X) == 0.0


def test_offset_optimum_distinctiveness_uses_available_side():
    # Optimum 1 step from the left end: at r = 2 steps only the right side is sampled.
    x = STEP * np.arange(-3, 4)
    v = -np.abs(x - x[1])[None]
    assert distinctiveness(v, x, 2 * STEP) == pytest.approx(1.0)


def planted(a=2.0, h=4.0, spikes=((3.0, 1), (5.0, -1), (8.0, 1))):
    """A cone with one single-sample spike of height h per line at distance d on side s
    (h < a d: the spike stays below the true optimum; h > a STEP: it is a local maximum)."""
    v = cone(a=a, n=len(spikes))
    for n, (d, side) in enumerate(spikes):
        v[n, M + side * round(d / STEP)] += h
    return v


def test_capture_range_is_the_distance_to_the_planted_maximum():
    v = planted()
    np.testing.assert_allclose(capture_range(v, X, reduce=None), [3.0, 5.0, 8.0])
    assert capture_range(v, X) == pytest.approx(3.0)
    assert capture_range(v, X, reduce="mean") == pytest.approx(16.0 / 3)
    # The basin ends at the local minimum one step before each spike.
    np.testing.assert_allclose(capture_range(v, X, to="basin", reduce=None),
                               [3.0 - STEP, 5.0 - STEP, 8.0 - STEP])


def test_number_of_maxima_counts_the_planted_ones_within_r():
    v = planted()
    assert number_of_maxima(v, X) == pytest.approx(1.0)
    np.testing.assert_allclose(number_of_maxima(v, X, [2.0, 3.0, 6.0, 10.0]),
                               [0.0, 1 / 3, 2 / 3, 1.0])


def test_risk_of_nonconvergence_is_the_wrong_way_rise_per_length():
    a, h = 2.0, 4.0
    v = planted(a=a, h=h)
    rise = h - a * STEP  # the step into the spike; out of it the cone falls by h + a * STEP
    np.testing.assert_allclose(risk_of_nonconvergence(v, X, 10.0), rise / 20.0)
    # r = 4: only the first line's spike (d = 3) lies within; each line walked 2r = 8.
    assert risk_of_nonconvergence(v, X, 4.0) == pytest.approx(rise / 8.0 / 3)
    assert risk_of_nonconvergence(v, X, 2.0) == 0.0
    assert risk_of_nonconvergence(v, X) == pytest.approx(rise / 20.0)


def test_plateau_counts_once_and_ends_never():
    x = np.arange(9.0) - 5
    v = np.array([[5.0, 1.0, 3.0, 3.0, 1.0, 9.0, 0.0, 3.0, 4.0]])
    # The plateau at x = -3, -2 is one maximum, 2 from the optimum; the left end (5 > 1) and
    # the rise to the right end are cut off by the line, not maxima.
    assert number_of_maxima(v, x) == 1.0
    assert capture_range(v, x) == pytest.approx(2.0)
    assert capture_range(v, x, to="basin") == pytest.approx(1.0)
    v[0, 2] = 4.0  # no longer a plateau: still one maximum, now 3 away
    assert number_of_maxima(v, x) == 1.0 and capture_range(v, x) == pytest.approx(3.0)


def test_properties_bundle():
    p = properties(planted(), X, do_radii=[0.5, 1.0])
    assert p.acc == 0.0 and p.cr == pytest.approx(3.0) and p.nom == pytest.approx(1.0)
    np.testing.assert_allclose(p.do, [2.0, 2.0])


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="finite"):
        accuracy(np.full((1, 5), np.nan), np.arange(5.0))
    with pytest.raises(ValueError, match="multiples"):
        distinctiveness(cone(), X, 0.3)
    with pytest.raises(ValueError, match="increasing"):
        accuracy(np.zeros((1, 3)), [0.0, 0.0, 1.0])


# --------------------------------------------------------------------------- sampling, space


def test_lines_are_seeded_unit_and_symmetric():
    a = sample_lines(6, 50, 4, 12.0, seed=3)
    b = sample_lines(6, 50, 4, 12.0, seed=3)
    np.testing.assert_array_equal(a.points, b.points)
    assert not np.array_equal(a.directions, sample_lines(6, 50, 4, 12.0, seed=4).directions)
    np.testing.assert_allclose(np.linalg.norm(a.directions, axis=1), 1.0)
    np.testing.assert_allclose(a.positions, np.linspace(-12, 12, 9))
    assert a.points.shape == (50, 9, 6)
    np.testing.assert_allclose(np.linalg.norm(a.points, axis=2), np.abs(a.positions)[None] *
                               np.ones((50, 1)))


def test_parameter_space_conventions():
    space = ParameterSpace.for_image("affine", (21, 41))
    assert space.center == (20.0, 10.0) and space.radius == 10.5
    gold = np.array([[1.1, 0.1, 3.0], [-0.2, 0.9, -1.0], [0, 0, 1]])
    np.testing.assert_allclose(space.transforms(np.zeros(6), gold), gold)
    c = np.array([20.0, 10.0, 1.0])
    # Rotation, scale and shear keep the centre; a unit of each moves a point at rho by ~1 px.
    for i in (2, 3, 4, 5):
        p = np.zeros(6)
        p[i] = 1.0
        a = space.perturbation(p)
        np.testing.assert_allclose(a @ c, c, atol=1e-12)
        # A point at rho along the axis the parameter acts on (y for log_scale_y and shear).
        q = c + (np.array([0, 10.5, 0]) if i in (4, 5) else np.array([10.5, 0, 0]))
        assert np.linalg.norm(a @ q - q) == pytest.approx(1.0, rel=0.06)
    # Translation moves every point by (tx, ty) px; physical units.
    a = space.perturbation([3.0, -2.0, 0, 0, 0, 0])
    np.testing.assert_allclose(a @ np.array([0.0, 0.0, 1.0]), [3.0, -2.0, 1.0])
    np.testing.assert_allclose(space.to_physical(np.ones(6))[:3],
                               [1.0, 1.0, math.degrees(1 / 10.5)])
    # Positive rotation turns +x towards +y.
    a = space.perturbation([0, 0, space.from_physical([0, 0, 90, 0, 0, 0])[2], 0, 0, 0])
    np.testing.assert_allclose(a @ (c + [1, 0, 0]), c + [0, 1, 0], atol=1e-12)
    rigid = ParameterSpace.for_image("rigid", (21, 41))
    np.testing.assert_allclose(rigid.perturbation([1, 2, 3]),
                               space.perturbation([1, 2, 3, 0, 0, 0]))


def test_axis_points():
    offsets, pts = axis_points(3, 2, [1.0, 2.0, 4.0])
    np.testing.assert_allclose(offsets[2], [-4, -2, 0, 2, 4])
    assert pts.shape == (3, 5, 3)
    np.testing.assert_allclose(pts[1, :, 1], offsets[1])
    assert (pts[1, :, [0, 2]] == 0).all()


# --------------------------------------------------------------------------- evaluation


def test_batched_warp_matches_matrix_transform_warp():
    img = smooth_image()
    moving = torch.from_numpy(img)[None, None]
    space = ParameterSpace.for_image("affine", img.shape)
    gold = np.array([[0.95, 0.05, 1.3], [-0.04, 1.02, -0.7], [0, 0, 1]])
    pts = sample_lines(6, 3, 2, 4.0, seed=1).points.reshape(-1, 6)
    mats = space.transforms(pts, gold)
    warped, inside = warp_batch(moving, mats, img.shape)
    assert warped.shape == (len(pts), 1, *img.shape) and inside.dtype == torch.bool
    for b, m in enumerate(mats):
        one = MatrixTransform(m).warp(moving, img.shape)
        torch.testing.assert_close(warped[b:b + 1], one, rtol=0, atol=1e-6)
        mapped = MatrixTransform(m).fixed_to_moving(
            np.stack(np.meshgrid(np.arange(img.shape[1]), np.arange(img.shape[0])), -1)
            .reshape(-1, 2))
        expect = ((mapped[:, 0] >= -1e-6) & (mapped[:, 0] <= img.shape[1] - 1 + 1e-6)
                  & (mapped[:, 1] >= -1e-6) & (mapped[:, 1] <= img.shape[0] - 1 + 1e-6))
        np.testing.assert_array_equal(inside[b, 0].numpy().ravel(), expect)


def test_mask_of_a_translation():
    moving = torch.rand(1, 2, 10, 12)
    warped, inside = warp_batch(moving, np.array([[[1, 0, 3], [0, 1, 0], [0, 0, 1.0]]]),
                                (10, 12))
    assert inside[0, 0, :, :9].all() and not inside[0, 0, :, 9:].any()
    torch.testing.assert_close(warped[0, :, :, :9], moving[0, :, :, 3:])


def test_mse_profile_of_a_shifted_image_against_brute_force():
    img = smooth_image(20, 30, seed=2)
    shift = 2  # moving(x) = fixed(x - 2): the gold standard maps fixed x to moving x + 2
    moving_np = np.zeros_like(img)
    moving_np[:, shift:] = img[:, :-shift]
    fixed_np = img
    fixed = torch.from_numpy(fixed_np)[None, None]
    moving = torch.from_numpy(moving_np)[None, None]
    gold = np.array([[1.0, 0, shift], [0, 1, 0], [0, 0, 1]])
    space = ParameterSpace.for_image("rigid", img.shape)
    calls = []

    def measure(f, m, mask=None):
        calls.append(f.shape[0])
        return masked_mse(f, m, mask)

    prof = profiles(measure, fixed, moving, gold, space, extent=5.0, points_per_side=5,
                    batch_size=4)
    assert calls == [4] * 8 + [1]  # 3 parameters x 11 points
    h, w = img.shape
    brute = []
    for t in range(-5, 6):
        total, count = 0.0, 0
        for y in range(h):
            for x in range(w):
                xm = x + shift + t
                if 0 <= xm < w:
                    total += (float(fixed_np[y, x]) - float(moving_np[y, xm])) ** 2
                    count += 1
        brute.append(total / count)
    np.testing.assert_allclose(prof.offsets[0], np.arange(-5, 6))
    np.testing.assert_allclose(prof.values[0], brute, rtol=1e-5, atol=1e-9)
    assert prof.values[0].argmin() == 5 and prof.values[0][5] == pytest.approx(0, abs=1e-12)
    assert prof.names == ("tx", "ty", "rotation") and prof.units == ("px", "px", "deg")


def test_evaluate_keeps_the_points_shape_and_fixed_mask():
    img = smooth_image(12, 12)
    fixed = torch.from_numpy(img)[None, None]
    space = ParameterSpace.for_image("rigid", img.shape)
    lines = sample_lines(3, 4, 3, 2.0, seed=0)
    seen = []

    def measure(f, m, mask=None):
        seen.append(mask.sum(dim=(1, 2, 3)))
        return masked_mse(f, m, mask)

    fmask = torch.zeros(1, 1, 12, 12, dtype=torch.bool)
    fmask[..., 3:9, 3:9] = True
    vals = evaluate(measure, fixed, fixed, np.eye(3), space, lines.points, fixed_mask=fmask)
    assert vals.shape == (4, 7)
    assert (torch.cat(seen) <= 36).all()
    assert accuracy(vals, lines.positions, higher_is_better=False) == 0.0


# --------------------------------------------------------------------------- landmarks


def test_fit_affine_recovers_an_exact_affine():
    rng = np.random.default_rng(0)
    a = np.array([[1.1, -0.2, 5.0], [0.15, 0.9, -3.0], [0, 0, 1]])
    f = rng.uniform(0, 100, (7, 2))
    m = MatrixTransform(a).fixed_to_moving(f)
    fit, rms = fit_affine(f, m)
    np.testing.assert_allclose(fit, a, atol=1e-10)
    assert rms == pytest.approx(0, abs=1e-9)


def test_fit_affine_rms_matches_lstsq():
    rng = np.random.default_rng(1)
    f = rng.uniform(0, 100, (12, 2))
    m = f @ np.array([[1.0, 0.1], [-0.1, 1.0]]).T + [2, 3] + rng.normal(0, 0.5, (12, 2))
    _, rms = fit_affine(f, m)
    _, res, _, _ = np.linalg.lstsq(np.column_stack([f, np.ones(12)]), m, rcond=None)
    assert rms == pytest.approx(math.sqrt(res.sum() / 12))
    with pytest.raises(ValueError, match="collinear"):
        fit_affine([[0, 0], [1, 1], [2, 2]], [[0, 0], [1, 1], [2, 2]])


def test_protocol_end_to_end_on_a_picture():
    """Lines through the identity of a picture against itself: MSE and NCC peak at the gold
    standard on every line, and the quoted properties are finite and consistent."""
    from skimage import data, transform

    img = transform.resize(data.camera().astype(np.float32) / 255, (48, 48),
                           anti_aliasing=True).astype(np.float32)
    fixed = torch.from_numpy(img)[None, None]
    space = ParameterSpace.for_image("affine", img.shape)
    lines = sample_lines(space.dim, 6, 4, 4.0, seed=7)

    def ncc(f, m, mask=None):
        w = mask.to(f.dtype)
        n = w.sum(dim=(1, 2, 3))
        fc = f - (f * w).sum(dim=(1, 2, 3), keepdim=True) / n[:, None, None, None]
        mc = m - (m * w).sum(dim=(1, 2, 3), keepdim=True) / n[:, None, None, None]
        num = (fc * mc * w).sum(dim=(1, 2, 3))
        return num / ((fc**2 * w).sum(dim=(1, 2, 3)) * (mc**2 * w).sum(dim=(1, 2, 3))).sqrt()

    for measure, higher in ((masked_mse, False), (ncc, True)):
        vals = evaluate(measure, fixed, fixed, np.eye(3), space, lines.points, batch_size=16)
        p = properties(vals, lines.positions, higher_is_better=higher)
        assert p.acc == 0.0 and p.cr > 0 and p.nom >= 0 and p.ron >= 0
        assert (p.do > 0).all()
