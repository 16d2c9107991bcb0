"""What a task used while it ran: CPU time, peak memory, and the load other processes put on the
machine, with the verdict whether the task was *contended*.

A task's wall time measures the machine as much as the method: on a machine that other jobs are
using, a method that runs while they compete for the cores looks slower than one that ran
before them. Its process CPU time (user + system, every thread) is much less affected, so the
reports trust it on CPU runs; and a task whose threads could not get the CPUs they needed, because
other processes kept them busy, is flagged so that the reports can say how many timings are
inflated.

The machine's load is read from the per-CPU busy times of the CPUs this process may run on
(psutil), before and after the task: ``busy CPUs - this process's CPUs = the other processes'``.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass

from mibench.machine import usable_cpus

#: A task is contended when the CPUs other processes left free fall below this share of the
#: CPUs its threads could use, and the task itself got less than that share.
CONTENDED_SHARE = 0.75
#: Below this wall time the busy-time counters (10 ms ticks) are too coarse to judge contention.
MIN_JUDGED_S = 0.2
MIB = 2**20


def rss_bytes() -> int:
    """This process's resident memory now, in bytes (0 where it cannot be read)."""
    try:
        with open("/proc/self/statm") as fh:  # cheap enough to sample every millisecond
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        pass
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except Exception:
        return 0


class PeakRss:
    """The largest resident memory (``peak``, bytes) seen while the block runs, and the memory
    at its start (``base``), sampled every ``interval`` seconds by a background thread."""

    def __init__(self, interval: float = 0.001):
        self.interval = interval

    def __enter__(self) -> PeakRss:
        self.base = self.peak = rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="mibench-rss", daemon=True)
        self._thread.start()
        return self

    def _watch(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, rss_bytes())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())


def process_cpu_s() -> float:
    """CPU time this process has used so far (user + system, every thread), in seconds."""
    t = os.times()
    return t.user + t.system


def busy_cpu_s() -> float | None:
    """Busy time summed over the CPUs this process may run on, in seconds (None where the
    counters cannot be read)."""
    try:
        import psutil

        per_cpu = psutil.cpu_times(percpu=True)
        try:
            allowed = os.sched_getaffinity(0)
        except (AttributeError, OSError):
            allowed = set(range(len(per_cpu)))
        busy = 0.0
        for i in allowed:
            if i < len(per_cpu):
                t = per_cpu[i]
                busy += sum(t) - t.idle - getattr(t, "iowait", 0.0)
        return busy
    except Exception:
        return None


def is_contended(own_cpus: float, other_cpus: float, cpus: int, threads: int) -> bool:
    """Whether a task was starved of CPU by other processes.

    Parameters
    ----------
    own_cpus : float
        CPUs the task's process kept busy on average (its CPU time / its wall time).
    other_cpus : float
        CPUs that other processes kept busy on average while it ran.
    cpus : int
        CPUs the task's process may run on.
    threads : int
        Threads the task computes with (torch's intra-op threads).

    Returns
    -------
    bool
        True when the other processes left fewer than :data:`CONTENDED_SHARE` of the CPUs the
        task's threads could use *and* the task got less than that share itself. A task that
        used few CPUs on an idle machine (a single-threaded method) is not contended; one whose
        sibling workers of the same run share the machine as planned (one thread each) is not
        either, as long as a CPU is left for each.
    """
    wanted = max(1, min(threads, cpus))
    free = cpus - other_cpus
    return bool(free < CONTENDED_SHARE * wanted and own_cpus < CONTENDED_SHARE * wanted)


@dataclass(frozen=True)
class Usage:
    """What one task used.

    Attributes
    ----------
    wall_s, cpu_s : float
        Wall time and process CPU time (user + system, every thread), in seconds.
    peak_rss_mb : float
        Peak resident memory of the process while the task ran, in MiB (its whole footprint,
        libraries and earlier allocations included).
    load_cpus : float or None
        CPUs that other processes kept busy on average while the task ran (None: unknown).
    cpus : int
        CPUs the process may run on.
    contended : bool or None
        :func:`is_contended`; None when the task was too short to judge or the load unknown.
    """

    wall_s: float
    cpu_s: float
    peak_rss_mb: float
    load_cpus: float | None
    cpus: int
    contended: bool | None


class UsageMeter:
    """Measure the block it guards: ``with UsageMeter(threads) as m: ...`` then ``m.usage``.

    ``threads`` is how many threads the task computes with (for :func:`is_contended`);
    memory is sampled every ``interval`` seconds.
    """

    def __init__(self, threads: int, interval: float = 0.01):
        self.threads = threads
        self._rss = PeakRss(interval)
        self.usage: Usage | None = None

    def __enter__(self) -> UsageMeter:
        self._rss.__enter__()
        self._busy0 = busy_cpu_s()
        self._cpu0 = process_cpu_s()
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        wall = time.perf_counter() - self._t0
        cpu = process_cpu_s() - self._cpu0
        busy1 = busy_cpu_s()
        self._rss.__exit__(*exc)
        cpus = usable_cpus()
        load = contended = None
        if self._busy0 is not None and busy1 is not None and wall > 0:
            load = max(0.0, (busy1 - self._busy0 - cpu) / wall)
            if wall >= MIN_JUDGED_S:
                contended = is_contended(cpu / wall, load, cpus, self.threads)
        self.usage = Usage(wall_s=wall, cpu_s=cpu, peak_rss_mb=self._rss.peak / MIB,
                           load_cpus=load, cpus=cpus, contended=contended)
