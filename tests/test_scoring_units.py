"""Scoring in physical units: a record's errors in its geometry's unit and in voxels, against
nibabel's ``apply_affine`` (world points) and plain numpy (voxel points)."""

import math

import numpy as np
import pytest
from nibabel.affines import apply_affine

from mibench.geometry import Geometry
from mibench.metrics import pair_scores
from mibench.pairs import Pair
from mibench.registration import RegistrationTask, failed_record, score_record
from mibench.transform import MatrixTransform

TASK = RegistrationTask("identity", {}, "toy", {}, "p0", 0)


def _oblique() -> Geometry:
    from scipy.spatial.transform import Rotation

    affine = np.eye(4)
    affine[:3, :3] = (Rotation.from_euler("zxy", [25.0, -12.0, 33.0], degrees=True).as_matrix()
                      @ np.diag([0.9, 1.2, 2.5]))
    affine[:3, 3] = [-90.0, 12.0, 40.0]
    return Geometry(affine, "mm")


def _volume_pair(geometry, rng, k=8):
    shape = (14, 22, 26)  # (D, H, W)
    matrix = np.eye(4)
    matrix[:3, :3] += rng.normal(0, 0.03, (3, 3))
    matrix[:3, 3] = rng.normal(0, 2.0, 3)
    f = rng.uniform(3, 12, (k, 3))
    m = f @ matrix[:3, :3].T + matrix[:3, 3]
    pair = Pair("p0", rng.random(shape, dtype=np.float32), rng.random(shape, dtype=np.float32),
                fixed_landmarks=f, moving_landmarks=m, fixed_geometry=geometry,
                moving_geometry=geometry)
    return pair, matrix


def _expected(found, fixed, geometry, initial_world, initial_voxel, shape):
    """Scores worked out independently: world points by nibabel, lengths by hand."""
    world = np.linalg.norm(apply_affine(geometry.affine, found)
                           - apply_affine(geometry.affine, fixed), axis=1)
    voxel = np.linalg.norm(found - fixed, axis=1)
    d, h, w = shape
    corner = apply_affine(geometry.affine, [[0, 0, 0], [w, h, d]])
    diag_world = float(np.linalg.norm(corner[1] - corner[0]))
    diag_voxel = math.sqrt(w * w + h * h + d * d)
    return (world, pair_scores(world, initial_world, diag_world, diag_world), diag_world,
            pair_scores(voxel, initial_voxel, diag_voxel, diag_voxel))


def test_a_volume_is_scored_in_mm_and_in_voxels():
    rng = np.random.default_rng(11)
    geometry = _oblique()
    pair, truth = _volume_pair(geometry, rng)
    # A result 1-2 voxels off the truth: the errors are the offsets, stretched by the grid.
    found = truth.copy()
    found[:3, 3] += [1.0, -0.5, 1.5]
    record = score_record(TASK, pair, MatrixTransform(found), error=None, naed_norm="diagonal")
    assert record.status == "ok" and record.scored and record.unit == "mm"
    f, m = pair.fixed_landmarks, pair.moving_landmarks
    back = apply_affine(np.linalg.inv(found), m)
    initial_world = np.linalg.norm(apply_affine(geometry.affine, m)
                                   - apply_affine(geometry.affine, f), axis=1)
    world, metrics, diag, voxel_metrics = _expected(
        back, f, geometry, initial_world, np.linalg.norm(m - f, axis=1), pair.fixed.shape)
    np.testing.assert_allclose(record.landmark_errors, world, rtol=1e-9)
    np.testing.assert_allclose(record.initial_errors, initial_world, rtol=1e-9)
    assert record.norm_length == pytest.approx(diag, rel=1e-12)
    assert record.metrics == pytest.approx(metrics, rel=1e-9)
    assert record.voxel_metrics == pytest.approx(voxel_metrics, rel=1e-9)
    assert record.metrics["naed"] != pytest.approx(record.voxel_metrics["naed"], rel=1e-3)
    # Warped landmarks stay voxels of the fixed image.
    np.testing.assert_allclose(record.warped_moving_landmarks, back, rtol=1e-9)
    exact = score_record(TASK, pair, MatrixTransform(truth), error=None, naed_norm="diagonal")
    assert exact.metrics["tre_max"] < 1e-9 and exact.voxel_metrics["tre_max"] < 1e-9


def test_max_side_and_none_normalisers_in_mm():
    rng = np.random.default_rng(12)
    pair, truth = _volume_pair(Geometry.from_spacing([1.0, 1.5, 4.0]), rng)
    side = score_record(TASK, pair, MatrixTransform(truth), error=None, naed_norm="max-side")
    # Longest side in mm: 14 slices of 4 mm, against 26 x 1 mm and 22 x 1.5 mm.
    assert side.norm_length == pytest.approx(56.0) and side.unit == "mm"
    assert side.voxel_metrics["naed"] == pytest.approx(side.voxel_metrics["tre_mean"] / 26)
    plain = score_record(TASK, pair, None, error="boom", naed_norm="none")
    assert plain.norm_length == 1 and plain.metrics["naed"] == plain.metrics["tre_mean"]


def test_a_failed_volume_task_keeps_its_initial_error_in_both_units():
    rng = np.random.default_rng(13)
    geometry = _oblique()
    pair, _ = _volume_pair(geometry, rng)
    record = failed_record(TASK, "boom", naed_norm="diagonal", pair=pair)
    assert record.status == "failed" and record.unit == "mm"
    assert record.landmark_errors == record.initial_errors
    f, m = pair.fixed_landmarks, pair.moving_landmarks
    np.testing.assert_allclose(record.initial_errors, np.linalg.norm(
        apply_affine(geometry.affine, m) - apply_affine(geometry.affine, f), axis=1), rtol=1e-9)
    assert record.voxel_metrics["tre_mean"] == pytest.approx(
        np.linalg.norm(m - f, axis=1).mean(), rel=1e-12)
    assert record.voxel_metrics["robustness"] == 0 == record.metrics["robustness"]
    # Not even loaded: unscored, and no length to give a unit.
    bare = failed_record(TASK, "boom", naed_norm="diagonal")
    assert bare.unit == "px" and bare.voxel_metrics is None and not bare.scored


