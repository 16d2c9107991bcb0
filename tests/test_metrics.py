"""Landmark errors and pair scores against brute-force computations."""

import math

import numpy as np
import pytest

from mibench.metrics import landmark_errors, norm_length, pair_scores
from mibench.transform import MatrixTransform


def test_landmark_errors_brute_force():
    rng = np.random.default_rng(0)
    a = np.array([[1.02, 0.05, 3.0], [-0.04, 0.97, -2.0], [0, 0, 1]])
    t = MatrixTransform(a)
    f = rng.uniform(0, 100, (12, 2))
    m = t.fixed_to_moving(f) + rng.normal(0, 1, (12, 2))
    errors = landmark_errors(t, f, m, scale=2.5)
    inv = np.linalg.inv(a)
    expected = []
    for (fx, fy), (mx, my) in zip(f, m, strict=True):
        x, y, w = inv @ [mx, my, 1.0]
        expected.append(2.5 * math.hypot(x / w - fx, y / w - fy))
    np.testing.assert_allclose(errors, expected, rtol=1e-12)
    initial = landmark_errors(None, f, m)
    np.testing.assert_allclose(initial, np.linalg.norm(m - f, axis=1))


def test_pair_scores_and_naed():
    e = np.array([1.0, 2.0, 6.0])
    e0 = np.array([2.0, 1.0, 10.0])
    d = norm_length((300, 400), "diagonal")
    assert d == 500.0
    s = pair_scores(e, e0, d, d)
    assert s["tre_mean"] == 3.0 and s["tre_median"] == 2.0 and s["tre_max"] == 6.0
    assert s["naed"] == pytest.approx(3.0 / 500)
    assert s["rtre_max"] == pytest.approx(6.0 / 500)
    assert s["robustness"] == pytest.approx(2 / 3)
    assert norm_length((300, 400), "max-side") == 400
    assert norm_length((300, 400), "none") == 1
    with pytest.raises(ValueError):
        norm_length((1, 1), "bogus")


def test_unequal_landmark_counts_rejected():
    with pytest.raises(ValueError, match="landmark counts differ"):
        landmark_errors(None, np.zeros((3, 2)), np.zeros((4, 2)))


def test_success_curve_and_auc_brute_force():
    from mibench.metrics import FIRE_THRESHOLDS, mean_auc, success_auc, success_curve

    rng = np.random.default_rng(1)
    errors = np.concatenate([rng.exponential(6.0, 40), [np.nan, 3.0, 25.0]])
    curve = success_curve(errors)
    finite = [e for e in errors if not math.isnan(e)]
    for t, rate in zip(range(1, 26), curve, strict=True):
        assert rate == sum(e < t for e in finite) / len(finite)
    assert list(FIRE_THRESHOLDS) == list(range(1, 26))
    assert success_auc(errors) == pytest.approx(sum(curve) / 25)
    assert success_curve([25.0])[-1] == 0.0  # strictly below the threshold
    assert np.isnan(success_curve([np.nan])).all()
    assert mean_auc({"S": 0.9, "P": 0.5, "A": 0.7}) == pytest.approx(0.7)
    assert math.isnan(mean_auc({"S": 0.9, "P": 0.5}))


def test_average_ranks_brute_force_with_ties_and_missing():
    from mibench.metrics import average_ranks

    rng = np.random.default_rng(2)
    v = rng.integers(0, 4, (30, 5)).astype(float)  # small integers: many ties
    v[rng.random(v.shape) < 0.2] = np.nan
    v[7] = np.nan  # a pair no method has is skipped
    n_methods = v.shape[1]
    expected = np.zeros(n_methods)
    rows = 0
    for row in v:
        if np.isnan(row).all():
            continue
        rows += 1
        for j, x in enumerate(row):
            if np.isnan(x):
                expected[j] += n_methods
            else:  # 1 + number strictly better + half the others tied
                others = [y for k, y in enumerate(row) if k != j and not np.isnan(y)]
                expected[j] += 1 + sum(y < x for y in others) + 0.5 * sum(y == x for y in others)
    np.testing.assert_allclose(average_ranks(v), expected / rows)
    assert np.isnan(average_ranks(np.full((2, 3), np.nan))).all()


# --------------------------------------------------------------------------- volumes, units


def _oblique_geometry():
    """A 4x4 voxel -> RAS+ affine with a rotated, sheared-free grid of anisotropic voxels
    (0.7 x 1.3 x 3.1 mm) and a flipped first axis, as scanners write oblique acquisitions."""
    from scipy.spatial.transform import Rotation

    from mibench.geometry import Geometry

    rot = Rotation.from_euler("xyz", [17.0, -28.0, 41.0], degrees=True).as_matrix()
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag([-0.7, 1.3, 3.1])
    affine[:3, 3] = [12.5, -40.0, 7.25]
    return Geometry(affine, "mm")


