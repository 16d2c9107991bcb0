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


def test_original_soft_histogram_slope_uses_dense_rows_and_equals_numpy():
    """KrakenLeaf's slope (s = 10 on [0, 1] with 50 bins: slope 0.2 per bin) touches 156 bins per
    pixel: the sparse accumulator would need ~13 GB; the dense path gives the same MI as the
    dense NumPy soft histogram (open end bins)."""
    from mibench.estimators import binning

    layout = binning.edges_layout(50)
    kernel = binning.SigmoidKernel(slope=0.2)
    assert binning.uses_dense(256 * 256, kernel, kernel, layout, layout)
    assert not binning.uses_dense(256 * 256, binning.SigmoidKernel(), binning.SigmoidKernel(),
                                  layout, layout)  # the default slope stays sparse
    rng = np.random.default_rng(3)
    f = rng.random((40, 40))
    m = np.clip(0.7 * f + 0.3 * rng.random((40, 40)), 0, 1)
    got = H.softhist_mi(torch.tensor(f)[None, None], torch.tensor(m)[None, None], bins=50,
                        slope=0.2).item()

    def weights(x):
        t = (x.ravel() - x.min()) / (x.max() - x.min()) * 50 - 0.5  # cell k centred on k
        u = t[:, None] - np.arange(50)[None, :]
        low = 1 / (1 + np.exp(-0.2 * (u + 0.5)))
        low[:, 0] = 1.0
        high = 1 / (1 + np.exp(-0.2 * (u - 0.5)))
        high[:, -1] = 0.0
        return low - high

    joint = weights(f).T @ weights(m)
    p = joint / joint.sum()
    px, py = p.sum(1), p.sum(0)
    nz = p > 0
    ref = float((p[nz] * np.log(p[nz] / np.outer(px, py)[nz])).sum())
    assert got == pytest.approx(ref, abs=1e-6)


@pytest.mark.parametrize("kind", ["linear", "cubic", "gaussian", "sigmoid", "box"])
def test_dense_joint_equals_sparse_joint_values_and_gradients(kind):
    from mibench.estimators import binning

    kernels = {"linear": binning.LinearKernel(), "cubic": binning.CubicBSplineKernel(),
               "gaussian": binning.GaussianKernel(sigma=0.8), "sigmoid": binning.SigmoidKernel(2.0),
               "box": binning.BoxKernel()}
    k = kernels[kind]
    lx = binning.centres_layout(12, 1.0) if kind == "cubic" else binning.edges_layout(12)
    ly = binning.centres_layout(9, 1.0) if kind == "cubic" else binning.edges_layout(9)
    rng = np.random.default_rng(4)
    x = torch.tensor(rng.random((2, 300)), requires_grad=True)
    y = torch.tensor(rng.random((2, 300)), requires_grad=True)
    s = torch.tensor((rng.random((2, 300)) > 0.3).astype(float))
    zero, one = torch.zeros(2, dtype=x.dtype), torch.ones(2, dtype=x.dtype)
    out = []
    for build in (binning.joint_histogram, binning._dense_joint):
        tx, ty = lx.coords(x, zero, one), ly.coords(y, zero, one)
        joint = build(tx, ty, s, k, k, lx, ly)
        if kind == "box":  # hard counts: no gradient either way
            out.append((joint.detach(), None, None))
            continue
        loss = (joint * torch.linspace(-1, 1, joint.numel(), dtype=x.dtype).view_as(joint)).sum()
        gx, gy = torch.autograd.grad(loss, (x, y))
        out.append((joint.detach(), gx, gy))
    (j0, gx0, gy0), (j1, gx1, gy1) = out
    torch.testing.assert_close(j1, j0, rtol=1e-9, atol=1e-9)
    if kind != "box":
        torch.testing.assert_close(gx1, gx0, rtol=1e-7, atol=1e-9)
        torch.testing.assert_close(gy1, gy0, rtol=1e-7, atol=1e-9)
