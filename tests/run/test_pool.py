"""The pool of time-limited worker processes: failure timings, orphaned workers, results that
arrive at the deadline."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers import TESTS

from mibench.pool import ProcessPool, _failure_from
from mibench.registration import Record, RegistrationTask, failed_record


def test_a_failure_record_times_the_task_not_the_drivers_fallback():
    """A timed-out (or crashed) task's wall_s is how long it ran, not that plus the time the
    driver then spends loading the pair to score it with its initial error."""
    task = RegistrationTask("identity", {}, "toy", {}, "toy-0", 0)
    worker = SimpleNamespace(task=task, started=time.monotonic(), provisional=None)

    def slow_failure(t, error):
        time.sleep(0.5)  # loading a large pair in the driver
        return failed_record(t, error, naed_norm="diagonal")

    record = _failure_from(worker, "timed out after 1 s", slow_failure)
    assert record.status == "failed" and record.wall_s < 0.3


def _state(pid: int) -> str | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("State:"):
                return line.split()[1]
    except OSError:
        return None
    return None


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")
def test_worker_stops_when_its_driver_is_killed(tmp_path):
    """SIGKILL of the driver: its worker process must not run on (for the task's whole length,
    without any time-out) holding CPU or GPU while the user resumes the run."""
    script = tmp_path / "driver.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(TESTS)!r})
        import mibench.pool as P
        from mibench.registration import RegistrationTask, failed_record
        from mibench.tasks import WorkerContext

        if __name__ == "__main__":
            ctx = WorkerContext("toy", None, "cpu", "diagonal", ("helpers.fakeplugin",), 1)
            task = RegistrationTask("sleeps", {{"seconds": 60.0}}, "toy",
                                    {{"pairs": 3, "size": 32}}, "toy-0", 0)
            send = P._Worker.send

            def send_and_tell(self, t):
                send(self, t)
                print(self.proc.pid, flush=True)

            P._Worker.send = send_and_tell
            P.ProcessPool([ctx]).run([task], None, print,
                                     lambda t, e: failed_record(t, e, naed_norm="diagonal"))
    """))
    driver = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    worker_pid = None
    try:
        worker_pid = int(driver.stdout.readline())
        time.sleep(1.5)  # the worker is inside the method now
        assert _state(worker_pid) not in (None, "Z")
        driver.kill()
        driver.wait()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _state(worker_pid) not in (None, "Z"):
            time.sleep(0.1)
        assert _state(worker_pid) in (None, "Z"), "the orphaned worker process runs on"
    finally:
        if driver.poll() is None:
            driver.kill()
        if worker_pid is not None and _state(worker_pid) not in (None, "Z"):
            os.kill(worker_pid, signal.SIGKILL)


def test_a_result_waiting_in_the_pipe_is_kept_not_timed_out():
    """The pool reads one message per worker per wake-up. A worker that sent "started" and then
    "done" while the driver was busy elsewhere (past the task's deadline) has a result: the
    time-out check must take it, not replace it by a "timed out" failure."""
    import multiprocessing as mp
    from collections import deque

    task = RegistrationTask(method="identity", method_params={}, dataset="synthetic",
                            dataset_params={}, pair_id="p0", seed=0)
    loaded = Record(task, status="failed", error="provisional")
    done = Record(task, status="ok")
    driver, worker_end = mp.Pipe()
    worker_end.send(("started", loaded))
    worker_end.send(("done", done))
    never, _keep = os.pipe()  # a sentinel that never fires: the process is alive
    fake = SimpleNamespace(conn=driver, ready=True, task=task, provisional=None,
                           started=time.monotonic() - 60.0,
                           proc=SimpleNamespace(sentinel=never, is_alive=lambda: True),
                           stop=lambda force=False: None)
    pool = ProcessPool.__new__(ProcessPool)
    pool._slots = [fake]
    got = []
    try:
        pool._loop([0], deque(), 1.0, got.append, lambda t, e: Record(
            t, status="failed", error=e))
    finally:
        os.close(never)
        os.close(_keep)
    assert [r.status for r in got] == ["ok"]
