"""Jacobian determinant, folding and SD of log-Jacobian against hand computations."""

import numpy as np
import pytest
from scipy import ndimage

from mibench.bspline import BSplineTransform
from mibench.deformation import (
    deformation_stats,
    determinant_of_displacement,
    determinant_of_mapping,
    folding_fraction,
    jacobian_determinant,
    mapping_jacobian,
    sd_log_jacobian,
)
from mibench.transform import MatrixTransform


@pytest.mark.parametrize("shape", [(20, 30), (6, 7, 8)])
def test_linear_map_has_its_matrix_determinant_everywhere(shape):
    n = len(shape)
    m = np.eye(n + 1)
    m[:n, :n] = [[1.2, 0.3], [-0.1, 0.8]] if n == 2 else [[1.1, 0.2, 0], [0, 0.9, 0.1],
                                                           [0.05, 0, 1.3]]
    m[:n, n] = 4.0
    det = jacobian_determinant(MatrixTransform(m), shape)
    assert det.shape == shape
    np.testing.assert_allclose(det, np.linalg.det(m[:n, :n]), rtol=1e-12)
    assert folding_fraction(det) == 0.0
    assert sd_log_jacobian(det) == pytest.approx(0.0, abs=1e-12)


def test_reflection_folds_everywhere():
    det = jacobian_determinant(MatrixTransform([[-1, 0, 29], [0, 1, 0], [0, 0, 1]]), (10, 30))
    np.testing.assert_allclose(det, -1.0)
    assert folding_fraction(det) == 1.0
    # Learn2Reg: log(clip(-1 + 3)) everywhere: no spread.
    assert sd_log_jacobian(det) == 0.0


def test_jacobian_orders_x_and_y():
    # T(x, y) = (2x, 3y + x): dT_x/dx = 2, dT_y/dx = 1, dT_y/dy = 3.
    ys, xs = np.mgrid[:5, :6].astype(float)
    jac = mapping_jacobian(np.stack([2 * xs, 3 * ys + xs]))
    np.testing.assert_allclose(jac[2, 3], [[2, 0], [1, 3]])


def test_quadratic_field_hand_computation():
    """T(x, y) = (x + k x^2, y): det J = 1 + 2 k x (central differences are exact for a
    quadratic); one-sided at the borders: 1 + k (at x = 0) and 1 + k (2W - 3) (at x = W - 1)."""
    h, w, k = 4, 10, -0.08
    ys, xs = np.mgrid[:h, :w].astype(float)
    u = np.stack([k * xs**2, np.zeros_like(ys)])
    det = determinant_of_displacement(u)
    expected = 1 + 2 * k * np.arange(w, dtype=float)
    expected[0], expected[-1] = 1 + k, 1 + k * (2 * w - 3)
    np.testing.assert_allclose(det, np.broadcast_to(expected, (h, w)), atol=1e-12)
    # By hand: expected = [0.92, 0.84, 0.68, 0.52, 0.36, 0.2, 0.04, -0.12, -0.28, -0.36]
    assert folding_fraction(det) == pytest.approx(3 / 10)
    logs = np.log(np.array([0.92, 0.84, 0.68, 0.52, 0.36, 0.2, 0.04, -0.12, -0.28, -0.36]) + 3)
    assert sd_log_jacobian(det) == pytest.approx(np.sqrt(np.mean((logs - logs.mean()) ** 2)))
    raw = sd_log_jacobian(det, shift=0.0)
    clipped = np.log(np.r_[[0.92, 0.84, 0.68, 0.52, 0.36, 0.2, 0.04], [1e-9] * 3])
    assert raw == pytest.approx(np.std(clipped))
    mask = np.zeros((h, w), bool)
    mask[:, :5] = True
    assert folding_fraction(det, mask) == 0.0
    stats = deformation_stats(det)
    assert stats["folding"] == pytest.approx(0.3)
    assert stats["jacobian_min"] == pytest.approx(-0.36)
    assert stats["jacobian_max"] == pytest.approx(0.92)


def learn2reg_jacobian(disp2d: np.ndarray) -> np.ndarray:
    """Learn2Reg's evaluation recipe in 2-D: [-0.5, 0, 0.5] correlations (zero padding) plus
    the identity, border of 2 cropped."""
    kernel = np.array([-0.5, 0.0, 0.5])
    grads = [[ndimage.correlate1d(disp2d[i], kernel, axis=ax, mode="constant") for ax in (1, 0)]
             for i in range(2)]  # d/dx (columns), d/dy (rows)
    j = np.array(grads) + np.eye(2)[:, :, None, None]
    j = j[:, :, 2:-2, 2:-2]
    return j[0, 0] * j[1, 1] - j[0, 1] * j[1, 0]


def test_bspline_determinant_matches_learn2reg_and_the_analytic_jacobian():
    rng = np.random.default_rng(3)
    shape = (40, 50)
    t = BSplineTransform.over(shape, 10.0)
    t.coefficients = rng.normal(0, 2.5, t.grid.coefficient_shape)
    det = jacobian_determinant(t, shape)
    u = t.displacement(shape)
    np.testing.assert_allclose(det[2:-2, 2:-2], learn2reg_jacobian(u), atol=1e-12)
    np.testing.assert_allclose(det, determinant_of_displacement(u), atol=1e-12)

    class PointsOnly:  # the generic path: mapped points, no dense displacement
        fixed_to_moving = staticmethod(t.fixed_to_moving)

    np.testing.assert_allclose(jacobian_determinant(PointsOnly(), shape), det, atol=1e-9)
    ys, xs = np.mgrid[2:38, 2:48]
    analytic = np.linalg.det(t.jacobian(np.column_stack([xs.ravel(), ys.ravel()])))
    # Central differences are O(h^2): close to the exact Jacobian of a smooth field.
    np.testing.assert_allclose(det[2:38, 2:48].ravel(), analytic, atol=1e-2)
    # Learn2Reg's statistic on their crop equals ours on the same pixels.
    l2r = np.log(np.clip(learn2reg_jacobian(u) + 3, 1e-9, 1e9)).std()
    crop = np.zeros(shape, bool)
    crop[2:-2, 2:-2] = True
    assert sd_log_jacobian(det, crop) == pytest.approx(l2r, rel=1e-12)


def test_undefined_mapping_is_left_out():
    det = np.array([[1.0, np.nan], [-1.0, 2.0]])
    assert folding_fraction(det) == pytest.approx(1 / 3)
    assert np.isnan(folding_fraction(np.full((2, 2), np.nan)))
    with pytest.raises(ValueError):
        determinant_of_mapping(np.zeros((2, 1, 5)))
