"""Audit of the runner: time-outs without a limit, failure timings, orphaned workers, concurrent
runs into one run directory."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

import mibench.records as records
import mibench.reports
from mibench.config import RunConfig
from mibench.records import Record, Task, read_record, write_record
from mibench.runner import _failure_from, run_benchmark, unscored_failure

TESTS = Path(__file__).resolve().parents[1]


@pytest.fixture
def no_reports(monkeypatch):
    monkeypatch.setattr(mibench.reports, "build_reports", lambda run_dir, **kw: None)


@pytest.mark.parametrize("timeout", [float("inf"), 1e300])
def test_an_infinite_or_huge_timeout_means_no_limit(tmp_path, no_reports, timeout):
    """`--timeout inf` (or `timeout = inf` in a TOML file, or just a very large number) must not
    crash the worker pool's wait with an OverflowError."""
    cfg = RunConfig(methods="identity", dataset="toy", out=str(tmp_path / "run"),
                    plugins=["helpers.fakeplugin"], workers=1, timeout=timeout,
                    dataset_options={"pairs": 1})
    result = run_benchmark(cfg, progress=False)
    assert result.completed == 1 and result.failed == 0


def test_a_failure_record_times_the_task_not_the_drivers_fallback():
    """A timed-out (or crashed) task's wall_s is how long it ran, not that plus the time the
    driver then spends loading the pair to score it with its initial error."""
    task = Task("identity", {}, "toy", {}, "toy-0", 0)
    worker = SimpleNamespace(task=task, started=time.monotonic(), provisional=None)

    def slow_fallback(t, error):
        time.sleep(0.5)  # loading a large pair in the driver
        return unscored_failure(t, error, "diagonal")

    record = _failure_from(worker, "timed out after 1 s", slow_fallback)
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
        import mibench.runner as R
        from mibench.records import Task

        if __name__ == "__main__":
            ctx = R.WorkerContext("toy", None, "cpu", "diagonal", ("helpers.fakeplugin",), 1)
            task = Task("sleeps", {{"seconds": 60.0}}, "toy", {{"pairs": 3, "size": 32}},
                        "toy-0", 0)
            send = R._Worker.send

            def send_and_tell(self, t):
                send(self, t)
                print(self.proc.pid, flush=True)

            R._Worker.send = send_and_tell
            R.ProcessPool([ctx]).run([task], None, print,
                                     lambda t, e: R.unscored_failure(t, e, "diagonal"))
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


def test_another_runs_start_up_does_not_break_a_record_being_written(tmp_path, monkeypatch):
    """Two `mibench run` into one --out: the second one's start-up clears stale temporary files
    (remove_stale_temporaries); one that the first run is writing at that moment must not make
    the first run fail with FileNotFoundError (and lose its tasks in flight)."""
    task = Task("identity", {}, "toy", {}, "toy-0", 0)
    record = Record.for_task(task, status="ok")
    real_fsync = os.fsync
    cleaned = []

    def fsync_while_another_run_starts(fd):
        if not cleaned:
            cleaned.append(records.remove_stale_temporaries(tmp_path))
        real_fsync(fd)

    monkeypatch.setattr(records.os, "fsync", fsync_while_another_run_starts)
    path = write_record(tmp_path, task, record)
    assert cleaned == [1]
    assert read_record(path).key == task.key
    assert not list(tmp_path.rglob("*.part"))


def test_a_result_waiting_in_the_pipe_is_kept_not_timed_out():
    """The pool reads one message per worker per wake-up. A worker that sent "loaded" and then
    "done" while the driver was busy elsewhere (past the task's deadline) has a result: the
    time-out check must take it, not replace it by a "timed out" failure."""
    import multiprocessing as mp
    from collections import deque

    from mibench.runner import ProcessPool

    task = Task(method="identity", method_params={}, dataset="synthetic", dataset_params={},
                pair_id="p0", seed=0)
    loaded = Record.for_task(task, status="failed", error="provisional")
    done = Record.for_task(task, status="ok")
    driver, worker_end = mp.Pipe()
    worker_end.send(("loaded", loaded))
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
        pool._loop([0], deque(), 1.0, got.append, lambda t, e: Record.for_task(
            t, status="failed", error=e))
    finally:
        os.close(never)
        os.close(_keep)
    assert [r.status for r in got] == ["ok"]


def test_ctrl_c_stops_a_run_with_workers_in_one_message(tmp_path):
    """SIGINT to the process group, as a terminal's Ctrl-C sends it: the driver says it was
    interrupted and exits with 130; the workers print no traceback of their own."""
    cmd = [sys.executable, "-m", "mibench.cli", "run", "--dataset", "toy", "-o", "pairs=2",
           "--methods", "sleeps", "-O", "seconds=60", "--plugin", "helpers.fakeplugin",
           "--out", str(tmp_path / "run"), "--workers", "2", "--quiet"]
    marks = tmp_path / "marks"
    marks.mkdir()
    env = {**os.environ, "PYTHONPATH": str(TESTS), "FAKEPLUGIN_MARK": str(marks)}
    proc = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while len(list(marks.iterdir())) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)  # until both workers are inside their tasks
        assert len(list(marks.iterdir())) == 2
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert "interrupted" in err


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
def test_records_get_the_usual_mode_of_a_new_file(tmp_path):
    """mkstemp makes files private (0600): records of a shared run directory must be readable by
    colleagues as any file the user creates (0666 less the umask)."""
    from mibench.records import write_json_atomic

    mask = os.umask(0o022)
    os.umask(mask)
    path = tmp_path / "r.json"
    write_json_atomic(path, {"a": 1})
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask
    plain = tmp_path / "plain"
    plain.write_text("x")
    assert path.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777
