"""Conversions between the dataset layout (numpy ``(H, W[, C])``) and the torch layout
``(B, C, H, W)`` that estimators and methods work in, and device selection."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from mibench.errors import UserError


def image_to_tensor(image: Any, device: torch.device | str | None = None,
                    dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Return ``(B, C, H, W)``: arrays ``(H, W)`` -> ``(1, 1, H, W)``, ``(H, W, C)`` ->
    ``(1, C, H, W)``; tensors of 2, 3 or 4 dims are read as ``(H, W)``, ``(C, H, W)``,
    ``(B, C, H, W)``. Tensors already on ``device`` with ``dtype`` are not copied."""
    if isinstance(image, torch.Tensor):
        t = image
        if t.ndim == 2:
            t = t[None, None]
        elif t.ndim == 3:
            t = t[None]
        elif t.ndim != 4:
            raise ValueError(f"expected a tensor of 2, 3 or 4 dims, got shape {tuple(t.shape)}")
        return t.to(device=device if device is not None else t.device, dtype=dtype)
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = arr[None, None]
    elif arr.ndim == 3:
        arr = np.moveaxis(arr, -1, 0)[None]
    else:
        raise ValueError(f"expected an (H, W) or (H, W, C) array, got shape {arr.shape}")
    return torch.from_numpy(np.ascontiguousarray(arr)).to(device=device, dtype=dtype)


def mask_to_tensor(mask: Any, device: torch.device | str | None = None) -> torch.Tensor | None:
    """Return a bool ``(B, 1, H, W)`` mask (None stays None)."""
    if mask is None:
        return None
    return image_to_tensor(mask, device, dtype=torch.float32) > 0.5


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """``auto`` -> ``cuda`` when available, else ``cpu``; ``cuda``/``cuda:N`` checked to exist."""
    if isinstance(name, torch.device):
        return name
    name = (name or "auto").strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device {name!r} (use auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"device {name!r} requested but CUDA is not available here")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(
                f"device {name!r} requested but only {torch.cuda.device_count()} CUDA "
                "device(s) exist"
            )
    elif device.type != "cpu":
        raise UserError(f"unsupported device {name!r} (use auto, cpu, cuda or cuda:N)")
    return device
