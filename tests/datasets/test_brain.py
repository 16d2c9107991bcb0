"""The 3-D ``brain`` dataset: exact ground truth, a non-monotonic contrast, reproducibility."""

import time

import numpy as np
import pytest
from scipy import ndimage

pytest.importorskip("nilearn")

import mibench  # noqa: E402
from mibench.datasets import brain  # noqa: E402
from mibench.errors import UserError  # noqa: E402
from mibench.geometry import world_transform  # noqa: E402
from mibench.pairs import check_pair  # noqa: E402


@pytest.fixture(scope="module")
def dataset():
    return brain.load_dataset(pairs=2, noise=0.0)


@pytest.fixture(scope="module")
def pairs(dataset):
    return {info.id: dataset.load(info.id) for info in dataset.pairs()}


def _pull_to_fixed(moving, matrix):
    """``moving(T p)`` for every fixed voxel ``p``: scipy's order-1 sampling, (z, y, x)."""
    flip = np.eye(4)[[2, 1, 0, 3]]
    zyx = flip @ np.asarray(matrix) @ flip
    return ndimage.affine_transform(moving, zyx[:3, :3], zyx[:3, 3], order=1)


def test_pairs_follow_the_volume_conventions(pairs):
    assert sorted(pairs) == ["pd-001", "t2-000"]
    for pair_id, pair in pairs.items():
        checked = check_pair(pair, pair_id)
        assert checked.ndim == 3 and checked.fixed.shape == (95, 117, 99)
        assert checked.fixed_landmarks.shape == (20, 3)
        assert checked.fixed_geometry.unit == "mm"
        np.testing.assert_allclose(checked.fixed_geometry.spacing, [2.0, 2.0, 2.0])
        # Both images carry the template's geometry (the moving one is on the same grid).
        assert checked.moving_geometry == checked.fixed_geometry == brain.template(2).geometry


def test_landmarks_map_exactly_through_the_known_transform(pairs):
    for pair in pairs.values():
        t = np.array(pair.meta["true_transform"])
        f, m = pair.fixed_landmarks, pair.moving_landmarks
        homog = np.column_stack([f, np.ones(len(f))]) @ t.T
        np.testing.assert_allclose(m, homog[:, :3], atol=1e-12)
        # On structure, inside the brain, and well inside the moving volume.
        idx = tuple(np.rint(f[:, ::-1]).astype(int).T)
        assert pair.fixed_mask.all() and brain.template(2).brain[idx].all()
        assert (m >= 3).all() and (m <= np.array(pair.moving.shape[::-1]) - 4).all()


def test_the_moving_image_is_the_contrast_pulled_back_by_the_transform(pairs):
    """Undoing the known transform (scipy, independent of mibench's warp) lines the moving
    volume up with the contrast synthesised in the fixed frame; the bias field is smooth, so
    the correlation is near 1 with it and far lower without the transform."""
    tpl = brain.template(2)
    pair = pairs["t2-000"]
    t = np.array(pair.meta["true_transform"])
    expected = brain._contrast(tpl, "t2")
    back = _pull_to_fixed(pair.moving, t)
    seen = _pull_to_fixed(pair.moving_mask.astype(float), t) > 0.99
    inside = ndimage.binary_erosion(seen, iterations=2)
    assert np.corrcoef(back[inside], expected[inside])[0, 1] > 0.95
    assert np.corrcoef(pair.moving[inside], expected[inside])[0, 1] < 0.8


