"""What CMIF's 2-D and 3-D rigid searches (:mod:`mibench.methods.cmif`,
:mod:`mibench.methods.cmif_volumes`) do alike: reduced copies, the high-pass before quantising
and the parabolic peak refinement."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

#: A reduced pixel counts as inside the mask when this share of its source pixels is.
MASK_KEEP = 0.999


def reduce_copy(image: torch.Tensor, mask: torch.Tensor | None, factor: int):
    """Area-average by ``factor`` (dropping the incomplete last rows/columns); the mask keeps
    the reduced pixels all of whose source pixels are valid."""
    if factor == 1:
        return image, mask
    pool = F.avg_pool3d if image.ndim == 5 else F.avg_pool2d
    small = pool(image, factor)
    if mask is None:
        return small, None
    keep = pool(mask.to(image.dtype), factor) >= MASK_KEEP
    return small, keep


def highpass(image: torch.Tensor, mask: torch.Tensor | None, sigma: float) -> torch.Tensor:
    """``image`` minus its Gaussian blur (``sigma`` px) over the mask (normalised convolution:
    pixels outside the mask and the image border do not leak in).

    Parameters
    ----------
    image : Tensor ``(B, C, H, W)`` or ``(B, C, D, H, W)``
    mask : bool Tensor ``(B, 1, H, W)`` (``(B, 1, D, H, W)``) or None
    sigma : float
        Standard deviation in pixels (voxels, the same along every axis); 0 returns the image
        unchanged.
    """
    if sigma <= 0:
        return image
    radius = max(1, math.ceil(3 * sigma))
    x = torch.arange(-radius, radius + 1, device=image.device, dtype=image.dtype)
    g = torch.exp(-0.5 * (x / sigma) ** 2)
    g = g / g.sum()
    c = image.shape[1]
    weight = torch.ones_like(image[:, :1]) if mask is None else mask.to(image.dtype)

    def blur(t):
        k = t.shape[1]
        if t.ndim == 5:
            # Separable: one 1-D Gaussian along x, y and z in turn.
            for shape, pad in (((1, 1, -1), (0, 0, radius)), ((1, -1, 1), (0, radius, 0)),
                               ((-1, 1, 1), (radius, 0, 0))):
                t = F.conv3d(t, g.view(1, 1, *shape).expand(k, 1, *shape), padding=pad,
                             groups=k)
            return t
        t = F.conv2d(t, g.view(1, 1, 1, -1).expand(k, 1, 1, -1), padding=(0, radius), groups=k)
        return F.conv2d(t, g.view(1, 1, -1, 1).expand(k, 1, -1, 1), padding=(radius, 0),
                        groups=k)

    both = blur(torch.cat([image * weight, weight], dim=1))
    num, den = both[:, :c], both[:, c:]
    smooth = num / den.clamp_min(1e-6)
    return torch.where(den > 1e-6, image - smooth, torch.zeros_like(image))


def parabola_offset(left: float, mid: float, right: float) -> float:
    """Offset in (-0.5, 0.5) of the vertex of the parabola through three equally spaced values
    (0 when they are not a strict peak)."""
    den = left - 2 * mid + right
    if not (den < 0) or not all(math.isfinite(v) for v in (left, mid, right)):
        return 0.0
    return float(np.clip(0.5 * (left - right) / den, -0.5, 0.5))
