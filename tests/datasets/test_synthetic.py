"""The ``synthetic`` dataset: output contract, exact ground truth, determinism and options."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest
from scipy import ndimage
from skimage.metrics import normalized_mutual_information

import mibench
from mibench.datasets import SYNTHETIC, mibench_datasets
from mibench.datasets.synthetic import ELASTIC_DEFAULTS, load_dataset
from mibench.errors import UserError
from mibench.transform import MatrixTransform


def _load_all(**params):
    ds = load_dataset(None, **params)
    return [ds.load(info.id) for info in ds.pairs()]


@pytest.fixture(scope="module")
def default_pairs():
    return _load_all(pairs=4)


@pytest.fixture(scope="module")
def monomodal_pairs():
    # Hard perspective transforms exercise every part of the geometry.
    return _load_all(pairs=4, modality="none", transform="perspective", difficulty="hard")


def _true(pair) -> np.ndarray:
    return np.asarray(pair.meta["true_transform"])


def _unwarp(pair, matrix):
    """The moving image pulled back into the fixed frame by ``matrix``, and where it is valid."""
    transform = MatrixTransform(matrix)
    back = transform.warp(pair.moving, pair.fixed.shape)
    moving_valid = transform.warp(pair.moving_mask.astype(np.float32), pair.fixed.shape) > 0.999
    valid = ndimage.binary_erosion(pair.fixed_mask & moving_valid, iterations=3)
    return back, valid


def _detail_correlation(a, b, valid):
    # High-pass first: the low frequencies (illumination, FOV) correlate under any small shift.
    def high(img):
        return img - ndimage.gaussian_filter(img, 4)

    return np.corrcoef(high(a)[valid], high(b)[valid])[0, 1]


# --------------------------------------------------------------------------- spec


def test_spec_is_registered_and_needs_no_data():
    assert SYNTHETIC in mibench_datasets()
    assert SYNTHETIC.needs_data_dir is False
    base = {
        "seed": 0, "pairs": 8, "size": 256, "families": "fundus,histology",
        "transform": "affine", "difficulty": "medium", "landmarks": 12,
        "modality": "multimodal",
    }
    elastic = {"elastic_amplitude": 10.0, "elastic_spacing": 48.0}
    assert SYNTHETIC.defaults() == {**base, **elastic}
    assert elastic == ELASTIC_DEFAULTS  # what the generator reads when they are absent
    assert SYNTHETIC.param("transform").choices == ("affine", "perspective", "rigid", "elastic")
    # The elastic options came later: quiet (out of the resolved options, so of the task keys)
    # unless given.
    assert SYNTHETIC.resolve() == base
    given = SYNTHETIC.resolve({"transform": "elastic", "elastic_spacing": "40"}, from_text=True)
    assert given == {**base, "transform": "elastic", "elastic_spacing": 40.0}
    with pytest.raises(UserError, match="elastic_amplitude"):
        SYNTHETIC.resolve({"elastic_amplitude": -1.0})
    with pytest.raises(UserError, match="elastic_spacing"):
        SYNTHETIC.resolve({"elastic_spacing": 0.0})


def test_elastic_options_reach_the_generator():
    """Quiet or given, the options the spec declares are those the generator uses."""
    default = load_dataset(None, pairs=1, size=96, transform="elastic").pairs()[0]
    given = load_dataset(None, pairs=1, size=96, transform="elastic", elastic_amplitude=10.0,
                         elastic_spacing=48.0).pairs()[0]
    assert default.meta == given.meta
    other = load_dataset(None, pairs=1, size=96, transform="elastic",
                         elastic_spacing=44.0).pairs()[0]
    assert other.meta["true_deformation"]["grid"]["spacing"] == [44.0, 44.0]
    assert default.meta["true_deformation"]["grid"]["spacing"] == [48.0, 48.0]


def test_listing_datasets_does_not_import_the_generator():
    code = ("import sys, mibench.datasets; "
            "print(sorted(m for m in ('skimage', 'mibench.datasets.synthetic') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ----------------------------------------------------------------------- contract


def test_output_follows_the_contract(default_pairs):
    assert [p.id for p in default_pairs] == [
        "fundus-000", "histology-001", "fundus-002", "histology-003"]
    for pair in default_pairs:
        assert re.fullmatch(r"[A-Za-z0-9._-]+", pair.id)
        assert pair.meta["family"] == pair.id.split("-")[0]
        for image in (pair.fixed, pair.moving):
            assert image.shape == (256, 256) and image.dtype == np.float32
            assert np.isfinite(image).all() and image.min() >= 0 and image.max() <= 1
            assert image.std() > 0.05
        for mask in (pair.fixed_mask, pair.moving_mask):
            assert mask.shape == (256, 256) and mask.dtype == bool and mask.mean() > 0.5
        for points in (pair.fixed_landmarks, pair.moving_landmarks):
            assert points.shape == (12, 2) and points.dtype == np.float64
            assert np.isfinite(points).all()
        assert pair.native_scale == 1.0


def test_fundus_background_is_zero_outside_the_fov(default_pairs):
    fundus = [p for p in default_pairs if p.meta["family"] == "fundus"]
    for pair in fundus:
        assert not pair.fixed_mask.all() and not pair.moving_mask.all()
        assert (pair.fixed[~pair.fixed_mask] == 0).all()
        assert (pair.moving[~pair.moving_mask] == 0).all()


def test_pairs_is_cheap_and_agrees_with_load():
    ds = load_dataset(None, pairs=3)
    infos = ds.pairs()
    assert [i.id for i in infos] == ["fundus-000", "histology-001", "fundus-002"]
    pair = ds.load("histology-001")
    assert pair.info == infos[1]


def test_unknown_pair_id_is_a_value_error():
    ds = load_dataset(None, pairs=2)
    with pytest.raises(ValueError, match="fundus-002"):
        ds.load("fundus-002")


# ------------------------------------------------------------------ ground truth


def test_landmarks_follow_the_true_transform(default_pairs):
    for pair in default_pairs:
        expected = MatrixTransform(_true(pair)).fixed_to_moving(pair.fixed_landmarks)
        np.testing.assert_allclose(pair.moving_landmarks, expected, rtol=0, atol=1e-9)


def test_landmarks_are_inside_both_fovs_and_on_structure(default_pairs, monomodal_pairs):
    for pair in default_pairs + monomodal_pairs:
        for points, mask in ((pair.fixed_landmarks, pair.fixed_mask),
                             (pair.moving_landmarks, pair.moving_mask)):
            cols, rows = np.rint(points).astype(int).T
            assert (cols >= 0).all() and (cols < 256).all()
            assert (rows >= 0).all() and (rows < 256).all()
            assert mask[rows, cols].all()
        cols, rows = pair.fixed_landmarks.astype(int).T
        gradient = ndimage.gaussian_gradient_magnitude(pair.fixed.astype(np.float64), 1.5)
        assert (gradient[rows, cols] >= np.median(gradient[pair.fixed_mask])).all()
        spacing = np.hypot(*(pair.fixed_landmarks[:, None] - pair.fixed_landmarks[None]).T)
        assert spacing[~np.eye(len(spacing), dtype=bool)].min() >= 8  # well spread


def test_true_transform_aligns_the_image_content(monomodal_pairs):
    # Without the modality change the moving image pulled back by T must equal the fixed one
    # (up to interpolation), while the identity or the inverse transform must not.
    for pair in monomodal_pairs:
        truth = _true(pair)
        scores = {}
        for name, matrix in (("true", truth), ("identity", np.eye(3)),
                             ("inverse", np.linalg.inv(truth))):
            back, valid = _unwarp(pair, matrix)
            assert valid.mean() > 0.3
            scores[name] = _detail_correlation(pair.fixed, back, valid)
        assert scores["true"] > 0.95, (pair.id, scores)
        assert scores["identity"] < 0.5 and scores["inverse"] < 0.5, (pair.id, scores)


def test_multimodal_pairs_are_aligned_by_mutual_information(default_pairs):
    for pair in default_pairs:
        truth = _true(pair)
        nmi = {}
        for name, matrix in (("true", truth), ("identity", np.eye(3))):
            back, valid = _unwarp(pair, matrix)
            nmi[name] = normalized_mutual_information(pair.fixed[valid], back[valid], bins=32)
        assert nmi["true"] > nmi["identity"] + 0.005, (pair.id, nmi)


def test_fundus_intensity_mapping_is_not_monotonic(default_pairs):
    # Binned by fixed intensity, the mean aligned moving intensity must rise and fall.
    for pair in (p for p in default_pairs if p.meta["family"] == "fundus"):
        back, valid = _unwarp(pair, _true(pair))
        bins = np.digitize(pair.fixed[valid], np.linspace(0, 1, 11))
        means = np.array([back[valid][bins == b].mean() for b in np.unique(bins)
                          if (bins == b).sum() > 50])
        steps = np.diff(means)
        assert (steps > 0.01).any() and (steps < -0.01).any(), (pair.id, means)


# ------------------------------------------------------------------- determinism


def test_same_seed_same_pairs_and_different_seed_differs(default_pairs):
    again = _load_all(pairs=4)
    for a, b in zip(default_pairs, again, strict=True):
        for name in ("fixed", "moving", "fixed_landmarks", "moving_landmarks",
                     "fixed_mask", "moving_mask"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
        assert a.meta == b.meta
    other = load_dataset(None, pairs=1, seed=1).load("fundus-000")
    assert not np.array_equal(other.moving, default_pairs[0].moving)
    assert other.meta["true_transform"] != default_pairs[0].meta["true_transform"]


def test_a_pair_does_not_depend_on_the_number_of_pairs(default_pairs):
    eight = load_dataset(None, pairs=8)
    pair = eight.load("histology-003")
    np.testing.assert_array_equal(pair.moving, default_pairs[3].moving)
    np.testing.assert_array_equal(pair.fixed_landmarks, default_pairs[3].fixed_landmarks)


def test_pairs_show_different_content(default_pairs):
    first, third = default_pairs[0], default_pairs[2]
    assert first.meta["crop"] != third.meta["crop"]
    assert np.abs(first.fixed - third.fixed).mean() > 0.02


# ------------------------------------------------------------------------ options


def test_size_landmarks_and_family_options():
    ds = load_dataset(None, pairs=3, size=96, families="histology", landmarks=20)
    infos = ds.pairs()
    assert [i.id for i in infos] == ["histology-000", "histology-001", "histology-002"]
    pair = ds.load(infos[0].id)
    assert pair.fixed.shape == pair.moving.shape == (96, 96)
    assert pair.fixed_landmarks.shape == pair.moving_landmarks.shape == (20, 2)


def test_perspective_adds_a_projective_row():
    affine = load_dataset(None, pairs=4).pairs()
    perspective = load_dataset(None, pairs=4, transform="perspective").pairs()
    for a, p in zip(affine, perspective, strict=True):
        assert np.asarray(a.meta["true_transform"])[2].tolist() == [0.0, 0.0, 1.0]
        row = np.asarray(p.meta["true_transform"])[2]
        assert np.abs(row[:2]).max() > 1e-6 and row[2] == 1.0


def test_rigid_is_rotation_and_translation_from_the_same_draws():
    size = 200
    affine = load_dataset(None, pairs=12, size=size, difficulty="hard").pairs()
    rigid = load_dataset(None, pairs=12, size=size, difficulty="hard",
                         transform="rigid").pairs()
    centre = np.array([(size - 1) / 2] * 2)
    angles = []
    for a, r in zip(affine, rigid, strict=True):
        m = np.asarray(r.meta["true_transform"])
        lin = m[:2, :2]
        assert m[2].tolist() == [0.0, 0.0, 1.0]
        np.testing.assert_allclose(lin.T @ lin, np.eye(2), atol=1e-12)  # no scale, no shear
        assert np.linalg.det(lin) > 0
        angle = np.degrees(np.arctan2(lin[1, 0], lin[0, 0]))
        shift = m[:2] @ np.append(centre, 1.0) - centre  # translation of the image centre
        assert abs(angle) <= 30.0 and np.abs(shift).max() <= 0.2 * size
        # The same unit draws as the affine pair: the hard affine rotation is 20 deg * u.
        ma = np.asarray(a.meta["true_transform"])
        affine_shift = ma[:2] @ np.append(centre, 1.0) - centre
        np.testing.assert_allclose(shift, 2.0 * affine_shift, rtol=1e-9, atol=1e-9)
        angles.append(angle)
        assert a.meta["crop"] == r.meta["crop"]
    assert max(np.abs(angles)) > 15  # the range is used


def test_harder_difficulty_moves_further_from_identity():
    def displacement(difficulty):
        infos = load_dataset(None, pairs=16, difficulty=difficulty).pairs()
        corners = np.array([[0.0, 0.0], [255, 0], [0, 255], [255, 255]])
        return np.mean([
            np.abs(MatrixTransform(i.meta["true_transform"]).fixed_to_moving(corners)
                   - corners).mean() for i in infos])

    easy, medium, hard = (displacement(d) for d in ("easy", "medium", "hard"))
    assert easy < medium < hard
    assert hard > 2 * easy


@pytest.mark.parametrize("params, message", [
    ({"seed": -1}, r"option 'seed' must be >= 0, got -1"),
    ({"pairs": 0}, r"option 'pairs' must be >= 1, got 0"),
    ({"size": 8}, r"option 'size' must be >= 32, got 8"),
    ({"landmarks": 0}, r"option 'landmarks' must be >= 1, got 0"),
    ({"transform": "bspline"}, r"option 'transform' must be one of affine, perspective, rigid"),
    ({"difficulty": "extreme"}, r"option 'difficulty' must be one of easy, medium, hard"),
    ({"colour": True}, r"has no option 'colour'"),
])
def test_invalid_options_are_user_errors(params, message):
    """Bounds and choices are the spec's, checked by the factory too when called directly."""
    with pytest.raises(UserError, match=rf"^dataset 'synthetic'(: | ){message}"):
        load_dataset(None, **params)


@pytest.mark.parametrize("families", ["fundus,mri", " , "])
def test_unknown_families_are_value_errors(families):
    """The dataset's own check of its comma list: a ValueError, which ``mibench.dataset`` and
    ``mibench run`` report as ``dataset 'synthetic': ...``."""
    message = rf"option 'families' takes a comma list of fundus, histology; got '{families}'"
    with pytest.raises(ValueError, match=rf"^{message}$"):
        load_dataset(None, families=families)
    with pytest.raises(UserError, match=rf"^dataset 'synthetic': {message}$"):
        mibench.dataset("synthetic", families=families)
