"""What a plugin declares: small, static descriptions of estimators, methods and datasets.

A spec is pure metadata plus a *factory*. The factory may be given as a ``"module:attribute"``
string so that listing plugins never imports their (possibly heavy or missing) dependencies; it is
imported only when the plugin is used.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from mibench.errors import UserError


@dataclass(frozen=True)
class Param:
    """One option of a plugin, with its default.

    The type of the option is the type of ``default`` (``bool``, ``int``, ``float``, ``str``),
    unless ``type`` is given. Command-line strings are converted with :meth:`parse`.
    """

    name: str
    default: Any
    help: str = ""
    choices: tuple[Any, ...] | None = None
    type: type | None = None

    @property
    def value_type(self) -> type:
        return self.type or type(self.default)

    def parse(self, text: str) -> Any:
        """Convert a command-line string into a value of this option's type."""
        kind = self.value_type
        try:
            if kind is bool:
                lowered = text.strip().lower()
                if lowered in ("1", "true", "yes", "on"):
                    value: Any = True
                elif lowered in ("0", "false", "no", "off"):
                    value = False
                else:
                    raise ValueError(text)
            elif kind is type(None):
                value = text
            else:
                value = kind(text)
        except ValueError:
            raise UserError(
                f"option {self.name!r} expects a {kind.__name__}, got {text!r}"
            ) from None
        return self.check(value)

    def check(self, value: Any) -> Any:
        """Validate a value given from Python (type coercion of ints to floats, choices)."""
        kind = self.value_type
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        allowed_none = value is None and self.default is None
        if kind is not type(None) and not allowed_none and not isinstance(value, kind):
            raise UserError(
                f"option {self.name!r} expects a {kind.__name__}, got {value!r}"
            )
        if self.choices is not None and value not in self.choices:
            allowed = ", ".join(map(str, self.choices))
            raise UserError(f"option {self.name!r} must be one of {allowed}; got {value!r}")
        return value


@dataclass(frozen=True)
class Requirement:
    """Something a plugin needs at run time: an importable module, or a CUDA device."""

    module: str | None = None
    cuda: bool = False
    hint: str = ""

    def missing(self) -> str | None:
        """Return why the requirement is not met here, or None when it is."""
        if self.module is not None and importlib.util.find_spec(self.module) is None:
            return f"needs the Python package {self.module!r}"
        if self.cuda:
            import torch

            if not torch.cuda.is_available():
                return "needs a CUDA device"
        return None


def load_object(ref: str | Callable) -> Callable:
    """Resolve a ``"package.module:attribute"`` reference (or return a callable unchanged)."""
    if callable(ref):
        return ref
    module_name, _, attr = ref.partition(":")
    module = importlib.import_module(module_name)
    obj: Any = module
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


@dataclass(frozen=True)
class PluginSpec:
    """Common part of every spec. ``plugin`` is filled in by the registry (who provided it)."""

    kind: ClassVar[str] = "plugin"

    name: str
    description: str
    factory: str | Callable = field(repr=False)
    params: tuple[Param, ...] = ()
    requires: tuple[Requirement, ...] = ()
    plugin: str = ""

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        valid = ", ".join(p.name for p in self.params) or "none"
        raise UserError(f"{self.kind} {self.name!r} has no option {name!r} (options: {valid})")

    def defaults(self) -> dict[str, Any]:
        return {p.name: p.default for p in self.params}

    def resolve(self, options: dict[str, Any] | None = None, *, from_text: bool = False) -> dict:
        """Defaults overridden by ``options``; each value checked (or parsed from text)."""
        resolved = self.defaults()
        for key, value in (options or {}).items():
            p = self.param(key)
            text = from_text and isinstance(value, str)
            resolved[key] = p.parse(value) if text else p.check(value)
        return resolved

    def unavailable_reason(self) -> str | None:
        """Why this plugin cannot run here (with the install hint), or None if it can."""
        for req in self.requires:
            why = req.missing()
            if why:
                return f"{why}; {req.hint}" if req.hint else why
        return None

    def load(self) -> Callable:
        """Import and return the factory; a missing requirement is a clear :class:`UserError`."""
        why = self.unavailable_reason()
        if why:
            raise UserError(f"{self.kind} {self.name!r} is unavailable: {why}")
        return load_object(self.factory)


@dataclass(frozen=True)
class EstimatorSpec(PluginSpec):
    """A similarity measure.

    The factory is ``f(fixed, moving, mask=None, **params) -> Tensor`` taking ``(B, C, H, W)``
    float tensors (``mask``: ``(B, 1, H, W)`` bool) and returning one value per batch item,
    shape ``(B,)``. ``higher_is_better`` states the direction; ``differentiable`` whether
    gradients flow to ``moving``.
    """

    kind: ClassVar[str] = "estimator"
    higher_is_better: bool = True
    differentiable: bool = True


@dataclass(frozen=True)
class MethodSpec(PluginSpec):
    """A registration method.

    The factory is ``f(fixed, moving, *, fixed_mask=None, moving_mask=None, seed=0, **params)``
    taking ``(1, C, H, W)`` float32 tensors on the run's device (masks ``(1, 1, H, W)`` bool)
    and returning a :class:`mibench.transform.Transform` (fixed -> moving pixel coordinates)
    or a :class:`mibench.contracts.RegistrationOutput`. ``default`` marks the methods that
    ``mibench run`` uses when no ``--methods`` is given.
    """

    kind: ClassVar[str] = "method"
    default: bool = False


@dataclass(frozen=True)
class DatasetSpec(PluginSpec):
    """A dataset.

    The factory is ``f(data_dir, **params) -> Dataset`` (see :class:`mibench.contracts.Dataset`).
    ``needs_data_dir`` says whether ``--data-dir`` is required; ``layout`` describes the expected
    files and ``source`` where to obtain them (both shown by ``mibench list``).
    """

    kind: ClassVar[str] = "dataset"
    needs_data_dir: bool = True
    layout: str = ""
    source: str = ""
