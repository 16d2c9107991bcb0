"""A benchmark that other processes compete with for part of its run: the tasks they slowed are
flagged, and the CPU time per method agrees with a run on a quiet machine."""

import statistics

import pytest
from helpers.load import competitors

from mibench.machine import usable_cpus
from mibench.records import iter_records
from mibench.runner import run_benchmark
from mibench.settings import RunSettings
from mibench.usage import busy_cpu_s

METHODS = "computes,computes[work=6000000]"


def _run(out):
    settings = RunSettings(methods=METHODS, dataset="toy", dataset_options={"pairs": 4},
                           plugins=["helpers.fakeplugin"], workers=1, out=str(out))
    result = run_benchmark(settings, progress=False, log=lambda msg: None)
    return result, list(iter_records(result.run_dir))


def _cpu_medians(records):
    by_method = {}
    for r in records:
        by_method.setdefault(r.task.method, []).append(r.cpu_s)
    return {m: statistics.median(v) for m, v in by_method.items()}


@pytest.mark.skipif(busy_cpu_s() is None, reason="no per-CPU busy counters here")
def test_busy_processes_are_flagged_and_cpu_time_holds(tmp_path):
    quiet, quiet_records = _run(tmp_path / "quiet")
    if sum(bool(r.contended) for r in quiet_records) > len(quiet_records) // 4:
        pytest.skip("this machine is busy already: no quiet run to compare with")
    # One competitor per CPU for about the first half of the run.
    with competitors(usable_cpus(), 2.0 + 0.5 * quiet.tasks_s):
        busy, busy_records = _run(tmp_path / "busy")
    flagged = [r for r in busy_records if r.contended]
    assert 2 <= len(flagged) < len(busy_records)
    assert all(r.load_cpus > 0.5 for r in flagged)
    # CPU time measures the method, not the machine: per-method medians agree within 20 %,
    # while the contended tasks' wall times exceed their CPU times.
    q, b = _cpu_medians(quiet_records), _cpu_medians(busy_records)
    assert q.keys() == b.keys() == {"computes", "computes[work=6000000]"}
    for method in q:
        assert b[method] == pytest.approx(q[method], rel=0.2), method
    assert statistics.median(r.wall_s / r.cpu_s for r in flagged) > 1.3
    # The report says how many tasks were contended.
    page = busy.report.html.read_text()
    known = sum(r.contended is not None for r in busy_records)
    assert f"{len(flagged)} of {known} tasks ran while other processes competed for the CPUs" \
        in page
