"""Gradient registration (the ``ncc`` and ``mse`` methods, derived from their estimators)
recovers known transforms."""

import numpy as np
import pytest
import torch
from helpers.registration import FAST, MARGIN, SIZE, TRUE_T, errors, make_pair

from mibench.estimators import basic
from mibench.methods.derived import register_derived
from mibench.registry import Registry
from mibench.transform import MatrixTransform, RegistrationOutput

METHODS = Registry(entry_points=False).specs("method")
#: The factories of the derived methods, called directly (options left out take the spec's).
ncc, mse = METHODS["ncc"].load(), METHODS["mse"].load()


@pytest.mark.parametrize("method", [ncc, mse])
@pytest.mark.parametrize("multires", ["simultaneous", "coarse-to-fine"])
def test_recovers_known_affine(canvas, method, multires):
    fixed, moving = make_pair(canvas, TRUE_T)
    out = method(fixed, moving, multires=multires, **FAST)
    assert isinstance(out, RegistrationOutput)
    assert errors(MatrixTransform.identity(), TRUE_T).mean() > 5
    err = errors(out.transform, TRUE_T)
    assert err.max() < 0.25, err
    assert out.info["levels"] == 3
    assert out.info["iterations"] == (120 if multires == "simultaneous" else 360)
    assert np.isfinite(out.info["final_loss"])
    assert 0.8 < out.info["overlap"] <= 1.0


def test_black_border_with_moving_mask(canvas):
    """The moving image warped from the fixed one has a zero border: the moving mask keeps it
    out of the similarity, at every pyramid level."""
    fixed = torch.from_numpy(np.ascontiguousarray(
        canvas[MARGIN:MARGIN + SIZE, MARGIN:MARGIN + SIZE]))[None, None]
    warp = MatrixTransform(np.linalg.inv(TRUE_T))
    moving = warp.warp(fixed, (SIZE, SIZE))
    valid = warp.warp(torch.ones_like(fixed), (SIZE, SIZE)) > 0.999
    out = ncc(fixed, moving, moving_mask=valid, **FAST)
    assert errors(out.transform, TRUE_T).max() < 0.25


def test_different_sizes_and_channels(canvas):
    fixed, moving = make_pair(canvas, TRUE_T, moving_shape=(140, 120))
    out = ncc(fixed, moving, **FAST)
    assert errors(out.transform, TRUE_T).max() < 0.25
    # RGB fixed, grey moving: both are converted to grey.
    out = mse(fixed.expand(1, 3, -1, -1), moving, **FAST)
    assert errors(out.transform, TRUE_T).max() < 0.25


def test_fixed_mask_and_perspective(canvas):
    true_t = TRUE_T.copy()
    true_t[2, :2] = [2e-4, -1e-4]
    true_t = true_t / true_t[2, 2]
    fixed, moving = make_pair(canvas, true_t)
    mask = torch.ones_like(fixed, dtype=torch.bool)
    mask[..., :10, :] = False
    out = ncc(fixed, moving, fixed_mask=mask, transform="perspective",
                       iterations=200, levels=3)
    assert abs(out.transform.matrix[2, :2]).max() > 0
    assert errors(out.transform, true_t).max() < 0.25


def test_deterministic(canvas):
    fixed, moving = make_pair(canvas, TRUE_T)
    a = ncc(fixed, moving, seed=3, iterations=30, levels=2)
    b = ncc(fixed, moving, seed=3, iterations=30, levels=2)
    np.testing.assert_array_equal(a.transform.matrix, b.transform.matrix)
    assert a.info == b.info


def test_nan_loss_raises(canvas, monkeypatch):
    fixed, moving = make_pair(canvas, TRUE_T)
    monkeypatch.setattr(basic, "ncc", lambda f, m, mask=None: torch.full((f.shape[0],), np.nan))
    with pytest.raises(RuntimeError, match="nan"):
        ncc(fixed, moving, iterations=5, levels=2)


def test_bad_options(canvas):
    fixed, moving = make_pair(canvas, TRUE_T)
    with pytest.raises(ValueError):
        ncc(fixed, moving, multires="fine-to-coarse")
    with pytest.raises(ValueError):
        ncc(fixed, moving, transform="similarity")


def test_method_specs():
    assert {"identity", "ncc", "mse"} <= set(METHODS)
    for name in ("ncc", "mse"):
        spec = METHODS[name]
        assert spec.default
        assert spec.load().func is register_derived
        assert spec.load().keywords["estimator"].name == name
        opts = spec.resolve({"iterations": "50", "multires": "coarse-to-fine"}, from_text=True)
        assert opts["iterations"] == 50 and opts["multires"] == "coarse-to-fine"
        assert set(opts) == {"iterations", "levels", "lr", "transform", "multires", "min_size",
                             "schedule", "init"}
