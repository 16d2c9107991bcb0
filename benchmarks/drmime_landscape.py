"""How wide is DRMIME's basin? The MINE bound at the true transform and at displaced ones.

For each synthetic pair, a fresh statistics network is trained (DRMIME's network, sampling,
pyramid and learning rate) with the transform *held fixed* at: the truth, the truth displaced
by 2 and 5 px (along x), and the identity (the start of a registration). The DV bound averaged
over the last 50 of ``--steps`` steps is printed per transform, next to a histogram MI (``mmi``,
Mattes, 32 bins) of the full-resolution overlap at the same transforms. A similarity whose value
at +5 px is no higher than at the identity gives an optimiser starting at the identity no slope
to follow: that is the capture range.

    python benchmarks/drmime_landscape.py --pairs 8 --ids histology-001,fundus-000

Deterministic on CPU (seeded); one thread.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from mibench.datasets.synthetic import load_dataset
from mibench.estimators.histogram import mmi
from mibench.estimators.mine import StatisticsNetwork, make_generator
from mibench.methods import drmime as D
from mibench.methods.inputs import prepare_images
from mibench.methods.transform_models import pixel_to_normalised, warp_normalised
from mibench.tensors import image_to_tensor


def displaced(truth: np.ndarray, dx: float) -> np.ndarray:
    """The true fixed -> moving transform applied after a shift of the fixed frame by dx px."""
    shift = np.eye(3)
    shift[0, 2] = dx
    return truth @ shift


def trained_bound(levels, matrix, steps: int, lr: float, seed: int) -> np.ndarray:
    """Per-level DV bounds (nats) of a network trained with the transform held at ``matrix``."""
    gen = make_generator(torch.device("cpu"), seed)
    net = StatisticsNetwork(2 * levels[0].fixed_values.shape[1], 100, generator=gen)
    opt = torch.optim.Adam(net.parameters(), lr=lr, amsgrad=True)
    history = []
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        bounds = D._level_bounds(net, levels, [matrix] * len(levels), gen, stable=True,
                                 averages=None)
        (-bounds.mean()).backward()
        opt.step()
        history.append(bounds.detach())
    return torch.stack(history[-50:]).mean(0).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=8, help="synthetic dataset size")
    parser.add_argument("--ids", default="histology-001,histology-003,fundus-000")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--lr", type=float, default=1e-2, help="network learning rate (fire)")
    args = parser.parse_args()
    torch.set_num_threads(1)

    ds = load_dataset(None, pairs=args.pairs, size=args.size)
    print("pair            transform    DV bound (mean over levels)  finest level   mmi (nats)")
    for pid in args.ids.split(","):
        pair = ds.load(pid)
        truth = np.asarray(pair.meta["true_transform"])
        fixed, moving = prepare_images(image_to_tensor(pair.fixed), image_to_tensor(pair.moving))
        shape = tuple(fixed.shape[-2:])
        levels = D._prepare_levels(fixed, moving, None, None, levels=6, min_size=32, blur=1.0,
                                   sampling="random", fraction=0.1, canny_low=0.0,
                                   canny_high=10.0, gen=make_generator(fixed.device, 0))
        candidates = {"truth": truth, "truth+2px": displaced(truth, 2.0),
                      "truth+5px": displaced(truth, 5.0), "identity": np.eye(3)}
        for name, pixel in candidates.items():
            h = torch.tensor(pixel_to_normalised(pixel, shape, shape), dtype=torch.float32)
            bounds = trained_bound(levels, h, args.steps, args.lr, seed=1)
            warped = warp_normalised(torch.cat([moving, torch.ones_like(moving)], 1), h, shape)
            inside = warped[:, 1:] >= 0.999
            hist = float(mmi(fixed, warped[:, :1], mask=inside, bins=32)[0])
            print(f"{pid:15s} {name:11s} {bounds.mean():27.4f}  {bounds[0]:12.4f} {hist:12.4f}",
                  flush=True)


if __name__ == "__main__":
    main()
