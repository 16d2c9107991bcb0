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

Each hook but the last takes no arguments and returns a *list* of specs of its kind (see
:mod:`mibench.specs`), ``[]`` for none; spec names are lower-case letters, digits, ``-``, ``_`` and
``.``, starting with a letter or digit, and unique per kind. :class:`mibench.registry.Registry`
calls the hooks once, when the plugin is registered, and refuses the plugin with one line naming it
when a hook raises or returns anything else, when a name is invalid or taken, when a spec's field
has the wrong type, or when a function is marked ``@hookimpl`` with a name that is not a hook below
(a typo), or is named like a hook but not marked. Errors follow one policy (:mod:`mibench.errors`):
a plugin raises ``ValueError`` for bad input or options. Keep plugin modules light: put heavy
imports in the module the ``factory`` string points to, so that ``mibench list`` stays fast and
works when an optional dependency is missing. The shared conventions (coordinates, the direction
of a transform, images in [0, 1]) are in the README's "Conventions" section,
:mod:`mibench.transform` and :mod:`mibench.pairs`; the guide is ``docs/plugins.md``.
"""

from __future__ import annotations

import pluggy

from mibench.specs import DatasetSpec, EstimatorSpec, MethodSpec

PROJECT = "mibench"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def mibench_estimators() -> list[EstimatorSpec]:
    """Return the similarity measures this plugin provides.

    Each factory returns a tensor of shape ``(B,)`` on the inputs' device (checked when it is
    called through :class:`mibench.callables.Estimator`).
    """


@hookspec
def mibench_methods() -> list[MethodSpec]:
    """Return the registration methods this plugin provides.

    Each factory returns a :class:`mibench.transform.Transform` or a
    :class:`mibench.transform.RegistrationOutput` holding one (checked when it is called
    through :class:`mibench.callables.Method`).
    """


@hookspec
def mibench_datasets() -> list[DatasetSpec]:
    """Return the datasets this plugin provides."""


@hookspec
def mibench_derived_methods(estimators: list[EstimatorSpec]) -> list[MethodSpec]:
    """Return methods derived from estimators: ``estimators`` is every estimator of every
    registered plugin (built-in, entry-point, ``--plugin``), in registration order.

    The registry calls it after the plugins are registered (at the first look-up of a method,
    again when a plugin is added), so that a third-party estimator gets a method without code of
    its own. A derived method whose name a method of ``mibench_methods`` has is left out (the
    written method wins). The built-in methods plugin implements it with one rule
    (:mod:`mibench.methods.derived`): a method of the estimator's name, gradient engine when
    the estimator is differentiable, Powell's method otherwise.
    """
