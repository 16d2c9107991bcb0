"""What a plugin declares: small, static descriptions of estimators, methods and datasets.

A spec is pure metadata plus a *factory*. The factory may be given as a ``"module:attribute"``
string so that listing plugins never imports their (possibly heavy or missing) dependencies; it is
imported only when the plugin is used.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any, ClassVar

from mibench.errors import UserError, plugin_label


def _article(word: str) -> str:
    """``"a"`` or ``"an"`` before ``word`` (by its first letter: "an int", "a float")."""
    return "an" if word[:1].lower() in "aeiou" else "a"


@dataclass(frozen=True)
class Param:
    """One option of a plugin, with its default.

    The type of the option is the type of ``default`` (``bool``, ``int``, ``float``, ``str``),
    unless ``type`` is given. Command-line strings are converted with :meth:`parse`; values
    given from Python are checked with :meth:`check`.

    Numeric options (``int`` or ``float``) may declare bounds, each None (no bound) or a
    number: ``ge`` (value >= ge, inclusive lower bound), ``gt`` (value > gt, exclusive lower
    bound), ``le`` (value <= le, inclusive upper bound) and ``lt`` (value < lt, exclusive upper
    bound). At most one lower and one upper bound; e.g. a count ``ge=1``, a learning rate
    ``gt=0``, a share ``ge=0, le=1``, a decay ``ge=0, lt=1``. NaN fails every bound, and so
    does infinity. A None value (the default of a "use a preset unless set" option) is not
    checked.
    """

    name: str
    default: Any
    help: str = ""
    choices: tuple[Any, ...] | None = None
    type: type | None = None
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def __post_init__(self):
        if self.type is not None and not isinstance(self.type, type):
            raise TypeError(f"option {self.name!r}: type must be a type (bool, int, float, str), "
                            f"got {self.type!r}")
        if self.choices is not None and (isinstance(self.choices, (str, bytes))
                                         or not isinstance(self.choices, Collection)):
            raise TypeError(f"option {self.name!r}: choices must be a tuple of values, got "
                            f"{self.choices!r}")
        if self.type is not None and self.default is not None \
                and not _fits(self.type, self.default):
            raise TypeError(f"option {self.name!r}: the default {self.default!r} is not "
                            f"{_article(self.type.__name__)} {self.type.__name__}")
        if self.choices is not None and self.default is not None \
                and self.default not in self.choices:
            raise ValueError(f"option {self.name!r}: the default {self.default!r} is not one of "
                             f"its choices ({', '.join(map(str, self.choices))})")
        if self.ge is not None and self.gt is not None:
            raise ValueError(f"option {self.name!r}: give ge or gt, not both")
        if self.le is not None and self.lt is not None:
            raise ValueError(f"option {self.name!r}: give le or lt, not both")
        if self.has_bounds:
            if self.value_type not in (int, float):
                raise TypeError(f"option {self.name!r}: bounds need an int or float option, "
                                f"not {self.value_type.__name__}")
            if self.default is not None and self.bounds_error(self.default) is not None:
                raise ValueError(f"option {self.name!r}: the default {self.default!r} is out "
                                 f"of its own bounds ({self.bounds_text})")

    @property
    def value_type(self) -> type:
        return self.type or type(self.default)

    @property
    def has_bounds(self) -> bool:
        return any(b is not None for b in (self.ge, self.gt, self.le, self.lt))

    @property
    def bounds_text(self) -> str:
        """The bounds in words: ``">= 1"``, ``"> 0"``, ``"in [0, 1)"``; ``""`` without bounds."""
        low = self.ge if self.ge is not None else self.gt
        high = self.le if self.le is not None else self.lt
        if low is not None and high is not None:
            left = "[" if self.ge is not None else "("
            right = "]" if self.le is not None else ")"
            return f"in {left}{low}, {high}{right}"
        if low is not None:
            return f"{'>=' if self.ge is not None else '>'} {low}"
        if high is not None:
            return f"{'<=' if self.le is not None else '<'} {high}"
        return ""

    def bounds_error(self, value: Any) -> str | None:
        """Why ``value`` is out of bounds (one line), or None when it is within them."""
        if not self.has_bounds or value is None:
            return None
        # Written as "not (value >= bound)" so that NaN fails every bound.
        ok = ((self.ge is None or value >= self.ge) and (self.gt is None or value > self.gt)
              and (self.le is None or value <= self.le) and (self.lt is None or value < self.lt))
        # A bounded option is a size, a rate or a share: infinity is never meant.
        if ok and not (isinstance(value, float) and math.isinf(value)):
            return None
        return f"option {self.name!r} must be {self.bounds_text}, got {value!r}"

    def parse(self, text: str) -> Any:
        """Convert a command-line string into a value of this option's type, then check it."""
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
                f"option {self.name!r} expects {_article(kind.__name__)} {kind.__name__}, "
                f"got {text!r}"
            ) from None
        return self.check(value)

    def check(self, value: Any) -> Any:
        """Validate a value given from Python: type (ints are coerced to floats for a float
        option), choices and bounds. Raises :class:`UserError` (one line)."""
        kind = self.value_type
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        allowed_none = value is None and self.default is None
        if kind is not type(None) and not allowed_none and not _fits(kind, value):
            raise UserError(
                f"option {self.name!r} expects {_article(kind.__name__)} {kind.__name__}, "
                f"got {value!r}"
            )
        if self.choices is not None and value not in self.choices:
            allowed = ", ".join(map(str, self.choices))
            raise UserError(f"option {self.name!r} must be one of {allowed}; got {value!r}")
        why = self.bounds_error(value)
        if why:
            raise UserError(why)
        return value


