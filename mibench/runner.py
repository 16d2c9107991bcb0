"""Runs tasks, each in a worker process with a time-out, and writes one record per task.

The driver (this process) plans the tasks, skips those whose record exists (resume), hands the
rest to worker processes and writes each record atomically as soon as it arrives, so a run killed
at any moment loses only the tasks in flight. A worker that raises, returns NaN, exceeds the
time-out or dies (segfault, out of memory) yields a *failed* record scored with the pair's
initial error (``CONTRACTS.md``); the run goes on.
"""

from __future__ import annotations

import datetime as _dt
import multiprocessing as mp
import os
import platform
import random
import socket
import sys
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
from mibench.contracts import Pair
from mibench.metrics import landmark_errors, norm_length, pair_scores
from mibench.records import (
    Record,
    Task,
    canonical_json,
    existing_keys,
    remove_stale_temporaries,
    write_json_atomic,
    write_record,
)
from mibench.registry import Registry
from mibench.transform import MatrixTransform, Transform

MANIFEST = "run.json"


@dataclass(frozen=True)
class WorkerContext:
    """Everything a worker needs besides the task (picklable: sent to spawned processes)."""

    dataset: str
    data_dir: str | None
    device: str
    normalisation: str
    plugins: tuple[str, ...]
    threads: int


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


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


def run_task(task: Task, state: _WorkerState, on_loaded: Callable[[Record], None] | None = None
             ) -> Record:
    """Load the pair, register it (timed), score it. Never raises for a method's failure.

    ``on_loaded`` receives a provisional failed record (scored with the initial error) before
    registration starts, so that the driver can still score the pair if this process dies.
    """
    import torch

    from mibench.bound import Method
    from mibench.tensors import image_to_tensor, mask_to_tensor, resolve_device

    ctx = state.ctx
    try:
        pair = state.dataset(task).load(task.pair_id)
    except Exception as exc:
        return unscored_failure(task, f"loading pair failed: {type(exc).__name__}: {exc}",
                                ctx.normalisation)
    device = resolve_device(ctx.device)
    if on_loaded is not None:
        on_loaded(score_record(task, pair, None, error="worker did not finish",
                               normalisation=ctx.normalisation, device=str(device)))
    method = Method(state.registry.get("method", task.method), task.method_params, device)
    fixed = image_to_tensor(pair.fixed, device)
    moving = image_to_tensor(pair.moving, device)
    fmask = mask_to_tensor(pair.fixed_mask, device)
    mmask = mask_to_tensor(pair.moving_mask, device)
    _seed_everything(task.seed)
    cuda = device.type == "cuda"
    transform, info, error, device_s = None, {}, None, None
    if cuda:
        torch.cuda.synchronize(device)
        start_evt = torch.cuda.Event(enable_timing=True)
        end_evt = torch.cuda.Event(enable_timing=True)
        start_evt.record()
    t0 = time.perf_counter()
    try:
        out = method(fixed, moving, fixed_mask=fmask, moving_mask=mmask, seed=task.seed)
        transform, info = out.transform, out.info
    except Exception as exc:
        if cuda and isinstance(exc, torch.cuda.OutOfMemoryError):
            error = "CUDA out of memory"
        else:
            error = f"{type(exc).__name__}: {exc}".splitlines()[0]
        info = {"traceback": traceback.format_exc(limit=20)}
    if cuda:
        end_evt.record()
        torch.cuda.synchronize(device)
        device_s = start_evt.elapsed_time(end_evt) / 1000.0
    wall = time.perf_counter() - t0
    record = score_record(task, pair, transform, error=error, normalisation=ctx.normalisation,
                          device=str(device))
    record.wall_s, record.device_s, record.info = wall, device_s, info
    return record


def _worker_main(conn, ctx: WorkerContext) -> None:
    """Entry point of a worker process: receive tasks, send back records, until told to stop."""
    import torch

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


def _failure_from(worker: _Worker, error: str,
                  fallback: Callable[[Task, str], Record]) -> Record:
    task = worker.task
    if worker.provisional is not None:
        record = worker.provisional
        record.error, record.finished_at = error, _now()
    else:
        record = fallback(task, error)
    record.wall_s = time.monotonic() - worker.started
    return record


def _describe_exit(code: int | None) -> str:
    if code is not None and code < 0:
        sig = -code
        hint = " (killed: out of memory?)" if sig == 9 else ""
        return f"worker process died from signal {sig}{hint}"
    return f"worker process exited unexpectedly with code {code}"


