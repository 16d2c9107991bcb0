"""Busy processes that compete with a test for the CPUs."""

from __future__ import annotations

import multiprocessing as mp
import time
from collections.abc import Iterator
from contextlib import contextmanager


def spin(seconds: float, started=None) -> None:
    """Keep one CPU busy for ``seconds``; set ``started`` (an event) first."""
    if started is not None:
        started.set()
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def work(steps: int) -> int:
    """A fixed amount of single-threaded CPU work (``steps`` loop steps): its CPU time is the
    same whether or not it had to wait for a CPU."""
    total = 0
    for i in range(steps):
        total += i & 7
    return total


@contextmanager
def competitors(n: int, seconds: float) -> Iterator[None]:
    """``n`` spawned processes spinning for ``seconds`` while the block runs: the block starts
    once each spins (a spawned process takes a while to import), and they are stopped when it
    ends."""
    ctx = mp.get_context("spawn")
    started = [ctx.Event() for _ in range(n)]
    procs = [ctx.Process(target=spin, args=(seconds, e)) for e in started]
    for p in procs:
        p.start()
    try:
        assert all(e.wait(30) for e in started)
        yield
    finally:
        for p in procs:
            p.terminate()
            p.join()
