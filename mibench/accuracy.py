"""The accuracy task: one estimator scores one sample of a pair with known MI.

``mibench estimators accuracy`` plans one :class:`AccuracyTask` per estimator x known-MI task x
sample size x seed (:func:`plan_accuracy`) and runs them through the same runner, pool,
executors, records and resume as ``mibench run`` (:mod:`mibench.tasks`). Each
:class:`AccuracyRecord` holds the estimate, the truth and the time; the report
(:mod:`mibench.reports.accuracy`) turns them into bias, SD, RMSE and rank agreement.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from mibench.errors import UserError
from mibench.estimator_sets import EstimatorPlan, resolve_estimators, run_dir_for
from mibench.paths import record_path
from mibench.registry import Registry
from mibench.settings import ExecutionSettings
from mibench.tasks import TaskRecord, Workspace, note_failure, now, task_key
from mibench.variants import base_name

#: Part of every accuracy task's key (see :data:`mibench.registration.SCHEMA_VERSION`).
SCHEMA_VERSION = 1
#: Sample sizes (values per variable, perfect squares) when none are given: 64^2 and 256^2.
DEFAULT_SIZES = (4_096, 65_536)
#: The task families a run uses when none are given: one continuous sweep with a monotone
#: map, one with a long tail, and the image tasks.
DEFAULT_FAMILIES = ("gaussian", "gaussian-cdf", "student", "uniform-noise", "image-permutation",
                    "image-independent", "image-channel")


@dataclass(frozen=True)
class AccuracyTask:
    """Score sample ``seed`` of ``n`` values of known-MI task ``task`` with an estimator (name,
    possibly a variant, and resolved options)."""

    estimator: str
    estimator_params: dict[str, Any]
    task: str
    n: int
    seed: int

    @property
    def key(self) -> str:
        return task_key({**asdict(self), "kind": AccuracyRecord.kind, "schema": SCHEMA_VERSION})

    @property
    def group(self) -> str:
        return self.estimator

    def record_path(self, run_dir: Path) -> Path:
        """``records/<estimator>/<task>.n<n>.s<seed>.<key>.json``."""
        return record_path(run_dir, self.estimator,
                           f"{self.task}.n{self.n}.s{self.seed}.{self.key}")

    def run(self, workspace: Workspace, on_started: Callable[[Any], None] | None = None
            ) -> AccuracyRecord:
        return run_accuracy_task(self, workspace)

    def failure(self, workspace: Workspace, error: str) -> AccuracyRecord:
        return AccuracyRecord(self, status="failed", error=error, finished_at=now())


@dataclass
class AccuracyRecord(TaskRecord):
    """The outcome of one :class:`AccuracyTask`: the estimate and the truth (nats for MI; the
    measure's own unit otherwise), whether higher values mean more similar, and the time of the
    estimator call alone (``wall_s``)."""

    kind: ClassVar[str] = "accuracy"
    task_type: ClassVar[type] = AccuracyTask

    task: AccuracyTask
    status: str
    error: str | None = None
    estimate: float | None = None
    truth: float | None = None
    family: str = ""
    parameter: float | None = None
    higher_is_better: bool = True
    wall_s: float | None = None
    device: str = "cpu"
    info: dict[str, Any] = field(default_factory=dict)
    finished_at: str = ""
    schema: int = SCHEMA_VERSION



@functools.cache
def known_tasks() -> dict[str, Any]:
    """Every known-MI task by name (:mod:`mibench.assessment.known_mi`), built once per process
    (every task a worker runs looks its own up here; the dict is only read)."""
    from mibench.assessment.known_mi import tasks

    return tasks()


def run_accuracy_task(task: AccuracyTask, workspace: Workspace) -> AccuracyRecord:
    """Draw the sample, score it with the estimator (timed), record both. Never raises for the
    estimator's failure: an exception or a non-finite value fails the task."""
    import torch

    from mibench.callables import Estimator
    from mibench.seeds import seed_everything
    from mibench.tensors import resolve_device

    record = task.failure(workspace, "not run")
    device = resolve_device(workspace.ctx.device)
    try:
        known = known_tasks()[task.task]
        spec = workspace.registry.get("estimator", base_name(task.estimator))
        record.family, record.parameter = known.family, known.parameter
        record.truth, record.higher_is_better = known.true_mi(task.n), spec.higher_is_better
        fixed, moving = (x.to(device) for x in known.as_images(task.n, task.seed))
        estimator = Estimator(spec, task.estimator_params)
        seed_everything(task.seed)
        t0 = time.perf_counter()
        value = estimator(fixed, moving)
        estimate = float(value[0])  # reads the value back: the device's work is done
        record.wall_s = time.perf_counter() - t0
        if not math.isfinite(estimate):
            raise ValueError(f"the estimate is {estimate}")
        record.status, record.error, record.estimate = "ok", None, estimate
    except Exception as exc:
        note_failure(record, exc)
    record.device, record.finished_at = str(device), now()
    record.info["torch_threads"] = torch.get_num_threads()
    return record


# --------------------------------------------------------------------------- planning

@dataclass(frozen=True)
class AccuracySettings(ExecutionSettings):
    """``mibench estimators accuracy``: the :class:`ExecutionSettings`, the estimators (names,
    variants, or ``all``), the known-MI task families and the sample sizes."""

    estimators: tuple[str, ...] = ("all",)
    families: tuple[str, ...] = DEFAULT_FAMILIES
    sizes: tuple[int, ...] = DEFAULT_SIZES

    def __post_init__(self) -> None:
        super().__post_init__()
        bad = [n for n in self.sizes if isinstance(n, bool) or not isinstance(n, int)
               or n < 4 or math.isqrt(n) ** 2 != n]
        if bad or not self.sizes:
            raise UserError(f"sizes (--sizes) must be perfect squares >= 4 (values per "
                            f"variable: an image side squared), got {bad[0] if bad else '()'}")


def plan_accuracy(registry: Registry, settings: AccuracySettings) -> EstimatorPlan:
    """One task per estimator x known-MI task (of the chosen families) x size x seed."""
    estimators = resolve_estimators(registry, settings.estimators)
    # After the names are checked: the task library imports torch (seconds), a typo does not.
    from mibench.assessment.known_mi import tasks

    try:
        chosen = tasks(*settings.families)
    except ValueError as exc:
        raise UserError(f"--families: {exc}") from None
    config = {"command": "estimators accuracy", "estimators": estimators,
              "families": list(settings.families), "sizes": list(settings.sizes),
              **settings.execution_config()}
    run_dir = run_dir_for(settings.out, "accuracy", {k: config[k] for k in (
        "estimators", "families", "sizes", "seeds")})
    planned = [AccuracyTask(name, params, task, n, seed)
               for name, params in estimators.items() for task in chosen
               for n in settings.sizes for seed in settings.seeds]
    return EstimatorPlan(config, run_dir, planned)
