"""Method variants: one method under several option sets in one run (``nmi[bins=64]``)."""

import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
from click.testing import CliRunner
from helpers import TESTS

from mibench.cli import cli
from mibench.errors import UserError
from mibench.plan import plan_run
from mibench.records import iter_records
from mibench.registry import Registry
from mibench.settings import RunSettings, settings_from
from mibench.variants import base_name, parse_variant, split_methods, variant_name

VARIANTS = "noisy,noisy[delay=0.3]"


def test_a_comma_list_keeps_the_commas_of_a_variant():
    assert split_methods("nmi, nmi[bins=64,kernel=linear] ,drmime") == (
        "nmi", "nmi[bins=64,kernel=linear]", "drmime")
    assert parse_variant(" NMI[ bins = 64 ,kernel=Linear]") == (
        "nmi", {"bins": "64", "kernel": "Linear"})
    assert parse_variant("ncc") == ("ncc", {})
    assert base_name("nmi[bins=64]") == "nmi" and base_name("sitk-mmi") == "sitk-mmi"


def test_a_variant_is_named_by_its_options_that_differ_from_the_defaults():
    defaults = {"bins": 32, "lr": 0.02, "kernel": "cubic", "flag": False}
    assert variant_name("nmi", {"bins": 32}, defaults) == "nmi"
    assert variant_name("nmi", {"lr": 0.1, "bins": 64}, defaults) == "nmi[bins=64,lr=0.1]"
    assert variant_name("nmi", {"flag": True}, defaults) == "nmi[flag=true]"
    with pytest.raises(UserError, match="may only hold letters"):
        variant_name("x", {"path": "../escape"}, {"path": ""})


@pytest.mark.parametrize("methods, message", [
    ("nmi[bins=64", r"write it as name\[option=value,...\]"),
    ("nmi[bins]", r"expected option=value, got 'bins'"),
    ("nmi[bins=1,bins=2]", r"option 'bins' given twice"),
    ("nmi]", r"a '\]' without '\['"),
    ("nmi[bins=64],nmi[bins=064]", r"method 'nmi\[bins=64\]' is given twice"),
    ("nmi,nmi[bins=32]", r"method 'nmi' is given twice \(as 'nmi' and 'nmi\[bins=32\]'\)"),
    ("nmi[colour=red]", r"method 'nmi' has no option 'colour'"),
    ("nmi[bins=1]", r"option 'bins' must be >= 2, got 1"),
])
def test_bad_variants_are_one_line(methods, message):
    with pytest.raises(UserError, match=message):
        plan_run(Registry(), RunSettings(methods=methods, limit=1))


def test_options_of_a_variant_and_of_its_base_method():
    """``-O nmi.x`` sets the plain ``nmi`` only; ``-O x`` every method that has ``x``; a
    variant's brackets win over both. Each name is a method of its own in the plan."""
    plan = plan_run(Registry(), settings_from(
        methods="nmi,nmi[bins=64],mmi", limit=1,
        method_options={"nmi": {"iterations": 7}, "*": {"levels": 2, "bins": 40}}))
    methods = plan.config["methods"]
    assert list(methods) == ["nmi", "nmi[bins=64]", "mmi"]
    assert methods["nmi"]["iterations"] == 7 and methods["nmi[bins=64]"]["iterations"] == 200
    assert methods["nmi"]["bins"] == 40 and methods["nmi[bins=64]"]["bins"] == 64
    assert all(m["levels"] == 2 for m in methods.values())
    assert {t.method for t in plan.tasks} == set(methods)
    with pytest.raises(UserError, match=r"a variant's options go in its brackets"):
        plan_run(Registry(), settings_from(methods="nmi[bins=64]", limit=1,
                                           method_options={"nmi[bins=64]": {"lr": 0.1}}))


def test_the_reference_may_be_a_variant_spelt_any_way():
    plan = plan_run(Registry(), RunSettings(methods="identity,nmi[bins=64]", limit=1,
                                            reference="NMI[ bins=064 ]"))
    assert plan.config["reference"] == "nmi[bins=64]"
    with pytest.raises(UserError, match="is not one of the selected methods"):
        plan_run(Registry(), RunSettings(methods="identity,nmi", limit=1,
                                         reference="nmi[bins=64]"))


