"""``mibench estimators cost``: time and memory of the estimators against image size."""


import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from mibench.cli import cli
from mibench.cost import CostRecord, CostSettings, CostTask
from mibench.errors import UserError
from mibench.records import iter_records
from mibench.reports.cost import loglog_slope


def test_a_small_cost_run_measures_and_reports(tmp_path):
    out = tmp_path / "run"
    res = CliRunner().invoke(cli, ["estimators", "cost", "-e", "ncc,mmi,mmi[bins=20]",
                                   "--sides", "16,32", "--repeats", "2", "--workers", "0",
                                   "-q", "--out", str(out)])
    assert res.exit_code == 0, res.output
    records = {(r.task.estimator, r.task.side): r for r in iter_records(out, CostRecord)}
    assert len(records) == 6 and all(r.status == "ok" for r in records.values())
    for (_, side), r in records.items():
        assert r.pixels == side * side and r.forward_s > 0 and r.peak_bytes is not None
        # mmi and ncc are differentiable: forward + backward is timed too.
        assert r.backward_s is not None and r.backward_s > 0
    summary = pd.read_csv(out / "summary.csv")
    assert set(summary["estimator"]) == {"ncc", "mmi", "mmi[bins=20]"}
    assert summary["forward_slope"].notna().all()
    assert "Scaling" in (out / "report.html").read_text() and (out / "fig_cost.png").is_file()
    again = CliRunner().invoke(cli, ["estimators", "cost", "-e", "ncc,mmi,mmi[bins=20]",
                                     "--sides", "16,32", "--repeats", "2", "--workers", "0",
                                     "-q", "--out", str(out)])
    assert "0 task(s) run, 0 failed, 6 already done" in again.output


def test_the_loglog_slope_is_the_power_law_exponent():
    pixels = np.array([64, 128, 256, 512]) ** 2
    assert loglog_slope(pixels, 3e-9 * pixels) == pytest.approx(1.0)
    assert loglog_slope(pixels, 1e-12 * pixels ** 1.5) == pytest.approx(1.5)
    assert np.isnan(loglog_slope(pixels[:1], [1.0]))
    assert np.isnan(loglog_slope(pixels, [np.nan] * 4))


def test_settings_and_keys():
    with pytest.raises(UserError, match="sides"):
        CostSettings(sides=(4,))
    with pytest.raises(UserError, match="repeats"):
        CostSettings(repeats=0)
    a = CostTask("mmi", {"bins": 50}, 64, 5, 0)
    assert a.key == CostTask("mmi", {"bins": 50}, 64, 5, 0).key != CostTask(
        "mmi", {"bins": 50}, 128, 5, 0).key
    record = CostRecord(a, status="ok", pixels=4096, forward_s=0.1)
    assert CostRecord.from_dict(record.to_dict()) == record
