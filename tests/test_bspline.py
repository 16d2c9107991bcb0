"""The B-spline FFD transform: evaluation, inverse, warp, refinement, energy, storage, ITK."""

import itertools
import json

import numpy as np
import pytest
import torch
from scipy import ndimage
from scipy.interpolate import BSpline

from mibench.bspline import (
    EMBED_LIMIT,
    INVERSE_TOLERANCE,
    BSplineTransform,
    ControlGrid,
    DenseField,
    FieldSampler,
    bending_energy,
    crop_coefficients,
    displacement_field,
    evaluate,
    field_at,
    field_on_grid,
    fixed_box,
    from_sitk,
    refine_coefficients,
    to_sitk,
)
from mibench.transform import MatrixTransform, Transform, transform_from_dict

AFFINE = np.array([[1.04, 0.08, 3.0], [-0.06, 0.97, -2.5], [0.0, 0.0, 1.0]])
# The centred cubic B-spline from SciPy's knots, independent of mibench's weights.
BETA = BSpline.basis_element(np.arange(-2.0, 3.0), extrapolate=False)


def beta(t):
    return np.nan_to_num(BETA(np.asarray(t, dtype=np.float64)))


def reference_displacement(t: BSplineTransform, q: np.ndarray) -> np.ndarray:
    """``u(q)`` as the direct sum over all control points of tensor-product basis functions."""
    g = t.grid
    out = np.zeros_like(q)
    for k in itertools.product(*[range(s) for s in g.shape]):  # (i_x, i_y[, i_z])
        w = np.ones(len(q))
        for axis, i in enumerate(k):
            w = w * beta((q[:, axis] - g.origin[axis]) / g.spacing[axis] - i)
        out += w[:, None] * t.coefficients[(slice(None), *k[::-1])][None]
    return out


def random_transform(seed=0, shape=(60, 80), spacing=16.0, amplitude=2.0, affine=AFFINE):
    rng = np.random.default_rng(seed)
    t = BSplineTransform.over(shape, spacing, affine)
    t.coefficients = rng.normal(0.0, amplitude, t.grid.coefficient_shape)
    return t


def pixel_points(shape):
    ys, xs = np.mgrid[: shape[0], : shape[1]]
    return np.column_stack([xs.ravel(), ys.ravel()]).astype(np.float64)


# ------------------------------------------------------------------------ the grid


def test_grid_covers_the_mapped_fixed_image_like_elastix():
    t = BSplineTransform.over((60, 80), 16.0, AFFINE)
    corners = MatrixTransform(AFFINE).fixed_to_moving([[0, 0], [79, 0], [0, 59], [79, 59]])
    low, high = t.grid.domain
    assert np.all(low <= corners.min(0)) and np.all(high >= corners.max(0))
    # Centred, with ceil(extent / spacing) cells and mesh + 3 points.
    extent = corners.max(0) - corners.min(0)
    np.testing.assert_allclose((low + high) / 2, (corners.min(0) + corners.max(0)) / 2)
    assert t.grid.shape == tuple(int(np.ceil(e / 16)) + 3 for e in extent)
    with pytest.raises(ValueError, match="at least 4"):
        ControlGrid((0, 0), (1, 1), (3, 5))


def test_is_a_transform():
    t = random_transform()
    assert isinstance(t, Transform) and t.is_valid
    t.coefficients[0, 0, 0] = np.nan
    assert not t.is_valid
    assert not BSplineTransform.over((10, 10), 4.0, np.diag([1.0, 0.0, 1.0])).is_valid


# ----------------------------------------------------------------- point mapping


def test_points_match_a_direct_sum_of_scipy_basis_functions():
    t = random_transform(1)
    pts = np.random.default_rng(2).uniform(-30, 110, (300, 2))  # inside, edge and outside
    q = MatrixTransform(AFFINE).fixed_to_moving(pts)
    np.testing.assert_allclose(t.fixed_to_moving(pts), q + reference_displacement(t, q),
                               atol=1e-10)


