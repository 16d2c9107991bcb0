"""ANHIR and generic BIRL cover tables, through ``mibench run --dataset anhir|cover``, and the
warped-landmark files of ANHIR's submission format."""

import json

import numpy as np
import pandas as pd
import pytest
from helpers.datasets import ANHIR_ROWS, make_anhir, make_cover, run_identity

import mibench
from mibench.records import iter_records
from mibench.reports.landmarks import write_warped_landmarks


@pytest.fixture(scope="module")
def anhir(tmp_path_factory):
    return make_anhir(tmp_path_factory.mktemp("anhir"))


def test_anhir_run_scores_training_and_writes_evaluation_pairs(anhir, tmp_path):
    """Row r's source points are its target points + (2, -3)(r + 1), so the identity error of
    every landmark is sqrt(13)(r + 1) px; the evaluation row has no target landmarks."""
    run_dir = tmp_path / "run"
    result, records = run_identity(run_dir, "anhir", anhir.root)
    notes = json.loads((run_dir / "run.json").read_text())["dataset_notes"]
    assert notes == ["1 evaluation pair(s) have no target landmarks: registered, warped source "
                     "landmarks written out (ANHIR submission format), not scored"]
    assert sorted(records) == ["000", "001", "002"]
    for row in (0, 1):
        rec = records[f"{row:03d}"]
        assert rec.status == "ok" and rec.scored
        error = np.sqrt(13.0) * (row + 1)
        np.testing.assert_allclose(rec.landmark_errors, [error] * 6, rtol=1e-12)
        h, w = ANHIR_ROWS[row][3]
        assert rec.metrics["rtre_median"] == pytest.approx(error / np.hypot(w, h))
    assert records["000"].meta == {"row": 0, "tissue": "lung-lesion", "set": "lung-lesion_2",
                                   "status": "training", "scale": 25}
    evaluation = records["002"]
    assert evaluation.meta["status"] == "evaluation" and evaluation.meta["tissue"] == "COAD"
    assert evaluation.status == "ok" and not evaluation.scored
    source = anhir.points[2][1]
    np.testing.assert_allclose(evaluation.warped_moving_landmarks, source)

    written = write_warped_landmarks(run_dir, iter_records(run_dir))
    assert sorted(p.name for p in written) == ["000.csv", "001.csv", "002.csv"]
    out = run_dir / "warped-landmarks" / "identity" / "002.csv"
    assert out.read_text().splitlines()[0] == ",X,Y"
    np.testing.assert_allclose(pd.read_csv(out, index_col=0)[["X", "Y"]].to_numpy(), source)


def test_anhir_notes_status_filter_and_sizes(anhir):
    ds = mibench.dataset("anhir", str(anhir.root))
    assert any(n.startswith("1 evaluation pair(s) have no target landmarks") for n in ds.notes)
    pair = ds.load("000")  # target and source of different sizes, as in ANHIR
    assert pair.fixed.shape == (80, 100) and pair.moving.shape == (90, 70)
    assert pair.fixed.dtype == np.float32 and 0 <= pair.fixed.min() <= pair.fixed.max() <= 1
    assert ds.load("002").fixed_landmarks is None
    training = mibench.dataset("anhir", str(anhir.root), status="training")
    assert [p.id for p in training.pairs()] == ["000", "001"] and not training.notes
    evaluation = mibench.dataset("anhir", str(anhir.root), status="evaluation")
    assert [p.id for p in evaluation.pairs()] == ["002"]


def test_anhir_scale_selection_reads_other_folder_and_reports_table_pixels(anhir):
    ds = mibench.dataset("anhir", str(anhir.root), scale=5)
    for row in (0, 1):
        pair = ds.load(f"{row:03d}")
        (th, tw), (sh, sw) = ANHIR_ROWS[row][3], ANHIR_ROWS[row][4]
        assert pair.fixed.shape == (round(th / 5), round(tw / 5))
        assert pair.moving.shape == (round(sh / 5), round(sw / 5))
        assert pair.native_scale == pytest.approx(5.0)
        assert pair.native_fixed_shape == (th, tw)
        target, source = anhir.points[row]
        np.testing.assert_allclose(pair.fixed_landmarks, target / 5)
        np.testing.assert_allclose(pair.moving_landmarks, source / 5)
        e = np.linalg.norm(pair.moving_landmarks - pair.fixed_landmarks, axis=1)
        np.testing.assert_allclose(e * pair.native_scale, np.sqrt(13.0) * (row + 1))
    assert any("scale-5pc" in n for n in ds.notes)
    # In-memory working scale on top: landmarks x 0.5 more, native scale x 2.
    half = mibench.dataset("anhir", str(anhir.root), working_scale=0.5).load("001")
    assert half.fixed.shape == (30, 40) and half.native_scale == pytest.approx(2.0)
    np.testing.assert_allclose(half.fixed_landmarks, anhir.points[1][0] * 0.5)


def test_cover_table_with_pts_and_text_landmarks(tmp_path):
    data = tmp_path / "mydata"
    table, truth = make_cover(data)
    _, records = run_identity(tmp_path / "run", "cover", data, f"table={table.name}")
    assert sorted(records) == ["000", "001"]
    np.testing.assert_allclose(records["000"].landmark_errors, [10.0] * 4, rtol=1e-12)
    f, m = truth["001"]
    np.testing.assert_allclose(records["001"].landmark_errors, 0.1 * np.linalg.norm(f, axis=1))
    assert records["000"].metrics["naed"] == pytest.approx(10.0 / np.hypot(64, 50))
    pair = mibench.dataset("cover", str(data), table=str(table)).load("001")
    assert pair.fixed.shape == (40, 40) and pair.moving.shape == (48, 56)


def test_cover_index_ids_equal_as_numbers_fall_back_to_row_numbers(tmp_path):
    """An index column whose values repeat as numbers ("1" and "01" are both pair 001) would
    let one pair replace the other: the row numbers are the ids then, as with repeats."""
    data = tmp_path / "mydata"
    table, _ = make_cover(data)
    lines = table.read_text().splitlines()
    lines = ["," + lines[0], "1," + lines[1], "01," + lines[2]]
    table.write_text("\n".join(lines) + "\n")
    ds = mibench.dataset("cover", str(data), table=table.name)
    assert [p.id for p in ds.pairs()] == ["000", "001"]
    assert [p.meta["row"] for p in ds.pairs()] == [0, 1]
