"""Deformable DRMIME (issue 22; not in the paper): a B-spline FFD trained with DRMIME's critic.

``drmime`` with ``transform="bspline"`` (2-D) first runs DRMIME's affine registration unchanged
(:func:`mibench.methods.drmime.register_drmime`, ``transform="affine"``), then a deformable
stage that goes on from its trained state (handed over through its ``keep`` argument; this
module does not import :mod:`.drmime`, which calls it):

- **Transform**: a cubic B-spline displacement ``u`` composed on the affine result ``A`` (fixed
  px -> moving px) in elastix's order, ``p_moving = A(p) + u(A(p))`` (:mod:`mibench.bspline`),
  as the gradient engine's stage (:mod:`.gradient`). Level ``s`` of the pyramid, coarsest
  first, works on a control grid of ``grid_spacing * 2^s`` px placed over ``A`` of the fixed
  image (:meth:`~mibench.bspline.BSplineTransform.over`), subdivided exactly and cropped to
  that box between levels (:func:`~mibench.bspline.refine_coefficients`,
  :func:`~mibench.bspline.crop_coefficients`).
- **Samples**: DRMIME's own fixed sample set of the level (the affine stage's ``_Level``), its
  normalised points taken to full-resolution fixed pixels (the pyramid keeps normalised
  coordinates aligned), mapped by ``A``; the displacement is evaluated there only
  (:class:`~mibench.bspline.FieldSampler`, exact), and the moving level is read at
  ``A(p) + u(A(p))`` (normalised over the moving image, ``align_corners=True``). The samples
  scored at a level are those valid under ``A`` (inside the fixed mask and the valid moving
  image), fixed for the level: a deformation must not gain by pushing samples out of the
  overlap; samples it moves outside read the zero padding.
- **Loss**: ``-DV_s + bending_weight * E(u) / area``: the Donsker-Varadhan bound of that level
  under the *same* statistics network as the affine stage, which keeps training, plus the
  thin-plate bending energy (:func:`~mibench.bspline.bending_energy`, not normalised) per fixed
  pixel at full resolution (``area``), as :mod:`.gradient`.
- **Optimiser**: per level one Adam (``amsgrad=True``, as DRMIME's) over the critic at
  ``lr_net`` (constant, as DRMIME) and the coefficients at ``bspline_lr * 2^s`` px per step,
  decayed by a cosine to 2 % over the level's ``bspline_iterations`` steps (:data:`SCHEDULE`):
  the DV bound is noisy (a fresh marginal shuffle each step), so the decay is there to let the
  coefficients settle at the end of a level, while the critic keeps its rate to track the
  changing joint distribution. Against a constant rate on three fundus pairs (256 px, below)
  the medians hardly differ (0.59/0.54, 0.84/0.90, 0.35/0.37 px cosine/constant) and the worst
  landmarks are on the whole no worse (9.3/9.0, 5.8/9.5, 0.9/1.0 px): a weak preference.

The defaults are the gradient engine's (``grid_spacing`` 32 px, ``bending_weight`` 1,
``bspline_iterations`` 100 per level, ``bspline_lr`` 0.25 px), unchanged: on the pairs below
they register and never fold. Measured under load (``python benchmarks/deformable.py --threads 1
--methods "drmime,drmime[transform=bspline]"``: the 8 ``synthetic`` elastic 256 px pairs, seed 0,
one torch thread on a shared 2-core machine), median landmark error (px) affine -> deformable:
fundus 8.59 -> 2.86, 2.36 -> 0.59, 3.58 -> 0.84, 1.73 -> 0.35 (the best affine fits: 1.57, 1.90,
3.31, 2.32); histology 15.18 -> 18.73, 13.87 -> 20.58, 8.44 -> 6.16, 16.92 -> 11.04 (DRMIME's
affine fails on them, and the deformation cannot repair it). Median of the pair medians 8.51 ->
4.51 px, no folding on any pair, 26.8 -> 31.9 s per pair (the stage costs about 5 s; 4 levels,
400 steps).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mibench.estimators.mine import dv_bounds
from mibench.methods.gradient import fit_bspline_levels
from mibench.methods.objective import VALID_THRESHOLD
from mibench.methods.options import BSPLINE_DEFAULTS
from mibench.transform import MatrixTransform, RegistrationOutput

#: Learning-rate schedule of the coefficients within each level (the critic's stays constant).
SCHEDULE = "cosine"


def sample_pixels(level: Any, fixed_shape: tuple[int, int]) -> np.ndarray:
    """Full-resolution fixed pixel positions ``(N, 2)`` ``(x, y)``, float64, of the samples of
    a DRMIME level (``drmime._Level``; from their homogeneous normalised coordinates ``points``,
    ``align_corners=True``)."""
    pts = level.points[:, :2].detach().to("cpu", torch.float64).numpy()
    size = np.array([fixed_shape[1] - 1, fixed_shape[0] - 1], dtype=np.float64)
    return (pts + 1.0) / 2.0 * size


class _LevelWarp:
    """The moving level (with its validity channel) read at ``A(p) + u(A(p))`` for the level's
    samples ``p``: a callable from coefficients ``(2, ny, nx)`` to ``(N, C + 1)``."""

    def __init__(self, level: Any, grid, affine: np.ndarray, fixed_shape, moving_shape):
        from mibench.bspline import FieldSampler

        device = level.moving.device
        p = sample_pixels(level, fixed_shape)
        q = MatrixTransform(affine).fixed_to_moving(p)  # A(p), moving px
        self.sampler = FieldSampler(grid, q, device=device)
        self.q = torch.as_tensor(q, dtype=torch.float32, device=device)
        extent = [max(moving_shape[1] - 1, 1), max(moving_shape[0] - 1, 1)]
        self.scale = 2.0 / torch.tensor(extent, dtype=torch.float32, device=device)
        self.moving = level.moving

    def __call__(self, coefficients: torch.Tensor) -> torch.Tensor:
        mapped = self.q + self.sampler(coefficients).T  # (N, 2) moving px
        where = (mapped * self.scale - 1.0).view(1, 1, -1, 2)
        out = F.grid_sample(self.moving, where, mode="bilinear", padding_mode="zeros",
                            align_corners=True)
        return out.reshape(out.shape[1], -1).T


def register_drmime_bspline(
    affine_stage: Callable[..., RegistrationOutput],
    fixed: torch.Tensor,
    moving: torch.Tensor,
    *,
    fixed_mask: torch.Tensor | None = None,
    moving_mask: torch.Tensor | None = None,
    seed: int = 0,
    grid_spacing: float = BSPLINE_DEFAULTS["grid_spacing"],
    bending_weight: float = BSPLINE_DEFAULTS["bending_weight"],
    bspline_iterations: int = BSPLINE_DEFAULTS["bspline_iterations"],
    bspline_lr: float = BSPLINE_DEFAULTS["bspline_lr"],
    stable_lme: bool = True,
    **options: Any,
) -> RegistrationOutput:
    """DRMIME's affine registration, then a B-spline FFD on it (module docstring).

    Parameters
    ----------
    affine_stage : callable
        :func:`mibench.methods.drmime.register_drmime` (passed in: that module calls this one).
    fixed, moving : Tensor ``(1, C, H, W)``
        Images in [0, 1] on the run's device (2-D only), as :func:`.drmime.register_drmime`.
    fixed_mask, moving_mask : bool Tensor ``(1, 1, H, W)``, optional
    seed : int
        Seeds every random draw of both stages (deterministic on CPU).
    grid_spacing : float
        Control-point spacing at full resolution (px of the moving image); level ``s`` starts
        at ``2^s`` times it.
    bending_weight : float
        Weight of the bending energy per fixed pixel (1/px^2) in the loss.
    bspline_iterations : int
        Adam steps per pyramid level (0: the affine result on a zero field).
    bspline_lr : float
        Adam learning rate of the coefficients at full resolution (px per step); level ``s``
        uses ``2^s`` times it.
    stable_lme : bool
        Stable log-mean-exp, both stages.
    **options
        The other options of :func:`.drmime.register_drmime`, for the affine stage (any
        ``transform`` is dropped: it is affine); ``lr_net`` and ``ema`` also apply here.

    Returns
    -------
    RegistrationOutput
        :class:`~mibench.bspline.BSplineTransform` on the affine result (fixed px -> moving
        px) and the affine stage's ``info`` with ``transform="bspline"``, ``affine_loss`` (its
        ``final_loss``); ``final_loss``, ``mi_levels`` (finest first) and ``overlap`` of the
        result, under the trained critic, as the affine stage defines them; ``grid_spacing``,
        ``bending_weight``, ``bspline_iterations`` (Adam steps run, all levels) and
        ``bending_energy`` of the result (normalised, as gradient.py's).

    Raises
    ------
    ValueError
        For volumes, or a negative ``bspline_iterations``.
    RuntimeError
        If the loss or the result becomes NaN or infinite.
    """
    if fixed.dim() != 4:
        raise ValueError("transform='bspline' registers 2-D images only")
    if bspline_iterations < 0:
        raise ValueError(f"bspline_iterations must be >= 0, got {bspline_iterations!r}")
    state: dict[str, Any] = {}
    options.pop("transform", None)
    affine_out = affine_stage(fixed, moving, fixed_mask=fixed_mask, moving_mask=moving_mask,
                              seed=seed, transform="affine", stable_lme=stable_lme,
                              keep=state, **options)
    affine = affine_out.transform.matrix
    net, levels, gen, averages = (state[k] for k in ("net", "levels", "generator", "averages"))
    device = levels[0].moving.device
    fixed_shape, moving_shape = tuple(fixed.shape[2:]), tuple(moving.shape[2:])

    def level_loss(s: int, grid: Any) -> Callable[[torch.Tensor], torch.Tensor]:
        level, warp = levels[s], _LevelWarp(levels[s], grid, affine, fixed_shape, moving_shape)
        with torch.no_grad():  # the samples valid under A: scored for the whole level
            zero = torch.zeros(grid.coefficient_shape, dtype=torch.float32, device=device)
            scored = warp(zero)[:, -1] >= VALID_THRESHOLD
        emas = None if averages is None else [averages[s]]

        def loss(c: torch.Tensor) -> torch.Tensor:
            warped = warp(c)
            return -dv_bounds(net, [(level.fixed_values, warped[:, :-1], scored)], gen,
                              stable=stable_lme, emas=emas)[0]

        return loss

    result, steps = fit_bspline_levels(
        fixed_shape, affine, len(levels), grid_spacing=grid_spacing, lr=bspline_lr,
        device=device, level_loss=level_loss, bending_weight=bending_weight,
        iterations=bspline_iterations, schedule=SCHEDULE,
        others=({"params": net.parameters(), "lr": state["lr_net"]},), amsgrad=True)
    grid, coefficients = result.grid, result.coefficients
    with torch.no_grad():
        c = torch.as_tensor(coefficients, dtype=torch.float32, device=device)
        bounds = []
        for level in levels:  # as the affine stage: the samples valid under the result
            warped = _LevelWarp(level, grid, affine, fixed_shape, moving_shape)(c)
            bounds.append(dv_bounds(net, [(level.fixed_values, warped[:, :-1],
                                           warped[:, -1] >= VALID_THRESHOLD)], gen,
                                    stable=stable_lme)[0])
        bounds = torch.stack(bounds)
        if not torch.isfinite(bounds).all():
            raise RuntimeError(f"loss became {-bounds.mean().item()} at the end")
        valid = (torch.ones((1, 1) + moving_shape, device=device) if moving_mask is None
                 else moving_mask.to(device).float())
        inside = result.warp(valid, fixed_shape) >= VALID_THRESHOLD
        if fixed_mask is not None:
            inside = inside & fixed_mask.to(device).bool()
        total = float(fixed_mask.sum()) if fixed_mask is not None else float(np.prod(fixed_shape))
    return RegistrationOutput(result, info={
        **affine_out.info, "transform": "bspline",
        "affine_loss": affine_out.info["final_loss"], "final_loss": float(-bounds.mean()),
        "mi_levels": [float(b) for b in bounds],
        "overlap": float(inside.sum()) / max(total, 1.0),
        "grid_spacing": float(grid_spacing), "bending_weight": float(bending_weight),
        "bspline_iterations": steps, "bending_energy": result.bending_energy()})

