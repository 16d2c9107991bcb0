"""``mibench estimators landscape``: the Škerl protocol run on a dataset's pairs, through the
same runner, records and resume as every other benchmark."""

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from mibench.cli import cli
from mibench.errors import UserError
from mibench.landscape import LandscapeRecord, LandscapeSettings, LandscapeTask, gold_standard
from mibench.pairs import Pair
from mibench.records import iter_records

ARGS = ["estimators", "landscape", "-e", "mmi,ncc", "-o", "size=64", "-o", "pairs=2",
        "--limit", "2", "--lines", "3", "--points", "3", "--radius", "6", "--workers", "0",
        "-q"]


def test_a_small_landscape_run(tmp_path):
    out = tmp_path / "run"
    res = CliRunner().invoke(cli, [*ARGS, "--out", str(out)])
    assert res.exit_code == 0, res.output
    records = list(iter_records(out, LandscapeRecord))
    assert len(records) == 4 and all(r.status == "ok" for r in records), [
        r.error for r in records]
    for r in records:
        assert r.gold_source == "true transform" and r.gold_residual_px is None
        assert 0 <= r.acc <= 6 and 0 <= r.cr <= 6 and r.nom >= 0 and r.ron >= 0
        assert r.parameters == ["tx", "ty", "rotation"]
        assert np.asarray(r.profile_values).shape == (3, 7)
    summary = pd.read_csv(out / "summary.csv")
    assert set(summary["estimator"]) == {"mmi", "ncc"} and (summary["failed"] == 0).all()
    assert "The five properties" in (out / "report.html").read_text()
    assert len(list(out.glob("fig_profiles_*.png"))) == 2
    again = CliRunner().invoke(cli, [*ARGS, "--out", str(out)])
    assert "0 task(s) run, 0 failed, 4 already done" in again.output


def test_the_gold_standard_of_a_landmark_pair_is_their_affine_fit():
    truth = np.array([[1.02, 0.05, 3.0], [-0.04, 0.98, -2.0], [0, 0, 1.0]])
    fixed = np.array([[5.0, 5.0], [50.0, 8.0], [30.0, 40.0], [10.0, 55.0], [60.0, 60.0]])
    moving = (np.c_[fixed, np.ones(5)] @ truth.T)[:, :2]
    image = np.zeros((64, 64), np.float32)
    pair = Pair("p", image, image, fixed_landmarks=fixed, moving_landmarks=moving)
    matrix, source, residual = gold_standard(pair)
    np.testing.assert_allclose(matrix, truth, atol=1e-9)
    assert source.startswith("least-squares affine") and residual == pytest.approx(0, abs=1e-9)
    with pytest.raises(ValueError, match="no gold standard"):
        gold_standard(Pair("q", image, image))


def test_settings_and_keys():
    with pytest.raises(UserError, match="space"):
        LandscapeSettings(space="elastic")
    with pytest.raises(UserError, match="lines"):
        LandscapeSettings(lines=0)
    with pytest.raises(UserError, match="radius"):
        LandscapeSettings(radius=-1.0)
    t = LandscapeTask("mmi", {}, "synthetic", {}, "fundus-000", "rigid", 3, 3, 6.0, 0)
    assert t.key != LandscapeTask("mmi", {}, "synthetic", {}, "fundus-000", "affine", 3, 3,
                                  6.0, 0).key
    record = LandscapeRecord(t, status="ok", acc=0.5, do=[0.1], do_radii=[2.0])
    assert LandscapeRecord.from_dict(record.to_dict()) == record
