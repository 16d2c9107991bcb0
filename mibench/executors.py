"""Executors: where the tasks of a run execute.

The driver (:func:`mibench.runner.run_benchmark`) plans the tasks and writes every record; an
executor only runs tasks (:class:`mibench.tasks.Task`: it never looks inside one) and hands each
record back through ``on_record`` as soon as it is known. Two executors share one way of running
a task, a worker process with a time-out (:class:`mibench.pool.ProcessPool`):

- ``local``: a pool of worker processes on this machine (``--workers N``), worker ``i`` pinned to
  ``cuda:(i mod n)`` when there are ``n > 1`` GPUs; ``--workers 0`` runs in this process.
- ``dask``: a Dask cluster, by scheduler address (``--scheduler tcp://host:8786``, e.g. a
  dask-jobqueue SLURM cluster) or a ``LocalCluster`` started for the run. Every Dask worker thread
  keeps one worker process of its own and runs each task in it, with the same time-out and crash
  handling; the record travels back to the driver, which writes it.

Neither the executor nor the scheduler is part of a run's identity: the run directory and the
task keys are the same whichever ran them, so a run started locally can be resumed on Dask.
"""

from __future__ import annotations

import logging
import socket
import sys
import threading
import uuid
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from mibench.errors import UserError
from mibench.machine import device_info, usable_cpus
from mibench.pool import Failure, OnRecord, OnStart, ProcessPool
from mibench.settings import EXECUTORS
from mibench.tasks import Task, WorkerContext, Workspace
from mibench.tensors import parse_device, resolve_device, worker_devices


class Executor:
    """Runs tasks somewhere and reports their records; :meth:`open` before :meth:`run`.

    After :meth:`open`, :attr:`concurrent` is how many tasks run at once and :meth:`describe`
    gives what ``run.json`` records about the executor (``executor``), its device (``device``)
    and the torch threads per task (``threads_per_task``).
    """

    name = ""
    concurrent = 1

    def open(self, ctx: WorkerContext, n_tasks: int) -> None:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        raise NotImplementedError

    def run(self, tasks: list[Task], timeout: float | None, on_record: OnRecord,
            failure: Failure, on_start: OnStart | None = None) -> None:
        """Run ``tasks``; ``on_record(record)`` for each as soon as it is known;
        ``failure(task, error)`` builds the record of a task whose worker died or timed out
        before it reported; ``on_start(task)``, when given, as a task starts (where the
        executor knows it)."""
        raise NotImplementedError

    def close(self) -> None:
        """Release processes and connections (safe to call more than once)."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------- local


class LocalExecutor(Executor):
    """``workers`` worker processes on this machine (0: in this process, no time-out)."""

    name = "local"

    def __init__(self, workers: int, device: str):
        self.workers = workers
        self.device = parse_device(device)
        self.contexts: list[WorkerContext] = []
        self.threads = 1

    def open(self, ctx: WorkerContext, n_tasks: int) -> None:
        slots = max(1, min(self.workers, n_tasks)) if self.workers else 1
        self.concurrent = slots
        self.threads = max(1, usable_cpus() // slots)
        devices = worker_devices(self.device, slots)
        for d in set(devices):
            resolve_device(d)  # a missing device is the user's mistake: say so before starting
        self.contexts = [replace(ctx, device=d, threads=self.threads) for d in devices]

    def describe(self) -> dict[str, Any]:
        devices = [c.device for c in self.contexts] or [self.device]
        infos = {d: device_info(d) for d in set(devices)}
        return {"executor": {"name": self.name, "workers": self.workers,
                             "worker_devices": [infos[d]["torch_device"] for d in devices]},
                "device": infos[devices[0]], "threads_per_task": self.threads}

    def run(self, tasks: list[Task], timeout: float | None, on_record: OnRecord,
            failure: Failure, on_start: OnStart | None = None) -> None:
        if not tasks:
            return
        if self.workers == 0:
            import torch

            torch.set_num_threads(self.threads)
            workspace = Workspace(self.contexts[0])
            for task in tasks:
                if on_start is not None:
                    on_start(task)
                on_record(task.run(workspace))
            return
        pool = ProcessPool(self.contexts)
        try:
            pool.run(tasks, timeout, on_record, failure, on_start)
        finally:
            pool.close()


# --------------------------------------------------------------------------- dask


@dataclass(frozen=True)
class WorkerFacts:
    """What the driver learns from one Dask worker before placing tasks on it."""

    address: str
    host: str
    cpus: int
    nthreads: int
    cuda_devices: int
    daemon: bool


def plan_placement(facts: list[WorkerFacts], device: str) -> dict[str, tuple[int, str]]:
    """Torch threads and device for each Dask worker: ``{address: (threads, device)}``.

    The task slots (worker threads) of one host share its cores evenly. The workers of one host
    are pinned to its GPUs round-robin in address order (:func:`mibench.tensors.worker_devices`);
    a worker that sees one GPU only (``CUDA_VISIBLE_DEVICES`` set per worker, as dask-cuda does)
    keeps the request as it is.
    """
    by_host: dict[str, list[WorkerFacts]] = defaultdict(list)
    for f in facts:
        by_host[f.host].append(f)
    out: dict[str, tuple[int, str]] = {}
    for workers in by_host.values():
        workers.sort(key=lambda f: f.address)
        slots = sum(max(1, f.nthreads) for f in workers)
        cpus = max(f.cpus for f in workers)
        gpus = min(f.cuda_devices for f in workers)
        devices = worker_devices(device, len(workers), gpu_count=gpus)
        for f, d in zip(workers, devices, strict=True):
            out[f.address] = (max(1, cpus // slots), d)
    return out


def _worker_facts(dask_worker=None) -> dict[str, Any]:
    """Run on every Dask worker by :meth:`DaskExecutor.open`."""
    import multiprocessing

    from mibench.tensors import cuda_device_count

    return {"host": socket.gethostname(), "cpus": usable_cpus(),
            "nthreads": dask_worker.state.nthreads, "cuda_devices": cuda_device_count(),
            "daemon": bool(multiprocessing.current_process().daemon)}


def _worker_device(placement: dict[str, tuple[int, str]], dask_worker=None) -> dict[str, Any]:
    """Resolve this worker's device on the worker itself (the driver may have no GPU)."""
    _threads, device = placement.get(dask_worker.address, (1, "auto"))
    try:
        return device_info(device)
    except UserError as exc:
        return {"error": str(exc)}


