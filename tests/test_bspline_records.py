"""B-spline results in records, resume, reports and the ITK export.

This module is also the plugin of its run (``plugins=["test_bspline_records"]``, in-process):
``warpy`` returns a B-spline on the toy pair's true matrix with small seeded coefficients.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from helpers import fakeplugin

from mibench import MethodSpec, Pair, Param, hookimpl
from mibench.bspline import BSplineTransform
from mibench.deformation import deformation_stats, jacobian_determinant
from mibench.paths import BSPLINE_SUFFIX
from mibench.records import iter_records
from mibench.registration import DEFORMATION_METRICS, RegistrationTask, score_record
from mibench.transform import MatrixTransform, transform_from_dict

SPACING = 8.0


def _pair_index(fixed: np.ndarray) -> int:
    for i in range(20):
        ref = np.random.default_rng(i).random(fixed.shape).astype(np.float32)
        if np.allclose(ref, fixed):
            return i
    raise RuntimeError("unknown pair")


def warpy_transform(fixed: np.ndarray, amplitude: float) -> BSplineTransform:
    """The B-spline ``warpy`` returns for a toy pair's fixed image ``(H, W)``."""
    i = _pair_index(fixed)
    t = BSplineTransform.over(fixed.shape, SPACING, fakeplugin.true_matrix(i))
    rng = np.random.default_rng([i, 7])
    t.coefficients = rng.uniform(-amplitude, amplitude, t.grid.coefficient_shape)
    return t


def warpy(fixed, moving, *, fixed_mask=None, moving_mask=None, seed=0, amplitude=0.5):
    return warpy_transform(fixed[0, 0].cpu().numpy(), amplitude)


@hookimpl
def mibench_methods():
    return [MethodSpec("warpy", "A seeded B-spline on the toy pair's true matrix.",
                       "test_bspline_records:warpy", params=(Param("amplitude", 0.5),))]


def _config(tmp_path, **kw):
    from mibench.settings import RunSettings

    return RunSettings(methods="warpy,identity", dataset="toy", out=str(tmp_path / "run"),
                       plugins=["helpers.fakeplugin", "test_bspline_records"], workers=0, **kw)


def test_a_bspline_record_is_stored_resumed_reported_and_exported(tmp_path):
    import SimpleITK as sitk

    from mibench.runner import run_benchmark

    cfg = _config(tmp_path, save_transforms=True)
    first = run_benchmark(cfg, progress=False)
    assert first.completed == 6 and first.failed == 0
    run_dir = first.run_dir
    recs = {(r.task.method, r.task.pair_id): r for r in iter_records(run_dir)}
    ds = fakeplugin.load_toy(None)
    for i in range(3):
        pair = ds.load(f"toy-{i}")
        rec = recs[("warpy", f"toy-{i}")]
        path = rec.task.record_path(run_dir)
        # Saved beside the record, referenced by name, read back through the folder.
        npz = path.with_name(path.name[:-len(".json")] + BSPLINE_SUFFIX)
        assert rec.transform["coefficients_file"] == npz.name and npz.is_file()
        assert "coefficients" not in rec.transform
        back = transform_from_dict(rec.transform, folder=path.parent)
        expect = warpy_transform(pair.fixed, 0.5)
        np.testing.assert_array_equal(back.coefficients, expect.coefficients)
        np.testing.assert_array_equal(back.affine.matrix, expect.affine.matrix)
        # Scored with the B-spline's inverse: errors against Newton's preimage, native scale 2.
        mapped = expect.moving_to_fixed(pair.moving_landmarks)
        np.testing.assert_allclose(
            rec.landmark_errors, 2.0 * np.linalg.norm(mapped - pair.fixed_landmarks, axis=1),
            atol=1e-6)
        # Deformation statistics: mibench.deformation's on the same transform and grid ...
        stats = deformation_stats(jacobian_determinant(expect, pair.fixed.shape))
        for name in DEFORMATION_METRICS:
            assert rec.metrics[name] == pytest.approx(stats[name], rel=1e-12, abs=1e-15)
        # ... and close to those of the analytic Jacobian (independent of finite differences).
        ys, xs = np.mgrid[0:32, 0:32]
        det = np.linalg.det(expect.jacobian(np.column_stack([xs.ravel(), ys.ravel()])))
        assert rec.metrics["folding"] == 0.0 and det.min() > 0
        assert rec.metrics["sd_log_jacobian"] == pytest.approx(np.std(np.log(det + 3)),
                                                               rel=0.1)
        assert rec.metrics["sd_log_jacobian"] > 0
        # Matrix results carry none.
        assert not set(DEFORMATION_METRICS) & set(recs[("identity", f"toy-{i}")].metrics)
        # The ITK export (no geometry): an affine-then-B-spline composite that SimpleITK reads
        # back and that maps the fixed pixels as mibench does.
        tfm = path.parent / rec.info["outputs"]["transform"]
        assert tfm.suffix == ".h5"
        itk = sitk.ReadTransform(str(tfm))
        pts = np.random.default_rng(i).uniform(0, 31, (200, 2))
        itk_pts = np.array([itk.TransformPoint(tuple(p)) for p in pts])
        np.testing.assert_allclose(itk_pts, expect.fixed_to_moving(pts), atol=1e-9)

    # Results and summary: the deformation columns, values for warpy, none for identity.
    results = pd.read_csv(run_dir / "results.csv")
    assert {"folding", "sd_log_jacobian"} <= set(results.columns)
    assert results.loc[results["method"] == "identity", "folding"].isna().all()
    summary = pd.read_csv(run_dir / "summary.csv").set_index("method")
    warpy_sd = [recs[("warpy", f"toy-{i}")].metrics["sd_log_jacobian"] for i in range(3)]
    assert summary.at["warpy", "sd_log_jacobian_mean"] == pytest.approx(np.mean(warpy_sd))
    assert summary.at["warpy", "folding_mean"] == 0.0
    assert np.isnan(summary.at["identity", "folding_mean"])
    html = (run_dir / "report.html").read_text()
    assert "SD log J" in html and "Deformation quality" in html
    pages = list((run_dir / "pairs").glob("*.html"))
    assert pages and all("SD log J" in p.read_text() for p in pages)

    # Resume: nothing runs again, the files stay as they were.
    stamps = {p: p.stat().st_mtime_ns for p in run_dir.glob(f"records/warpy/*{BSPLINE_SUFFIX}")}
    again = run_benchmark(cfg, progress=False)
    assert again.completed == 0 and again.skipped_existing == 6
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    # A record whose coefficient file is gone is set aside and its task runs again.
    lost = sorted(stamps)[0]
    lost.unlink()
    third = run_benchmark(cfg, progress=False)
    assert third.completed == 1 and third.skipped_existing == 5
    assert lost.is_file()


