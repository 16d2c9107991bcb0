"""Gradient-based registration with any differentiable estimator (the derived methods' engine).

The transform model and multi-resolution scheme are DRMIME's (:mod:`.transform_models`,
:mod:`.pyramid`): parameters ``v`` (6 affine / 8 perspective, zeros = identity), the matrix
``H = expm(sum_i v_i B_i)`` acting on normalised coordinates, so that one ``H`` warps every level
of a Gaussian pyramid; Adam on ``v``. Only the similarity measure changes: these methods plug a
closed-form estimator (:mod:`mibench.estimators.basic`) where DRMIME trains a MINE network, so
they isolate the effect of the estimator.

Defaults (``iterations=200, levels=4, lr=0.02, schedule="cosine", multires="simultaneous",
min_size=32``) register the monomodal synthetic 256x256 pairs (``modality=none``, medium
difficulty) to ~0.01-0.05 px in about 2 s per pair on 2 CPU cores (coarse-to-fine: ~2.5 s, ~0 px);
see :func:`register_with_estimator`. On multimodal pairs NCC and MSE fail, as they should.

Volumes ``(1, C, D, H, W)`` take the same options: 3-D affine (12 parameters) or rigid (6) in
the fixed volume's physical frame (:mod:`.transform_models`), starting from the world identity
when both geometries are known (:mod:`.initial`), and 20,000 voxels per level and step
(:mod:`.objective`). On the ``brain`` pairs at 2 mm (91 x 109 x 91, 2 levels) ``nmi`` takes about
5 s per pair on one core (``benchmarks/volumes.py``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from mibench.errors import check_choice
from mibench.methods.inputs import prepare_images
from mibench.methods.objective import finish, pyramid_objective
from mibench.methods.options import MULTIRES, SCHEDULES
from mibench.tensors import FiniteWatch
from mibench.transform import RegistrationOutput


def _lr_factor(schedule: str, step: int, total: int, final_ratio: float = 0.02) -> float:
    if schedule == "constant" or total <= 1:
        return 1.0
    t = step / (total - 1)
    return final_ratio + (1 - final_ratio) * 0.5 * (1 + math.cos(math.pi * t))


def register_with_estimator(
    fixed: torch.Tensor,
    moving: torch.Tensor,
    *,
    estimator_fn: Callable[..., torch.Tensor],
    higher_is_better: bool,
    fixed_mask: torch.Tensor | None = None,
    moving_mask: torch.Tensor | None = None,
    seed: int = 0,
    transform: str = "affine",
    levels: int = 4,
    iterations: int = 200,
    lr: float = 0.02,
    multires: str = "simultaneous",
    min_size: int = 32,
    schedule: str = "cosine",
    init: str = "identity",
    samples: int | None = None,
    fixed_geometry: Any = None,
    moving_geometry: Any = None,
) -> RegistrationOutput:
    """Register ``moving`` to ``fixed`` by gradient descent on ``estimator_fn``.

    Parameters
    ----------
    fixed, moving : Tensor ``(1, C, H, W)`` or ``(1, C, D, H, W)``
        Float images or volumes on the run's device; sizes may differ. If the channel counts
        differ both are converted to grey (channel mean).
    estimator_fn : callable
        ``f(fixed, moving, mask) -> (B,)``, differentiable with respect to ``moving``.
    higher_is_better : bool
        The loss is ``-similarity`` when True, ``+similarity`` otherwise.
    fixed_mask, moving_mask : bool Tensor ``(1, 1, H, W)`` / ``(1, 1, D, H, W)`` or None
        Valid voxels. The similarity at each level is computed over the fixed mask AND the
        fixed voxels whose warped position lies inside the moving image (and its mask).
    seed : int
        Recorded, and passed to CMIF's start: the loop is deterministic (its voxel subsets,
        if any, come from a fixed seed: :mod:`.objective`).
    transform : {"affine", "perspective", "rigid"}
        The matrix-exponential model (:mod:`.transform_models`): 2-D 6, 8 or 3 parameters;
        3-D affine 12, rigid 6 (no perspective).
    levels, min_size : int
        Gaussian pyramid depth, reduced so the coarsest level keeps ``>= min_size`` px (voxels)
        on its shortest side (fixed and moving get the same number of levels; a 2 mm brain,
        91 x 109 x 91 voxels, gets 2 levels with the default 32: 91 and 46 across, which
        register it as well as 3 levels do).
    iterations : int
        Adam steps: in total for ``"simultaneous"``, per level for ``"coarse-to-fine"``.
    lr : float
        Adam learning rate on ``v`` (normalised units: 1 translation unit = half the image).
    multires : {"simultaneous", "coarse-to-fine"}
        ``"simultaneous"`` (DRMIME): every step averages the loss over all levels with one
        shared transform. ``"coarse-to-fine"``: one level at a time, coarsest first, each
        level starting from the previous result.
    schedule : {"cosine", "constant"}
        Learning-rate schedule within each optimisation stage: cosine decay to 2% of ``lr``
        (gives sub-pixel convergence) or constant (DRMIME's choice).
    init : {"identity", "cmif"}
        Starting transform: the pixel identity (the world identity for volumes with both
        geometries), or CMIF's global rigid search (:mod:`mibench.methods.initial`).
    samples : int or None
        Voxels scored per level and step, a fresh random subset each step (0: all of them);
        None: all pixels of an image, 20,000 voxels of a volume (:mod:`.objective`).
    fixed_geometry, moving_geometry : mibench.geometry.Geometry or None
        The volumes' geometries: the start (world identity) and the physical frame of
        ``rigid`` and of every 3-D model; ignored by 2-D affine and perspective.

    Returns
    -------
    RegistrationOutput
        ``MatrixTransform`` (fixed voxel -> moving voxel, 3x3 or 4x4) and ``info`` with
        ``final_loss``, ``overlap`` (share of the valid fixed voxels that the result maps
        inside the valid moving image, full resolution), ``iterations`` (Adam steps run),
        ``levels`` (used), ``transform``, ``multires``, ``seed`` (and ``samples`` per level
        when sampled).
        Zero parameters give the pixel identity (for images of different sizes, ``H`` starts at
        the normalised matrix of the pixel identity and the exponential is composed onto it).

    Raises
    ------
    RuntimeError
        If the loss becomes NaN or infinite.
    """
    check_choice("multires", multires, MULTIRES)
    check_choice("schedule", schedule, SCHEDULES)
    fixed, moving = prepare_images(fixed, moving)
    objective = pyramid_objective(fixed, moving, fixed_mask, moving_mask,
                                  estimator_fn=estimator_fn, higher_is_better=higher_is_better,
                                  levels=levels, min_size=min_size, init=init, seed=seed,
                                  transform=transform, samples=samples,
                                  fixed_geometry=fixed_geometry,
                                  moving_geometry=moving_geometry)
    device = fixed.device
    h0 = objective.h0
    model = objective.model
    v = torch.zeros(model.n_params, dtype=torch.float32, device=device, requires_grad=True)
    stages = objective.stages(multires)

    steps = 0
    watch = FiniteWatch(device)
    for stage in stages:
        opt = torch.optim.Adam([v], lr=lr)
        for it in range(iterations):
            for group in opt.param_groups:
                group["lr"] = lr * _lr_factor(schedule, it, iterations)
            opt.zero_grad(set_to_none=True)
            h = model.compose(h0, v)
            loss = objective.stage_loss(h, stage)
            watch.update(loss, steps)
            loss.backward()
            opt.step()
            steps += 1
    watch.check(steps - 1)

    with torch.no_grad():
        h = model.compose(h0.double(), v.detach().double())
    return finish(objective, h, stages[-1], {
        "iterations": steps, "levels": objective.count, "transform": transform,
        "multires": multires, "init": init, "seed": int(seed)})
