"""The compiled entropy pass of CMIF (``mibench.estimators.cmif_compiled``): the same values as
the eager pass, the fallback when it cannot compile, and the ``entropy_pass`` option.

The kernels compile once per process with dynamic shapes: every case here shares one
compilation of the row kernel and one per mask case of the finishing kernel (two templates per
call throughout, so the size-1 specialisation is not compiled as well)."""

import warnings

import numpy as np
import pytest
import torch

import mibench
from mibench.estimators import cmif as C
from mibench.estimators import cmif_compiled as CC
from mibench.registry import Registry


def random_labels(rng, shape, levels, hole):
    lab = torch.from_numpy(rng.integers(0, levels, shape))
    if hole:
        lab[torch.from_numpy(rng.random(shape) < hole)] = -1
    return lab


def both_passes(fixed_shape, moving_shape, ka, kb, hole_a, hole_b, seed, shifts="full"):
    rng = np.random.default_rng(seed)
    la = random_labels(rng, (1,) + fixed_shape, ka, hole_a)
    lb = random_labels(rng, (1, 2) + moving_shape, kb, hole_b)
    grid = C.shift_grid(fixed_shape, moving_shape, shifts)
    side = C.FixedSpectra(la, ka, grid, moving_shape, torch.float32)
    return [C.cmif_from_labels(side, lb, kb, min_overlap=0.0, entropy_pass=p)
            for p in ("compiled", "eager")]


#: (fixed, moving) sizes, odd and even, and (K_A, K_B). The second one's map is as wide as its
#: FFT grid, so its counts are contiguous: another row kernel (slow run only).
SIZES = [pytest.param(((23, 30), (11, 14), 5, 4), id="odd-even"),
         pytest.param(((32, 27), (16, 9), 4, 6), id="even-odd", marks=pytest.mark.slow),
         pytest.param(((25, 25), (13, 18), 6, 6), id="odd-mixed")]


#: Each mask case compiles its own finishing kernel: the default run compiles two of them.
HOLES = [pytest.param((0.0, 0.0), id="no-masks"),
         pytest.param((0.2, 0.0), id="fixed-mask", marks=pytest.mark.slow),
         pytest.param((0.0, 0.3), id="moving-mask", marks=pytest.mark.slow),
         pytest.param((0.1, 0.2), id="both-masks")]


@pytest.mark.parametrize("holes", HOLES)
@pytest.mark.parametrize("size", SIZES)
def test_compiled_pass_equals_the_eager_pass(size, holes):
    fixed_shape, moving_shape, ka, kb = size
    with warnings.catch_warnings():
        warnings.simplefilter("error", CC.CompileFallbackWarning)
        fast, slow = both_passes(fixed_shape, moving_shape, ka, kb, *holes, seed=ka + kb)
    assert torch.equal(fast.overlap, slow.overlap)
    assert torch.equal(fast.valid, slow.valid)
    assert fast.value.dtype == slow.value.dtype == torch.float32
    assert torch.isfinite(fast.value).all()
    assert float((fast.value - slow.value).abs().max()) < 1e-6


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_compiled_pass_equals_the_eager_pass_on_cuda():
    """The Triton kernels: same overlaps, values within 1e-6 (the unsplit CUDA transforms)."""
    rng = np.random.default_rng(11)
    la = random_labels(rng, (1, 30, 27), 5, 0.1).cuda()
    lb = random_labels(rng, (1, 2, 14, 11), 4, 0.0).cuda()
    grid = C.shift_grid((30, 27), (14, 11), "full")
    side = C.FixedSpectra(la, 5, grid, (14, 11), torch.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CC.CompileFallbackWarning)
        fast, slow = [C.cmif_from_labels(side, lb, 4, min_overlap=0.0, entropy_pass=p)
                      for p in ("compiled", "eager")]
    assert torch.equal(fast.overlap, slow.overlap)
    assert float((fast.value - slow.value).abs().max()) < 1e-6


#: The fused kernel compiles once per number of rows: the masked case (K_A rows instead of
#: K_A - 1) only in the slow run.
FUSED_HOLES = [pytest.param((0.0, 0.0), id="no-masks"),
               pytest.param((0.1, 0.2), id="both-masks", marks=pytest.mark.slow)]


@pytest.mark.parametrize("holes", FUSED_HOLES)
def test_fused_pass_equals_the_eager_pass(monkeypatch, holes):
    """All rows in one fused kernel (taken at any size here): the same overlaps, values within
    1e-6 of the eager pass and equal to the row-by-row compiled pass."""
    monkeypatch.setattr(C, "FUSED_MIN_BYTES", 0)
    calls = []
    kernels = CC.kernels(torch.device("cpu"))
    original = kernels.fused

    def spy(*args):
        calls.append(len(args[0]))
        return original(*args)

    monkeypatch.setattr(kernels, "fused", spy)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CC.CompileFallbackWarning)
        fast, slow = both_passes((23, 30), (11, 14), 5, 4, *holes, seed=9)
    assert calls == [4 if holes[0] == 0.0 else 5]
    assert torch.equal(fast.overlap, slow.overlap)
    assert float((fast.value - slow.value).abs().max()) < 1e-6
    monkeypatch.setattr(C, "FUSED_MAX_BYTES", 0)  # the row-by-row kernels
    rows, _ = both_passes((23, 30), (11, 14), 5, 4, *holes, seed=9)
    assert len(calls) == 1
    assert float((fast.value - rows.value).abs().max()) < 1e-6


