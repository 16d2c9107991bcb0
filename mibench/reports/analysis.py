"""Everything a run's artefacts are made from, computed once: :class:`RunAnalysis`.

:func:`analyse_run` reads the records and ``run.json`` once and computes the results and summary
tables and the cross-method :class:`~mibench.reports.evaluation.Evaluation`; each writer
(:mod:`~mibench.reports.tables`, :mod:`~mibench.reports.paper_table`,
:mod:`~mibench.reports.figures`, :mod:`~mibench.reports.overlays`,
:mod:`~mibench.reports.landmarks`, :mod:`~mibench.reports.html`) then writes its artefact from
this one object, so that no two artefacts can disagree about a number.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from mibench.errors import UserError
from mibench.manifest import manifest_config, read_manifest
from mibench.records import iter_records
from mibench.registration import Record
from mibench.registry import Registry
from mibench.reports.evaluation import Evaluation, evaluate
from mibench.reports.reference import MethodRoles, method_roles, run_registry
from mibench.reports.results import method_order, results_frame, reuse_single_seed, summary_frame
from mibench.reports.units import common_unit


@dataclass
class RunAnalysis:
    """A run directory's records and everything computed from them.

    Attributes
    ----------
    run_dir : Path
        The run directory.
    manifest : dict
        ``run.json`` (:func:`mibench.manifest.read_manifest`; ``{}`` when missing).
    records : list of Record
        Every record, as read once.
    results, summary : DataFrame
        ``results.csv`` and ``summary.csv`` (:mod:`mibench.reports.results`); ``results``
        includes the rows that reuse a deterministic method's one run for the other seeds
        (``reused_seed`` set, no timings).
    evaluation : Evaluation or None
        The cross-method evaluation (None only where a caller builds a partial analysis, e.g.
        to draw one figure).
    roles : MethodRoles
        The methods' ``preferred_reference`` and ``baseline`` flags.
    registry : Registry or None
        The run's plugins (for the overlays, which load pairs again); None when it cannot be
        built.
    protocol : str or None
        The dataset's evaluation protocol (``DatasetSpec.protocol``: ``"fire"``, ``"anhir"`` or
        ``""``); None when the dataset's spec is unknown here (the pairs' metadata decide).
    single_seed : dict of str to list of int
        The methods whose one record (seed ``seeds[0]``) is reused for the other seeds
        (:func:`~mibench.reports.results.reuse_single_seed`), with the seeds reused for.
    """

    run_dir: Path
    manifest: dict[str, Any]
    records: list[Record]
    results: pd.DataFrame
    summary: pd.DataFrame
    evaluation: Evaluation | None = None
    roles: MethodRoles = field(default_factory=MethodRoles)
    registry: Registry | None = None
    protocol: str | None = None
    single_seed: dict[str, list[int]] = field(default_factory=dict)

    @property
    def config(self) -> dict[str, Any]:
        """``run.json``'s ``config`` (``{}`` without one)."""
        return manifest_config(self.manifest)

    @property
    def order(self) -> list[str]:
        """Methods in table order: by NAED mean, baseline methods last."""
        return method_order(self.summary, self.roles.baseline)

    @property
    def dataset(self) -> str | None:
        """The dataset named by ``run.json``."""
        name = self.config.get("dataset")
        return name if isinstance(name, str) and name else None

    @property
    def record_naed_norms(self) -> list[str]:
        """The NAED normalisers the records were scored with (the results' ``naed_norm``
        column), sorted; several in a merge of differently scored runs."""
        df = self.results
        if len(df) and "naed_norm" in df:
            return sorted({str(v) for v in df["naed_norm"].dropna()})
        return []

    @property
    def naed_norm(self) -> str | None:
        """The run's NAED normaliser: ``run.json``'s, else the records' (joined by ", ")."""
        norm = self.config.get("naed_norm")
        if isinstance(norm, str) and norm:
            return norm
        return ", ".join(self.record_naed_norms) or None

    @property
    def unit_counts(self) -> dict[str, int]:
        """How many tasks (rows of ``results``) have their errors in each unit."""
        df = self.results
        if not len(df) or "unit" not in df:
            return {}
        return {str(u): int(n) for u, n in df["unit"].value_counts(sort=False).items()}

    @property
    def unit(self) -> str:
        """The unit of the run's landmark errors (``px``, ``mm``, ``um``; ``px`` for an empty
        run), :data:`~mibench.reports.units.MIXED` when its records mix units."""
        return common_unit(self.unit_counts)

    @property
    def plotted_naed_norms(self) -> list[str]:
        """The normalisers the plotted values have: the records', else the configured one."""
        norm = self.config.get("naed_norm")
        return self.record_naed_norms or ([str(norm)] if norm else [])


