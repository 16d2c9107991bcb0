"""Exceptions, and the one rule for who raises what.

The error policy
----------------
1. **Plugins raise** ``ValueError`` **for bad input or options** (as scikit-image does): an
   estimator, method or dataset, built-in or third-party, that is given an image it cannot use
   or an option value (or a combination of values) it refuses raises ``ValueError`` with a
   one-line message. :func:`check_choice` is the usual check of a named choice. A plugin may
   also raise :class:`UserError` itself (a dataset's missing file, say): it passes every
   boundary unchanged.
2. **The harness turns such a** ``ValueError`` **into a one-line** :class:`UserError` naming the
   plugin (``dataset 'fire': ...``) at one boundary, :func:`as_user_error` (built on
   :func:`plugin_error`), wherever a plugin's ``ValueError`` reaches a user of the command line:
   opening a dataset (:func:`mibench.callables.open_dataset`), planning a run from its
   ``pairs()``, and ``mibench estimate``. Inside a run, a method's exception of any type fails
   only its task, with the message in the task's record.
3. **The Python API raises** ``ValueError`` **for bad inputs**: ``mibench.estimator(...)(a, b)``
   and ``mibench.method(...)(a, b)`` behave like the plugin functions they wrap, on numpy arrays
   and tensors alike (images of different sizes, NaN pixels, a seed outside 32 bits, ...).
4. **Options are checked before any plugin code runs**: a value of the wrong type, outside its
   ``choices`` or its bounds is a :class:`UserError` naming the plugin
   (:meth:`mibench.specs.PluginSpec.resolve`).
5. **A plugin breaking its contract is a** :class:`UserError` **naming the plugin and the
   package that provided it** (:func:`contract_error`): at registration (a hook returning the
   wrong thing, :mod:`mibench.registry`), and at each call through mibench (an estimator's value
   that is not a ``(B,)`` tensor on the inputs' device, a method's result that is not a
   ``Transform``, :mod:`mibench.callables`). It is the plugin author's mistake, not mibench's
   bug, so it is reported like the other plugin mistakes: one line, exit status 2.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from contextlib import contextmanager
from typing import Any, Protocol


class SpecLike(Protocol):
    """What the helpers below read of a :class:`mibench.specs.PluginSpec` (this module is the
    bottom layer of the package: it imports no other mibench module)."""

    kind: str
    name: str
    plugin: str


class UserError(Exception):
    """A mistake in the input (a name, an option, a file). The CLI prints it as one line."""


def check_choice(name: str, value: Any, choices: Collection[Any]) -> None:
    """Raise ``ValueError`` unless ``value`` is one of ``choices`` (a plugin's own check of a
    named choice, e.g. ``check_choice("kernel", kernel, ("box", "linear", "cubic"))``)."""
    if value not in choices:
        allowed = ", ".join(map(str, choices))
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")


def one_line(text: Any) -> str:
    """``text`` with its non-blank lines joined by ``"; "`` (a message printed as one line)."""
    return "; ".join(s.strip() for s in str(text).splitlines() if s.strip())


def plugin_label(spec: SpecLike) -> str:
    """``"estimator 'ncc' (plugin 'mibench.estimators')"``: the spec and the plugin (package)
    that provided it; without the plugin part for a spec made outside a registry."""
    who = f" (plugin {spec.plugin!r})" if spec.plugin else ""
    return f"{spec.kind} {spec.name!r}{who}"


def plugin_error(spec: SpecLike, exc: ValueError) -> UserError:
    """The one-line :class:`UserError` a user sees for a plugin's ``ValueError`` (rule 2 of the
    module docstring), e.g. ``dataset 'toy': size must be even``."""
    return UserError(f"{spec.kind} {spec.name!r}: {one_line(exc)}")


@contextmanager
def as_user_error(spec: SpecLike) -> Iterator[None]:
    """Run a plugin's code (a factory, a dataset's ``pairs()``, an estimator call) and turn
    a ``ValueError`` it raises into :func:`plugin_error`'s :class:`UserError`.

    >>> with as_user_error(spec):                     # doctest: +SKIP
    ...     dataset = factory(data_dir, **options)
    """
    try:
        yield
    except ValueError as exc:
        raise plugin_error(spec, exc) from exc


def contract_error(spec: SpecLike, problem: str, expected: str) -> UserError:
    """The :class:`UserError` for a plugin that broke its contract (rule 5): ``problem`` says
    what it did (``"returned a float 0.5"``), ``expected`` what it should have done."""
    return UserError(f"{plugin_label(spec)} {problem}; expected {expected}")


def _format_warning_as_one_line(message, category, filename, lineno, line=None) -> str:
    """A :func:`warnings.formatwarning` that prints ``warning: MESSAGE`` and nothing else."""
    return f"warning: {message}\n"


def one_line_warnings() -> None:
    """Print warnings meant for users (e.g. unequal landmark counts in a dataset) as one line
    ``warning: ...`` instead of Python's two-line format with the source line. Called by the CLI
    and by worker processes."""
    import warnings

    warnings.formatwarning = _format_warning_as_one_line