@pytest.mark.slow
def test_compiled_pass_in_chunks_and_level_groups(monkeypatch):
    """Small CPU FFT calls split the templates into chunks and the levels into groups: the
    compiled pass sums the groups' rows as the eager pass does."""
    monkeypatch.setattr(C, "CPU_FFT_BYTES", 1)  # one template per chunk, one level per call
    fast, slow = both_passes((21, 26), (12, 11), 4, 5, 0.0, 0.0, seed=7)
    assert torch.equal(fast.overlap, slow.overlap)
    assert float((fast.value - slow.value).abs().max()) < 1e-6


@pytest.fixture
def fresh_state(monkeypatch):
    """A process state with no failure and no eager time, restored afterwards (the compiled
    kernels of the other tests are kept)."""
    monkeypatch.setitem(CC._STATE, "failed", {})
    monkeypatch.setitem(CC._STATE, "eager_s", 0.0)


def test_without_a_compiler_the_eager_pass_runs_with_one_warning(monkeypatch, fresh_state):
    monkeypatch.setattr(CC, "compiler_missing", lambda device: "no C++ compiler (test)")
    with pytest.warns(CC.CompileFallbackWarning, match="no C.. compiler") as caught:
        fast, slow = both_passes((20, 22), (9, 10), 4, 4, 0.1, 0.0, seed=3)
        both_passes((20, 22), (9, 10), 4, 4, 0.1, 0.0, seed=4)
    assert len([w for w in caught if w.category is CC.CompileFallbackWarning]) == 1
    assert torch.equal(fast.value, slow.value) and torch.equal(fast.overlap, slow.overlap)


def test_a_failed_compilation_falls_back_once(monkeypatch, fresh_state):
    class Broken:
        def row(self, *args):
            raise RuntimeError("InductorError: the compiler crashed (test)\nmore lines")

        finish = fused = row

    monkeypatch.setattr(CC, "Kernels", Broken)
    monkeypatch.setitem(CC._STATE, "kernels", None)
    with pytest.warns(CC.CompileFallbackWarning, match="compiler crashed") as caught:
        fast, slow = both_passes((19, 24), (10, 7), 3, 5, 0.0, 0.0, seed=5)
        again, _ = both_passes((19, 24), (10, 7), 3, 5, 0.0, 0.0, seed=5)
    assert len([w for w in caught if w.category is CC.CompileFallbackWarning]) == 1
    assert torch.equal(fast.value, slow.value) and torch.equal(again.value, slow.value)


def test_auto_compiles_only_after_enough_eager_time(fresh_state):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert not CC.use_compiled("auto", cpu) and not CC.use_compiled("auto", cuda)
    assert CC.use_compiled("compiled", cpu) and not CC.use_compiled("eager", cpu)
    CC.note_eager(CC.AUTO_EAGER_SECONDS)
    assert CC.use_compiled("auto", cpu) and CC.use_compiled("auto", cuda)
    with pytest.raises(ValueError, match="entropy_pass"):
        CC.use_compiled("fast", cpu)


def test_auto_counts_its_eager_time(fresh_state):
    fixed = torch.rand(1, 1, 24, 24)
    C.cmif_map(fixed, fixed[..., 4:16, 2:13], levels=3, entropy_pass="eager")
    assert CC._STATE["eager_s"] == 0.0  # an explicit choice does not count
    C.cmif_map(fixed, fixed[..., 4:16, 2:13], levels=3)
    assert CC._STATE["eager_s"] > 0.0


def test_the_option_reaches_the_estimator_and_the_method(monkeypatch):
    specs = Registry(entry_points=False)
    for kind in ("estimator", "method"):
        param = {p.name: p for p in specs.specs(kind)["cmif"].params}["entropy_pass"]
        assert param.default == "auto" and param.choices == ("auto", "compiled", "eager")
    img = torch.rand(1, 1, 20, 20)
    with pytest.raises(ValueError, match="entropy_pass"):
        C.cmif(img, img, entropy_pass="fast")
    seen = []
    original = C.cmif_from_labels

    def spy(*args, **kwargs):
        seen.append(kwargs["entropy_pass"])
        return original(*args, **kwargs)

    monkeypatch.setattr(C, "cmif_from_labels", spy)
    method = mibench.method("cmif", device="cpu", entropy_pass="eager", max_angle=6.0,
                            angle_step=3.0, refine=0, subpixel=False)
    method(img.numpy()[0, 0], img.numpy()[0, 0])
    assert seen and set(seen) == {"eager"}