def test_3d_landmark_errors_in_voxels_and_world_mm_brute_force():
    """Voxel errors against the homogeneous inverse worked by hand; world errors against
    nibabel's apply_affine of the mapped and the fixed points (world distance, not voxel
    distance times a spacing: the grid is oblique and anisotropic)."""
    from nibabel.affines import apply_affine

    rng = np.random.default_rng(3)
    a = np.eye(4)
    a[:3, :3] += rng.normal(0, 0.05, (3, 3))
    a[:3, 3] = rng.normal(0, 3, 3)
    t = MatrixTransform(a)
    f = rng.uniform(0, 40, (9, 3))
    m = t.fixed_to_moving(f) + rng.normal(0, 1, (9, 3))
    mapped = np.array([(np.linalg.inv(a) @ [*p, 1.0])[:3] for p in m])
    voxels = landmark_errors(t, f, m, scale=2.0)
    np.testing.assert_allclose(voxels, 2.0 * np.linalg.norm(mapped - f, axis=1), rtol=1e-12)
    geometry = _oblique_geometry()
    world = landmark_errors(t, f, m, geometry=geometry)
    reference = np.linalg.norm(apply_affine(geometry.affine, mapped)
                               - apply_affine(geometry.affine, f), axis=1)
    np.testing.assert_allclose(world, reference, rtol=1e-10)
    # Not the voxel error times any one spacing: each offset is stretched along its axes.
    ratios = world / np.linalg.norm(mapped - f, axis=1)
    assert ratios.min() > 0.7 - 1e-9 and ratios.max() < 3.1 + 1e-9 and np.ptp(ratios) > 0.3
    # A sheared grid (an sform may hold one): the voxel axes are not orthogonal, so not even
    # per-axis spacings give the world length; the whole linear part does.
    sheared = type(geometry)(geometry.affine @ np.array(
        [[1, 0.4, 0, 0], [0, 1, -0.3, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]]))
    offsets = mapped - f
    np.testing.assert_allclose(
        landmark_errors(t, f, m, geometry=sheared),
        np.linalg.norm(apply_affine(sheared.affine, mapped) - apply_affine(sheared.affine, f),
                       axis=1), rtol=1e-10)
    per_axis = np.linalg.norm(offsets * sheared.spacing, axis=1)
    assert np.abs(landmark_errors(t, f, m, geometry=sheared) - per_axis).max() > 0.1
    initial = landmark_errors(None, f, m, geometry=geometry)
    np.testing.assert_allclose(initial, np.linalg.norm(
        apply_affine(geometry.affine, m) - apply_affine(geometry.affine, f), axis=1))
    with pytest.raises(ValueError, match="scale 2.0 with a geometry"):
        landmark_errors(t, f, m, 2.0, geometry=geometry)
    with pytest.raises(ValueError, match="3-D landmarks with a 2-D geometry"):
        landmark_errors(t, f, m, geometry=type(geometry)(np.eye(3)))


def test_3d_norm_lengths_in_voxels_and_in_the_geometrys_unit():
    from nibabel.affines import apply_affine

    shape = (12, 30, 40)  # (D, H, W)
    assert norm_length(shape, "diagonal") == pytest.approx(math.sqrt(40**2 + 30**2 + 12**2))
    assert norm_length(shape, "max-side") == 40 and norm_length(shape, "none") == 1
    geometry = _oblique_geometry()
    # The world vector between the outer corners of the voxel grid (W, H, D voxels apart).
    corners = apply_affine(geometry.affine, [[0, 0, 0], [40, 30, 12]])
    assert norm_length(shape, "diagonal", geometry) == pytest.approx(
        np.linalg.norm(corners[1] - corners[0]), rel=1e-12)
    # Longest side in mm: 30 rows of 1.3 mm (39 mm), not the 40 columns (28 mm) that are the
    # most voxels, nor the 12 slices of 3.1 mm (37.2 mm).
    assert norm_length(shape, "max-side", geometry) == pytest.approx(39.0, rel=1e-12)
    assert norm_length(shape, "none", geometry) == 1


def test_naed_in_mm_equals_naed_in_voxels_for_isotropic_spacing_only():
    """NAED is a ratio of two lengths: with isotropic voxels (any rotation) the spacing
    cancels; with anisotropic ones each length stretches by its own direction, worked out by
    hand here for errors along z and a grid of 1 x 1 x 3 mm voxels."""
    from scipy.spatial.transform import Rotation

    from mibench.geometry import Geometry

    shape = (10, 50, 60)
    f = np.array([[10.0, 10.0, 2.0], [30.0, 20.0, 5.0], [50.0, 40.0, 8.0]])
    m = f + np.array([[0.0, 0.0, 1.0], [0.0, 0.0, 2.0], [0.0, 0.0, 0.5]])
    e_vox = landmark_errors(None, f, m)
    naed_vox = e_vox.mean() / norm_length(shape)
    rot = Rotation.from_euler("zyx", [30.0, 10.0, -5.0], degrees=True).as_matrix()
    iso = Geometry.from_spacing([2.5] * 3, origin=[1.0, 2.0, 3.0], direction=rot)
    e_iso = landmark_errors(None, f, m, geometry=iso)
    np.testing.assert_allclose(e_iso, 2.5 * e_vox, rtol=1e-12)
    naed_iso = e_iso.mean() / norm_length(shape, "diagonal", iso)
    assert naed_iso == pytest.approx(naed_vox, rel=1e-12)
    aniso = Geometry.from_spacing([1.0, 1.0, 3.0])
    e_aniso = landmark_errors(None, f, m, geometry=aniso)
    np.testing.assert_allclose(e_aniso, 3.0 * e_vox, rtol=1e-12)
    naed_aniso = e_aniso.mean() / norm_length(shape, "diagonal", aniso)
    expected = 3.0 * e_vox.mean() / math.sqrt(60**2 + 50**2 + (3 * 10) ** 2)
    assert naed_aniso == pytest.approx(expected, rel=1e-12)
    assert naed_aniso / naed_vox == pytest.approx(
        3.0 * math.sqrt(60**2 + 50**2 + 10**2) / math.sqrt(60**2 + 50**2 + 30**2), rel=1e-12)
