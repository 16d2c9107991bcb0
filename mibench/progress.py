"""The progress of a run, as the driver shows it on stderr: what runs now, how much is done,
and an estimate of the time left that a reader can trust.

A run's tasks differ in cost by orders of magnitude between methods (``identity`` takes
milliseconds, ``drmime`` minutes), and however they are ordered (a registration run
interleaves methods; the estimator commands run estimator by estimator), a rate over all
finished tasks (tqdm's estimate) is fooled by whichever tasks happened to finish first.
:func:`eta_seconds` instead prices the tasks left of each group (method, estimator) at that
group's own mean duration.

In a terminal the bar is redrawn every second, so its clock moves during long tasks; when
stderr is a file or a pipe (a batch job's log) it prints plain lines instead, at most one per
finished task, since a redrawn bar would fill the log with carriage returns.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import IO, Any


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def eta_seconds(durations: Mapping[str, Sequence[float]], queued: Mapping[str, int],
                concurrent: int, running: Iterable[tuple[str, float]] = ()) -> float | None:
    """Seconds until the last task of a run finishes, from the durations of finished tasks.

    Parameters
    ----------
    durations
        The durations (s) of the finished tasks of each group (method or estimator).
    queued
        How many tasks of each group have not started yet.
    concurrent
        How many tasks run at once.
    running
        ``(group, elapsed s)`` of each task in flight.

    Returns
    -------
    float or None
        The work left of every group (its tasks times its mean duration; a group with no
        finished task yet: the mean over all finished tasks, or longer when its task in flight
        has already run longer), shared among the ``concurrent`` slots (or the tasks left, when
        fewer), and never less than the longest remainder of one task in flight. None while no
        task has finished.
    """
    finished = [d for ds in durations.values() for d in ds]
    if not finished:
        return None
    overall = _mean(finished)
    running = list(running)
    means = {g: _mean(ds) for g, ds in durations.items() if ds}
    unseen: dict[str, float] = {}
    for group, elapsed in running:
        if group not in means:
            # A group's first task that has already run long says its tasks are long.
            unseen[group] = max(unseen.get(group, overall), elapsed)
    means.update(unseen)
    left_in_flight = [max(0.0, means.get(g, overall) - elapsed) for g, elapsed in running]
    work = sum(n * means.get(g, overall) for g, n in queued.items()) + sum(left_in_flight)
    # Fewer tasks left than slots: the idle slots do not shorten the wait.
    slots = min(concurrent, sum(queued.values()) + len(running))
    return max(work / max(1, slots), max(left_in_flight, default=0.0))


def task_label(task: Any) -> str:
    """A short name of a task for the progress line: its ``label`` when it has one, else its
    group and the first of its pair, known-MI task or image side."""
    label = getattr(task, "label", None)
    if label:
        return str(label)
    for attr, fmt in (("pair_id", "{}"), ("task", "{}"), ("side", "{} px")):
        value = getattr(task, attr, None)
        if value is not None:
            return f"{task.group} {fmt.format(value)}"
    return str(task.group)


def format_seconds(seconds: float | None) -> str:
    """``1:02:03``, ``2:03``; ``?`` for an unknown duration."""
    if seconds is None:
        return "?"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class Progress:
    """The progress of the tasks of one run: :meth:`start` when a task is sent to a worker,
    :meth:`finish` when its record arrives, :meth:`close` at the end (also as a context
    manager).

    Parameters
    ----------
    tasks
        The tasks to run now (each has ``key`` and ``group``).
    concurrent
        How many tasks run at once.
    file
        Where to write (default stderr).
    interactive
        A redrawn bar (True) or plain lines (False); default: whether ``file`` is a terminal.
    refresh_s
        How often the bar is redrawn between records.
    line_every_s
        Without a terminal, the least time between two lines (the last task's line always
        comes).
    clock
        ``time.monotonic`` or a stand-in (tests).
    """

    def __init__(self, tasks: Sequence[Any], concurrent: int, *, file: IO[str] | None = None,
                 interactive: bool | None = None, refresh_s: float = 1.0,
                 line_every_s: float = 10.0, clock: Callable[[], float] = time.monotonic):
        self.file = file if file is not None else sys.stderr
        self.total = len(tasks)
        self.concurrent = max(1, concurrent)
        self.clock = clock
        self.line_every_s = line_every_s
        self.started_at = clock()
        self.done = self.failed = 0
        self.queued: Counter[str] = Counter(t.group for t in tasks)
        self.durations: dict[str, list[float]] = {}
        self.in_flight: dict[str, tuple[str, str, float]] = {}  # key -> (label, group, start)
        self.last = ""
        self._last_line_at: float | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.bar = None
        if interactive is None:
            interactive = bool(getattr(self.file, "isatty", lambda: False)())
        if interactive and self.total:
            self._open_bar(refresh_s)

    # ------------------------------------------------------------------ events

    def start(self, task: Any) -> None:
        """``task`` was sent to a worker."""
        with self._lock:
            if task.key not in self.in_flight:
                self.queued[task.group] -= 1
            self.in_flight[task.key] = (task_label(task), task.group, self.clock())
            self._show()

    def finish(self, task: Any, record: Any) -> None:
        """``record`` of ``task`` arrived (failed or not)."""
        with self._lock:
            now = self.clock()
            started = self.in_flight.pop(task.key, None)
            if started is None:  # its start was not reported (Dask): the task's own timing
                self.queued[task.group] -= 1
                wall = getattr(record, "wall_s", None)
                duration = float(wall) if isinstance(wall, int | float) else None
            else:
                duration = now - started[2]
            if duration is not None:
                self.durations.setdefault(task.group, []).append(duration)
            self.done += 1
            failed = getattr(record, "status", None) == "failed"
            self.failed += failed
            self.last = task_label(task) + (" (failed)" if failed else "")
            if self.bar is not None:
                self.bar.update(1)
                self._show()
                if self.done == self.total:
                    # The clock stops with the last task: stopping the workers is not its time.
                    self._stop.set()
                    self.bar.close()
                    self.bar = None
            else:
                self._print_line(now)

    def eta(self) -> float | None:
        """:func:`eta_seconds` of the run now."""
        now = self.clock()
        running = [(group, now - t0) for _label, group, t0 in self.in_flight.values()]
        queued = {g: n for g, n in self.queued.items() if n > 0}
        return eta_seconds(self.durations, queued, self.concurrent, running)

    def now_running(self) -> str:
        """What runs now: the task in flight longest, and how many others; else the last
        one finished."""
        if not self.in_flight:
            return self.last
        label, _group, _t0 = min(self.in_flight.values(), key=lambda v: v[2])
        others = len(self.in_flight) - 1
        return label + (f" +{others}" if others else "")

    # ------------------------------------------------------------------ output

    def _status(self) -> str:
        failed = f", {self.failed} failed" if self.failed else ""
        return f"ETA {format_seconds(self.eta())}{failed}"

    def _show(self) -> None:
        if self.bar is not None:
            self.bar.set_description_str(f"mibench {self.now_running()}".strip(), refresh=False)
            self.bar.set_postfix_str(self._status(), refresh=False)
            self.bar.refresh()

    def _print_line(self, now: float) -> None:
        last_task = self.done == self.total
        recent = (self._last_line_at is not None
                  and now - self._last_line_at < self.line_every_s)
        if recent and not last_task:
            return
        self._last_line_at = now
        elapsed = format_seconds(now - self.started_at)
        print(f"mibench: {self.done}/{self.total} tasks, {elapsed} elapsed, {self._status()}; "
              f"last: {self.last}", file=self.file, flush=True)

    def _open_bar(self, refresh_s: float) -> None:
        from tqdm import tqdm

        # tqdm's own remaining time is replaced by ours (in the postfix), and it is not to
        # redraw by itself: the refresher below does, under the lock.
        self.bar = tqdm(total=self.total, unit="task", desc="mibench", file=self.file,
                        dynamic_ncols=True, mininterval=0, miniters=1,
                        bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} "
                                   "[{elapsed}{postfix}]")
        self._show()
        self._thread = threading.Thread(target=self._refresh, args=(refresh_s,),
                                        name="mibench-progress", daemon=True)
        self._thread.start()

    def _refresh(self, every_s: float) -> None:
        # The bar is otherwise redrawn only when a task starts or ends: its clock and ETA would
        # stand still through a task of minutes.
        while not self._stop.wait(every_s):
            with self._lock:
                self._show()

    def close(self) -> None:
        """Stop the refresher and leave the bar as it ended (safe to call more than once)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        with self._lock:
            if self.bar is not None:
                self.bar.close()
                self.bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
