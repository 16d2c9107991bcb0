"""The CUDA paths agree with the CPU: estimators (values and gradients), the CMIF map (counts
identical), and every built-in torch method recovers a known transform on the GPU.

Skipped where torch sees no CUDA device (CI has none); ``benchmarks/gpu_checks.sh`` runs this
module on a GPU machine together with the CUDA benchmarks.
"""

import numpy as np
import pytest
import torch
from helpers.registration import TRUE_T, errors, make_pair

import mibench
from mibench.estimators import cmif as cm

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")

# Estimators whose value does not depend on random numbers (mine draws its own samples, and
# CUDA's generator differs from the CPU's), with the options that make each differentiable.
DETERMINISTIC = {
    "mse": {}, "ncc": {}, "jhmi": {"kernel": "linear"}, "nmi": {"kernel": "cubic"},
    "mmi": {}, "kde-mi": {}, "softhist-mi": {},
}


def _pair(seed, shape=(2, 1, 37, 52)):
    gen = torch.Generator().manual_seed(seed)
    fixed = torch.rand(shape, generator=gen)
    moving = (0.6 * torch.sin(4 * fixed) ** 2 + 0.4 * torch.rand(shape, generator=gen))
    mask = torch.rand((shape[0], 1) + shape[2:], generator=gen) > 0.3
    return fixed, moving, mask


@pytest.mark.parametrize("name", sorted(DETERMINISTIC))
def test_estimators_match_cpu_with_gradients(name):
    fixed, moving, mask = _pair(1)
    est = mibench.estimator(name, **DETERMINISTIC[name])
    values, grads = [], []
    for device in ("cpu", "cuda"):
        m = moving.to(device).requires_grad_(True)
        value = est(fixed.to(device), m, mask.to(device))
        assert value.device.type == device and value.shape == (2,)
        value.sum().backward()
        values.append(value.detach().cpu())
        grads.append(m.grad.cpu())
    torch.testing.assert_close(values[1], values[0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-3, atol=1e-5)
    assert torch.isfinite(grads[1]).all()


def test_mine_runs_on_cuda_and_is_repeatable():
    fixed, moving, mask = _pair(2)
    est = mibench.estimator("mine", iterations=50, seed=3)
    a = est(fixed.cuda(), moving.cuda(), mask.cuda())
    b = est(fixed.cuda(), moving.cuda(), mask.cuda())
    assert a.device.type == "cuda" and torch.isfinite(a).all()
    # Same seed, same draws; CUDA's atomic adds in the backward pass may still make the two
    # trainings differ slightly (not bit for bit), so close rather than equal.
    torch.testing.assert_close(a, b, rtol=0.05, atol=0.02)


@pytest.mark.parametrize("shape_a, shape_b", [((45, 64), (31, 22)), ((64, 64), (64, 64))])
def test_cmif_map_counts_identical_on_cuda(shape_a, shape_b):
    gen = torch.Generator().manual_seed(4)
    # Grey values k / 5 (k = 0..5): equal-width quantisation into 6 levels puts each at least
    # a fifth of a cell from an edge, so float rounding on either device cannot move a pixel.
    fixed = torch.randint(0, 6, (1, 1) + shape_a, generator=gen) / 5.0
    moving = torch.randint(0, 6, (1, 1) + shape_b, generator=gen) / 5.0
    mask_b = torch.rand((1, 1) + shape_b, generator=gen) > 0.2
    out = [cm.cmif_map(fixed.to(d), moving.to(d), None, mask_b.to(d), levels=6,
                       quantisation="equal", min_overlap=0.3) for d in ("cpu", "cuda")]
    assert torch.equal(out[1].overlap.cpu(), out[0].overlap)
    assert torch.equal(out[1].valid.cpu(), out[0].valid)
    torch.testing.assert_close(out[1].value.cpu(), out[0].value, rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", ["ncc", "mse", "nmi", "mmi", "jhmi", "kde-mi", "softhist-mi"])
def test_gradient_methods_recover_a_known_affine_on_cuda(canvas, name):
    fixed, moving = make_pair(canvas, TRUE_T)
    if name not in ("ncc", "mse"):
        moving = torch.sin(3 * moving) ** 2  # multimodal, as tests/test_gradient_mi.py
    out = mibench.method(name, device="cuda", iterations=120, levels=3)(fixed, moving)
    # 0.25-0.5 px on the CPU (tests/test_gradient*.py); cuDNN's default TF32 convolutions
    # (the pyramid's blur) perturb the images at about 1e-3, hence the margin.
    assert errors(out.transform, TRUE_T).max() < 1.0


def test_drmime_and_cmif_methods_run_on_cuda(canvas):
    fixed, moving = make_pair(canvas, TRUE_T)
    out = mibench.method("drmime", device="cuda", iterations=60, levels=3)(fixed, moving)
    assert out.transform.is_valid and np.isfinite(out.transform.matrix).all()
    out = mibench.method("cmif", device="cuda", max_angle=10.0, angle_step=5.0)(fixed, moving)
    assert out.transform.is_valid
    assert errors(out.transform, TRUE_T).max() < 8  # rigid search of a similarity: scale left


def test_run_on_cuda_writes_records(tmp_path):
    df = mibench.run(methods="identity,ncc", limit=1, device="cuda", workers=0,
                     out=str(tmp_path / "run"), method_options={"ncc": {"iterations": 20}})
    assert len(df) == 2 and not df["error"].notna().any()
    from mibench.records import iter_records

    records = list(iter_records(tmp_path / "run"))
    assert all(r.device.startswith("cuda") and r.device_s is not None for r in records)
    # The CUDA allocator's peak is measured per task (ncc allocates its pyramid on the GPU).
    ncc = next(r for r in records if r.task.method == "ncc")
    assert ncc.peak_gpu_mb is not None and ncc.peak_gpu_mb > 0
    assert ncc.cpu_s is not None and ncc.peak_rss_mb > 0
