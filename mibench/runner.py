"""Runs tasks, each in a worker process with a time-out, and writes one record per task.

The driver (this process) plans the tasks, skips those whose record exists (resume), hands the
rest to worker processes and writes each record atomically as soon as it arrives, so a run killed
at any moment loses only the tasks in flight. A worker that raises, returns NaN, exceeds the
time-out or dies (segfault, out of memory) yields a *failed* record scored with the pair's
initial error (the README's *Conventions*); the run goes on.

Where the tasks run is an executor's business (:mod:`mibench.executors`: local processes or a Dask
cluster); this module holds what every executor shares: running one task (:func:`run_task`), the
pool of time-limited worker processes (:class:`ProcessPool`), the manifest and the driver loop.
"""

from __future__ import annotations

import datetime as _dt
import gc
import multiprocessing as mp
import os
import platform
import random
import signal
import socket
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

import numpy as np

from mibench.config import RunConfig, RunPlan, plan_run
from mibench.errors import UserError, one_line_warnings
from mibench.metrics import landmark_errors, norm_length, pair_scores
from mibench.pairs import Pair, check_pair
from mibench.records import (
    DAMAGED_SUFFIX,
    RECORDS_DIR,
    Record,
    Task,
    canonical_json,
    load_records_setting_aside_damaged,
    remove_stale_temporaries,
    write_json_atomic,
    write_record,
)
from mibench.registry import Registry
from mibench.transform import MatrixTransform, Transform

MANIFEST = "run.json"


@dataclass(frozen=True)
class WorkerContext:
    """Everything a worker needs besides the task (picklable: sent to spawned processes).

    ``device`` is this worker's device request (``auto``, ``cpu``, ``cuda``, ``cuda:N``; the
    executor pins each worker to one device), ``threads`` its torch intra-op threads.
    """

    dataset: str
    data_dir: str | None
    device: str
    normalisation: str
    plugins: tuple[str, ...]
    threads: int


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


# --------------------------------------------------------------------------- scoring

def score_record(task: Task, pair: Pair, transform: Transform | None, *, error: str | None,
                 normalisation: str, device: str = "cpu") -> Record:
    """Score one task's outcome per the failure policy.

    ``error`` not None marks the task failed: it is scored as if the identity had been returned
    (its initial error). A transform that is singular, non-finite or maps a landmark to a
    non-finite point also fails the task.
    """
    if error is None and transform is None:
        error = "method returned no transform"
    if error is None and isinstance(transform, MatrixTransform) and not transform.is_valid:
        error = "singular or non-finite transform"
    record = Record.for_task(task, status="ok", meta=dict(pair.meta), normalisation=normalisation,
                             device=device, finished_at=_now())
    mov = pair.moving_landmarks
    if error is None and mov is not None and len(mov):
        try:
            warped = transform.moving_to_fixed(mov)
        except Exception as exc:  # a broken transform is the method's failure, not ours
            error = f"mapping landmarks failed: {type(exc).__name__}: {exc}"
        else:
            if not np.isfinite(warped).all():
                error = "transform maps landmarks to non-finite points"
            else:
                record.warped_moving_landmarks = (warped * pair.native_scale).tolist()
    if error is None:
        record.transform = transform.to_dict()
    else:
        record.status, record.error = "failed", error
        record.warped_moving_landmarks = None
    if pair.fixed_landmarks is not None and mov is not None and len(mov):
        k = min(len(pair.fixed_landmarks), len(mov))
        f, m = pair.fixed_landmarks[:k], mov[:k]
        initial = landmark_errors(None, f, m, pair.native_scale)
        errors = initial if record.status == "failed" else landmark_errors(
            transform, f, m, pair.native_scale)
        shape = pair.native_fixed_shape
        length = norm_length(shape, normalisation)
        record.scored = True
        record.norm_length = length
        record.landmark_errors = errors.tolist()
        record.initial_errors = initial.tolist()
        record.metrics = pair_scores(errors, initial, length, norm_length(shape, "diagonal"))
    return record


