"""Histogram / Parzen MI estimators (``jhmi``, ``nmi``, ``mmi``, ``kde-mi``, ``softhist-mi``)
against scikit-learn, scikit-image, SimpleITK, numpy dense references and closed forms."""

import inspect
import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers.degenerate import assert_finite_with_gradients, degenerate_tensors
from scipy.ndimage import gaussian_filter
from scipy.special import ndtr

from mibench.estimators import binning, histogram, mibench_estimators

H = histogram

#: (id, function, options) of every estimator configuration, hard-count and differentiable.
CONFIGS = [
    ("jhmi", H.jhmi, {}),
    ("jhmi-smooth", H.jhmi, {"smoothing_variance": 1.5}),
    ("jhmi-linear", H.jhmi, {"kernel": "linear"}),
    ("jhmi-cubic", H.jhmi, {"kernel": "cubic"}),
    ("nmi", H.nmi, {}),
    ("nmi-linear", H.nmi, {"kernel": "linear", "bins": 32}),
    ("nmi-cubic-geometric", H.nmi, {"kernel": "cubic", "bins": 32, "normalisation": "geometric"}),
    ("mmi", H.mmi, {}),
    ("kde-mi", H.kde_mi, {}),
    ("kde-mi-raw", H.kde_mi, {"normalise_pixels": False}),
    ("softhist-mi", H.softhist_mi, {}),
]
DIFFERENTIABLE = [c for c in CONFIGS if c[0] not in ("jhmi", "jhmi-smooth", "nmi")]
ids = [c[0] for c in CONFIGS]
diff_ids = [c[0] for c in DIFFERENTIABLE]


def t4(a, dtype=torch.float64):
    """numpy (H, W) or (B, H, W) -> (B, 1, H, W) tensor."""
    a = np.asarray(a)
    if a.ndim == 2:
        a = a[None]
    return torch.tensor(a, dtype=dtype)[:, None]


def correlated(rng, shape, mix=0.6):
    a = rng.random(shape)
    return a, mix * a + (1 - mix) * rng.random(shape)


def labels(x, bins, lo=None, hi=None):
    """numpy's equal-width binning over [lo, hi] (min..max by default), last edge closed."""
    lo = x.min() if lo is None else lo
    hi = x.max() if hi is None else hi
    return np.clip(np.floor((np.clip(x, lo, hi) - lo) / (hi - lo) * bins), 0, bins - 1).astype(int)


# --------------------------------------------------------------------------------------------
# numpy dense references: weights on every bin, joint W_x^T W_y


def np_entropies(joint):
    p = joint / joint.sum()

    def h(q):
        q = q[q > 0]
        return -(q * np.log(q)).sum()

    return h(p.sum(1)), h(p.sum(0)), h(p.ravel())


def np_mi(joint):
    hx, hy, hxy = np_entropies(joint)
    return hx + hy - hxy


def np_coords(x, pad, span, lo=None, hi=None):
    lo = x.min() if lo is None else lo
    hi = x.max() if hi is None else hi
    return pad + (np.clip(x, lo, hi) - lo) / (hi - lo) * span


def np_weights(kind, t, bins, **kw):
    """Dense ``(n, bins)`` kernel weights (untruncated) in bin coordinates ``t``."""
    u = t[:, None] - np.arange(bins)[None, :]
    a = np.abs(u)
    if kind == "box":
        idx = np.clip(np.floor(t + 0.5), kw["first"], kw["last"])
        return (idx[:, None] == np.arange(bins)[None, :]).astype(float)
    if kind == "linear":
        return np.clip(1 - a, 0, None)
    if kind == "cubic":
        return np.where(a < 1, (4 - 6 * a**2 + 3 * a**3) / 6, np.clip(2 - a, 0, None) ** 3 / 6)
    if kind == "gaussian":
        w = np.exp(-0.5 * (u / kw["sigma"]) ** 2)
        return w / w.sum(1, keepdims=True) if kw["normalise"] else w
    if kind == "sigmoid":
        sig = 1 / (1 + np.exp(-kw["slope"] * (u + 0.5)))
        sig[:, 0] = 1.0  # open-ended first bin
        up = 1 / (1 + np.exp(-kw["slope"] * (u - 0.5)))
        up[:, -1] = 0.0  # open-ended last bin
        return sig - up
    raise ValueError(kind)