def dataset_protocol(registry: Registry | None, dataset: str | None) -> str | None:
    """The protocol the dataset's spec declares; None when the spec cannot be found (no
    dataset named, a plugin that no longer loads, a merge of several datasets)."""
    if registry is None or not dataset:
        return None
    try:
        spec = registry.get("dataset", dataset)
    except Exception:  # unknown here: say nothing rather than fail the report
        return None
    protocol = getattr(spec, "protocol", "")
    return protocol if isinstance(protocol, str) else ""


def run_seeds(config: dict[str, Any], results: pd.DataFrame) -> list[int]:
    """The run's seeds, first seed first: ``config["seeds"]``, else the records' (sorted)."""
    seeds = config.get("seeds")
    if isinstance(seeds, list) and seeds and all(isinstance(s, int) for s in seeds):
        return list(dict.fromkeys(seeds))
    return sorted(int(s) for s in results["seed"].unique()) if len(results) else []


def _reuse(results: pd.DataFrame, config: dict[str, Any]
           ) -> tuple[pd.DataFrame, dict[str, list[int]]]:
    """Reuse seed-independent methods' records for every seed (``single_seed_methods``)."""
    methods = config.get("single_seed_methods")
    methods = [m for m in methods if isinstance(m, str)] if isinstance(methods, list) else []
    seeds = run_seeds(config, results)
    out = reuse_single_seed(results, methods, seeds)
    if out is results:
        return results, {}
    reused = out[out["reused_seed"].notna()]
    return out, {str(m): sorted(int(s) for s in g.unique())
                 for m, g in reused.groupby("method", sort=True)["seed"]}


def analyse_run(run_dir: Path, *, reference: str | None = None) -> RunAnalysis:
    """Read ``run_dir``'s records and ``run.json`` once and compute every table.

    ``reference`` is the method the others are tested against; None takes the run's
    ``reference`` setting from ``run.json`` (``mibench run --reference``; a merged directory
    has one only when every merged run had the same), else the automatic choice of
    :func:`mibench.reports.reference.choose_reference`. A ``reference`` with no records here is
    a :class:`UserError`.
    """
    run_dir = Path(run_dir)
    records = list(iter_records(run_dir))
    manifest = read_manifest(run_dir)
    config = manifest_config(manifest)
    registry = run_registry(config)
    roles = method_roles(registry)
    results, single_seed = _reuse(results_frame(records), config)
    summary = summary_frame(results, roles.baseline)
    if reference is not None and len(results) and reference not in set(results["method"]):
        methods = ", ".join(sorted(set(results["method"])))
        raise UserError(f"{run_dir}: reference method {reference!r} has no records here "
                        f"(methods: {methods})")
    requested_by = "--reference"
    if reference is None:
        configured = config.get("reference")
        reference = configured if isinstance(configured, str) and configured else None
        # Say where it came from: this report was not asked for it, the run (or runs) were.
        requested_by = ("--reference of every merged run" if manifest.get("merged_from")
                        else "--reference of mibench run")
    protocol = dataset_protocol(registry, config.get("dataset"))
    evaluation = evaluate(results, reference, roles=roles, requested_by=requested_by,
                          protocol=protocol)
    return RunAnalysis(run_dir=run_dir, manifest=manifest, records=records, results=results,
                       summary=summary, evaluation=evaluation, roles=roles, registry=registry,
                       protocol=protocol, single_seed=single_seed)


__all__ = ["RunAnalysis", "analyse_run", "dataset_protocol", "run_seeds"]
