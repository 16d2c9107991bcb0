"""Reports of 3-D runs: tables in the records' unit (mm), overlays of three orthogonal slices
per method with the landmarks of a slab projected, physical aspect ratios, mixed units refused
an average, and 2-D records still reported in px.

The brain run is built by hand from two ``brain`` pairs: records scored in mm with numpy from
known transforms (the identity and the true transform off by a known shift), so that every
number the report prints has an independent reference here.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from helpers.runs import make_fake_run

from mibench.geometry import Geometry
from mibench.metrics import pair_scores
from mibench.pairs import Pair
from mibench.paths import manifest_path
from mibench.records import write_record
from mibench.registration import Record, RegistrationTask
from mibench.reports import analyse_run, build_reports
from mibench.reports.evaluation import evaluate
from mibench.reports.overlay_volumes import (
    PLANES,
    SLAB_VOXELS,
    centre_voxel,
    fixed_slice,
    plane_order,
    slab_vectors,
    warp_slice,
)
from mibench.reports.overlays import Panel, draw_overlay, draw_panels, method_panels
from mibench.reports.results import results_frame, summary_frame
from mibench.transform import MatrixTransform

PARAMS = {"pairs": 2}
#: The "shifted" method's error: the true transform followed by this fixed-voxel shift.
SHIFT = np.array([[1, 0, 0, 1.5], [0, 1, 0, -1.0], [0, 0, 1, 0.5], [0, 0, 0, 1.0]])


def _brain():
    from mibench.datasets import brain

    try:
        return brain.load_dataset(**PARAMS)
    except Exception as exc:  # nilearn missing: the dataset says so
        pytest.skip(f"brain dataset unavailable: {exc}")


def _mm_errors(pair, matrix):
    """``‖A (T⁻¹ m_k - f_k)‖`` with plain numpy: the landmark errors in mm."""
    m = np.c_[pair.moving_landmarks, np.ones(len(pair.moving_landmarks))]
    mapped = (m @ np.linalg.inv(matrix).T)[:, :3]
    linear = pair.fixed_geometry.affine[:3, :3]
    return np.linalg.norm((mapped - pair.fixed_landmarks) @ linear.T, axis=1)


def _matrices(pair):
    true = np.asarray(pair.meta["true_transform"], dtype=np.float64)
    return {"identity": np.eye(4), "shifted": true @ SHIFT}


@pytest.fixture(scope="module")
def brain_run(tmp_path_factory):
    from mibench.reports import figures

    run_dir = tmp_path_factory.mktemp("brain")
    ds = _brain()
    for info in ds.pairs():
        pair = ds.load(info.id)
        extent = np.asarray(pair.fixed.shape[::-1]) * pair.fixed_geometry.spacing
        diagonal = float(np.linalg.norm(extent))
        init = _mm_errors(pair, np.eye(4))
        for method, matrix in _matrices(pair).items():
            task = RegistrationTask(method=method, method_params={}, dataset="brain",
                                    dataset_params=PARAMS, pair_id=info.id, seed=0)
            errs = _mm_errors(pair, matrix)
            m = np.c_[pair.moving_landmarks, np.ones(len(pair.moving_landmarks))]
            warped = (m @ np.linalg.inv(matrix).T)[:, :3]
            rec = Record(task, status="ok", scored=True, landmark_errors=list(errs),
                         warped_moving_landmarks=warped.tolist(),
                         initial_errors=list(init), norm_length=diagonal, unit="mm",
                         metrics=pair_scores(errs, init, diagonal, diagonal), wall_s=1.0,
                         transform=MatrixTransform(matrix).to_dict(), meta={})
            write_record(run_dir, task, rec)
    manifest = {"config": {"dataset": "brain", "dataset_params": PARAMS, "seeds": [0],
                           "naed_norm": "diagonal", "reference": "shifted"}}
    manifest_path(run_dir).write_text(json.dumps(manifest))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(figures, "FIGURES", [])  # the NAED/time figures are not tested here
        reports = build_reports(run_dir, pair_pages=1)
    return run_dir, reports


def test_tables_state_mm(brain_run):
    run_dir, reports = brain_run
    summary = pd.read_csv(run_dir / "summary.csv")
    assert set(summary["unit"]) == {"mm"}
    assert set(pd.read_csv(run_dir / "results.csv")["unit"]) == {"mm"}
    html = (run_dir / "report.html").read_text()
    methods = html[html.index("<h2>Summary per method</h2>"):]
    methods = methods[:methods.index("</p>")]
    assert "TRE mean [mm]" in methods and "TRE median [mm]" in methods
    assert "[px]" not in methods and "native pixels" not in methods
    assert "(millimetres)" in methods
    assert "Unit of landmark errors" in html
    # the shifted method's TRE: the mean of the per-pair means computed here by hand
    ds = _brain()
    means = [_mm_errors(p, _matrices(p)["shifted"]).mean()
             for p in (ds.load(i.id) for i in ds.pairs())]
    row = summary.set_index("method").loc["shifted"]
    assert row["tre_mean"] == pytest.approx(np.mean(means), rel=1e-9)
    assert 1.0 < row["tre_mean"] < 5.0  # about the shift's length, not its voxel count
    paper = (run_dir / "paper_table.md").read_text()
    assert "millimetres" in paper and "pixels" not in paper
    assert json.loads((run_dir / "metrics.json").read_text())["unit"] == "mm"
    page = (run_dir / reports.analysis.run_dir / "pairs").glob("*.html")
    text = next(iter(page)).read_text()
    assert "mean error (mm)" in text and "Errors in millimetres" in text
    assert "(px)" not in text and "three orthogonal slices" in text


def test_warped_landmarks_of_volumes_keep_three_columns(brain_run):
    from mibench.io import read_points
    from mibench.records import iter_records

    run_dir, reports = brain_run
    recs = list(iter_records(run_dir))
    assert len(reports.landmarks) == len(recs) == 4
    for rec in recs:
        path = run_dir / "warped-landmarks" / rec.task.method / f"{rec.task.pair_id}.csv"
        assert path.read_text().splitlines()[0] == ",X,Y,Z"
        got = read_points(path, columns=3)
        np.testing.assert_array_equal(got, np.asarray(rec.warped_moving_landmarks))


def test_overlays_have_three_slices_per_method(brain_run, tmp_path):
    from matplotlib.collections import LineCollection

    run_dir, reports = brain_run
    html = (run_dir / "report.html").read_text()
    section = html[html.index("<h2>Overlays</h2>"):html.index("<h2>Failures</h2>")]
    assert "three orthogonal slices" in section and " mm" in section
    assert (run_dir / "fig_overlay_methods.jpg").exists()
    a = analyse_run(run_dir)
    pair_id = a.results["pair_id"].iloc[0]
    pair = _brain().load(pair_id)
    panels, shown = method_panels(a, pair_id)
    assert [r.task.method for r in shown] == ["shifted", "identity"]
    assert " mm, NAED" in panels[1].title
    fig = draw_panels(pair, panels, "t")
    (tmp_path / "panels.png").write_bytes(__import__("mibench.reports.plotting",
                                                     fromlist=["png_bytes"]).png_bytes(fig))
    image_axes = [ax for ax in fig.axes if ax.images]
    assert len(image_axes) == 3 * len(panels)
    centre = centre_voxel(pair)
    np.testing.assert_array_equal(centre, np.round(pair.fixed_landmarks.mean(0)))
    planes = plane_order(pair.fixed_geometry)
    assert planes == ["z", "y", "x"]  # the template's voxel axes are RAS
    transforms = [np.eye(4)] + [np.asarray(r.transform["matrix"]) for r in shown]
    for r, matrix in enumerate(transforms):
        m = np.c_[pair.moving_landmarks, np.ones(len(pair.moving_landmarks))]
        mapped = (m @ np.linalg.inv(matrix).T)[:, :3]
        for c, plane in enumerate(planes):
            ax = image_axes[3 * r + c]
            normal, (h, v) = PLANES[plane]
            near = np.abs(pair.fixed_landmarks[:, normal] - centre[normal]) <= SLAB_VOXELS
            segments = [col for col in ax.collections if isinstance(col, LineCollection)]
            if not near.any():
                assert not segments
                continue
            got = np.array(segments[0].get_segments())
            np.testing.assert_allclose(got[:, 0], pair.fixed_landmarks[near][:, [h, v]])
            np.testing.assert_allclose(got[:, 1], mapped[near][:, [h, v]], atol=1e-9)
    # best/worst figure: 3 slices x (checkerboard, overlay) x (before, after)
    fig = draw_overlay(pair, MatrixTransform(transforms[1]), "t")
    assert len([ax for ax in fig.axes if ax.images]) == 12


def test_slice_warp_matches_scipy():
    """A slice of the warp equals scipy's trilinear resampling of the whole volume."""
    from scipy import ndimage

    rng = np.random.default_rng(3)
    moving = ndimage.gaussian_filter(rng.random((14, 18, 22)), 1.5).astype(np.float32)
    a = np.eye(4)
    a[:3, :3] += rng.normal(0, 0.05, (3, 3))
    a[:3, 3] = [0.7, -1.2, 0.4]
    fixed_shape = (13, 17, 20)
    d, h, w = np.mgrid[0:13, 0:17, 0:20].astype(np.float64)
    pts = np.stack([w, h, d, np.ones_like(w)], -1) @ a.T  # (x, y, z) in the moving volume
    full = ndimage.map_coordinates(moving, [pts[..., 2], pts[..., 1], pts[..., 0]], order=1,
                                   mode="grid-constant", cval=0.0)
    for plane, index in (("z", 6), ("y", 3), ("x", 11)):
        for step in (1, 2):
            got = warp_slice(moving, MatrixTransform(a), fixed_shape, plane, index, step)
            want = fixed_slice(full, plane, index, step)
            assert got.shape == want.shape
            np.testing.assert_allclose(got, want, atol=1e-5)