def _scored_or_failed(task: Task, pair: Pair, transform: Transform | None, error: str | None,
                      normalisation: str, device: str = "cpu") -> Record:
    """:func:`score_record`, or an unscored failure if scoring itself raises (a transform or a
    pair that nothing caught earlier): one task fails, the run goes on."""
    try:
        return score_record(task, pair, transform, error=error, normalisation=normalisation,
                            device=device)
    except Exception as exc:
        why = f"scoring failed: {type(exc).__name__}: {exc}".splitlines()[0]
        return unscored_failure(task, f"{error}; {why}" if error else why, normalisation)


def unscored_failure(task: Task, error: str, normalisation: str) -> Record:
    """A failed record for a task whose pair could not even be loaded."""
    return Record.for_task(task, status="failed", error=error, normalisation=normalisation,
                           finished_at=_now())


# --------------------------------------------------------------------------- one task

class _WorkerState:
    """Per-process caches: the registry and the dataset object (built once per worker)."""

    def __init__(self, ctx: WorkerContext):
        self.ctx = ctx
        self.registry = Registry(ctx.plugins)
        self._datasets: dict[str, Any] = {}

    def dataset(self, task: Task):
        key = canonical_json(task.dataset_params)
        if key not in self._datasets:
            spec = self.registry.get("dataset", task.dataset)
            data_dir = Path(self.ctx.data_dir) if self.ctx.data_dir else None
            self._datasets[key] = spec.load()(data_dir, **task.dataset_params)
        return self._datasets[key]


def _seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def oom_message(exc: BaseException, device: str) -> str:
    """One line for a CUDA out-of-memory error: where, torch's own figures, and what to try."""
    detail = str(exc).splitlines()[0] if str(exc) else ""
    detail = detail.removeprefix("CUDA out of memory.").strip()
    where = device if device.startswith("cuda") else "cuda"
    inner = f" ({detail})" if detail else ""
    return f"CUDA out of memory on {where}{inner}; try a smaller size or --workers 1"


def _free_cuda_cache() -> None:
    import torch

    # The failed method's tensors are garbage once its frames are gone: collect them before
    # handing the cached blocks back, so that the next task starts with the device's memory.
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def run_task(task: Task, state: _WorkerState, on_loaded: Callable[[Record], None] | None = None
             ) -> Record:
    """Load the pair, register it (timed), score it. Never raises for a method's failure.

    ``on_loaded`` receives a provisional failed record (scored with the initial error) before
    registration starts, so that the driver can still score the pair if this process dies.
    On CUDA the timed region is bracketed by ``torch.cuda.synchronize`` and also measured with
    CUDA events (``device_s``). A CUDA out-of-memory error fails this task only, with a message
    saying so (:func:`oom_message`), and the device's cache is freed for the next task.
    """
    import torch

    from mibench.callables import Method
    from mibench.tensors import image_to_tensor, mask_to_tensor, resolve_device

    ctx = state.ctx
    try:
        pair = check_pair(state.dataset(task).load(task.pair_id), task.pair_id)
    except Exception as exc:
        return unscored_failure(task, f"loading pair failed: {type(exc).__name__}: {exc}",
                                ctx.normalisation)
    device = resolve_device(ctx.device)
    cuda = device.type == "cuda"
    if cuda:
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        torch.cuda.set_device(device)  # libraries that allocate on "the" device use this one
    label = str(device)
    if on_loaded is not None:
        on_loaded(_scored_or_failed(task, pair, None, "worker did not finish", ctx.normalisation,
                                    label))
    transform, info, error, device_s, oom = None, {}, None, None, False
    wall: float | None = None
    try:
        method = Method(state.registry.get("method", task.method), task.method_params, device)
        method.warm_up()
        fixed = image_to_tensor(pair.fixed, device)
        moving = image_to_tensor(pair.moving, device)
        fmask = mask_to_tensor(pair.fixed_mask, device)
        mmask = mask_to_tensor(pair.moving_mask, device)
        _seed_everything(task.seed)
        if cuda:
            torch.cuda.synchronize(device)
            start_evt = torch.cuda.Event(enable_timing=True)
            end_evt = torch.cuda.Event(enable_timing=True)
            start_evt.record()
        t0 = time.perf_counter()
        try:
            out = method(fixed, moving, fixed_mask=fmask, moving_mask=mmask, seed=task.seed)
            transform, info = out.transform, out.info
        finally:
            # Timed even when the method fails, so that its record says how long it ran.
            if cuda:
                end_evt.record()
                torch.cuda.synchronize(device)
                device_s = start_evt.elapsed_time(end_evt) / 1000.0
            wall = time.perf_counter() - t0
    except Exception as exc:
        oom = isinstance(exc, torch.cuda.OutOfMemoryError)
        if oom:
            error = oom_message(exc, label)
        else:
            error = f"{type(exc).__name__}: {exc}".splitlines()[0]
        info = {"traceback": traceback.format_exc(limit=20)}
        del exc
    fixed = moving = fmask = mmask = method = None  # noqa: F841 -- release device memory now
    if oom:
        _free_cuda_cache()
    record = _scored_or_failed(task, pair, transform, error, ctx.normalisation, label)
    # CPU results can depend on how float32 reductions are split over threads (and an optimiser
    # can carry a last-digit difference far): each record says how many it ran with.
    info = {**info, "torch_threads": torch.get_num_threads()}
    record.wall_s, record.device_s, record.info = wall, device_s, info
    return record


