"""The progress a run shows: an ETA priced per method, the task in flight named, a clock that
moves during long tasks, and plain lines (no carriage returns) when stderr is not a terminal."""

import io
import multiprocessing as mp
import os
import threading
import time
from collections import deque
from types import SimpleNamespace

import pytest

from mibench.pool import ProcessPool
from mibench.progress import Progress, eta_seconds, format_seconds, task_label
from mibench.registration import Record, RegistrationTask
from mibench.runner import run_benchmark
from mibench.settings import RunSettings


def _task(group, key, **fields):
    return SimpleNamespace(group=group, key=key, **fields)


class Clock:
    """A stand-in for time.monotonic that moves only when told."""

    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


# --------------------------------------------------------------------------- the estimate


def test_fast_tasks_run_first_do_not_make_slow_ones_look_fast():
    """10 tasks of A at 0.1 s done, 1 of B at 10 s done, 9 of B left: 90 s, not the ~9 s a rate
    over all finished tasks (11 tasks in 11 s) gives."""
    eta = eta_seconds({"A": [0.1] * 10, "B": [10.0]}, {"B": 9}, concurrent=1)
    assert eta == pytest.approx(90.0)


def test_the_work_left_is_shared_among_the_workers_that_have_a_task():
    assert eta_seconds({"A": [2.0, 4.0]}, {"A": 6}, concurrent=3) == pytest.approx(6.0)
    # 2 tasks of 10 s left on 8 workers: 10 s, not 20/8.
    assert eta_seconds({"A": [10.0]}, {"A": 2}, concurrent=8) == pytest.approx(10.0)


def test_a_group_not_seen_yet_costs_the_overall_mean_or_what_its_first_task_already_took():
    assert eta_seconds({"A": [1.0, 3.0]}, {"B": 4}, concurrent=1) == pytest.approx(8.0)
    # B's first task has run for 30 s: the other 4 will not take 2 s each.
    eta = eta_seconds({"A": [1.0, 3.0]}, {"B": 4}, concurrent=1, running=[("B", 30.0)])
    assert eta == pytest.approx(120.0)


def test_a_task_in_flight_counts_what_is_left_of_it():
    # One 60 s task of A is 50 s in; nothing else left.
    assert eta_seconds({"A": [60.0]}, {}, concurrent=4, running=[("A", 10.0)]) == 50.0
    assert eta_seconds({"A": [60.0]}, {}, concurrent=1, running=[("A", 90.0)]) == 0.0


def test_no_estimate_before_a_task_has_finished():
    assert eta_seconds({}, {"A": 3}, concurrent=1, running=[("A", 5.0)]) is None
    assert format_seconds(None) == "?"
    assert [format_seconds(s) for s in (0.4, 62, 3723)] == ["0:00", "1:02", "1:02:03"]


def test_labels_name_the_method_and_pair_or_what_an_estimator_task_has():
    reg = RegistrationTask("ncc", {}, "toy", {}, "toy-3", 0)
    assert task_label(reg) == "ncc toy-3"
    assert task_label(_task("nmi", "k", task="gaussian", n=4096)) == "nmi gaussian"
    assert task_label(_task("nmi", "k", side=256)) == "nmi 256 px"
    assert task_label(_task("mse", "k")) == "mse"
    assert task_label(_task("mse", "k", label="custom")) == "custom"


# --------------------------------------------------------------------------- what is shown


def test_without_a_terminal_it_prints_lines_at_most_one_per_task_and_always_the_last():
    tasks = [_task("A", f"a{i}", pair_id=f"p{i}") for i in range(5)]
    out, clock = io.StringIO(), Clock()
    with Progress(tasks, 1, file=out, clock=clock, line_every_s=10.0) as progress:
        for i, task in enumerate(tasks):
            progress.start(task)
            clock.t += 4.0  # lines at 4 s (the first), 16 s (12 s later), 20 s (the last)
            progress.finish(task, SimpleNamespace(status="failed" if i == 1 else "ok"))
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert len(lines) == 3, lines
    assert lines[0] == "mibench: 1/5 tasks, 0:04 elapsed, ETA 0:16; last: A p0"
    assert lines[1].startswith("mibench: 4/5 tasks, 0:16 elapsed, ETA 0:04, 1 failed")
    assert lines[2] == "mibench: 5/5 tasks, 0:20 elapsed, ETA 0:00, 1 failed; last: A p4"