#: estimator id -> (bins, (kind, pad, span-offset, extra) for fixed and moving); span = bins - off
DENSE = {
    "jhmi": ("box", -0.5, 0, "box", -0.5, 0),
    "jhmi-linear": ("linear", 0.0, 1, "linear", 0.0, 1),
    "jhmi-cubic": ("cubic", 1.0, 3, "cubic", 1.0, 3),
    "mmi": ("box", 1.5, 4, "cubic", 2.0, 4),
    "kde-mi": ("gaussian", 0.0, 1, "gaussian", 0.0, 1),
    "softhist-mi": ("sigmoid", -0.5, 0, "sigmoid", -0.5, 0),
}


def np_dense_weights(name, x, y, bins, lo=None, hi=None, **kw):
    kx, px, ox, ky, py, oy = DENSE[name]
    tx = np_coords(x, px, bins - ox, lo, hi)
    ty = np_coords(y, py, bins - oy, lo, hi)
    first, last = (2, bins - 3) if name == "mmi" else (0, bins - 1)
    opts = {"first": first, "last": last, "sigma": 0.5, "normalise": True, "slope": 5.0, **kw}
    return np_weights(kx, tx, bins, **opts), np_weights(ky, ty, bins, **opts)


# --------------------------------------------------------------------------------------------
# Reference libraries


@pytest.mark.parametrize("bins,bins_moving", [(20, 0), (7, 13), (64, 0)])
def test_jhmi_hard_counts_equal_sklearn(bins, bins_moving):
    mutual_info_score = pytest.importorskip("sklearn.metrics").mutual_info_score

    rng = np.random.default_rng(10 + bins)
    f, m = correlated(rng, (3, 40, 50))
    mask = rng.random((3, 40, 50)) > 0.3
    got = H.jhmi(t4(f), t4(m), torch.tensor(mask)[:, None], bins=bins, bins_moving=bins_moving)
    got_nomask = H.jhmi(t4(f), t4(m), bins=bins, bins_moving=bins_moving)
    by = bins_moving or bins
    for b in range(3):
        fs, ms = f[b][mask[b]], m[b][mask[b]]
        ref = mutual_info_score(labels(fs, bins), labels(ms, by))
        assert abs(got[b].item() - ref) < 1e-6
        ref = mutual_info_score(labels(f[b].ravel(), bins), labels(m[b].ravel(), by))
        assert abs(got_nomask[b].item() - ref) < 1e-6


@pytest.mark.parametrize("policy", ["fixed", "percentile"])
def test_range_policies_equal_sklearn_on_clamped_labels(policy):
    mutual_info_score = pytest.importorskip("sklearn.metrics").mutual_info_score

    rng = np.random.default_rng(5)
    f, m = correlated(rng, (2, 30, 40))
    f, m = 1.4 * f - 0.2, 1.2 * m  # partly outside [0, 1]
    mask = rng.random((2, 30, 40)) > 0.2
    opts = {"range": policy, "lo": 0.1, "hi": 0.9, "p_lo": 5.0, "p_hi": 90.0}
    got = H.jhmi(t4(f), t4(m), torch.tensor(mask)[:, None], bins=16, **opts)
    for b in range(2):
        fs, ms = f[b][mask[b]], m[b][mask[b]]
        if policy == "fixed":
            lf, lm = labels(fs, 16, 0.1, 0.9), labels(ms, 16, 0.1, 0.9)
        else:
            lf = labels(fs, 16, *np.percentile(fs, [5, 90]))
            lm = labels(ms, 16, *np.percentile(ms, [5, 90]))
        assert abs(got[b].item() - mutual_info_score(lf, lm)) < 1e-6