def test_a_config_files_methods_list_takes_variants(tmp_path):
    config = tmp_path / "bench.toml"
    config.write_text('methods = ["nmi", "nmi[bins=64,kernel=linear]"]\n')
    assert settings_from(config).methods == ("nmi", "nmi[bins=64,kernel=linear]")


def _cmd(out):
    return [sys.executable, "-m", "mibench.cli", "run", "--dataset", "toy", "-o", "pairs=3",
            "--methods", VARIANTS, "-O", "noisy.delay=0.3", "--plugin", "helpers.fakeplugin",
            "--out", str(out), "--workers", "1", "--quiet", "--reference", "noisy[delay=0.3]"]


def test_variants_are_methods_everywhere_and_survive_a_kill(tmp_path):
    """Two variants of one method: two methods in results.csv, stats.csv and the report; a run
    killed midway and resumed loses and duplicates nothing."""
    env = {**os.environ, "PYTHONPATH": str(TESTS)}
    out = tmp_path / "killed"
    proc = subprocess.Popen(_cmd(out), env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(list(out.glob("records/*/*.json"))) < 2:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 2 <= len(list(out.glob("records/*/*.json"))) < 6
    subprocess.run(_cmd(out), env=env, check=True, capture_output=True)
    ref = tmp_path / "reference"
    subprocess.run(_cmd(ref), env=env, check=True, capture_output=True)

    def records(run_dir):
        return {(r.task.method, r.task.pair_id): r for r in iter_records(run_dir)}

    got, want = records(out), records(ref)
    assert len(list(out.glob("records/*/*.json"))) == 6 and got.keys() == want.keys()
    assert {m for m, _ in got} == {"noisy", "noisy[delay=0.3]"}
    assert all(got[k].metrics == want[k].metrics for k in want)
    results = pd.read_csv(out / "results.csv")
    assert sorted(results["method"].unique()) == ["noisy", "noisy[delay=0.3]"]
    assert results.groupby("method").size().tolist() == [3, 3]
    stats = pd.read_csv(out / "stats.csv")
    assert set(stats["method"]) == {"noisy", "noisy[delay=0.3]"}
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["config"]["methods"]["noisy[delay=0.3]"] == {"delay": 0.3}
    assert manifest["config"]["reference"] == "noisy[delay=0.3]"
    html = (out / "report.html").read_text()
    assert "noisy[delay=0.3]" in html
    assert "noisy[delay=0.3]" in (out / "paper_table.md").read_text()


def test_the_cli_prints_a_variants_error_in_one_line():
    res = CliRunner().invoke(cli, ["run", "--methods", "nmi,nmi[bins=32]", "--limit", "1"])
    assert res.exit_code == 2
    assert res.stderr.strip().splitlines() == [
        "mibench: error: method 'nmi' is given twice (as 'nmi' and 'nmi[bins=32]')"]


def test_two_settings_of_nmi_in_one_run(tmp_path):
    """The issue's example on real data (small and short): nmi and nmi[bins=64] are two
    methods of results.csv, stats.csv and the paper table."""
    import mibench

    df = mibench.run(["nmi", "nmi[bins=64]"], limit=3, workers=0, out=str(tmp_path / "run"),
                     dataset_options={"size": 64}, method_options={"iterations": 5})
    assert df.groupby("method").size().to_dict() == {"nmi": 3, "nmi[bins=64]": 3}
    params = {r.task.method: r.task.method_params["bins"] for r in iter_records(tmp_path / "run")}
    assert params == {"nmi": 32, "nmi[bins=64]": 64}
    stats = pd.read_csv(tmp_path / "run" / "stats.csv")
    assert set(stats["method"]) == {"nmi", "nmi[bins=64]"}
    # nmi is derived from its estimator: the report says so, and by which optimiser.
    html = (tmp_path / "run" / "report.html").read_text()
    assert html.count("Derived from the estimator &#39;nmi&#39;") == 2
