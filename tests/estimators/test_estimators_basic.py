"""The closed-form estimators ``mse`` and ``ncc`` against numpy brute force and edge cases."""

import numpy as np
import pytest
import torch
from helpers.degenerate import assert_finite_with_gradients, degenerate_tensors

from mibench.estimators import basic, mibench_estimators

ESTIMATORS = [basic.mse, basic.ncc]


def np_mse(f, m, mask):
    out = []
    for b in range(f.shape[0]):
        sel = mask[b, 0]
        if not sel.any():
            out.append(0.0)
            continue
        out.append(np.mean((f[b][:, sel] - m[b][:, sel]) ** 2))
    return np.array(out)


def np_ncc(f, m, mask):
    """Per channel centred, channels pooled (the documented definition), no eps."""
    out = []
    for b in range(f.shape[0]):
        sel = mask[b, 0]
        fv = f[b][:, sel]
        mv = m[b][:, sel]
        fv = fv - fv.mean(axis=1, keepdims=True)
        mv = mv - mv.mean(axis=1, keepdims=True)
        out.append((fv * mv).sum() / np.sqrt((fv**2).sum() * (mv**2).sum()))
    return np.array(out)


@pytest.fixture
def batch():
    rng = np.random.default_rng(1234)
    f = rng.random((3, 2, 17, 23))
    m = 0.6 * f + 0.4 * rng.random((3, 2, 17, 23))
    m[1] = rng.random((2, 17, 23))  # an unrelated pair
    m[2] = 1.0 - f[2]  # inverted contrast
    mask = rng.random((3, 1, 17, 23)) > 0.4
    mask[0] = True
    return f, m, mask


@pytest.mark.parametrize("fn,ref", [(basic.mse, np_mse), (basic.ncc, np_ncc)])
def test_against_numpy(batch, fn, ref):
    f, m, mask = batch
    got = fn(torch.tensor(f, dtype=torch.float32), torch.tensor(m, dtype=torch.float32),
             torch.tensor(mask))
    assert got.shape == (3,)
    assert got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), ref(f, m, mask), rtol=1e-4, atol=1e-6)
    # float64 in, float64 out, tighter.
    got64 = fn(torch.tensor(f), torch.tensor(m), torch.tensor(mask))
    assert got64.dtype == torch.float64
    np.testing.assert_allclose(got64.numpy(), ref(f, m, mask), rtol=1e-9)


@pytest.mark.parametrize("fn", ESTIMATORS)
def test_no_mask_is_all_pixels(batch, fn):
    f, m, _ = batch
    ft, mt = torch.tensor(f), torch.tensor(m)
    full = torch.ones(3, 1, 17, 23, dtype=torch.bool)
    torch.testing.assert_close(fn(ft, mt), fn(ft, mt, full))


def test_ncc_values():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 20, 20, generator=g)
    one = torch.ones(2)
    torch.testing.assert_close(basic.ncc(x, x), one, atol=1e-5, rtol=0)
    torch.testing.assert_close(basic.ncc(x, -x), -one, atol=1e-5, rtol=0)
    torch.testing.assert_close(basic.ncc(x, 2.5 * x + 0.3), one, atol=1e-5, rtol=0)
    offsets = torch.tensor([0.1, -0.2, 0.5]).view(1, 3, 1, 1)
    torch.testing.assert_close(basic.ncc(x, 0.5 * x + offsets), one, atol=1e-5, rtol=0)
    torch.testing.assert_close(basic.ncc(x, 1.0 - x), -one, atol=1e-5, rtol=0)


def test_mse_values():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 1, 8, 9, generator=g)
    torch.testing.assert_close(basic.mse(x, x), torch.zeros(2))
    torch.testing.assert_close(basic.mse(x, x + 0.5), torch.full((2,), 0.25))


@pytest.mark.parametrize("fn", ESTIMATORS)
def test_degenerate_inputs_are_finite(fn):
    const, rand, empty, _ = degenerate_tensors()
    assert_finite_with_gradients(fn, [(const, rand, None), (rand, const, None),
                                      (const, const, None), (rand, rand, empty),
                                      (const, rand, empty)])
    if fn is basic.ncc:
        torch.testing.assert_close(fn(const, rand), torch.zeros(2), atol=1e-6, rtol=0)
        torch.testing.assert_close(fn(const, const), torch.zeros(2), atol=1e-6, rtol=0)
    torch.testing.assert_close(fn(rand, rand + 1, empty), torch.zeros(2))


@pytest.mark.parametrize("fn", ESTIMATORS)
def test_float16_input_computed_in_float32(fn):
    g = torch.Generator().manual_seed(0)
    f = torch.rand(2, 3, 64, 64, generator=g)
    m = 0.7 * f + 0.3 * torch.rand(2, 3, 64, 64, generator=g)
    got = fn(f.half(), m.half())
    assert got.dtype == torch.float32
    assert torch.isfinite(got).all()
    # Only the input rounding differs from the float32 computation.
    ref = fn(f.half().float(), m.half().float())
    torch.testing.assert_close(got, ref)
    torch.testing.assert_close(got, fn(f, m), atol=2e-3, rtol=2e-3)
    # Constant half images stay finite.
    c = torch.full((1, 1, 8, 8), 0.5, dtype=torch.float16)
    assert torch.isfinite(fn(c, c)).all()


