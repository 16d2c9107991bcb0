"""Resuming a run: which planned tasks already have a record, and whether the records in a run
directory may be joined by this plan's at all."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mibench.errors import UserError
from mibench.jsonio import canonical_json
from mibench.paths import records_dir
from mibench.registration import Record, RegistrationTask


def _differences(before: dict[str, Any], now: dict[str, Any]) -> str:
    keys = sorted(k for k in {*before, *now} if before.get(k, "-") != now.get(k, "-"))
    return ", ".join(f"{k}={before.get(k, '-')} there, {now.get(k, '-')} now" for k in keys)


def check_compatible(run_dir: Path, records: list[Record], tasks: list[RegistrationTask],
                     naed_norm: str) -> None:
    """Refuse to add this plan's tasks to a run directory whose records were made with another
    dataset, dataset options or NAED normaliser, or with other options of a method this plan
    runs: their task keys differ, so nothing would be reused, but the reports would mix two
    configurations in one row (and ``mibench report`` would refuse the directory)."""
    if not records or not tasks:
        return
    planned = {t.method: t.method_params for t in tasks}
    dataset = (tasks[0].dataset, tasks[0].dataset_params)
    fix = f"use another --out, or delete {records_dir(run_dir)} to start afresh"
    for rec in records:
        done = rec.task
        if (done.dataset, canonical_json(done.dataset_params)) != (dataset[0],
                                                                  canonical_json(dataset[1])):
            what = (f"dataset {done.dataset!r}, this run {dataset[0]!r}"
                    if done.dataset != dataset[0]
                    else "dataset options " + _differences(done.dataset_params, dataset[1]))
            raise UserError(f"{run_dir}: holds records of another configuration ({what}); "
                            f"{fix}")
        if rec.naed_norm != naed_norm:
            raise UserError(f"{run_dir}: its records were scored with --naed-norm "
                            f"{rec.naed_norm}, this run asks for {naed_norm}; resume it with "
                            f"the same normalisation, or {fix}")
        params = planned.get(done.method)
        if params is not None and canonical_json(done.method_params) != canonical_json(params):
            raise UserError(f"{run_dir}: method {done.method!r} already has records with other "
                            f"options ({_differences(done.method_params, params)}); use "
                            f"another --out, or delete {records_dir(run_dir) / done.method}"
                            " to replace them")


@dataclass(frozen=True)
class ResumeState:
    """What is left to do: the tasks to run, and how many planned tasks already have a record
    (``failed_before`` of them failed; with ``retry_failed`` those are in ``todo`` again)."""

    todo: list[RegistrationTask]
    kept: int
    failed_before: int


def tasks_to_run(tasks: list[RegistrationTask], records: list[Record], *,
                 retry_failed: bool) -> ResumeState:
    """The planned tasks without a record (a failure is a result: it is kept unless
    ``retry_failed``)."""
    planned = {t.key for t in tasks}
    failed = {r.key for r in records if r.key in planned and r.status != "ok"}
    done = {r.key for r in records} - (failed if retry_failed else set())
    todo = [t for t in tasks if t.key not in done]
    return ResumeState(todo, len(tasks) - len(todo), len(failed))
