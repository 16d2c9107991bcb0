"""The report's timing section: what each method cost, and which of the numbers to trust.

Per method the median wall time, CPU time (the worker's user + system seconds, all threads) and,
on CUDA, device time, with the peak memory (:func:`~mibench.reports.results.timing_frame`); then
in words which figure to trust and how many tasks ran while other processes competed for the
CPUs. Records written before these were measured have no CPU time, memory or contention: the
section says so rather than showing zeros. Plain text only (the template lays it out).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from mibench.reports.analysis import RunAnalysis
from mibench.reports.formatting import fmt, plural
from mibench.reports.results import timing_frame
from mibench.reports.run_details import concurrency, thread_counts, threads_text

#: (timing_frame column, heading, significant digits); a column no method has a value in is
#: left out.
TIMING_TABLE = (
    ("n_timed", "tasks run", 4), ("wall_median_s", "median wall [s]", 3),
    ("cpu_median_s", "median CPU [s]", 3), ("cpu_per_wall", "CPU / wall", 2),
    ("device_median_s", "median device [s]", 3), ("rss_median_mb", "median peak RSS [MiB]", 4),
    ("rss_max_mb", "max peak RSS [MiB]", 4), ("gpu_max_mb", "max peak GPU [MiB]", 4),
)


#: What spinning OpenMP threads do to a contended task with several threads (measured:
#: docs/performance.md, "Timings on a shared machine").
SPIN_TEXT = ("These tasks computed with {threads} threads each: torch's waiting threads spin "
             "and hold a core their sibling needs, so their CPU time is inflated too (up to "
             "15x measured). For times that hold on a shared machine, run one thread per task "
             "(--workers set to the number of cores) or set OMP_WAIT_POLICY=PASSIVE.")


def contention_text(frame: pd.DataFrame, results: pd.DataFrame | None = None) -> str:
    """How many tasks ran while other processes competed for the CPUs, and what that does to
    their times (``results``, the per-task rows, tell with how many threads they ran); says so
    when the records do not tell."""
    known = int(frame["n_contention_known"].sum()) if len(frame) else 0
    if known == 0:
        return ("The records do not say whether other processes competed for the CPUs "
                "(written before this was measured): wall times may include waiting for them.")
    k = int(frame["n_contended"].sum())
    timed = int(frame["n_timed"].sum()) if "n_timed" in frame else known
    unjudged = (f" ({plural(timed - known, 'other task')} took too little time to judge)"
                if timed > known else "")
    if k == 0:
        return (f"None of the {plural(known, 'task')} ran while other processes competed for "
                f"the CPUs{unjudged}.")
    text = (f"{k} of {known} tasks ran while other processes competed for the CPUs: their wall "
            "times are inflated, CPU time is less affected. They are drawn as hollow markers "
            "in the timing figure.")
    threads = _contended_threads(results)
    return f"{text} {SPIN_TEXT.format(threads=threads)}" if threads > 1 else text


def _contended_threads(results: pd.DataFrame | None) -> int:
    """The most torch threads a contended task ran with (0 when the rows do not say)."""
    if results is None or not len(results) or not {"contended", "torch_threads"} <= set(results):
        return 0
    threads = results.loc[results["contended"] == True, "torch_threads"].dropna()  # noqa: E712
    return int(threads.max()) if len(threads) else 0


def load_text(frame: pd.DataFrame, results: pd.DataFrame) -> str:
    """``"Other processes kept on average 1.3 of the machine's 8 CPUs busy."``; empty when the
    records do not say."""
    load = results["load_cpus"].dropna() if "load_cpus" in results else pd.Series([])
    if load.empty:
        return ""
    cpus = results["cpus"].dropna() if "cpus" in results else pd.Series([])
    of = f" of the machine's {fmt(cpus.max(), 3)} CPUs" if len(cpus) else " CPUs"
    return (f"Other processes kept on average {fmt(load.mean(), 2)}{of} busy while the tasks "
            "ran.")


def trust_text(frame: pd.DataFrame) -> str:
    """Which time to read: device time on CUDA, CPU time on the CPU, wall time only when the
    records have nothing else."""
    has = {c: len(frame) and frame[c].notna().any() for c in ("cpu_median_s", "device_median_s")}
    if has["device_median_s"]:
        return ("Trust the device time for tasks that ran on CUDA: the CUDA-synchronised time "
                "of the registration, which other processes on the CPUs barely change; wall "
                "time adds the host's share and any waiting.")
    if has["cpu_median_s"]:
        return ("On the CPU, trust the CPU time: the seconds of CPU the worker used (user + "
                "system, all threads), which competing processes change little; wall time also "
                "counts the time spent waiting for CPUs that others held. CPU / wall is about "
                "how many cores a task kept busy.")
    return ("The records carry only wall time (written before CPU time was measured): other "
            "processes competing for the CPUs inflate it, so compare methods run side by side "
            "with care.")


def timing_view(a: RunAnalysis, figures: list[dict[str, Any]]) -> dict[str, Any]:
    """The timing section: the per-method table, which figure to trust, contention, how the
    tasks shared the machine, and the timing ``figures``."""
    frame = timing_frame(a.results, a.order)
    columns = [c for c in TIMING_TABLE if c[0] == "n_timed"
               or (len(frame) and frame[c[0]].notna().any())]
    rows = [(r["method"], [fmt(r[c], sig) for c, _, sig in columns])
            for _, r in frame.iterrows()]
    contended = [(r["method"], f"{int(r['n_contended'])} of {int(r['n_contention_known'])}")
                 for _, r in frame.iterrows() if r["n_contention_known"]]
    if contended and len(rows) == len(contended):
        columns = [*columns, ("n_contended", "contended", 0)]
        rows = [(m, [*cells, text]) for (m, cells), (_, text) in zip(rows, contended,
                                                                     strict=True)]
    concurrent, varied = concurrency(a)
    counts = thread_counts(a)
    reused = int(a.results["reused_seed"].notna().sum()) if len(a.results) and \
        "reused_seed" in a.results else 0
    return {"concurrent": concurrent, "varied": varied,
            "threads": next(iter(counts)) if len(counts) == 1 else None,
            "mixed_threads": threads_text(counts) if len(counts) > 1 else "",
            "header": ["method"] + [h for _, h, _ in columns], "rows": rows,
            "trust": trust_text(frame), "contention": contention_text(frame, a.results),
            "load": load_text(frame, a.results),
            "reused": (f"{plural(reused, 'task')} reuse the result of a deterministic method's "
                       "one run for another seed: each is timed once." if reused else ""),
            "figures": figures}


__all__ = ["contention_text", "load_text", "timing_view", "trust_text"]