@pytest.mark.parametrize("bins", [100, 37])
def test_nmi_equals_skimage(bins):
    from skimage.metrics import normalized_mutual_information

    rng = np.random.default_rng(bins)
    f, m = correlated(rng, (2, 48, 40))
    got = H.nmi(t4(f), t4(m), bins=bins)
    for b in range(2):
        ref = normalized_mutual_information(f[b], m[b], bins=bins)
        assert abs(got[b].item() - ref) < 1e-6


def test_nmi_normalisations_against_numpy():
    rng = np.random.default_rng(3)
    f, m = correlated(rng, (40, 40), mix=0.4)
    joint, _, _ = np.histogram2d(f.ravel(), m.ravel(), bins=25)
    hx, hy, hxy = np_entropies(joint)
    mi = hx + hy - hxy
    expected = {"studholme": (hx + hy) / hxy, "arithmetic": 2 * mi / (hx + hy),
                "joint": mi / hxy, "geometric": mi / np.sqrt(hx * hy)}
    for name, ref in expected.items():
        got = H.nmi(t4(f), t4(m), bins=25, normalisation=name).item()
        assert abs(got - ref) < 1e-9, name
    assert abs(H.jhmi(t4(f), t4(m), bins=25).item() - mi) < 1e-9


def test_nmi_variants_are_declared_once():
    """The NMI variants offered by the nmi and cmif estimators and methods are one constant,
    and every one of them is computed."""
    from mibench.estimators.options import CMIF_NORMALISATIONS, NMI_NORMALISATIONS
    from mibench.registry import Registry

    assert set(NMI_NORMALISATIONS) == {"studholme", "arithmetic", "joint", "geometric"}
    assert CMIF_NORMALISATIONS == ("none", *NMI_NORMALISATIONS)
    for specs in (mibench_estimators(), Registry(entry_points=False).specs("method").values()):
        named = {s.name: s for s in specs}
        assert named["nmi"].param("normalisation").choices is NMI_NORMALISATIONS
        assert named["cmif"].param("normalisation").choices is CMIF_NORMALISATIONS
    h = torch.tensor([0.5, 0.0])
    for name in NMI_NORMALISATIONS:
        assert torch.isfinite(H.normalised_mi(h, h, h, name)).all()
    with pytest.raises(ValueError, match="normalisation must be one of studholme, arithmetic"):
        H.normalised_mi(h, h, h, "diagonal")  # a NAED normaliser is not an NMI variant


@pytest.mark.parametrize("shape,bins", [((40, 50), 50), ((17, 23), 10), ((64, 48), 32),
                                        ((33, 33), 6)])
def test_mmi_matches_simpleitk(shape, bins):
    sitk = pytest.importorskip("SimpleITK")
    rng = np.random.default_rng(sum(shape) + bins)
    f = rng.random(shape).astype(np.float32)
    m = (0.5 * f + 0.5 * rng.random(shape)).astype(np.float32) * 3 - 1  # another range
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=bins)
    reg.SetMetricSamplingStrategy(reg.NONE)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetInitialTransform(sitk.TranslationTransform(2))
    ref = -reg.MetricEvaluate(sitk.GetImageFromArray(f), sitk.GetImageFromArray(m))
    assert ref > 0  # ITK returns -MI
    got = H.mmi(t4(f), t4(m), bins=bins).item()
    assert abs(got - ref) <= 1e-3 * abs(ref)
    got32 = H.mmi(t4(f, torch.float32), t4(m, torch.float32), bins=bins).item()
    assert abs(got32 - ref) <= 1e-3 * abs(ref)


@pytest.mark.parametrize("name", list(DENSE))
def test_sparse_equals_dense_numpy(name):
    """The compact-support accumulation (and the truncation of the Gaussian and sigmoid
    kernels) equals the dense N x B formulation."""
    rng = np.random.default_rng(1)
    f, m = correlated(rng, (30, 30))
    m = np.sin(4 * m) ** 2  # non-monotone, range not [0, 1]
    bins = 24
    fn, opts = {c[0]: (c[1], c[2]) for c in CONFIGS}[name]
    wx, wy = np_dense_weights(name, f.ravel(), m.ravel(), bins)
    got = fn(t4(f), t4(m), bins=bins, **opts).item()
    assert abs(got - np_mi(wx.T @ wy)) < 1e-6


