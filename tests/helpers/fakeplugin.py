"""A plugin registered at test time (``--plugin helpers.fakeplugin``): a tiny dataset with a known
transform, a method that returns it, and methods that fail in every way the runner must survive."""

from __future__ import annotations

import os
import time

import numpy as np

from mibench import DatasetSpec, MethodSpec, Pair, PairInfo, Param, Requirement, hookimpl
from mibench.transform import MatrixTransform


def true_matrix(index: int) -> np.ndarray:
    """Fixed -> moving pixel transform of toy pair ``index``: a shift and a small rotation."""
    angle = np.deg2rad(3.0 * (index + 1))
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 2.0 + index], [s, c, -1.5], [0, 0, 1]])


class ToyDataset:
    def __init__(self, n: int, size: int):
        self.n, self.size = n, size

    def pairs(self):
        return [PairInfo(f"toy-{i}", {"group": "a" if i % 2 else "b"}) for i in range(self.n)]

    def load(self, pair_id: str) -> Pair:
        i = int(pair_id.split("-")[1])
        rng = np.random.default_rng(i)
        fixed = rng.random((self.size, self.size)).astype(np.float32)
        t = MatrixTransform(true_matrix(i))
        moving = MatrixTransform(np.linalg.inv(t.matrix)).warp(fixed, fixed.shape)
        f_lm = rng.uniform(8, self.size - 8, size=(10, 2))
        return Pair(pair_id, fixed, moving.astype(np.float32), f_lm, t.fixed_to_moving(f_lm),
                    native_scale=2.0, meta={"group": "a" if i % 2 else "b"})


def load_toy(data_dir, *, pairs=3, size=32):
    return ToyDataset(pairs, size)


def oracle(fixed, moving, *, fixed_mask=None, moving_mask=None, seed=0):
    """Returns the true transform, recovered from the pair's index hidden in the fixed image."""
    for i in range(20):
        rng = np.random.default_rng(i)
        ref = rng.random(tuple(fixed.shape[-2:])).astype(np.float32)
        if np.allclose(ref, fixed[0, 0].cpu().numpy()):
            return MatrixTransform(true_matrix(i))
    raise RuntimeError("unknown pair")


def raises(fixed, moving, *, fixed_mask=None, moving_mask=None, seed=0):
    raise ValueError("this method always fails")


def returns_nan(fixed, moving, *, fixed_mask=None, moving_mask=None, seed=0):
    return MatrixTransform(np.full((3, 3), np.nan))


def sleeps(fixed, moving, *, fixed_mask=None, moving_mask=None, seed=0, seconds=60.0):
    mark = os.environ.get("FAKEPLUGIN_MARK")
    if mark:  # tell a test that this process is inside the method
        open(os.path.join(mark, str(os.getpid())), "w").close()
    time.sleep(seconds)
    return MatrixTransform.identity()


def crashes(fixed, moving, *, fixed_mask=None, moving_mask=None, seed=0):
    os._exit(3)  # a hard crash: no exception, no cleanup


OOM_TEXT = ("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of "
            "7.79 GiB of which 1.02 GiB is free.")


def runs_out_of_memory(fixed, moving, *, fixed_mask=None, moving_mask=None, seed=0):
    """Raises the error torch raises when a CUDA allocation fails (simulated: works on CPU)."""
    import torch

    raise torch.cuda.OutOfMemoryError(OOM_TEXT)


def noisy(fixed, moving, *, fixed_mask=None, moving_mask=None, seed=0, delay=0.0):
    """Identity plus a seeded random shift; optionally slow (for the kill-and-resume test)."""
    import torch

    time.sleep(delay)
    shift = torch.rand(2).numpy() * 4
    return MatrixTransform([[1, 0, shift[0]], [0, 1, shift[1]], [0, 0, 1]])


def computes(fixed, moving, *, fixed_mask=None, moving_mask=None, seed=0, work=4_000_000):
    """The identity after :func:`helpers.load.work` (``work`` loop steps of CPU)."""
    from helpers.load import work as compute

    compute(work)
    return MatrixTransform(np.eye(3))


def _slow_start_up() -> None:
    time.sleep(1.0)
    os.environ["FAKEPLUGIN_WARMED_UP"] = "1"


def warmed(fixed, moving, *, fixed_mask=None, moving_mask=None, seed=0):
    """Identity, after a 1 s ``warm_up`` that the runner must keep out of the timing."""
    if os.environ.get("FAKEPLUGIN_WARMED_UP") != "1":
        raise RuntimeError("warm_up was not called before the registration")
    return MatrixTransform.identity()


warmed.warm_up = _slow_start_up


@hookimpl
def mibench_datasets():
    return [DatasetSpec("toy", "Random 32x32 pairs with a known rigid transform.",
                        "helpers.fakeplugin:load_toy",
                        params=(Param("pairs", 3), Param("size", 32)),
                        needs_data_dir=False),
            DatasetSpec("toy-on-disk", "Like toy, but wants a data directory.",
                        "helpers.fakeplugin:load_toy", needs_data_dir=True,
                        layout="any directory")]


@hookimpl
def mibench_methods():
    return [
        MethodSpec("oracle", "Returns the true transform.", "helpers.fakeplugin:oracle"),
        MethodSpec("raises", "Always raises.", "helpers.fakeplugin:raises"),
        MethodSpec("nan", "Returns a NaN matrix.", "helpers.fakeplugin:returns_nan"),
        MethodSpec("sleeps", "Sleeps.", "helpers.fakeplugin:sleeps",
                   params=(Param("seconds", 60.0),)),
        MethodSpec("crashes", "Exits the process.", "helpers.fakeplugin:crashes"),
        MethodSpec("oom", "Runs out of CUDA memory.", "helpers.fakeplugin:runs_out_of_memory"),
        MethodSpec("warmed", "Identity after a slow warm-up.", "helpers.fakeplugin:warmed"),
        MethodSpec("noisy", "Seeded random shift.", "helpers.fakeplugin:noisy",
                   params=(Param("delay", 0.0),)),
        MethodSpec("computes", "Identity after fixed CPU work.", "helpers.fakeplugin:computes",
                   params=(Param("work", 4_000_000, type=int, ge=0),), uses_seed=False),
        MethodSpec("needs-missing", "Needs a package that does not exist.",
                   "helpers.fakeplugin:raises",
                   requires=(Requirement(module="surely_not_installed_pkg",
                                         hint="pip install surely-not-installed-pkg"),)),
    ]