@dataclass
class _Slot:
    """The worker process of one Dask worker thread, kept across the tasks of a run: spawning a
    process and importing torch for every task would cost seconds each."""

    ctx: WorkerContext
    pool: ProcessPool
    workspace: Workspace | None = None  # for failure records only; built when first needed
    busy: bool = False
    retire: bool = False


_SLOTS: dict[int, _Slot] = {}
_SLOTS_LOCK = threading.Lock()


def _acquire_slot(ctx: WorkerContext) -> _Slot:
    ident = threading.get_ident()
    with _SLOTS_LOCK:
        slot = _SLOTS.get(ident)
        if slot is not None and (slot.ctx != ctx or slot.retire):
            slot.pool.close()
            slot = None
        if slot is None:
            slot = _SLOTS[ident] = _Slot(ctx, ProcessPool([ctx]))
        slot.busy = True
        return slot


def _release_slot(slot: _Slot) -> None:
    with _SLOTS_LOCK:
        slot.busy = False
        if slot.retire:
            slot.pool.close()
            _SLOTS.pop(threading.get_ident(), None)


def close_worker_processes() -> int:
    """Stop the idle worker processes of this Dask worker; busy ones stop after their task.

    The driver calls it on every worker at the end of a run, so that no process keeps a CUDA
    context (and its memory) on a shared cluster. Returns how many were stopped now.
    """
    with _SLOTS_LOCK:
        idle = [k for k, slot in _SLOTS.items() if not slot.busy]
        for slot in _SLOTS.values():
            slot.retire = True
        for k in idle:
            _SLOTS.pop(k).pool.close()
    return len(idle)


