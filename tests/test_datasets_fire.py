"""FIRE in its native layout, through ``mibench run --dataset fire``."""

import json

import numpy as np
import pytest
from fixtures_datasets import FIRE_SIZE, make_fire, run_identity

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