def _exit_with_parent() -> None:
    """Stop this worker process as soon as the process that started it is gone (killed): its
    record could no longer be written, and it would hold the CPU or GPU, with no time-out left
    to stop it, while the run is resumed."""
    parent = mp.parent_process()
    if parent is None:
        return

    def watch() -> None:
        wait([parent.sentinel])
        os._exit(1)

    threading.Thread(target=watch, name="mibench-parent-watch", daemon=True).start()


def _worker_main(conn, ctx: WorkerContext) -> None:
    """Entry point of a worker process: receive tasks, send back records, until told to stop."""
    import torch

    # Ctrl-C in a terminal reaches the whole process group: the driver handles it (it stops the
    # workers and keeps the records); a worker's own KeyboardInterrupt only printed a traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _exit_with_parent()
    one_line_warnings()
    torch.set_num_threads(ctx.threads)
    state = _WorkerState(ctx)
    conn.send(("ready", None))
    while True:
        try:
            task = conn.recv()
        except EOFError:  # the driver is gone (killed): nothing left to report to
            return
        if task is None:
            return
        record = run_task(task, state, on_loaded=lambda r: conn.send(("loaded", r)))
        conn.send(("done", record))


# --------------------------------------------------------------------------- the pool

class _Worker:
    def __init__(self, ctx: WorkerContext, mpctx):
        self.conn, child = mpctx.Pipe()
        self.proc = mpctx.Process(target=_worker_main, args=(child, ctx), daemon=True)
        self.proc.start()
        child.close()
        self.ready = False
        self.task: Task | None = None
        self.started = 0.0
        self.provisional: Record | None = None

    def send(self, task: Task) -> None:
        self.task, self.started, self.provisional = task, time.monotonic(), None
        self.conn.send(task)

    def stop(self, force: bool = False) -> None:
        if not force and self.proc.is_alive():
            try:
                self.conn.send(None)
            except OSError:
                pass
            self.proc.join(2)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(2)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()
        self.conn.close()


def _failure_from(worker: _Worker, error: str, fallback: Callable[[Task, str], Record],
                  ended: float | None = None) -> Record:
    """The failure record of a worker's task that ended (``time.monotonic()``; default now)."""
    task = worker.task
    # How long the task ran, not counting the driver's loading of the pair for the fallback.
    wall_s = (time.monotonic() if ended is None else ended) - worker.started
    if worker.provisional is not None:
        record = worker.provisional
        record.error, record.finished_at = error, _now()
    else:
        record = fallback(task, error)
    record.wall_s = wall_s
    return record