def test_far_points_keep_the_affine_and_nan_stays_nan():
    t = random_transform(1)
    pts = np.array([[1e4, -1e4], [np.nan, 3.0]])
    out = t.fixed_to_moving(pts)
    np.testing.assert_allclose(out[0], MatrixTransform(AFFINE).fixed_to_moving(pts[:1])[0])
    assert np.isnan(out[1]).all()


def test_3d_points_match_a_direct_sum():
    rng = np.random.default_rng(3)
    affine = np.eye(4)
    affine[:3, :3] += rng.normal(0, 0.05, (3, 3))
    affine[:3, 3] = [1.0, -2.0, 0.5]
    t = BSplineTransform.over((12, 16, 20), 6.0, affine)
    t.coefficients = rng.normal(0, 1.5, t.grid.coefficient_shape)
    pts = rng.uniform(-5, 22, (80, 3))
    q = MatrixTransform(affine).fixed_to_moving(pts)
    np.testing.assert_allclose(t.fixed_to_moving(pts), q + reference_displacement(t, q),
                               atol=1e-10)
    back = t.moving_to_fixed(t.fixed_to_moving(pts))
    np.testing.assert_allclose(back, pts, atol=1e-6)


def test_analytic_jacobian_matches_central_differences():
    t = random_transform(4)
    pts = np.random.default_rng(5).uniform(0, 79, (20, 2))
    e = 1e-5
    fd = np.stack([(t.fixed_to_moving(pts + d) - t.fixed_to_moving(pts - d)) / (2 * e)
                   for d in (np.array([e, 0]), np.array([0, e]))], axis=-1)
    np.testing.assert_allclose(t.jacobian(pts), fd, atol=1e-7)


# ------------------------------------------------------------------------- inverse


def test_inverse_round_trip_within_the_stated_tolerance():
    t = random_transform(6, amplitude=3.0)
    pts = np.random.default_rng(7).uniform(-5, 85, (500, 2))
    moving = t.fixed_to_moving(pts)
    back = t.moving_to_fixed(moving)
    assert np.isfinite(back).all()
    # The residual in moving pixels is what the tolerance bounds ...
    assert np.abs(t.fixed_to_moving(back) - moving).max() <= INVERSE_TOLERANCE
    # ... and the field is far from folding here, so the preimage is as close.
    assert np.abs(back - pts).max() <= 10 * INVERSE_TOLERANCE


def test_inverse_marks_unconverged_points_nan():
    t = random_transform(8, amplitude=3.0)
    moving = t.fixed_to_moving(np.random.default_rng(9).uniform(0, 79, (50, 2)))
    assert np.isnan(t.moving_to_fixed(moving, iterations=0)).all()
    nan_in = moving.copy()
    nan_in[3] = np.nan
    back = t.moving_to_fixed(nan_in)
    assert np.isnan(back[3]).all() and np.isfinite(np.delete(back, 3, axis=0)).all()


def test_inverse_of_a_folding_field_restarts_from_the_lattice():
    """Plain Newton from ``q = m`` loses points of a large, folding field; the restart finds a
    preimage of each (a continuous map equal to the identity far away takes every value), and
    every answer satisfies the tolerance."""
    from mibench.bspline.inverse import newton_solve

    folded = random_transform(10, amplitude=12.0)
    targets = np.random.default_rng(11).uniform(0, 79, (400, 2))
    plain = newton_solve(folded.coefficients, folded.grid, targets, targets.copy(),
                    INVERSE_TOLERANCE, 8)
    assert not plain.all()
    back = folded.moving_to_fixed(targets, iterations=8)
    assert np.isfinite(back).all()
    residual = np.abs(folded.fixed_to_moving(back) - targets).max()
    assert residual <= INVERSE_TOLERANCE


# ------------------------------------------------------------------- torch fields


