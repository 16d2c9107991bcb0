"""Throughput of a benchmark run against the number of workers (tasks per second).

Runs the same benchmark (by default ``mibench run``'s default: the default methods on the
synthetic dataset) once per worker count, each into its own temporary run directory, and prints
tasks/s of each and the ratio of each to the first. Tasks/s counts every task of the run over the
wall time of running them (worker start-up included; planning and the report excluded). With
``w`` workers on ``c`` cores each task gets ``c // w`` torch threads, so the ratio compares
process-level parallelism with torch's own multi-threading on the same cores.

Usage::

    .venv/bin/python benchmarks/workers.py                         # default run, workers 1 and 2
    .venv/bin/python benchmarks/workers.py --pairs 2 --methods identity,ncc -O iterations=20
    .venv/bin/python benchmarks/workers.py --workers 1,2,4 --device cuda
    .venv/bin/python benchmarks/workers.py --executor dask --scheduler tcp://host:8786

Timings taken on a machine that is busy with other work are not meaningful.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mibench.machine import cpu_model, usable_cpus  # noqa: E402
from mibench.records import iter_records  # noqa: E402
from mibench.runner import run_benchmark  # noqa: E402
from mibench.settings import RunSettings  # noqa: E402


def _options(items: list[str]) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"-O expects [METHOD.]KEY=VALUE, got {item!r}")
        method, dot, option = key.rpartition(".")
        out.setdefault(method if dot else "*", {})[option] = value
    return out


def measure(args: argparse.Namespace, workers: int, out: Path) -> dict:
    """Run the benchmark with ``workers`` workers into ``out``; return its figures."""
    dataset_options = {}
    if args.pairs is not None:
        dataset_options["pairs"] = args.pairs
    if args.size is not None:
        dataset_options["size"] = args.size
    cfg = RunSettings(methods=args.methods, dataset="synthetic", dataset_options=dataset_options,
                      method_options=_options(args.O), seeds=[args.seed], device=args.device,
                      workers=workers, timeout=args.timeout, executor=args.executor,
                      scheduler=args.scheduler, out=str(out), plugins=list(args.plugin))
    result = run_benchmark(cfg, progress=False, log=lambda msg: None)
    records = list(iter_records(result.run_dir))
    walls = [r.wall_s for r in records if r.wall_s is not None]
    return {
        "workers": workers,
        "tasks": result.completed,
        "failed": result.failed,
        "seconds": result.tasks_s,
        "tasks_per_s": result.completed / result.tasks_s if result.tasks_s > 0 else float("nan"),
        "median_task_wall_s": statistics.median(walls) if walls else None,
        "naed": {r.key: r.metrics.get("naed") for r in records},
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", default="default", help="as mibench run --methods")
    p.add_argument("--pairs", type=int, default=None, help="synthetic pairs (default 8)")
    p.add_argument("--size", type=int, default=None, help="synthetic image side (default 256)")
    p.add_argument("-O", action="append", default=[], metavar="[METHOD.]KEY=VALUE",
                   help="method option, as mibench run -O (repeatable)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--workers", default="1,2", help="worker counts to compare, e.g. 1,2,4")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds per task")
    p.add_argument("--executor", choices=["local", "dask"], default="local")
    p.add_argument("--scheduler", default=None, help="Dask scheduler address")
    p.add_argument("--plugin", action="append", default=[], help="extra plugin module")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = p.parse_args(argv)
    counts = [int(w) for w in args.workers.split(",")]
    if any(w < 1 for w in counts):
        raise SystemExit("--workers takes counts >= 1")

    rows = []
    with tempfile.TemporaryDirectory(prefix="mibench-workers-") as tmp:
        for w in counts:
            rows.append(measure(args, w, Path(tmp) / f"workers-{w}"))
    # The results must not depend on the worker count: a check that the runs are comparable.
    first = rows[0]["naed"]
    drift = max((abs(a - first[k]) for row in rows[1:] for k, a in row["naed"].items()
                 if a is not None and first.get(k) is not None), default=0.0)
    if args.json:
        print(json.dumps({"cpus": usable_cpus(), "device": args.device, "max_naed_drift": drift,
                          "runs": [{k: v for k, v in r.items() if k != "naed"} for r in rows]},
                         indent=1))
        return 0
    print(f"{usable_cpus()} usable cores ({cpu_model()}), "
          f"device {args.device}, executor {args.executor}, methods {args.methods}")
    print(f"{'workers':>7} {'tasks':>6} {'failed':>6} {'seconds':>8} {'tasks/s':>8} "
          f"{'median task s':>13} {'ratio':>6}")
    for r in rows:
        ratio = r["tasks_per_s"] / rows[0]["tasks_per_s"]
        median = f"{r['median_task_wall_s']:.2f}" if r["median_task_wall_s"] is not None else "-"
        print(f"{r['workers']:>7} {r['tasks']:>6} {r['failed']:>6} {r['seconds']:>8.1f} "
              f"{r['tasks_per_s']:>8.3f} {median:>13} {ratio:>5.2f}x")
    print(f"largest NAED difference between the runs: {drift:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