def _describe_exit(code: int | None) -> str:
    if code is not None and code < 0:
        sig = -code
        hint = " (killed: out of memory?)" if sig == 9 else ""
        return f"worker process died from signal {sig}{hint}"
    return f"worker process exited unexpectedly with code {code}"


def _receive(w: _Worker, message: tuple, on_record: Callable[[Record], None]) -> None:
    """Act on one message of a worker: ready, its task's pair loaded, or its task done."""
    kind, payload = message
    if kind == "ready":
        w.ready = True
    elif kind == "loaded":
        w.provisional = payload
    elif kind == "done":
        w.task = None
        on_record(payload)


def _drain(w: _Worker, on_record: Callable[[Record], None]) -> None:
    """Act on every message a worker has already sent (the loop reads one per wake-up)."""
    try:
        while w.task is not None and w.conn.poll():
            _receive(w, w.conn.recv(), on_record)
    except (EOFError, OSError):
        pass


#: The longest the pool waits for a message before looking at its workers again.
_MAX_WAIT_S = 3600.0


class ProcessPool:
    """Worker processes, one per slot, each with its own context (device, threads).

    :meth:`run` may be called again and again (a Dask worker keeps one pool across its tasks);
    a worker that crashes or exceeds the time-out is stopped, and a fresh one starts in its slot
    (so with its device) when the next task needs it.
    """

    def __init__(self, contexts: list[WorkerContext]):
        if not contexts:
            raise ValueError("a process pool needs at least one slot")
        self.contexts = list(contexts)
        self._mp = mp.get_context("spawn")
        self._slots: list[_Worker | None] = [None] * len(self.contexts)

    def _start(self, i: int) -> _Worker:
        self._slots[i] = _Worker(self.contexts[i], self._mp)
        return self._slots[i]

    def run(self, tasks: list[Task], timeout: float | None, on_record: Callable[[Record], None],
            fallback: Callable[[Task, str], Record]) -> None:
        """Run ``tasks``; call ``on_record`` with each record as soon as it is known.

        ``fallback(task, error)`` makes the failed record of a task whose worker died before it
        reported the pair's initial error.
        """
        pending = deque(tasks)
        active = range(min(len(self._slots), len(tasks)))
        try:
            self._loop(active, pending, timeout, on_record, fallback)
        except BaseException:
            # Interrupted (Ctrl-C, a failing callback): nothing may run on unsupervised.
            self.close()
            raise

    def _retire(self, i: int) -> None:
        # A replacement starts only when a task needs it (not after the last one).
        self._slots[i].stop(force=True)
        self._slots[i] = None

    def _loop(self, active, pending, timeout, on_record, fallback) -> None:
        def busy() -> bool:
            return any(self._slots[i] is not None and self._slots[i].task for i in active)

        while pending or busy():
            for i in active:
                if self._slots[i] is None and pending:
                    self._start(i)
            live = [(i, self._slots[i]) for i in active if self._slots[i] is not None]
            for _, w in live:
                if w.ready and w.task is None and pending:
                    w.send(pending.popleft())
            deadlines = [w.started + timeout for _, w in live if w.task and timeout]
            wait_s = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
            if wait_s is not None:
                # A time-out of inf (or of years) means no limit; poll() cannot wait that long.
                wait_s = min(wait_s, _MAX_WAIT_S)
            handles = {w.conn: (i, w) for i, w in live}
            handles.update({w.proc.sentinel: (i, w) for i, w in live})
            for handle in wait(list(handles), timeout=wait_s):
                i, w = handles[handle]
                if self._slots[i] is not w:  # already retired through its other handle
                    continue
                message = None
                try:
                    if w.conn.poll():
                        message = w.conn.recv()
                except (EOFError, OSError):
                    message = None
                if message is not None:
                    _receive(w, message, on_record)
                    continue
                if not w.proc.is_alive() or handle is w.proc.sentinel:
                    w.proc.join(1)
                    if w.task is not None:
                        on_record(_failure_from(w, _describe_exit(w.proc.exitcode), fallback))
                    elif not w.ready:
                        raise RuntimeError(
                            f"a worker process failed to start ({_describe_exit(w.proc.exitcode)})")
                    self._retire(i)
            now = time.monotonic()
            for i in active:
                w = self._slots[i]
                if w is not None and w.task is not None and timeout and now - w.started > timeout:
                    _drain(w, on_record)  # a result already sent is kept, not timed out
                    if w.task is None:
                        continue
                    ended = time.monotonic()
                    self._retire(i)  # stop it first: building the record may load the pair
                    on_record(_failure_from(w, f"timed out after {timeout:g} s", fallback,
                                            ended))

    def close(self) -> None:
        """Stop every worker process (those still busy are killed)."""
        for i, w in enumerate(self._slots):
            if w is not None:
                w.stop(force=w.task is not None)
                self._slots[i] = None


