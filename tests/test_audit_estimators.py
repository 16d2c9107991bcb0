"""Audit of the estimators against independent references (dense numpy kernels, closed forms):
one test per bug found, each failing on the code before its fix."""

import numpy as np
import pytest
import torch

from mibench.estimators import histogram as H


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


@pytest.mark.parametrize("dtype,scale", [(torch.float32, 1e19), (torch.float32, 1e30),
                                         (torch.float64, 1e160)])
def test_ncc_is_scale_free_for_huge_intensities(dtype, scale):
    """NCC is invariant to scaling each image (a > 0); the docstring promises no NaN or inf.
    Intensities whose squares overflow (|x| > ~1.8e19 in float32) gave NaN for ncc(x, x) and
    0 for correlated images. Reference: numpy's corrcoef of the unscaled images in float64."""
    from mibench.estimators import basic

    rng = np.random.default_rng(0)
    f = rng.random((2, 1, 9, 8))
    m = 0.6 * f + 0.4 * rng.random((2, 1, 9, 8))
    mask = rng.random((2, 1, 9, 8)) > 0.3
    ref = [np.corrcoef(f[i][mask[i]], m[i][mask[i]])[0, 1] for i in range(2)]
    ft, mt = torch.tensor(f * scale, dtype=dtype), torch.tensor(m * scale, dtype=dtype)
    got = basic.ncc(ft, mt, torch.tensor(mask))
    np.testing.assert_allclose(got.double().numpy(), ref, rtol=0, atol=1e-5)
    torch.testing.assert_close(basic.ncc(ft, ft), torch.ones(2, dtype=dtype))


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
