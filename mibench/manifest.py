"""``run.json``: what produced a run directory (resolved settings, versions, device, machine,
every invocation), written by the runner and read by the reports and merges."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mibench.jsonio import read_json_object, write_json_atomic
from mibench.machine import machine_facts, versions
from mibench.paths import damaged_path, manifest_path
from mibench.tasks import now


def upgrade_config(config: dict[str, Any]) -> dict[str, Any]:
    """A run's ``config`` in today's names: runs written before the NAED normaliser was called
    ``naed_norm`` have ``normalisation``."""
    if "normalisation" in config and "naed_norm" not in config:
        config = {("naed_norm" if k == "normalisation" else k): v for k, v in config.items()}
    return config


def read_manifest(run_dir: Path) -> dict[str, Any]:
    """``run_dir/run.json`` as a dict (its ``config`` in today's names); ``{}`` when it is
    missing or unreadable: a report says what it lacks instead of failing."""
    try:
        manifest = read_json_object(manifest_path(run_dir))
    except (OSError, ValueError):
        return {}
    if isinstance(manifest.get("config"), dict):
        manifest["config"] = upgrade_config(manifest["config"])
    return manifest


def manifest_config(manifest: dict[str, Any]) -> dict[str, Any]:
    """The ``config`` object of a manifest, ``{}`` when there is none."""
    config = manifest.get("config")
    return config if isinstance(config, dict) else {}


def write_manifest(run_dir: Path, config: dict[str, Any], *, tasks_planned: int,
                   dataset_notes: list[str], executor: dict[str, Any], concurrent: int,
                   started: str | None = None, log: Callable[[str], None] = print) -> None:
    """Create or update ``run.json``: resolved configuration, versions, device and machine.

    ``executor`` is :meth:`mibench.executors.Executor.describe`: which executor ran (and the
    Dask scheduler), the device (and each worker's), the torch threads per task. Every
    invocation is appended with its own executor, since a run may be resumed on another. A
    damaged ``run.json`` is kept as ``run.json.damaged`` (its history would be lost otherwise).
    """
    path = manifest_path(run_dir)
    previous: dict[str, Any] = {}
    if path.is_file():
        try:
            previous = read_json_object(path)
        except ValueError as exc:
            aside = damaged_path(path)
            path.replace(aside)
            log(f"warning: {path}: damaged manifest ({exc}); kept as {aside.name}, a new one "
                "is written")
            previous = {}
    # Older run.json files have "at" instead of "started": run_span reads either.
    invocation = {"started": started or now(), "argv": sys.argv,
                  "tasks_planned": tasks_planned, "executor": executor["executor"],
                  "concurrent_tasks": concurrent}
    # An invocation that ran nothing (all records there) keeps what the last one that ran had.
    ran = executor if concurrent or "executor" not in previous else previous
    manifest = {
        "config": config,
        "versions": versions(),
        "device": ran.get("device"),
        "executor": ran.get("executor"),
        "machine": machine_facts(),
        "concurrent_tasks": max(concurrent, previous.get("concurrent_tasks", 0)),
        "threads_per_task": ran.get("threads_per_task"),
        "dataset_notes": list(dataset_notes),
        "created": previous.get("created", now()),
        "updated": now(),
        "invocations": previous.get("invocations", []) + [invocation],
    }
    manifest.update(run_span(manifest["invocations"]))
    write_json_atomic(path, manifest)


def run_span(invocations: list[Any]) -> dict[str, Any]:
    """A run's ``started`` (its first invocation's start), ``finished`` (its last invocation's
    finish; None while it runs) and ``duration_s`` (the invocations' durations summed, in
    seconds: the time spent running, without the pauses between a run and its resumption)."""
    runs = [i for i in invocations if isinstance(i, dict)]
    if not runs:
        return {"started": None, "finished": None, "duration_s": None}
    durations = [i["duration_s"] for i in runs if isinstance(i.get("duration_s"), int | float)]
    return {"started": runs[0].get("started", runs[0].get("at")),
            "finished": runs[-1].get("finished"),
            "duration_s": round(sum(durations), 3) if durations else None}


def finish_manifest(run_dir: Path, duration_s: float) -> None:
    """Note in ``run.json`` that the latest invocation finished now, after ``duration_s``
    seconds (also when it was interrupted: its records are kept), and update the run's span."""
    path = manifest_path(run_dir)
    try:
        manifest = read_json_object(path)
    except (OSError, ValueError):
        return  # nothing to finish: the reports say what run.json lacks
    invocations = manifest.get("invocations")
    if not isinstance(invocations, list) or not invocations or not isinstance(
            invocations[-1], dict):
        return
    invocations[-1]["finished"] = now()
    invocations[-1]["duration_s"] = round(duration_s, 3)
    manifest.update(run_span(invocations))
    write_json_atomic(path, manifest)