def test_kde_mi_raw_uses_own_marginals():
    """normalise_pixels=False is connorlee77's formulation: raw Gaussian weights, marginals
    from each image's own kernel histogram (not the joint's sums)."""
    rng = np.random.default_rng(2)
    f, m = correlated(rng, (25, 25))
    wx, wy = np_dense_weights("kde-mi", f.ravel(), m.ravel(), 16, normalise=False)
    hx = np_entropies(np.outer(wx.sum(0), [1]))[0]
    hy = np_entropies(np.outer(wy.sum(0), [1]))[0]
    hxy = np_entropies(wx.T @ wy)[2]
    got = H.kde_mi(t4(f), t4(m), bins=16, normalise_pixels=False).item()
    assert abs(got - (hx + hy - hxy)) < 1e-6


def _dense_kde_mi(x, y, bins, sigma):
    """MI of the dense, untruncated Gaussian-kernel joint (centres linspace(min, max, bins),
    sigma in bin spacings, each pixel's weights normalised to sum 1)."""

    def weights(v):
        t = (bins - 1) * (v - v.min()) / (v.max() - v.min())
        w = np.exp(-0.5 * ((t[:, None] - np.arange(bins)[None, :]) / sigma) ** 2)
        return w / w.sum(1, keepdims=True)

    joint = weights(x).T @ weights(y)
    p = joint / joint.sum()

    def h(q):
        q = q[q > 0]
        return -(q * np.log(q)).sum()

    return h(p.sum(1)) + h(p.sum(0)) - h(p.ravel())


@pytest.mark.parametrize("sigma", [0.02, 0.05, 0.08, 0.1, 0.12])
@pytest.mark.parametrize("bins", [3, 8, 64])
def test_kde_mi_narrow_kernel_equals_dense_normalised_kernel(sigma, bins):
    """kde-mi with normalise_pixels (the default) at a kernel narrower than ~0.2 bin spacings
    (connorlee77's sigma=0.1 regime): the truncation radius 5.3 sigma is then shorter than the
    half bin to the nearest centre, so a pixel between centres lost its nearest bin (all its
    mass went to the next one) or the runner-up of two nearly equal bins. Reference: the dense
    numpy formulation of the same kernel."""
    rng = np.random.default_rng(5)
    f = rng.random((17, 19))
    m = f**2 + 0.2 * rng.random((17, 19))
    ref = _dense_kde_mi(f.ravel(), m.ravel(), bins, sigma)
    got = H.kde_mi(torch.tensor(f)[None, None], torch.tensor(m)[None, None], bins=bins,
                   sigma=sigma).item()
    assert abs(got - ref) < 1e-5


def test_softhist_end_pixels_count_fully():
    """Pixels at the range ends have mass 1 (open end bins), in every bin count."""
    x = torch.tensor([[0.0, 0.0, 1.0, 0.5]], dtype=torch.float64)
    layout = binning.edges_layout(10)
    t = layout.coords(x, torch.zeros(1, dtype=x.dtype), torch.ones(1, dtype=x.dtype))
    hist = binning.marginal_histogram(t, None, binning.SigmoidKernel(5.0), layout)
    assert abs(hist.sum().item() - 4) < 1e-5
    assert hist[0, 0] > 1.9 and hist[0, -1] > 0.95


# --------------------------------------------------------------------------------------------
# Closed forms

RHO = 0.75
I_GAUSS = -0.5 * np.log(1 - RHO**2)  # 0.4133 nats


@pytest.fixture(scope="module")
def gaussian_pair():
    """N = 65,536 samples of a bivariate normal with rho = 0.75, as two 256 x 256 images, and the
    density on a fine grid whose cells never straddle a bin edge (spacing 0.01 on [-7, 7])."""
    rng = np.random.default_rng(7)
    z = rng.standard_normal((2, 256 * 256))
    x, y = z[0], RHO * z[0] + np.sqrt(1 - RHO**2) * z[1]
    step = 0.01
    g = np.arange(-7, 7, step) + step / 2
    gx, gy = np.meshgrid(g, g, indexing="ij")
    dens = np.exp(-(gx**2 - 2 * RHO * gx * gy + gy**2) / (2 * (1 - RHO**2)))
    dens /= dens.sum()
    return x, y, g, dens


