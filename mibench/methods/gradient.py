"""Gradient-based registration with any differentiable estimator: the ``ncc`` and ``mse`` methods.

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
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from mibench.errors import check_choice
from mibench.methods import pyramid as pyr
from mibench.methods.initial import initial_matrix
from mibench.methods.inputs import prepare_images
from mibench.methods.options import MULTIRES, SCHEDULES
from mibench.methods.transform_models import (
    matrix_exp_transform,
    n_params,
    normalised_to_pixel,
    pixel_to_normalised,
    warp_normalised,
)
from mibench.tensors import FiniteWatch
from mibench.transform import MatrixTransform, RegistrationOutput

#: A warped pixel counts as inside the moving image (or its mask) when the bilinearly warped
#: validity image is at least this: only pixels whose four neighbours are all valid.
VALID_THRESHOLD = 0.999


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
) -> RegistrationOutput:
    """Register ``moving`` to ``fixed`` by gradient descent on ``estimator_fn``.

    Parameters
    ----------
    fixed, moving : Tensor ``(1, C, H, W)``
        Float images on the run's device; sizes may differ. If the channel counts differ both
        are converted to grey (channel mean).
    estimator_fn : callable
        ``f(fixed, moving, mask) -> (B,)``, differentiable with respect to ``moving``.
    higher_is_better : bool
        The loss is ``-similarity`` when True, ``+similarity`` otherwise.
    fixed_mask, moving_mask : bool Tensor ``(1, 1, H, W)`` or None
        Valid pixels. The similarity at each level is computed over the fixed mask AND the
        fixed pixels whose warped position lies inside the moving image (and its mask).
    seed : int
        Recorded only: the loop is deterministic (no sampling).
    transform : {"affine", "perspective"}
        6 or 8 parameters of the matrix-exponential model.
    levels, min_size : int
        Gaussian pyramid depth, reduced so the coarsest level keeps ``>= min_size`` px on its
        shorter side (fixed and moving get the same number of levels).
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
        Starting transform: the pixel identity, or CMIF's global rigid search
        (:mod:`mibench.methods.initial`).

    Returns
    -------
    RegistrationOutput
        ``MatrixTransform`` (fixed px -> moving px) and ``info`` with ``final_loss``,
        ``overlap`` (share of the valid fixed pixels that the result maps inside the valid
        moving image, full resolution), ``iterations`` (Adam steps run), ``levels`` (used),
        ``transform``, ``multires``, ``seed``.
        Zero parameters give the pixel identity (for images of different sizes, ``H`` starts at
        the normalised matrix of the pixel identity and the exponential is composed onto it).

    Raises
    ------
    RuntimeError
        If the loss becomes NaN or infinite.
    """
    check_choice("multires", multires, MULTIRES)
    check_choice("schedule", schedule, SCHEDULES)
    n = n_params(transform)
    device = fixed.device
    fixed, moving = prepare_images(fixed, moving)
    fixed_shape = tuple(fixed.shape[-2:])
    moving_shape = tuple(moving.shape[-2:])

    with torch.no_grad():
        count = min(pyr.num_levels(fixed_shape, levels, min_size),
                    pyr.num_levels(moving_shape, levels, min_size))
        fixed_levels = pyr.gaussian_pyramid(fixed, levels, min_size, n=count)
        moving_levels = pyr.gaussian_pyramid(moving, levels, min_size, n=count)
        fixed_masks = pyr.mask_pyramid(
            None if fixed_mask is None else fixed_mask.to(device), count)
        if moving_mask is None:
            moving_valid = [torch.ones_like(m[:, :1]) for m in moving_levels]
        else:
            moving_valid = [m.float() for m in pyr.mask_pyramid(moving_mask.to(device), count)]
        # The validity image travels with the moving image as an extra channel.
        moving_cat = [torch.cat([m, v], dim=1)
                      for m, v in zip(moving_levels, moving_valid, strict=True)]

    # Start at the pixel identity (== the normalised identity for same-size images) or at the
    # global search's result; the exponential is composed onto it.
    start = initial_matrix(init, fixed, moving, fixed_mask, moving_mask, seed=seed)
    h0 = torch.as_tensor(pixel_to_normalised(start, fixed_shape, moving_shape),
                         dtype=torch.float32, device=device)
    v = torch.zeros(n, dtype=torch.float32, device=device, requires_grad=True)

    def level_mask(h: torch.Tensor, s: int):
        f = fixed_levels[s]
        warped = warp_normalised(moving_cat[s], h, tuple(f.shape[-2:]))
        img, inside = warped[:, :-1], warped[:, -1:] >= VALID_THRESHOLD
        return img, (inside if fixed_masks[s] is None else inside & fixed_masks[s])

    def level_loss(h: torch.Tensor, s: int) -> torch.Tensor:
        img, mask = level_mask(h, s)
        sim = estimator_fn(fixed_levels[s], img, mask)[0]
        return -sim if higher_is_better else sim

    if multires == "simultaneous":
        stages = [list(range(count))]
    else:
        stages = [[s] for s in reversed(range(count))]

    steps = 0
    watch = FiniteWatch(device)
    for stage in stages:
        opt = torch.optim.Adam([v], lr=lr)
        for it in range(iterations):
            for group in opt.param_groups:
                group["lr"] = lr * _lr_factor(schedule, it, iterations)
            opt.zero_grad(set_to_none=True)
            h = h0 @ matrix_exp_transform(v, transform)
            loss = sum(level_loss(h, s) for s in stage) / len(stage)
            watch.update(loss, steps)
            loss.backward()
            opt.step()
            steps += 1
    watch.check(steps - 1)

    with torch.no_grad():
        h = h0.double() @ matrix_exp_transform(v.detach().double(), transform)
        # The loss of the returned transform, at the levels of the last stage.
        final = sum(level_loss(h.float(), s) for s in stages[-1]) / len(stages[-1])
        if not torch.isfinite(final):
            raise RuntimeError(f"loss became {final.item()} at the end")
        # Share of the fixed image's valid pixels that the result maps inside the moving image
        # (a similarity measure can be "improved" by shrinking the overlap: worth watching).
        _, overlap_mask = level_mask(h.float(), 0)
        total = (fixed_masks[0].sum() if fixed_masks[0] is not None
                 else torch.tensor(overlap_mask[0, 0].numel()))
        overlap = float(overlap_mask.sum()) / max(float(total), 1.0)
    matrix = normalised_to_pixel(h, fixed_shape, moving_shape)
    if not np.isfinite(matrix).all():
        raise RuntimeError("the recovered transform is not finite")
    info: dict[str, Any] = {
        "final_loss": float(final),
        "overlap": overlap,
        "iterations": steps,
        "levels": count,
        "transform": transform,
        "multires": multires,
        "init": init,
        "seed": int(seed),
    }
    return RegistrationOutput(MatrixTransform(matrix), info=info)


def estimator_method(estimator: str) -> Callable[..., RegistrationOutput]:
    """A method factory: gradient registration driven by the built-in estimator ``estimator``.

    The returned function takes the method options of :func:`register_with_estimator` plus any
    option of the estimator (``bins``, ``kernel``, ...), which it passes on to the estimator.
    Estimator options left out take the defaults of the *method's* spec (of the same name), so
    a direct call behaves as ``mibench run`` does: e.g. ``nmi`` uses a differentiable cubic
    window, where the estimator's own default (the box kernel) would give no gradient. The
    direction (maximise or minimise) comes from the estimator's spec.
    """

    def register(fixed, moving, *, fixed_mask=None, moving_mask=None, seed=0, **params):
        from mibench.estimators import mibench_estimators
        from mibench.methods import mibench_methods

        spec = next(s for s in mibench_estimators() if s.name == estimator)
        own = {p.name for p in spec.params}
        method_spec = next(s for s in mibench_methods() if s.name == estimator)
        defaults = {p.name: p.default for p in method_spec.params if p.name in own}
        est_options = {**defaults, **{k: v for k, v in params.items() if k in own}}
        fn = spec.load()

        def estimator_fn(f, m, mask):
            return fn(f, m, mask=mask, **est_options)

        return register_with_estimator(
            fixed, moving, estimator_fn=estimator_fn, higher_is_better=spec.higher_is_better,
            fixed_mask=fixed_mask, moving_mask=moving_mask, seed=seed,
            **{k: v for k, v in params.items() if k not in own},
        )

    register.__name__ = register.__qualname__ = estimator.replace("-", "_")
    register.__doc__ = (f"Gradient registration optimising the ``{estimator}`` estimator; "
                        "options as :func:`register_with_estimator` plus the estimator's.")
    return register


#: Affine (or perspective) registration maximising NCC.
ncc = estimator_method("ncc")
#: Affine (or perspective) registration minimising MSE.
mse = estimator_method("mse")
#: Gradient registration with the MI family (differentiable kernels: see the method specs).
nmi = estimator_method("nmi")
mmi = estimator_method("mmi")
jhmi = estimator_method("jhmi")
kde_mi = estimator_method("kde-mi")
softhist_mi = estimator_method("softhist-mi")
