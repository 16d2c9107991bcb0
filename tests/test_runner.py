"""The runner: scoring, failure policy, time-outs, crashes, resume after SIGKILL."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

import fakeplugin
import mibench.reports
from mibench.cli import cli
from mibench.config import RunConfig
from mibench.errors import UserError
from mibench.records import iter_records
from mibench.runner import run_benchmark

TESTS = Path(__file__).parent


def toy_config(tmp_path, methods, **kw):
    kw.setdefault("workers", 1)
    return RunConfig(methods=methods, dataset="toy", out=str(tmp_path / "run"),
                     plugins=["fakeplugin"], **kw)


def records_by(run_dir):
    return {(r.method, r.pair_id, r.seed): r for r in iter_records(run_dir)}


def test_scores_in_process_against_brute_force(tmp_path, monkeypatch):
    """Oracle gives zero error; identity gives the initial error, in native pixels (scale 2)."""
    monkeypatch.setattr(fakeplugin.ToyDataset, "notes", ["2 of 5 pairs lack landmarks"],
                        raising=False)
    result = run_benchmark(toy_config(tmp_path, "oracle,identity", workers=0), progress=False)
    recs = records_by(result.run_dir)
    assert len(recs) == 6 and result.failed == 0
    ds = fakeplugin.load_toy(None)
    for i in range(3):
        pair = ds.load(f"toy-{i}")
        oracle = recs[("oracle", f"toy-{i}", 0)]
        assert oracle.status == "ok" and oracle.metrics["tre_max"] < 1e-6
        np.testing.assert_allclose(oracle.transform["matrix"], fakeplugin.true_matrix(i))
        ident = recs[("identity", f"toy-{i}", 0)]
        expected = 2.0 * np.linalg.norm(pair.moving_landmarks - pair.fixed_landmarks, axis=1)
        np.testing.assert_allclose(ident.landmark_errors, expected)
        assert ident.metrics["naed"] == pytest.approx(expected.mean() / np.hypot(64, 64))
        assert ident.meta == {"group": "a" if i % 2 else "b"}
        assert ident.wall_s is not None and ident.wall_s >= 0
    df = pd.read_csv(result.run_dir / "results.csv")
    assert len(df) == 6 and (result.run_dir / "report.html").is_file()
    manifest = json.loads((result.run_dir / "run.json").read_text())
    assert manifest["config"]["dataset"] == "toy"
    assert {"torch", "numpy", "python"} <= set(manifest["versions"])
    assert manifest["device"]["type"] == "cpu"
    assert manifest["executor"] == {"name": "local", "workers": 0, "worker_devices": ["cpu"]}
    assert manifest["invocations"][-1]["executor"]["name"] == "local"
    assert manifest["dataset_notes"] == ["2 of 5 pairs lack landmarks"]
    assert {r.device for r in recs.values()} == {"cpu"}
    assert {r.info["torch_threads"] for r in recs.values()} == {manifest["threads_per_task"]}


def test_failures_become_records_and_the_run_goes_on(tmp_path):
    cfg = toy_config(tmp_path, "raises,nan,sleeps,crashes,identity", timeout=4.0,
                     dataset_options={"pairs": 1}, method_options={"sleeps": {"seconds": "30"}})
    t0 = time.monotonic()
    result = run_benchmark(cfg, progress=False)
    assert time.monotonic() - t0 < 60
    recs = records_by(result.run_dir)
    assert len(recs) == 5 and result.failed == 4
    ident = recs[("identity", "toy-0", 0)]
    assert ident.status == "ok"
    expect = {"raises": "ValueError: this method always fails",
              "nan": "singular or non-finite transform",
              "sleeps": "timed out after 4 s",
              "crashes": "worker process exited unexpectedly with code 3"}
    for method, error in expect.items():
        rec = recs[(method, "toy-0", 0)]
        assert rec.status == "failed" and rec.error == error, (method, rec.error)
        # Failure policy: scored with the initial error, robustness 0, counted.
        assert rec.scored
        assert rec.landmark_errors == ident.initial_errors
        assert rec.metrics["naed"] == pytest.approx(ident.metrics["naed"])
        assert rec.metrics["robustness"] == 0.0
    assert recs[("sleeps", "toy-0", 0)].wall_s >= 4.0
    df = pd.read_csv(result.run_dir / "results.csv")
    assert set(df["status"]) == {"ok", "failed"} and df["naed"].notna().all()


def test_resume_runs_only_missing_tasks(tmp_path, monkeypatch):
    monkeypatch.setattr(mibench.reports, "build_reports", lambda run_dir, **kw: None)
    cfg = toy_config(tmp_path, "noisy,identity", seeds=[0, 1])
    first = run_benchmark(cfg, progress=False)
    assert first.completed == 12
    before = records_by(first.run_dir)
    victims = sorted((first.run_dir / "records" / "noisy").glob("*.json"))[:3]
    for path in victims:
        path.unlink()
    # A write cut short by a kill leaves a temporary file: it must not count as a record.
    stale = first.run_dir / "records" / "noisy" / ".tmp-killed.part"
    stale.write_text('{"key": "trunc')
    again = run_benchmark(cfg, progress=False)
    assert again.completed == 3 and again.skipped_existing == 9
    assert not stale.exists()
    after = records_by(first.run_dir)
    assert after.keys() == before.keys()
    for key, rec in before.items():
        assert after[key].transform == rec.transform
        assert after[key].landmark_errors == rec.landmark_errors
    # Seeds matter and are reproducible: two seeds differ, the same seed repeats exactly.
    assert before[("noisy", "toy-0", 0)].transform != before[("noisy", "toy-0", 1)].transform
    # A different parameter is a different task: nothing is reused silently.
    changed = toy_config(tmp_path, "noisy", seeds=[0, 1], method_options={"noisy": {"delay": 0.01}})
    assert run_benchmark(changed, progress=False).completed == 6
    # Nor under another NAED normalisation (not in the task key): refused, records untouched.
    other = toy_config(tmp_path, "noisy,identity", seeds=[0, 1], normalisation="max-side")
    with pytest.raises(UserError, match=r"run\.json: .*--naed-norm diagonal"):
        run_benchmark(other, progress=False)
    assert records_by(first.run_dir).keys() == after.keys()


def test_sigkill_midway_then_rerun_completes_identically(tmp_path):
    def cmd(out):
        return [sys.executable, "-m", "mibench.cli", "run", "--dataset", "toy", "-o", "pairs=6",
                "--methods", "noisy", "-O", "delay=0.4", "--plugin", "fakeplugin",
                "--out", str(out), "--workers", "1", "--quiet"]

    env = {**os.environ, "PYTHONPATH": str(TESTS)}
    out = tmp_path / "killed"
    proc = subprocess.Popen(cmd(out), env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if len(list((out / "records").glob("*/*.json"))) >= 2:
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    n_before = len(list((out / "records").glob("*/*.json")))
    assert 2 <= n_before < 6
    subprocess.run(cmd(out), env=env, check=True, capture_output=True)
    ref = tmp_path / "reference"
    subprocess.run(cmd(ref), env=env, check=True, capture_output=True)
    got, want = records_by(out), records_by(ref)
    assert len(list((out / "records").glob("*/*.json"))) == 6
    assert not list((out / "records").glob("*/*.part"))  # no half-written leftovers
    assert got.keys() == want.keys()
    for key in want:
        assert got[key].transform == want[key].transform
        assert got[key].metrics == want[key].metrics
    a = pd.read_csv(out / "results.csv").drop(columns=["wall_s", "device_s"])
    b = pd.read_csv(ref / "results.csv").drop(columns=["wall_s", "device_s"])
    pd.testing.assert_frame_equal(a, b)


def run_cli(*args):
    env = {**os.environ, "PYTHONPATH": str(TESTS)}
    return subprocess.run([sys.executable, "-m", "mibench.cli", *args], capture_output=True,
                          text=True, env=env)


def test_user_error_from_the_installed_command_is_one_line():
    """End to end, through ``python -m mibench.cli``: one line, exit status 2, no traceback."""
    res = run_cli("run", "--methods", "nosuchmethod")
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mibench: error: unknown method 'nosuchmethod'")


@pytest.mark.parametrize("args, message", [
    (["run", "--methods", "nosuchmethod"], "unknown method 'nosuchmethod'"),
    (["run", "--dataset", "nosuchdataset"], "unknown dataset 'nosuchdataset'"),
    (["run", "--dataset", "toy-on-disk", "--plugin", "fakeplugin"], "needs --data-dir"),
    (["run", "--data-dir", "/no/such/dir"], "/no/such/dir: data directory does not exist"),
    (["run", "--methods", "needs-missing", "--plugin", "fakeplugin"], "pip install"),
    (["run", "-O", "identity.bogus=1"], "has no option 'bogus'"),
    (["run", "-o", "size"], "-o expects KEY=VALUE"),
    (["report", "/no/such/run"], "not a run directory"),
    (["estimate", "-e", "identity", "a.png", "b.png"], "unknown estimator 'identity'"),
])
def test_user_errors_are_one_line(args, message):
    # In-process (click's runner): the same code path as the command, without a process start.
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 2, (res.output, res.exception)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], res.stderr
    assert "Traceback" not in res.stderr


def test_unsafe_pair_ids_refused(tmp_path, monkeypatch):
    from mibench.errors import UserError

    monkeypatch.setattr(fakeplugin.ToyDataset, "pairs",
                        lambda self: [fakeplugin.PairInfo("../escape")])
    with pytest.raises(UserError, match="pair id '../escape'"):
        run_benchmark(toy_config(tmp_path, "identity"), progress=False)


def test_a_methods_warm_up_runs_before_the_clock_starts(tmp_path, monkeypatch):
    monkeypatch.delenv("FAKEPLUGIN_WARMED_UP", raising=False)
    result = run_benchmark(toy_config(tmp_path, "warmed", workers=0), progress=False)
    recs = list(iter_records(result.run_dir))
    assert len(recs) == 3 and all(r.status == "ok" for r in recs)
    # The 1 s warm-up (in the first task's process) is not in any registration time.
    assert max(r.wall_s for r in recs) < 0.5
