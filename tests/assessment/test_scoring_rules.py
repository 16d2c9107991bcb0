"""The scoring rules of mibench.assessment.scoring on hand-computed cases and against scipy."""

import math

import numpy as np
import pytest
from scipy.stats import spearmanr

from mibench.assessment.scoring import bias, log2_ratio, rank_agreement, rmse, score, sd


def test_bias_sd_rmse_by_hand():
    est = [0.3, 0.5, 0.7]
    assert bias(est, 0.4) == pytest.approx(0.1)
    assert sd(est) == pytest.approx(0.2)
    assert rmse(est, 0.4) == pytest.approx(math.sqrt((0.01 + 0.01 + 0.09) / 3))
    assert math.isnan(sd([0.3]))
    with pytest.raises(ValueError):
        bias([], 1.0)


def test_rmse_decomposes_into_bias_and_spread():
    est = np.random.default_rng(0).normal(0.5, 0.1, 10)
    k = est.size
    assert rmse(est, 0.42) ** 2 == pytest.approx(bias(est, 0.42) ** 2
                                                 + (k - 1) / k * sd(est) ** 2)


def test_log2_ratio():
    assert log2_ratio(0.8, 0.4) == pytest.approx(1.0)
    assert log2_ratio(0.2, 0.4) == pytest.approx(-1.0)
    assert log2_ratio(0.4, 0.4) == 0.0
    assert math.isnan(log2_ratio(0.1, 0.0))
    assert log2_ratio(0.0, 0.4) == -math.inf
    assert log2_ratio(-0.1, 0.4) == -math.inf
    assert math.isnan(log2_ratio(math.nan, 0.4))


def test_score_collects_everything():
    s = score([0.3, 0.5], 0.5)
    assert (s.truth, s.mean, s.seeds) == (0.5, pytest.approx(0.4), 2)
    assert s.bias == pytest.approx(-0.1) and s.log2_ratio == pytest.approx(math.log2(0.8))
    assert s.rmse == pytest.approx(math.sqrt(0.02))


def test_rank_agreement_rule():
    truths = [0.14, 0.41, 0.83, 1.96]
    assert rank_agreement([1.1, 1.2, 1.5, 1.9], truths) == pytest.approx(1.0)
    # A dissimilarity (MSE) that falls as MI rises agrees perfectly once its sign is flipped.
    assert rank_agreement([0.3, 0.2, 0.1, 0.01], truths, higher_is_better=False) == 1.0
    assert rank_agreement([0.3, 0.2, 0.1, 0.01], truths) == -1.0
    assert math.isnan(rank_agreement([0.5] * 4, truths))
    assert math.isnan(rank_agreement([0.5, math.nan, 0.6, 0.7], truths))
    with pytest.raises(ValueError):
        rank_agreement([1, 2], [0.3, 0.3])
    with pytest.raises(ValueError):
        rank_agreement([1, 2, 3], [0.1, 0.2])


def test_rank_agreement_is_scipys_spearman():
    rng = np.random.default_rng(3)
    values, truths = rng.random(8), rng.random(8)
    assert rank_agreement(values, truths) == pytest.approx(spearmanr(values, truths).statistic)
