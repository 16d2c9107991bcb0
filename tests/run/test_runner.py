"""The runner: scoring, failure policy, time-outs, crashes, resume after SIGKILL."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from helpers import TESTS, fakeplugin

import mibench.reports
from mibench.cli import cli
from mibench.errors import UserError
from mibench.records import iter_records
from mibench.registration import USAGE_FIELDS
from mibench.runner import run_benchmark
from mibench.settings import RunSettings, settings_from


def toy_config(tmp_path, methods, **kw):
    kw.setdefault("workers", 1)
    return RunSettings(methods=methods, dataset="toy", out=str(tmp_path / "run"),
                     plugins=["helpers.fakeplugin"], **kw)


def records_by(run_dir):
    return {(r.task.method, r.task.pair_id, r.task.seed): r for r in iter_records(run_dir)}


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
    # What each task used is measured (no load judged for tasks this short: None).
    assert all(r.cpu_s is not None and r.cpu_s >= 0 and r.peak_rss_mb > 0 for r in recs.values())
    assert all(r.cpus >= 1 and r.peak_gpu_mb is None for r in recs.values())
    # The run's span: started <= finished, its duration the invocation's.
    inv = manifest["invocations"][-1]
    assert manifest["started"] == inv["started"] <= manifest["finished"] == inv["finished"]
    assert manifest["duration_s"] == inv["duration_s"] >= result.tasks_s > 0


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
    # noisy: 3 pairs x 2 seeds; identity ignores the seed: run once per pair, with seed 0.
    assert first.completed == 9
    before = records_by(first.run_dir)
    assert {seed for method, _, seed in before if method == "identity"} == {0}
    # Each record says which OpenMP wait policy its worker ran under (the user's, if set): it
    # decides what competing processes do to a multi-threaded task's times.
    policy = os.environ.get("OMP_WAIT_POLICY")
    assert {r.info["omp_wait_policy"] for r in before.values()} == {policy}
    victims = sorted((first.run_dir / "records" / "noisy").glob("*.json"))[:3]
    for path in victims:
        path.unlink()
    # A write cut short by a kill leaves a temporary file: it must not count as a record.
    stale = first.run_dir / "records" / "noisy" / ".tmp-killed.part"
    stale.write_text('{"key": "trunc')
    again = run_benchmark(cfg, progress=False)
    assert again.completed == 3 and again.skipped_existing == 6
    assert not stale.exists()
    after = records_by(first.run_dir)
    assert after.keys() == before.keys()
    for key, rec in before.items():
        assert after[key].transform == rec.transform
        assert after[key].landmark_errors == rec.landmark_errors
    # Seeds matter and are reproducible: two seeds differ, the same seed repeats exactly.
    assert before[("noisy", "toy-0", 0)].transform != before[("noisy", "toy-0", 1)].transform
    # A different parameter is a different task: nothing is reused silently, and the run
    # directory is not made to mix two configurations of one method (nor of the dataset, nor
    # two NAED normalisations): refused with the option named, the records untouched.
    for changed, what in (
            (dict(method_options={"noisy": {"delay": 0.01}}), r"method 'noisy' .*delay=0\.0 "
                                                               r"there, 0\.01 now"),
            (dict(dataset_options={"pairs": 4}), r"dataset options pairs=3 there, 4 now"),
            (dict(naed_norm="max-side"), r"--naed-norm diagonal, this run asks for max-side")):
        other = toy_config(tmp_path, "noisy,identity", seeds=[0, 1], **changed)
        with pytest.raises(UserError, match=what):
            run_benchmark(other, progress=False)
    assert records_by(first.run_dir) == after
    # Another method may join the directory.
    assert run_benchmark(toy_config(tmp_path, "oracle", seeds=[0]), progress=False).completed == 3


def test_damaged_record_is_set_aside_and_its_task_runs_again(tmp_path, monkeypatch):
    monkeypatch.setattr(mibench.reports, "build_reports", lambda run_dir, **kw: None)
    cfg = toy_config(tmp_path, "identity", workers=0)
    first = run_benchmark(cfg, progress=False)
    paths = sorted((first.run_dir / "records" / "identity").glob("*.json"))
    paths[0].write_text(paths[0].read_text()[:100])  # cut short
    paths[1].write_text("[1, 2]")  # valid JSON, not a record
    manifest = first.run_dir / "run.json"
    history = manifest.read_text()
    manifest.write_text(history[:100])
    with pytest.raises(UserError, match=r"\.json: damaged record"):
        list(iter_records(first.run_dir))  # what `mibench report` sees: one line, the file
    logged = []
    again = run_benchmark(cfg, progress=False, log=logged.append)
    assert again.completed == 2 and again.skipped_existing == 1
    assert sum("damaged record" in line for line in logged) == 2
    assert len(list((first.run_dir / "records" / "identity").glob("*.json.damaged"))) == 2
    assert len(list(iter_records(first.run_dir))) == 3
    # The damaged manifest is kept beside the new one, with the warning.
    assert (first.run_dir / "run.json.damaged").read_text() == history[:100]
    assert json.loads(manifest.read_text())["config"]["dataset"] == "toy"
    assert sum("damaged manifest" in line for line in logged) == 1


def test_failures_are_kept_on_resume_unless_retry_failed(tmp_path, monkeypatch):
    monkeypatch.setattr(mibench.reports, "build_reports", lambda run_dir, **kw: None)
    cfg = toy_config(tmp_path, "raises,identity", workers=0, dataset_options={"pairs": 2})
    logged = []
    first = run_benchmark(cfg, progress=False, log=logged.append)
    assert first.failed == 2
    # Every task of `raises` failed: said once, with the first error.
    assert [line for line in logged if "every task" in line] == [
        "warning: every task of method 'raises' failed (2); the first error: "
        "ValueError: this method always fails"]
    logged.clear()
    again = run_benchmark(cfg, progress=False, log=logged.append)
    assert again.completed == 0 and again.skipped_existing == 4
    assert any("2 of them failed: --retry-failed" in line for line in logged)
    retried = run_benchmark(toy_config(tmp_path, "raises,identity", workers=0, retry_failed=True,
                                       dataset_options={"pairs": 2}), progress=False)
    assert retried.completed == 2 and retried.skipped_existing == 2
    assert len(records_by(first.run_dir)) == 4


def test_sigkill_midway_then_rerun_completes_identically(tmp_path):
    def cmd(out):
        return [sys.executable, "-m", "mibench.cli", "run", "--dataset", "toy", "-o", "pairs=6",
                "--methods", "noisy,identity", "-O", "delay=0.4", "--plugin", "helpers.fakeplugin",
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
    assert 2 <= n_before < 12
    # Pairs x methods interleaved: the first records are of both methods, not all of one.
    assert {p.parent.name for p in (out / "records").glob("*/*.json")} == {"noisy", "identity"}
    kept = {p: p.stat().st_mtime_ns for p in (out / "records").glob("*/*.json")}
    rerun = subprocess.run(cmd(out), env=env, check=True, capture_output=True, text=True)
    assert f"{n_before} of 12 tasks already have records" in rerun.stderr
    assert {p: p.stat().st_mtime_ns for p in kept} == kept  # only the missing ones ran
    ref = tmp_path / "reference"
    subprocess.run(cmd(ref), env=env, check=True, capture_output=True)
    got, want = records_by(out), records_by(ref)
    assert len(list((out / "records").glob("*/*.json"))) == 12
    assert not list((out / "records").glob("*/*.part"))  # no half-written leftovers
    assert got.keys() == want.keys()
    for key in want:
        assert got[key].transform == want[key].transform
        assert got[key].metrics == want[key].metrics
    a = pd.read_csv(out / "results.csv").drop(columns=list(USAGE_FIELDS), errors="ignore")
    b = pd.read_csv(ref / "results.csv").drop(columns=list(USAGE_FIELDS), errors="ignore")
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
    # Click's own usage errors too (a bad flag value, a missing argument).
    for args, message in ((["run", "--naed-norm", "bogus"], "Invalid value for '--naed-norm'"),
                          (["estimate", "-e", "ncc"], "Missing argument 'FIXED_IMAGE'")):
        res = run_cli(*args)
        assert res.returncode == 2, res.stderr
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"mibench: error: {message}"), lines
        assert lines[0].endswith(f" {args[0]} --help)")


@pytest.mark.parametrize("args, message", [
    (["run", "--methods", "nosuchmethod"], "unknown method 'nosuchmethod'"),
    (["run", "--dataset", "nosuchdataset"], "unknown dataset 'nosuchdataset'"),
    (["run", "--dataset", "toy-on-disk", "--plugin", "helpers.fakeplugin"], "needs --data-dir"),
    (["run", "--data-dir", "/no/such/dir"], "/no/such/dir: data directory does not exist"),
    (["run", "--methods", "needs-missing", "--plugin", "helpers.fakeplugin"], "pip install"),
    (["run", "-O", "identity.bogus=1"], "has no option 'bogus'"),
    (["run", "-o", "size"], "-o expects KEY=VALUE"),
    (["report", "/no/such/run"], "not a run directory"),
    (["estimate", "-e", "identity", "a.png", "b.png"], "unknown estimator 'identity'"),
    (["run", "--seed", "3-1"], "--seed 3-1: the range is reversed (write 1-3)"),
    (["run", "--seed", "0-100000000"], "more than 10000 seeds"),
    (["run", "--seed", "99999999999999999999"], "seeds must lie in 0 .. 4294967295"),
])
def test_user_errors_are_one_line(args, message):
    # In-process (click's runner): the same code path as the command, without a process start.
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 2, (res.output, res.exception)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], res.stderr
    assert "Traceback" not in res.stderr


@pytest.mark.parametrize("content, message", [
    ("methods = 5", "methods must be a string or a list of method names, got 5"),
    ('seeds = "abc"', "seeds must be an integer, a list of integers or a text like 0,1,2"),
    ("dataset_options = 5", "dataset_options must be a table"),
    ("method_options = { ncc = [1] }", "method_options must be a table"),
    ('timeout = "x"', "timeout must be a number of seconds"),
    ('limit = "x"', "limit must be an integer"),
    ('workers = "abc"', "workers must be an integer"),
    ("device = 3", "device must be a string"),
    ("workers = -3", "workers must be >= 0, got -3"),
    ("seed = 3", "unknown config keys: seed (did you mean seeds?)"),
    ("colour = 3", "unknown config keys: colour"),
])
def test_config_file_values_of_the_wrong_type_are_one_line(tmp_path, content, message):
    config = tmp_path / "bench.toml"
    config.write_text(content + "\n")
    res = CliRunner().invoke(cli, ["run", "--config", str(config)])
    assert res.exit_code == 2, (res.output, res.exception)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], res.stderr
    if "--workers" not in message:  # checked with the flags, after the file is read
        assert str(config) in lines[0]


def test_option_errors_from_a_config_file_name_the_file(tmp_path):
    config = tmp_path / "bench.toml"
    config.write_text('methods = ["identity", "ncc"]\ndataset_options = { pairs = "abc" }\n')
    res = CliRunner().invoke(cli, ["run", "--config", str(config)])
    assert res.exit_code == 2, (res.output, res.exception)
    assert res.stderr.strip().endswith(f"option 'pairs' expects an int, got 'abc' (set in "
                                       f"{config})")
    config.write_text('methods = ["identity", "ncc"]\nmethod_options = { ncc = { lr = -1 } }\n')
    res = CliRunner().invoke(cli, ["run", "--config", str(config), "-o", "pairs=1"])
    assert res.exit_code == 2 and f"'lr' must be > 0, got -1.0 (set in {config})" in res.stderr
    # A flag that overrides the file's value is not blamed on the file.
    res = CliRunner().invoke(cli, ["run", "--config", str(config), "-O", "ncc.lr=-2"])
    assert res.exit_code == 2 and "set in" not in res.stderr and "got -2.0" in res.stderr


def test_config_file_shared_method_options_and_single_seed(tmp_path):
    config = tmp_path / "bench.json"
    config.write_text(json.dumps({"seeds": 3, "method_options": {
        "iterations": 5, "ncc": {"lr": 0.1}, "*": {"levels": 2}}}))
    settings = settings_from(config)
    assert settings.seeds == (3,)
    assert settings.method_options == {"ncc": {"lr": 0.1}, "*": {"levels": 2, "iterations": 5}}
    config.write_text("[1, 2]")
    with pytest.raises(UserError, match="expected a table of settings"):
        settings_from(config)


def test_files_and_folders_in_the_wrong_place_are_one_line(tmp_path):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("x")
    (tmp_path / "empty" / "records").mkdir(parents=True)
    for args, message in (
            (["run", "--methods", "identity", "-o", "pairs=1", "-o", "size=32", "--out",
              str(a_file)], "is a file; the run directory (--out) must be a directory"),
            (["run", "--data-dir", str(a_file)], "data directory is a file, not a directory"),
            (["report", str(tmp_path / "empty")], "no records to report on"),
            (["estimate", "-e", "ncc", str(tmp_path), str(a_file)],
             "image path is a folder, not a file")):
        res = CliRunner().invoke(cli, args)
        assert res.exit_code == 2, (args, res.output, res.exception)
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], res.stderr


def test_estimate_turns_the_estimators_own_option_check_into_one_line(tmp_path):
    from skimage import io

    rng = np.random.default_rng(0)
    for name in ("a.png", "b.png"):
        io.imsave(tmp_path / name, (rng.random((16, 16)) * 255).astype(np.uint8))
    res = CliRunner().invoke(cli, ["estimate", "-e", "jhmi", "-o", "range=fixed", "-o", "lo=1",
                                   "-o", "hi=0", str(tmp_path / "a.png"), str(tmp_path / "b.png")])
    assert res.exit_code == 2, (res.output, res.exception)
    assert res.stderr.startswith("mibench: error: estimator 'jhmi': ")
    assert len(res.stderr.strip().splitlines()) == 1


def test_a_pair_that_breaks_the_contract_fails_its_tasks_only(tmp_path, monkeypatch):
    """A dataset plugin's slip (channels-first or 0..255 images, (K, 3) or NaN landmarks, a
    mask of another size) fails that pair's tasks with the problem named; the run goes on."""
    import dataclasses

    original = fakeplugin.ToyDataset.load
    breaks = {
        "toy-0": lambda p: dataclasses.replace(p, fixed_landmarks=np.ones((3, 3))),
        "toy-1": lambda p: dataclasses.replace(p, moving=np.stack([p.moving] * 3)),
        "toy-2": lambda p: dataclasses.replace(p, fixed=p.fixed * 255),
        "toy-3": lambda p: dataclasses.replace(p, moving_mask=np.ones((4, 4), bool)),
        "toy-4": lambda p: dataclasses.replace(p, moving_landmarks=p.moving_landmarks * np.nan),
    }
    monkeypatch.setattr(fakeplugin.ToyDataset, "load",
                        lambda self, pid: breaks.get(pid, lambda p: p)(original(self, pid)))
    cfg = toy_config(tmp_path, "identity,oracle", workers=0, dataset_options={"pairs": 6})
    result = run_benchmark(cfg, progress=False)
    recs = records_by(result.run_dir)
    assert len(recs) == 12 and result.failed == 10
    expect = {"toy-0": "fixed landmarks have shape (3, 3), expected (K, 2)",
              "toy-1": "moving image has shape (3, 32, 32), expected (H, W) or (H, W, C<=4) "
                       "(it looks channels-first)",
              "toy-2": "fixed image has values in [",
              "toy-3": "moving mask has shape (4, 4), its image (32, 32)",
              "toy-4": "moving landmarks have NaN or infinite coordinates"}
    for pid, message in expect.items():
        for method in ("identity", "oracle"):
            rec = recs[(method, pid, 0)]
            assert rec.status == "failed" and not rec.scored
            assert rec.error.startswith(f"loading pair failed: ValueError: pair '{pid}': ")
            assert message in rec.error, rec.error
    assert recs[("oracle", "toy-5", 0)].status == "ok"
    assert (result.run_dir / "report.html").is_file()