def test_torch_fields_match_numpy_evaluation():
    t = random_transform(12)
    c = torch.tensor(t.coefficients)
    q = np.random.default_rng(13).uniform(-40, 120, (200, 2))
    np.testing.assert_allclose(field_at(c, t.grid, torch.tensor(q)).numpy().T,
                               evaluate(t.coefficients, t.grid, q), atol=1e-12)
    xs, ys = np.linspace(-40, 120, 9), np.linspace(-30, 100, 7)
    sep = field_on_grid(c, t.grid, [torch.tensor(xs), torch.tensor(ys)]).numpy()
    gx, gy = np.meshgrid(xs, ys)
    ref = evaluate(t.coefficients, t.grid, np.column_stack([gx.ravel(), gy.ravel()]))
    np.testing.assert_allclose(sep.reshape(2, -1).T, ref, atol=1e-12)


@pytest.mark.parametrize("affine", [np.eye(3), np.diag([1.1, 0.9, 1.0]), AFFINE])
def test_dense_displacement_field_both_paths(affine):
    """The separable (axis-aligned A) and gather (general A) paths give u(A(p))."""
    shape = (20, 30)
    t = random_transform(14, shape=shape, spacing=8.0, affine=affine)
    u = displacement_field(torch.tensor(t.coefficients), t.grid, shape, affine).numpy()
    pts = pixel_points(shape)
    ref = t.fixed_to_moving(pts) - MatrixTransform(affine).fixed_to_moving(pts)
    np.testing.assert_allclose(u.reshape(2, -1).T, ref, atol=1e-12)


@pytest.mark.parametrize("aligned", [True, False])
def test_3d_dense_field_both_paths(aligned):
    rng = np.random.default_rng(30)
    affine = np.diag([1.1, 0.9, 1.05, 1.0])
    affine[:3, 3] = [0.5, -1.0, 2.0]
    if not aligned:
        affine[:3, :3] += rng.normal(0, 0.05, (3, 3))
    shape = (7, 9, 11)
    t = BSplineTransform.over(shape, 4.0, affine)
    t.coefficients = rng.normal(0, 1, t.grid.coefficient_shape)
    u = displacement_field(torch.tensor(t.coefficients), t.grid, shape, affine).numpy()
    zs, ys, xs = np.mgrid[:7, :9, :11]
    pts = np.column_stack([xs.ravel(), ys.ravel(), zs.ravel()]).astype(np.float64)
    ref = t.fixed_to_moving(pts) - MatrixTransform(affine).fixed_to_moving(pts)
    np.testing.assert_allclose(u.reshape(3, -1).T, ref, atol=1e-12)


def test_dense_field_object_is_reusable_and_its_grid_matches_the_transform():
    t = random_transform(31, shape=(24, 32), spacing=8.0)
    field = DenseField(t.grid, (24, 32), AFFINE)
    c = torch.tensor(t.coefficients, requires_grad=True)
    grid = field.sampling_grid(c, (30, 40))
    assert grid.shape == (1, 24, 32, 2)
    torch.testing.assert_close(grid.float(), t.sampling_grid((24, 32), (30, 40)))
    mapped = t.fixed_to_moving(pixel_points((24, 32)))
    expected = 2 * mapped / [39, 29] - 1
    np.testing.assert_allclose(grid.detach().numpy().reshape(-1, 2), expected, atol=1e-12)
    grid.sum().backward()
    assert c.grad is not None and c.grad.abs().sum() > 0
    # Called again with other coefficients, it gives their field.
    torch.testing.assert_close(field(-c.detach()), -field(c.detach()))


def test_interpolated_dense_field_stays_within_its_bound():
    t = random_transform(41, shape=(96, 128), spacing=16.0, amplitude=3.0)
    c = torch.tensor(t.coefficients)
    exact = DenseField(t.grid, (96, 128), AFFINE)(c)
    fast = DenseField(t.grid, (96, 128), AFFINE, exact=False)(c)
    # The bound from the field's second derivatives, sampled finely over the mapped image.
    h = 0.25
    axes = [np.arange(-20, 150, h), np.arange(-20, 120, h)]
    f = field_on_grid(c, t.grid, [torch.tensor(a) for a in axes]).numpy()
    uxx = np.abs(np.gradient(np.gradient(f, h, axis=2), h, axis=2)).max(axis=(1, 2))
    uyy = np.abs(np.gradient(np.gradient(f, h, axis=1), h, axis=1)).max(axis=(1, 2))
    error = (fast - exact).abs().amax(dim=(1, 2)).numpy()
    assert np.all(error > 0) and np.all(error <= 1.05 * (uxx + uyy) / 8)
    c.requires_grad_(True)
    DenseField(t.grid, (96, 128), AFFINE, exact=False)(c).sum().backward()
    assert c.grad.abs().sum() > 0


