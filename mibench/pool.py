"""A pool of time-limited worker processes: the one way every executor runs a task.

Each slot holds one spawned worker process (:mod:`mibench.worker`) with its own context (device,
threads). A task that exceeds the time-out, or whose process dies (segfault, out of memory), is
stopped and recorded as failed through ``failure(task, error)`` (the task's own failure record,
:meth:`mibench.tasks.Task.failure`); a fresh process starts in its slot when the next task
needs it.
"""

from __future__ import annotations

import multiprocessing as mp
import time
from collections import deque
from collections.abc import Callable
from multiprocessing.connection import wait
from typing import Any

from mibench.tasks import Task, WorkerContext, now
from mibench.worker import worker_main

OnRecord = Callable[[Any], None]
#: ``failure(task, error)``: the failed record of a task whose worker died or timed out.
Failure = Callable[[Task, str], Any]
#: ``on_start(task)``: ``task`` was sent to a worker (the driver's progress bar names it).
OnStart = Callable[[Task], None]


class _Worker:
    def __init__(self, ctx: WorkerContext, mpctx):
        self.conn, child = mpctx.Pipe()
        self.proc = mpctx.Process(target=worker_main, args=(child, ctx), daemon=True)
        self.proc.start()
        child.close()
        self.ready = False
        self.task: Task | None = None
        self.started = 0.0
        self.provisional: Any = None

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


def _failure_from(worker: _Worker, error: str, failure: Failure,
                  ended: float | None = None) -> Any:
    """The failure record of a worker's task that ended (``time.monotonic()``; default now)."""
    task = worker.task
    # How long the task ran, not counting the driver's loading of the pair for the failure.
    wall_s = (time.monotonic() if ended is None else ended) - worker.started
    if worker.provisional is not None:
        record = worker.provisional
        record.error, record.finished_at = error, now()
    else:
        record = failure(task, error)
    record.wall_s = wall_s
    return record


def _describe_exit(code: int | None) -> str:
    if code is not None and code < 0:
        sig = -code
        hint = " (killed: out of memory?)" if sig == 9 else ""
        return f"worker process died from signal {sig}{hint}"
    return f"worker process exited unexpectedly with code {code}"


def _receive(w: _Worker, message: tuple, on_record: OnRecord) -> None:
    """Act on one message of a worker: ready, its task's pair loaded, or its task done."""
    kind, payload = message
    if kind == "ready":
        w.ready = True
    elif kind == "started":
        w.provisional = payload
    elif kind == "done":
        w.task = None
        on_record(payload)


def _drain(w: _Worker, on_record: OnRecord) -> None:
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

    def run(self, tasks: list[Task], timeout: float | None, on_record: OnRecord,
            failure: Failure, on_start: OnStart | None = None) -> None:
        """Run ``tasks``; call ``on_record`` with each record as soon as it is known.

        ``failure(task, error)`` makes the failed record of a task whose worker died before it
        reported the pair's initial error; ``on_start(task)``, when given, is called as each
        task is sent to a worker.
        """
        pending = deque(tasks)
        active = range(min(len(self._slots), len(tasks)))
        try:
            self._loop(active, pending, timeout, on_record, failure, on_start)
        except BaseException:
            # Interrupted (Ctrl-C, a failing callback): nothing may run on unsupervised.
            self.close()
            raise

    def _retire(self, i: int) -> None:
        # A replacement starts only when a task needs it (not after the last one).
        self._slots[i].stop(force=True)
        self._slots[i] = None

    def _loop(self, active, pending, timeout, on_record, failure, on_start=None) -> None:
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
                    if on_start is not None:
                        on_start(w.task)
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
                        on_record(_failure_from(w, _describe_exit(w.proc.exitcode), failure))
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
                    on_record(_failure_from(w, f"timed out after {timeout:g} s", failure,
                                            ended))

    def close(self) -> None:
        """Stop every worker process (those still busy are killed)."""
        for i, w in enumerate(self._slots):
            if w is not None:
                w.stop(force=w.task is not None)
                self._slots[i] = None
