"""Accuracy, folding and time of the deformable methods on the synthetic elastic pairs (issue 22).

Each ``synthetic`` pair with ``transform=elastic`` is a random affine followed by a smooth random
B-spline displacement (``elastic_amplitude`` px on an ``elastic_spacing`` px grid), with exact
landmarks. For each pair and method (``nmi`` and ``mmi`` affine and with ``transform=bspline``,
``sitk-bspline`` and ``elastix-bspline`` when their toolboxes import), called as a run calls
them (``mibench.method``, the pair's masks): the median landmark error (px), the share of the
fixed mask where the Jacobian determinant is <= 0 (folding) and the registration time (s,
``--threads`` torch threads; the toolboxes run on one thread).

Prints one row per pair and method, then per method: the median over pairs of the per-pair
median error, the median over all landmarks, the largest folding, the mean time per pair and its
ratio to ``elastix-bspline``'s mean time measured in the same process (the reference; absent
without itk-elastix). The best affine fit of the true mapping over the fixed mask gives the
"best affine" row: the floor of any affine method.

``--write-cover DIR`` instead writes the pairs as a BIRL cover table (8-bit PNG images,
``,X,Y`` landmark CSVs, ``DIR/cover.csv``; no masks: a cover table has none), so that a whole
run and its ANHIR-protocol report can be made of them::

    python benchmarks/deformable.py --write-cover /tmp/elastic --family histology --pairs 8
    mibench run --dataset cover --data-dir /tmp/elastic -o table=cover.csv \
        --methods "nmi,nmi[transform=bspline],elastix-bspline"

Usage::

    python benchmarks/deformable.py [--size 256] [--pairs 8] [--threads 2] [--methods ...]
    python benchmarks/deformable.py --size 512 --pairs 1 --methods "nmi[transform=bspline]"
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

import mibench
from mibench.io import write_points_csv
from mibench.metrics import landmark_errors
from mibench.registration import deformation_metrics
from mibench.registry import Registry
from mibench.transform import MatrixTransform, transform_from_dict
from mibench.variants import parse_variant

METHODS = ("nmi", "nmi[transform=bspline]", "mmi", "mmi[transform=bspline]", "sitk-bspline",
           "elastix-bspline")
REFERENCE = "elastix-bspline"


def best_affine_errors(pair) -> np.ndarray:
    """Landmark errors (px) of the least-squares affine fit of the true mapping, sampled every
    4 px over the fixed mask."""
    truth = transform_from_dict(pair.meta["true_deformation"])
    h, w = np.asarray(pair.fixed).shape[:2]
    ys, xs = np.mgrid[0:h:4, 0:w:4]
    pts = np.stack([xs.ravel(), ys.ravel()], 1).astype(float)
    if pair.fixed_mask is not None:
        pts = pts[np.asarray(pair.fixed_mask)[ys.ravel(), xs.ravel()]]
    design = np.c_[pts, np.ones(len(pts))]
    solution, *_ = np.linalg.lstsq(design, truth.fixed_to_moving(pts), rcond=None)
    matrix = np.eye(3)
    matrix[:2] = solution.T
    return landmark_errors(MatrixTransform(matrix), pair.fixed_landmarks,
                           pair.moving_landmarks)


def available(name: str) -> bool:
    """Whether the method of a variant name can run here (its toolbox imports)."""
    return Registry().get("method", parse_variant(name)[0]).unavailable_reason() is None


def write_cover(folder: Path, data) -> Path:
    """Write every pair of ``data`` into ``folder`` as a BIRL cover table; returns its path."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    lines = ["Target image,Source image,Target landmarks,Source landmarks"]
    for info in data.pairs():
        pair = data.load(info.id)
        names = []
        for role, image, points in (("fixed", pair.fixed, pair.fixed_landmarks),
                                    ("moving", pair.moving, pair.moving_landmarks)):
            grey = np.clip(np.asarray(image, np.float64), 0, 1)
            Image.fromarray(np.round(grey * 255).astype(np.uint8)).save(
                folder / f"{info.id}-{role}.png")
            write_points_csv(folder / f"{info.id}-{role}.csv", points)
            names.append(f"{info.id}-{role}")
        lines.append(f"{names[0]}.png,{names[1]}.png,{names[0]}.csv,{names[1]}.csv")
    table = folder / "cover.csv"
    table.write_text("\n".join(lines) + "\n")
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--family", default="fundus,histology",
                        help="synthetic families (comma list)")
    parser.add_argument("--write-cover", type=Path, metavar="DIR",
                        help="write the pairs as a cover table in DIR and stop")
    args = parser.parse_args()
    data = mibench.dataset("synthetic", transform="elastic", size=args.size, pairs=args.pairs,
                           families=args.family)
    if args.write_cover:
        print(write_cover(args.write_cover, data))
        return
    torch.set_num_threads(args.threads)
    names = [m for m in args.methods.split(",") if available(m)]
    methods = {}
    for name in names:
        base, options = parse_variant(name)
        methods[name] = mibench.method(base, device="cpu", **options)
    rows: dict[str, list[tuple[float, np.ndarray, float, float]]] = {n: [] for n in names}
    floor = []
    print(f"{'pair':14s} {'method':26s} {'median px':>9s} {'max px':>8s} {'folding %':>9s} "
          f"{'time s':>7s}")
    for info in data.pairs():
        pair = data.load(info.id)
        floor.append(best_affine_errors(pair))
        print(f"{info.id:14s} {'(best affine)':26s} {np.median(floor[-1]):9.2f} "
              f"{floor[-1].max():8.2f}")
        for name, method in methods.items():
            start = time.perf_counter()
            out = method(pair.fixed, pair.moving, fixed_mask=pair.fixed_mask,
                         moving_mask=pair.moving_mask)
            seconds = time.perf_counter() - start
            errors = landmark_errors(out.transform, pair.fixed_landmarks, pair.moving_landmarks)
            # As a run's record has it (none for a matrix, which does not fold).
            folding = (deformation_metrics(out.transform, pair) or {"folding": 0.0})["folding"]
            rows[name].append((float(np.median(errors)), errors, folding, seconds))
            print(f"{info.id:14s} {name:26s} {np.median(errors):9.2f} {np.nanmax(errors):8.2f} "
                  f"{100 * folding:9.4f} {seconds:7.1f}", flush=True)
    reference = (np.mean([r[3] for r in rows[REFERENCE]]) if rows.get(REFERENCE) else None)
    print(f"\n{args.size} x {args.size}, {args.pairs} pairs, {args.threads} torch threads")
    print(f"{'method':26s} {'median of pair medians':>22s} {'pooled median':>13s} "
          f"{'max folding %':>13s} {'mean s':>7s} {'/ ' + REFERENCE:>18s}")
    pooled = np.concatenate(floor)
    print(f"{'(best affine)':26s} {np.median([np.median(f) for f in floor]):22.3f} "
          f"{np.median(pooled):13.3f}")
    for name, results in rows.items():
        medians = [r[0] for r in results]
        errors = np.concatenate([r[1] for r in results])
        mean_s = np.mean([r[3] for r in results])
        ratio = f"{mean_s / reference:18.2f}" if reference else f"{'-':>18s}"
        print(f"{name:26s} {np.median(medians):22.3f} {np.nanmedian(errors):13.3f} "
              f"{100 * max(r[2] for r in results):13.4f} {mean_s:7.1f} {ratio}")


if __name__ == "__main__":
    main()
