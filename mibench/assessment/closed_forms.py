"""Closed-form mutual information of the tasks in :mod:`mibench.assessment.known_mi`, in nats.

Every function here is pure and deterministic; the tests check each one against an independent
reference (numerical integration or Monte Carlo with scipy's densities).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import digamma, gammaln


def gaussian_mi(rho: float) -> float:
    """MI of a bivariate normal pair with correlation ``rho``: ``-1/2 ln(1 - rho^2)`` nats.

    Invariant under any strictly monotone map of either variable (the copula does not change),
    so it is also the MI of every map of :mod:`mibench.assessment.maps` applied to the pair.

    >>> round(gaussian_mi(0.75), 4)
    0.4133
    """
    if not -1.0 < rho < 1.0:
        raise ValueError(f"rho must be in (-1, 1), got {rho}")
    return -0.5 * math.log1p(-rho * rho)


def student_t_dof_term(nu: float, dim_x: int = 1, dim_y: int = 1) -> float:
    """The part of a multivariate Student-t's MI that depends on the degrees of freedom only.

    For ``(X, Y)`` multivariate t with ``nu`` degrees of freedom, ``dim_x + dim_y = d``
    dimensions and scale matrix ``S``, the marginals are t with the same ``nu`` and the
    sub-blocks of ``S``. The entropy of a ``k``-dimensional t with scale ``S_k`` is::

        h_k = 1/2 ln det S_k + k/2 ln(nu pi) + ln G(nu/2) - ln G((nu+k)/2)
              + (nu+k)/2 [psi((nu+k)/2) - psi(nu/2)]

    (``G`` the gamma function, ``psi`` the digamma). In ``I = h_x + h_y - h_xy`` the
    ``ln(nu pi)`` terms cancel, the ``ln det`` terms give the Gaussian MI of the same scale
    matrix, and what is left is this term (nats, > 0 for finite ``nu``, -> 0 as nu -> inf)::

        c = ln G(nu/2) + ln G((nu+d)/2) - ln G((nu+dx)/2) - ln G((nu+dy)/2)
            + (nu+dx)/2 psi((nu+dx)/2) + (nu+dy)/2 psi((nu+dy)/2)
            - (nu+d)/2 psi((nu+d)/2) - nu/2 psi(nu/2)

    It is the formula of bmi's multivariate Student-t sampler (Arellano-Valle et al. 2013).
    """
    if not nu > 0:
        raise ValueError(f"nu must be > 0, got {nu}")
    d = dim_x + dim_y

    def part(k: int) -> float:
        # Gamma and digamma terms of h_k, with the sign they carry in I.
        a = (nu + k) / 2
        return -gammaln(a) + a * digamma(a)

    nu2 = nu / 2
    return float(gammaln(nu2) - nu2 * digamma(nu2) + part(dim_x) + part(dim_y) - part(d))


def student_t_mi(nu: float, rho: float) -> float:
    """MI of a bivariate Student-t pair (``nu`` degrees of freedom, scale matrix
    ``[[1, rho], [rho, 1]]``): ``gaussian_mi(rho) + student_t_dof_term(nu)`` nats.

    Unlike the Gaussian, the pair is dependent at ``rho = 0`` (the shared chi-square scale):
    ``student_t_mi(1, 0) = ln(pi/2) + 2 psi(1) - 3/2 psi(3/2) - 1/2 psi(1/2) = 0.2242``.
    """
    return gaussian_mi(rho) + student_t_dof_term(nu)


def uniform_noise_mi(eps: float) -> float:
    """MI of ``X ~ U(0, 1)`` and ``Y = X + N`` with independent ``N ~ U(-eps, eps)``, in nats.

    Derivation. ``I = h(Y) - h(Y | X) = h(Y) - ln(2 eps)``, since given X, Y is uniform on an
    interval of length ``2 eps``. The density of Y is the convolution of the two uniforms, a
    trapezoid ``p(y) = |[0, 1] cap [y - eps, y + eps]| / (2 eps)``.

    - ``eps <= 1/2``: p rises linearly from 0 to 1 on ``[-eps, eps]``, is 1 on
      ``[eps, 1 - eps]`` (contributing 0 to the entropy) and falls back on ``[1 - eps, 1 + eps]``.
      Each ramp contributes ``-int_0^{2 eps} (t / 2eps) ln(t / 2eps) dt = -2 eps int_0^1
      u ln u du = eps / 2``, so ``h(Y) = eps`` and ``I = eps - ln(2 eps)``.
    - ``eps > 1/2``: p rises on ``[-eps, 1 - eps]`` to ``1/(2 eps)``, is flat on
      ``[1 - eps, eps]`` and falls on ``[eps, 1 + eps]``. The ramps give ``2 (1/(2 eps))
      (1/4 + ln(2 eps) / 2)``, the flat part ``(2 eps - 1) ln(2 eps) / (2 eps)``; they add up
      to ``h(Y) = 1/(4 eps) + ln(2 eps)``, so ``I = 1/(4 eps)``.

    At ``eps = 1/2`` both branches give 1/2, so I is continuous in eps.
    Values: 0.1 -> 1.7094, 0.75 -> 0.3333 (bmi's tasks).
    """
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    if eps <= 0.5:
        return eps - math.log(2 * eps)
    return 1 / (4 * eps)


def entropy(p: np.ndarray) -> float:
    """Shannon entropy ``-sum p ln p`` in nats of a probability table (any shape; zeros are
    ``0 ln 0 = 0``). ``p`` must be non-negative and sum to 1 (to 1e-9)."""
    p = np.asarray(p, dtype=np.float64).ravel()
    if p.size == 0 or (p < 0).any() or abs(p.sum() - 1) > 1e-9:
        raise ValueError("p must be a non-empty table of non-negative numbers summing to 1")
    nz = p[p > 0]
    return float(-(nz * np.log(nz)).sum())


def mi_from_table(joint: np.ndarray) -> float:
    """MI ``H(X) + H(Y) - H(X, Y)`` in nats of a 2-D joint probability table ``joint[x, y]``."""
    joint = np.asarray(joint, dtype=np.float64)
    if joint.ndim != 2:
        raise ValueError(f"joint must be a 2-D table, got shape {joint.shape}")
    return max(0.0, entropy(joint.sum(1)) + entropy(joint.sum(0)) - entropy(joint))


def symmetric_channel(labels: int, error: float) -> np.ndarray:
    """The ``labels x labels`` symmetric channel: a label is kept with probability
    ``1 - error`` and otherwise replaced by one of the other ``labels - 1`` labels, uniformly.

    Row ``i`` is ``P(output | input = i)``. With uniform inputs its MI is
    ``ln K - H_b(error) - error ln(K - 1)`` nats (0 at ``error = (K - 1)/K``).
    """
    if labels < 2 or not 0 <= error <= 1:
        raise ValueError(f"need labels >= 2 and 0 <= error <= 1, got {labels} and {error}")
    off = error / (labels - 1)
    return np.full((labels, labels), off) + np.eye(labels) * (1 - error - off)


def plugin_bias(bins_x: int, bins_y: int, n: int) -> float:
    """First-order bias ``(Bx - 1)(By - 1) / (2N)`` nats of the plug-in (histogram) MI of ``n``
    independent pairs in ``bins_x x bins_y`` occupied cells.

    It is the mean of ``chi2_df / (2N)`` with ``df = (Bx - 1)(By - 1)`` (``2 N I_hat`` is the
    G-test statistic), valid while every cell expects several counts; it fails once N <~ B^2
    (research notes, section 7: 0.50 predicted vs 0.57 measured at B = 256, N = 65,536).
    """
    if bins_x < 1 or bins_y < 1 or n < 1:
        raise ValueError(f"need bins >= 1 and n >= 1, got {bins_x}, {bins_y}, {n}")
    return (bins_x - 1) * (bins_y - 1) / (2 * n)
