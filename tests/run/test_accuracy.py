"""``mibench estimators accuracy``: estimators scored on data of known MI, through the same
runner, records and resume as a registration run."""

import json
import math

import pandas as pd
import pytest
from click.testing import CliRunner

from mibench.accuracy import AccuracyRecord, AccuracySettings, AccuracyTask, plan_accuracy
from mibench.assessment.known_mi import tasks
from mibench.cli import cli
from mibench.errors import UserError
from mibench.records import iter_records, read_record, write_record
from mibench.registry import Registry

ARGS = ["estimators", "accuracy", "-e", "mmi,ncc,mmi[bins=20]", "--families",
        "gaussian,image-independent", "--sizes", "1024", "--seed", "0-1", "--workers", "0", "-q"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("accuracy") / "run"
    res = CliRunner().invoke(cli, [*ARGS, "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "36 task(s) run, 0 failed" in res.output
    return out


def test_records_hold_the_estimate_and_the_truth(run_dir):
    known = tasks("gaussian", "image-independent")
    records = list(iter_records(run_dir, AccuracyRecord))
    assert len(records) == 3 * 6 * 2 and all(r.status == "ok" for r in records)
    for r in records:
        assert r.truth == pytest.approx(known[r.task.task].true_mi(r.task.n))
        assert math.isfinite(r.estimate) and r.wall_s is not None
    assert {r.task.estimator for r in records} == {"mmi", "ncc", "mmi[bins=20]"}
    data = json.loads(next(run_dir.glob("records/mmi/*.json")).read_text())
    assert data["kind"] == "accuracy"


def test_summary_and_rank_agreement_follow_the_records(run_dir):
    results = pd.read_csv(run_dir / "results.csv")
    summary = pd.read_csv(run_dir / "summary.csv")
    row = summary[(summary["estimator"] == "mmi") & (summary["task"] == "gaussian[rho=0.75]")]
    values = results[(results["estimator"] == "mmi")
                     & (results["task"] == "gaussian[rho=0.75]")]["estimate"]
    assert row["mean"].item() == pytest.approx(values.mean())
    assert row["bias"].item() == pytest.approx(values.mean() - 0.5 * math.log(1 / (1 - 0.5625)))
    assert row["sd"].item() == pytest.approx(values.std(ddof=1))
    ranks = pd.read_csv(run_dir / "rank_agreement.csv")
    # Mattes MI orders the Gaussian sweep as the truth does; the independent pairs (truth 0
    # twice) make no sweep, so they have no rank agreement.
    assert set(ranks["family"]) == {"gaussian"}
    assert ranks.set_index("estimator").loc["mmi", "rank_agreement"] == pytest.approx(1.0)
    html = (run_dir / "report.html").read_text()
    assert "Rank agreement with the true MI" in html and "mmi[bins=20]" in html


def test_a_rerun_resumes_and_a_registration_report_is_refused(run_dir):
    res = CliRunner().invoke(cli, [*ARGS, "--out", str(run_dir)])
    assert res.exit_code == 0 and "0 task(s) run, 0 failed, 36 already done" in res.output
    res = CliRunner().invoke(cli, ["report", str(run_dir)])
    assert res.exit_code == 2
    assert "a record of accuracy, not of registration" in res.stderr


def test_an_estimator_that_fails_fails_its_tasks_only(write_plugin, tmp_path):
    name = write_plugin("nan_estimator", """
        import torch

        def nan(fixed, moving, mask=None):
            return torch.full((fixed.shape[0],), float("nan"))

        @hookimpl
        def mibench_estimators():
            return [EstimatorSpec("nan-mi", "Always NaN.", f"{__name__}:nan")]
        """)
    res = CliRunner().invoke(cli, ["estimators", "accuracy", "-e", "nan-mi,ncc", "--families",
                                   "gaussian", "--sizes", "256", "--workers", "0", "-q",
                                   "--plugin", name, "--out", str(tmp_path / "run")])
    assert res.exit_code == 0, res.output
    records = list(iter_records(tmp_path / "run", AccuracyRecord))
    failed = [r for r in records if r.status == "failed"]
    assert {r.task.estimator for r in failed} == {"nan-mi"} and len(failed) == 4
    assert all("the estimate is nan" in r.error for r in failed)
    assert "every task of estimator 'nan-mi' failed" in res.stderr


def test_keys_records_and_settings():
    task = AccuracyTask("mmi", {"bins": 50}, "gaussian[rho=0.5]", 1024, 0)
    assert task.key == AccuracyTask("mmi", {"bins": 50}, "gaussian[rho=0.5]", 1024, 0).key
    assert task.key != AccuracyTask("mmi", {"bins": 50}, "gaussian[rho=0.5]", 1024, 1).key
    record = AccuracyRecord(task, status="ok", estimate=0.2, truth=0.1438)
    assert AccuracyRecord.from_dict(record.to_dict()) == record
    with pytest.raises(UserError, match="perfect squares"):
        AccuracySettings(sizes=(1000,))
    with pytest.raises(UserError, match="unknown task families"):
        plan_accuracy(Registry(), AccuracySettings(families=("gaussians",)))
    with pytest.raises(UserError, match="given twice"):
        plan_accuracy(Registry(), AccuracySettings(estimators=("mmi", "mmi[bins=50]")))


def test_a_registration_record_is_not_an_accuracy_record(tmp_path):
    from mibench.registration import Record, RegistrationTask

    reg = RegistrationTask("ncc", {}, "toy", {}, "toy-0", 0)
    path = write_record(tmp_path, reg, Record(reg, status="ok"))
    with pytest.raises(UserError, match="a record of registration, not of accuracy"):
        read_record(path, AccuracyRecord)


def test_bias_against_sample_size_is_drawn_when_there_are_two_sizes():
    from mibench.reports.accuracy import draw_bias

    summary = pd.DataFrame({"estimator": ["a", "a", "b", "b"], "family": ["g"] * 4,
                            "n": [256, 4096, 256, 4096], "bias": [0.1, 0.02, -0.1, -0.05]})
    png = draw_bias(summary)
    assert png is not None and png[:4] == b"\x89PNG"
    assert draw_bias(summary[summary["n"] == 256]) is None  # one size: no curve