def test_sampler_gives_nan_for_nan_points():
    t = random_transform(32)
    out = FieldSampler(t.grid, np.array([[np.nan, 1.0], [10.0, 10.0]]))(
        torch.tensor(t.coefficients))
    assert torch.isnan(out[:, 0]).all() and torch.isfinite(out[:, 1]).all()


def test_dense_field_is_differentiable_in_the_coefficients():
    t = random_transform(15, shape=(12, 14), spacing=6.0, affine=AFFINE)
    c = torch.tensor(t.coefficients, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda x: displacement_field(x, t.grid, (12, 14), AFFINE), (c,))
    c2 = torch.tensor(t.coefficients, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: displacement_field(x, t.grid, (12, 14)), (c2,))


def test_batched_coefficients():
    t = random_transform(16, shape=(10, 12), spacing=5.0)
    c = torch.tensor(np.stack([t.coefficients, -t.coefficients]))
    u = displacement_field(c, t.grid, (10, 12), AFFINE)
    assert u.shape == (2, 2, 10, 12)
    torch.testing.assert_close(u[1], -u[0])


# --------------------------------------------------------------------------- warp


def test_warp_matches_scipy_on_the_mapped_grid():
    rng = np.random.default_rng(17)
    moving = ndimage.gaussian_filter(rng.random((70, 90)), 2).astype(np.float32)
    shape = (60, 80)
    t = random_transform(18, shape=shape, amplitude=3.0)
    warped = t.warp(moving, shape)
    mapped = t.fixed_to_moving(pixel_points(shape))
    ref = ndimage.map_coordinates(moving.astype(np.float64), [mapped[:, 1], mapped[:, 0]],
                                  order=1, mode="constant", cval=0.0).reshape(shape)
    inside = ((mapped[:, 0] >= 0) & (mapped[:, 0] <= 89) & (mapped[:, 1] >= 0)
              & (mapped[:, 1] <= 69)).reshape(shape)
    assert inside.mean() > 0.5
    np.testing.assert_allclose(warped[inside], ref[inside], atol=1e-4)
    # Tensors stay tensors, channels and padding as MatrixTransform.
    tensor = torch.from_numpy(np.stack([moving, 2 * moving]))[None]
    out = t.warp(tensor, shape, padding_value=-1.0)
    assert out.shape == (1, 2, *shape)
    torch.testing.assert_close(out[0, 1][torch.from_numpy(inside)],
                               2 * torch.from_numpy(warped[inside]), atol=1e-4, rtol=0)
    far = ((mapped[:, 0] <= -1) | (mapped[:, 0] >= 90) | (mapped[:, 1] <= -1)
           | (mapped[:, 1] >= 70)).reshape(shape)
    assert far.any() and (out[0, 0][torch.from_numpy(far)] == -1.0).all()


def test_zero_field_warps_as_its_affine():
    moving = np.random.default_rng(19).random((40, 50)).astype(np.float32)
    t = BSplineTransform.over((40, 50), 10.0, AFFINE)
    np.testing.assert_allclose(t.warp(moving, (40, 50)),
                               MatrixTransform(AFFINE).warp(moving, (40, 50)), atol=1e-5)


# --------------------------------------------------------------------- refinement


