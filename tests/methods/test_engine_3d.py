"""The estimator-driven engines and DRMIME on volumes (issue 21): transform model, warp,
pyramid, start transform and recovery of known 3-D transforms, each against an independent
reference (scipy, closed forms)."""

import numpy as np
import pytest
import scipy.linalg
import scipy.ndimage as ndi
import torch

from mibench.geometry import Geometry, voxel_transform
from mibench.methods import pyramid as pyr
from mibench.methods.derivative_free import register_derivative_free
from mibench.methods.gradient import register_with_estimator
from mibench.methods.identity import register as identity
from mibench.methods.initial import start_matrix
from mibench.methods.objective import pyramid_objective
from mibench.methods.transform_models import (
    basis_matrices,
    matrix_exp_transform,
    n_params,
    normalised_grid,
    normalised_to_pixel,
    pixel_to_normalised,
    taylor_exp_transform,
    transform_model,
    warp_normalised,
)
from mibench.transform import MatrixTransform

#: xyz <-> zyx: the voxel matrices here act on (x, y, z), scipy's on array indices (z, y, x).
SWAP = np.array([[0, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]], dtype=float)


def mse(fixed, moving, mask):
    """Masked mean squared difference ``(B,)`` of tensors of any spatial shape (the test's own
    estimator, independent of mibench.estimators)."""
    w = mask.to(fixed.dtype)
    return ((fixed - moving) ** 2 * w).flatten(1).sum(1) / w.flatten(1).sum(1).clamp_min(1)


def blobs(points, centres, widths, weights):
    """A sum of Gaussian blobs evaluated at ``(N, 3)`` points: an analytic volume that can be
    sampled exactly at transformed positions (no interpolation in the reference)."""
    d2 = ((points[:, None, :] - centres[None]) ** 2).sum(-1)
    return (weights[None] * np.exp(-d2 / (2 * widths[None] ** 2))).sum(1)


def voxel_points(shape):
    d, h, w = shape
    z, y, x = np.meshgrid(np.arange(d), np.arange(h), np.arange(w), indexing="ij")
    return np.stack([x.ravel(), y.ravel(), z.ravel()], axis=1).astype(float)


def affine_from(rot_deg, scale, translation, centre):
    """A voxel transform (x, y, z): rotation about z then x, scales, about ``centre``."""
    a, b = np.radians(rot_deg)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    lin = rz @ rx @ np.diag(scale)
    m = np.eye(4)
    m[:3, :3] = lin
    m[:3, 3] = centre - lin @ centre + np.asarray(translation, float)
    return m


def blob_pair(truth, shape=(40, 40, 40)):
    """Analytic blob volumes ``(1, 1, D, H, W)`` related by the voxel transform ``truth``."""
    rng = np.random.default_rng(3)
    centres = rng.uniform(6, 34, size=(40, 3))
    widths = rng.uniform(2.0, 4.5, size=40)
    weights = rng.uniform(0.3, 1.0, size=40)
    pts = voxel_points(shape)
    fixed = blobs(pts, centres, widths, weights).reshape(shape)
    # moving(q) = fixed content at T^-1 q, so that T maps fixed voxels onto moving voxels.
    back = (np.linalg.inv(truth) @ np.c_[pts, np.ones(len(pts))].T).T[:, :3]
    moving = blobs(back, centres, widths, weights).reshape(shape)
    as_t = [torch.from_numpy(x.astype(np.float32))[None, None] for x in (fixed, moving)]
    return as_t[0], as_t[1]


@pytest.fixture(scope="module")
def pair3d():
    """A 40^3 pair of analytic blob volumes related by a known affine voxel transform."""
    truth = affine_from((6.0, -4.0), (1.03, 0.98, 1.02), (1.5, -2.0, 1.0), np.full(3, 19.5))
    return (*blob_pair(truth), truth)