def test_check_pair_accepts_float64_and_01_masks():
    from mibench.pairs import Pair, check_pair

    img = np.linspace(0, 1, 64).reshape(8, 8)
    pair = check_pair(Pair("a", img, img, fixed_mask=np.ones((8, 8), np.uint8)), "a")
    assert pair.fixed.dtype == np.float32 and pair.fixed_mask.dtype == bool
    with pytest.raises(ValueError, match="returned the pair 'a'"):
        check_pair(pair, "b")
    with pytest.raises(ValueError, match=r"3 fixed and 2 moving landmarks"):
        check_pair(Pair("a", img, img, np.zeros((3, 2)), np.zeros((2, 2))), "a")


def test_dataset_factory_value_errors_and_odd_pairs_are_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(fakeplugin.ToyDataset, "pairs", lambda self: ["toy-0"])
    with pytest.raises(UserError, match=r"^dataset 'toy': pairs\(\) must give PairInfo objects, "
                                        r"got a str \('toy-0'\)$"):
        run_benchmark(toy_config(tmp_path, "identity"), progress=False)

    def refuse(self, n, size):
        raise ValueError("size must be even")

    monkeypatch.setattr(fakeplugin.ToyDataset, "__init__", refuse)
    with pytest.raises(UserError, match=r"^dataset 'toy': size must be even$"):
        run_benchmark(toy_config(tmp_path, "identity"), progress=False)


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