@pytest.mark.parametrize("ndim", [2, 3])
def test_refinement_keeps_the_field_everywhere(ndim):
    rng = np.random.default_rng(20)
    shape = (30, 40) if ndim == 2 else (10, 12, 14)
    t = BSplineTransform.over(shape, 8.0 if ndim == 2 else 5.0)
    t.coefficients = rng.normal(0, 2, t.grid.coefficient_shape)
    fine = t.refined()
    assert fine.grid.spacing == tuple(h / 2 for h in t.grid.spacing)
    pts = rng.uniform(-30, 70, (400, ndim))  # well beyond the grid too
    np.testing.assert_allclose(fine.fixed_to_moving(pts), t.fixed_to_moving(pts), atol=1e-10)
    twice, grid = refine_coefficients(*refine_coefficients(t.coefficients, t.grid))
    np.testing.assert_allclose(evaluate(twice, grid, pts), evaluate(t.coefficients, t.grid, pts),
                               atol=1e-10)


@pytest.mark.parametrize("ndim", [2, 3])
def test_cropping_keeps_the_field_on_the_box(ndim):
    """After two refinements most points lie far from the image; the cropped grid keeps the
    field on the box exactly, the box inside its ITK domain, and fewer points."""
    rng = np.random.default_rng(21)
    shape = (60, 80) if ndim == 2 else (20, 24, 28)
    t = BSplineTransform.over(shape, 16.0 if ndim == 2 else 10.0)
    t.coefficients = rng.normal(0, 2, t.grid.coefficient_shape)
    c, g = refine_coefficients(*refine_coefficients(t.coefficients, t.grid))
    low, high = fixed_box(shape, np.eye(ndim + 1))
    cc, cg = crop_coefficients(c, g, low, high)
    assert cc.shape == cg.coefficient_shape and np.prod(cg.shape) < np.prod(g.shape)
    d_low, d_high = cg.domain
    assert (d_low <= low).all() and (d_high >= high).all()
    pts = rng.uniform(0, 1, (500, ndim)) * (high - low) + low
    np.testing.assert_allclose(evaluate(cc, cg, pts), evaluate(t.coefficients, t.grid, pts),
                               atol=1e-10)
    # One point fewer on either side would change the field on the box.
    assert (d_low > low - cg.spacing).all() and (d_high < high + cg.spacing).all()


def test_least_squares_resampling():
    t = random_transform(33, shape=(40, 50), spacing=16.0)
    # Onto the halved grid, where the spline is representable: exact to solver precision.
    fine = t.resampled(t.grid.refined())
    pts = np.random.default_rng(34).uniform(0, 1, (300, 2)) * [49, 39]
    np.testing.assert_allclose(fine.fixed_to_moving(pts), t.fixed_to_moving(pts), atol=1e-6)
    # Onto an unrelated grid (spacing 12, its own origin): close, not exact.
    other = t.resampled(BSplineTransform.over((40, 50), 12.0, AFFINE).grid)
    err = np.abs(other.fixed_to_moving(pts) - t.fixed_to_moving(pts))
    assert 1e-6 < err.max() < 0.05 * np.abs(t.coefficients).max()


# ----------------------------------------------------------------- bending energy


def test_bending_energy_matches_a_numerical_integral():
    t = random_transform(21, shape=(40, 50), spacing=12.0)
    g = t.grid
    h = 0.25  # integrate the sampled second derivatives over the field's whole support
    axes = [np.arange(g.origin[a] - 2 * g.spacing[a], g.origin[a] + (g.shape[a] + 1)
                      * g.spacing[a], h) for a in range(2)]
    f = field_on_grid(torch.tensor(t.coefficients), g, [torch.tensor(a) for a in axes]).numpy()
    uxx = np.gradient(np.gradient(f, h, axis=2), h, axis=2)
    uyy = np.gradient(np.gradient(f, h, axis=1), h, axis=1)
    uxy = np.gradient(np.gradient(f, h, axis=2), h, axis=1)
    numeric = (uxx**2 + 2 * uxy**2 + uyy**2).sum() * h * h
    closed = t.bending_energy(normalise=False)
    assert closed == pytest.approx(numeric, rel=5e-3)
    low, high = g.domain
    assert t.bending_energy() == pytest.approx(closed / np.prod(high - low))
    # The same spline on a finer grid has the same energy; a zero field has none.
    assert t.refined().bending_energy(normalise=False) == pytest.approx(closed, rel=1e-10)
    assert bending_energy(np.zeros(g.coefficient_shape), g).item() == 0.0


