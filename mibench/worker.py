"""A worker process: it receives tasks over a pipe, runs each, and sends back its record.

Started by :class:`mibench.pool.ProcessPool` (spawned, so it imports nothing of the driver's
state); everything it needs comes in its :class:`~mibench.tasks.WorkerContext`.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import threading
from multiprocessing.connection import wait

from mibench.errors import one_line_warnings
from mibench.tasks import WorkerContext, Workspace


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


def worker_main(conn, ctx: WorkerContext) -> None:
    """Entry point of a worker process: receive tasks, send back records, until told to stop."""
    import torch

    # Ctrl-C in a terminal reaches the whole process group: the driver handles it (it stops the
    # workers and keeps the records); a worker's own KeyboardInterrupt only printed a traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _exit_with_parent()
    one_line_warnings()
    torch.set_num_threads(ctx.threads)
    workspace = Workspace(ctx)
    conn.send(("ready", None))
    while True:
        try:
            task = conn.recv()
        except EOFError:  # the driver is gone (killed): nothing left to report to
            return
        if task is None:
            return
        record = task.run(workspace, on_started=lambda r: conn.send(("started", r)))
        conn.send(("done", record))
