"""The synthetic dataset's elastic family: an affine plus a smooth B-spline field, exact truth."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from mibench.bspline import BSplineTransform
from mibench.datasets import SYNTHETIC
from mibench.datasets.synthetic import ELASTIC_DEFAULTS, SyntheticDataset
from mibench.deformation import jacobian_determinant
from mibench.transform import MatrixTransform, transform_from_dict


def _dataset(**params) -> SyntheticDataset:
    # Built from the spec's defaults plus the elastic options, so that the test does not
    # depend on whether the spec lists transform="elastic" yet.
    return SyntheticDataset({**SYNTHETIC.defaults(), "transform": "elastic", **params})


@pytest.fixture(scope="module")
def elastic_pairs():
    ds = _dataset(pairs=2, modality="none")
    return [ds.load(info.id) for info in ds.pairs()]


def _truth(pair) -> BSplineTransform:
    return transform_from_dict(pair.meta["true_deformation"])


def _high(img):
    return img - ndimage.gaussian_filter(img, 4)


def _detail_correlation(pair, transform) -> float:
    back = transform.warp(pair.moving, pair.fixed.shape)
    valid = transform.warp(pair.moving_mask.astype(np.float32), pair.fixed.shape) > 0.999
    valid = ndimage.binary_erosion(pair.fixed_mask & valid, iterations=3)
    return float(np.corrcoef(_high(back)[valid], _high(pair.fixed)[valid])[0, 1])


def test_same_affine_crop_and_fixed_image_as_the_affine_family():
    elastic = _dataset(pairs=2)
    affine = SyntheticDataset({**SYNTHETIC.defaults(), "pairs": 2})
    for e_info, a_info in zip(elastic.pairs(), affine.pairs(), strict=True):
        assert e_info.id == a_info.id
        assert e_info.meta["affine"] == a_info.meta["true_transform"]
        assert e_info.meta["crop"] == a_info.meta["crop"]
        assert "true_transform" not in e_info.meta  # a matrix would not be the truth
    e, a = elastic.load("histology-001"), affine.load("histology-001")
    np.testing.assert_array_equal(e.fixed, a.fixed)
    assert not np.array_equal(e.moving, a.moving)


def test_truth_is_the_affine_then_the_field(elastic_pairs):
    for pair in elastic_pairs:
        t = _truth(pair)
        assert isinstance(t, BSplineTransform)
        np.testing.assert_array_equal(t.affine.matrix, np.asarray(pair.meta["affine"]))
        assert t.grid.spacing == (ELASTIC_DEFAULTS["elastic_spacing"],) * 2
        # Landmarks: m_k = A(f_k) + u(A(f_k)) with the truth read back from meta (the
        # evaluation itself is checked against SciPy in tests/test_bspline.py).
        q = MatrixTransform(t.affine.matrix).fixed_to_moving(pair.fixed_landmarks)
        np.testing.assert_allclose(pair.moving_landmarks, t.fixed_to_moving(pair.fixed_landmarks),
                                   atol=1e-9)
        assert np.abs(pair.moving_landmarks - q).max() > 0.5  # the field moves them


def test_field_is_bounded_and_does_not_fold(elastic_pairs):
    amplitude = ELASTIC_DEFAULTS["elastic_amplitude"]
    for pair in elastic_pairs:
        t = _truth(pair)
        assert np.abs(t.coefficients).max() <= amplitude
        affine = MatrixTransform(t.affine.matrix)
        pts = np.random.default_rng(0).uniform(0, 255, (2000, 2))
        u = t.fixed_to_moving(pts) - affine.fixed_to_moving(pts)
        assert np.abs(u).max() <= amplitude and np.abs(u).max() > amplitude / 4
        det = jacobian_determinant(t, pair.fixed.shape)
        assert det.min() > 0


def test_images_agree_through_the_true_field_not_the_affine(elastic_pairs):
    """The moving image pulled back by the true B-spline matches the fixed image's detail;
    pulled back by the affine alone, it matches much worse."""
    for pair in elastic_pairs:
        t = _truth(pair)
        exact = _detail_correlation(pair, t)
        affine_only = _detail_correlation(pair, MatrixTransform(t.affine.matrix))
        assert exact > 0.9
        assert affine_only < exact - 0.1


def test_best_affine_cannot_fit_the_landmarks():
    """The field is not nearly affine: the least-squares affine of a dense set of true
    correspondences leaves a median error above 1 px on every pair."""
    ds = _dataset(pairs=4)
    for info in ds.pairs():
        t = transform_from_dict(info.meta["true_deformation"])
        ys, xs = np.mgrid[16:240:8, 16:240:8]
        f = np.column_stack([xs.ravel(), ys.ravel()]).astype(np.float64)
        m = t.fixed_to_moving(f)
        design = np.column_stack([f, np.ones(len(f))])
        fit, *_ = np.linalg.lstsq(design, m, rcond=None)
        assert np.median(np.linalg.norm(design @ fit - m, axis=1)) > 1.0


def test_deterministic_and_independent_of_the_pair_count():
    one = _dataset(pairs=1).load("fundus-000")
    again = _dataset(pairs=3).load("fundus-000")
    for name in ("fixed", "moving", "fixed_landmarks", "moving_landmarks"):
        np.testing.assert_array_equal(getattr(one, name), getattr(again, name))
    assert one.meta == again.meta
    other = _dataset(pairs=1, seed=1).load("fundus-000")
    assert not np.array_equal(one.meta["true_deformation"]["coefficients"],
                              other.meta["true_deformation"]["coefficients"])


def test_amplitude_and_spacing_options():
    t = transform_from_dict(_dataset(pairs=1, elastic_amplitude=2.0, elastic_spacing=32.0)
                            .pairs()[0].meta["true_deformation"])
    assert t.grid.spacing == (32.0, 32.0) and np.abs(t.coefficients).max() <= 2.0
    flat = _dataset(pairs=1, elastic_amplitude=0.0).load("fundus-000")
    affine = SyntheticDataset({**SYNTHETIC.defaults(), "pairs": 1}).load("fundus-000")
    np.testing.assert_allclose(flat.moving_landmarks,
                               MatrixTransform(affine.meta["true_transform"])
                               .fixed_to_moving(flat.fixed_landmarks), atol=1e-9)
    with pytest.raises(ValueError, match="folding"):
        _dataset(pairs=1, elastic_amplitude=12.0, elastic_spacing=48.0)


def test_a_known_field_is_recovered_by_gradient_descent():
    """The differentiable dense field (mibench.bspline.DenseField) recovers the elastic pair's
    field: with the true affine and grid, Adam on the masked MSE of the monomodal pair, coarse
    then fine smoothing, brings the landmarks from pixels to a small fraction of a pixel."""
    import torch
    import torch.nn.functional as F

    from mibench.bspline import DenseField

    ds = _dataset(pairs=1, size=128, modality="none", elastic_amplitude=6.0,
                  elastic_spacing=32.0, landmarks=20)
    pair = ds.load("fundus-000")
    truth = _truth(pair)
    field = DenseField(truth.grid, pair.fixed.shape, truth.affine)
    c = torch.zeros(truth.grid.coefficient_shape, dtype=torch.float32, requires_grad=True)
    optimiser = torch.optim.Adam([c], lr=0.3)
    fixed_mask = torch.from_numpy(pair.fixed_mask.astype(np.float32))
    moving_mask = torch.from_numpy(pair.moving_mask.astype(np.float32))[None, None]
    for sigma in (3.0, 1.0):
        fixed = torch.from_numpy(ndimage.gaussian_filter(pair.fixed, sigma))
        moving = torch.from_numpy(ndimage.gaussian_filter(pair.moving, sigma))[None, None]
        for _ in range(50):
            warped = F.grid_sample(torch.cat([moving, moving_mask], 1),
                                   field.sampling_grid(c, pair.moving.shape), align_corners=True)
            valid = fixed_mask * (warped[0, 1] > 0.999)
            loss = ((warped[0, 0] - fixed) ** 2 * valid).sum() / valid.sum()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    found = BSplineTransform(truth.grid, c.detach().double().numpy(), truth.affine)
    error = np.linalg.norm(found.moving_to_fixed(pair.moving_landmarks) - pair.fixed_landmarks,
                           axis=1)
    affine_only = np.linalg.norm(truth.affine.moving_to_fixed(pair.moving_landmarks)
                                 - pair.fixed_landmarks, axis=1)
    assert np.median(affine_only) > 1.0
    assert np.median(error) < 0.2 and error.max() < 0.5
