"""What the estimator-driven engines share: the pyramids, the loss of one level and the result.

The gradient engine (:mod:`.gradient`, Adam) and the derivative-free one (:mod:`.derivative_free`,
Powell) optimise the same objective: the parameters ``v`` of the matrix-exponential transform
(:mod:`.transform_models`), composed onto a starting matrix ``h0`` in normalised coordinates, so
that one ``H`` warps every level of a Gaussian pyramid (:mod:`.pyramid`); the loss of a level is
``-similarity`` (or ``+similarity`` for a cost) over the fixed voxels whose warped position lies
inside the moving image. Only the optimiser differs.

Images ``(1, C, H, W)`` and volumes ``(1, C, D, H, W)`` alike. A level is scored either densely
(the whole fixed level and the moving level warped onto it: the estimator sees images or
volumes) or, when ``samples`` is set and smaller than the level's valid voxels, on a random
subset of that many fixed voxels, drawn afresh at every evaluation (as Mattes MI in ITK): only
those voxels are warped, and the estimator sees them as a one-row image ``(1, C, 1, N)`` with
its mask ``(1, 1, 1, N)``, so sampling suits the voxel-wise estimators (histogram MI, NMI, MSE,
NCC: all built-in ones). ``samples=None`` (the default) is dense for 2-D images, as before, and
:data:`AUTO_SAMPLES` voxels for volumes, where a dense step over a 2 mm head (1.1 M voxels) costs
about ten times as much and converges no better.

The subsets are drawn from a generator with a fixed seed (:data:`SAMPLE_SEED`), not the run's
seed: the methods stay deterministic given their inputs (their ``uses_seed`` holds), and two runs
of one pair give the same transform.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mibench.methods import pyramid as pyr
from mibench.methods.initial import initial_matrix
from mibench.methods.transform_models import (
    TransformModel,
    axis_coordinates,
    normalised_to_pixel,
    pixel_to_normalised,
    sample_points,
    transform_model,
    warp_normalised,
)
from mibench.transform import MatrixTransform, RegistrationOutput

#: A warped pixel counts as inside the moving image (or its mask) when the bilinearly warped
#: validity image is at least this: only pixels whose four neighbours are all valid.
VALID_THRESHOLD = 0.999
#: Voxels scored per level and evaluation for volumes when ``samples`` is None.
AUTO_SAMPLES = 20_000
#: Seed of the voxel subsets (fixed: see the module docstring).
SAMPLE_SEED = 0


def resolve_samples(samples: int | None, ndim: int) -> int:
    """Voxels per level and evaluation (0 = all): ``samples``, or when None 0 for images and
    :data:`AUTO_SAMPLES` for volumes."""
    if samples is None:
        return 0 if ndim == 2 else AUTO_SAMPLES
    if samples < 0:
        raise ValueError(f"samples must be >= 0, got {samples!r}")
    return int(samples)


@dataclass
class PyramidObjective:
    """The loss of a normalised transform ``H`` at each pyramid level.

    Built by :func:`pyramid_objective`; level 0 is the full resolution. ``h0`` is the starting
    transform (normalised coordinates, float32), ``model`` the transform model (its frame),
    ``samples[s]`` the voxels scored at level ``s`` (0: dense), ``count`` the number of levels.
    """

    fixed_levels: list[torch.Tensor]
    moving_cat: list[torch.Tensor]
    fixed_masks: list[torch.Tensor | None]
    estimator_fn: Callable[..., torch.Tensor]
    higher_is_better: bool
    fixed_shape: tuple[int, ...]
    moving_shape: tuple[int, ...]
    h0: torch.Tensor
    model: TransformModel
    samples: list[int] = field(default_factory=list)
    generator: torch.Generator | None = None
    #: Flat indices of each sampled level's valid fixed voxels.
    candidates: list[torch.Tensor | None] = field(default_factory=list)
    #: Subsets drawn once and reused (:meth:`freeze_samples`), or None: fresh draws.
    frozen: list[torch.Tensor | None] | None = None

    @property
    def count(self) -> int:
        return len(self.fixed_levels)

    @property
    def ndim(self) -> int:
        return len(self.fixed_shape)

    def level_mask(self, h: torch.Tensor, s: int):
        """The moving image warped onto level ``s`` (all of it) and the mask of the voxels to
        score."""
        f = self.fixed_levels[s]
        return self._split(warp_normalised(self.moving_cat[s], h, tuple(f.shape[2:])), s)

    def _split(self, warped: torch.Tensor, s: int):
        """The warped moving image and the voxels to score: those whose warped validity
        channel is whole, within the fixed mask of level ``s``."""
        img, inside = warped[:, :-1], warped[:, -1:] >= VALID_THRESHOLD
        mask = self.fixed_masks[s]
        return img, (inside if mask is None else inside & mask)

    def dense_loss(self, img: torch.Tensor, mask: torch.Tensor, s: int) -> torch.Tensor:
        """``-similarity`` (``+`` for a cost) of a warped image against level ``s``."""
        sim = self.estimator_fn(self.fixed_levels[s], img, mask)[0]
        return -sim if self.higher_is_better else sim

    def draw(self, s: int) -> torch.Tensor:
        """Flat indices ``(N,)`` of the fixed voxels scored at level ``s`` (with replacement,
        uniform over the valid ones)."""
        if self.frozen is not None and self.frozen[s] is not None:
            return self.frozen[s]
        cand = self.candidates[s]
        pick = torch.randint(cand.numel(), (self.samples[s],), generator=self.generator,
                             device=self.generator.device)
        return cand[pick.to(cand.device)]

    def freeze_samples(self) -> None:
        """Draw one subset per sampled level and reuse it at every later evaluation (a
        deterministic function of ``H``, as Powell's line searches need)."""
        if not any(self.samples):
            return
        self.frozen = None
        self.frozen = [self.draw(s) if self.samples[s] else None for s in range(self.count)]

    def _points(self, s: int, idx: torch.Tensor) -> torch.Tensor:
        """Homogeneous normalised coordinates ``(N, n+1)`` of flat voxel indices of level s."""
        shape = tuple(self.fixed_levels[s].shape[2:])
        coords, rest = [], idx
        for size in shape[::-1]:  # x, y[, z]: the last axis runs fastest
            axis = axis_coordinates(size, dtype=torch.float32, device=idx.device)
            coords.append(axis[rest % size])
            rest = torch.div(rest, size, rounding_mode="floor")
        return torch.stack([*coords, torch.ones_like(coords[0])], dim=1)

    def level_loss(self, h: torch.Tensor, s: int) -> torch.Tensor:
        """``-similarity`` (``+`` for a cost) of level ``s`` under ``h``: a 0-d tensor."""
        if self.samples and self.samples[s]:
            idx = self.draw(s)
            warped = sample_points(self.moving_cat[s], h, self._points(s, idx)).T[None]
            return self._subset_loss(warped, s, idx)
        return self.dense_loss(*self.level_mask(h, s), s)

    def _subset_loss(self, warped: torch.Tensor, s: int, idx: torch.Tensor,
                     scored: torch.Tensor | None = None) -> torch.Tensor:
        """The loss of the fixed voxels ``idx`` of level ``s`` against their warped moving
        values ``warped`` ``(1, C + 1, N)`` (validity channel last), seen by the estimator as
        one-row images ``(1, C, 1, N)``; scored where the validity is whole, or ``scored``."""
        fixed_values = self.fixed_levels[s].flatten(2)[:, :, idx]  # (1, C, N)
        mask = (warped[:, -1:] >= VALID_THRESHOLD) if scored is None else scored.view(1, 1, -1)
        sim = self.estimator_fn(fixed_values[:, :, None], warped[:, :-1, None],
                                mask[:, :, None])[0]
        return -sim if self.higher_is_better else sim

    def field_mask(self, grid: torch.Tensor, s: int):
        """As :meth:`level_mask` for a sampling grid ``(1, *level shape, n)`` (normalised over
        the moving image, align_corners=True; a deformation's) instead of a matrix."""
        warped = F.grid_sample(self.moving_cat[s], grid.to(self.moving_cat[s].dtype),
                               mode="bilinear", padding_mode="zeros", align_corners=True)
        return self._split(warped, s)

    def field_loss(self, grid: torch.Tensor, s: int,
                   scored: torch.Tensor | None = None) -> torch.Tensor:
        """``-similarity`` (``+`` for a cost) of level ``s`` under a sampling grid (see
        :meth:`field_mask`), scored densely: a 0-d tensor.

        ``scored`` (bool ``(1, 1, *level shape)``) fixes the voxels to score instead of those
        the grid maps inside the valid moving image: a deformation could otherwise raise the
        similarity by pushing the voxels that match badly out of the overlap. Voxels mapped
        outside then meet the moving image's zero padding (or its masked-out values).
        """
        img, inside = self.field_mask(grid, s)
        return self.dense_loss(img, inside if scored is None else scored, s)

    def fixed_pixels(self, s: int, idx: torch.Tensor) -> torch.Tensor:
        """Full-resolution fixed pixel coordinates ``(N, n)`` ``(x, y[, z])``, float64, of the
        flat voxel indices ``idx`` of level ``s`` (the pyramid keeps normalised coordinates
        aligned, :mod:`.pyramid`)."""
        norm = self._points(s, idx)[:, :-1].double()
        sizes = torch.tensor([v - 1 for v in self.fixed_shape[::-1]], dtype=torch.float64,
                             device=norm.device)
        return (norm + 1) / 2 * sizes

    def read_points(self, where: torch.Tensor, s: int) -> torch.Tensor:
        """The moving level ``s`` and its validity channel read at ``where`` ``(N, n)``
        (normalised over the moving image, ``align_corners=True``): ``(1, C + 1, N)``."""
        moving = self.moving_cat[s]
        grid = where.to(moving.dtype).view(1, *([1] * (self.ndim - 1)), -1, self.ndim)
        return F.grid_sample(moving, grid, mode="bilinear", padding_mode="zeros",
                             align_corners=True).reshape(1, moving.shape[1], -1)

    def points_loss(self, where: torch.Tensor, s: int, idx: torch.Tensor,
                    scored: torch.Tensor | None = None) -> torch.Tensor:
        """``-similarity`` (``+`` for a cost) of the fixed voxels ``idx`` of level ``s``
        against the moving level read at ``where`` (:meth:`read_points`; a deformation's),
        scored as :meth:`level_loss` scores a subset. ``scored`` (bool ``(N,)``) fixes the
        voxels to score as in :meth:`field_loss`; otherwise those read inside the valid moving
        image."""
        return self._subset_loss(self.read_points(where, s), s, idx, scored)

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
                      levels: int, min_size: int, init: str, seed: int,
                      transform: str = "affine", samples: int | None = None,
                      fixed_geometry: Any = None, moving_geometry: Any = None
                      ) -> PyramidObjective:
    """Pyramids of both images (the same number of levels), the model and the start.

    ``fixed`` and ``moving`` are ``(1, C, H, W)`` or ``(1, C, D, H, W)`` float32 with equal
    channel counts (:func:`mibench.methods.inputs.prepare_images`); masks bool ``(1, 1, ...)``
    or None. ``samples`` None takes its default for the dimensionality
    (:func:`resolve_samples`). The geometries set the frame of the
    transform model and the start (:func:`mibench.methods.initial.start_matrix`); 2-D affine
    and perspective ignore them.
    """
    device = fixed.device
    ndim = fixed.dim() - 2
    if moving.dim() != fixed.dim() or ndim not in (2, 3):
        raise ValueError(f"fixed and moving must both be (1, C, H, W) or (1, C, D, H, W), got "
                         f"{tuple(fixed.shape)} and {tuple(moving.shape)}")
    fixed_shape = tuple(fixed.shape[2:])
    moving_shape = tuple(moving.shape[2:])
    model = transform_model(transform, fixed_shape, fixed_geometry)
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
    # Start at the pixel (or world) identity, or at the global search's result; the
    # exponential is composed onto it. 2-D affine/perspective never read the geometries.
    geometries = ((None, None) if model.frame is None
                  else (fixed_geometry, moving_geometry))
    start = initial_matrix(init, fixed, moving, fixed_mask, moving_mask, seed=seed,
                           fixed_geometry=geometries[0], moving_geometry=geometries[1])
    h0 = torch.as_tensor(pixel_to_normalised(start, fixed_shape, moving_shape),
                         dtype=torch.float32, device=device)
    objective = PyramidObjective(fixed_levels, moving_cat, fixed_masks, estimator_fn,
                                 higher_is_better, fixed_shape, moving_shape, h0, model)
    per_level = resolve_samples(samples, ndim)
    if per_level:
        candidates, counts = [], []
        for f, m in zip(fixed_levels, fixed_masks, strict=True):
            valid = (torch.ones(f[0, 0].numel(), dtype=torch.bool, device=device) if m is None
                     else m.reshape(-1))
            cand = torch.nonzero(valid).reshape(-1)
            dense = cand.numel() <= per_level
            candidates.append(None if dense else cand)
            counts.append(0 if dense else per_level)
        objective.samples, objective.candidates = counts, candidates
        if any(counts):
            objective.generator = torch.Generator(device=device).manual_seed(SAMPLE_SEED)
    return objective


