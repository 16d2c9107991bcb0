"""Every built-in estimator but ``cmif`` scores volume batches ``(B, C, D, H, W)`` (issue 21).

They are pointwise-sample estimators: a volume must score exactly as its voxels laid out as one
image ``(B, C, D*H, W)``, with and without a mask, values and gradients. Independent references
on volumes: scikit-learn's ``mutual_info_score`` of the bin labels (hard-count ``jhmi``),
scikit-image's ``normalized_mutual_information`` (``nmi``), SimpleITK's Mattes metric on a 3-D
image (``mmi``), numpy's correlation and mean squared difference (``ncc``, ``mse``).
"""

import numpy as np
import pytest
import torch
from helpers.degenerate import assert_finite_with_gradients

import mibench
from mibench.callables import Estimator
from mibench.estimators import basic, mibench_estimators, mine
from mibench.estimators import histogram as H
from mibench.estimators.inputs import check_pair_shapes
from mibench.estimators.quantise import quantise
from mibench.specs import EstimatorSpec

#: (id, function, options, differentiable in moving) of every estimator scored here.
CONFIGS = [
    ("mse", basic.mse, {}, True),
    ("ncc", basic.ncc, {}, True),
    ("jhmi", H.jhmi, {"bins": 8}, False),
    ("jhmi-smooth-linear", H.jhmi, {"bins": 8, "kernel": "linear", "smoothing_variance": 1.5},
     True),
    ("jhmi-cubic", H.jhmi, {"bins": 8, "kernel": "cubic"}, True),
    ("nmi", H.nmi, {"bins": 10}, False),
    ("nmi-cubic", H.nmi, {"bins": 10, "kernel": "cubic"}, True),
    ("nmi-linear-percentile", H.nmi, {"bins": 10, "kernel": "linear", "range": "percentile"},
     True),
    ("mmi", H.mmi, {"bins": 12}, True),
    ("kde-mi", H.kde_mi, {"bins": 12}, True),
    ("softhist-mi", H.softhist_mi, {"bins": 12}, True),
    ("mine", mine.mine, {"iterations": 15, "batch": 64, "hidden": 8, "seed": 3}, False),
]
DIFFERENTIABLE = [c for c in CONFIGS if c[3]]

SHAPE = (2, 1, 5, 6, 7)  # (B, C, D, H, W): small, every axis a different length


def volumes(seed, shape=SHAPE, mix=0.6):
    """Correlated float32 volume batches and a random mask ``(B, 1, D, H, W)``."""
    g = torch.Generator().manual_seed(seed)
    fixed = torch.rand(shape, generator=g)
    moving = mix * fixed ** 2 + (1 - mix) * torch.rand(shape, generator=g)
    mask = torch.rand((shape[0], 1) + shape[2:], generator=g) > 0.3
    return fixed, moving, mask


def as_image(t):
    """The same voxels as one image per item: ``(B, C, D, H, W)`` -> ``(B, C, D*H, W)``."""
    b, c, d, h, w = t.shape
    return t.reshape(b, c, d * h, w)