def _fits(kind: type, value: Any) -> bool:
    """Whether ``value`` is a value of an option of type ``kind``: an int is a float too, a bool
    is not an int."""
    number = not isinstance(value, bool)
    return ((isinstance(value, kind) and (kind is not int or number))
            or (kind is float and isinstance(value, int) and number))


@dataclass(frozen=True)
class Requirement:
    """Something a plugin needs at run time: an importable module, or a CUDA device."""

    module: str | None = None
    cuda: bool = False
    hint: str = ""

    def missing(self) -> str | None:
        """Return why the requirement is not met here, or None when it is."""
        if self.module is not None:
            try:
                # find_spec("pkg.sub") imports pkg, and raises when pkg is missing.
                found = importlib.util.find_spec(self.module) is not None
            except (ImportError, ValueError):
                found = False
            if not found:
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
    """Common part of every spec. ``plugin`` is filled in by the registry (who provided it).

    ``quiet`` names options left out of :meth:`resolve`'s result unless given: task keys hash
    the resolved options, so an option added later would change the key of every existing task
    (nothing would be resumed); a quiet one keeps them, and the factory takes its default when
    the option is absent. One given explicitly, even at its default, stays.
    """

    kind: ClassVar[str] = "plugin"

    name: str
    description: str
    factory: str | Callable = field(repr=False)
    params: tuple[Param, ...] = ()
    requires: tuple[Requirement, ...] = ()
    plugin: str = ""
    quiet: tuple[str, ...] = ()

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        valid = ", ".join(p.name for p in self.params) or "none"
        raise UserError(f"{self.kind} {self.name!r} has no option {name!r} (options: {valid})")

    def defaults(self) -> dict[str, Any]:
        return {p.name: p.default for p in self.params}

    def resolve(self, options: dict[str, Any] | None = None, *, from_text: bool = False) -> dict:
        """Defaults overridden by ``options``; each value checked (or parsed from text).

        An invalid value is a :class:`UserError` naming the plugin, e.g. ``method 'ncc': option
        'lr' must be > 0, got -1.0``.
        """
        resolved = self.defaults()
        for key, value in (options or {}).items():
            p = self.param(key)
            text = from_text and isinstance(value, str)
            try:
                resolved[key] = p.parse(value) if text else p.check(value)
            except UserError as exc:
                # Name the plugin: "method 'ncc': option 'lr' must be > 0, got -1.0".
                raise UserError(f"{self.kind} {self.name!r}: {exc}") from None
        given = set(options or ())
        return {k: v for k, v in resolved.items() if k not in self.quiet or k in given}

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
        try:
            return load_object(self.factory)
        except Exception as exc:  # a missing module or attribute, an error in the module
            why = next(iter(str(exc).splitlines()), "")
            raise UserError(f"{plugin_label(self)}: cannot load its factory {self.factory!r}: "
                            f"{type(exc).__name__}: {why}") from exc


