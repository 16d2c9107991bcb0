"""The binning core of the histogram estimators (:mod:`mibench.estimators.binning`): the dense
path of very wide kernels equals the sparse one (values and gradients) and a dense NumPy soft
histogram, the sample chunking is invisible, and the plug-in MI of a product joint is 0."""

import numpy as np
import pytest
import torch

from mibench.estimators import binning, histogram

H = histogram


def test_original_soft_histogram_slope_uses_dense_rows_and_equals_numpy():
    """KrakenLeaf's slope (s = 10 on [0, 1] with 50 bins: slope 0.2 per bin) touches 156 bins per
    pixel: the sparse accumulator would need ~13 GB; the dense path gives the same MI as the
    dense NumPy soft histogram (open end bins)."""
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


def test_large_batch_spans_several_chunks(monkeypatch):
    """The sample chunking is invisible in values and gradients."""
    g = torch.Generator().manual_seed(1)
    f = torch.rand(3, 1, 20, 20, generator=g, dtype=torch.float64)
    m = torch.rand(3, 1, 20, 20, generator=g, dtype=torch.float64)
    results = []
    for chunk in (1 << 20, 100):
        monkeypatch.setitem(binning.CHUNK_SAMPLES, "cpu", chunk)
        mm = m.clone().requires_grad_()
        value = H.softhist_mi(f, mm, bins=9)
        value.sum().backward()
        results.append((value.detach(), mm.grad))
    torch.testing.assert_close(results[0][0], results[1][0])
    torch.testing.assert_close(results[0][1], results[1][1])


def test_plug_in_mi_of_a_product_joint_is_zero_not_negative_and_keeps_its_gradient():
    """H(X) + H(Y) - H(X,Y) of a product joint is 0 up to rounding, which fell below 0 about
    one time in four; the MI is clipped at 0 (as sklearn's mutual_info_score) while the
    gradient stays that of the unclipped sum."""
    gen = torch.Generator().manual_seed(5)
    px, py = torch.rand(64, 32, generator=gen), torch.rand(64, 32, generator=gen)
    joint = (px[:, :, None] * py[:, None, :]).requires_grad_(True)
    hx, hy, hxy = binning.entropies(joint)
    raw = hx + hy - hxy
    assert (raw < 0).any()  # the rounding this guards against
    mi = binning.mutual_information(joint)
    assert (mi >= 0).all() and mi.max() < 1e-6
    (grad,) = torch.autograd.grad(mi.sum(), joint)
    (raw_grad,) = torch.autograd.grad(raw.sum(), joint)
    torch.testing.assert_close(grad, raw_grad)
    for norm in ("arithmetic", "joint", "geometric"):
        assert (histogram.normalised_mi(hx, hy, hxy, norm) >= 0).all()


@pytest.mark.parametrize("kernels", [("cubic", "cubic"), ("box", "cubic"), ("linear", "linear"),
                                     ("gauss", "sigmoid")])
def test_saved_taps_give_the_bits_of_recomputed_taps(monkeypatch, kernels):
    """The backward pass from the taps the forward pass kept equals, bit for bit, the backward
    pass that recomputes them (several chunks, a mask, gradients in both images or one)."""
    make = {"cubic": lambda: (binning.CubicBSplineKernel(), binning.centres_layout(12, pad=1)),
            "box": lambda: (binning.BoxKernel(), binning.edges_layout(12)),
            "linear": lambda: (binning.LinearKernel(), binning.centres_layout(12)),
            "gauss": lambda: (binning.GaussianKernel(sigma=0.6), binning.centres_layout(12)),
            "sigmoid": lambda: (binning.SigmoidKernel(), binning.edges_layout(12))}
    (kx, lx), (ky, ly) = make[kernels[0]](), make[kernels[1]]()
    monkeypatch.setitem(binning.CHUNK_SAMPLES, "cpu", 300)
    g = torch.Generator().manual_seed(2)
    tx0 = torch.rand(2, 1000, generator=g) * lx.span + lx.pad
    ty0 = torch.rand(2, 1000, generator=g) * ly.span + ly.pad
    s = (torch.rand(2, 1000, generator=g) > 0.3).float()
    for wants in ((True, True), (False, True), (True, False)):
        results = []
        for limit in (binning.SAVED_TAPS_MAX_BYTES, 0):
            monkeypatch.setattr(binning, "SAVED_TAPS_MAX_BYTES", limit)
            tx = tx0.clone().requires_grad_(wants[0])
            ty = ty0.clone().requires_grad_(wants[1])
            joint = binning.joint_histogram(tx, ty, s, kx, ky, lx, ly)
            binning.mutual_information(joint).sum().backward()
            results.append((joint.detach(), tx.grad, ty.grad))
        smooth = (True, kx.differentiable, ky.differentiable)  # joint, d/dtx, d/dty
        for saved, recomputed, nonzero in zip(*results, smooth, strict=True):
            assert (saved is None) == (recomputed is None)
            if saved is not None:
                assert torch.equal(saved, recomputed)
                assert (saved.abs().sum() > 0) == nonzero


