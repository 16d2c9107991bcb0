"""The reference method: the one every other method is tested against.

What a method is *for* comes from its plugin (:class:`mibench.specs.MethodSpec`), so that no
report code names a plugin: ``preferred_reference`` marks the method a benchmark is about (the
default reference whenever it ran), ``baseline`` a method that does not register (listed last,
never chosen automatically). The flags are looked up in the run's own registry (its
``--plugin`` modules); a plugin that no longer loads simply gives its methods no flags.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from mibench.registry import Registry


@dataclass(frozen=True)
class MethodRoles:
    """The method names flagged ``preferred_reference`` and ``baseline`` in a registry."""

    preferred: frozenset[str] = field(default_factory=frozenset)
    baseline: frozenset[str] = field(default_factory=frozenset)


def run_registry(config: dict[str, Any]) -> Registry | None:
    """The registry a run was made with (built-ins, entry points and its ``plugins``), or None
    when even that cannot be built. Not strict: a plugin that fails to import is left out (and
    named in ``Registry.broken``) rather than failing the report."""
    plugins = config.get("plugins")
    names = [p for p in plugins if isinstance(p, str)] if isinstance(plugins, list) else []
    try:
        return Registry(names, strict=False)
    except Exception:  # a report must not fail because a plugin environment changed
        return None


def method_roles(registry: Registry | None) -> MethodRoles:
    """The :class:`MethodRoles` of every method ``registry`` knows (none without one)."""
    if registry is None:
        return MethodRoles()
    specs = registry.specs("method").values()
    return MethodRoles(
        preferred=frozenset(s.name for s in specs if getattr(s, "preferred_reference", False)),
        baseline=frozenset(s.name for s in specs if getattr(s, "baseline", False)))


def method_failures(results: pd.DataFrame) -> dict[str, tuple[int, int]]:
    """Per method, ``(failed, scored)``: how many of its scored tasks failed, out of how many.

    Failed tasks are scored with their initial error, so a method that failed on most of its
    tasks has values in the tables that are mostly those of no registration at all.
    """
    if results.empty:
        return {}
    scored = results[results["scored"].astype(bool)]
    failed = (scored["status"] == "failed").groupby(scored["method"]).sum()
    return {str(m): (int(failed[m]), int(n))
            for m, n in scored.groupby("method").size().items()}


def _and(names: Iterable[str]) -> str:
    return " and ".join(names)


def choose_reference(table: pd.DataFrame, requested: str | None,
                     failures: dict[str, tuple[int, int]] | None = None, *,
                     roles: MethodRoles | None = None, metric: str = "naed",
                     requested_by: str = "--reference") -> tuple[str | None, str]:
    """The reference method of a ``pair_table`` and why it was chosen.

    Parameters
    ----------
    table : DataFrame
        ``mibench.stats.pair_table`` of the metric.
    requested : str or None
        A method asked for by name; it wins when it has scored pairs, even when it failed on
        all of them (the evaluation then warns).
    failures : dict, optional
        ``method_failures`` of the results. Without it, no method counts as failed.
    roles : MethodRoles, optional
        The methods' flags; without them no method is preferred or a baseline.
    metric : str
        The metric of ``table``, for the reason.
    requested_by : str
        Who asked for ``requested`` (``--reference``, a run's setting), for the reason.

    Returns
    -------
    (str or None, str)
        The reference (None when nothing is scored) and the reason. Without a usable request
        the choice is automatic among the methods that succeeded on at least one scored task
        (a method that failed on every one is scored with its initial errors: it is no
        registration at all; all methods when none succeeded): a ``preferred`` method when one
        is among them (the lowest mean of them if several), else the one with the lowest mean
        other than the ``baseline`` methods, so that the tests still compare every method
        with the best one.
    """
    roles = roles or MethodRoles()
    methods = [str(m) for m in table.columns]
    if not methods:
        return None, "no scored pairs"
    if requested:
        if requested in methods:
            return requested, f"requested ({requested_by})"
        why = f"requested reference {requested!r} has no scored pairs; "
    else:
        why = ""
    failures = failures or {}
    never = [m for m in methods
             if failures.get(m, (0, 0))[1] and failures[m][0] >= failures[m][1]]
    usable = [m for m in methods if m not in never] or methods
    dropped = [m for m in never if m not in usable]
    lowest = f"lowest mean {metric.upper()}"
    preferred = [m for m in usable if m in roles.preferred]
    if preferred:
        if len(preferred) == 1:
            return preferred[0], why + f"default: {preferred[0]} ran"
        best = str(table[preferred].mean(axis=0).idxmin())
        return best, why + (f"default: {best} ran ({lowest} of the preferred references "
                            f"{', '.join(preferred)})")
    candidates = [m for m in usable if m not in roles.baseline] or usable
    best = str(table[candidates].mean(axis=0).idxmin())
    heads = []
    if failed := [m for m in dropped if m in roles.preferred]:
        heads.append(f"{_and(failed)} failed on every scored task")
    if absent := sorted(m for m in roles.preferred if m not in methods):
        heads.append(f"{_and(absent)} did not run")
    head = "; ".join(heads) or "no method is marked as the preferred reference"
    excluded = []
    if base := [m for m in usable if m in roles.baseline and m != best]:
        excluded.append(f"the {_and(base)} baseline{'s' if len(base) > 1 else ''}")
    if failing := [m for m in dropped if m not in roles.preferred]:
        excluded.append(f"{', '.join(failing)}, which failed on every scored task")
    return best, why + (f"{head}: {lowest}"
                        + (f", excluding {_and(excluded)}" if excluded else ""))


__all__ = ["MethodRoles", "choose_reference", "method_failures", "method_roles", "run_registry"]
