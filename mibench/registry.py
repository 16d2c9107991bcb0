"""The plugin manager: finds built-in and third-party plugins and looks specs up by name.

Built-ins (``mibench.estimators``, ``mibench.methods``, ``mibench.datasets``) are registered
through the same hooks as plugins found in the entry-point group ``mibench`` and modules named
with ``--plugin`` / ``plugins=``.

Every plugin is checked when it is registered, so that a plugin author's mistake is one line
naming the plugin rather than a traceback from whichever command first calls the hook: unknown
hook names (a typo) and hook-like functions without ``@hookimpl``, hooks that take arguments,
raise, or return anything but a list of specs of their kind, spec names that are not valid
names, and names another plugin already provides (case-insensitively). The hooks are called
once, at registration: they return plain metadata, and a plugin is accepted or refused as a
whole, so a half-working plugin never runs. One hook, ``mibench_derived_methods``, is called
later, with every estimator of every plugin: it gives each estimator a registration method
(:meth:`Registry.derived_methods`); a method a plugin writes wins over a derived one of its name.

A problem in an installed plugin (entry point) must not break mibench: the plugin is left out and
recorded in :attr:`Registry.broken` (``mibench list`` shows it, an unknown name mentions it). A
problem in a plugin the user named (``--plugin``, ``plugins=``, :meth:`Registry.register`) is a
:class:`UserError`, unless the registry was made with ``strict=False`` (what ``mibench list``
does, to list it as broken next to everything that works).
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import importlib.metadata
import re
from collections.abc import Iterable
from typing import Any

import pluggy

from mibench import hookspecs
from mibench.errors import UserError
from mibench.specs import (
    PROTOCOLS,
    SPATIAL_DIMS,
    DatasetSpec,
    EstimatorSpec,
    MethodSpec,
    Param,
    PluginSpec,
    Registration,
    Requirement,
    _article,
)

ENTRY_POINT_GROUP = "mibench"
BUILTIN_PLUGINS = ("mibench.estimators", "mibench.methods", "mibench.datasets")
KINDS = {"estimator": "mibench_estimators", "method": "mibench_methods",
         "dataset": "mibench_datasets"}
SPEC_TYPES = {"estimator": EstimatorSpec, "method": MethodSpec, "dataset": DatasetSpec}
#: What a spec name may be: users type it after --methods (a comma list), -O METHOD.KEY=VALUE
#: and in file names of records, and look-ups lower-case what they are given.
NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]*")
NAME_RULE = ("lower-case letters, digits, '-', '_' and '.', starting with a letter or digit")
#: A factory reference: ``"package.module:function"`` (the attribute may be dotted).
FACTORY_RE = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
#: Method names that ``--methods`` reads as a selection, not as a method.
RESERVED = {"method": {"all", "default"}}
#: The hook that derives methods from the estimators (called with them, not at registration).
DERIVED_HOOK = "mibench_derived_methods"


class PluginError(Exception):
    """A problem in one plugin (internal: becomes a :class:`UserError` or a broken entry)."""


def _first_line(text: str, limit: int = 200) -> str:
    """The first non-blank line of ``text``, cut to ``limit`` characters (an import error's
    message can run over many lines of source)."""
    line = next((s.strip() for s in str(text).splitlines() if s.strip()), "")
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _describe(obj: Any) -> str:
    """``a MethodSpec``, ``a str ('devimpl:ident')``: what a hook returned, briefly."""
    if obj is None:
        return "None"
    kind = type(obj).__name__
    shown = f" ({obj!r:.40})" if isinstance(obj, (str, int, float)) else ""
    return f"{_article(kind)} {kind}{shown}"


def split_plugin_names(plugins: Iterable[str] | str) -> tuple[str, ...]:
    """``["a,b", "c"]`` -> ``("a", "b", "c")``: ``--plugin a,b`` works like ``--methods a,b``,
    and a single string (``plugins="mypkg.plugin"``) is one module, not its characters."""
    if isinstance(plugins, str):
        plugins = [plugins]
    names = (part.strip() for item in plugins for part in str(item).split(","))
    return tuple(dict.fromkeys(n for n in names if n))


class Registry:
    """All plugins of one process.

    Parameters
    ----------
    plugins : iterable of str, or str
        Extra plugin modules to import and register by dotted name (``--plugin``); an item may
        hold several, separated by commas.
    entry_points : bool
        Load third-party plugins from the ``mibench`` entry-point group.
    strict : bool
        True: a problem in one of ``plugins`` (or a plugin given to :meth:`register`) raises a
        :class:`UserError` naming the plugin. False: it is recorded in :attr:`broken` like a
        broken entry point, and the rest of the registry works (``mibench list``).
    """

    def __init__(self, plugins: Iterable[str] | str = (), *, entry_points: bool = True,
                 strict: bool = True):
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.strict = strict
        #: plugin name -> one-line reason, for plugins that failed to load (left out)
        self.broken: dict[str, str] = {}
        #: plugin name -> kind -> its specs, in registration order (built-ins first)
        self._provided: dict[str, dict[str, list[PluginSpec]]] = {}
        #: the methods derived from the estimators, each with the plugin it is listed after;
        #: None until looked up after a change
        self._derived: list[tuple[str, MethodSpec]] | None = None
        self.extra_plugins = split_plugin_names(plugins)
        for name in BUILTIN_PLUGINS:
            # Ours: a problem here is a bug in mibench, so it always raises.
            self._add(importlib.import_module(name), name, strict=True)
        if entry_points:
            self._load_entry_points()
        for name in self.extra_plugins:
            self.register_module(name)

    # ------------------------------------------------------------------ registration

    def _load_entry_points(self) -> None:
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            if self.pm.is_blocked(ep.name):
                continue
            try:
                plugin = ep.load()
            except Exception as exc:  # a broken third-party plugin must not break mibench
                self.broken[ep.name] = _first_line(f"failed to import {ep.value}: {exc}")
                continue
            # Each package chooses its entry-point name: a second package with a name already
            # taken is registered under its module path rather than dropped without a word.
            name = ep.name if self.pm.get_plugin(ep.name) is None else ep.value
            self._add(plugin, name, strict=False)

    def register_module(self, module_name: str) -> None:
        """Import a module by name and register it as a plugin."""
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:  # SyntaxError, or an error raised by the module at import
            why = exc if isinstance(exc, ImportError) else f"{type(exc).__name__}: {exc}"
            why = _first_line(f"cannot import plugin module {module_name!r}: {why}")
            self._refuse(module_name, why, self.strict, prefix=False)
            return
        if self.pm.get_plugin(module_name) is None and not self.pm.is_registered(module):
            self._add(module, module_name, strict=self.strict)

    def register(self, plugin: object, name: str | None = None) -> str:
        """Register a plugin object (a module or any object with hook implementations).

        It is checked as described in the module docstring; a problem is a :class:`UserError`
        naming the plugin (with ``strict=False``: recorded in :attr:`broken`).
        """
        name = name or self.pm.get_canonical_name(plugin)
        self._add(plugin, name, strict=self.strict)
        return name

    def unregister(self, name: str) -> None:
        self.pm.unregister(name=name)
        self._provided.pop(name, None)
        self._derived = None

    def _add(self, plugin: object, name: str, *, strict: bool) -> None:
        """Register ``plugin`` under ``name`` and collect its specs, or refuse it whole."""
        if self.pm.is_registered(plugin):
            return  # already in (e.g. named by two entry points): its specs are collected
        try:
            self.pm.register(plugin, name=name)
        except ValueError:  # pluggy: the name is taken (a different object under it)
            self._refuse(name, "the name is already taken by another plugin", strict)
            return
        except pluggy.PluginValidationError as exc:
            # pluggy's message is several lines ("Plugin 'x' for hook 'y'", the definition,
            # the problem): the first repeats what our prefix says, the rest go on one line.
            lines = [s.strip() for s in str(exc).splitlines() if s.strip()]
            why = "; ".join(lines[1:] or lines)
            if "Argument(s)" in why:
                why += (" (mibench hooks take no arguments, but "
                        f"{DERIVED_HOOK}(estimators))")
            if self.pm.get_plugin(name) is not None:  # older pluggy registers part of it
                self.pm.unregister(name=name)
            self._refuse(name, f"invalid hook implementation: {why}", strict)
            return
        try:
            self._check_hook_names(plugin)
            provided = self._collect(name)
        except PluginError as exc:
            self.pm.unregister(name=name)
            self._refuse(name, str(exc), strict)
            return
        self._provided[name] = provided
        self._derived = None  # derived again at the next look-up, with this plugin's estimators

    def _refuse(self, name: str, why: str, strict: bool, *, prefix: bool = True) -> None:
        if strict:
            raise UserError(f"plugin {name!r}: {why}" if prefix else why)
        self.broken[name] = why

    def _check_hook_names(self, plugin: object) -> None:
        """A misspelt hook or a hook without ``@hookimpl`` would otherwise register nothing
        and say nothing. pluggy's ``check_pending()`` finds the first (for all plugins at
        once); this is the same check for one plugin, plus the second."""
        hooks = [*KINDS.values(), DERIVED_HOOK]
        for caller in self.pm.get_hookcallers(plugin) or ():
            if caller.has_spec():
                continue
            if any(impl.plugin is plugin and not impl.optionalhook
                   for impl in caller.get_hookimpls()):
                close = difflib.get_close_matches(caller.name, hooks, n=1)
                hint = f" (did you mean {close[0]}?)" if close else ""
                raise PluginError(f"unknown hook {caller.name}{hint}; the hooks are "
                                  f"{', '.join(hooks)}")
        for attr in dir(plugin):
            if not attr.startswith(f"{hookspecs.PROJECT}_"):
                continue
            try:
                obj = getattr(plugin, attr)
            except Exception:
                continue
            marked = self.pm.parse_hookimpl_opts(plugin, attr) is not None
            looks_like_hook = difflib.get_close_matches(attr, hooks, n=1, cutoff=0.85)
            if callable(obj) and not marked and looks_like_hook:
                raise PluginError(f"{attr} is not marked with @mibench.hookimpl, so mibench "
                                  "does not call it")

    def _collect(self, name: str) -> dict[str, list[PluginSpec]]:
        """Call the plugin's hooks and check what they return (see the module docstring)."""
        provided: dict[str, list[PluginSpec]] = {}
        for kind, hook_name in KINDS.items():
            spec_type = SPEC_TYPES[kind]
            own: dict[str, PluginSpec] = {}
            # A method derived so far counts as taken: a later plugin cannot replace ncc.
            taken = {spec.name.lower(): spec for spec in self._all(kind)}
            for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
                if impl.plugin_name != name:
                    continue
                try:
                    result = impl.function()
                except Exception as exc:
                    raise PluginError(_first_line(f"{hook_name}() raised "
                                                  f"{type(exc).__name__}: {exc}")) from None
                if not isinstance(result, (list, tuple)):
                    hint = " (return [] to provide none)" if result is None else (
                        " (return [spec])" if isinstance(result, PluginSpec) else "")
                    raise PluginError(f"{hook_name}() returned {_describe(result)}; expected "
                                      f"a list of {spec_type.__name__}{hint}")
                for spec in result:
                    if not isinstance(spec, spec_type):
                        other = next((f"; a {type(spec).__name__} goes in {KINDS[k]}()"
                                      for k, t in SPEC_TYPES.items() if type(spec) is t), "")
                        raise PluginError(f"{hook_name}() returned {_describe(spec)} in its "
                                          f"list; expected {spec_type.__name__}{other}")
                    self._check_name(kind, spec, own, taken)
                    self._check_fields(kind, spec)
                    own[spec.name] = dataclasses.replace(spec, plugin=name)
            provided[kind] = list(own.values())
        return provided

    @staticmethod
    def _check_name(kind: str, spec: PluginSpec, own: dict[str, PluginSpec],
                    taken: dict[str, PluginSpec]) -> None:
        name = spec.name
        if not isinstance(name, str):
            raise PluginError(f"{kind} name {name!r} is not a string")
        # Clashes first, case-insensitively: "NCC" is then reported as the clash it is.
        other = taken.get(name.lower())
        if other is not None:
            raise PluginError(f"{kind} {name!r} is also provided by plugin {other.plugin!r} "
                              "(names are unique per kind, case-insensitively)")
        if name.lower() in {n.lower() for n in own}:
            raise PluginError(f"{kind} {name!r} is provided twice")
        if not NAME_RE.fullmatch(name):
            suggestion = re.sub(r"[^a-z0-9._-]+", "-", name.strip().lower()).strip("-._")
            hint = f" (e.g. {suggestion!r})" if NAME_RE.fullmatch(suggestion) else ""
            raise PluginError(f"{kind} name {name!r} is not valid: use {NAME_RULE}{hint}")
        if name in RESERVED.get(kind, ()):
            raise PluginError(f"{kind} name {name!r} is reserved (--methods {name} selects "
                              "a set of methods)")

    @staticmethod
    def _check_fields(kind: str, spec: PluginSpec) -> None:
        """``params``, ``requires``, ``factory`` and the flags (every ``bool`` field: ``default``,
        ``baseline``, ``needs_data_dir``, ...) of the right types (a mistake there would
        otherwise be a traceback from ``mibench list`` or from the first run, or a string
        ``"False"`` read as true)."""
        where = f"{kind} {spec.name!r}"
        for flag in dataclasses.fields(spec):
            value = getattr(spec, flag.name)
            if flag.type in (bool, "bool") and not isinstance(value, bool):
                raise PluginError(f"{where}: {flag.name} must be True or False, got "
                                  f"{_describe(value)}")
        uses_seed = getattr(spec, "uses_seed", True)
        if not isinstance(uses_seed, bool) and not callable(uses_seed):
            raise PluginError(f"{where}: uses_seed must be True, False or a function of the "
                              f"options, got {_describe(uses_seed)}")
        dims = getattr(spec, "dims", (2,))
        if (not isinstance(dims, tuple) or not dims
                or any(d not in SPATIAL_DIMS or isinstance(d, bool) for d in dims)):
            raise PluginError(f"{where}: dims must be a tuple of spatial dimensionalities out of "
                              f"{SPATIAL_DIMS}, e.g. (2,) or (2, 3), got {_describe(dims)}")
        protocol = getattr(spec, "protocol", "")
        if protocol not in PROTOCOLS:
            raise PluginError(f"{where}: protocol must be one of "
                              f"{', '.join(map(repr, PROTOCOLS))}, got {_describe(protocol)}")
        for attr, cls in (("params", Param), ("requires", Requirement)):
            value = getattr(spec, attr)
            if not isinstance(value, (list, tuple)):
                raise PluginError(f"{where}: {attr} must be a tuple of {cls.__name__}, got "
                                  f"{_describe(value)} (write {attr}=({cls.__name__}(...),))")
            odd = next((v for v in value if not isinstance(v, cls)), None)
            if odd is not None:
                raise PluginError(f"{where}: {attr} must be a tuple of {cls.__name__}, got "
                                  f"{_describe(odd)} in it")
        names = [p.name for p in spec.params]
        twice = next((n for n in names if names.count(n) > 1), None)
        if twice is not None:
            raise PluginError(f"{where}: option {twice!r} is declared twice")
        factory = spec.factory
        if not callable(factory) and not (isinstance(factory, str)
                                          and FACTORY_RE.fullmatch(factory)):
            raise PluginError(f"{where}: factory {factory!r} is not valid: give "
                              "\"package.module:function\" or a callable")
        if isinstance(spec, EstimatorSpec):
            Registry._check_registration(where, spec)

    @staticmethod
    def _check_registration(where: str, spec: EstimatorSpec) -> None:
        """``registration`` of an estimator: a :class:`Registration` whose names are options of
        the estimator (a mistake would otherwise surface when the method is derived)."""
        reg = spec.registration
        if not isinstance(reg, Registration):
            raise PluginError(f"{where}: registration must be a Registration, got "
                              f"{_describe(reg)}")
        own = {p.name for p in spec.params}
        if reg.options is not None and (isinstance(reg.options, str)
                                        or not isinstance(reg.options, (list, tuple))):
            raise PluginError(f"{where}: registration options must be a tuple of option "
                              f"names, got {_describe(reg.options)}")
        redeclared = list(reg.defaults) if isinstance(reg.defaults, (list, tuple)) else None
        if redeclared is None or any(not isinstance(p, Param) for p in redeclared):
            raise PluginError(f"{where}: registration defaults must be a tuple of Param")
        when = reg.differentiable_when
        if not isinstance(when, (list, tuple)) or any(
                not (isinstance(w, (list, tuple)) and len(w) == 2) for w in when):
            raise PluginError(f"{where}: registration differentiable_when must be a tuple of "
                              "(option, values) pairs")
        names = [*(reg.options or ()), *(p.name for p in redeclared), *(w[0] for w in when)]
        unknown = next((n for n in names if n not in own), None)
        if unknown is not None:
            raise PluginError(f"{where}: registration names {unknown!r}, which is not one of "
                              f"its options ({', '.join(sorted(own)) or 'none'})")
        hidden = next((p.name for p in redeclared if not reg.offers(p.name)), None)
        if hidden is not None:
            raise PluginError(f"{where}: registration redeclares {hidden!r}, which its "
                              "options do not offer")

    # ------------------------------------------------------------------ look-up

    def _written(self, kind: str) -> Iterable[PluginSpec]:
        """The specs the plugins' hooks of ``kind`` returned (no derived method)."""
        for provided in self._provided.values():
            yield from provided.get(kind, ())

    def _all(self, kind: str) -> Iterable[PluginSpec]:
        """Every spec of ``kind`` in registration order; a derived method comes after the
        methods of the later of its estimator's plugin and the plugin that derived it (so the
        built-ins come first, and ``identity`` heads the methods)."""
        if kind != "method":
            yield from self._written(kind)
            return
        self.derived_methods()  # derives them if the plugins changed
        derived = self._derived or []
        for name, provided in self._provided.items():
            yield from provided.get(kind, ())
            yield from (spec for slot, spec in derived if slot == name)
        yield from (spec for slot, spec in derived if slot not in self._provided)

    def derived_methods(self) -> list[MethodSpec]:
        """The methods derived from the estimators (:data:`DERIVED_HOOK`), computed once after
        the plugins changed: each implementation is called with every estimator; a name a
        written method has (or an earlier derived one) is left out, so written methods win. A
        third-party implementation that raises or returns a wrong spec is recorded in
        :attr:`broken` and its methods left out; a built-in one raises (a bug of mibench)."""
        if self._derived is None:
            estimators = list(self._written("estimator"))
            taken = {spec.name.lower() for spec in self._written("method")}
            order = list(self._provided)
            derived: list[tuple[str, MethodSpec]] = []
            for impl in getattr(self.pm.hook, DERIVED_HOOK).get_hookimpls():
                try:
                    specs = self._derive(impl, estimators)
                except PluginError as exc:
                    if impl.plugin_name in BUILTIN_PLUGINS:
                        raise UserError(f"plugin {impl.plugin_name!r}: {exc}") from None
                    self.broken[impl.plugin_name] = str(exc)
                    continue
                for spec in specs:
                    if spec.name.lower() not in taken:
                        taken.add(spec.name.lower())
                        slots = [p for p in (spec.plugin, impl.plugin_name) if p in order]
                        slot = max(slots, key=order.index) if slots else impl.plugin_name
                        derived.append((slot, spec))
            self._derived = derived
        return [spec for _, spec in self._derived]

    def _derive(self, impl: Any, estimators: list[PluginSpec]) -> list[MethodSpec]:
        """Call one implementation of :data:`DERIVED_HOOK` and check what it returns."""
        try:
            result = impl.function(estimators=list(estimators))
        except Exception as exc:
            raise PluginError(_first_line(f"{DERIVED_HOOK}() raised {type(exc).__name__}: "
                                          f"{exc}")) from None
        if not isinstance(result, (list, tuple)):
            raise PluginError(f"{DERIVED_HOOK}() returned {_describe(result)}; expected a list "
                              "of MethodSpec")
        checked = []
        for spec in result:
            if not isinstance(spec, MethodSpec):
                raise PluginError(f"{DERIVED_HOOK}() returned {_describe(spec)} in its list; "
                                  "expected MethodSpec")
            self._check_name("method", spec, {}, {})
            self._check_fields("method", spec)
            checked.append(spec if spec.plugin else dataclasses.replace(spec,
                                                                         plugin=impl.plugin_name))
        return checked

    def specs(self, kind: str) -> dict[str, PluginSpec]:
        """All specs of one kind (``estimator``, ``method``, ``dataset``), by name, in
        registration order: built-ins, entry-point plugins, then ``plugins``."""
        if kind not in KINDS:
            raise ValueError(f"unknown plugin kind {kind!r}")
        return {spec.name: spec for spec in self._all(kind)}

    def get(self, kind: str, name: str) -> PluginSpec:
        """Look a spec up by name; an unknown name is a :class:`UserError` with suggestions
        (and the plugins that failed to load: the name may have been one of theirs)."""
        specs = self.specs(kind)
        key = name.strip().lower()
        if key not in specs:
            close = difflib.get_close_matches(key, specs, n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            broken = "; ".join(f"{p} ({why})" for p, why in self.broken.items())
            note = f"; plugins that failed to load: {broken}" if broken else ""
            raise UserError(
                f"unknown {kind} {name!r}{hint}; available: {', '.join(sorted(specs))}{note}"
            )
        return specs[key]

    def available(self, kind: str) -> dict[str, PluginSpec]:
        """The specs of one kind that can run here (requirements met)."""
        return {n: s for n, s in self.specs(kind).items() if s.unavailable_reason() is None}

