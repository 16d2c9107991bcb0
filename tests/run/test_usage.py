"""Task usage: CPU time, peak memory, the load of other processes and the contention verdict."""

import time

import numpy as np
import pytest
from helpers.load import competitors, work

from mibench.usage import PeakRss, UsageMeter, busy_cpu_s, is_contended


def test_the_memory_sampler_sees_an_allocation():
    with PeakRss() as rss:
        block = np.ones(64 * 2**20 // 8)  # 64 MiB, touched
        # numpy fills it holding the GIL; the sampler reads the memory while this waits (as it
        # does while a torch kernel, which releases the GIL, runs). On a loaded machine the
        # sampler thread may be scheduled late, so wait for it (up to a generous deadline)
        # instead of a fixed sleep.
        deadline = time.monotonic() + 10.0
        while rss.peak - rss.base < 48 * 2**20 and time.monotonic() < deadline:
            time.sleep(0.01)
        del block
    assert rss.peak - rss.base >= 48 * 2**20


@pytest.mark.parametrize(("own", "other", "cpus", "threads", "expected"), [
    (2.0, 0.0, 2, 2, False),   # quiet machine, both threads busy
    (1.0, 0.0, 2, 2, False),   # a single-threaded method on a quiet machine
    (1.0, 1.0, 2, 1, False),   # two workers of one thread each on two CPUs: as planned
    (1.0, 1.0, 2, 2, True),    # two threads, one CPU left by a busy process
    (0.5, 1.5, 2, 1, True),    # one thread sharing its CPU with a competitor
    (1.0, 1.5, 4, 2, False),   # enough CPUs left for both threads
    (2.0, 1.9, 2, 2, False),   # the task got its CPUs after all (the load was elsewhere)
])
def test_contention_rule(own, other, cpus, threads, expected):
    assert is_contended(own, other, cpus, threads) is expected


def test_cpu_time_counts_computing_not_waiting():
    with UsageMeter(threads=1) as meter:
        work(3_000_000)
    used = meter.usage
    assert 0.05 < used.cpu_s <= used.wall_s + 0.05  # one thread: never more than the wall time
    with UsageMeter(threads=1) as meter:
        time.sleep(0.3)
    assert meter.usage.cpu_s < 0.1
    assert meter.usage.wall_s >= 0.3
    assert meter.usage.peak_rss_mb > 1


@pytest.mark.skipif(busy_cpu_s() is None, reason="no per-CPU busy counters here")
def test_a_competing_process_is_seen_as_load_and_contention():
    from mibench.machine import usable_cpus

    # Two per CPU: a fresh thread gets more than its fair share for a while (the scheduler's
    # credit for a task that just woke), and one competitor per CPU left that share ambiguous.
    with competitors(2 * usable_cpus(), 8.0):
        time.sleep(0.2)
        with UsageMeter(threads=1) as meter:
            work(12_000_000)  # long enough to be judged even on a fast CPU
    usage = meter.usage
    with UsageMeter(threads=1) as meter:
        work(12_000_000)
    alone = meter.usage
    # The same work costs about the same CPU time whether or not it had to wait for a CPU.
    assert usage.cpu_s == pytest.approx(alone.cpu_s, rel=0.3)
    assert usage.wall_s > 1.3 * usage.cpu_s
    # Every CPU has competitors: the others kept most of them busy and this loop got well under
    # a CPU.
    assert usage.load_cpus > 0.5 * usage.cpus
    assert usage.contended is True