def test_a_folding_bspline_on_an_unscored_masked_pair(tmp_path):
    """Folding and SD log J over the fixed mask, as mibench.deformation computes them; a brute
    force count of the analytic Jacobian's folds agrees to the finite differences' error."""
    shape = (48, 40)
    rng = np.random.default_rng(3)
    fixed = rng.random(shape).astype(np.float32)
    mask = np.zeros(shape, bool)
    mask[4:44, 6:36] = True
    pair = Pair("p", fixed, fixed.copy(), fixed_mask=mask)
    t = BSplineTransform.over(shape, 8.0, [[1.1, 0.1, 2.0], [-0.05, 0.95, -1.0], [0, 0, 1]])
    t.coefficients = rng.uniform(-12, 12, t.grid.coefficient_shape)  # folds (about 14 %)
    task = RegistrationTask("m", {}, "d", {}, "p", 0)
    file = tmp_path / "m" / "p.s0.x.bspline.npz"
    rec = score_record(task, pair, t, error=None, naed_norm="diagonal", transform_file=file)
    assert rec.status == "ok" and not rec.scored and file.is_file()
    assert rec.transform["coefficients_file"] == file.name
    det = jacobian_determinant(t, shape)
    assert rec.metrics == pytest.approx(deformation_stats(det, mask), rel=1e-12)
    # Hand computation over the mask.
    inside = det[mask]
    assert rec.metrics["folding"] == pytest.approx(np.mean(inside <= 0))
    assert rec.metrics["sd_log_jacobian"] == pytest.approx(
        np.std(np.log(np.clip(inside + 3, 1e-9, 1e9))))
    ys, xs = np.nonzero(mask)
    exact = np.linalg.det(t.jacobian(np.column_stack([xs, ys])))
    assert 0 < rec.metrics["folding"] == pytest.approx(np.mean(exact <= 0), abs=0.03)
    # Without a folder, the coefficients are embedded (nothing written).
    rec2 = score_record(task, pair, BSplineTransform(t.grid, t.coefficients, t.affine),
                        error=None, naed_norm="diagonal")
    assert "coefficients" in rec2.transform
    # A non-finite B-spline fails the task and stores nothing.
    bad = BSplineTransform(t.grid, np.full(t.grid.coefficient_shape, np.nan), t.affine)
    rec3 = score_record(task, pair, bad, error=None, naed_norm="diagonal",
                        transform_file=tmp_path / "bad.bspline.npz")
    assert rec3.status == "failed" and rec3.error == "non-finite transform"
    assert rec3.transform is None and not (tmp_path / "bad.bspline.npz").exists()
    assert "folding" not in rec3.metrics
    # The matrix path is untouched: no statistics for an affine.
    rec4 = score_record(task, pair, MatrixTransform(t.affine.matrix), error=None,
                        naed_norm="diagonal")
    assert rec4.metrics == {} and json.dumps(rec4.transform)


