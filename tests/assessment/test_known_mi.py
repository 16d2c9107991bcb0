"""The known-MI tasks: samplers against scipy's densities, invariance under the maps, the image
tasks against an independent plug-in (sklearn), and the tie to mibench's own estimators."""

import math
import pickle

import numpy as np
import pytest
import torch
from scipy import stats
from sklearn.metrics import mutual_info_score

import mibench
from mibench.assessment import IMAGE_SIZES, SAMPLE_SIZES, plugin_bias, tasks
from mibench.assessment.images import IMAGES, level_entropy, resized_levels
from mibench.assessment.known_mi import (
    KnownMITask,
    channel_task,
    families,
    gaussian_task,
    independent_task,
    permutation_task,
    student_task,
    uniform_noise_task,
)
from mibench.assessment.maps import MONOTONE_MAPS, rescale, spiral

N_MC = 200_000


def _mean_and_se(values):
    return values.mean(), values.std(ddof=1) / math.sqrt(values.size)


def _raw(task, n=N_MC, seed=3):
    return task.draw(n, np.random.default_rng(seed))


@pytest.mark.parametrize("rho", [0.5, 0.99])
def test_gaussian_sampler_by_monte_carlo(rho):
    x, y = _raw(gaussian_task(rho))
    joint = stats.multivariate_normal(cov=[[1, rho], [rho, 1]])
    log_ratio = (joint.logpdf(np.stack([x, y], 1)) - stats.norm.logpdf(x)
                 - stats.norm.logpdf(y))
    mean, se = _mean_and_se(log_ratio)
    assert abs(mean - gaussian_task(rho).true_mi()) <= 3 * se
    assert np.corrcoef(x, y)[0, 1] == pytest.approx(rho, abs=0.01)


@pytest.mark.parametrize(("nu", "rho"), [(1, 0.0), (3, 0.9)])
def test_student_sampler_by_monte_carlo(nu, rho):
    task = student_task(nu, rho)
    x, y = _raw(task)
    joint = stats.multivariate_t(shape=[[1, rho], [rho, 1]], df=nu)
    log_ratio = (joint.logpdf(np.stack([x, y], 1)) - stats.t.logpdf(x, nu)
                 - stats.t.logpdf(y, nu))
    mean, se = _mean_and_se(log_ratio)
    assert abs(mean - task.true_mi()) <= 3 * se
    # The marginal is scipy's t: a Kolmogorov-Smirnov test at a fixed seed.
    assert stats.kstest(x[:20_000], stats.t(nu).cdf).pvalue > 0.01


@pytest.mark.parametrize("eps", [0.1, 0.75])
def test_uniform_noise_sampler_by_monte_carlo(eps):
    """log p(y|x) / p(y) = -ln(2 eps) - ln p_Y(y), p_Y the trapezoid."""
    task = uniform_noise_task(eps)
    x, y = _raw(task)
    p_y = (np.minimum(1, y + eps) - np.maximum(0, y - eps)) / (2 * eps)
    mean, se = _mean_and_se(-math.log(2 * eps) - np.log(p_y))
    assert abs(mean - task.true_mi()) <= 3 * se
    assert np.abs(y - x).max() <= eps


# The Student-t families use only the maps that keep Cauchy samples finite and distinct after
# min-max rescaling in float64 (exp overflows, the normal CDF rounds to 1 and the cube's range
# swamps the centre there).
@pytest.mark.parametrize(("plain", "maps"), [
    (gaussian_task(0.75), tuple(MONOTONE_MAPS)),
    (student_task(1, 0.5), ("asinh", "halfcube")),
], ids=["gaussian", "student"])
def test_monotone_maps_keep_truth_and_ranks(plain, maps):
    """Same seed: each map of the pair gives the same ranks (hence the same rank-rescaled
    sample) and the same truth."""
    x0, y0 = plain.sample(4096, seed=5)
    make = gaussian_task if plain.family == "gaussian" else student_task
    args = (0.75,) if plain.family == "gaussian" else (1, 0.5)
    for name in maps:
        mapped = make(*args, name)
        assert mapped.true_mi() == plain.true_mi()
        x, y = mapped.sample(4096, seed=5)
        np.testing.assert_array_equal(np.argsort(x), np.argsort(x0))
        np.testing.assert_array_equal(np.argsort(y), np.argsort(y0))
        for a, b in zip(mapped.with_rescale("rank").sample(4096, 5),
                        plain.with_rescale("rank").sample(4096, 5), strict=True):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", ["cube", "exp"])
