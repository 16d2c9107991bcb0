"""The plugin contract: the hooks through which a plugin contributes to mibench.

A plugin is any module (or object) with functions marked ``@mibench.hookimpl`` whose names are
those below. Built-ins are registered exactly like third-party plugins; third-party packages are
found through the entry-point group ``mibench``::

    # pyproject.toml of a plugin package
    [project.entry-points.mibench]
    myplugin = "myplugin.plugin"

    # myplugin/plugin.py
    from mibench import hookimpl, MethodSpec

    @hookimpl
    def mibench_methods():
        return [MethodSpec(name="mymethod", description="...", factory="myplugin.core:register")]

Each hook returns a list of specs (see :mod:`mibench.specs`). Keep plugin modules light: put
heavy imports in the module the ``factory`` string points to, so that ``mibench list`` stays fast
and works when an optional dependency is missing.
"""

from __future__ import annotations

import pluggy

from mibench.specs import DatasetSpec, EstimatorSpec, MethodSpec

PROJECT = "mibench"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def mibench_estimators() -> list[EstimatorSpec]:
    """Return the similarity measures this plugin provides."""


@hookspec
def mibench_methods() -> list[MethodSpec]:
    """Return the registration methods this plugin provides."""


@hookspec
def mibench_datasets() -> list[DatasetSpec]:
    """Return the datasets this plugin provides."""
