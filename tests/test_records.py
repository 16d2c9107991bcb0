"""Record storage: atomic writes that survive a concurrent start-up, file modes, and records
written before the NAED normaliser was renamed."""

import json
import os

import pytest

import mibench.jsonio as jsonio
import mibench.records as records
from mibench.jsonio import write_json_atomic
from mibench.records import read_record, write_record
from mibench.registration import Record, RegistrationTask


def test_another_runs_start_up_does_not_break_a_record_being_written(tmp_path, monkeypatch):
    """Two `mibench run` into one --out: the second one's start-up clears stale temporary files
    (remove_stale_temporaries); one that the first run is writing at that moment must not make
    the first run fail with FileNotFoundError (and lose its tasks in flight)."""
    task = RegistrationTask("identity", {}, "toy", {}, "toy-0", 0)
    record = Record(task, status="ok")
    real_fsync = os.fsync
    cleaned = []

    def fsync_while_another_run_starts(fd):
        if not cleaned:
            cleaned.append(records.remove_stale_temporaries(tmp_path))
        real_fsync(fd)

    monkeypatch.setattr(jsonio.os, "fsync", fsync_while_another_run_starts)
    path = write_record(tmp_path, task, record)
    assert cleaned == [1]
    assert read_record(path).key == task.key
    assert not list(tmp_path.rglob("*.part"))


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
def test_records_get_the_usual_mode_of_a_new_file(tmp_path):
    """mkstemp makes files private (0600): records of a shared run directory must be readable by
    colleagues as any file the user creates (0666 less the umask)."""
    mask = os.umask(0o022)
    os.umask(mask)
    path = tmp_path / "r.json"
    write_json_atomic(path, {"a": 1})
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask
    plain = tmp_path / "plain"
    plain.write_text("x")
    assert path.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777


def test_a_record_round_trips_and_keeps_its_flat_layout(tmp_path):
    """On disk a record is one flat object, the task's fields and key first; reading it back
    gives the same record, composed from the same task."""
    task = RegistrationTask("ncc", {"lr": 0.01}, "toy", {"pairs": 2}, "toy-1", 3)
    record = Record(task, status="failed", error="boom", naed_norm="none", wall_s=1.5)
    path = write_record(tmp_path, task, record)
    data = json.loads(path.read_text())
    assert list(data)[:7] == ["key", "method", "method_params", "dataset", "dataset_params",
                              "pair_id", "seed"]
    assert data["key"] == task.key and data["naed_norm"] == "none"
    assert path == tmp_path / "records" / "ncc" / f"toy-1.s3.{task.key}.json"
    assert read_record(path) == record


def test_a_record_of_the_old_layout_is_read_with_its_naed_norm(tmp_path):
    """Records written before the NAED normaliser was called ``naed_norm`` hold it as
    ``normalisation``: they still resume and report."""
    task = RegistrationTask("ncc", {}, "toy", {}, "toy-0", 0)
    data = Record(task, status="ok", naed_norm="max-side").to_dict()
    data["normalisation"] = data.pop("naed_norm")
    path = tmp_path / "old.json"
    path.write_text(json.dumps(data))
    old = read_record(path)
    assert old.naed_norm == "max-side" and old.key == task.key and old.task == task


def test_a_damaged_record_is_one_line_naming_it(tmp_path):
    path = tmp_path / "cut.json"
    path.write_text('{"key": "abc", "method": ')
    with pytest.raises(records.UserError, match=f"{path}: damaged record"):
        read_record(path)


def test_a_record_of_another_kind_is_refused_not_set_aside(tmp_path):
    """A run directory of another command (records with another ``kind``) is not a damaged
    registration run: reading it says so, and resuming into it renames nothing."""
    task = RegistrationTask("ncc", {}, "toy", {}, "toy-0", 0)
    path = write_record(tmp_path, task, Record(task, status="ok"))
    data = json.loads(path.read_text())
    assert "kind" not in data  # registration records keep their original layout
    path.write_text(json.dumps({**data, "kind": "accuracy"}))
    with pytest.raises(records.UserError, match="a record of accuracy, not of registration"):
        read_record(path)
    with pytest.raises(records.UserError, match="another kind of run"):
        records.load_records_setting_aside_damaged(tmp_path, print)
    assert path.exists()


def test_a_3d_record_round_trips_with_its_unit_and_voxel_metrics(tmp_path):
    """A volume scored in mm (mibench.registration.score_record on an anisotropic grid) is
    written as JSON and read back equal: unit, mm metrics and voxel metrics included."""
    import numpy as np

    from mibench.geometry import Geometry
    from mibench.pairs import Pair
    from mibench.registration import score_record
    from mibench.transform import MatrixTransform

    rng = np.random.default_rng(5)
    geometry = Geometry.from_spacing([0.8, 0.8, 2.4], origin=[-30.0, 10.0, 5.0])
    f = rng.uniform(2, 9, (6, 3))
    m = f + rng.normal(0, 1, (6, 3))
    pair = Pair("vol-1", rng.random((12, 16, 18), dtype=np.float32),
                rng.random((12, 16, 18), dtype=np.float32), fixed_landmarks=f,
                moving_landmarks=m, fixed_geometry=geometry, moving_geometry=geometry)
    task = RegistrationTask("identity", {}, "brain", {"pairs": 1}, "vol-1", 0)
    shift = np.eye(4)
    shift[:3, 3] = [0.5, -0.25, 1.0]
    record = score_record(task, pair, MatrixTransform(shift), error=None,
                          naed_norm="diagonal")
    path = write_record(tmp_path, task, record)
    data = json.loads(path.read_text())
    assert data["unit"] == "mm" and set(data["voxel_metrics"]) == set(data["metrics"])
    assert len(data["transform"]["matrix"]) == 4 and len(data["warped_moving_landmarks"][0]) == 3
    back = read_record(path)
    assert back == record
    assert back.metrics["tre_mean"] != back.voxel_metrics["tre_mean"]
    # The shift maps moving landmarks back by -shift; z offsets count 2.4 mm per voxel, x and
    # y 0.8 mm.
    d = m - shift[:3, 3] - f
    assert back.landmark_errors == pytest.approx(
        np.linalg.norm(d * [0.8, 0.8, 2.4], axis=1).tolist(), rel=1e-12)


def test_a_record_written_before_units_reads_as_pixels(tmp_path):
    """Records written before ``unit`` and ``voxel_metrics`` existed were all in pixels."""
    task = RegistrationTask("ncc", {}, "toy", {}, "toy-0", 0)
    data = Record(task, status="ok", scored=True, metrics={"naed": 0.01},
                  landmark_errors=[1.0]).to_dict()
    del data["unit"], data["voxel_metrics"]
    path = tmp_path / "old.json"
    path.write_text(json.dumps(data))
    old = read_record(path)
    assert old.unit == "px" and old.voxel_metrics is None
    assert old.metrics == {"naed": 0.01} and old.key == task.key