def test_bending_energy_gradient_flows():
    t = random_transform(22, shape=(20, 20), spacing=6.0)
    c = torch.tensor(t.coefficients, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: bending_energy(x, t.grid), (c,))


# ------------------------------------------------------------------------- storage


def test_small_transform_embeds_its_coefficients():
    t = random_transform(23)
    data = json.loads(json.dumps(t.to_dict()))
    assert data["type"] == "bspline" and "coefficients" in data
    back = transform_from_dict(data)
    pts = np.random.default_rng(24).uniform(0, 79, (10, 2))
    np.testing.assert_array_equal(back.fixed_to_moving(pts), t.fixed_to_moving(pts))


def test_saved_transform_is_referenced_beside_its_record(tmp_path):
    t = random_transform(25, shape=(400, 400), spacing=8.0)
    assert t.coefficients.size > EMBED_LIMIT
    with pytest.raises(ValueError, match="save"):
        t.to_dict()
    t.save(tmp_path / "task.bspline.npz")
    data = json.loads(json.dumps(t.to_dict()))
    assert data["coefficients_file"] == "task.bspline.npz" and "coefficients" not in data
    back = transform_from_dict(data, tmp_path)
    np.testing.assert_array_equal(back.coefficients, t.coefficients)
    np.testing.assert_array_equal(back.affine.matrix, t.affine.matrix)
    assert back.grid == t.grid
    # A file that does not match its record is refused.
    data["affine"] = np.eye(3).tolist()
    with pytest.raises(ValueError, match="does not hold"):
        transform_from_dict(data, tmp_path)


# ----------------------------------------------------------------------- ITK export


def test_itk_export_maps_points_as_mibench():
    import SimpleITK as sitk

    t = random_transform(26, amplitude=3.0)
    composite = to_sitk(t)
    rng = np.random.default_rng(27)
    pts = rng.uniform(0, 1, (200, 2)) * [79, 59]  # the fixed image, (x, y)
    low, high = t.grid.domain
    q = MatrixTransform(AFFINE).fixed_to_moving(pts)
    inside = np.all((q > low) & (q < high), axis=1)
    assert inside.all()  # the grid covers the mapped fixed image
    ours = t.fixed_to_moving(pts)
    theirs = np.array([composite.TransformPoint(tuple(map(float, p))) for p in pts])
    np.testing.assert_allclose(theirs, ours, atol=1e-9)
    # Written to a file and read back by SimpleITK.
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as folder:
        path = str(Path(folder) / "t.tfm")
        sitk.WriteTransform(composite, path)
        read = sitk.ReadTransform(path)
    again = np.array([read.TransformPoint(tuple(map(float, p))) for p in pts])
    np.testing.assert_allclose(again, ours, atol=1e-6)


def test_itk_export_of_a_refined_and_a_3d_transform():
    t = random_transform(28, amplitude=3.0).refined()
    pts = np.random.default_rng(29).uniform(0, 1, (50, 2)) * [79, 59]
    composite = to_sitk(t)
    theirs = np.array([composite.TransformPoint(tuple(map(float, p))) for p in pts])
    np.testing.assert_allclose(theirs, t.fixed_to_moving(pts), atol=1e-9)
    rng = np.random.default_rng(35)
    affine = np.eye(4)
    affine[:3, :3] += rng.normal(0, 0.05, (3, 3))
    affine[:3, 3] = [1.0, 2.0, -1.0]
    t3 = BSplineTransform.over((10, 12, 14), 5.0, affine)
    t3.coefficients = rng.normal(0, 1, t3.grid.coefficient_shape)
    pts3 = rng.uniform(0, 1, (50, 3)) * [13, 11, 9]
    composite = to_sitk(t3)
    theirs = np.array([composite.TransformPoint(tuple(map(float, p))) for p in pts3])
    np.testing.assert_allclose(theirs, t3.fixed_to_moving(pts3), atol=1e-9)