def _anisotropic_pair():
    rng = np.random.default_rng(5)
    from scipy import ndimage

    vol = ndimage.gaussian_filter(rng.random((12, 30, 26)), 2).astype(np.float32)
    vol = (vol - vol.min()) / (vol.max() - vol.min())
    pts = np.array([[10.0, 12, 5], [15, 20, 6], [8, 9, 7], [20, 14, 2]])
    geo = Geometry.from_spacing([0.8, 0.8, 3.0])
    return Pair("aniso", vol, vol, pts, pts + [1.0, 0, 0.5], fixed_geometry=geo,
                moving_geometry=geo)


def test_anisotropic_voxels_keep_their_shape_and_errors_are_physical():
    from mibench.reports.overlay_images import landmark_vectors

    pair = _anisotropic_pair()
    v = landmark_vectors(pair, None)
    assert v.unit == "mm"
    np.testing.assert_allclose(v.errors, np.hypot(0.8, 1.5))  # 1 voxel in x, 0.5 in z
    fig = draw_panels(pair, [Panel("before")], "t")
    aspects = {ax.get_title().split()[0]: ax.get_aspect() for ax in fig.axes if ax.images}
    assert aspects == {"axial": pytest.approx(1.0), "coronal": pytest.approx(3.0 / 0.8),
                       "sagittal": pytest.approx(3.0 / 0.8)}
    # the slab: only landmarks within SLAB_VOXELS of the slice
    s = slab_vectors(pair.fixed_landmarks, pair.fixed_landmarks, "x", 10, slab=2)
    np.testing.assert_array_equal(s.which, [0, 2])
    np.testing.assert_allclose(s.fixed, pair.fixed_landmarks[[0, 2]][:, [1, 2]])