def test_monotone_maps_change_ncc(name):
    """MI is kept, the Pearson correlation (NCC's statistic) is not."""
    ncc = mibench.estimator("ncc")
    plain = float(ncc(*gaussian_task(0.75).as_images(4096, seed=5))[0])
    mapped = float(ncc(*gaussian_task(0.75, name).as_images(4096, seed=5))[0])
    assert plain == pytest.approx(0.75, abs=0.03)
    assert abs(mapped - plain) > 0.05


def test_spiral_is_a_norm_keeping_bijection():
    pts = np.random.default_rng(0).standard_normal((1000, 3))
    out = spiral(pts, speed=0.7, plane=(1, 2))
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), np.linalg.norm(pts, axis=1))
    np.testing.assert_allclose(spiral(out, speed=-0.7, plane=(1, 2)), pts, atol=1e-12)
    np.testing.assert_array_equal(out[:, 0], pts[:, 0])
    assert not np.allclose(out, pts)
    with pytest.raises(ValueError):
        spiral(pts[:, :1])


def test_rescalings_are_increasing_into_unit_interval():
    v = np.random.default_rng(1).standard_cauchy(500)
    for how in ("minmax", "rank"):
        r = rescale(v, how)
        assert r.min() == 0 and r.max() == 1
        np.testing.assert_array_equal(np.argsort(r), np.argsort(v))
    np.testing.assert_array_equal(rescale(np.full(4, 2.0)), np.zeros(4))


@pytest.mark.parametrize("name", IMAGES)
def test_permutation_task_plugin_equals_level_entropy(name):
    """An independent plug-in (sklearn on the grey levels) gives H(X) exactly, and so does
    mibench's jhmi with 256 bins aligned to the levels."""
    n = 128 * 128
    task = permutation_task(256, name)
    x, y = task.sample(n, seed=2)
    lx, ly = np.rint(x * 255).astype(int), np.rint(y * 255).astype(int)
    np.testing.assert_array_equal(lx, resized_levels(name, n))
    truth = task.true_mi(n)
    assert truth == level_entropy(name, 256, n)
    assert mutual_info_score(lx, ly) == pytest.approx(truth, rel=1e-12)
    assert mutual_info_score(lx, lx) == pytest.approx(truth, rel=1e-12)
    jhmi = mibench.estimator("jhmi", bins=256, range="fixed", lo=0.0, hi=1.0)
    assert float(jhmi(*task.as_images(n, seed=2))[0]) == pytest.approx(truth, abs=1e-4)


def test_permutation_sweep_over_levels():
    """Fewer levels, less entropy; with as many bins as levels (min-max range), the plug-in
    of jhmi is exact at every level count."""
    n = 64 * 64
    sweep = [t for t in tasks("image-permutation").values()]
    truths = [t.true_mi(n) for t in sweep]
    assert [t.parameter for t in sweep] == [4, 16, 64, 256]
    assert truths == sorted(truths) and truths[0] < math.log(4) + 1e-12
    for task, truth in zip(sweep, truths, strict=True):
        x, y = task.sample(n, seed=1)
        levels = int(task.parameter)
        lx = np.rint(x * (levels - 1)).astype(int)
        assert mutual_info_score(lx, np.rint(y * (levels - 1)).astype(int)) == pytest.approx(
            truth, rel=1e-12)
        jhmi = mibench.estimator("jhmi", bins=levels, range="fixed", lo=0.0, hi=1.0)
        assert float(jhmi(*task.as_images(n, seed=1))[0]) == pytest.approx(truth, abs=1e-4)


def _equal_width_labels(v, bins):
    edges = np.linspace(v.min(), v.max(), bins + 1)
    return np.clip(np.digitize(v, edges[1:-1]), 0, bins - 1)


@pytest.mark.parametrize("moving", ["retina", "immunohistochemistry"])
def test_independent_task_plugin_mi_is_the_plugin_bias(moving):
    """Research table, section 7: 0.0072 measured vs 0.0073 predicted at 32 bins, N = 65,536."""
    n, bins = 65_536, 32
    task = independent_task("camera", moving)
    assert task.true_mi(n) == 0.0
    measured = [mutual_info_score(*(_equal_width_labels(v, bins) for v in task.sample(n, s)))
                for s in range(4)]
    assert np.mean(measured) == pytest.approx(plugin_bias(bins, bins, n), rel=0.2)