def hard_bin_stats(x, y, bins, lo, hi):
    """Exact MI of the binned normal (clamped tails in the end bins), its first-order plug-in
    bias (m_xy - m_x - m_y + 1) / 2N from the occupied cells (Miller-Madow) and the standard
    deviation sqrt(Var[log P/(Px Py)] / N) of the plug-in estimate."""
    edges = np.linspace(lo, hi, bins + 1)[1:-1]
    s = np.sqrt(1 - RHO**2)
    dx = 1e-3
    xs = np.arange(-9, 9, dx) + dx / 2
    cdf = ndtr((edges[None, :] - RHO * xs[:, None]) / s)
    cond = np.diff(np.hstack([np.zeros((len(xs), 1)), cdf, np.ones((len(xs), 1))]), axis=1)
    p = np.zeros((bins, bins))
    np.add.at(p, np.searchsorted(edges, xs, side="right"),
              (np.exp(-xs**2 / 2) / np.sqrt(2 * np.pi) * dx)[:, None] * cond)
    p /= p.sum()
    nz = p > 0
    pmi = np.log(p[nz] / np.outer(p.sum(1), p.sum(0))[nz])
    exact = (p[nz] * pmi).sum()
    sd = np.sqrt(((p[nz] * pmi**2).sum() - exact**2) / x.size)
    counts = np.zeros((bins, bins))
    np.add.at(counts, (labels(x, bins, lo, hi), labels(y, bins, lo, hi)), 1)
    occupied = (counts > 0).sum() - (counts.sum(1) > 0).sum() - (counts.sum(0) > 0).sum() + 1
    return exact, occupied / (2 * x.size), sd


def test_gaussian_hard_histogram_within_plugin_bias(gaussian_pair):
    x, y, _, _ = gaussian_pair
    bins, lo, hi = 32, -4.0, 4.0
    exact, bias, sd = hard_bin_stats(x, y, bins, lo, hi)
    # Binning loses information (data processing), so the binned MI is below the true 0.4133.
    assert exact < I_GAUSS and I_GAUSS - exact < 0.01
    got = H.jhmi(t4(x.reshape(256, 256)), t4(y.reshape(256, 256)), bins=bins, range="fixed",
                 lo=lo, hi=hi).item()
    # Plug-in estimate = binned MI + first-order bias, within 4 standard deviations.
    assert abs(got - (exact + bias)) < 4 * sd
    assert abs(got - I_GAUSS) < (I_GAUSS - exact) + bias + 4 * sd


@pytest.mark.parametrize("name,bins", [("jhmi-linear", 32), ("jhmi-cubic", 32), ("mmi", 36),
                                       ("kde-mi", 32), ("softhist-mi", 32)])
def test_gaussian_parzen_within_bias(gaussian_pair, name, bins):
    """A Parzen estimate converges to the MI of the kernel-smoothed density (computed here on a
    fine grid with the dense kernels), which is below the true MI (a kernel is a channel applied
    to each variable). The sample estimate must be within the hard histogram's plug-in bias and
    4 of its standard deviations of that value (smoothing reduces both)."""
    x, y, g, dens = gaussian_pair
    lo, hi = -4.0, 4.0
    wx, wy = np_dense_weights(name, g, g, bins, lo, hi)
    population = np_mi(wx.T @ dens @ wy)
    assert population < I_GAUSS
    _, bias, sd = hard_bin_stats(x, y, 32, lo, hi)
    fn, opts = {c[0]: (c[1], c[2]) for c in CONFIGS}[name]
    got = fn(t4(x.reshape(256, 256)), t4(y.reshape(256, 256)), bins=bins, range="fixed",
             lo=lo, hi=hi, **opts).item()
    assert abs(got - population) < bias + 4 * sd


