"""Tasks and their result records, stored one JSON file per task.

A task is (method + resolved parameters, dataset + resolved parameters, pair, seed). Its key is a
hash of exactly those, so a rerun of the same command finds the records it already has and runs
only the missing tasks; changing any parameter makes new keys (new tasks) instead of silently
reusing old results (and the runner refuses to put records of one method with two parameter
sets in one run directory: :func:`mibench.runner.check_compatible`). Records are written
atomically (temporary file, then rename).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mibench.errors import UserError

SCHEMA_VERSION = 1
RECORDS_DIR = "records"
TMP_PREFIX = ".tmp-"
#: A damaged record is renamed with this suffix on resume: kept for inspection, no longer a record.
DAMAGED_SUFFIX = ".damaged"


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


@dataclass(frozen=True)
class Task:
    """One unit of work: register one pair with one method (and parameters) and one seed."""

    method: str
    method_params: dict[str, Any]
    dataset: str
    dataset_params: dict[str, Any]
    pair_id: str
    seed: int

    @property
    def key(self) -> str:
        ident = {"method": self.method, "method_params": self.method_params,
                 "dataset": self.dataset, "dataset_params": self.dataset_params,
                 "pair": self.pair_id, "seed": self.seed, "schema": SCHEMA_VERSION}
        return hashlib.sha1(canonical_json(ident).encode()).hexdigest()[:16]

    def record_path(self, run_dir: Path) -> Path:
        name = f"{self.pair_id}.s{self.seed}.{self.key}.json"
        return Path(run_dir) / RECORDS_DIR / self.method / name


@dataclass
class Record:
    """The outcome of one task.

    ``status`` is ``ok`` or ``failed`` (exception, time-out, NaN, singular transform, worker
    crash; ``error`` says which). A failed pair is scored with its initial error
    (``landmark_errors == initial_errors``). ``scored`` is False for pairs without fixed
    landmarks (registered, not scored). ``wall_s`` is the registration alone; ``device_s`` is the
    CUDA-synchronised time on GPU (None on CPU).
    """

    key: str
    method: str
    method_params: dict[str, Any]
    dataset: str
    dataset_params: dict[str, Any]
    pair_id: str
    seed: int
    status: str
    error: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    transform: dict[str, Any] | None = None
    scored: bool = False
    landmark_errors: list[float] = field(default_factory=list)
    initial_errors: list[float] = field(default_factory=list)
    warped_moving_landmarks: list[list[float]] | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    normalisation: str = "diagonal"
    norm_length: float | None = None
    wall_s: float | None = None
    device_s: float | None = None
    device: str = "cpu"
    info: dict[str, Any] = field(default_factory=dict)
    finished_at: str = ""
    schema: int = SCHEMA_VERSION

    @classmethod
    def for_task(cls, task: Task, **values: Any) -> Record:
        return cls(key=task.key, method=task.method, method_params=task.method_params,
                   dataset=task.dataset, dataset_params=task.dataset_params,
                   pair_id=task.pair_id, seed=task.seed, **values)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Record:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def json_safe(obj: Any) -> Any:
    """Replace NaN and infinities (not valid JSON) by None, recursively."""
    if isinstance(obj, float):
        return obj if obj == obj and obj not in (float("inf"), float("-inf")) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


@functools.cache
def _new_file_mode() -> int:
    """The mode ``open()`` gives a new file: 0o666 less the umask (read once, as the umask can
    only be read by setting it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON so that readers see either the old file or the complete new one.

    The file gets the usual mode of a new file (``mkstemp`` makes it private to its owner,
    which would hide a shared run directory's records from colleagues)."""
    data = json_safe(data)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The temporary name does not end in .json, so that a write cut short by a kill never
    # looks like a record; remove_stale_temporaries() clears such leftovers.
    for attempt in range(3):
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=TMP_PREFIX, suffix=".part")
        try:
            os.fchmod(fd, _new_file_mode())
            with os.fdopen(fd, "w") as fh:
                json.dump(data, fh, indent=1, allow_nan=False, default=str)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
            return
        except FileNotFoundError:
            # Another run starting in this directory took the temporary file for a leftover
            # (remove_stale_temporaries) and deleted it: write it again.
            Path(tmp).unlink(missing_ok=True)
            if attempt == 2:
                raise
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def write_record(run_dir: Path, task: Task, record: Record) -> Path:
    path = task.record_path(run_dir)
    write_json_atomic(path, record.to_dict())
    return path


def read_record(path: Path) -> Record:
    """One record file. A file that is not a complete record (cut short, edited, not a JSON
    object) is a :class:`UserError` naming it."""
    try:
        data = json.loads(Path(path).read_text())
        if not isinstance(data, dict):
            raise ValueError(f"a JSON {type(data).__name__}, not an object")
        return Record.from_dict(data)
    except (OSError, ValueError, TypeError) as exc:
        raise UserError(f"{path}: damaged record ({exc}); delete it and `mibench run` "
                        "recomputes that task") from None


def iter_records(run_dir: Path) -> Iterator[Record]:
    """All records under ``run_dir/records`` (:func:`read_record`: a damaged one raises)."""
    root = Path(run_dir) / RECORDS_DIR
    for path in sorted(root.glob("*/*.json")):
        yield read_record(path)


def load_records_setting_aside_damaged(run_dir: Path,
                                       log: Callable[[str], None]) -> list[Record]:
    """All records of a run directory about to be resumed. A damaged one (see
    :func:`read_record`) is renamed to ``*.json.damaged``, so that its task runs again instead
    of counting as done and breaking every report; ``log`` says so."""
    records = []
    for path in sorted((Path(run_dir) / RECORDS_DIR).glob("*/*.json")):
        try:
            records.append(read_record(path))
        except UserError as exc:
            aside = path.with_name(path.name + DAMAGED_SUFFIX)
            os.replace(path, aside)
            log(f"warning: {exc} -- moved to {aside.name}; the task runs again")
    return records


def remove_stale_temporaries(run_dir: Path) -> int:
    """Delete half-written files left by a killed run; returns how many there were."""
    run_dir = Path(run_dir)
    stale = [*run_dir.glob(f"{TMP_PREFIX}*.part"),
             *(run_dir / RECORDS_DIR).glob(f"*/{TMP_PREFIX}*.part")]
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)
