"""The records of a run directory: one JSON file per task, the single source of truth.

Records are written atomically (:func:`mibench.jsonio.write_json_atomic`) the moment a task ends,
so a run killed at any time loses only the tasks in flight; resume, merge and every report read
them back from here. A record's file is ``task.record_path(run_dir)`` (:mod:`mibench.paths`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from mibench.errors import UserError
from mibench.jsonio import read_json_object, write_json_atomic
from mibench.paths import damaged_path, record_files, records_dir, temporary_files
from mibench.registration import Record


class DamagedRecord(UserError):
    """A record file that is not a complete record: cut short by a kill, or edited."""


def write_record(run_dir: Path, task: Any, record: Any) -> Path:
    """Write ``record`` (``to_dict()``) at ``task.record_path(run_dir)``; return the path."""
    path = task.record_path(run_dir)
    write_json_atomic(path, record.to_dict())
    return path


def read_record(path: Path, record_type: Any = None) -> Any:
    """One record file, as ``record_type`` (a class with ``kind`` and ``from_dict``; default the
    registration :class:`~mibench.registration.Record`). A file that is not a complete record
    (cut short, edited, not a JSON object) is a :class:`UserError` naming it, and so is a record
    of another kind (a run directory of another command)."""
    record_type = record_type or Record
    try:
        data = read_json_object(path)
        kind = data.get("kind", Record.kind)
        if kind != record_type.kind:
            raise UserError(f"{path}: a record of {kind}, not of {record_type.kind}: this "
                            "directory holds another kind of run")
        return record_type.from_dict(data)
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise DamagedRecord(f"{path}: damaged record ({exc}); delete it and `mibench run` "
                            "recomputes that task") from None


def iter_records(run_dir: Path, record_type: Any = None) -> Iterator[Any]:
    """All records of ``run_dir`` (:func:`read_record`: a damaged one raises)."""
    for path in record_files(run_dir):
        yield read_record(path, record_type)


def load_records_setting_aside_damaged(run_dir: Path, log: Callable[[str], None],
                                       record_type: Any = None) -> list[Any]:
    """All records of a run directory about to be resumed. A damaged one (see
    :func:`read_record`) is renamed to ``*.json.damaged``, so that its task runs again instead
    of counting as done and breaking every report; ``log`` says so."""
    records = []
    for path in record_files(run_dir):
        try:
            record = read_record(path, record_type)
            missing = missing_transform_file(path, record)
            if missing is not None:
                raise DamagedRecord(f"{path}: its transform file {missing.name} is missing")
            records.append(record)
        except DamagedRecord as exc:
            aside = damaged_path(path)
            os.replace(path, aside)
            log(f"warning: {exc} -- moved to {aside.name}; the task runs again")
    return records


def transform_file(path: Path, record: Any) -> Path | None:
    """The file a record's transform references (a B-spline's ``coefficients_file``), beside
    the record at ``path``; None when it references none."""
    transform = getattr(record, "transform", None)
    name = transform.get("coefficients_file") if isinstance(transform, dict) else None
    return Path(path).parent / name if name else None


def missing_transform_file(path: Path, record: Any) -> Path | None:
    """:func:`transform_file` when that file does not exist; None when there is none or it is
    there."""
    target = transform_file(path, record)
    return None if target is None or target.exists() else target


def remove_stale_temporaries(run_dir: Path) -> int:
    """Delete half-written files left by a killed run; returns how many there were (the
    manifest's and records' ``.tmp-*.part`` files, and the ``*.tmp.npz`` of a B-spline whose
    :meth:`~mibench.bspline.BSplineTransform.save` was cut short)."""
    stale = [*temporary_files(run_dir), *records_dir(run_dir).glob("*/*.tmp.npz")]
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)
