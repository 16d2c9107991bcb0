"""Scoring rules of an estimator against tasks with known MI (pure functions).

For MI estimators (values in nats), over the estimates of one task at one sample size, one
per seed:

- ``bias = mean(I_hat) - I``; ``sd`` = the sample standard deviation over seeds (ddof 1);
  ``rmse = sqrt(mean((I_hat - I)^2))`` (so ``rmse^2 = bias^2 + (k-1)/k sd^2`` for k seeds).
- ``log2(I_hat / I)``, bmi's table colour: 0 is exact, +1 twice the truth, -1 half of it. It
  is undefined (NaN) for a true MI of 0 (use the bias there) and ``-inf`` for an estimate <= 0.

For measures that are not MI (NMI, NCC, MSE, normalised variants) only the order can be
judged: :func:`rank_agreement` is the Spearman correlation between a measure's values and
the true MI across the tasks of one family (a parameter sweep), its sign flipped for
lower-is-better measures (MSE), so that +1 always means "orders the tasks as the truth does".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import spearmanr


def _values(estimates: Sequence[float] | np.ndarray) -> np.ndarray:
    v = np.asarray(estimates, dtype=np.float64).ravel()
    if v.size == 0:
        raise ValueError("no estimates to score")
    return v


def bias(estimates: Sequence[float] | np.ndarray, truth: float) -> float:
    """``mean(estimates) - truth`` (nats)."""
    return float(_values(estimates).mean() - truth)


def sd(estimates: Sequence[float] | np.ndarray) -> float:
    """Sample standard deviation (ddof 1) of the estimates over seeds; NaN for one estimate."""
    v = _values(estimates)
    return float(v.std(ddof=1)) if v.size > 1 else math.nan


def rmse(estimates: Sequence[float] | np.ndarray, truth: float) -> float:
    """Root-mean-square error ``sqrt(mean((estimate - truth)^2))`` (nats)."""
    return float(np.sqrt(np.mean((_values(estimates) - truth) ** 2)))


def log2_ratio(estimate: float, truth: float) -> float:
    """``log2(estimate / truth)``: NaN when ``truth <= 0``, ``-inf`` when ``estimate <= 0``."""
    if not truth > 0:
        return math.nan
    if not estimate > 0:
        return -math.inf if estimate <= 0 else math.nan  # NaN estimate stays NaN
    return math.log2(estimate / truth)


@dataclass(frozen=True)
class Score:
    """The scores of one task at one sample size (nats, except ``log2_ratio``)."""

    truth: float
    mean: float
    bias: float
    sd: float
    rmse: float
    log2_ratio: float
    seeds: int


def score(estimates: Sequence[float] | np.ndarray, truth: float) -> Score:
    """All the MI scores of the estimates (one per seed) of a task whose MI is ``truth``;
    ``log2_ratio`` is that of the mean estimate."""
    v = _values(estimates)
    return Score(truth=float(truth), mean=float(v.mean()), bias=bias(v, truth), sd=sd(v),
                 rmse=rmse(v, truth), log2_ratio=log2_ratio(float(v.mean()), truth),
                 seeds=int(v.size))


def rank_agreement(values: Sequence[float] | np.ndarray, truths: Sequence[float] | np.ndarray,
                   higher_is_better: bool = True) -> float:
    """Spearman correlation between a measure's values and the true MI across a family's tasks.

    Parameters
    ----------
    values : sequence of float
        The measure on each task (e.g. the mean over seeds), in the order of ``truths``.
    truths : sequence of float
        The true MI (nats) of each task; at least two distinct values.
    higher_is_better : bool
        False for a dissimilarity (MSE): the correlation is negated.

    Returns
    -------
    float
        In [-1, 1]: +1 when the measure orders the tasks exactly as the truth, -1 reversed;
        NaN when the measure is constant or not finite on some task (no order to judge).
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    t = np.asarray(truths, dtype=np.float64).ravel()
    if v.shape != t.shape:
        raise ValueError(f"{v.size} values for {t.size} truths")
    if np.unique(t).size < 2:
        raise ValueError("rank agreement needs at least two distinct true MIs")
    if not np.isfinite(v).all() or np.unique(v).size < 2:
        return math.nan
    rho = float(spearmanr(v, t).statistic)
    return rho if higher_is_better else -rho
