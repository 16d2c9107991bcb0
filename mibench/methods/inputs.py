"""What the methods do first with their images (the gradient methods, DRMIME and CMIF)."""

from __future__ import annotations

import torch


def prepare_images(fixed: torch.Tensor, moving: torch.Tensor):
    """Both images as float32 on their device, grey (channel mean) when their channel counts
    differ (else unchanged)."""
    fixed, moving = fixed.float(), moving.float()
    if fixed.shape[1] != moving.shape[1]:
        fixed = fixed.mean(dim=1, keepdim=True)
        moving = moving.mean(dim=1, keepdim=True)
    return fixed, moving