def test_independent_images_give_plugin_bias():
    """For independent uniform images the plug-in MI is ~ chi^2 / 2N with (B-1)^2 degrees of
    freedom: mean (B-1)^2 / 2N, standard deviation (B-1) sqrt(2) / 2N."""
    rng = np.random.default_rng(11)
    n, bins = 256 * 256, 16
    f, m = rng.random((2, 256, 256))
    got = H.jhmi(t4(f), t4(m), bins=bins, range="fixed").item()
    mean = (bins - 1) ** 2 / (2 * n)
    sd = (bins - 1) * np.sqrt(2) / (2 * n)
    assert abs(got - mean) < 4 * sd
    # The Parzen estimators sit at or below it (smoothing), and near 0.
    for _, fn, opts in DIFFERENTIABLE:
        if fn is H.nmi:
            continue
        value = fn(t4(f), t4(m), bins=bins, range="fixed", **opts).item()
        assert -1e-9 < value < mean + 4 * sd


def test_grey_level_permutation_gives_entropy():
    rng = np.random.default_rng(4)
    levels = rng.choice(16, size=(50, 60), p=np.arange(1, 17) / 136)
    perm = rng.permutation(16)
    f, m = levels / 15, perm[levels] / 15
    counts = np.bincount(levels.ravel(), minlength=16) / levels.size
    entropy = -(counts[counts > 0] * np.log(counts[counts > 0])).sum()
    assert abs(H.jhmi(t4(f), t4(m), bins=16).item() - entropy) < 1e-9
    for name, ref in [("studholme", 2.0), ("arithmetic", 1.0), ("joint", 1.0), ("geometric", 1.0)]:
        assert abs(H.nmi(t4(f), t4(m), bins=16, normalisation=name).item() - ref) < 1e-9


# --------------------------------------------------------------------------------------------
# Gradients


@pytest.mark.parametrize("name,fn,opts", DIFFERENTIABLE, ids=diff_ids)
def test_gradcheck(name, fn, opts):
    g = torch.Generator().manual_seed(3)
    f = (0.05 + 0.9 * torch.rand(2, 1, 4, 5, generator=g, dtype=torch.float64)).requires_grad_()
    m = (0.5 * f.detach() + 0.45 * torch.rand(2, 1, 4, 5, generator=g, dtype=torch.float64))
    m.requires_grad_()
    mask = torch.rand(2, 1, 4, 5, generator=g) > 0.3
    opts = {**opts, "bins": 7, "range": "fixed"}  # the min-max range is detached
    assert torch.autograd.gradcheck(lambda a, b: fn(a, b, mask, **opts), (f, m))
    f1, m1 = f[:1].detach().requires_grad_(), m[:1].detach().requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: fn(a, b, **opts), (f1, m1))


def test_gradcheck_smoothed_jhmi():
    g = torch.Generator().manual_seed(4)
    f = torch.rand(1, 1, 4, 5, generator=g, dtype=torch.float64, requires_grad=True)
    m = torch.rand(1, 1, 4, 5, generator=g, dtype=torch.float64, requires_grad=True)
    opts = {"kernel": "cubic", "bins": 8, "smoothing_variance": 1.5, "range": "fixed"}
    assert torch.autograd.gradcheck(lambda a, b: H.jhmi(a, b, **opts), (f, m))


@pytest.fixture(scope="module")
def smooth_image():
    rng = np.random.default_rng(0)
    img = gaussian_filter(rng.standard_normal((100, 100)), 3.0)
    return (img - img.min()) / (img.max() - img.min())


def _shifted(img, s, mapping):
    """Fixed: central 64 x 64; moving: the same window shifted by s px along x (linear
    interpolation for fractional s), through an intensity mapping."""
    i0 = int(np.floor(s))
    frac = s - i0
    a = img[18:82, 18 + i0:82 + i0]
    b = img[18:82, 19 + i0:83 + i0]
    return img[18:82, 18:82], mapping((1 - frac) * a + frac * b)


@pytest.mark.parametrize("name,fn,opts", CONFIGS, ids=ids)
@pytest.mark.parametrize("mapping", [lambda v: v, lambda v: np.sin(5 * v) ** 2],
                         ids=["same", "nonmonotone"])