def _overlap(objective: PyramidObjective, h: torch.Tensor) -> float:
    """Share of the fixed image's valid voxels that ``h`` maps inside the valid moving image."""
    _, overlap_mask = objective.level_mask(h, 0)
    valid = objective.fixed_masks[0]
    total = valid.sum() if valid is not None else torch.tensor(overlap_mask[0, 0].numel())
    return float(overlap_mask.sum()) / max(float(total), 1.0)


def finish(objective: PyramidObjective, h: torch.Tensor, last_stage: list[int],
           info: dict[str, Any]) -> RegistrationOutput:
    """The result of a transform ``h`` (normalised, float64): its voxel matrix, the loss at the
    levels of the last stage and the overlap, added to ``info``.

    ``overlap`` is the share of the fixed image's valid voxels that ``h`` maps inside the valid
    moving image, full resolution (a similarity can be "improved" by shrinking the overlap:
    worth watching). With sampling, ``final_loss`` is measured on one more subset.

    Raises
    ------
    RuntimeError
        If the loss or the matrix is not finite.
    """
    with torch.no_grad():
        final = objective.stage_loss(h.float(), last_stage)
        if not torch.isfinite(final):
            raise RuntimeError(f"loss became {final.item()} at the end")
        overlap = _overlap(objective, h.float())
    matrix = normalised_to_pixel(h, objective.fixed_shape, objective.moving_shape)
    if not np.isfinite(matrix).all():
        raise RuntimeError("the recovered transform is not finite")
    extra = {"samples": objective.samples} if any(objective.samples) else {}
    return RegistrationOutput(MatrixTransform(matrix),
                              info={"final_loss": float(final), "overlap": overlap, **info,
                                    **extra})

