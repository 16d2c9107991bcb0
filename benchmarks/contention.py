"""What other jobs on the machine do to a benchmark's timings, and what mibench makes of it.

Runs the same benchmark twice, each into its own temporary run directory: once as it is, then
with busy processes (one per CPU, or ``--competitors``) competing for the cores during about the
first ``--busy`` share of the run (a shared workstation, an oversubscribed node). For each method
it prints the median wall time and the median CPU time of both runs, their ratios, and how many of
the second run's tasks mibench flagged as contended. Wall time follows the machine; CPU time
should follow the method (the ratio near 1).

Usage::

    .venv/bin/python benchmarks/contention.py                      # nmi, mmi, ncc, mse; 4 pairs
    .venv/bin/python benchmarks/contention.py --methods nmi,drmime --limit 8 --busy 0.5
    .venv/bin/python benchmarks/contention.py --workers 2 --busy 1.0    # one thread per task
    .venv/bin/python benchmarks/contention.py --competitors 1 --busy 1.0 --limit 2

The first run is the quiet reference only when nothing else runs on the machine: the script
prints how many of its tasks were contended, and that count should be 0.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mibench.machine import cpu_model, usable_cpus  # noqa: E402
from mibench.records import iter_records  # noqa: E402
from mibench.runner import run_benchmark  # noqa: E402
from mibench.settings import RunSettings  # noqa: E402


def _spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def _run(args: argparse.Namespace, out: Path) -> tuple[float, list]:
    settings = RunSettings(methods=args.methods, dataset="synthetic", limit=args.limit,
                           workers=args.workers, device="cpu", out=str(out))
    result = run_benchmark(settings, progress=False, log=lambda msg: None)
    return result.tasks_s, list(iter_records(result.run_dir))


def _medians(records: list, field: str) -> dict[str, float]:
    by_method: dict[str, list[float]] = {}
    for r in records:
        by_method.setdefault(r.task.method, []).append(getattr(r, field))
    return {m: statistics.median(v) for m, v in by_method.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="nmi,mmi,ncc,mse")
    parser.add_argument("--limit", type=int, default=4, help="pairs of the synthetic dataset")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--competitors", type=int, default=0,
                        help="busy processes (default: one per CPU)")
    parser.add_argument("--busy", type=float, default=0.5,
                        help="share of the quiet run's duration the competitors run for")
    args = parser.parse_args()
    cpus = usable_cpus()
    print(f"# {cpu_model()}, {cpus} CPUs; methods {args.methods}, {args.limit} pairs, "
          f"{args.workers} worker(s)")
    with tempfile.TemporaryDirectory() as tmp:
        quiet_s, quiet = _run(args, Path(tmp) / "quiet")
        competitors = [mp.get_context("spawn").Process(target=_spin,
                                                       args=(args.busy * quiet_s,))
                       for _ in range(args.competitors or cpus)]
        for p in competitors:
            p.start()
        try:
            busy_s, busy = _run(args, Path(tmp) / "busy")
        finally:
            for p in competitors:
                p.terminate()
                p.join()
    print(f"quiet run: {quiet_s:.1f} s, {sum(bool(r.contended) for r in quiet)} of {len(quiet)} "
          f"tasks contended")
    print(f"busy run:  {busy_s:.1f} s, {sum(bool(r.contended) for r in busy)} of {len(busy)} "
          f"tasks contended ({args.competitors or cpus} competitors for the first "
          f"{args.busy * quiet_s:.0f} s)")
    qw, qc = _medians(quiet, "wall_s"), _medians(quiet, "cpu_s")
    bw, bc = _medians(busy, "wall_s"), _medians(busy, "cpu_s")
    print("\n| method | quiet wall [s] | quiet CPU [s] | busy wall [s] | busy CPU [s] "
          "| wall busy/quiet | CPU busy/quiet | contended |")
    print("|---|---|---|---|---|---|---|---|")
    for m in qw:
        flagged = sum(bool(r.contended) for r in busy if r.task.method == m)
        n = sum(r.task.method == m for r in busy)
        print(f"| {m} | {qw[m]:.2f} | {qc[m]:.2f} | {bw[m]:.2f} | {bc[m]:.2f} "
              f"| {bw[m] / qw[m]:.2f} | {bc[m] / qc[m]:.2f} | {flagged} of {n} |")


if __name__ == "__main__":
    main()