def test_shift_lowers_value(smooth_image, name, fn, opts, mapping):
    values = []
    for s in (0.0, 0.5, 1.0, 3.0):
        f, m = _shifted(smooth_image, s, mapping)
        values.append(fn(t4(f), t4(m), **opts).item())
    assert values[0] > max(values[1:]), values


@pytest.mark.parametrize("name,fn,opts", DIFFERENTIABLE, ids=diff_ids)
def test_gradient_points_back_to_alignment(smooth_image, name, fn, opts):
    """d value / d shift < 0 for a moving image shifted by 0.4 px: the gradient a registration
    follows leads back to the aligned position."""
    f, _ = _shifted(smooth_image, 0.0, lambda v: v)
    a = torch.tensor(smooth_image[18:82, 18:82])
    b = torch.tensor(smooth_image[18:82, 19:83])
    s = torch.tensor(0.4, dtype=torch.float64, requires_grad=True)
    value = fn(t4(f), ((1 - s) * a + s * b)[None, None], **opts)
    value.sum().backward()
    assert s.grad.item() < 0


# --------------------------------------------------------------------------------------------
# Batches, masks, degenerate input


@pytest.mark.parametrize("name,fn,opts", CONFIGS, ids=ids)
def test_batch_items_are_independent(name, fn, opts):
    rng = np.random.default_rng(8)
    f, m = correlated(rng, (3, 24, 20))
    f[1] = 0.2 * f[1] + 0.5  # different intensity ranges per item
    m[2] = rng.random((24, 20))
    mask = rng.random((3, 1, 24, 20)) > 0.25
    ft, mt, mk = t4(f, torch.float32), t4(m, torch.float32), torch.tensor(mask)
    batched = fn(ft, mt, mk, **opts)
    assert batched.shape == (3,) and batched.dtype == torch.float32
    for i in range(3):
        single = fn(ft[i:i + 1], mt[i:i + 1], mk[i:i + 1], **opts)
        torch.testing.assert_close(batched[i:i + 1], single, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name,fn,opts", CONFIGS, ids=ids)
def test_mask_equals_selected_pixels(name, fn, opts):
    rng = np.random.default_rng(9)
    f, m = correlated(rng, (30, 30))
    m[:10] = 5.0  # outside the mask: must not touch the range nor the histogram
    mask = rng.random((30, 30)) > 0.4
    mask[:10] = False
    got = fn(t4(f), t4(m), torch.tensor(mask)[None, None], **opts)
    ref = fn(t4(f[mask][None]), t4(m[mask][None]), **opts)
    torch.testing.assert_close(got, ref, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name,fn,opts", CONFIGS, ids=ids)
def test_degenerate_inputs_are_finite(name, fn, opts):
    const, rand, empty, one_pixel = degenerate_tensors()
    assert_finite_with_gradients(
        fn, [(const, rand, None), (rand, const, None), (const, const, None),
             (rand, rand, empty), (const, rand, empty), (rand, rand, one_pixel)], **opts)
    zero = torch.zeros(2)
    torch.testing.assert_close(fn(rand, rand, empty, **opts), zero)
    torch.testing.assert_close(fn(const, const, **opts), zero)
    if fn is not H.nmi or opts.get("normalisation", "studholme") != "studholme":
        torch.testing.assert_close(fn(const, rand, **opts), zero, atol=1e-6, rtol=0)
    else:
        torch.testing.assert_close(fn(const, rand, **opts), torch.ones(2))


@pytest.mark.parametrize("name,fn,opts", CONFIGS, ids=ids)
def test_float16_input_computed_in_float32(name, fn, opts):
    g = torch.Generator().manual_seed(0)
    f = torch.rand(2, 3, 32, 32, generator=g)
    m = 0.7 * f + 0.3 * torch.rand(2, 3, 32, 32, generator=g)
    got = fn(f.half(), m.half(), **opts)
    assert got.dtype == torch.float32 and torch.isfinite(got).all()
    torch.testing.assert_close(got, fn(f.half().float(), m.half().float(), **opts))
    c = torch.full((1, 1, 8, 8), 0.5, dtype=torch.float16)
    assert torch.isfinite(fn(c, c, **opts)).all()


def test_channels_are_averaged_to_grey():
    g = torch.Generator().manual_seed(0)
    rgb = torch.rand(1, 3, 16, 16, generator=g)
    grey = rgb.mean(dim=1, keepdim=True)
    m = torch.rand(1, 1, 16, 16, generator=g)
    for _, fn, opts in CONFIGS:
        torch.testing.assert_close(fn(rgb, m, **opts), fn(grey, m, **opts))


MI_FUNCTIONS = [H.jhmi, H.nmi, H.mmi, H.kde_mi, H.softhist_mi]


@pytest.mark.parametrize("fn", MI_FUNCTIONS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("dtype,scale", [(torch.float32, 3e38), (torch.float64, 1.7e308)])
def test_mi_of_intensities_near_the_float_maximum(fn, dtype, scale):
    """A finite image spanning -scale..scale has a range hi - lo that overflows to inf, which
    made the bin coordinates NaN and crashed the histogram with a garbage index. MI is invariant
    to scaling an image, so the value must equal that of the unscaled image."""
    rng = np.random.default_rng(1)
    f = rng.random((2, 1, 12, 10)) * 2 - 1
    m = np.sin(3 * f) + 0.2 * rng.random((2, 1, 12, 10))
    ref = fn(torch.tensor(f, dtype=dtype), torch.tensor(m, dtype=dtype))
    got = fn(torch.tensor(f * scale, dtype=dtype), torch.tensor(m, dtype=dtype))
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------------------------
# Registration


def test_specs_match_functions():
    specs = {s.name: s for s in mibench_estimators()}
    expected = {"jhmi": H.jhmi, "nmi": H.nmi, "mmi": H.mmi, "kde-mi": H.kde_mi,
                "softhist-mi": H.softhist_mi}
    for name, fn in expected.items():
        spec = specs[name]
        assert spec.higher_is_better is True
        assert spec.load() is fn
        sig = {k: p.default for k, p in inspect.signature(fn).parameters.items()
               if p.kind is p.KEYWORD_ONLY}
        assert spec.defaults() == sig, name
    assert specs["mmi"].differentiable and specs["kde-mi"].differentiable
    assert specs["softhist-mi"].differentiable
    assert not specs["jhmi"].differentiable and not specs["nmi"].differentiable
    assert {"mse", "ncc"} <= set(specs)


def test_listing_does_not_import_torch():
    code = ("import sys, mibench.estimators as e; e.mibench_estimators(); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


def test_invalid_options_raise():
    x = torch.rand(1, 1, 8, 8)
    with pytest.raises(ValueError):
        H.jhmi(x, x, kernel="quartic")
    with pytest.raises(ValueError):
        H.nmi(x, x, normalisation="max")
    with pytest.raises(ValueError):
        H.mmi(x, x, bins=4)
    with pytest.raises(ValueError):
        H.jhmi(x, x, range="fixed", lo=1.0, hi=0.0)
    with pytest.raises(ValueError):
        H.jhmi(x, x, range="median")


@pytest.mark.parametrize("name, options", [
    ("mmi", {}), ("kde-mi", {}), ("softhist-mi", {}), ("jhmi", {"kernel": "linear"}),
    ("jhmi", {"kernel": "cubic"}), ("nmi", {"kernel": "cubic"})])
def test_empty_mask_with_a_fixed_range_has_finite_gradients(name, options):
    """An item whose mask is empty: value 0 and a zero (not NaN) gradient, and the other items
    of the batch unaffected."""
    import mibench

    gen = torch.Generator().manual_seed(3)
    fixed = torch.rand(2, 1, 16, 16, generator=gen)
    moving = torch.rand(2, 1, 16, 16, generator=gen).requires_grad_(True)
    mask = torch.ones(2, 1, 16, 16, dtype=torch.bool)
    mask[1] = False
    value = mibench.estimator(name, range="fixed", **options)(fixed, moving, mask)
    (grad,) = torch.autograd.grad(value.sum(), moving)
    assert torch.isfinite(grad).all() and value[1] == 0 and (grad[1] == 0).all()
    assert grad[0].abs().sum() > 0
