"""The ``example-cr`` estimator: the correlation ratio of the moving image given the fixed one.

``eta^2 = 1 - E[Var(m | bin(f))] / Var(m)`` over the masked pixels, with the fixed intensities
cut into ``bins`` equal-width bins between their masked minimum and maximum. It is 1 when the
moving intensity is a function of the (binned) fixed one, whatever the function, and 0 when the
bin means are all equal. Differentiable with respect to ``moving`` (the bins depend on ``fixed``
only).
"""

from __future__ import annotations

import torch


def correlation_ratio(fixed: torch.Tensor, moving: torch.Tensor,
                      mask: torch.Tensor | None = None, *, bins: int) -> torch.Tensor:
    """Correlation ratio ``eta^2(moving | fixed)``, one value per batch item.

    Parameters
    ----------
    fixed, moving : Tensor ``(B, C, H, W)``
        Same spatial size; channels are averaged to grey.
    mask : bool Tensor ``(B, 1, H, W)`` or None
        Pixels to use (all when None).
    bins : int
        Equal-width bins of the fixed intensities (``>= 1``, as the spec declares).

    Returns
    -------
    Tensor ``(B,)``
        In [0, 1]; 0 when the moving image is constant or the mask is empty.
    """
    f = fixed.float().mean(dim=1).flatten(1)
    m = moving.float().mean(dim=1).flatten(1)
    w = (torch.ones_like(f) if mask is None
         else mask.to(device=f.device, dtype=f.dtype).flatten(1))
    big = torch.finfo(f.dtype).max
    lo = torch.where(w > 0, f, big).amin(dim=1, keepdim=True)
    hi = torch.where(w > 0, f, -big).amax(dim=1, keepdim=True)
    span = (hi - lo).clamp_min(1e-12)
    idx = ((f - lo) / span * bins).floor().clamp(0, bins - 1).long()
    # One scatter for the whole batch: bin b of item i goes to slot i * bins + b.
    idx = idx + bins * torch.arange(f.shape[0], device=f.device)[:, None]

    def per_bin(values: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(f.shape[0] * bins, dtype=f.dtype, device=f.device)
        return out.scatter_add(0, idx.flatten(), values.flatten()).view(-1, bins)

    n_k, s_k, q_k = per_bin(w), per_bin(w * m), per_bin(w * m * m)
    n = n_k.sum(dim=1)
    within = (q_k - s_k ** 2 / n_k.clamp_min(1e-12)).sum(dim=1)
    total = q_k.sum(dim=1) - s_k.sum(dim=1) ** 2 / n.clamp_min(1e-12)
    eta = 1 - within / total.clamp_min(1e-12)
    # Constant moving image or empty mask: no variance to explain.
    return torch.where(total > 1e-9 * n.clamp_min(1.0), eta.clamp(0, 1), torch.zeros_like(eta))