def test_channel_task_truth_and_plugin():
    n = 256 * 256
    task = channel_task(0.1)
    x, y = task.sample(n, seed=4)
    lx, ly = np.rint(x * 3).astype(int), np.rint(y * 3).astype(int)
    np.testing.assert_array_equal(np.bincount(lx), [n // 4] * 4)
    assert np.mean(lx != ly) == pytest.approx(0.1, abs=0.005)
    hb = -0.1 * math.log(0.1) - 0.9 * math.log(0.9)
    assert task.true_mi(n) == pytest.approx(math.log(4) - hb - 0.1 * math.log(3))
    # The plug-in of a 4 x 4 table: bias 9/(2n) and SD ~1e-3 at this n.
    assert mutual_info_score(lx, ly) == pytest.approx(task.true_mi(n), abs=0.005)
    # Labels not dividing n: the truth uses the exact label frequencies.
    assert channel_task(0.0).true_mi(9) == pytest.approx(-(3 * (2 / 9) * math.log(2 / 9)
                                                            + (3 / 9) * math.log(3 / 9)))


@pytest.mark.parametrize(("bins", "table"), [(20, 0.398), (50, 0.421)])
def test_jhmi_on_gaussian_matches_the_research_table(bins, table):
    """Equal-width bins over the data range, N = 65,536: the bias measured in section 7."""
    task = tasks("gaussian")["gaussian[rho=0.75]"]
    jhmi = mibench.estimator("jhmi", kernel="box", bins=bins)
    values = [float(jhmi(*task.as_images(65_536, seed))[0]) for seed in range(3)]
    assert abs(np.mean(values) - table) <= 0.02


def test_sample_and_images_contract():
    task = gaussian_task(0.9)
    x, y = task.sample(1024, seed=7)
    assert x.dtype == y.dtype == np.float64 and x.shape == y.shape == (1024,)
    assert 0 <= x.min() and x.max() <= 1
    np.testing.assert_array_equal(task.sample(1024, 7)[0], x)
    assert not np.array_equal(task.sample(1024, 8)[0], x)
    fixed, moving = task.as_images(1024, seed=7)
    assert fixed.shape == moving.shape == (1, 1, 32, 32) and fixed.dtype == torch.float32
    np.testing.assert_allclose(fixed.numpy().ravel(), x, atol=1e-7)
    assert task.as_images(1024, 7, dtype=torch.float64)[0].dtype == torch.float64
    with pytest.raises(ValueError):
        task.as_images(1000, 7)
    for bad in (-1, 2**32, 1.5, True):
        with pytest.raises(ValueError):
            task.sample(10, bad)
    with pytest.raises(ValueError):
        permutation_task().true_mi()
    with pytest.raises(ValueError):
        permutation_task(1).sample(16, 0)


def test_default_task_set():
    everything = tasks()
    assert len(everything) == len(set(everything)) > 40
    assert families()[0] == "gaussian"
    for name, task in everything.items():
        assert isinstance(task, KnownMITask) and task.name == name
        assert name.startswith(task.family + "[") and name.endswith("]")
        n = task.sizes[0]
        assert task.true_mi(n) >= 0
        assert all(math.isqrt(s) ** 2 == s for s in task.sizes)
        assert pickle.loads(pickle.dumps(task)) == task
    assert SAMPLE_SIZES[0] < 2_000 and SAMPLE_SIZES[-1] == 10**6
    assert IMAGE_SIZES == (64**2, 128**2, 256**2, 512**2, 1024**2)
    assert everything["gaussian[rho=0.75]"].true_mi() == pytest.approx(0.4133, abs=5e-5)
    assert everything["uniform-noise[eps=0.1]"].true_mi() == pytest.approx(1.709, abs=5e-4)
    assert everything["uniform-noise[eps=0.75]"].true_mi() == pytest.approx(0.333, abs=5e-4)
    ranked = tasks("gaussian-exp", rescale="rank")
    assert {t.rescale for t in ranked.values()} == {"rank"} and len(ranked) == 4
    channel = tasks("image-channel")["image-channel[error=0.1,image=camera,labels=4]"]
    assert channel.rescale == "none"
    with pytest.raises(ValueError):
        tasks("no-such-family")
