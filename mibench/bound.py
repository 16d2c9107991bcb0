"""Plugins bound to their options: ready-to-call estimators and methods.

These are what ``mibench.estimator(...)`` and ``mibench.method(...)`` return, and what the runner
calls, so the Python API and a benchmark run go through one code path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mibench.contracts import RegistrationOutput
from mibench.errors import UserError
from mibench.specs import EstimatorSpec, MethodSpec
from mibench.transform import Transform


@dataclass
class Estimator:
    """A similarity measure with its options fixed.

    Call it with two ``(B, C, H, W)`` tensors (returns a ``(B,)`` tensor) or two 2-D / ``(H, W, C)``
    numpy arrays (returns a float). ``higher_is_better`` tells the direction of the value.
    """

    spec: EstimatorSpec
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def higher_is_better(self) -> bool:
        return self.spec.higher_is_better

    def __call__(self, fixed: Any, moving: Any, mask: Any = None):
        from mibench.tensors import image_to_tensor, mask_to_tensor

        fn = self.spec.load()
        if isinstance(fixed, np.ndarray) or isinstance(moving, np.ndarray):
            f, m = image_to_tensor(fixed), image_to_tensor(moving)
            if f.shape != m.shape:
                raise UserError(
                    f"fixed and moving images differ in shape: {tuple(fixed.shape)} vs "
                    f"{tuple(np.shape(moving))}"
                )
            value = self._checked(fn(f, m, mask=mask_to_tensor(mask), **self.params), f)
            return float(value[0])
        mask_t = mask_to_tensor(mask, fixed.device) if mask is not None else None
        return self._checked(fn(fixed, moving, mask=mask_t, **self.params), fixed)

    def _checked(self, value: Any, fixed: Any) -> Any:
        """The estimator's value if it keeps the contract (a tensor ``(B,)`` on the inputs'
        device), else a :class:`UserError` naming the estimator and its plugin: a scalar, a
        per-pixel map or a Python float would otherwise be reduced, indexed or crash far from
        the plugin's code. Shape and device are metadata, so this never synchronises a GPU."""
        import torch

        batch = fixed.shape[0] if getattr(fixed, "ndim", 0) == 4 else None
        if not isinstance(value, torch.Tensor):
            got = f"{type(value).__name__} {value!r:.40}" if isinstance(value, (int, float)) \
                else type(value).__name__
            problem = f"returned a {got}"
        elif value.ndim != 1 or (batch is not None and value.shape[0] != batch):
            problem = f"returned a tensor of shape {tuple(value.shape)}"
        elif isinstance(fixed, torch.Tensor) and value.device != fixed.device:
            problem = f"returned a tensor on {value.device} for inputs on {fixed.device}"
        else:
            return value
        want = f"({batch},)" if batch is not None else "(B,)"
        raise UserError(
            f"estimator {self.name!r} (plugin {self.spec.plugin!r}) {problem}; expected a tensor "
            f"of shape (B,) = {want}, one value per batch item, on the inputs' device"
        )


@dataclass
class Method:
    """A registration method with its options fixed, bound to a device.

    Call it with fixed and moving images (numpy ``(H, W[, C])`` in [0, 1], or ``(1, C, H, W)``
    tensors) and optional bool masks; it returns a :class:`RegistrationOutput` whose transform maps
    fixed pixel coordinates to moving pixel coordinates.
    """

    spec: MethodSpec
    params: dict[str, Any] = field(default_factory=dict)
    device: Any = "cpu"

    @property
    def name(self) -> str:
        return self.spec.name

    def warm_up(self) -> None:
        """Import the method and run its optional ``warm_up()`` (a no-argument attribute of the
        factory function: e.g. loading a toolbox's libraries), so that one-off start-up costs
        stay out of the timed registration. The runner calls it before starting the clock."""
        hook = getattr(self.spec.load(), "warm_up", None)
        if callable(hook):
            hook()

    def __call__(self, fixed: Any, moving: Any, *, fixed_mask: Any = None,
                 moving_mask: Any = None, seed: int = 0) -> RegistrationOutput:
        from mibench.tensors import image_to_tensor, mask_to_tensor, resolve_device

        device = resolve_device(self.device)
        fn = self.spec.load()
        out = fn(
            image_to_tensor(fixed, device),
            image_to_tensor(moving, device),
            fixed_mask=mask_to_tensor(fixed_mask, device),
            moving_mask=mask_to_tensor(moving_mask, device),
            seed=seed,
            **self.params,
        )
        if isinstance(out, RegistrationOutput):
            if not isinstance(out.transform, Transform):
                raise TypeError(
                    f"method {self.name!r} returned a RegistrationOutput whose transform is of "
                    f"type {type(out.transform).__name__}; expected a Transform (e.g. "
                    "mibench.transform.MatrixTransform(matrix))")
            return out
        if isinstance(out, Transform):
            return RegistrationOutput(out)
        raise TypeError(
            f"method {self.name!r} returned {type(out).__name__}; expected a Transform or "
            "RegistrationOutput"
        )
