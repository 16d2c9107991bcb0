"""The plugin manager: finds built-in and third-party plugins and looks specs up by name.

Built-ins (``mibench.estimators``, ``mibench.methods``, ``mibench.datasets``) are registered
through the same hooks as plugins found in the entry-point group ``mibench`` and modules named
with ``--plugin`` / ``plugins=``.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import importlib.metadata
from collections.abc import Iterable

import pluggy

from mibench import hookspecs
from mibench.errors import UserError
from mibench.specs import DatasetSpec, EstimatorSpec, MethodSpec, PluginSpec

ENTRY_POINT_GROUP = "mibench"
BUILTIN_PLUGINS = ("mibench.estimators", "mibench.methods", "mibench.datasets")
KINDS = {"estimator": "mibench_estimators", "method": "mibench_methods",
         "dataset": "mibench_datasets"}
SPEC_TYPES = {"estimator": EstimatorSpec, "method": MethodSpec, "dataset": DatasetSpec}


class Registry:
    """All plugins of one process.

    Parameters
    ----------
    plugins : iterable of str
        Extra plugin modules to import and register by dotted name (``--plugin``).
    entry_points : bool
        Load third-party plugins from the ``mibench`` entry-point group.
    """

    def __init__(self, plugins: Iterable[str] = (), *, entry_points: bool = True):
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        #: plugin name -> one-line reason, for plugins that failed to load
        self.broken: dict[str, str] = {}
        self.extra_plugins = tuple(plugins)
        for name in BUILTIN_PLUGINS:
            self.pm.register(importlib.import_module(name), name=name)
        if entry_points:
            self._load_entry_points()
        for name in self.extra_plugins:
            self.register_module(name)
        self._cache: dict[str, dict[str, PluginSpec]] = {}

    def _load_entry_points(self) -> None:
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            if self.pm.get_plugin(ep.name) is not None or self.pm.is_blocked(ep.name):
                continue
            try:
                plugin = ep.load()
            except Exception as exc:  # a broken third-party plugin must not break mibench
                self.broken[ep.name] = f"failed to import {ep.value}: {exc}"
                continue
            self.pm.register(plugin, name=ep.name)

    def register_module(self, module_name: str) -> None:
        """Import a module by name and register it as a plugin."""
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise UserError(f"cannot import plugin module {module_name!r}: {exc}") from None
        if self.pm.get_plugin(module_name) is None:
            self.pm.register(module, name=module_name)
        self._cache = {}

    def register(self, plugin: object, name: str | None = None) -> str:
        """Register a plugin object (a module or any object with hook implementations)."""
        registered = self.pm.register(plugin, name=name)
        self._cache = {}
        return registered

    def unregister(self, name: str) -> None:
        self.pm.unregister(name=name)
        self._cache = {}

    def specs(self, kind: str) -> dict[str, PluginSpec]:
        """All specs of one kind (``estimator``, ``method``, ``dataset``), by name."""
        if kind not in KINDS:
            raise ValueError(f"unknown plugin kind {kind!r}")
        if kind not in self._cache:
            found: dict[str, PluginSpec] = {}
            hook = getattr(self.pm.hook, KINDS[kind])
            for impl in reversed(hook.get_hookimpls()):  # registration order
                for spec in impl.function() or ():
                    if not isinstance(spec, SPEC_TYPES[kind]):
                        raise TypeError(
                            f"plugin {impl.plugin_name!r} returned {spec!r} from "
                            f"{KINDS[kind]}; expected {SPEC_TYPES[kind].__name__}"
                        )
                    if spec.name in found:
                        raise UserError(
                            f"{kind} {spec.name!r} is provided by both "
                            f"{found[spec.name].plugin!r} and {impl.plugin_name!r}"
                        )
                    found[spec.name] = dataclasses.replace(spec, plugin=impl.plugin_name)
            self._cache[kind] = found
        return self._cache[kind]

    def get(self, kind: str, name: str) -> PluginSpec:
        """Look a spec up by name; an unknown name is a :class:`UserError` with suggestions."""
        specs = self.specs(kind)
        key = name.strip().lower()
        if key not in specs:
            close = difflib.get_close_matches(key, specs, n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise UserError(
                f"unknown {kind} {name!r}{hint}; available: {', '.join(sorted(specs))}"
            )
        return specs[key]

    def available(self, kind: str) -> dict[str, PluginSpec]:
        """The specs of one kind that can run here (requirements met)."""
        return {n: s for n, s in self.specs(kind).items() if s.unavailable_reason() is None}


def default_registry(plugins: Iterable[str] = ()) -> Registry:
    """A registry with built-ins, entry-point plugins and the given extra plugin modules."""
    return Registry(plugins)