def test_masked_minmax_range_equals_the_extremes_of_the_selected_samples():
    """Weights > 0 select (any positive value, not only 1); rows with nothing selected give
    [0, 0]; negative, huge and float64 values; reference: numpy on the selected values."""
    rng = np.random.default_rng(4)
    for dtype, scale in ((torch.float32, 1.0), (torch.float32, 3e38), (torch.float64, 1e300)):
        x = (rng.random((4, 50)) * 2 - 1) * scale
        w = rng.random((4, 50)) * (rng.random((4, 50)) > 0.6)
        w[1] = 0.0  # nothing selected
        w[2] = 0.0
        w[2, 17] = 0.25  # one sample
        w[3] = -w[3]  # negative weights select nothing
        lo, hi = binning.intensity_range(torch.tensor(x, dtype=dtype),
                                         torch.tensor(w, dtype=dtype))
        for row in range(4):
            sel = w[row] > 0
            want = (x[row][sel].min(), x[row][sel].max()) if sel.any() else (0.0, 0.0)
            got = (lo[row].item(), hi[row].item())
            expected = tuple(float(torch.tensor(v, dtype=dtype)) for v in want)
            assert got == expected, (dtype, scale, row)


@pytest.mark.parametrize("name,opts", [("nmi", {"kernel": "cubic", "bins": 16}), ("mmi", {}),
                                       ("jhmi", {"bins": 12}),
                                       ("jhmi", {"kernel": "linear", "range": "percentile"})])
def test_a_selective_mask_scores_only_its_samples_with_the_same_bits(monkeypatch, name, opts):
    """On the CPU a single pair whose mask selects few samples is reduced to them: the same
    values and gradients (to the bit for the B-spline kernels) as the full masked computation,
    masked-out pixels get zero gradient; an empty mask still gives 0."""
    g = torch.Generator().manual_seed(6)
    f = torch.rand(1, 1, 6, 30, 40, generator=g)
    m = 0.5 * f + 0.5 * torch.rand(1, 1, 6, 30, 40, generator=g)
    mask = torch.rand(1, 1, 6, 30, 40, generator=g) < 0.3
    x, _, w = binning.prepare_pair(f, m, mask)
    assert w is None and x.shape == (1, int(mask.sum()))
    fn = getattr(H, name)
    results = []
    for below in (binning.COMPACT_BELOW, 0.0):
        monkeypatch.setattr(binning, "COMPACT_BELOW", below)
        mm = m.clone().requires_grad_(True)
        value = fn(f, mm, mask, **opts)
        value.sum().backward()
        results.append((value.detach(), mm.grad))
    assert torch.equal(results[0][0], results[1][0])
    assert torch.equal(results[0][1], results[1][1])
    assert (results[0][1][~mask] == 0).all()
    monkeypatch.setattr(binning, "COMPACT_BELOW", 0.9)
    assert fn(f, m, torch.zeros_like(mask), **opts).item() == 0.0