@pytest.mark.parametrize("name,fn,opts,diff", CONFIGS, ids=[c[0] for c in CONFIGS])
@pytest.mark.parametrize("masked", [False, True], ids=["all", "masked"])
def test_a_volume_scores_as_its_voxels_laid_out_as_one_image(name, fn, opts, diff, masked):
    fixed, moving, mask = volumes(seed=len(name) + 7 * masked)
    if name in ("mse", "ncc"):
        moving = moving.expand(-1, 3, -1, -1, -1) * torch.tensor([1.0, 0.5, 2.0])[:, None, None,
                                                                                   None]
    mask = mask if masked else None
    m5 = moving.clone().requires_grad_(diff)
    m4 = as_image(moving).clone().requires_grad_(diff)
    got = fn(fixed, m5, mask, **opts)
    ref = fn(as_image(fixed), m4, None if mask is None else as_image(mask), **opts)
    assert got.shape == (2,)
    torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-7)
    if diff:
        got.sum().backward()
        ref.sum().backward()
        torch.testing.assert_close(as_image(m5.grad), m4.grad, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("name,fn,opts,diff", DIFFERENTIABLE,
                         ids=[c[0] for c in DIFFERENTIABLE])
def test_gradients_reach_every_voxel_of_a_volume(name, fn, opts, diff):
    """Finite, non-zero gradients in ``moving`` (both images for the symmetric ones), and none
    on voxels outside the mask."""
    fixed, moving, mask = volumes(seed=11)
    fixed = fixed.clone().requires_grad_(True)
    moving = moving.clone().requires_grad_(True)
    fn(fixed, moving, mask, **opts).sum().backward()
    for t in (moving,) if name == "mmi" else (fixed, moving):
        assert torch.isfinite(t.grad).all()
        inside = t.grad[mask.expand_as(t.grad)]
        assert (inside != 0).float().mean() > 0.9, name
        assert (t.grad[~mask.expand_as(t.grad)] == 0).all(), name


@pytest.mark.parametrize("name,fn,opts,diff", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_constant_volumes_and_empty_masks_give_no_nan(name, fn, opts, diff):
    g = torch.Generator().manual_seed(2)
    const = torch.full((2, 1, 4, 5, 6), 0.3, requires_grad=True)
    rand = torch.rand(2, 1, 4, 5, 6, generator=g, requires_grad=True)
    empty = torch.zeros(2, 1, 4, 5, 6, dtype=torch.bool)
    one = empty.clone()
    one[:, :, 1, 2, 3] = True
    cases = [(const, const, None), (const, rand, None), (rand, const, None), (rand, rand, empty),
             (rand, rand, one)]
    if name == "mine":  # detached: values only
        for a, b, mask in cases:
            assert torch.isfinite(fn(a, b, mask, **opts)).all()
        return
    assert_finite_with_gradients(fn, cases, **opts)


# --------------------------------------------------------------------------------------------
# Independent references on volumes


def labels(x, bins):
    """numpy's equal-width binning over min..max, the last edge closed."""
    lo, hi = x.min(), x.max()
    return np.clip(np.floor((x - lo) / (hi - lo) * bins), 0, bins - 1).astype(int)


def test_hard_count_mi_of_a_volume_equals_sklearn():
    mutual_info_score = pytest.importorskip("sklearn.metrics").mutual_info_score
    fixed, moving, mask = volumes(seed=5, shape=(2, 1, 9, 10, 11))
    got = H.jhmi(fixed, moving, mask, bins=12, bins_moving=7)
    got_all = H.jhmi(fixed, moving, bins=12, bins_moving=7)
    f, m, k = fixed[:, 0].double().numpy(), moving[:, 0].double().numpy(), mask[:, 0].numpy()
    for b in range(2):
        ref = mutual_info_score(labels(f[b][k[b]], 12), labels(m[b][k[b]], 7))
        assert abs(got[b].item() - ref) < 1e-5
        ref = mutual_info_score(labels(f[b].ravel(), 12), labels(m[b].ravel(), 7))
        assert abs(got_all[b].item() - ref) < 1e-5


def test_nmi_of_a_volume_equals_skimage():
    from skimage.metrics import normalized_mutual_information

    fixed, moving, _ = volumes(seed=6, shape=(2, 1, 12, 10, 9))
    f64, m64 = fixed.double(), moving.double()
    got = H.nmi(f64, m64)  # the defaults: box, 100 bins, Studholme
    for b in range(2):
        ref = normalized_mutual_information(f64[b, 0].numpy(), m64[b, 0].numpy(), bins=100)
        assert abs(got[b].item() - ref) < 1e-9


def test_mattes_mi_of_a_volume_matches_simpleitk():
    sitk = pytest.importorskip("SimpleITK")
    rng = np.random.default_rng(8)
    f = rng.random((9, 10, 11)).astype(np.float32)  # numpy (D, H, W) = ITK (x=W, y=H, z=D)
    m = ((0.5 * f + 0.5 * rng.random(f.shape)) * 3 - 1).astype(np.float32)
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=20)
    reg.SetMetricSamplingStrategy(reg.NONE)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetInitialTransform(sitk.TranslationTransform(3))
    ref = -reg.MetricEvaluate(sitk.GetImageFromArray(f), sitk.GetImageFromArray(m))
    assert ref > 0  # ITK returns -MI
    got = H.mmi(torch.from_numpy(f)[None, None], torch.from_numpy(m)[None, None], bins=20)
    assert abs(got.item() - ref) <= 1e-3 * ref


def test_ncc_and_mse_of_volumes_equal_numpy():
    fixed, moving, mask = volumes(seed=9, shape=(2, 1, 6, 5, 8))
    f, m, k = fixed[:, 0].double().numpy(), moving[:, 0].double().numpy(), mask[:, 0].numpy()
    ncc, mse = basic.ncc(fixed, moving, mask), basic.mse(fixed, moving, mask)
    for b in range(2):
        fs, ms = f[b][k[b]], m[b][k[b]]
        assert abs(ncc[b].item() - np.corrcoef(fs, ms)[0, 1]) < 1e-5
        assert abs(mse[b].item() - np.mean((fs - ms) ** 2)) < 1e-6


# --------------------------------------------------------------------------------------------
# Shapes, the Python API and the quantiser


def test_check_pair_shapes_names_the_allowed_layouts():
    v, img = torch.zeros(1, 1, 3, 4, 5), torch.zeros(1, 1, 4, 5)
    check_pair_shapes(v, v)
    check_pair_shapes(img, img)
    for a, b in ((v, img), (img, v), (v[0, 0], v[0, 0]), (v[None], v[None])):
        with pytest.raises(ValueError, match=r"both \(B, C, H, W\) or both \(B, C, D, H, W\)"):
            check_pair_shapes(a, b)
    with pytest.raises(ValueError, match="differ in size"):
        check_pair_shapes(v, v[:, :, :2])
    with pytest.raises(ValueError, match="do not broadcast"):
        check_pair_shapes(v.expand(2, -1, -1, -1, -1), v.expand(3, -1, -1, -1, -1))


def test_builtin_specs_declare_volumes():
    dims = {spec.name: spec.dims for spec in mibench_estimators()}
    for name in ("mse", "ncc", "jhmi", "nmi", "mmi", "kde-mi", "softhist-mi", "mine"):
        assert dims[name] == (2, 3), name


def test_the_api_scores_volume_tensors_and_numpy_volumes_when_told():
    fixed, moving, mask = volumes(seed=12)
    for name in ("ncc", "nmi", "mmi"):
        est = mibench.estimator(name)
        got = est(fixed, moving, mask)
        fn = {"ncc": basic.ncc, "nmi": H.nmi, "mmi": H.mmi}[name]
        torch.testing.assert_close(got, fn(fixed, moving, mask))
        # One mask (1, 1, D, H, W) for the whole batch.
        one = est(fixed, moving, mask[:1])
        torch.testing.assert_close(one, fn(fixed, moving, mask[:1].expand(2, -1, -1, -1, -1)))
        # numpy (D, H, W) volumes need ndim=3; the value is that of the tensors.
        f, m, k = fixed[0, 0].numpy(), moving[0, 0].numpy(), mask[0, 0].numpy()
        value = est(f, m, k, ndim=3)
        assert isinstance(value, float)
        assert abs(value - got[0].item()) < 1e-6
        # (D, H, W, C) channels-last volumes.
        value_c = est(np.stack([f, f], -1), np.stack([m, m], -1), k, ndim=3)
        assert abs(value_c - got[0].item()) < 1e-6 * max(1.0, abs(value))
        with pytest.raises(ValueError, match="ndim=2 but the tensors are"):
            est(fixed, moving, ndim=2)
        with pytest.raises(ValueError, match="ndim must be 2"):
            est(f, m, ndim=4)


def test_an_estimator_that_declares_images_only_refuses_volumes():
    spec = EstimatorSpec(name="flat", description="images only",
                         factory="mibench.estimators.basic:ncc", uses_seed=False)
    est = Estimator(spec)
    fixed, moving, _ = volumes(seed=1)
    with pytest.raises(ValueError, match=r"'flat' does not score volumes \(3-D\).*dims=\(2,\)"):
        est(fixed, moving)
    with pytest.raises(ValueError, match="does not score volumes"):
        est(fixed[0, 0].numpy(), moving[0, 0].numpy(), ndim=3)
    assert est(as_image(fixed), as_image(moving)).shape == (2,)


@pytest.mark.parametrize("method", ["equal", "quantile", "kmeans"])
def test_quantise_labels_a_volume_as_its_voxels_laid_out_as_one_image(method):
    fixed, _, mask = volumes(seed=4, shape=(2, 2, 5, 6, 7))
    for k in (None, mask):
        got = quantise(fixed, 4, k, method=method, seed=1)
        ref = quantise(as_image(fixed), 4, None if k is None else as_image(k), method=method,
                       seed=1)
        assert got.shape == (2, 5, 6, 7)
        assert torch.equal(got.reshape(2, 30, 7), ref)
    with pytest.raises(ValueError, match=r"\(B, C, D, H, W\) volume"):
        quantise(fixed[0, 0], 4)