@pytest.mark.parametrize("timeout", [float("inf"), 1e300])
def test_an_infinite_or_huge_timeout_means_no_limit(tmp_path, no_reports, timeout):
    """`--timeout inf` (or `timeout = inf` in a TOML file, or just a very large number) must not
    crash the worker pool's wait with an OverflowError."""
    cfg = RunSettings(methods="identity", dataset="toy", out=str(tmp_path / "run"),
                      plugins=["helpers.fakeplugin"], workers=1, timeout=timeout,
                      dataset_options={"pairs": 1})
    result = run_benchmark(cfg, progress=False)
    assert result.completed == 1 and result.failed == 0


def test_ctrl_c_stops_a_run_with_workers_in_one_message(tmp_path):
    """SIGINT to the process group, as a terminal's Ctrl-C sends it: the driver says it was
    interrupted and exits with 130; the workers print no traceback of their own."""
    cmd = [sys.executable, "-m", "mibench.cli", "run", "--dataset", "toy", "-o", "pairs=2",
           "--methods", "sleeps", "-O", "seconds=60", "--plugin", "helpers.fakeplugin",
           "--out", str(tmp_path / "run"), "--workers", "2", "--quiet"]
    marks = tmp_path / "marks"
    marks.mkdir()
    env = {**os.environ, "PYTHONPATH": str(TESTS), "FAKEPLUGIN_MARK": str(marks)}
    proc = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while len(list(marks.iterdir())) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)  # until both workers are inside their tasks
        assert len(list(marks.iterdir())) == 2
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert "interrupted" in err


def test_the_run_span_sums_invocations_and_reads_old_manifests():
    from mibench.manifest import run_span

    old = {"at": "2026-01-01T00:00:00+00:00"}  # written before invocations had a span
    first = {"at": "x", "started": "2026-01-02T00:00:00+00:00",
             "finished": "2026-01-02T00:10:00+00:00", "duration_s": 600.0}
    second = {"started": "2026-01-03T00:00:00+00:00", "finished": "2026-01-03T00:01:00+00:00",
              "duration_s": 60.5}
    assert run_span([first, second]) == {"started": first["started"],
                                         "finished": second["finished"], "duration_s": 660.5}
    assert run_span([old, second])["started"] == old["at"]
    assert run_span([old]) == {"started": old["at"], "finished": None, "duration_s": None}
    assert run_span([]) == {"started": None, "finished": None, "duration_s": None}