def test_itk_export_of_a_bspline_with_and_without_geometry(tmp_path):
    """Without geometry: the exact composite; with both geometries: the displacement field,
    exact at the fixed pixels (read back by SimpleITK)."""
    import SimpleITK as sitk

    from mibench.export import itk_transform, write_transform
    from mibench.geometry import Geometry

    shape = (30, 36)
    t = BSplineTransform.over(shape, 8.0, [[1.02, 0.05, 1.5], [-0.03, 0.98, -2.0], [0, 0, 1]])
    t.coefficients = np.random.default_rng(1).uniform(-1.5, 1.5, t.grid.coefficient_shape)
    path = write_transform(tmp_path / "t.h5", t, None, None, 2, fixed_shape=shape)
    back = sitk.ReadTransform(str(path))
    pts = np.random.default_rng(2).uniform(0, 29, (300, 2))
    mapped = np.array([back.TransformPoint(tuple(p)) for p in pts])
    np.testing.assert_allclose(mapped, t.fixed_to_moving(pts), atol=1e-9)
    assert itk_transform(t, None, None, 2, fixed_shape=shape).GetName() == "CompositeTransform"
    geo = Geometry(np.diag([0.5, 0.5, 1.0]), unit="um")
    field = itk_transform(t, geo, geo, 2, fixed_shape=shape)
    assert field.GetName() == "DisplacementFieldTransform"


def test_display_warps_of_a_bspline_match_its_warp():
    """The overlays sample a B-spline at the shown pixels only: the same values as its own
    ``warp`` (torch's grid_sample) strided, in 2-D and on a volume's three slices."""
    from mibench.reports.overlay_images import warp_strided
    from mibench.reports.overlay_volumes import PLANES, fixed_slice, warp_slice

    rng = np.random.default_rng(4)
    moving = rng.random((40, 44)).astype(np.float32)
    t = BSplineTransform.over((36, 42), 8.0, [[1.05, 0.05, 1.0], [-0.04, 0.97, 2.0], [0, 0, 1]])
    t.coefficients = rng.uniform(-2, 2, t.grid.coefficient_shape)
    for step in (1, 3):
        np.testing.assert_allclose(warp_strided(moving, t, (36, 42), step),
                                   t.warp(moving, (36, 42))[::step, ::step], atol=1e-5)
    volume = rng.random((18, 20, 22)).astype(np.float32)
    t3 = BSplineTransform.over((16, 20, 21), 6.0, np.diag([1.02, 0.98, 1.0, 1.0]))
    t3.coefficients = rng.uniform(-1.5, 1.5, t3.grid.coefficient_shape)
    full = t3.warp(volume, (16, 20, 21))
    for plane in PLANES:
        for step in (1, 2):
            np.testing.assert_allclose(warp_slice(volume, t3, (16, 20, 21), plane, 7, step),
                                       fixed_slice(full, plane, 7, step), atol=1e-5)


def test_the_anhir_table_gains_deformation_columns_only_when_the_summary_has_them():
    from types import SimpleNamespace

    from mibench.reports.paper_table import ANHIR_CAPTION, metric_tables

    ev = SimpleNamespace(paper=[SimpleNamespace(method="bs"), SimpleNamespace(method="aff")],
                         fire_categories=False, anhir_applies=True)
    summary = pd.DataFrame({"method": ["bs", "aff"], "rtre_median_mean": [0.002, 0.005],
                            "rtre_max_mean": [0.01, 0.02], "rank_rtre_median": [1.0, 2.0],
                            "rank_rtre_max": [1.0, 2.0], "robustness_mean": [0.9, 0.7]})
    (plain,) = metric_tables(ev, summary)
    assert "folding" not in plain.header and plain.caption == ANHIR_CAPTION
    summary["folding_mean"] = [0.0004, np.nan]
    summary["sd_log_jacobian_mean"] = [0.05, np.nan]
    (table,) = metric_tables(ev, summary)
    assert table.header[-2:] == ("folding", "SD log J") and "Folding" in table.caption
    rows = {m: (cells, best) for m, cells, best in table.rows}
    assert rows["bs"][0][-2:] == ["0.0004", "0.05"] and rows["bs"][1][-2:] == [True, True]
    assert rows["aff"][1][-2:] == [False, False]
