"""Intensity-based similarity measures that need no density estimate: ``mse`` and ``ncc``.

Every estimator here has the signature ``f(fixed, moving, mask=None) -> Tensor (B,)``:

- ``fixed``, ``moving``: ``(B, C, H, W)`` image batches or ``(B, C, D, H, W)`` volume batches
  (both the same) of the same spatial size. Channel counts must be equal or one of them 1 (it is
  broadcast).
- ``mask``: ``(B, 1, H, W)`` (volumes: ``(B, 1, D, H, W)``) bool (True = use this pixel), or
  None for all pixels.

Sums run over every spatial axis, so a volume scores exactly as its voxels laid out as one image.

They are batched, device-agnostic and differentiable with respect to both images. Half-precision
inputs are computed in float32 (float64 stays float64). Degenerate inputs never give NaN or inf:
an empty mask gives 0 for both, a constant image gives an NCC of 0.
"""

from __future__ import annotations

import torch

from mibench.estimators.inputs import check_pair_shapes, compute_dtype

#: Added to each (per-image) variance in NCC, so a constant image gives 0 instead of 0/0.
#: For images in [0, 1] it only matters for a standard deviation below ~1e-5 (an image with
#: values beyond NCC_HUGE is first divided by its largest |value|, so there it is relative).
NCC_EPS = 1e-10

#: Above this largest |value| NCC first scales an image to [-1, 1]: sums of squares of up to
#: 10^19 pixels then stay finite in float32.
NCC_HUGE = 2.0**32


def _unhuge(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``x`` divided by its largest masked ``|value|`` per batch item where that exceeds
    :data:`NCC_HUGE`, else unchanged (no host sync)."""
    top = (x.detach().abs() * w).amax(dim=_item_dims(x), keepdim=True)
    return x / torch.where(top > NCC_HUGE, top, torch.ones_like(top))


def _item_dims(x: torch.Tensor) -> tuple[int, ...]:
    """The axes of one batch item (channels and every spatial axis): ``(1, 2, 3)`` for images,
    ``(1, 2, 3, 4)`` for volumes (the same reduction as before volumes, so 2-D values keep every
    bit)."""
    return tuple(range(1, x.ndim))


def _spatial_dims(x: torch.Tensor) -> tuple[int, ...]:
    """The spatial axes: ``(2, 3)`` for images, ``(2, 3, 4)`` for volumes."""
    return tuple(range(2, x.ndim))


def _prepare(fixed: torch.Tensor, moving: torch.Tensor, mask: torch.Tensor | None):
    """Common dtype (at least float32), broadcast channels, and float weights ``(B, 1, ...)``
    (the mask, or ones)."""
    check_pair_shapes(fixed, moving)
    dtype = compute_dtype(fixed, moving)
    fixed, moving = torch.broadcast_tensors(fixed.to(dtype), moving.to(dtype))
    if mask is None:
        weights = torch.ones_like(fixed[:, :1])
    else:
        weights = mask.to(device=fixed.device, dtype=dtype).expand_as(fixed[:, :1])
    return fixed, moving, weights


def mse(fixed: torch.Tensor, moving: torch.Tensor, mask: torch.Tensor | None = None
        ) -> torch.Tensor:
    """Mean squared difference over the masked pixels and all channels; lower is better.

    Returns ``(B,)``; 0 for an empty mask.
    """
    fixed, moving, w = _prepare(fixed, moving, mask)
    channels = fixed.shape[1]
    items = _item_dims(fixed)
    n = w.sum(dim=items) * channels
    sq = ((fixed - moving) ** 2 * w).sum(dim=items)
    return sq / n.clamp_min(1.0)


def ncc(fixed: torch.Tensor, moving: torch.Tensor, mask: torch.Tensor | None = None
        ) -> torch.Tensor:
    """Global normalised cross-correlation over the masked pixels; higher is better.

    Each channel is centred on its own masked mean; the channels are then *pooled*::

        ncc = sum_c cov_c / sqrt((sum_c var_f,c + eps) * (sum_c var_m,c + eps))

    which for one channel is the Pearson correlation. The sign is kept (inverted contrast gives
    -1, not a match). ``ncc(x, a*x + b) = 1`` for a > 0 (``b`` may differ per channel). A
    constant image (or an empty mask) gives 0. Returns ``(B,)`` in [-1, 1].
    """
    fixed, moving, w = _prepare(fixed, moving, mask)
    # Images whose largest |value| over the mask exceeds NCC_HUGE are divided by it (detached;
    # NCC is invariant to it, and eps becomes relative to that scale): squares of huge
    # intensities (> ~1.8e19 in float32) overflowed to inf and gave NaN. Other images are left
    # exactly as they are (a blurred image slightly above 1 must not change in the last bit).
    fixed, moving = _unhuge(fixed, w), _unhuge(moving, w)
    spatial, items = _spatial_dims(fixed), _item_dims(fixed)
    n = w.sum(dim=spatial, keepdim=True).clamp_min(1.0)  # (B, 1, 1, 1[, 1])
    mf = (fixed * w).sum(dim=spatial, keepdim=True) / n  # per-channel masked means
    mm = (moving * w).sum(dim=spatial, keepdim=True) / n
    df = (fixed - mf) * w
    dm = (moving - mm) * w
    n = n.flatten()
    cov = (df * dm).sum(dim=items) / n
    vf = (df * df).sum(dim=items) / n
    vm = (dm * dm).sum(dim=items) / n
    return cov / (torch.sqrt(vf + NCC_EPS) * torch.sqrt(vm + NCC_EPS))