def run_on_dask_worker(task: Task, ctx: WorkerContext, timeout: float | None,
                       placement: dict[str, tuple[int, str]]) -> Any:
    """The Dask task: run ``task`` in this worker thread's worker process, return its record."""
    from distributed import get_worker

    worker = get_worker()
    default = (max(1, usable_cpus() // max(1, worker.state.nthreads)), ctx.device)
    threads, device = placement.get(worker.address, default)
    ctx = replace(ctx, threads=threads, device=device)
    slot = _acquire_slot(ctx)

    def failure(t: Task, error: str) -> Any:
        if slot.workspace is None:
            slot.workspace = Workspace(ctx)
        return t.failure(slot.workspace, error)

    out: list[Any] = []
    try:
        slot.pool.run([task], timeout, out.append, failure)
    finally:
        _release_slot(slot)
    return out[0]


class _SubmissionOrder:
    """Which Dask tasks are taken to run now, for ``on_start``: the scheduler does not tell the
    driver when a worker picks a task up, but it runs independent tasks in about the order they
    were submitted, so the first ``slots`` are taken as started, and the next one waiting each
    time a task ends. A best guess, for the progress bar only."""

    def __init__(self, tasks: list[Task], on_start: OnStart | None, slots: int):
        self.waiting = deque(tasks) if on_start is not None else deque()
        self.on_start = on_start
        self.ended: set[str] = set()
        for _ in range(max(1, slots)):
            self._next()

    def _next(self) -> None:
        while self.waiting:
            task = self.waiting.popleft()
            if task.key not in self.ended:  # one that ended out of order never "starts"
                self.on_start(task)
                return

    def ended_one(self, task: Task) -> None:
        """``task`` ended: another one takes its slot."""
        self.ended.add(task.key)
        self._next()


class DaskExecutor(Executor):
    """Tasks on a Dask cluster: ``scheduler`` address, or a ``LocalCluster`` of ``workers``."""

    name = "dask"

    def __init__(self, scheduler: str | None, workers: int, device: str,
                 log: Callable[[str], None] | None = None):
        self.scheduler = scheduler
        self.workers = max(1, workers)
        self.device = parse_device(device)
        self.log = log or (lambda msg: print(msg, file=sys.stderr))
        self.client = None
        self.cluster = None
        self.ctx: WorkerContext | None = None
        self.placement: dict[str, tuple[int, str]] = {}
        self.devices: dict[str, dict[str, Any]] = {}

    def open(self, ctx: WorkerContext, n_tasks: int) -> None:
        try:
            import dask
            from distributed import Client, LocalCluster
        except ImportError:
            raise UserError("--executor dask needs Dask: pip install 'mibench[dask]'") from None
        self.ctx = ctx
        if self.scheduler:
            try:
                self.client = Client(self.scheduler, timeout=30)
            except (OSError, TimeoutError, ValueError) as exc:
                raise UserError(f"{self.scheduler}: cannot connect to the Dask scheduler "
                                f"({type(exc).__name__}: {exc})") from None
        else:
            n = max(1, min(self.workers, n_tasks))
            # Dask's worker processes are daemonic by default, and daemonic processes may not
            # start the worker process that enforces a task's time-out.
            with dask.config.set({"distributed.worker.daemon": False}):
                # Errors only: a task still running at Ctrl-C makes Dask warn while it shuts down.
                self.cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                            dashboard_address=None, silence_logs=logging.ERROR)
            self.client = Client(self.cluster)
        if not self.client.nthreads():
            self.log(f"waiting for a Dask worker to join {self.client.scheduler.address}")
            self.client.wait_for_workers(1)
        raw = self.client.run(_worker_facts)
        facts = [WorkerFacts(address=a, **f) for a, f in sorted(raw.items())]
        daemonic = [f.address for f in facts if f.daemon]
        if daemonic:
            raise UserError(
                f"Dask worker {daemonic[0]} is a daemonic process and cannot start task "
                "processes; start the workers with DASK_DISTRIBUTED__WORKER__DAEMON=False "
                "(see docs/scaling.md)")
        self.placement = plan_placement(facts, self.device)
        self.devices = self.client.run(_worker_device, self.placement)
        for address, info in sorted(self.devices.items()):
            if "error" in info:
                raise UserError(f"Dask worker {address}: {info['error']}")
        self.concurrent = sum(f.nthreads for f in facts)

    def describe(self) -> dict[str, Any]:
        workers = {a: {"threads_per_task": t, "device": self.devices.get(a, {}).get(
            "torch_device", d)} for a, (t, d) in sorted(self.placement.items())}
        address = self.client.scheduler.address if self.client is not None else None
        info = {"name": self.name, "scheduler": self.scheduler or "LocalCluster",
                "scheduler_address": address, "workers": workers}
        first = next(iter(sorted(self.devices.items())), (None, None))[1]
        threads = sorted({t for t, _ in self.placement.values()})
        return {"executor": info, "device": first or {"type": None, "name": None},
                "threads_per_task": threads[0] if len(threads) == 1 else threads}

    def run(self, tasks: list[Task], timeout: float | None, on_record: OnRecord,
            failure: Failure, on_start: OnStart | None = None) -> None:
        from distributed import KilledWorker, as_completed

        if not tasks:
            return
        run_id = uuid.uuid4().hex[:8]
        futures = {
            self.client.submit(run_on_dask_worker, task, self.ctx, timeout, self.placement,
                               key=f"mibench-{task.key}-{run_id}", pure=False): task
            for task in tasks
        }
        order = _SubmissionOrder(tasks, on_start, self.concurrent)
        try:
            for future in as_completed(futures):
                task = futures[future]
                try:
                    record = future.result()
                except KilledWorker as exc:
                    # The Dask worker itself died (lost node, killed job) while holding the task,
                    # as often as Dask allows: the task's failure, like a crashed worker process.
                    record = failure(task, f"the Dask worker running this task died ({exc})")
                on_record(record)
                future.release()
                order.ended_one(task)
        finally:
            left = [f for f in futures if not f.done()]
            if left:
                self.client.cancel(left)
            try:
                self.client.run(close_worker_processes)
            except Exception as exc:  # workers gone: their processes went with them
                self.log(f"could not stop the Dask workers' task processes: {exc}")

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None
        if self.cluster is not None:
            self.cluster.close()
            self.cluster = None


def make_executor(name: str, *, workers: int, device: str, scheduler: str | None = None,
                  log: Callable[[str], None] | None = None) -> Executor:
    """The executor for ``--executor name`` (checked by :class:`mibench.settings.RunSettings`)."""
    if name == "dask":
        return DaskExecutor(scheduler, workers, device, log=log)
    if name == "local":
        return LocalExecutor(workers, device)
    raise UserError(f"unknown executor {name!r}; choose from {', '.join(EXECUTORS)}")


__all__ = ["EXECUTORS", "DaskExecutor", "Executor", "LocalExecutor", "WorkerFacts",
           "make_executor", "plan_placement", "run_on_dask_worker"]