def test_2d_pairs_without_geometry_score_in_pixels_as_before():
    """The 2-D path is the one records have always had: errors in native pixels scaled by the
    pair's native scale, NAED over the native diagonal; unit px, no voxel metrics."""
    rng = np.random.default_rng(14)
    a = np.array([[1.01, 0.02, 2.0], [-0.03, 0.98, -1.0], [0, 0, 1]])
    f = rng.uniform(5, 60, (6, 2))
    m = f @ a[:2, :2].T + a[:2, 2] + rng.normal(0, 0.5, (6, 2))
    pair = Pair("p0", rng.random((64, 80), dtype=np.float32),
                rng.random((64, 80), dtype=np.float32), fixed_landmarks=f, moving_landmarks=m,
                native_scale=2.0)
    record = score_record(TASK, pair, MatrixTransform(a), error=None, naed_norm="diagonal")
    back = apply_affine(np.linalg.inv(a), m)
    errors = 2.0 * np.linalg.norm(back - f, axis=1)
    initial = 2.0 * np.linalg.norm(m - f, axis=1)
    diag = math.hypot(160, 128)
    assert record.unit == "px" and record.voxel_metrics is None
    np.testing.assert_allclose(record.landmark_errors, errors, rtol=1e-12)
    assert record.norm_length == diag
    assert record.metrics == pytest.approx(pair_scores(errors, initial, diag, diag), rel=1e-12)


def test_2d_pairs_with_a_pixel_size_score_in_its_unit():
    """Histology with a pixel size: a 2-D geometry in um; errors are world lengths in um."""
    rng = np.random.default_rng(15)
    geometry = Geometry.from_spacing([0.5, 0.25], unit="um")
    f = rng.uniform(5, 40, (5, 2))
    m = f + rng.normal(0, 2, (5, 2))
    pair = Pair("p0", rng.random((48, 64), dtype=np.float32),
                rng.random((48, 64), dtype=np.float32), fixed_landmarks=f, moving_landmarks=m,
                fixed_geometry=geometry, moving_geometry=geometry)
    record = score_record(TASK, pair, MatrixTransform(np.eye(3)), error=None,
                          naed_norm="diagonal")
    d = m - f
    np.testing.assert_allclose(record.landmark_errors,
                               np.hypot(0.5 * d[:, 0], 0.25 * d[:, 1]), rtol=1e-12)
    assert record.unit == "um"
    assert record.norm_length == pytest.approx(math.hypot(64 * 0.5, 48 * 0.25), rel=1e-12)
    assert record.voxel_metrics["naed"] == pytest.approx(
        np.hypot(*d.T).mean() / math.hypot(64, 48), rel=1e-12)


def test_a_volume_on_another_grid_starts_at_the_world_identity():
    """Two scans of one head on different grids are aligned in world mm before registration:
    the initial error of landmark k is the distance between the world points of m_k (moving
    grid) and f_k (fixed grid), and in voxels the same offset on the fixed grid. The
    ``identity`` method returns that start (fixed voxel -> world -> moving voxel), so it scores
    exactly its initial error."""
    from mibench.metrics import start_transform

    rng = np.random.default_rng(16)
    fixed_geometry = _oblique()
    moving_geometry = Geometry.from_spacing([1.0, 1.0, 1.5], origin=[-95.0, 8.0, 30.0])
    pair, _ = _volume_pair(fixed_geometry, rng)
    pair = Pair("p0", pair.fixed, pair.moving, fixed_landmarks=pair.fixed_landmarks,
                moving_landmarks=pair.moving_landmarks, fixed_geometry=fixed_geometry,
                moving_geometry=moving_geometry)
    f, m = pair.fixed_landmarks, pair.moving_landmarks
    world_m = apply_affine(moving_geometry.affine, m)
    world_f = apply_affine(fixed_geometry.affine, f)
    start = np.linalg.inv(moving_geometry.affine) @ fixed_geometry.affine
    np.testing.assert_allclose(start_transform(3, fixed_geometry, moving_geometry).matrix,
                               start, rtol=1e-12, atol=1e-12)
    record = failed_record(TASK, "boom", naed_norm="diagonal", pair=pair)
    np.testing.assert_allclose(record.initial_errors, np.linalg.norm(world_m - world_f, axis=1),
                               rtol=1e-9)
    in_fixed_voxels = apply_affine(np.linalg.inv(fixed_geometry.affine), world_m)
    assert record.voxel_metrics["ire_mean"] == pytest.approx(
        np.linalg.norm(in_fixed_voxels - f, axis=1).mean(), rel=1e-9)
    identity = score_record(TASK, pair, MatrixTransform(start), error=None, naed_norm="diagonal")
    np.testing.assert_allclose(identity.landmark_errors, identity.initial_errors, rtol=1e-9)
    # One shared grid, or a 2-D pair: the pixel identity, exactly.
    assert start_transform(3, fixed_geometry, fixed_geometry) is None
    assert start_transform(3, fixed_geometry, None) is None
    flat = Geometry.from_spacing([0.5, 0.5], unit="um")
    assert start_transform(2, flat, Geometry.from_spacing([0.25, 0.25], unit="um")) is None