def test_the_true_transform_is_rigid_in_millimetres_when_asked():
    ds = brain.load_dataset(pairs=1, transform="rigid", difficulty="hard")
    info = ds.pairs()[0]
    geometry, _ = brain.grid(2)
    world = world_transform(np.array(info.meta["true_transform"]), geometry, geometry)
    linear = world[:3, :3]
    np.testing.assert_allclose(linear @ linear.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(linear) == pytest.approx(1.0)
    angle = np.degrees(np.arccos((np.trace(linear) - 1) / 2))
    assert 0 < angle <= 20 * np.sqrt(3)


@pytest.mark.parametrize("contrast", ["t2", "pd"])
def test_the_moving_contrast_is_not_monotonic_against_t1(contrast):
    """Mean intensity per tissue class, ordered by T1 (background < CSF < GM < WM), is neither
    increasing nor decreasing in the moving image."""
    tpl = brain.template(2)
    ds = brain.load_dataset(pairs=1, contrasts=contrast, seed=3)
    pair = ds.load(ds.pairs()[0].id)
    back = _pull_to_fixed(pair.moving, pair.meta["true_transform"])
    far = ~ndimage.binary_dilation(tpl.brain, iterations=4)
    classes = [far, tpl.brain & (tpl.csf > 0.8), tpl.gm > 0.7, tpl.wm > 0.7]
    t1 = [tpl.t1[c].mean() for c in classes]
    moving = [back[c].mean() for c in classes]
    assert np.all(np.diff(t1) > 0)
    steps = np.sign(np.diff(moving))
    assert (steps > 0).any() and (steps < 0).any(), moving


def test_pairs_are_reproducible_per_seed_and_independent_of_the_count():
    a = brain.load_dataset(pairs=1, seed=5).load("t2-000")
    b = brain.load_dataset(pairs=3, seed=5).load("t2-000")
    np.testing.assert_array_equal(a.moving, b.moving)
    np.testing.assert_array_equal(a.moving_landmarks, b.moving_landmarks)
    other = brain.load_dataset(pairs=1, seed=6).pairs()[0]
    assert other.meta["true_transform"] != a.meta["true_transform"]


def test_one_pair_loads_in_seconds():
    ds = brain.load_dataset(pairs=1, seed=1, mask="brain")
    ds.load("t2-000")  # the template and its corners are cached per process
    start = time.perf_counter()
    pair = ds.load("t2-000")
    assert time.perf_counter() - start < 3.0
    assert pair.fixed_mask.mean() < 0.5 and pair.moving_mask.any()


def test_the_template_is_nilearns_2mm_template():
    from nilearn.datasets import load_mni152_template

    reference = load_mni152_template(resolution=2)
    tpl = brain.template(2)
    np.testing.assert_allclose(tpl.geometry.affine, reference.affine)
    np.testing.assert_allclose(tpl.t1, np.asarray(reference.dataobj).T, atol=1e-6)


def test_without_nilearn_it_says_how_to_install(monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "nilearn" else find_spec(name, *a))
    with pytest.raises(UserError, match=r"pip install \"mibench\[volumes\]\""):
        brain.load_dataset()
    assert brain.BRAIN.unavailable_reason().startswith("needs the Python package 'nilearn'")
    # Listed (as every optional plugin is) as unavailable, with the install command.
    from mibench.api import list_plugins

    row = next(r for r in list_plugins() if r["kind"] == "dataset" and r["name"] == "brain")
    assert not row["available"]
    assert row["reason"] == ("needs the Python package 'nilearn'; "
                             'pip install "mibench[volumes]"')
    with pytest.raises(UserError, match=r"^dataset 'brain' is unavailable: needs the Python "
                                        r"package 'nilearn'; pip install \"mibench\[volumes\]\""):
        mibench.dataset("brain")


def test_the_spec_builds_the_dataset_and_pairs_read_only_the_header():
    factory = brain.BRAIN.load()
    ds = factory(None, pairs=3, contrasts="t1,t2,pd")
    assert [info.id for info in ds.pairs()] == ["t1-000", "t2-001", "pd-002"]
    geometry, shape = brain.grid(2)
    assert shape == (95, 117, 99) and geometry == brain.template(2).geometry
    # Registered through the same hook as every built-in dataset, available here.
    registered = {spec.name: spec for spec in _registered_datasets()}
    assert registered["brain"] is brain.BRAIN and brain.BRAIN.unavailable_reason() is None


def _registered_datasets():
    from mibench.datasets import mibench_datasets

    return mibench_datasets()


def test_unknown_contrast_and_options_are_refused():
    with pytest.raises(ValueError, match="option 'contrasts' takes a comma list of t2, pd, t1"):
        brain.load_dataset(contrasts="ct")
    with pytest.raises(UserError, match="resolution"):
        brain.load_dataset(resolution=3)


def test_pairs_are_scored_in_mm_and_voxels(pairs):
    """Both images carry the 2 mm template geometry, so a record is in mm: twice the voxel
    errors, with the same NAED (isotropic voxels: the spacing cancels in the ratio); the true
    transform scores zero."""
    from mibench.registration import RegistrationTask, score_record
    from mibench.transform import MatrixTransform

    pair = check_pair(pairs["t2-000"], "t2-000")
    task = RegistrationTask("identity", {}, "brain", {}, "t2-000", 0)
    record = score_record(task, pair, MatrixTransform(np.eye(4)), error=None,
                          naed_norm="diagonal")
    voxel = np.linalg.norm(pair.moving_landmarks - pair.fixed_landmarks, axis=1)
    assert record.unit == "mm" and record.scored
    np.testing.assert_allclose(record.landmark_errors, 2.0 * voxel, rtol=1e-12)
    assert record.voxel_metrics["tre_mean"] == pytest.approx(voxel.mean(), rel=1e-12)
    assert record.norm_length == pytest.approx(2.0 * np.sqrt(99**2 + 117**2 + 95**2))
    assert record.metrics["naed"] == pytest.approx(record.voxel_metrics["naed"], rel=1e-12)
    truth = MatrixTransform(np.array(pair.meta["true_transform"]))
    exact = score_record(task, pair, truth, error=None, naed_norm="diagonal")
    assert exact.metrics["tre_max"] < 1e-9
