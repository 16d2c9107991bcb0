"""Merge several run directories of the same dataset (a GPU run and a toolbox run, say) into one.

The merged directory is a run directory like any other: its ``records/`` holds a copy of every
input record (identical tasks, i.e. the same key, only once: an ``ok`` record wins over a failed
one, then the first input), with the transform file it references (a B-spline's ``.npz``), and
its ``run.json`` the common configuration, the union of the methods and seeds, and each input's
versions, device and machine under ``merged_from``. So ``mibench report OUT`` rebuilds it later
like any run.

Runs of different datasets, dataset options or NAED normalisations are refused, and so is one
method name with different parameters in two inputs (their numbers would be mixed in one row).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from mibench.errors import UserError
from mibench.jsonio import canonical_json, write_json_atomic
from mibench.manifest import manifest_config, read_manifest
from mibench.paths import RECORDS_DIR, manifest_path, record_files
from mibench.records import read_record, transform_file
from mibench.registration import Record

#: Settings that must be equal for runs to be merged.
MUST_MATCH = ("dataset", "dataset_params", "naed_norm")


def _identity(manifest: dict[str, Any], records: list[Record]) -> dict[str, Any]:
    """What must match across inputs: from run.json, else from the first record."""
    config = manifest_config(manifest)
    found = {k: config.get(k) for k in MUST_MATCH if k in config}
    if len(found) < len(MUST_MATCH) and records:
        rec = records[0]
        found.setdefault("dataset", rec.task.dataset)
        found.setdefault("dataset_params", rec.task.dataset_params)
        found.setdefault("naed_norm", rec.naed_norm)
    return found


def _read_records(files: list[Path]) -> list[Record]:
    """The records of one input; an unreadable one is a :class:`UserError` naming it (a merge
    would otherwise leave a task out without a word)."""
    return [read_record(path) for path in files]


def merge_runs(run_dirs: list[Path], out: Path) -> Path:
    """Copy the records of ``run_dirs`` into ``out`` and write its ``run.json``; return ``out``.

    Raises :class:`UserError` (one line) for inputs that are not run directories or that cannot
    be merged, and for an ``out`` that already holds records of another run.
    """
    run_dirs = [Path(d) for d in run_dirs]
    out = Path(out)
    for d in run_dirs:
        if not (d / RECORDS_DIR).is_dir():
            raise UserError(f"{d}: not a run directory (no {RECORDS_DIR}/ folder)")
    inputs = {d.resolve() for d in run_dirs}
    if (out / RECORDS_DIR).is_dir() and out.resolve() not in inputs:
        raise UserError(f"{out}: already holds records of another run; choose a new directory "
                        "or name it as one of the runs to merge")
    manifests = [read_manifest(d) for d in run_dirs]
    files = [record_files(d) for d in run_dirs]
    records = [_read_records(fs) for fs in files]
    first = _identity(manifests[0], records[0])
    for d, man, recs in zip(run_dirs[1:], manifests[1:], records[1:], strict=True):
        ident = _identity(man, recs)
        for key in MUST_MATCH:
            if canonical_json(ident.get(key)) != canonical_json(first.get(key)):
                raise UserError(f"{d}: cannot merge with {run_dirs[0]}: {key} differs "
                                f"({canonical_json(ident.get(key))} vs "
                                f"{canonical_json(first.get(key))})")

    chosen: dict[str, tuple[Path, Record]] = {}
    params: dict[str, tuple[str, Path]] = {}
    for d, fs, recs in zip(run_dirs, files, records, strict=True):
        for path, rec in zip(fs, recs, strict=True):
            method, key = rec.task.method, rec.key
            p = canonical_json(rec.task.method_params or {})
            if method in params and params[method][0] != p:
                raise UserError(f"{d}: cannot merge: method {method!r} ran with other "
                                f"parameters in {params[method][1]}")
            params.setdefault(method, (p, d))
            old = chosen.get(key)
            if old is None or (old[1].status != "ok" and rec.status == "ok"):
                chosen[key] = (path, rec)

    out.mkdir(parents=True, exist_ok=True)
    for path, rec in chosen.values():
        dest = out / RECORDS_DIR / path.parent.name / path.name
        if dest.resolve() != path.resolve():
            dest.parent.mkdir(parents=True, exist_ok=True)
            # A non-matrix transform's file (a B-spline's coefficients) travels with its
            # record, which references it by name; it goes first, so that a record in the
            # merged directory never points at a file that is not there yet.
            source = transform_file(path, rec)
            if source is not None and source.exists():
                shutil.copy2(source, dest.parent / source.name)
            shutil.copy2(path, dest)
    method_params = {m: json.loads(p) for m, (p, _d) in params.items() if isinstance(m, str)}
    manifest = merged_manifest(run_dirs, manifests, first, method_params)
    write_json_atomic(manifest_path(out), manifest)
    return out


def merged_manifest(run_dirs: list[Path], manifests: list[dict[str, Any]],
                    identity: dict[str, Any],
                    method_params: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``run.json`` of a merged directory (see the module docstring).

    ``method_params`` (method -> parameters, from the records) wins over the inputs'
    ``config.methods``, which only say what each input's last invocation selected.
    """
    configs = [manifest_config(m) for m in manifests]
    config = {**configs[0], **identity}
    # Only a reference every input asked for: anything else would depend on the input order.
    refs = {(c.get("reference") or None) if isinstance(c.get("reference"), str) else None
            for c in configs}
    config["reference"] = refs.pop() if len(refs) == 1 else None
    methods: dict[str, Any] = {}
    seeds: set[int] = set()
    plugins: list[str] = []
    notes: list[str] = []
    single: set[str] = set()  # a method that ignores the seed does so in every run
    for c, m in zip(configs, manifests, strict=True):
        single.update(x for x in c.get("single_seed_methods") or [] if isinstance(x, str))
        if isinstance(c.get("methods"), dict):
            methods.update({k: v for k, v in c["methods"].items() if k not in methods})
        seeds.update(int(s) for s in c.get("seeds") or [] if isinstance(s, int))
        plugins += [p for p in c.get("plugins") or [] if p not in plugins]
        notes += [n for n in m.get("dataset_notes") or [] if n not in notes]
    methods.update(method_params or {})
    config.update(methods=dict(sorted(methods.items())), seeds=sorted(seeds), plugins=plugins)
    if single:
        config["single_seed_methods"] = sorted(single)
    sources = [{"run_dir": str(d), **{k: m.get(k) for k in
                ("versions", "device", "machine", "concurrent_tasks", "threads_per_task",
                 "created", "updated")}}
               for d, m in zip(run_dirs, manifests, strict=True)]
    concurrent = [s["concurrent_tasks"] for s in sources
                  if isinstance(s["concurrent_tasks"], int)]
    base = manifests[0]
    return {
        "config": config,
        "versions": base.get("versions"),
        "device": base.get("device"),
        "machine": base.get("machine"),
        "concurrent_tasks": max(concurrent) if concurrent else None,
        "threads_per_task": base.get("threads_per_task"),
        "dataset_notes": notes,
        "created": base.get("created"),
        "updated": base.get("updated"),
        "merged_from": sources,
    }


__all__ = ["merge_runs", "merged_manifest"]