def run_in_processes(tasks: list[Task], contexts: list[WorkerContext], timeout: float | None,
                     on_record: Callable[[Record], None],
                     fallback: Callable[[Task, str], Record]) -> None:
    """Run ``tasks`` on one spawned process per context; call ``on_record`` for every result."""
    pool = ProcessPool(contexts)
    try:
        pool.run(tasks, timeout, on_record, fallback)
    finally:
        pool.close()


def fallback_record(task: Task, error: str, dataset_obj: Any, normalisation: str) -> Record:
    """The failed record of a task whose worker died before reporting: load the pair here to
    score it with its initial error (an unscored failure if even that fails)."""
    try:
        pair = check_pair(dataset_obj.load(task.pair_id), task.pair_id)
    except Exception as exc:
        return unscored_failure(task, f"{error}; loading pair failed: {exc}", normalisation)
    return _scored_or_failed(task, pair, None, error, normalisation)


# --------------------------------------------------------------------------- a run

def _versions(registry: Registry) -> dict[str, str]:
    import importlib.metadata as md

    names = ["mibench", "torch", "numpy", "scipy", "scikit-image", "pandas", "pluggy"]
    out = {"python": platform.python_version()}
    for name in names:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    for dist in md.distributions():
        if any(ep.group == "mibench" for ep in dist.entry_points):
            out[dist.metadata["Name"]] = dist.version
    return out


def device_info(device_name: str) -> dict[str, Any]:
    """``type``, ``torch_device`` and ``name`` (GPU or CPU model) of a device request, here.

    Raises :class:`UserError` when the device does not exist on this machine.
    """
    import torch

    from mibench.tensors import resolve_device

    device = resolve_device(device_name)
    info: dict[str, Any] = {"type": device.type, "torch_device": str(device)}
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        info["torch_device"] = f"cuda:{index}"
        info["name"] = torch.cuda.get_device_name(index)
        info["cuda"] = torch.version.cuda
    else:
        info["name"] = cpu_model()
    return info


def usable_cpus() -> int:
    """CPU cores this process may run on (its affinity mask: a SLURM job's share, say)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def cpu_model() -> str:
    """The CPU model name (from /proc/cpuinfo where there is one)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _differences(before: dict[str, Any], now: dict[str, Any]) -> str:
    keys = sorted(k for k in {*before, *now} if before.get(k, "-") != now.get(k, "-"))
    return ", ".join(f"{k}={before.get(k, '-')} there, {now.get(k, '-')} now" for k in keys)


