"""FIRE in its native layout, through ``mibench run --dataset fire``."""

import json
import shutil

import numpy as np
import pytest
from helpers.datasets import FIRE_SIZE, blob_image, expect_error, make_fire, run_identity, save

import mibench


@pytest.fixture(scope="module")
def fire(tmp_path_factory):
    return make_fire(tmp_path_factory.mktemp("fire"))


def test_run_scores_identity_in_native_pixels_and_leaves_p37_out(fire, tmp_path):
    """Pair i's test points are its reference points + (3, 4)(i + 1) native px, so the identity
    error of every point is 5 (i + 1) native px whatever the working scale (0.25 here)."""
    result, records = run_identity(tmp_path / "run", "fire", fire.root)
    assert "0 failed" in result.output
    notes = json.loads((tmp_path / "run" / "run.json").read_text())["dataset_notes"]
    assert any(n.startswith("P37 excluded") for n in notes)
    assert any(n.startswith("working scale 0.25") for n in notes)
    assert sorted(records) == ["A03", "P02", "S01"]  # P37 excluded by default
    expected = {"S01": 5.0, "P02": 10.0, "A03": 20.0}
    for pair_id, error in expected.items():
        rec = records[pair_id]
        assert rec.status == "ok" and rec.scored
        assert rec.meta["category"] == pair_id[0]
        np.testing.assert_allclose(rec.landmark_errors, [error] * 10, rtol=1e-12)
        assert rec.metrics["tre_mean"] == pytest.approx(error)
        assert rec.metrics["naed"] == pytest.approx(error / np.hypot(FIRE_SIZE, FIRE_SIZE))
        # Warped test points in native reference pixels: the identity leaves them in place.
        np.testing.assert_allclose(rec.warped_moving_landmarks, fire.points[pair_id][:, 2:])


def test_p37_option_category_filter_and_notes(fire):
    ds = mibench.dataset("fire", str(fire.root))
    assert [p.id for p in ds.pairs()] == ["S01", "P02", "A03"]
    assert any("P37 excluded" in n for n in ds.notes)
    ds = mibench.dataset("fire", str(fire.root), categories="P", include_p37=True)
    assert [p.id for p in ds.pairs()] == ["P02", "P37"]
    assert any("P37 included" in n for n in ds.notes)
    assert [p.meta["category"] for p in ds.pairs()] == ["P", "P"]
    pair = ds.load("P37")
    f, m = pair.fixed_landmarks, pair.moving_landmarks
    np.testing.assert_allclose(np.linalg.norm(m - f, axis=1) * pair.native_scale, 15.0)


def test_working_scale_images_landmarks_and_mask_agree(fire):
    """Blobs drawn at the first three reference points sit at the scaled landmarks of the
    working image (intensity centroid within 0.15 px; the half-pixel convention would be off by
    0.375 px)."""
    ds = mibench.dataset("fire", str(fire.root), scale=0.25)
    pair = ds.load("S01")
    assert pair.fixed.shape == (24, 24) and pair.native_scale == 4.0
    assert pair.native_fixed_shape == (FIRE_SIZE, FIRE_SIZE)
    np.testing.assert_allclose(pair.fixed_landmarks, fire.points["S01"][:, :2] * 0.25)
    np.testing.assert_allclose(pair.moving_landmarks, fire.points["S01"][:, 2:] * 0.25)
    img = pair.fixed - np.median(pair.fixed)
    ys, xs = np.mgrid[: img.shape[0], : img.shape[1]]
    for x, y in pair.fixed_landmarks[:3]:
        near = np.hypot(xs - x, ys - y) < 2.5
        weights = np.clip(img, 0, None) * near
        centroid = np.array([(weights * xs).sum(), (weights * ys).sum()]) / weights.sum()
        assert np.hypot(*(centroid - (x, y))) < 0.15
    # The FOV disc of radius 44 native px (11 working px) about the centre.
    r = np.hypot(xs - 11.875, ys - 11.875)
    assert pair.fixed_mask[r < 10].all() and not pair.fixed_mask[r > 12].any()
    assert pair.moving_mask is pair.fixed_mask
    feature = mibench.dataset("fire", str(fire.root), mask="feature").load("S01").fixed_mask
    assert feature.sum() < pair.fixed_mask.sum()
    assert mibench.dataset("fire", str(fire.root), mask="none").load("S01").fixed_mask is None


