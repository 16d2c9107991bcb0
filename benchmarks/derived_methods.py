"""Accuracy and time of the derived ``jhmi`` method with and without a gradient (issue 18).

The same hard-count-capable estimator, ``jhmi``, registered two ways on the synthetic fundus
pairs (``mibench.dataset("synthetic", families="fundus")``, multimodal, medium difficulty):

- **powell**: ``kernel=box`` (hard counts, the plug-in MI, no gradient; no histogram
  smoothing), so the derived method takes the derivative-free engine (Powell), coarse to fine
  from 64 px (``multires=coarse-to-fine, min_size=64``);
- **adam**: the method's defaults (linear Parzen window, ITK's smoothing), the gradient engine.

For each pair: the median landmark error (px, fixed frame) and the registration time (s, one
torch thread, in-process). Prints one row per pair and method, then the median over pairs of the
per-pair median error and the mean time per pair.

Usage::

    python benchmarks/derived_methods.py [--pairs 8] [--size 256] [--threads 1]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

import mibench

CONFIGS = {
    "powell": {"kernel": "box", "smoothing_variance": 0.0, "multires": "coarse-to-fine",
               "min_size": 64},
    "adam": {},
}


def median_error(transform, pair) -> float:
    """Median landmark error (px) of ``transform`` (fixed px -> moving px) on ``pair``."""
    mapped = transform.moving_to_fixed(pair.moving_landmarks)
    return float(np.median(np.linalg.norm(mapped - pair.fixed_landmarks, axis=1)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    ds = mibench.dataset("synthetic", pairs=args.pairs, size=args.size, families="fundus")
    methods = {name: mibench.method("jhmi", device="cpu", **opts)
               for name, opts in CONFIGS.items()}
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in CONFIGS}
    for info in ds.pairs():
        pair = ds.load(info.id)
        initial = float(np.median(np.linalg.norm(pair.moving_landmarks - pair.fixed_landmarks,
                                                 axis=1)))
        for name, method in methods.items():
            start = time.perf_counter()
            out = method(pair.fixed, pair.moving, fixed_mask=pair.fixed_mask,
                         moving_mask=pair.moving_mask, seed=0)
            seconds = time.perf_counter() - start
            error = median_error(out.transform, pair)
            results[name].append((error, seconds))
            print(f"{info.id}  {name:6s}  initial {initial:6.2f} px  median error {error:7.3f} px"
                  f"  {seconds:5.2f} s  ({out.info['optimiser']})", flush=True)
    for name, rows in results.items():
        errors, times = np.array(rows).T
        print(f"{name:6s}: median over pairs {np.median(errors):.3f} px, "
              f"{np.sum(errors <= 1.0)}/{len(errors)} pairs <= 1 px, "
              f"{np.mean(times):.2f} s per pair")


if __name__ == "__main__":
    main()