def check_compatible(run_dir: Path, records: list[Record], tasks: list[Task],
                     normalisation: str) -> None:
    """Refuse to add this plan's tasks to a run directory whose records were made with another
    dataset, dataset options or NAED normalisation, or with other options of a method this
    plan runs: their task keys differ, so nothing would be reused, but the reports would mix
    two configurations in one row (and ``mibench report`` would refuse the directory)."""
    if not records or not tasks:
        return
    planned = {t.method: t.method_params for t in tasks}
    dataset = (tasks[0].dataset, tasks[0].dataset_params)
    fix = f"use another --out, or delete {Path(run_dir) / RECORDS_DIR} to start afresh"
    for rec in records:
        if (rec.dataset, canonical_json(rec.dataset_params)) != (dataset[0],
                                                                canonical_json(dataset[1])):
            what = (f"dataset {rec.dataset!r}, this run {dataset[0]!r}"
                    if rec.dataset != dataset[0]
                    else "dataset options " + _differences(rec.dataset_params, dataset[1]))
            raise UserError(f"{run_dir}: holds records of another configuration ({what}); "
                            f"{fix}")
        if rec.normalisation != normalisation:
            raise UserError(f"{run_dir}: its records were scored with --naed-norm "
                            f"{rec.normalisation}, this run asks for {normalisation}; resume "
                            f"it with the same normalisation, or {fix}")
        params = planned.get(rec.method)
        if params is not None and canonical_json(rec.method_params) != canonical_json(params):
            raise UserError(f"{run_dir}: method {rec.method!r} already has records with other "
                            f"options ({_differences(rec.method_params, params)}); use "
                            f"another --out, or delete {Path(run_dir) / RECORDS_DIR / rec.method}"
                            " to replace them")


def write_manifest(plan: RunPlan, registry: Registry, executor: dict[str, Any],
                   concurrent: int, log: Callable[[str], None] = print) -> None:
    """Create or update ``run.json``: resolved configuration, versions, device and machine.

    ``executor`` is :meth:`mibench.executors.Executor.describe`: which executor ran (and the
    Dask scheduler), the device (and each worker's), the torch threads per task. Every
    invocation is appended with its own executor, since a run may be resumed on another. A
    damaged ``run.json`` is kept as ``run.json.damaged`` (its history would be lost otherwise).
    """
    import json

    path = plan.run_dir / MANIFEST
    previous: dict[str, Any] = {}
    if path.is_file():
        try:
            previous = json.loads(path.read_text())
            if not isinstance(previous, dict):
                raise ValueError(f"a JSON {type(previous).__name__}, not an object")
        except ValueError as exc:
            aside = path.with_name(MANIFEST + DAMAGED_SUFFIX)
            path.replace(aside)
            log(f"warning: {path}: damaged manifest ({exc}); kept as {aside.name}, a new one "
                "is written")
            previous = {}
    invocation = {"at": _now(), "argv": sys.argv, "tasks_planned": len(plan.tasks),
                  "executor": executor["executor"], "concurrent_tasks": concurrent}
    # An invocation that ran nothing (all records there) keeps what the last one that ran had.
    ran = executor if concurrent or "executor" not in previous else previous
    manifest = {
        "config": plan.config,
        "versions": _versions(registry),
        "device": ran.get("device"),
        "executor": ran.get("executor"),
        "machine": {"hostname": socket.gethostname(), "platform": platform.platform(),
                    "cpus": os.cpu_count(), "processor": cpu_model()},
        "concurrent_tasks": max(concurrent, previous.get("concurrent_tasks", 0)),
        "threads_per_task": ran.get("threads_per_task"),
        "dataset_notes": list(getattr(plan.dataset_obj, "notes", None) or []),
        "created": previous.get("created", _now()),
        "updated": _now(),
        "invocations": previous.get("invocations", []) + [invocation],
    }
    write_json_atomic(path, manifest)


@dataclass
class RunResult:
    """What a run did. ``tasks_s`` is the wall time of running the tasks (workers' start-up
    included; planning and reports excluded)."""

    run_dir: Path
    planned: int
    skipped_existing: int
    completed: int
    failed: int
    report: Path | None
    tasks_s: float = 0.0