def test_full_resolution_gives_the_same_native_errors(fire):
    full = mibench.dataset("fire", str(fire.root), scale=1.0).load("A03")
    assert full.fixed.shape == (FIRE_SIZE, FIRE_SIZE) and full.native_scale == 1.0
    np.testing.assert_allclose(full.fixed_landmarks, fire.points["A03"][:, :2])
    e = np.linalg.norm(full.moving_landmarks - full.fixed_landmarks, axis=1)
    np.testing.assert_allclose(e, 20.0)


def test_missing_ground_truth_of_a_pair_with_images_is_an_error(tmp_path):
    """FIRE ships ground truth for every pair: a pair whose images are there without it is a
    damaged download, refused by name rather than left out unnoticed."""
    make_fire(tmp_path / "FIRE", ids=("S01", "P02", "A03", "P37"))
    (tmp_path / "FIRE" / "Ground Truth" / "control_points_P02_1_2.txt").unlink()
    (tmp_path / "FIRE" / "Ground Truth" / "control_points_A03_1_2.txt").unlink()
    expect_error("fire", tmp_path, match=r"Ground Truth/control_points_A03_1_2\.txt: FIRE "
                 r"ground-truth file not found, though Images/ has pair A03 \(and 1 more: P02\)")
    # Pairs of categories not chosen, and P37 when left out, do not matter to the run.
    (tmp_path / "FIRE" / "Ground Truth" / "control_points_P37_1_2.txt").unlink()
    ds = mibench.dataset("fire", str(tmp_path), categories="S")
    assert [p.id for p in ds.pairs()] == ["S01"]


def test_size_mismatches_are_found_from_the_headers_before_any_task(tmp_path):
    """A test image or a mask of another size than the reference image would fail every task
    at load time while the run exits 0: both are refused when the dataset is opened."""
    make_fire(tmp_path / "FIRE", ids=("S01", "P02"))
    images = tmp_path / "FIRE" / "Images"
    save(images / "P02_2.jpg", blob_image((FIRE_SIZE, 80), np.array([[30.0, 40.0]]), rgb=True),
         quality=95)
    expect_error("fire", tmp_path / "FIRE", match=r"Images/P02_2\.jpg: FIRE test image is "
                 rf"80 x {FIRE_SIZE} px, its reference image P02_1\.jpg {FIRE_SIZE} x "
                 rf"{FIRE_SIZE} px")
    shutil.copy(images / "S01_2.jpg", images / "P02_2.jpg")
    save(tmp_path / "FIRE" / "Masks" / "mask.png", np.full((64, 72), 255, np.uint8))
    expect_error("fire", tmp_path / "FIRE", match=r"Masks/mask\.png: mask is 72 x 64 px, the "
                 rf"images \(S01_1\.jpg\) {FIRE_SIZE} x {FIRE_SIZE} px")
    # The feature mask is still the right size, and no mask needs no check.
    assert len(mibench.dataset("fire", str(tmp_path), mask="feature").pairs()) == 2
    assert len(mibench.dataset("fire", str(tmp_path), mask="none").pairs()) == 2


def test_data_dir_that_is_a_file_or_missing(tmp_path):
    from mibench.datasets.fire import load_dataset

    (tmp_path / "FIRE.zip").write_bytes(b"PK")
    with pytest.raises(ValueError, match=r"FIRE\.zip: data directory is a file, not a "
                                         r"directory"):
        load_dataset(tmp_path / "FIRE.zip")
    with pytest.raises(ValueError, match=r"nowhere: data directory does not exist"):
        load_dataset(tmp_path / "nowhere")
    with pytest.raises(ValueError, match=r"dataset 'fire' needs a data directory"):
        load_dataset(None)


def test_the_factory_checks_the_declared_bounds_when_called_directly(fire):
    """The bounds live in the spec; the factory applies them (and the defaults) itself, so a
    direct call from Python cannot slip past them."""
    from mibench.datasets.fire import load_dataset

    with pytest.raises(mibench.UserError, match=r"^dataset 'fire': option 'scale' must be in "
                                                r"\(0, 1\], got 2\.0$"):
        load_dataset(fire.root, scale=2.0)
    assert load_dataset(fire.root).scale == 0.25
