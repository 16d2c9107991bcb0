"""Time and accuracy of the 3-D methods on the ``brain`` pairs (issue 21).

For each 2 mm brain pair (``mibench.datasets.brain``: fixed MNI152 T1, moving a synthetic T2- or
PD-like contrast under a known affine, about 91 x 109 x 91 voxels) and each method (``identity``,
``nmi``, ``mmi``, ``drmime`` and, when SimpleITK is importable, ``sitk-mmi``), with the methods'
default options: the median landmark error (TRE, mm: voxel error x 2 mm, the fixed and moving
volumes share the template's grid) and the registration time (s, in-process, ``--threads``
torch threads). The methods are called as a run calls them: ``(1, 1, D, H, W)`` float32
tensors, the pair's masks and both geometries.

Prints one row per pair and method, then per method the median over pairs of the per-pair
median TRE, the mean time per pair and its ratio to ``sitk-mmi``'s mean time measured in the same
process (the reference), and finally the process's peak resident memory (the largest over all
methods, as they run one after the other).

Usage::

    python benchmarks/volumes.py [--pairs 4] [--threads 2] [--methods identity,nmi,mmi,drmime]
"""

from __future__ import annotations

import argparse
import importlib.util
import resource
import sys
import time

import numpy as np
import torch

from mibench.registry import Registry

METHODS = ("identity", "nmi", "mmi", "drmime")
REFERENCE = "sitk-mmi"
VOXEL_MM = 2.0


def as_tensor(array, dtype=torch.float32):
    """A numpy ``(D, H, W)`` array as ``(1, 1, D, H, W)``."""
    return torch.from_numpy(np.ascontiguousarray(array)).to(dtype)[None, None]


def median_tre_mm(transform, pair) -> float:
    """Median landmark error (mm) of ``transform`` (fixed voxel -> moving voxel)."""
    mapped = transform.fixed_to_moving(pair.fixed_landmarks)
    return float(np.median(np.linalg.norm(mapped - pair.moving_landmarks, axis=1))) * VOXEL_MM


def run_method(registry: Registry, name: str, pair, seed: int = 0):
    """Register ``pair`` with method ``name`` at its default options: (transform, seconds)."""
    spec = registry.get("method", name)
    fn = spec.load()
    options = spec.resolve({})
    masks = {key: None if getattr(pair, key) is None else as_tensor(getattr(pair, key), torch.bool)
             for key in ("fixed_mask", "moving_mask")}
    fixed, moving = as_tensor(pair.fixed), as_tensor(pair.moving)
    start = time.perf_counter()
    out = fn(fixed, moving, seed=seed, fixed_geometry=pair.fixed_geometry,
             moving_geometry=pair.moving_geometry, **masks, **options)
    seconds = time.perf_counter() - start
    return getattr(out, "transform", out), seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--methods", default=",".join(METHODS))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from mibench.datasets import brain

    methods = [m for m in args.methods.split(",") if m]
    if importlib.util.find_spec("SimpleITK") is not None:
        methods.append(REFERENCE)
    else:
        print(f"{REFERENCE}: unavailable (SimpleITK is not importable); no ratios")
    registry = Registry(entry_points=False)
    ds = brain.load_dataset(pairs=args.pairs)
    tre: dict[str, list[float]] = {m: [] for m in methods}
    seconds: dict[str, list[float]] = {m: [] for m in methods}
    print(f"{'pair':8s} {'method':10s} {'TRE mm':>8s} {'time s':>8s}")
    for info in ds.pairs():
        pair = ds.load(info.id)
        for name in methods:
            transform, dt = run_method(registry, name, pair)
            tre[name].append(median_tre_mm(transform, pair))
            seconds[name].append(dt)
            print(f"{info.id:8s} {name:10s} {tre[name][-1]:8.3f} {dt:8.1f}", flush=True)
    ref = float(np.mean(seconds[REFERENCE])) if REFERENCE in seconds else None
    print(f"\n{'method':10s} {'median TRE mm':>14s} {'mean s':>8s} {'x sitk-mmi':>11s}")
    for name in methods:
        mean = float(np.mean(seconds[name]))
        ratio = f"{mean / ref:11.2f}" if ref else f"{'-':>11s}"
        print(f"{name:10s} {np.median(tre[name]):14.3f} {mean:8.1f} {ratio}")
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\npeak resident memory of the process: {peak_mb:.0f} MB; torch threads "
          f"{args.threads}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
