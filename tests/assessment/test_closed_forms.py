"""The closed forms of mibench.assessment against independent references: the quoted values,
numerical integration and Monte Carlo with scipy's densities."""

import math

import numpy as np
import pytest
from scipy import integrate, stats

from mibench.assessment.closed_forms import (
    entropy,
    gaussian_mi,
    mi_from_table,
    plugin_bias,
    student_t_dof_term,
    student_t_mi,
    symmetric_channel,
    uniform_noise_mi,
)

EULER = 0.5772156649015329


@pytest.mark.parametrize(("rho", "quoted"), [(0.5, 0.1438), (0.75, 0.4133), (0.9, 0.8304),
                                             (0.99, 1.9585)])
def test_gaussian_quoted_values(rho, quoted):
    assert gaussian_mi(rho) == pytest.approx(quoted, abs=5e-5)


@pytest.mark.parametrize("rho", [0.5, 0.9, 0.99])
def test_gaussian_against_grid_integration(rho):
    """I = sum p ln(p / (px py)) dA on a fine grid with scipy's densities."""
    g = np.arange(-7, 7.0001, 0.02)
    xx, yy = np.meshgrid(g, g)
    pts = np.stack([xx.ravel(), yy.ravel()], axis=1)
    log_joint = stats.multivariate_normal(cov=[[1, rho], [rho, 1]]).logpdf(pts)
    log_ratio = log_joint - stats.norm.logpdf(pts[:, 0]) - stats.norm.logpdf(pts[:, 1])
    numeric = float((np.exp(log_joint) * log_ratio).sum() * 0.02**2)
    assert numeric == pytest.approx(gaussian_mi(rho), abs=1e-4)


@pytest.mark.parametrize(("eps", "quoted"), [(0.1, 1.709), (0.75, 0.333)])
def test_uniform_noise_quoted_values(eps, quoted):
    assert uniform_noise_mi(eps) == pytest.approx(quoted, abs=5e-4)


def _noise_density(y, eps):
    """Density of Y = X + N: the length of [0, 1] cap [y - eps, y + eps] over 2 eps."""
    return max(0.0, min(1.0, y + eps) - max(0.0, y - eps)) / (2 * eps)


@pytest.mark.parametrize("eps", [0.1, 0.3, 0.5, 0.75, 1.5])
def test_uniform_noise_against_quadrature(eps):
    """I = h(Y) - ln(2 eps), h(Y) by adaptive quadrature of the convolution density."""
    def integrand(y):
        p = _noise_density(y, eps)
        return -p * math.log(p) if p > 0 else 0.0

    kinks = sorted({-eps, eps, 1 - eps, 1 + eps})
    h_y, _ = integrate.quad(integrand, -eps, 1 + eps, points=kinks[1:-1], limit=200)
    assert h_y - math.log(2 * eps) == pytest.approx(uniform_noise_mi(eps), abs=1e-8)


def test_uniform_noise_is_continuous_at_one_half():
    assert uniform_noise_mi(0.5) == pytest.approx(uniform_noise_mi(0.5 + 1e-12), abs=1e-9)


def test_student_dof_term_by_hand():
    """nu = 1: ln(pi/2) + 2 psi(1) - 3/2 psi(3/2) - 1/2 psi(1/2), with the exact digammas."""
    psi1, psi_half = -EULER, -EULER - 2 * math.log(2)
    psi_3half = psi_half + 2
    by_hand = math.log(math.pi / 2) + 2 * psi1 - 1.5 * psi_3half - 0.5 * psi_half
    assert student_t_dof_term(1) == pytest.approx(by_hand, abs=1e-12)
    assert student_t_mi(1, 0.0) == pytest.approx(0.2242, abs=5e-5)
    assert student_t_dof_term(1e7) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize(("nu", "rho"), [(1, 0.0), (1, 0.5), (3, 0.9), (5, 0.75)])
def test_student_against_monte_carlo(nu, rho):
    """E log p(x,y) / (p(x) p(y)) over scipy's own multivariate t draws, within 3 SE."""
    joint = stats.multivariate_t(shape=[[1, rho], [rho, 1]], df=nu)
    pts = joint.rvs(size=200_000, random_state=np.random.default_rng(11))
    log_ratio = (joint.logpdf(pts) - stats.t.logpdf(pts[:, 0], nu)
                 - stats.t.logpdf(pts[:, 1], nu))
    se = log_ratio.std(ddof=1) / math.sqrt(log_ratio.size)
    assert abs(log_ratio.mean() - student_t_mi(nu, rho)) <= 3 * se


def test_tables_and_channel():
    assert mi_from_table(np.full((3, 5), 1 / 15)) == pytest.approx(0.0, abs=1e-12)
    assert mi_from_table(np.eye(4) / 4) == pytest.approx(math.log(4))
    assert entropy(np.array([0.5, 0.5, 0.0])) == pytest.approx(math.log(2))
    k, q = 4, 0.1
    channel = symmetric_channel(k, q)
    np.testing.assert_allclose(channel.sum(1), 1)
    hb = -q * math.log(q) - (1 - q) * math.log(1 - q)
    assert mi_from_table(channel / k) == pytest.approx(math.log(k) - hb - q * math.log(k - 1))
    assert mi_from_table(symmetric_channel(k, 0.75) / k) == pytest.approx(0.0, abs=1e-12)


def test_plugin_bias_matches_the_research_table():
    """Section 7's first-order predictions at N = 65,536."""
    assert plugin_bias(20, 20, 65_536) == pytest.approx(0.0028, abs=5e-5)
    assert plugin_bias(32, 32, 65_536) == pytest.approx(0.0073, abs=5e-5)
    assert plugin_bias(64, 64, 65_536) == pytest.approx(0.030, abs=5e-4)


@pytest.mark.parametrize("call", [lambda: gaussian_mi(1.0), lambda: uniform_noise_mi(0.0),
                                  lambda: student_t_mi(0, 0.5), lambda: plugin_bias(0, 2, 10),
                                  lambda: entropy(np.array([0.2, 0.2])),
                                  lambda: symmetric_channel(1, 0.1)])
def test_bad_parameters_raise_value_error(call):
    with pytest.raises(ValueError):
        call()
