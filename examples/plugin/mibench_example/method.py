"""The ``example-shift`` method: translation by phase correlation.

The normalised cross-power spectrum of the two (Hann-windowed) images is an impulse at their
relative shift; its inverse FFT peaks there, and a parabola through the peak and its neighbours
gives the sub-pixel position. On gradient magnitudes (the default) it also works when the moving
image's intensities are inverted. Translation only: the result is a pure shift.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mibench import MatrixTransform, RegistrationOutput


def _gradient_magnitude(image: torch.Tensor) -> torch.Tensor:
    padded = F.pad(image, (1, 1, 1, 1), mode="replicate")
    gx = (padded[..., 1:-1, 2:] - padded[..., 1:-1, :-2]) / 2
    gy = (padded[..., 2:, 1:-1] - padded[..., :-2, 1:-1]) / 2
    return torch.sqrt(gx * gx + gy * gy + 1e-12)


def _subpixel(profile: torch.Tensor, i: int) -> float:
    """Parabolic refinement of the peak at index ``i`` of a 1-D (circular) profile."""
    n = profile.shape[0]
    left, mid, right = (profile[(i + k) % n] for k in (-1, 0, 1))
    denom = float(left - 2 * mid + right)
    return 0.0 if abs(denom) < 1e-12 else 0.5 * float(left - right) / denom


def register(fixed, moving, *, fixed_mask=None, moving_mask=None, seed=0, use_gradient):
    """Estimate the translation ``d`` with ``moving(p + d) = fixed(p)``.

    Parameters
    ----------
    fixed, moving : Tensor ``(1, C, H, W)``
        Same size (phase correlation compares the two grids); channels averaged to grey.
    fixed_mask, moving_mask : ignored
        Phase correlation uses the whole frame.
    seed : int
        Unused (deterministic).
    use_gradient : bool
        Correlate gradient magnitudes instead of intensities.

    Returns
    -------
    RegistrationOutput
        ``MatrixTransform`` ``[[1, 0, dx], [0, 1, dy], [0, 0, 1]]`` (fixed px -> moving px) and
        ``info["peak"]``, the height of the correlation peak (1 = perfect match).
    """
    if fixed.shape[-2:] != moving.shape[-2:]:  # bad input: a ValueError (docs/plugins.md)
        raise ValueError("example-shift needs fixed and moving images of the same size, got "
                         f"{tuple(fixed.shape[-2:])} and {tuple(moving.shape[-2:])}")
    f = fixed.float().mean(dim=1, keepdim=True)
    m = moving.float().mean(dim=1, keepdim=True)
    if use_gradient:
        f, m = _gradient_magnitude(f), _gradient_magnitude(m)
    h, w = f.shape[-2:]
    window = (torch.hann_window(h, periodic=False, device=f.device)[:, None]
              * torch.hann_window(w, periodic=False, device=f.device)[None, :])
    ff = torch.fft.rfft2((f - f.mean()) * window)
    fm = torch.fft.rfft2((m - m.mean()) * window)
    cross = fm * ff.conj()
    corr = torch.fft.irfft2(cross / cross.abs().clamp_min(1e-12), s=(h, w))[0, 0]
    peak = int(torch.argmax(corr))
    iy, ix = divmod(peak, w)
    dy = iy + _subpixel(corr[:, ix], iy)
    dx = ix + _subpixel(corr[iy], ix)
    # Shifts beyond half the frame wrap around to negative ones.
    dy = dy - h if dy > h / 2 else dy
    dx = dx - w if dx > w / 2 else dx
    matrix = [[1.0, 0.0, dx], [0.0, 1.0, dy], [0.0, 0.0, 1.0]]
    return RegistrationOutput(MatrixTransform(matrix), info={"peak": float(corr[iy, ix])})
