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