def test_mixed_units_are_not_averaged():
    from helpers.runs import make_record

    recs = [make_record("m", "A01")[1], make_record("m", "P02", unit="mm")[1],
            make_record("n", "A01")[1], make_record("n", "P02")[1]]
    results = results_frame(recs)
    assert list(results["unit"]) == ["px", "mm", "px", "px"]
    summary = summary_frame(results).set_index("method")
    assert summary.loc["m", "unit"] == "mixed" and np.isnan(summary.loc["m", "tre_mean"])
    assert np.isnan(summary.loc["m", "tre_median"]) and np.isnan(summary.loc["m", "success_auc"])
    assert summary.loc["m", "naed_mean"] == pytest.approx(results["naed"].iloc[:2].mean())
    assert summary.loc["n", "unit"] == "px"
    assert summary.loc["n", "tre_mean"] == pytest.approx(results["tre_mean"].iloc[2:].mean())
    ev = evaluate(results)
    assert ev.unit == "mixed" and ev.unit_counts == {"px": 3, "mm": 1}
    assert any("mix units" in w for w in ev.warnings) and not ev.curves


def test_2d_records_still_report_px(tmp_path):
    run_dir = make_fake_run(tmp_path)
    # records written before the field existed: no "unit" key at all
    for path in run_dir.rglob("*.json"):
        data = json.loads(path.read_text())
        if "unit" in data:
            del data["unit"]
            path.write_text(json.dumps(data))
    build_reports(run_dir, pair_pages=0)
    assert set(pd.read_csv(run_dir / "summary.csv")["unit"]) == {"px"}
    html = (run_dir / "report.html").read_text()
    assert "TRE mean [px]" in html and "(native pixels)" in html
    assert "[mm]" not in html and "millimetres" not in html
    assert "Unit of landmark errors" not in html
    assert json.loads((run_dir / "metrics.json").read_text())["unit"] == "px"


def test_a_mixed_unit_run_says_so_in_every_artefact(tmp_path):
    run_dir = make_fake_run(tmp_path)
    for path in (run_dir / "records").rglob("*.json"):
        data = json.loads(path.read_text())
        if data.get("pair_id") == "A01" and data.get("method") == "mmi":
            data["unit"] = "mm"
            path.write_text(json.dumps(data))
    build_reports(run_dir, pair_pages=0)
    summary = pd.read_csv(run_dir / "summary.csv").set_index("method")
    assert summary.loc["mmi", "unit"] == "mixed" and np.isnan(summary.loc["mmi", "tre_mean"])
    assert summary.loc["drmime", "unit"] == "px" and summary.loc["drmime", "tre_mean"] > 0
    html = (run_dir / "report.html").read_text()
    assert "The records mix units (1 in mm, 13 in px tasks)" in html
    assert "TRE mean [mixed units]" in html
    # FIRE's success curves need one unit (their thresholds are pixels): none drawn
    assert not (run_dir / "fig_success.png").exists()
    assert "mix units" in (run_dir / "paper_table.md").read_text()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["unit"] == "mixed" and metrics["unit_counts"] == {"px": 13, "mm": 1}
    assert metrics["success"]["curves"] == {}
