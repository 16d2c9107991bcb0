"""The ``drmime`` and ``drmime-perspective`` methods: recovery, determinism, inputs, options.

Kept fast (small images, few iterations); the full-size recovery numbers (fire preset, 500
iterations, 256 px synthetic pairs) are measured outside the test suite.
"""

import numpy as np
import pytest
import torch

import mibench
from mibench.estimators import mine as mine_module
from mibench.methods import drmime as drmime_module
from mibench.methods import mibench_methods
from mibench.methods.drmime import PRESETS, drmime, drmime_perspective, resolve_options
from mibench.metrics import landmark_errors
from mibench.tensors import image_to_tensor, mask_to_tensor
from mibench.transform import RegistrationOutput

FAST = {"iterations": 20}


@pytest.fixture(scope="module")
def fundus_pair():
    """A 128 px multimodal fundus pair (non-monotonic intensity map, bias field, noise)."""
    ds = mibench.dataset("synthetic", size=128, families="fundus", pairs=5)
    return ds.load("fundus-004")


def tensors(pair):
    return dict(fixed=image_to_tensor(pair.fixed), moving=image_to_tensor(pair.moving),
                fixed_mask=mask_to_tensor(pair.fixed_mask),
                moving_mask=mask_to_tensor(pair.moving_mask))


def test_recovers_multimodal_fundus(fundus_pair):
    """150 steps with a faster transform learning rate (the full 500-step fire preset is
    measured separately); the initial median error is ~10 px."""
    p = fundus_pair
    out = drmime(**tensors(p), iterations=150, lr_transform=5e-3)
    assert isinstance(out, RegistrationOutput)
    initial = np.median(landmark_errors(None, p.fixed_landmarks, p.moving_landmarks))
    error = np.median(landmark_errors(out.transform, p.fixed_landmarks, p.moving_landmarks))
    assert initial > 8 and error < 2.0, (initial, error)
    info = out.info
    assert info["levels"] == 3 and len(info["samples"]) == 3 and len(info["mi_levels"]) == 3
    assert info["iterations"] == 150 and info["preset"] == "fire"
    assert info["lr_transform"] == 5e-3 and info["lr_net"] == PRESETS["fire"]["lr_net"]
    assert np.isfinite(info["final_loss"]) and info["final_loss"] < 0
    assert 0.8 < info["overlap"] <= 1.0
    # 10 % of the fixed mask at the finest level.
    assert info["samples"][0] == round(0.1 * p.fixed_mask.sum())


def test_deterministic(fundus_pair):
    a = drmime(**tensors(fundus_pair), seed=5, **FAST)
    b = drmime(**tensors(fundus_pair), seed=5, **FAST)
    c = drmime(**tensors(fundus_pair), seed=6, **FAST)
    np.testing.assert_array_equal(a.transform.matrix, b.transform.matrix)
    assert a.info == b.info
    assert not np.array_equal(a.transform.matrix, c.transform.matrix)


def test_global_rng_untouched(fundus_pair):
    state = torch.get_rng_state()
    drmime(**tensors(fundus_pair), iterations=2)
    assert torch.equal(state, torch.get_rng_state())


def test_sizes_and_channels():
    gen = torch.Generator().manual_seed(0)
    fixed = torch.rand(1, 3, 96, 120, generator=gen)
    moving = torch.rand(1, 3, 110, 90, generator=gen)
    out = drmime(fixed, moving, **FAST)  # RGB: the critic sees 6 inputs
    m = out.transform.matrix
    assert m.shape == (3, 3) and np.isfinite(m).all()
    # Zero parameters are the pixel identity even for different sizes: a few steps stay near it.
    np.testing.assert_allclose(drmime(fixed, moving, iterations=0).transform.matrix, np.eye(3),
                               atol=1e-6)
    out = drmime(fixed, moving[:, :1], **FAST)  # RGB vs grey: both become grey
    assert np.isfinite(out.transform.matrix).all()


