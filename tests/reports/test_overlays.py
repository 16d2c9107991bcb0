"""Overlays: error vectors recomputed by hand from the records' matrices, every method drawn,
failed tasks shown with their initial error, a lost dataset said in a note."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mibench.paths import manifest_path
from mibench.records import iter_records
from mibench.reports import build_reports
from mibench.reports.analysis import analyse_run
from mibench.reports.overlay_images import (
    identity_strided,
    landmark_vectors,
    sample_matrix,
    warp_strided,
)
from mibench.reports.overlays import (
    PairSource,
    draw_panels,
    make_overlays,
    method_panels,
    params_key,
)
from mibench.runner import run_benchmark
from mibench.settings import RunSettings
from mibench.transform import MatrixTransform, transform_from_dict

METHODS = ("identity", "noisy", "oracle", "raises")


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    from mibench.reports import figures

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(figures, "FIGURES", [])  # the NAED/time figures are not tested here
        cfg = RunSettings(methods=",".join(METHODS), dataset="toy",
                          dataset_options={"pairs": 3, "size": 32}, workers=0,
                          out=str(tmp_path_factory.mktemp("toy")), reference="noisy",
                          plugins=["helpers.fakeplugin"])
        return run_benchmark(cfg, progress=False).run_dir


def _toy_pair(pair_id):
    from helpers.fakeplugin import load_toy

    return load_toy(None, pairs=3, size=32).load(pair_id)


def _by_hand(matrix, pair):
    """``T⁻¹(m_k)`` with plain numpy, and ``‖T⁻¹(m_k) - f_k‖`` in native pixels."""
    m = np.c_[pair.moving_landmarks, np.ones(len(pair.moving_landmarks))]
    h = m @ np.linalg.inv(np.asarray(matrix)).T
    mapped = h[:, :2] / h[:, 2:]
    return mapped, np.hypot(*(mapped - pair.fixed_landmarks).T) * pair.native_scale


def test_error_vectors_match_a_hand_computation(toy_run):
    recs = [r for r in iter_records(toy_run) if r.task.method == "noisy"]
    assert len(recs) == 3
    for rec in recs:
        pair = _toy_pair(rec.task.pair_id)
        mapped, errors = _by_hand(rec.transform["matrix"], pair)
        v = landmark_vectors(pair, transform_from_dict(rec.transform))
        np.testing.assert_allclose(v.fixed, pair.fixed_landmarks)
        np.testing.assert_allclose(v.mapped, mapped, atol=1e-9)
        np.testing.assert_allclose(v.errors, errors, rtol=1e-9)
        # the same numbers as the record, which the tables print
        np.testing.assert_allclose(errors, rec.landmark_errors, rtol=1e-9)
        np.testing.assert_allclose(mapped * pair.native_scale, rec.warped_moving_landmarks,
                                   atol=1e-9)


def test_drawn_vectors_join_fixed_and_mapped_landmarks(toy_run):
    from matplotlib.collections import LineCollection

    a = analyse_run(toy_run)
    pair_id = "toy-1"
    panels, shown = method_panels(a, pair_id)
    pair = _toy_pair(pair_id)
    fig = draw_panels(pair, panels, "t", max_side=16)  # a 32 px pair at stride 2
    axes = [ax for ax in fig.axes if ax.get_title()]
    assert len(axes) == len(panels) == len(shown) + 1
    # panel 0 is "before": the identity; then one per shown record
    transforms = [None] + [transform_from_dict(r.transform) for r in shown]
    for ax, rec, t in zip(axes, [None, *shown], transforms, strict=True):
        if t is None:
            mapped = pair.moving_landmarks
        else:
            mapped, _ = _by_hand(t.matrix, pair)
        (vectors,) = [c for c in ax.collections if isinstance(c, LineCollection)]
        got = np.array(vectors.get_segments())  # (K, 2 ends, (x, y))
        assert got.shape == (len(pair.fixed_landmarks), 2, 2)
        np.testing.assert_allclose(got[:, 0], pair.fixed_landmarks / 2, atol=1e-9)
        np.testing.assert_allclose(got[:, 1], mapped / 2, atol=1e-9)
        if rec is not None:
            assert rec.task.method in ax.get_title()


def test_every_method_gets_an_overlay_and_titles_give_the_table_units(toy_run):
    html = (toy_run / "report.html").read_text()
    section = html[html.index("<h2>Overlays</h2>"):html.index("<h2>Failures</h2>")]
    a = analyse_run(toy_run)
    overlays, note = make_overlays(a)
    assert note == ""
    assert [o.label for o in overlays] == ["best", "worst", "methods"]
    grid = overlays[-1]
    assert set(grid.methods) == set(METHODS) and grid.methods[0] == "noisy"  # reference first
    assert grid.name == "fig_overlay_methods.jpg" and grid.mime == "image/jpeg"
    assert (toy_run / grid.name).read_bytes()[:3] == b"\xff\xd8\xff"  # a JPEG
    assert grid.name in section and "cyan" in section
    assert section.count('src="data:image/jpeg;base64,') == 1
    assert section.count('src="data:image/png;base64,') == 2
    # best/worst: the caption gives the record's mean error in px next to its NAED
    rec = {r.key: r for r in a.records}
    for o in overlays[:2]:
        task = a.results[(a.results.method == "noisy") & (a.results.pair_id == o.pair_id)]
        r = rec[task.key.iloc[0]]
        assert o.tre_px == pytest.approx(np.mean(r.landmark_errors))
        assert o.naed == pytest.approx(np.mean(r.landmark_errors) / r.norm_length)
    # a subset of methods is drawn when asked for
    overlays, _ = make_overlays(a, methods=["oracle", "identity"])
    assert overlays[-1].methods == ("oracle", "identity")


def test_a_failed_task_shows_its_initial_error(toy_run):
    a = analyse_run(toy_run)
    panels, shown = method_panels(a, "toy-0")
    failed = [(p, r) for p, r in zip(panels[1:], shown, strict=True) if r.task.method == "raises"]
    ((panel, rec),) = failed
    assert rec.status == "failed" and panel.transform is None
    initial = float(np.mean(rec.initial_errors))
    assert f"FAILED, initial error {initial:.4g} px" in panel.title
    pair = _toy_pair("toy-0")
    _, by_hand = _by_hand(np.eye(3), pair)
    np.testing.assert_allclose(landmark_vectors(pair, panel.transform).errors, by_hand)
    np.testing.assert_allclose(by_hand, rec.initial_errors)
    assert panels[0].title.startswith("before registration") and f"{initial:.4g} px" in \
        panels[0].title


@pytest.mark.parametrize("moving_shape", [(20, 30), (40, 17), (33, 33)])
def test_identity_display_is_the_identity_warp(moving_shape):
    moving = np.random.default_rng(1).random(moving_shape).astype(np.float32)
    for step in (1, 2, 3):
        expected = MatrixTransform.identity().warp(moving, (33, 25))[::step, ::step]
        np.testing.assert_allclose(identity_strided(moving, (33, 25), step), expected,
                                   atol=1e-5)  # grid_sample rounds in float32
        np.testing.assert_allclose(warp_strided(moving, None, (33, 25), step), expected,
                                   atol=1e-5)  # grid_sample rounds in float32


@pytest.mark.parametrize("matrix", [
    [[0.97, 0.05, 2.3], [-0.04, 1.02, -1.7], [0, 0, 1]],  # affine, partly outside
    [[1, 0, -10.5], [0, 1, 20.25], [0, 0, 1]],  # a shift by fractions of a pixel
    [[1, 0, 0], [0, 1, 0], [0.05, 0, -1]],  # perspective: part of the grid behind the camera
])
def test_display_warp_is_the_torch_warp(matrix):
    moving = np.random.default_rng(2).random((41, 37)).astype(np.float32)
    t = MatrixTransform(matrix)
    for shape in ((30, 27), (50, 60)):
        np.testing.assert_allclose(sample_matrix(moving, t.matrix, shape),
                                   t.warp(moving, shape), atol=1e-5)


def test_pairs_are_loaded_once_for_overlays_and_pages(toy_run):
    a = analyse_run(toy_run)
    source = PairSource(a)
    rec = a.records[0]
    assert source.load("toy-0", params_key(rec)) is source.load("toy-0", params_key(rec))


def test_a_lost_dataset_is_a_note(tmp_path, toy_run):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(toy_run, run)
    manifest = json.loads(manifest_path(run).read_text())
    manifest["config"]["plugins"] = []  # the toy dataset's plugin is gone
    manifest_path(run).write_text(json.dumps(manifest))
    reports = build_reports(run)
    text = reports.html.read_text()
    assert "cannot be loaded here" in text and "fig_overlay" not in text
    assert not list(run.glob("fig_overlay_*")) and not list((run / "pairs").glob("*.html"))
    assert "pairs/" not in text


def test_a_transform_that_cannot_be_rebuilt_gets_a_note_panel(tmp_path, toy_run):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(toy_run, run)
    for path in (run / "records" / "oracle").glob("*.json"):
        rec = json.loads(path.read_text())
        rec["transform"] = {"type": "shift", "dx": 1.0}  # a plugin's own transform type
        path.write_text(json.dumps(rec))
    a = analyse_run(run)
    panels, shown = method_panels(a, "toy-0")
    (panel,) = [p for p, r in zip(panels[1:], shown, strict=True) if r.task.method == "oracle"]
    assert panel.transform is None and "cannot be" in panel.note
    fig = draw_panels(_toy_pair("toy-0"), panels, "t")
    assert any("cannot be" in t.get_text() for ax in fig.axes for t in ax.texts)
    assert "oracle" in make_overlays(a)[0][-1].methods


def test_overlay_methods_must_have_records(toy_run):
    from mibench.errors import UserError

    with pytest.raises(UserError, match="no records of 'nope'"):
        build_reports(toy_run, overlay_methods=["oracle", "nope"])