@dataclass(frozen=True)
class Registration:
    """How the registration method derived from an estimator uses it (issue 18).

    Every estimator gives a method of its name (:mod:`mibench.methods.derived`) whose options
    are the engine's plus the estimator's; this says which of the estimator's options the
    method offers and with which registration defaults.

    Attributes
    ----------
    options : tuple of str, or None
        The estimator options the method offers, in the estimator's order; None = all. The
        others keep the estimator's defaults.
    defaults : tuple of Param
        Estimator options redeclared for registration: another default (a differentiable
        kernel), narrower bounds, other help. Each must name an offered option.
    differentiable_when : tuple of (str, tuple) pairs
        For an estimator with ``differentiable=False``: the option values under which it has a
        gradient after all, e.g. ``(("kernel", ("linear", "cubic")),)``; the method then uses
        the gradient engine, else the derivative-free one.
    default : bool
        The method is in the set ``mibench run`` uses without ``--methods`` (built-ins only).
    """

    options: tuple[str, ...] | None = None
    defaults: tuple[Param, ...] = ()
    differentiable_when: tuple[tuple[str, tuple[Any, ...]], ...] = ()
    default: bool = False

    def offers(self, name: str) -> bool:
        """Whether the derived method offers the estimator option ``name``."""
        return self.options is None or name in self.options


@dataclass(frozen=True)
class EstimatorSpec(PluginSpec):
    """A similarity measure.

    The factory is ``f(fixed, moving, mask=None, **params) -> Tensor`` taking ``(B, C, H, W)``
    float tensors (``mask``: ``(B, 1, H, W)`` bool) and returning one value per batch item,
    shape ``(B,)``. ``higher_is_better`` states the direction; ``differentiable`` whether
    gradients flow to ``moving``.

    ``derive_method`` (default True): mibench derives a registration method of the same name
    from the estimator (gradient engine when differentiable, derivative-free otherwise; see
    :mod:`mibench.methods.derived`), unless a method of that name exists. ``registration``
    tunes it (:class:`Registration`). ``uses_seed`` (default True): whether the estimator's value
    depends on the global random generators (which a registration task seeds with its seed);
    a deterministic estimator sets it False, and so does the method derived from it.

    ``dims`` (default ``(2,)``): the spatial dimensionalities the estimator scores; ``(2, 3)``
    when it also takes volumes ``(B, C, D, H, W)`` (masks ``(B, 1, D, H, W)``). The method
    derived from it registers the same dimensionalities.
    """

    kind: ClassVar[str] = "estimator"
    higher_is_better: bool = True
    differentiable: bool = True
    derive_method: bool = True
    uses_seed: bool = True
    dims: tuple[int, ...] = (2,)
    registration: Registration = field(default_factory=Registration)

    def registration_params(self) -> tuple[Param, ...]:
        """The estimator options the derived method offers, with its registration defaults."""
        redeclared = {p.name: p for p in self.registration.defaults}
        return tuple(redeclared.get(p.name, p) for p in self.params
                     if self.registration.offers(p.name))

    def differentiable_with(self, options: dict[str, Any]) -> bool:
        """Whether gradients flow to ``moving`` with these (resolved) options."""
        when = self.registration.differentiable_when
        return self.differentiable or (bool(when) and all(options.get(name) in values
                                                          for name, values in when))


