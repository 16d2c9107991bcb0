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