def test_sitk_round_trip_and_fit_of_itk_order():
    import SimpleITK as sitk

    t = random_transform(36, amplitude=3.0)
    back = from_sitk(to_sitk(t))
    assert back.grid.shape == t.grid.shape
    np.testing.assert_allclose(back.grid.origin + back.grid.spacing,
                               t.grid.origin + t.grid.spacing, atol=1e-12)
    np.testing.assert_allclose(back.coefficients, t.coefficients, atol=1e-12)
    np.testing.assert_allclose(back.affine.matrix, t.affine.matrix, atol=1e-12)
    # A centred Euler transform first: its centre folds into the matrix's translation.
    euler = sitk.Euler2DTransform((30.0, 20.0), 0.1, (2.0, -1.0))
    composite = sitk.CompositeTransform(2)
    composite.AddTransform(to_sitk(t).GetNthTransform(0))
    composite.AddTransform(euler)
    pts = np.random.default_rng(37).uniform(0, 1, (40, 2)) * [79, 59]
    read = from_sitk(composite)
    q = read.affine.fixed_to_moving(pts)
    np.testing.assert_allclose(q, [euler.TransformPoint(tuple(map(float, p))) for p in pts],
                               atol=1e-9)
    low, high = read.grid.domain
    inside = np.all((q > low) & (q < high), axis=1)  # ITK's valid region
    assert inside.mean() > 0.8
    theirs = np.array([composite.TransformPoint(tuple(map(float, p))) for p in pts[inside]])
    np.testing.assert_allclose(read.fixed_to_moving(pts[inside]), theirs, atol=1e-9)
    # ITK registration's order (B-spline first, then the matrix) is refused by from_sitk, and
    # fit() approximates it on a grid over the mapped image.
    itk_order = sitk.CompositeTransform(2)
    itk_order.AddTransform(sitk.AffineTransform(tuple(AFFINE[:2, :2].ravel()),
                                                tuple(AFFINE[:2, 2])))
    bspline = sitk.BSplineTransform(2, 3)
    low, high = BSplineTransform.over((60, 80), 16.0).grid.domain
    bspline.SetTransformDomainOrigin(tuple(low))
    bspline.SetTransformDomainPhysicalDimensions(tuple(high - low))
    bspline.SetTransformDomainMeshSize((int(round((high - low)[0] / 16)),
                                        int(round((high - low)[1] / 16))))
    params = np.random.default_rng(38).normal(0, 2, bspline.GetNumberOfParameters())
    bspline.SetParameters(tuple(params))
    itk_order.AddTransform(bspline)
    with pytest.raises(ValueError, match="fit"):
        from_sitk(itk_order)

    def mapping(p):
        return np.array([itk_order.TransformPoint(tuple(map(float, x))) for x in p])

    fitted = BSplineTransform.fit(mapping, (60, 80), 8.0, AFFINE, step=2.0)
    err = np.abs(fitted.fixed_to_moving(pts) - mapping(pts))
    assert err.max() < 0.1 * np.abs(params).max()


def test_fit_is_exact_for_a_representable_field():
    t = random_transform(39, amplitude=3.0)
    fitted = BSplineTransform.fit(t.fixed_to_moving, (60, 80), 16.0, AFFINE, step=2.0)
    assert fitted.grid == t.grid
    pts = np.random.default_rng(40).uniform(0, 1, (100, 2)) * [79, 59]
    np.testing.assert_allclose(fitted.fixed_to_moving(pts), t.fixed_to_moving(pts), atol=1e-6)


def test_itk_export_refuses_a_perspective_part():
    persp = AFFINE.copy()
    persp[2, 0] = 1e-4
    with pytest.raises(ValueError, match="affine"):
        to_sitk(BSplineTransform.over((20, 20), 8.0, persp))
