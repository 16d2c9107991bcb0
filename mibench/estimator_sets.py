"""Which estimators a benchmark of the estimators runs: ``all``, or names and variants
(``jhmi,jhmi[bins=64]``, :mod:`mibench.variants`), each with its resolved options."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mibench.errors import UserError
from mibench.jsonio import canonical_json
from mibench.paths import DEFAULT_RUNS_DIR
from mibench.registry import Registry
from mibench.variants import parse_variant, variant_name


def resolve_estimators(registry: Registry, names: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """``{canonical name: resolved options}``: every available estimator for ``("all",)``;
    for ``("objectives",)`` those that drive a registration method (``derive_method``: the
    landscape of a registration objective; ``mine``, trained at every evaluation, and ``cmif``,
    a global search of its own, opt out)."""
    if names in (("all",), ("objectives",)):
        return {s.name: s.resolve() for s in registry.specs("estimator").values()
                if s.unavailable_reason() is None
                and (names == ("all",) or s.derive_method)}
    out: dict[str, dict[str, Any]] = {}
    for text in names:
        base, options = parse_variant(text)
        spec = registry.get("estimator", base)
        why = spec.unavailable_reason()
        if why:
            raise UserError(f"estimator {spec.name!r} is unavailable: {why}")
        params = spec.resolve(options, from_text=True)
        name = variant_name(spec.name, {k: params[k] for k in options}, spec.defaults())
        if name in out:
            raise UserError(f"estimator {name!r} is given twice")
        out[name] = params
    if not out:
        raise UserError("no estimator selected")
    return out


def run_dir_for(out: str | None, command: str, identity: dict[str, Any]) -> Path:
    """``out``, or ``runs/<command>-<hash of identity>``: a new directory per configuration."""
    if out:
        return Path(out)
    digest = hashlib.sha1(canonical_json(identity).encode()).hexdigest()[:8]
    return Path(DEFAULT_RUNS_DIR) / f"{command}-{digest}"


def check_estimator_options(run_dir: Path, records: list[Any], tasks: list[Any]) -> None:
    """Refuse to add tasks to a run directory whose records hold an estimator of this plan with
    other options: the tables would mix two configurations in one row."""
    planned = {t.estimator: canonical_json(t.estimator_params) for t in tasks}
    for rec in records:
        params = planned.get(rec.task.estimator)
        if params is not None and canonical_json(rec.task.estimator_params) != params:
            raise UserError(f"{run_dir}: estimator {rec.task.estimator!r} already has records "
                            "with other options; use another --out, or a variant name "
                            "(estimator[option=value]) to keep both")


@dataclass
class EstimatorPlan:
    """A resolved ``mibench estimators`` run: the configuration ``run.json`` records, the run
    directory, every task, and the open dataset of a command that has one (landscape)."""

    config: dict[str, Any]
    run_dir: Path
    tasks: list[Any]
    dataset: Any = None
