"""Conversions between the dataset layout (numpy ``(H, W[, C])``) and the torch layout
``(B, C, H, W)`` that estimators and methods work in, and device selection."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from mibench.errors import UserError


def image_to_tensor(image: Any, device: torch.device | str | None = None,
                    dtype: torch.dtype = torch.float32, ndim: int = 2) -> torch.Tensor:
    """Return ``(B, C, H, W)`` for images (``ndim=2``) or ``(B, C, D, H, W)`` for volumes
    (``ndim=3``).

    Arrays are channels-last: ``(H, W)`` -> ``(1, 1, H, W)``, ``(H, W, C)`` -> ``(1, C, H, W)``;
    with ``ndim=3``, ``(D, H, W)`` -> ``(1, 1, D, H, W)`` and ``(D, H, W, C)`` -> ``(1, C, D, H,
    W)`` (a 3-D array is ambiguous, hence the argument). Tensors are channels-first: 2, 3 or 4
    dims read as ``(H, W)``, ``(C, H, W)``, ``(B, C, H, W)`` (one more spatial dim for
    volumes). Tensors already on ``device`` with ``dtype`` are not copied.
    """
    if ndim not in (2, 3):
        raise ValueError(f"ndim must be 2 or 3, got {ndim!r}")
    if isinstance(image, torch.Tensor):
        t = image
        if t.ndim == ndim:
            t = t[None, None]
        elif t.ndim == ndim + 1:
            t = t[None]
        elif t.ndim != ndim + 2:
            what = "(H, W), (C, H, W) or (B, C, H, W)" if ndim == 2 else \
                "(D, H, W), (C, D, H, W) or (B, C, D, H, W)"
            raise ValueError(f"expected a tensor {what}, got shape {tuple(t.shape)}")
        return t.to(device=device if device is not None else t.device, dtype=dtype)
    arr = np.asarray(image)
    if arr.ndim == ndim:
        arr = arr[None, None]
    elif arr.ndim == ndim + 1:
        arr = np.moveaxis(arr, -1, 0)[None]
    else:
        what = "(H, W) or (H, W, C)" if ndim == 2 else "(D, H, W) or (D, H, W, C)"
        raise ValueError(f"expected an {what} array, got shape {arr.shape}")
    return torch.from_numpy(np.ascontiguousarray(arr)).to(device=device, dtype=dtype)


def mask_to_tensor(mask: Any, device: torch.device | str | None = None,
                   ndim: int = 2) -> torch.Tensor | None:
    """Return a bool ``(B, 1, H, W)`` mask (``(B, 1, D, H, W)`` with ``ndim=3``; None stays
    None)."""
    if mask is None:
        return None
    return image_to_tensor(mask, device, dtype=torch.float32, ndim=ndim) > 0.5


_DEVICE_HELP = "use auto, cpu, cuda or cuda:N"


def parse_device(name: str | torch.device | None = "auto") -> str:
    """Check the spelling of a device request and return it normalised; no hardware check.

    Accepts ``auto``, ``cpu``, ``cuda`` and ``cuda:N`` (any case, surrounding blanks ignored).
    The driver of a Dask run uses this alone: whether CUDA exists is a question for the workers.
    """
    if isinstance(name, torch.device):
        name = str(name)
    text = (name or "auto").strip().lower()
    if text in ("auto", "cpu", "cuda"):
        return text
    kind, sep, index = text.partition(":")
    if kind == "cuda" and sep and index.isdigit():
        return f"cuda:{int(index)}"
    raise UserError(f"unknown device {name!r} ({_DEVICE_HELP})")


def cuda_device_count() -> int:
    """Number of usable CUDA devices here (0 without CUDA); one place for tests to mock."""
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """The torch device for a request: ``auto`` -> ``cuda`` when available, else ``cpu``.

    ``cuda`` and ``cuda:N`` are checked to exist here; a device that does not is a
    :class:`UserError` (one line, naming the device).
    """
    if isinstance(name, torch.device) and name.type != "cuda":
        return name
    text = parse_device(name)
    if text == "auto":
        return torch.device("cuda" if cuda_device_count() else "cpu")
    device = torch.device(text)
    if device.type == "cuda":
        count = cuda_device_count()
        if not count:
            raise UserError(f"device {text!r} requested but CUDA is not available here")
        if device.index is not None and device.index >= count:
            raise UserError(f"device {text!r} requested but only {count} CUDA device(s) exist "
                            f"(cuda:0 to cuda:{count - 1})")
    return device


def worker_devices(name: str, workers: int, gpu_count: int | None = None) -> list[str]:
    """The device of each of ``workers`` concurrent workers: one GPU per worker, round-robin.

    With ``auto`` or ``cuda`` and ``n > 1`` GPUs, worker ``i`` gets ``cuda:(i mod n)``, so that
    tasks spread over the devices instead of all landing on ``cuda:0``; with one GPU or none,
    and for an explicit ``cpu`` or ``cuda:N``, every worker gets the request unchanged
    (``auto`` and ``cuda`` then resolve in the worker). ``gpu_count`` defaults to the devices
    visible here.
    """
    text = parse_device(name)
    n = cuda_device_count() if gpu_count is None else gpu_count
    if text in ("auto", "cuda") and n > 1:
        return [f"cuda:{i % n}" for i in range(workers)]
    return [text] * workers


class FiniteWatch:
    """Watch an optimisation loss for NaN or infinity without a host-device sync per step.

    ``update(loss, step)`` folds ``isfinite(loss)`` into a flag that stays on the loss's device;
    the flag is read (a sync on CUDA) every ``every`` steps and by :meth:`check`, which raise
    ``RuntimeError`` once a loss was not finite. ``every`` defaults to 1 on the CPU (reading is
    free there, and the error names the exact step) and 50 elsewhere: a non-finite loss then
    costs up to 49 wasted steps before the error, never a silent result.
    """

    def __init__(self, device: torch.device, every: int | None = None):
        self.every = every or (1 if device.type == "cpu" else 50)
        self.ok = torch.ones((), dtype=torch.bool, device=device)
        self.checked = -1  # last step known to be fine

    def update(self, loss: torch.Tensor, step: int) -> None:
        self.ok &= torch.isfinite(loss.detach()).all()
        if (step + 1) % self.every == 0:
            self.check(step)

    def check(self, step: int) -> None:
        if not bool(self.ok):
            where = (f"step {step}" if step == self.checked + 1
                     else f"one of steps {self.checked + 1}-{step}")
            raise RuntimeError(f"the loss became non-finite (nan or inf) at {where}")
        self.checked = step
