"""The Dask executor against the local one: same records, same run directory, same resume and
failure handling. Uses Dask ``LocalCluster`` s of two worker processes with one thread each."""

import json

import numpy as np
import pytest

from mibench.plan import plan_run
from mibench.records import iter_records
from mibench.registry import Registry
from mibench.runner import run_benchmark
from mibench.settings import RunSettings

distributed = pytest.importorskip("distributed")
dask = pytest.importorskip("dask")


@pytest.fixture(scope="module")
def cluster():
    """A cluster that the tests reach by address, as a dask-jobqueue one would be (one worker:
    each worker process costs a torch import)."""
    with dask.config.set({"distributed.worker.daemon": False}):
        cl = distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                                      dashboard_address=None)
    yield cl
    cl.close()


def by_task(run_dir):
    return {(r.task.method, r.task.pair_id, r.task.seed): r for r in iter_records(run_dir)}


def assert_same_results(got, want):
    assert got.keys() == want.keys()
    for k, w in want.items():
        g = got[k]
        assert (g.key, g.status, g.error, g.scored) == (w.key, w.status, w.error, w.scored), k
        assert (g.transform is None) == (w.transform is None), k
        if w.transform is not None:
            assert g.transform["type"] == w.transform["type"]
            np.testing.assert_allclose(g.transform["matrix"], w.transform["matrix"],
                                       rtol=0, atol=1e-6, err_msg=str(k))
        np.testing.assert_allclose(g.landmark_errors, w.landmark_errors, rtol=0, atol=1e-5)
        np.testing.assert_allclose(g.initial_errors, w.initial_errors, rtol=0, atol=1e-12)


def test_dask_local_cluster_gives_the_records_of_the_local_executor(tmp_path, no_reports):
    common = dict(methods="identity,ncc", dataset="toy", plugins=["helpers.fakeplugin"],
                  device="cpu",
                  workers=2, dataset_options={"pairs": 3}, method_options={"*": {
                      "iterations": "10"}})
    local = RunSettings(out=str(tmp_path / "local"), **common)
    on_dask = RunSettings(out=str(tmp_path / "dask"), executor="dask", **common)
    # Neither the executor nor the scheduler is part of the run's identity.
    reg = Registry(["helpers.fakeplugin"])
    p_local = plan_run(reg, RunSettings(**common))
    p_dask = plan_run(reg, RunSettings(executor="dask", scheduler="tcp://x:1", **common))
    assert p_local.run_dir == p_dask.run_dir
    assert [t.key for t in p_local.tasks] == [t.key for t in p_dask.tasks]

    a = run_benchmark(local, progress=False)
    b = run_benchmark(on_dask, progress=False)
    assert a.completed == b.completed == 6 and a.failed == b.failed == 0
    got, want = by_task(b.run_dir), by_task(a.run_dir)
    assert_same_results(got, want)
    ncc = [r for r in want.values() if r.task.method == "ncc"]
    assert any(r.transform["matrix"] != np.eye(3).tolist() for r in ncc)  # ncc did move
    assert all(r.device == "cpu" and r.wall_s > 0 for r in got.values())
    # same torch threads per task on both executors (CPU results may depend on it)
    assert {r.info["torch_threads"] for r in got.values()} == {
        r.info["torch_threads"] for r in want.values()}
    man = json.loads((b.run_dir / "run.json").read_text())
    assert man["executor"]["name"] == "dask" and man["executor"]["scheduler"] == "LocalCluster"
    assert len(man["executor"]["workers"]) == 2 and man["concurrent_tasks"] == 2
    assert {w["device"] for w in man["executor"]["workers"].values()} == {"cpu"}
    assert man["config"]["executor"] == "dask"
    assert json.loads((a.run_dir / "run.json").read_text())["executor"]["name"] == "local"


def test_dask_by_address_resumes_a_local_run(tmp_path, cluster, no_reports):
    cfg = RunSettings(methods="noisy,identity", dataset="toy", plugins=["helpers.fakeplugin"],
                    device="cpu", seeds=[0, 1], out=str(tmp_path / "run"))
    first = run_benchmark(cfg, progress=False)
    assert first.completed == 9  # 3 pairs x 2 seeds of noisy; identity ignores the seed: 3
    records = first.run_dir / "records"
    before = by_task(first.run_dir)
    victims = sorted((records / "noisy").glob("*.json"))[:3]
    for path in victims:
        path.unlink()
    kept = {p: p.stat().st_mtime_ns for p in records.glob("*/*.json")}
    stale = records / "identity" / ".tmp-killed.part"  # a write cut short by a kill
    stale.write_text('{"key": "trunc')

    again = run_benchmark(RunSettings(**{**cfg.__dict__, "executor": "dask",
                                       "scheduler": cluster.scheduler_address}),
                          progress=False)
    assert again.run_dir == first.run_dir
    assert again.completed == 3 and again.skipped_existing == 6
    assert not stale.exists()
    assert sorted(records.glob("*/*.json")) == sorted([*kept, *victims])
    assert all(p.stat().st_mtime_ns == t for p, t in kept.items())  # only the missing ran
    assert_same_results(by_task(first.run_dir), before)  # seeded: the same numbers again
    man = json.loads((first.run_dir / "run.json").read_text())
    runs = [i["executor"] for i in man["invocations"]]
    assert [r["name"] for r in runs] == ["local", "dask"]
    assert runs[1]["scheduler"] == cluster.scheduler_address
    # The workers' task processes were stopped at the end of the run (no CUDA context left).
    client = distributed.Client(cluster)
    try:
        left = client.run(lambda: len(__import__("multiprocessing").active_children()))
    finally:
        client.close()
    assert left and set(left.values()) == {0}


def test_dask_enforces_time_outs_and_survives_crashes(tmp_path, cluster, no_reports):
    """The failures that need the task's own process (time-out, hard crash), as local runs
    record them (``test_runner.py``): failed, scored with the initial error, the run goes on."""
    cfg = RunSettings(methods="sleeps,crashes,identity", dataset="toy",
                    plugins=["helpers.fakeplugin"],
                    device="cpu", timeout=2.0, dataset_options={"pairs": 1}, executor="dask",
                    method_options={"sleeps": {"seconds": "30"}},
                    scheduler=cluster.scheduler_address, out=str(tmp_path / "run"))
    result = run_benchmark(cfg, progress=False)
    recs = by_task(result.run_dir)
    assert result.completed == 3 and result.failed == 2
    ident = recs[("identity", "toy-0", 0)]
    assert ident.status == "ok"
    expect = {"sleeps": "timed out after 2 s",
              "crashes": "worker process exited unexpectedly with code 3"}
    for method, error in expect.items():
        rec = recs[(method, "toy-0", 0)]
        assert (rec.status, rec.error) == ("failed", error)
        assert rec.scored and rec.landmark_errors == ident.initial_errors
        assert rec.metrics["robustness"] == 0.0
    assert recs[("sleeps", "toy-0", 0)].wall_s >= 2.0


def test_unknown_executor_and_unreachable_scheduler_are_user_errors(tmp_path):
    from mibench.errors import UserError

    with pytest.raises(UserError, match=r"executor \(--executor\) must be one of local, dask"):
        RunSettings(methods="identity", executor="ray", out=str(tmp_path))
