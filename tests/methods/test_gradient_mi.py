"""The MI gradient methods (nmi, mmi, jhmi, kde-mi, softhist-mi) go through the same engine as
ncc/mse and recover a known affine between images related by a non-monotonic intensity map."""

import numpy as np
import pytest
import torch
from helpers.registration import TRUE_T, errors, make_pair

import mibench
import mibench.registry

MI_METHODS = ["nmi", "mmi", "jhmi", "kde-mi", "softhist-mi"]


@pytest.mark.parametrize("name", MI_METHODS)
def test_mi_methods_recover_multimodal_affine(canvas, name):
    fixed, moving = make_pair(canvas, TRUE_T)
    moving = torch.sin(3 * moving) ** 2  # non-monotonic: NCC and MSE cannot follow this
    out = mibench.method(name, device="cpu", iterations=120, levels=3)(fixed, moving)
    assert errors(mibench.MatrixTransform.identity(), TRUE_T).mean() > 5
    err = errors(out.transform, TRUE_T)
    assert err.max() < 0.5, (name, err)


def test_estimator_options_reach_the_estimator(monkeypatch):
    """A method option that belongs to the estimator is passed to it, the rest to the engine;
    the estimator options the method does not offer get the estimator's defaults (a
    third-party estimator's factory declares none of its own)."""
    from mibench.estimators import histogram

    seen = {}
    real = histogram.nmi

    def spy(fixed, moving, mask=None, **opts):
        seen.update(opts)
        return real(fixed, moving, mask=mask, **opts)

    monkeypatch.setattr(histogram, "nmi", spy)
    img = torch.rand(1, 1, 48, 48, generator=torch.Generator().manual_seed(0))
    out = mibench.method("nmi", device="cpu", iterations=2, levels=1, bins=16)(img, img)
    defaults = mibench.registry.Registry(entry_points=False).get("estimator", "nmi").defaults()
    assert seen == {**defaults, "bins": 16, "kernel": "cubic", "normalisation": "studholme"}
    assert np.isfinite(out.transform.matrix).all()


def test_unknown_option_is_a_user_error():
    with pytest.raises(mibench.UserError, match="has no option 'sigma'"):
        mibench.method("nmi", sigma=1.0)


def test_direct_calls_use_the_method_specs_estimator_defaults(canvas):
    """The nmi method's factory called directly must behave as ``mibench run --methods nmi``:
    the method's cubic window, not the estimator's gradient-free box default."""
    from mibench.registry import Registry

    fixed, moving = make_pair(canvas, TRUE_T)
    direct = Registry(entry_points=False).get("method", "nmi").load()(fixed, moving,
                                                                      iterations=10)
    via_api = mibench.method("nmi", iterations=10, device="cpu")(fixed, moving)
    assert not np.allclose(direct.transform.matrix, np.eye(3))
    assert np.allclose(direct.transform.matrix, via_api.transform.matrix, atol=1e-6)