def test_the_bar_names_the_task_in_flight_and_its_clock_moves_between_records():
    tasks = [_task("slow", "s0", pair_id="p0"), _task("slow", "s1", pair_id="p1")]
    out = io.StringIO()
    progress = Progress(tasks, 2, file=out, interactive=True, refresh_s=0.02)
    try:
        progress.start(tasks[0])
        progress.start(tasks[1])
        drawn = out.getvalue().count("\r")
        time.sleep(0.5)  # no record arrives: only the refresher draws (every 0.02 s)
        assert out.getvalue().count("\r") >= drawn + 2
        assert "mibench slow p0 +1:" in out.getvalue()
        progress.finish(tasks[0], SimpleNamespace(status="ok"))
        assert "mibench slow p1:" in out.getvalue().rsplit("\r", 1)[-1]
        progress.finish(tasks[1], SimpleNamespace(status="ok"))
        ended = out.getvalue()
        time.sleep(0.1)  # the clock stopped with the last task (the workers' shutdown is not)
        assert out.getvalue() == ended and "2/2" in ended
    finally:
        progress.close()
    assert not [t for t in threading.enumerate() if t.name == "mibench-progress"]
    progress.close()  # twice is harmless


def test_a_dask_task_whose_start_was_not_seen_is_timed_by_its_record():
    tasks = [_task("A", "a0"), _task("A", "a1")]
    progress = Progress(tasks, 1, file=io.StringIO(), clock=Clock())
    progress.finish(tasks[0], SimpleNamespace(status="ok", wall_s=7.0))
    assert progress.durations == {"A": [7.0]} and progress.eta() == pytest.approx(7.0)
    progress.close()


# --------------------------------------------------------------------------- the executors


def test_the_pool_reports_each_task_as_it_is_sent_to_a_worker():
    """A fake worker that answers at once: on_start comes before each task's record."""
    tasks = [RegistrationTask("identity", {}, "synthetic", {}, f"p{i}", 0) for i in range(2)]
    driver, worker_end = mp.Pipe()
    never, keep = os.pipe()  # a sentinel that never fires: the process is alive
    fake = SimpleNamespace(conn=driver, ready=True, task=None, provisional=None, started=0.0,
                           proc=SimpleNamespace(sentinel=never, is_alive=lambda: True),
                           stop=lambda force=False: None)

    def send(task):
        fake.task, fake.started = task, time.monotonic()
        worker_end.send(("done", Record(task, status="ok")))

    fake.send = send
    pool = ProcessPool.__new__(ProcessPool)
    pool._slots = [fake]
    events = []
    try:
        pool._loop([0], deque(tasks), None, lambda r: events.append(("done", r.task.pair_id)),
                   lambda t, e: None, lambda t: events.append(("start", t.pair_id)))
    finally:
        os.close(never)
        os.close(keep)
    assert events == [("start", "p0"), ("done", "p0"), ("start", "p1"), ("done", "p1")]


def test_a_run_without_a_terminal_logs_progress_lines(tmp_path, capsys, no_reports):
    settings = RunSettings(methods="oracle,identity", dataset="toy", out=str(tmp_path / "run"),
                           plugins=["helpers.fakeplugin"], workers=0)
    run_benchmark(settings, progress=True)
    err = capsys.readouterr().err
    assert "\r" not in err
    assert "mibench: 6/6 tasks" in err and "ETA 0:00" in err


def test_dask_tasks_are_taken_as_started_in_submission_order_as_slots_free_up():
    from mibench.executors import _SubmissionOrder

    tasks = [_task("A", f"k{i}") for i in range(5)]
    started = []
    order = _SubmissionOrder(tasks, lambda t: started.append(t.key), slots=2)
    assert started == ["k0", "k1"]
    order.ended_one(tasks[0])
    assert started == ["k0", "k1", "k2"]
    order.ended_one(tasks[3])  # ended before its guessed start: it never "starts", k4 does
    assert started == ["k0", "k1", "k2", "k4"]
    order.ended_one(tasks[1])
    assert len(started) == 4
    _SubmissionOrder(tasks, None, slots=2).ended_one(tasks[0])  # no callback: nothing to do
