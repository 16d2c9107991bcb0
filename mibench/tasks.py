"""What the runner runs: a *task*, executed in a worker process under a time-out.

The runner, its process pool and its executors never look inside a task. A task is any picklable
object with

- ``key``: a short hash of exactly what the task computes (its plugin, options, input and seed),
  so that a rerun finds the record it already has (resume) and a changed option makes a new task;
- ``group``: what its records are filed and its failures tallied by (a method, an estimator);
- ``record_path(run_dir)``: where its record is stored (:mod:`mibench.paths`);
- ``run(workspace, on_started)``: compute it in a worker and return its record; never raise for
  a failure of the plugin under test (the record says ``failed``). ``on_started`` receives a
  provisional failed record once the inputs are loaded, so that the driver can still write a
  meaningful record if the worker process dies or runs out of time;
- ``failure(workspace, error)``: the failed record of a task whose worker died before it could
  report (built by the driver, which may load the inputs again to score it).

A record is any object with ``key``, ``status`` (``"ok"`` or ``"failed"``), ``error``,
``wall_s``, ``finished_at`` and ``to_dict()``; its class has ``kind`` (stored in the record,
so that a directory of one kind of run is never read as another) and ``from_dict``.
Registration is one kind of task (:mod:`mibench.registration`); another kind (an estimator
assessed on data of known MI, say) implements the same members and runs through the same pool,
executors and resume.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, ClassVar, Protocol

from mibench.callables import OpenDataset, open_dataset
from mibench.jsonio import canonical_json
from mibench.registry import Registry


def now() -> str:
    """The time a record is finished: UTC, ISO 8601, seconds."""
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class WorkerContext:
    """The run-wide settings a worker process needs besides its tasks (picklable: sent to
    spawned processes and Dask workers).

    ``device`` is this worker's device request (``auto``, ``cpu``, ``cuda``, ``cuda:N``: the
    executor pins each worker to one device), ``naed_norm`` the run's NAED normaliser, ``threads``
    the worker's torch intra-op threads. ``run_dir`` is the run directory, where
    ``save_transforms`` / ``save_warped`` write each task's transform file and warped moving
    image beside its record (:func:`mibench.export.write_task_outputs`).
    """

    dataset: str
    data_dir: str | None
    device: str
    naed_norm: str
    plugins: tuple[str, ...]
    threads: int
    run_dir: str | None = None
    save_transforms: bool = False
    save_warped: bool = False


class Workspace:
    """What a worker process keeps for its tasks: the plugin registry and the open datasets,
    each built once per process (a dataset may index a directory when it opens).

    ``opened`` seeds the cache with a dataset the caller already has open (the driver's plan).
    """

    def __init__(self, ctx: WorkerContext, opened: OpenDataset | None = None):
        self.ctx = ctx
        self._registry: Registry | None = None
        self._datasets: dict[tuple[str, str], Any] = {}
        if opened is not None:
            self._datasets[(opened.name, canonical_json(opened.params))] = opened.dataset

    @property
    def registry(self) -> Registry:
        if self._registry is None:
            self._registry = Registry(self.ctx.plugins)
        return self._registry

    def dataset(self, name: str, params: dict[str, Any]) -> Any:
        """Dataset ``name`` opened with ``params`` (resolved options) on the run's data dir."""
        key = (name, canonical_json(params))
        if key not in self._datasets:
            spec = self.registry.get("dataset", name)
            self._datasets[key] = open_dataset(spec, self.ctx.data_dir, params).dataset
        return self._datasets[key]


class Task(Protocol):
    """The runner's view of a unit of work (see the module docstring)."""

    @property
    def key(self) -> str: ...

    @property
    def group(self) -> str: ...

    def record_path(self, run_dir: Path) -> Path: ...

    def run(self, workspace: Workspace,
            on_started: Callable[[Any], None] | None = None) -> Any: ...

    def failure(self, workspace: Workspace, error: str) -> Any: ...


def task_key(ident: dict[str, Any]) -> str:
    """16 hex digits of SHA-1 over a task's identity (its fields, kind and schema version)."""
    return hashlib.sha1(canonical_json(ident).encode()).hexdigest()[:16]


class TaskRecord:
    """What the records of every kind of task share: a dataclass whose first field is its
    ``task`` (of class ``task_type``), stored as one flat JSON object, ``kind`` and ``key``
    first, then the task's fields, then the outcome. ``stores_kind`` is False for registration
    records only, which came first and keep their original layout."""

    kind: ClassVar[str]
    task_type: ClassVar[type]
    stores_kind: ClassVar[bool] = True

    @property
    def key(self) -> str:
        return self.task.key

    def to_dict(self) -> dict[str, Any]:
        outcome = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "task"}
        head = {"kind": self.kind} if self.stores_kind else {}
        return {**head, "key": self.key, **asdict(self.task), **outcome}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Any:
        """A record from its JSON object (unknown keys, ``kind`` and ``key`` ignored: the key
        is the task's)."""
        task = cls.task_type(**{f.name: data[f.name] for f in fields(cls.task_type)})
        known = {f.name for f in fields(cls)} - {"task"}
        return cls(task, **{k: v for k, v in data.items() if k in known})


def failure_text(exc: BaseException) -> str:
    """``"TypeName: message"``, first line only: a failed task's ``error``."""
    return f"{type(exc).__name__}: {exc}".splitlines()[0]


def note_failure(record: Any, exc: BaseException) -> None:
    """Record the exception being handled in ``record``: its one-line ``error`` and, in
    ``info``, the traceback (for whoever debugs the plugin)."""
    record.error = failure_text(exc)
    record.info = {"traceback": traceback.format_exc(limit=20)}
