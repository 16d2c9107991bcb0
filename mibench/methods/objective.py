"""What the estimator-driven engines share: the pyramids, the loss of one level and the result.

The gradient engine (:mod:`.gradient`, Adam) and the derivative-free one (:mod:`.derivative_free`,
Powell) optimise the same objective: the parameters ``v`` of the matrix-exponential transform
(:mod:`.transform_models`), composed onto a starting matrix ``h0`` in normalised coordinates, so
that one ``H`` warps every level of a Gaussian pyramid (:mod:`.pyramid`); the loss of a level is
``-similarity`` (or ``+similarity`` for a cost) over the fixed pixels whose warped position lies
inside the moving image. Only the optimiser differs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from mibench.methods import pyramid as pyr
from mibench.methods.initial import initial_matrix
from mibench.methods.transform_models import (
    normalised_to_pixel,
    pixel_to_normalised,
    warp_normalised,
)
from mibench.transform import MatrixTransform, RegistrationOutput

#: A warped pixel counts as inside the moving image (or its mask) when the bilinearly warped
#: validity image is at least this: only pixels whose four neighbours are all valid.
VALID_THRESHOLD = 0.999


@dataclass
class PyramidObjective:
    """The loss of a normalised transform ``H`` at each pyramid level.

    Built by :func:`pyramid_objective`; level 0 is the full resolution. ``h0`` is the starting
    transform (normalised coordinates, float32), ``count`` the number of levels used.
    """

    fixed_levels: list[torch.Tensor]
    moving_cat: list[torch.Tensor]
    fixed_masks: list[torch.Tensor | None]
    estimator_fn: Callable[..., torch.Tensor]
    higher_is_better: bool
    fixed_shape: tuple[int, int]
    moving_shape: tuple[int, int]
    h0: torch.Tensor

    @property
    def count(self) -> int:
        return len(self.fixed_levels)

    def level_mask(self, h: torch.Tensor, s: int):
        """The moving image warped onto level ``s`` and the mask of the pixels to score."""
        f = self.fixed_levels[s]
        warped = warp_normalised(self.moving_cat[s], h, tuple(f.shape[-2:]))
        img, inside = warped[:, :-1], warped[:, -1:] >= VALID_THRESHOLD
        mask = self.fixed_masks[s]
        return img, (inside if mask is None else inside & mask)

    def level_loss(self, h: torch.Tensor, s: int) -> torch.Tensor:
        """``-similarity`` (``+`` for a cost) of level ``s`` under ``h``: a 0-d tensor."""
        img, mask = self.level_mask(h, s)
        sim = self.estimator_fn(self.fixed_levels[s], img, mask)[0]
        return -sim if self.higher_is_better else sim

    def stage_loss(self, h: torch.Tensor, stage: list[int]) -> torch.Tensor:
        """The mean loss of the levels of one optimisation stage."""
        return sum(self.level_loss(h, s) for s in stage) / len(stage)

    def stages(self, multires: str) -> list[list[int]]:
        """Levels per stage: all at once (``"simultaneous"``), or one at a time, coarsest
        first (``"coarse-to-fine"``)."""
        if multires == "simultaneous":
            return [list(range(self.count))]
        return [[s] for s in reversed(range(self.count))]


def pyramid_objective(fixed: torch.Tensor, moving: torch.Tensor,
                      fixed_mask: torch.Tensor | None, moving_mask: torch.Tensor | None, *,
                      estimator_fn: Callable[..., torch.Tensor], higher_is_better: bool,
                      levels: int, min_size: int, init: str, seed: int) -> PyramidObjective:
    """Pyramids of both images (the same number of levels) and the starting transform.

    ``fixed`` and ``moving`` are ``(1, C, H, W)`` float32 with equal channel counts
    (:func:`mibench.methods.inputs.prepare_images`); masks bool ``(1, 1, H, W)`` or None.
    """
    device = fixed.device
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
    return PyramidObjective(fixed_levels, moving_cat, fixed_masks, estimator_fn,
                            higher_is_better, fixed_shape, moving_shape, h0)


def finish(objective: PyramidObjective, h: torch.Tensor, last_stage: list[int],
           info: dict[str, Any]) -> RegistrationOutput:
    """The result of a transform ``h`` (normalised, float64): its pixel matrix, the loss at the
    levels of the last stage and the overlap, added to ``info``.

    ``overlap`` is the share of the fixed image's valid pixels that ``h`` maps inside the valid
    moving image, full resolution (a similarity can be "improved" by shrinking the overlap:
    worth watching).

    Raises
    ------
    RuntimeError
        If the loss or the matrix is not finite.
    """
    with torch.no_grad():
        final = objective.stage_loss(h.float(), last_stage)
        if not torch.isfinite(final):
            raise RuntimeError(f"loss became {final.item()} at the end")
        _, overlap_mask = objective.level_mask(h.float(), 0)
        valid = objective.fixed_masks[0]
        total = valid.sum() if valid is not None else torch.tensor(overlap_mask[0, 0].numel())
        overlap = float(overlap_mask.sum()) / max(float(total), 1.0)
    matrix = normalised_to_pixel(h, objective.fixed_shape, objective.moving_shape)
    if not np.isfinite(matrix).all():
        raise RuntimeError("the recovered transform is not finite")
    return RegistrationOutput(MatrixTransform(matrix),
                              info={"final_loss": float(final), "overlap": overlap, **info})
