"""What every estimator checks and does first: the shapes of a pair, and the compute dtype.

Shared by the estimators (:mod:`.basic`, :mod:`.binning`, :mod:`.mine`) and by the Python API's
check of its inputs (:class:`mibench.callables.Estimator`), so that a pair no estimator can score
gets the same ``ValueError`` wherever it is caught.
"""

from __future__ import annotations

import torch

#: The tensor layouts a pair may have, by number of dimensions: images and volumes.
LAYOUTS = {4: "(B, C, H, W)", 5: "(B, C, D, H, W)"}


def check_pair_shapes(fixed: torch.Tensor, moving: torch.Tensor, *,
                      same_batch: bool = False) -> None:
    """Raise ``ValueError`` unless ``fixed`` and ``moving`` are both ``(B, C, H, W)`` image
    batches or both ``(B, C, D, H, W)`` volume batches, of the same spatial size, whose batch
    sizes are equal or one of them 1 (broadcast); equal batch sizes only with ``same_batch``.
    Channel counts may differ."""
    shapes = f"{tuple(fixed.shape)} and {tuple(moving.shape)}"
    if fixed.ndim not in LAYOUTS or moving.ndim != fixed.ndim:
        allowed = " or ".join(f"both {layout}" for layout in LAYOUTS.values())
        raise ValueError(f"expected {allowed} tensors, got {shapes}")
    bf, bm = fixed.shape[0], moving.shape[0]
    if bf != bm and (same_batch or 1 not in (bf, bm)):
        how = "differ" if same_batch else "do not broadcast"
        raise ValueError(f"batch sizes {bf} and {bm} {how}")
    if fixed.shape[2:] != moving.shape[2:]:
        raise ValueError(f"fixed and moving differ in size: {shapes}")


def compute_dtype(fixed: torch.Tensor, moving: torch.Tensor) -> torch.dtype:
    """The dtype a pair is computed in: the promoted dtype, at least float32 (half precision and
    integer images are computed in float32, float64 stays float64)."""
    dtype = torch.promote_types(fixed.dtype, moving.dtype)
    if not dtype.is_floating_point or torch.finfo(dtype).bits < 32:
        dtype = torch.float32
    return dtype