@pytest.mark.parametrize("fn", ESTIMATORS)
def test_gradcheck(fn):
    g = torch.Generator().manual_seed(3)
    f = torch.rand(2, 2, 5, 6, generator=g, dtype=torch.float64, requires_grad=True)
    m = torch.rand(2, 2, 5, 6, generator=g, dtype=torch.float64, requires_grad=True)
    mask = torch.rand(2, 1, 5, 6, generator=g) > 0.3
    assert torch.autograd.gradcheck(lambda a, b: fn(a, b, mask), (f, m))
    assert torch.autograd.gradcheck(lambda a, b: fn(a, b), (f, m))


@pytest.mark.parametrize("fn", ESTIMATORS)
def test_channel_broadcast(fn):
    g = torch.Generator().manual_seed(0)
    grey = torch.rand(1, 1, 12, 12, generator=g)
    rgb = grey.expand(1, 3, 12, 12)
    torch.testing.assert_close(fn(grey, rgb), fn(grey, grey))


def test_specs():
    specs = {s.name: s for s in mibench_estimators()}
    assert specs["mse"].higher_is_better is False
    assert specs["ncc"].higher_is_better is True
    assert specs["mse"].load() is basic.mse
    assert specs["ncc"].load() is basic.ncc


def test_the_api_refuses_inputs_no_estimator_can_score_and_broadcasts_batches():
    """Through ``mibench.estimator``: NaN pixels, different sizes, empty images and batches that
    do not broadcast are one clear ValueError for every estimator; a batch of 1 broadcasts."""
    import mibench

    a = torch.rand(1, 1, 16, 16)
    nan = a.clone()
    nan[0, 0, 3, 3] = float("nan")
    for name in ("ncc", "mse", "jhmi", "nmi", "mmi", "kde-mi", "softhist-mi", "cmif"):
        est = mibench.estimator(name)
        assert est(a, torch.rand(3, 1, 16, 16)).shape == (3,)
        for fixed, moving, message in (
                (a, nan, "moving image has NaN"), (nan, a, "fixed image has NaN"),
                (a, a[..., :1, :], "differ in size"), (a[..., :0, :], a[..., :0, :], "empty"),
                (torch.rand(2, 1, 16, 16), torch.rand(3, 1, 16, 16), "do not broadcast")):
            with pytest.raises(ValueError, match=message):
                est(fixed, moving)
        # numpy arrays: the same error type as tensors.
        with pytest.raises(ValueError, match=r"differ in shape: \(16, 16\) vs \(8, 16\)"):
            est(a[0, 0].numpy(), a[0, 0, :8].numpy())
        with pytest.raises(ValueError, match="moving image has NaN"):
            est(a[0, 0].numpy(), nan[0, 0].numpy())


def test_methods_refuse_nan_pixels():
    import mibench

    img = np.random.default_rng(0).random((24, 24)).astype(np.float32)
    bad = img.copy()
    bad[2, 2] = np.nan
    with pytest.raises(ValueError, match="the moving image has NaN or infinite pixels"):
        mibench.method("ncc", device="cpu", iterations=1)(img, bad)


def test_one_mask_serves_a_whole_batch():
    import mibench

    gen = torch.Generator().manual_seed(4)
    a, b = torch.rand(3, 1, 16, 16, generator=gen), torch.rand(3, 1, 16, 16, generator=gen)
    mask = torch.rand(1, 1, 16, 16, generator=gen) > 0.3
    for name, options in (("ncc", {}), ("nmi", {}), ("mine", {"iterations": 20}), ("cmif", {})):
        est = mibench.estimator(name, **options)
        one = est(a, b, mask)
        each = torch.cat([est(a[i:i + 1], b[i:i + 1], mask) for i in range(3)])
        torch.testing.assert_close(one, each)


@pytest.mark.parametrize("dtype,scale", [(torch.float32, 1e19), (torch.float32, 1e30),
                                         (torch.float64, 1e160)])
def test_ncc_is_scale_free_for_huge_intensities(dtype, scale):
    """NCC is invariant to scaling each image (a > 0); the docstring promises no NaN or inf.
    Intensities whose squares overflow (|x| > ~1.8e19 in float32) gave NaN for ncc(x, x) and
    0 for correlated images. Reference: numpy's corrcoef of the unscaled images in float64."""
    rng = np.random.default_rng(0)
    f = rng.random((2, 1, 9, 8))
    m = 0.6 * f + 0.4 * rng.random((2, 1, 9, 8))
    mask = rng.random((2, 1, 9, 8)) > 0.3
    ref = [np.corrcoef(f[i][mask[i]], m[i][mask[i]])[0, 1] for i in range(2)]
    ft, mt = torch.tensor(f * scale, dtype=dtype), torch.tensor(m * scale, dtype=dtype)
    got = basic.ncc(ft, mt, torch.tensor(mask))
    np.testing.assert_allclose(got.double().numpy(), ref, rtol=0, atol=1e-5)
    torch.testing.assert_close(basic.ncc(ft, ft), torch.ones(2, dtype=dtype))