@dataclass(frozen=True)
class MethodSpec(PluginSpec):
    """A registration method.

    The factory is ``f(fixed, moving, *, fixed_mask=None, moving_mask=None, seed=0, **params)``
    taking ``(1, C, H, W)`` float32 tensors on the run's device (masks ``(1, 1, H, W)`` bool)
    and returning a :class:`mibench.transform.Transform` (fixed -> moving pixel coordinates)
    or a :class:`mibench.transform.RegistrationOutput`. ``default`` marks the methods that
    ``mibench run`` uses when no ``--methods`` is given. ``needs_content`` (default True): the
    method reads the images, so an image that is constant inside its mask (nothing to align)
    fails the task with that reason instead of letting the method follow rounding noise; a
    method that ignores the images (the ``identity`` baseline) sets it False.

    Two flags tell the reports what a method is for, so that no report code names a plugin:
    ``preferred_reference`` marks the method the others are tested against when it ran and no
    ``--reference`` was given (the method a benchmark is about: ``drmime``); ``baseline`` marks a
    method that does not register (``identity``: the initial error), listed apart and never
    chosen as the reference automatically.

    ``derived_from`` names the estimator a method was derived from (:mod:`mibench.methods.derived`
    fills it in; ``""`` for a written method).

    ``uses_seed`` (default True) says whether the method's result depends on its ``seed``. A
    method that is deterministic given its inputs sets it False: a run with several seeds then
    runs it once (with the first seed) and the reports reuse that result for every seed. When it
    depends on the options, ``uses_seed`` is a function of the resolved options (picklable: a
    module-level function) returning that bool; :meth:`seeded` answers either way.

    ``dims`` (default ``(2,)``): the spatial dimensionalities the method registers. A method
    whose ``dims`` include 3 also takes volumes ``(1, C, D, H, W)`` (masks ``(1, 1, D, H, W)``)
    and returns a 4x4 transform for them, and is always called with two more keyword
    arguments, ``fixed_geometry`` and ``moving_geometry`` (:class:`mibench.geometry.Geometry`
    or None: voxel spacing, origin and direction, for methods that work in physical space). A
    run leaves out, with a message, the methods that do not register its pairs' dimension.
    """

    kind: ClassVar[str] = "method"
    default: bool = False
    needs_content: bool = True
    preferred_reference: bool = False
    baseline: bool = False
    derived_from: str = ""
    uses_seed: bool | Callable[[dict[str, Any]], bool] = True
    dims: tuple[int, ...] = (2,)

    def seeded(self, params: dict[str, Any]) -> bool:
        """Whether the method, run with the resolved options ``params``, uses its seed."""
        return bool(self.uses_seed(params) if callable(self.uses_seed) else self.uses_seed)


#: The evaluation protocols a dataset may declare (:attr:`DatasetSpec.protocol`).
PROTOCOLS = ("", "fire", "anhir")

#: The spatial dimensionalities a method or an estimator may declare in ``dims``.
SPATIAL_DIMS = (2, 3)


@dataclass(frozen=True)
class DatasetSpec(PluginSpec):
    """A dataset.

    The factory is ``f(data_dir, **params) -> Dataset`` (see :class:`mibench.pairs.Dataset`).
    ``needs_data_dir`` says whether ``--data-dir`` is required; ``layout`` describes the expected
    files and ``source`` where to obtain them (both shown by ``mibench list``). ``protocol``
    names the evaluation protocol whose metrics apply to the dataset's pairs (``"fire"``: FIRE's
    success curve over pixel thresholds; ``"anhir"``: ANHIR's rTRE ranks; ``""``: neither, only
    the protocol-free landmark errors and NAED). ``dims`` (default ``(2,)``): the spatial
    dimensionalities of its pairs, ``(3,)`` for volumes, ``(2, 3)`` when options decide; a run
    selects only the methods that register one of them.
    """

    kind: ClassVar[str] = "dataset"
    needs_data_dir: bool = True
    dims: tuple[int, ...] = (2,)
    layout: str = ""
    source: str = ""
    protocol: str = ""