def run_in_processes(tasks: list[Task], ctx: WorkerContext, workers: int,
                     timeout: float | None, on_record: Callable[[Record], None],
                     fallback: Callable[[Task, str], Record]) -> None:
    """Run ``tasks`` on ``workers`` spawned processes; call ``on_record`` for every result."""
    mpctx = mp.get_context("spawn")
    pending = deque(tasks)
    pool = [_Worker(ctx, mpctx) for _ in range(min(workers, len(tasks)))]
    try:
        while pending or any(w.task for w in pool):
            for w in pool:
                if w.ready and w.task is None and pending:
                    w.send(pending.popleft())
            deadlines = [w.started + timeout for w in pool if w.task and timeout]
            wait_s = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
            handles = {w.conn: w for w in pool}
            handles.update({w.proc.sentinel: w for w in pool})
            ready = wait(list(handles), timeout=wait_s)
            replaced: set[int] = set()
            for handle in ready:
                w = handles[handle]
                if id(w) in replaced:
                    continue
                message = None
                try:
                    if w.conn.poll():
                        message = w.conn.recv()
                except (EOFError, OSError):
                    message = None
                if message is not None:
                    kind, payload = message
                    if kind == "ready":
                        w.ready = True
                    elif kind == "loaded":
                        w.provisional = payload
                    elif kind == "done":
                        w.task = None
                        on_record(payload)
                    continue
                if not w.proc.is_alive() or handle is w.proc.sentinel:
                    w.proc.join(1)
                    if w.task is not None:
                        on_record(_failure_from(w, _describe_exit(w.proc.exitcode), fallback))
                    elif not w.ready:
                        raise RuntimeError(
                            f"a worker process failed to start ({_describe_exit(w.proc.exitcode)})")
                    w.stop(force=True)
                    pool[pool.index(w)] = new = _Worker(ctx, mpctx)
                    replaced.add(id(w))
                    replaced.add(id(new))
            now = time.monotonic()
            for i, w in enumerate(pool):
                if w.task is not None and timeout and now - w.started > timeout:
                    record = _failure_from(w, f"timed out after {timeout:g} s", fallback)
                    w.stop(force=True)
                    on_record(record)
                    pool[i] = _Worker(ctx, mpctx)
    finally:
        for w in pool:
            w.stop(force=w.task is not None)


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


def _device_info(device_name: str) -> dict[str, Any]:
    import torch

    from mibench.tensors import resolve_device

    device = resolve_device(device_name)
    info: dict[str, Any] = {"type": device.type, "torch_device": str(device)}
    if device.type == "cuda":
        info["name"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    else:
        info["name"] = _cpu_model()
    return info


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def write_manifest(plan: RunPlan, registry: Registry, concurrent: int, threads: int) -> None:
    """Create or update ``run.json``: resolved configuration, versions, device and machine."""
    import json

    path = plan.run_dir / MANIFEST
    previous: dict[str, Any] = {}
    if path.is_file():
        try:
            previous = json.loads(path.read_text())
        except ValueError:
            previous = {}
    invocation = {"at": _now(), "argv": sys.argv, "tasks_planned": len(plan.tasks)}
    manifest = {
        "config": plan.config,
        "versions": _versions(registry),
        "device": _device_info(plan.config["device"]),
        "machine": {"hostname": socket.gethostname(), "platform": platform.platform(),
                    "cpus": os.cpu_count(), "processor": _cpu_model()},
        "concurrent_tasks": max(concurrent, previous.get("concurrent_tasks", 0)),
        "threads_per_task": threads,
        "created": previous.get("created", _now()),
        "updated": _now(),
        "invocations": previous.get("invocations", []) + [invocation],
    }
    write_json_atomic(path, manifest)


@dataclass
class RunResult:
    run_dir: Path
    planned: int
    skipped_existing: int
    completed: int
    failed: int
    report: Path | None


def run_benchmark(cfg: RunConfig, *, progress: bool = True,
                  log: Callable[[str], None] | None = None) -> RunResult:
    """Plan and run a benchmark; write records, the manifest and the reports.

    Tasks whose record already exists in the run directory are skipped, so calling this again
    with the same configuration resumes an interrupted run.
    """
    from mibench.reports import build_reports

    log = log or (lambda msg: print(msg, file=sys.stderr))
    registry = Registry(cfg.plugins)
    plan = plan_run(registry, cfg)
    for name, why in plan.skipped_methods.items():
        log(f"skipping method {name!r}: {why}")
    remove_stale_temporaries(plan.run_dir)
    done = existing_keys(plan.run_dir)
    todo = [t for t in plan.tasks if t.key not in done]
    if len(todo) < len(plan.tasks):
        log(f"resuming in {plan.run_dir}: {len(plan.tasks) - len(todo)} of {len(plan.tasks)} "
            "tasks already have records")
    cpus = os.cpu_count() or 1
    concurrent = max(1, min(cfg.workers, len(todo))) if todo else 1
    threads = max(1, cpus // concurrent)
    plan.run_dir.mkdir(parents=True, exist_ok=True)
    write_manifest(plan, registry, concurrent if cfg.workers else 1, threads)
    ctx = WorkerContext(plan.config["dataset"], plan.config["data_dir"], cfg.device,
                        cfg.normalisation, tuple(cfg.plugins), threads)

    counts = {"completed": 0, "failed": 0}
    bar = None
    if progress and todo:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), unit="task", desc="mibench", file=sys.stderr,
                   dynamic_ncols=True)

    by_key = {t.key: t for t in todo}

    def on_record(record: Record) -> None:
        write_record(plan.run_dir, by_key[record.key], record)
        counts["completed"] += 1
        counts["failed"] += record.status == "failed"
        if bar is not None:
            bar.set_postfix(failed=counts["failed"], refresh=False)
            bar.update(1)

    def fallback(task: Task, error: str) -> Record:
        # The worker died before it could report the pair's initial error: load it here.
        try:
            pair = plan.dataset_obj.load(task.pair_id)
        except Exception as exc:
            return unscored_failure(task, f"{error}; loading pair failed: {exc}",
                                    cfg.normalisation)
        return score_record(task, pair, None, error=error, normalisation=cfg.normalisation)

    try:
        if todo and cfg.workers == 0:
            import torch

            torch.set_num_threads(threads)
            state = _WorkerState(ctx)
            for task in todo:
                on_record(run_task(task, state))
        elif todo:
            run_in_processes(todo, ctx, cfg.workers, cfg.timeout, on_record, fallback)
    finally:
        if bar is not None:
            bar.close()
    report = build_reports(plan.run_dir)
    return RunResult(plan.run_dir, len(plan.tasks), len(plan.tasks) - len(todo),
                     counts["completed"], counts["failed"], report)

