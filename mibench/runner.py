"""The driver of a run: plan -> tasks -> executor -> records -> reports, in one straight line.

1. :func:`mibench.plan.plan_run` resolves the settings into tasks and a run directory;
2. :mod:`mibench.resume` keeps the tasks that already have a record (and refuses a run
   directory of another configuration);
3. ``run.json`` is written (:mod:`mibench.manifest`);
4. an executor (:mod:`mibench.executors`) runs the remaining tasks in worker processes with a
   time-out; each record is written atomically by this process the moment it arrives
   (:mod:`mibench.records`), so a run killed at any moment loses only the tasks in flight;
5. the reports are built from the records (:mod:`mibench.reports`).

A task that raises, returns NaN, exceeds the time-out or kills its worker yields a *failed*
record scored with the pair's initial error (:mod:`mibench.registration`); the run goes on.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mibench.accuracy import AccuracyRecord, AccuracySettings, plan_accuracy
from mibench.cost import CostRecord, CostSettings, plan_cost
from mibench.errors import UserError
from mibench.estimator_sets import EstimatorPlan, check_estimator_options
from mibench.landscape import LandscapeRecord, LandscapeSettings, plan_landscape
from mibench.manifest import finish_manifest, write_manifest
from mibench.metrics import DEFAULT_NAED_NORM
from mibench.plan import plan_run
from mibench.progress import Progress
from mibench.records import (
    load_records_setting_aside_damaged,
    remove_stale_temporaries,
    write_record,
)
from mibench.registry import Registry
from mibench.resume import check_compatible, tasks_to_run
from mibench.settings import ExecutionSettings, RunSettings
from mibench.tasks import Task, WorkerContext, Workspace, now

if TYPE_CHECKING:
    from mibench.reports import Reports
    from mibench.reports.accuracy import AccuracyReport
    from mibench.reports.cost import CostReport
    from mibench.reports.landscape import LandscapeReport

# The executors (torch) and the reports (pandas, matplotlib) are imported where they are used:
# a mistake in the settings is reported before seconds of imports, not after.


@dataclass
class RunResult:
    """What a run did. ``tasks_s`` is the wall time of running the tasks (workers' start-up
    included; planning and reports excluded); ``report`` is what
    :func:`mibench.reports.build_reports` returned (the report's path, its NAED table)."""

    run_dir: Path
    planned: int
    skipped_existing: int
    completed: int
    failed: int
    report: Reports
    tasks_s: float = 0.0


@dataclass
class _Tally:
    """Records as they arrive: counts, per group (method), and the progress shown."""

    progress: Progress | None = None
    completed: int = 0
    failed: int = 0
    per_group: dict[str, list[Any]] = field(default_factory=dict)  # [run, failed, 1st error]

    def add(self, task: Task, record: Any) -> None:
        self.completed += 1
        self.failed += record.status == "failed"
        tally = self.per_group.setdefault(task.group, [0, 0, None])
        tally[0] += 1
        if record.status == "failed":
            tally[1] += 1
            tally[2] = tally[2] or record.error
        if self.progress is not None:
            self.progress.finish(task, record)

    def warn_all_failed(self, log: Callable[[str], None], what: str) -> None:
        for group, (ran, failed, error) in self.per_group.items():
            if ran and failed == ran:
                # Most likely a bad option or a missing dependency rather than hard inputs.
                log(f"warning: every task of {what} {group!r} failed ({ran}); the first "
                    f"error: {error}")


def open_run_dir(run_dir: Path, log: Callable[[str], None], record_type: Any = None
                 ) -> list[Any]:
    """Create ``run_dir`` (or resume in it): clear a killed run's half-written files and return
    the records already there (a damaged one is set aside, its task runs again)."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{run_dir}: cannot create the run directory "
                        f"({exc.strerror or exc})") from None
    remove_stale_temporaries(run_dir)
    return load_records_setting_aside_damaged(run_dir, log, record_type)


@dataclass(frozen=True)
class Executed:
    """What :func:`execute` did: tasks planned, kept from earlier runs, run now, failed now,
    and the wall time of running them (workers' start-up included)."""

    planned: int
    kept: int
    completed: int
    failed: int
    tasks_s: float


def execute(run_dir: Path, tasks: list[Task], previous: list[Any], *, settings: ExecutionSettings,
            ctx: WorkerContext, workspace: Workspace, config: dict[str, Any],
            dataset_notes: list[str], progress: bool, log: Callable[[str], None],
            what: str = "method") -> Executed:
    """Run the ``tasks`` that have no record among ``previous`` (resume), on the settings'
    executor, writing each record the moment it arrives, and ``run.json``. Knows nothing of
    what a task computes (:mod:`mibench.tasks`); ``what`` names a task group in messages."""
    from mibench.executors import make_executor

    started, t_start = now(), time.perf_counter()
    resume = tasks_to_run(tasks, previous, retry_failed=settings.retry_failed)
    todo = resume.todo
    if resume.kept:
        failed = (f" ({resume.failed_before} of them failed: --retry-failed runs those again)"
                  if resume.failed_before and not settings.retry_failed else "")
        log(f"resuming in {run_dir}: {resume.kept} of {len(tasks)} tasks already have "
            f"records{failed}")
    # With nothing to run no cluster is started: the manifest then describes a local executor.
    executor = make_executor(settings.executor if todo else "local", workers=settings.workers,
                             device=settings.device, scheduler=settings.scheduler, log=log)
    tally = _Tally()
    by_key = {t.key: t for t in todo}

    def on_record(record: Any) -> None:
        task = by_key[record.key]
        write_record(run_dir, task, record)
        tally.add(task, record)

    def failure(task: Task, error: str) -> Any:
        # The driver builds the record of a task whose worker died.
        return task.failure(workspace, error)

    with executor:
        executor.open(ctx, len(todo))
        described = executor.describe()
        if not todo and settings.executor != executor.name:
            described["executor"] = {"name": settings.executor, "started": False,
                                     "scheduler": settings.scheduler}
        write_manifest(run_dir, config, tasks_planned=len(tasks), dataset_notes=dataset_notes,
                       executor=described, concurrent=executor.concurrent if todo else 0,
                       started=started, log=log)
        if progress and todo:
            tally.progress = Progress(todo, executor.concurrent)
        on_start = tally.progress.start if tally.progress is not None else None
        t0 = time.perf_counter()
        try:
            executor.run(todo, settings.timeout, on_record, failure, on_start=on_start)
        finally:
            tasks_s = time.perf_counter() - t0
            finish_manifest(run_dir, time.perf_counter() - t_start)
            if tally.progress is not None:
                tally.progress.close()
    tally.warn_all_failed(log, what)
    return Executed(len(tasks), resume.kept, tally.completed, tally.failed, tasks_s)


def run_benchmark(settings: RunSettings, *, progress: bool = True,
                  log: Callable[[str], None] | None = None) -> RunResult:
    """Plan and run a registration benchmark; write records, the manifest and the reports.

    Tasks whose record already exists in the run directory are skipped, so calling this again
    with the same settings resumes an interrupted run (with either executor).
    """
    log = log or (lambda msg: print(msg, file=sys.stderr))
    plan = plan_run(Registry(settings.plugins), settings)
    for name, why in plan.skipped_methods.items():
        log(f"skipping method {name!r}: {why}")
    single = plan.config["single_seed_methods"]
    if single and len(settings.seeds) > 1:
        log(f"{', '.join(single)}: deterministic (the seed changes nothing), run once with seed "
            f"{settings.seeds[0]}; the reports reuse that result for the other seeds")
    previous = open_run_dir(plan.run_dir, log)
    check_compatible(plan.run_dir, previous, plan.tasks, settings.naed_norm)
    ctx = WorkerContext(plan.dataset.name, plan.config["data_dir"], settings.device,
                        settings.naed_norm, settings.plugins, 1, run_dir=str(plan.run_dir),
                        save_transforms=settings.save_transforms,
                        save_warped=settings.save_warped)
    done = execute(plan.run_dir, plan.tasks, previous, settings=settings, ctx=ctx,
                   workspace=Workspace(ctx, plan.dataset), config=plan.config,
                   dataset_notes=list(getattr(plan.dataset.dataset, "notes", None) or []),
                   progress=progress, log=log)
    from mibench.reports import build_reports

    report = build_reports(plan.run_dir)
    return RunResult(plan.run_dir, done.planned, done.kept, done.completed, done.failed, report,
                     done.tasks_s)


def _estimator_benchmark(plan: EstimatorPlan, record_type: Any, settings: ExecutionSettings,
                         build_report: Callable[[Path], Any], progress: bool,
                         log: Callable[[str], None] | None) -> tuple[Executed, Any]:
    """The driver of every ``mibench estimators`` command: the plan's tasks through the same
    execution as a registration run, then the command's report."""
    log = log or (lambda msg: print(msg, file=sys.stderr))
    previous = open_run_dir(plan.run_dir, log, record_type)
    check_estimator_options(plan.run_dir, previous, plan.tasks)
    opened = plan.dataset  # the landscape's; the other commands have none
    ctx = WorkerContext(opened.name if opened else "", plan.config.get("data_dir"),
                        settings.device, DEFAULT_NAED_NORM, settings.plugins, 1)
    done = execute(plan.run_dir, plan.tasks, previous, settings=settings, ctx=ctx,
                   workspace=Workspace(ctx, opened), config=plan.config, dataset_notes=[],
                   progress=progress, log=log, what="estimator")
    return done, build_report(plan.run_dir)


def run_accuracy(settings: AccuracySettings, *, progress: bool = True,
                 log: Callable[[str], None] | None = None) -> tuple[Executed, AccuracyReport]:
    """``mibench estimators accuracy``: every estimator on every known-MI task, size and seed."""
    plan = plan_accuracy(Registry(settings.plugins), settings)
    from mibench.reports.accuracy import build_accuracy_report  # torch, pandas: once planned

    return _estimator_benchmark(plan, AccuracyRecord, settings, build_accuracy_report, progress,
                                log)


def run_cost(settings: CostSettings, *, progress: bool = True,
             log: Callable[[str], None] | None = None) -> tuple[Executed, CostReport]:
    """``mibench estimators cost``: every estimator's time and memory at every image size."""
    plan = plan_cost(Registry(settings.plugins), settings)
    from mibench.reports.cost import build_cost_report  # torch, pandas: once planned

    return _estimator_benchmark(plan, CostRecord, settings, build_cost_report, progress, log)


def run_landscape(settings: LandscapeSettings, *, progress: bool = True,
                  log: Callable[[str], None] | None = None) -> tuple[Executed, LandscapeReport]:
    """``mibench estimators landscape``: every estimator's landscape around every pair's gold
    standard."""
    plan = plan_landscape(Registry(settings.plugins), settings)
    from mibench.reports.landscape import build_landscape_report  # torch, pandas: once planned

    return _estimator_benchmark(plan, LandscapeRecord, settings, build_landscape_report,
                                progress, log)