def run_benchmark(cfg: RunConfig, *, progress: bool = True,
                  log: Callable[[str], None] | None = None) -> RunResult:
    """Plan and run a benchmark; write records, the manifest and the reports.

    Tasks whose record already exists in the run directory are skipped, so calling this again
    with the same configuration resumes an interrupted run (with either executor). Records are
    written here, by the driver, as they arrive from the executor.
    """
    from mibench.executors import make_executor
    from mibench.reports import build_reports

    log = log or (lambda msg: print(msg, file=sys.stderr))
    registry = Registry(cfg.plugins)
    plan = plan_run(registry, cfg)
    for name, why in plan.skipped_methods.items():
        log(f"skipping method {name!r}: {why}")
    try:
        plan.run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{plan.run_dir}: cannot create the run directory "
                        f"({exc.strerror or exc})") from None
    remove_stale_temporaries(plan.run_dir)
    previous = load_records_setting_aside_damaged(plan.run_dir, log)
    check_compatible(plan.run_dir, previous, plan.tasks, cfg.normalisation)
    planned = {t.key for t in plan.tasks}
    failed_before = {r.key for r in previous if r.key in planned and r.status != "ok"}
    done = {r.key for r in previous} - (failed_before if cfg.retry_failed else set())
    todo = [t for t in plan.tasks if t.key not in done]
    if len(todo) < len(plan.tasks):
        kept = len(plan.tasks) - len(todo)
        failed = (f" ({len(failed_before)} of them failed: --retry-failed runs those again)"
                  if failed_before and not cfg.retry_failed else "")
        log(f"resuming in {plan.run_dir}: {kept} of {len(plan.tasks)} tasks already have "
            f"records{failed}")
    ctx = WorkerContext(plan.config["dataset"], plan.config["data_dir"], plan.config["device"],
                        cfg.normalisation, tuple(cfg.plugins), 1)
    # With nothing to run no cluster is started: the manifest then describes a local executor.
    executor = make_executor(plan.config["executor"] if todo else "local",
                             workers=cfg.workers, device=plan.config["device"],
                             scheduler=plan.config["scheduler"], log=log)
    counts = {"completed": 0, "failed": 0}
    by_key = {t.key: t for t in todo}
    per_method: dict[str, list[Any]] = {}  # method -> [tasks run, failed, first error]
    bar = None

    def on_record(record: Record) -> None:
        write_record(plan.run_dir, by_key[record.key], record)
        counts["completed"] += 1
        counts["failed"] += record.status == "failed"
        tally = per_method.setdefault(record.method, [0, 0, None])
        tally[0] += 1
        if record.status == "failed":
            tally[1] += 1
            tally[2] = tally[2] or record.error
        if bar is not None:
            bar.set_postfix(failed=counts["failed"], refresh=False)
            bar.update(1)

    def fallback(task: Task, error: str) -> Record:
        # The worker died before it could report the pair's initial error: load it here.
        return fallback_record(task, error, plan.dataset_obj, cfg.normalisation)

    with executor:
        executor.open(ctx, len(todo))
        described = executor.describe()
        if not todo and plan.config["executor"] != executor.name:
            described["executor"] = {"name": plan.config["executor"], "started": False,
                                     "scheduler": plan.config["scheduler"]}
        write_manifest(plan, registry, described, executor.concurrent if todo else 0, log)
        if progress and todo:
            from tqdm import tqdm

            bar = tqdm(total=len(todo), unit="task", desc="mibench", file=sys.stderr,
                       dynamic_ncols=True)
        t0 = time.perf_counter()
        try:
            executor.run(todo, cfg.timeout, on_record, fallback)
        finally:
            tasks_s = time.perf_counter() - t0
            if bar is not None:
                bar.close()
    for method, (ran, failed, error) in per_method.items():
        if ran and failed == ran:
            # Most likely a bad option or a missing dependency rather than hard pairs.
            log(f"warning: every task of method {method!r} failed ({ran}); the first error: "
                f"{error}")
    report = build_reports(plan.run_dir)
    return RunResult(plan.run_dir, len(plan.tasks), len(plan.tasks) - len(todo),
                     counts["completed"], counts["failed"], report, tasks_s)
