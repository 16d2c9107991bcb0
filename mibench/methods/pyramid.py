"""Gaussian image and volume pyramids in torch (batched, device-agnostic), for multi-resolution
methods.

Each level is the previous one blurred with a separable Gaussian (``sigma = 2 * downscale / 6``,
scikit-image's ``pyramid_gaussian`` default, kernel truncated at 4 sigma, reflect padding) and
resampled to ``ceil(H / 2) x ceil(W / 2)`` (volumes: ``ceil(D / 2) x ceil(H / 2) x ceil(W / 2)``)
by bilinear (trilinear) interpolation with ``align_corners=True``. That resampling keeps the
*normalised* coordinates ``u = 2x/(W-1) - 1`` of every level aligned with those of the full image,
so one normalised-coordinate transform fits every level (:mod:`mibench.methods.transform_models`).
Every function takes images ``(B, C, H, W)`` or volumes ``(B, C, D, H, W)``.

Levels are returned finest first (level 0 = the input itself).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def gaussian_kernel1d(sigma: float, *, truncate: float = 4.0, dtype=torch.float32,
                      device=None) -> torch.Tensor:
    """A normalised 1-D Gaussian of radius ``ceil(truncate * sigma)`` (as scipy.ndimage)."""
    radius = max(int(math.ceil(truncate * sigma)), 1)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return (k / k.sum()).to(dtype=dtype, device=device)


def _blur_3d(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Separable blur of ``(B, C, D, H, W)`` by the 1-D kernel ``k`` along W, H, then D."""
    b, c, d, h, w = x.shape
    r = (k.numel() - 1) // 2
    y = x.reshape(b * c, 1, d, h, w)
    for axis, size in ((4, w), (3, h), (2, d)):
        pad = [0] * 6
        pad[2 * (4 - axis)] = pad[2 * (4 - axis) + 1] = r
        shape = [1, 1, 1, 1, 1]
        shape[axis] = -1
        y = F.conv3d(F.pad(y, pad, mode="reflect" if size > r else "replicate"), k.view(shape))
    return y.reshape(b, c, d, h, w)


def gaussian_blur(x: torch.Tensor, sigma: float, *, truncate: float = 4.0) -> torch.Tensor:
    """Separable Gaussian blur of ``(B, C, H, W)`` or ``(B, C, D, H, W)``, each channel on its
    own; reflect padding (replicate along an axis too short to reflect; ``reflect`` is scipy's
    ``mode="mirror"``). ``sigma <= 0`` returns ``x``."""
    if sigma <= 0:
        return x
    if x.dim() == 5:
        return _blur_3d(x, gaussian_kernel1d(sigma, truncate=truncate, dtype=x.dtype,
                                             device=x.device))
    b, c, h, w = x.shape
    k = gaussian_kernel1d(sigma, truncate=truncate, dtype=x.dtype, device=x.device)
    r = (k.numel() - 1) // 2
    y = x.reshape(b * c, 1, h, w)
    mode_w = "reflect" if w > r else "replicate"
    mode_h = "reflect" if h > r else "replicate"
    y = F.conv2d(F.pad(y, (r, r, 0, 0), mode=mode_w), k.view(1, 1, 1, -1))
    y = F.conv2d(F.pad(y, (0, 0, r, r), mode=mode_h), k.view(1, 1, -1, 1))
    return y.reshape(b, c, h, w)


def level_shapes(shape: tuple[int, ...], levels: int, min_size: int = 32
                 ) -> list[tuple[int, ...]]:
    """The ``(H, W)`` or ``(D, H, W)`` of each level: at most ``levels`` (>= 1), each ``ceil``
    half the previous, adding a level only while its shortest side stays ``>= min_size``. The
    input is always level 0, even if smaller than ``min_size``."""
    current = tuple(int(s) for s in shape)
    shapes = [current]
    while len(shapes) < max(int(levels), 1):
        current = tuple(math.ceil(s / 2) for s in current)
        if min(current) < min_size:
            break
        shapes.append(current)
    return shapes


def num_levels(shape: tuple[int, ...], levels: int, min_size: int = 32) -> int:
    """How many levels :func:`gaussian_pyramid` builds for an image of ``shape``."""
    return len(level_shapes(shape, levels, min_size))


def downsample(x: torch.Tensor, sigma: float | None = None) -> torch.Tensor:
    """One pyramid step: blur (default ``sigma = 2/3``), resample every spatial side to
    ``ceil(side / 2)`` (bilinear, trilinear for volumes)."""
    sigma = 2 * 2 / 6 if sigma is None else sigma
    size = tuple(math.ceil(s / 2) for s in x.shape[2:])
    mode = "trilinear" if x.dim() == 5 else "bilinear"
    return F.interpolate(gaussian_blur(x, sigma), size=size, mode=mode, align_corners=True)


def gaussian_pyramid(x: torch.Tensor, levels: int, min_size: int = 32, *,
                     sigma: float | None = None, n: int | None = None) -> list[torch.Tensor]:
    """Gaussian pyramid of ``(B, C, H, W)`` or ``(B, C, D, H, W)``, finest first.

    The number of levels is :func:`num_levels` ``(shape, levels, min_size)``, or exactly ``n``
    when given (used to give a fixed and a moving image the same number of levels; ``n`` may
    then take a level below ``min_size``). ``sigma`` defaults to ``2/3`` (skimage's
    ``2 * downscale / 6``).
    """
    count = n if n is not None else num_levels(tuple(x.shape[2:]), levels, min_size)
    out = [x]
    for _ in range(count - 1):
        out.append(downsample(out[-1], sigma))
    return out


def mask_pyramid(mask: torch.Tensor | None, n: int) -> list[torch.Tensor | None]:
    """Bool masks ``(B, 1, H, W)`` or ``(B, 1, D, H, W)`` for ``n`` levels, matching
    :func:`gaussian_pyramid`'s sizes.

    Conservative: a coarse voxel is valid only when the 3x3 (3x3x3) neighbourhood of the fine
    voxels it is interpolated from is valid (min-pool, then bilinear / trilinear resampling
    thresholded at ~1), so the blur hardly mixes invalid voxels in. ``None`` gives
    ``[None] * n``.
    """
    if mask is None:
        return [None] * n
    volume = mask.dim() == 5
    pool = F.max_pool3d if volume else F.max_pool2d
    mode = "trilinear" if volume else "bilinear"
    out = [mask.bool()]
    for _ in range(n - 1):
        m = out[-1].float()
        eroded = -pool(-m, kernel_size=3, stride=1, padding=1)
        size = tuple(math.ceil(s / 2) for s in m.shape[2:])
        coarse = F.interpolate(eroded, size=size, mode=mode, align_corners=True)
        out.append(coarse > 0.999)
    return out