def corner_error(matrix, truth, shape):
    """Largest error (voxels) of the recovered transform over the interior box's corners."""
    lo, hi = 8, np.array(shape[::-1]) - 9
    corners = np.array([[x, y, z] for x in (lo, hi[0]) for y in (lo, hi[1]) for z in (lo, hi[2])],
                       float)
    return float(np.abs(MatrixTransform(matrix).fixed_to_moving(corners)
                        - MatrixTransform(truth).fixed_to_moving(corners)).max())


# ------------------------------------------------------------------ transform model


@pytest.mark.parametrize("kind,n", [("affine", 12), ("rigid", 6)])
def test_3d_basis_and_exp_against_scipy(kind, n):
    assert n_params(kind, 3) == n
    b = basis_matrices(kind, ndim=3, dtype=torch.float64).numpy()
    assert b.shape == (n, 4, 4)
    assert np.linalg.matrix_rank(b.reshape(n, 16)) == n
    np.testing.assert_array_equal(b[:, 3], 0)  # no perspective row: the result stays affine
    if kind == "rigid":
        np.testing.assert_array_equal(b[:3] + b[:3].transpose(0, 2, 1), 0)  # skew rotations
    rng = np.random.default_rng(1)
    for scale in (0.05, 0.4):
        v = rng.normal(scale=scale, size=n)
        c = np.einsum("i,ijk->jk", v, b)
        got = matrix_exp_transform(torch.tensor(v), kind, ndim=3).numpy()
        np.testing.assert_allclose(got, scipy.linalg.expm(c), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(got[3], [0, 0, 0, 1], atol=1e-14)
        series = taylor_exp_transform(torch.tensor(v), kind, ndim=3, terms=30).numpy()
        np.testing.assert_allclose(series, scipy.linalg.expm(c), rtol=1e-9, atol=1e-12)


def test_perspective_is_2d_only_and_2d_rigid_has_three_parameters():
    with pytest.raises(ValueError, match="2-D only"):
        n_params("perspective", 3)
    with pytest.raises(ValueError, match="2-D only"):
        transform_model("perspective", (10, 10, 10))
    assert n_params("rigid") == 3 and n_params("affine") == 6
    assert transform_model("affine", (10, 12)).frame is None  # 2-D affine: the grid frame


@pytest.mark.parametrize("shape,spacing", [((20, 30, 40), (0.7, 1.3, 3.0)), ((25, 50), (0.5, 2.0))])
def test_rigid_is_a_world_rotation_with_anisotropic_spacing(shape, spacing):
    ndim = len(shape)
    geometry = Geometry.from_spacing(spacing, origin=np.arange(ndim) * 3.0)
    model = transform_model("rigid", shape, geometry)
    v = torch.tensor(np.random.default_rng(2).normal(scale=0.3, size=model.n_params))
    h = model.exp(v).numpy()
    voxel = normalised_to_pixel(h, shape, shape)
    world = geometry.affine @ voxel @ np.linalg.inv(geometry.affine)
    rot = world[:ndim, :ndim]
    np.testing.assert_allclose(rot @ rot.T, np.eye(ndim), atol=1e-10)
    assert np.linalg.det(rot) == pytest.approx(1.0)
    # The same parameters in voxel units would shear: the frame matters.
    plain = normalised_to_pixel(matrix_exp_transform(v, "rigid", ndim=ndim).numpy(), shape, shape)
    plain_world = (geometry.affine @ plain @ np.linalg.inv(geometry.affine))[:ndim, :ndim]
    assert not np.allclose(plain_world @ plain_world.T, np.eye(ndim), atol=1e-3)


def test_normalised_pixel_round_trip_3d():
    rng = np.random.default_rng(4)
    p = np.eye(4)
    p[:3] += rng.normal(scale=0.1, size=(3, 4))
    fixed_shape, moving_shape = (11, 17, 23), (13, 9, 30)
    h = pixel_to_normalised(p, fixed_shape, moving_shape)
    np.testing.assert_allclose(normalised_to_pixel(h, fixed_shape, moving_shape), p, atol=1e-12)
    # Corners of the fixed volume map to normalised corners, by definition.
    grid = normalised_grid(fixed_shape, dtype=torch.float64).numpy()
    np.testing.assert_allclose(grid[-1, -1, -1], [1, 1, 1, 1])
    np.testing.assert_allclose(grid[0, 0, 0], [-1, -1, -1, 1])
    np.testing.assert_allclose(grid[2, 3, 4], [2 * 4 / 22 - 1, 2 * 3 / 16 - 1, 2 * 2 / 10 - 1, 1])


def test_3d_warp_against_scipy_affine_transform():
    rng = np.random.default_rng(5)
    moving = rng.normal(size=(14, 18, 22))
    fixed_shape = (12, 16, 20)
    p = affine_from((8.0, 5.0), (1.05, 0.95, 1.0), (0.7, -0.4, 0.3), np.array([9.5, 7.5, 5.5]))
    h = torch.as_tensor(pixel_to_normalised(p, fixed_shape, moving.shape))
    out = warp_normalised(torch.from_numpy(moving)[None, None], h, fixed_shape)[0, 0].numpy()
    zyx = SWAP @ p @ SWAP
    ref = ndi.affine_transform(moving, zyx[:3, :3], offset=zyx[:3, 3], output_shape=fixed_shape,
                               order=1, mode="constant", cval=0.0)
    # Compare where the sample lies inside the moving volume (scipy's border rule differs).
    mapped = (p @ np.c_[voxel_points(fixed_shape), np.ones(np.prod(fixed_shape))].T)[:3].T
    inside = ((mapped >= 0) & (mapped <= np.array(moving.shape[::-1]) - 1)).all(1)
    inside = inside.reshape(fixed_shape)
    assert inside.mean() > 0.5
    np.testing.assert_allclose(out[inside], ref[inside], atol=1e-10)
    # ... and MatrixTransform's own 3-D warp agrees everywhere.
    np.testing.assert_allclose(out, MatrixTransform(p).warp(moving, fixed_shape), atol=1e-5)


# ------------------------------------------------------------------ pyramid


def test_3d_pyramid_against_gaussian_filter_and_zoom():
    rng = np.random.default_rng(6)
    vol = rng.normal(size=(13, 18, 21))
    x = torch.from_numpy(vol)[None, None]
    blurred = pyr.gaussian_blur(x, 2 / 3)[0, 0].numpy()
    np.testing.assert_allclose(
        blurred, ndi.gaussian_filter(vol, 2 / 3, mode="mirror", truncate=4.0), atol=1e-12)
    levels = pyr.gaussian_pyramid(x, 4, min_size=4)
    assert [tuple(t.shape[2:]) for t in levels] == [(13, 18, 21), (7, 9, 11), (4, 5, 6)]
    ref = vol
    for level in levels[1:]:
        smooth = ndi.gaussian_filter(ref, 2 / 3, mode="mirror", truncate=4.0)
        out = level.shape[2:]
        ref = ndi.zoom(smooth, [o / i for o, i in zip(out, ref.shape, strict=True)], order=1,
                       grid_mode=False, mode="nearest")
        np.testing.assert_allclose(level[0, 0].numpy(), ref, atol=1e-10)
    # A 5-D tensor and its 4-D slices through the same helpers: same level shapes rule.
    assert pyr.level_shapes((91, 109, 91), 4, 32) == [(91, 109, 91), (46, 55, 46)]


def test_3d_mask_pyramid_is_the_eroded_mask_resampled():
    rng = np.random.default_rng(7)
    mask = ndi.gaussian_filter(rng.normal(size=(15, 20, 17)), 2.0) > -0.05
    levels = pyr.mask_pyramid(torch.from_numpy(mask)[None, None], 3)
    ref = mask
    for level in levels[1:]:
        eroded = ndi.minimum_filter(ref.astype(float), size=3, mode="nearest")
        out = level.shape[2:]
        coarse = ndi.zoom(eroded, [o / i for o, i in zip(out, ref.shape, strict=True)], order=1,
                          grid_mode=False, mode="nearest")
        ref = coarse > 0.999
        np.testing.assert_array_equal(level[0, 0].numpy(), ref)
    assert levels[1].dtype == torch.bool and levels[1].any()


# ------------------------------------------------------------------ start transform


def test_start_is_the_world_identity_for_volumes_only():
    fixed = Geometry.from_spacing((2.0, 2.0, 3.0), origin=(-90.0, -126.0, -72.0))
    moving = Geometry.from_spacing((1.0, 1.5, 3.0), origin=(-80.0, -120.0, -70.0))
    start = start_matrix(3, fixed, moving)
    np.testing.assert_allclose(start, voxel_transform(np.eye(4), fixed, moving))
    # Closed form: x_m = (A_f x_f + o_f - o_m) / s_m along each axis.
    np.testing.assert_allclose(np.diag(start)[:3], [2.0, 2.0 / 1.5, 1.0])
    np.testing.assert_allclose(start[:3, 3], [-10.0, -6.0 / 1.5, -2.0 / 3.0])
    np.testing.assert_array_equal(start_matrix(3, fixed, None), np.eye(4))
    flat = Geometry.from_spacing((2.0, 2.0), origin=(5.0, 1.0))
    np.testing.assert_array_equal(start_matrix(2, flat, Geometry.from_spacing((1.0, 1.0))),
                                  np.eye(3))
    vol = torch.zeros(1, 1, 4, 5, 6)
    out = identity(vol, vol, fixed_geometry=fixed, moving_geometry=moving)
    np.testing.assert_allclose(out.matrix, start)
    assert identity(vol, vol).matrix.shape == (4, 4)
    np.testing.assert_array_equal(identity(torch.zeros(1, 1, 4, 5), None).matrix, np.eye(3))


def test_engine_starts_at_the_world_identity(pair3d):
    fixed, moving, _ = pair3d
    fg = Geometry.from_spacing((1.0, 1.0, 1.0))
    mg = Geometry.from_spacing((1.0, 1.0, 1.0), origin=(2.0, -1.0, 0.5))
    out = register_with_estimator(fixed, moving, estimator_fn=mse, higher_is_better=False,
                                  iterations=0, levels=1, fixed_geometry=fg, moving_geometry=mg)
    np.testing.assert_allclose(out.transform.matrix, voxel_transform(np.eye(4), fg, mg),
                               atol=1e-5)


# ------------------------------------------------------------------ sampling


def test_sampled_points_are_the_voxels_drawn(pair3d):
    fixed, moving, _ = pair3d
    obj = pyramid_objective(fixed, moving, None, None, estimator_fn=mse, higher_is_better=False,
                            levels=2, min_size=16, init="identity", seed=0, samples=5000)
    assert obj.samples == [5000, 5000]  # 40^3 and 20^3 both hold more
    idx = obj.draw(0)
    grid = normalised_grid((40, 40, 40)).reshape(-1, 4)
    torch.testing.assert_close(obj._points(0, idx), grid[idx])
    np.testing.assert_array_equal(obj.fixed_levels[0].flatten()[idx].numpy(),
                                  fixed.flatten()[idx].numpy())
    # The sampled loss estimates the dense one (an unbiased subset of the same voxels).
    h = obj.h0
    dense = float(mse(obj.fixed_levels[0], *obj.level_mask(h, 0))[0])
    sampled = np.mean([float(obj.level_loss(h, 0)) for _ in range(20)])
    assert sampled == pytest.approx(dense, rel=0.05)
    # A level with fewer voxels than asked is scored densely.
    small = pyramid_objective(fixed, moving, None, None, estimator_fn=mse,
                              higher_is_better=False, levels=2, min_size=16, init="identity",
                              seed=0, samples=10000)
    assert small.samples == [10000, 0]


# ------------------------------------------------------------------ recovery


@pytest.mark.parametrize("samples", [None, 0])
def test_gradient_engine_recovers_a_3d_affine(pair3d, samples):
    fixed, moving, truth = pair3d
    before = corner_error(np.eye(4), truth, (40, 40, 40))
    out = register_with_estimator(fixed, moving, estimator_fn=mse, higher_is_better=False,
                                  levels=2, min_size=16, iterations=200, lr=0.02,
                                  samples=samples)
    assert out.transform.matrix.shape == (4, 4)
    assert before > 3
    assert corner_error(out.transform.matrix, truth, (40, 40, 40)) < 0.25
    assert out.info["overlap"] > 0.8 and out.info["levels"] == 2
    assert ("samples" in out.info) == (samples is None)


def test_gradient_engine_rigid_in_world_units_on_anisotropic_voxels():
    """A rigid world motion of a volume with 1 x 1 x 2 mm voxels is recovered as a rigid
    world transform."""
    rng = np.random.default_rng(8)
    shape = (24, 40, 40)
    geometry = Geometry.from_spacing((1.0, 1.0, 2.0))
    centres = rng.uniform(6, 34, size=(40, 3))
    widths = rng.uniform(2.5, 5.0, size=40)
    weights = rng.uniform(0.3, 1.0, size=40)
    world = affine_from((5.0, 3.0), (1.0, 1.0, 1.0), (1.2, -0.8, 1.5),
                        geometry.voxel_to_world([[19.5, 19.5, 11.5]])[0])
    pts = geometry.voxel_to_world(voxel_points(shape))
    fixed = blobs(pts, centres, widths, weights).reshape(shape)
    back = (np.linalg.inv(world) @ np.c_[pts, np.ones(len(pts))].T).T[:, :3]
    moving = blobs(back, centres, widths, weights).reshape(shape)
    f, m = (torch.from_numpy(x.astype(np.float32))[None, None] for x in (fixed, moving))
    out = register_with_estimator(f, m, estimator_fn=mse, higher_is_better=False,
                                  transform="rigid", levels=2, min_size=12, iterations=200,
                                  fixed_geometry=geometry, moving_geometry=geometry)
    found = geometry.affine @ out.transform.matrix @ np.linalg.inv(geometry.affine)
    rot = found[:3, :3]
    np.testing.assert_allclose(rot @ rot.T, np.eye(3), atol=1e-5)
    np.testing.assert_allclose(found, world, atol=0.05)


def test_derivative_free_engine_on_a_volume():
    truth = np.eye(4)
    truth[:3, 3] = (1.5, -1.0, 0.8)
    fixed, moving = blob_pair(truth)
    out = register_derivative_free(fixed, moving, estimator_fn=mse, higher_is_better=False,
                                   transform="rigid", levels=1, iterations=4, lr=0.02,
                                   samples=6000)
    assert out.info["optimiser"] == "powell" and out.info["samples"] == [6000]
    assert corner_error(out.transform.matrix, truth, (40, 40, 40)) < 0.25


def test_drmime_improves_a_3d_pair():
    from mibench.methods.drmime import drmime

    truth = affine_from((4.0, -3.0), (1.0, 1.0, 1.0), (1.5, -1.0, 1.0), np.full(3, 19.5))
    fixed, moving = blob_pair(truth)
    # Both in [0, 1], as DRMIME expects; a monotonic but non-linear relation (multimodal-like).
    fixed = fixed / fixed.max()
    moving = (moving / moving.max()) ** 2
    before = corner_error(np.eye(4), truth, (40, 40, 40))
    out = drmime(fixed, moving, lr_transform=5e-3, iterations=250, max_samples=4000,
                 min_size=16, seed=1)
    after = corner_error(out.transform.matrix, truth, (40, 40, 40))
    assert out.transform.matrix.shape == (4, 4) and out.info["levels"] == 2
    assert out.info["samples"][0] == 4000
    assert after < 0.25 * before, (before, after)
    with pytest.raises(ValueError, match="2-D only"):
        drmime(fixed, moving, sampling="edges", iterations=1)
