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
from mibench.paths import damaged_path, record_files, temporary_files
from mibench.registration import Record


def write_record(run_dir: Path, task: Any, record: Any) -> Path:
    """Write ``record`` (``to_dict()``) at ``task.record_path(run_dir)``; return the path."""
    path = task.record_path(run_dir)
    write_json_atomic(path, record.to_dict())
    return path


def read_record(path: Path) -> Record:
    """One record file. A file that is not a complete record (cut short, edited, not a JSON
    object) is a :class:`UserError` naming it."""
    try:
        return Record.from_dict(read_json_object(path))
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise UserError(f"{path}: damaged record ({exc}); delete it and `mibench run` "
                        "recomputes that task") from None


def iter_records(run_dir: Path) -> Iterator[Record]:
    """All records of ``run_dir`` (:func:`read_record`: a damaged one raises)."""
    for path in record_files(run_dir):
        yield read_record(path)


def load_records_setting_aside_damaged(run_dir: Path,
                                       log: Callable[[str], None]) -> list[Record]:
    """All records of a run directory about to be resumed. A damaged one (see
    :func:`read_record`) is renamed to ``*.json.damaged``, so that its task runs again instead
    of counting as done and breaking every report; ``log`` says so."""
    records = []
    for path in record_files(run_dir):
        try:
            records.append(read_record(path))
        except UserError as exc:
            aside = damaged_path(path)
            os.replace(path, aside)
            log(f"warning: {exc} -- moved to {aside.name}; the task runs again")
    return records


def remove_stale_temporaries(run_dir: Path) -> int:
    """Delete half-written files left by a killed run; returns how many there were."""
    stale = temporary_files(run_dir)
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)