def test_degenerate_inputs_are_finite():
    const = torch.full((1, 1, 64, 64), 0.5)
    out = drmime(const, const, **FAST)
    np.testing.assert_allclose(out.transform.matrix, np.eye(3), atol=1e-2)
    empty = torch.zeros(1, 1, 64, 64, dtype=torch.bool)
    out = drmime(torch.rand(1, 1, 64, 64), torch.rand(1, 1, 64, 64), fixed_mask=empty, **FAST)
    assert np.isfinite(out.transform.matrix).all() and out.info["samples"][0] == 0


def test_non_finite_loss_raises(fundus_pair, monkeypatch):
    nan = lambda *a, **k: torch.tensor(float("nan"))  # noqa: E731
    monkeypatch.setattr(mine_module, "dv_bound", nan)  # under dv_bounds
    with pytest.raises(RuntimeError, match="nan"):
        drmime(**tensors(fundus_pair), iterations=3)


def test_perspective_and_edges(fundus_pair):
    out = drmime_perspective(**tensors(fundus_pair), sampling="edges", **FAST)
    m = out.transform.matrix
    assert m.shape == (3, 3) and np.isfinite(m).all() and m[2, 2] == pytest.approx(1.0)
    assert out.info["transform"] == "perspective" and out.info["sampling"] == "edges"
    assert np.abs(m[2, :2]).max() > 0  # the projective row is free
    # Edge samples: a (dilated) subset of the fixed mask, fewer than all its pixels.
    assert 0 < out.info["samples"][0] < fundus_pair.fixed_mask.sum()
    with pytest.raises(ValueError):
        drmime_perspective(**tensors(fundus_pair), transform="affine")


def test_options():
    assert resolve_options("anhir", lr_net=None, iterations=7)["iterations"] == 7
    assert resolve_options("anhir")["lr_transform"] == 5e-3
    x = torch.rand(1, 1, 64, 64)
    with pytest.raises(ValueError):
        drmime(x, x, preset="mnist")
    with pytest.raises(ValueError):
        drmime(x, x, sampling="grid")
    with pytest.raises(ValueError):
        drmime(x, x, transform="similarity")
    out = drmime(x, x, preset="anhir", ema=0.9, stable_lme=False, iterations=3)
    assert out.info["lr_offset"] == 1e-4 and np.isfinite(out.transform.matrix).all()


def test_method_specs():
    specs = {s.name: s for s in mibench_methods()}
    assert specs["drmime"].load() is drmime
    assert specs["drmime-perspective"].load() is drmime_perspective
    opts = specs["drmime"].resolve({"lr_net": "0.02", "iterations": "10", "preset": "anhir"},
                                   from_text=True)
    assert opts["lr_net"] == 0.02 and opts["iterations"] == 10 and opts["lr_offset"] is None
    assert "transform" not in specs["drmime-perspective"].defaults()
    # The preset table is written once: the help text shows the values the method uses.
    assert specs["drmime"].param("preset").choices == tuple(PRESETS)
    assert ("fire (500, 1e-2, 1e-3, 1e-5, 10), anhir (500, 1e-3, 5e-3, 1e-4, 30)"
            in specs["drmime"].param("preset").help)
    # The mine building blocks are the ones the method uses.
    assert drmime_module.StatisticsNetwork is mine_module.StatisticsNetwork


def test_exact_matrix_exponential_option(fundus_pair):
    """``exp="matrix_exp"`` runs the same optimisation with the exact exponential. The two
    exponentials differ by float rounding for small parameters, which the joint training
    amplifies a little, so the results agree to a fraction of a pixel, not bit for bit."""
    taylor = drmime(**tensors(fundus_pair), seed=1, **FAST)
    exact = drmime(**tensors(fundus_pair), seed=1, exp="matrix_exp", **FAST)
    assert exact.info["exp"] == "matrix_exp" and taylor.info["exp"] == "taylor"
    pts = fundus_pair.fixed_landmarks
    gap = np.linalg.norm(exact.transform.fixed_to_moving(pts)
                         - taylor.transform.fixed_to_moving(pts), axis=1)
    assert gap.max() < 0.25, gap
    # ... and the option really switched the computation (not bit-identical).
    assert not np.array_equal(exact.transform.matrix, taylor.transform.matrix)
    with pytest.raises(ValueError, match="exp must be one of"):
        drmime(**tensors(fundus_pair), exp="pade", **FAST)
