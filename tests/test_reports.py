"""results.csv, summary.csv and report.html built from fake records."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from mibench.metrics import pair_scores
from mibench.records import Record, Task, iter_records, write_record
from mibench.reports import build_reports, results_frame, summary_frame, write_results
from mibench.reports.results import METRICS, RESULT_COLUMNS, SUMMARY_COLUMNS, load_results

XSS = "<script>alert(1)</script>"
PAIRS = ("A01", "P02", "S03")


def _record(method, pair, seed=0, *, status="ok", error=None, scored=True, scale=1.0,
            wall=0.5, params=None):
    task = Task(method=method, method_params=params or {"lr": 0.01}, dataset="fake",
                dataset_params={"size": 64}, pair_id=pair, seed=seed)
    rng = np.random.default_rng(abs(hash((method, pair, seed))) % 2**32)
    init = rng.uniform(5, 20, 6)
    errs = init if status == "failed" else init * scale * rng.uniform(0.2, 1.2, 6)
    values = dict(status=status, error=error, scored=scored, wall_s=wall, device_s=None,
                  meta={"category": pair[0], "tags": ["a", "b"]}, norm_length=90.5)
    if scored:
        values.update(landmark_errors=list(errs), initial_errors=list(init),
                      metrics=pair_scores(errs, init, 90.5, 90.5))
    return task, Record.for_task(task, **values)


def make_fake_run(tmp_path, reference=None):
    """A run directory of fake records: identity, drmime (two seeds), mmi (one failed task),
    solo (one scored pair and one unscored one); pairs carry FIRE categories."""
    recs = []
    for i, pair in enumerate(PAIRS):
        recs.append(_record("identity", pair, scale=1.0 / 0.7, wall=1e-3))
        recs.append(_record("drmime", pair, scale=0.1, wall=2.0 + i,
                            params={"lr": [0.01, 0.001], "iters": 500}))
        recs.append(_record("drmime", pair, seed=1, scale=0.1, wall=3.0 + i,
                            params={"lr": [0.01, 0.001], "iters": 500}))
        status, error = ("failed", f"RuntimeError: {XSS} & co") if i == 1 else ("ok", None)
        recs.append(_record("mmi", pair, scale=0.3, status=status, error=error, wall=0.2 * (i + 1)))
    recs.append(_record("solo", "A01", wall=7.0))            # one pair: std undefined
    recs.append(_record("solo", "Z99", scored=False, wall=8.0))  # registered, not scored
    for task, rec in recs:
        write_record(tmp_path, task, rec)
    manifest = {"config": {"dataset": "fake", "dataset_params": {"size": 64},
                           "methods": {"identity": {}, "mmi": {"bins": 32}, XSS: {}},
                           "seeds": [0, 1], "device": "cpu", "workers": 2, "timeout": 60.0,
                           "normalisation": "diagonal", "reference": reference},
                "versions": {"mibench": "0.1.0", "python": "3.11"},
                "device": {"name": "cpu", "type": "cpu"},
                "machine": {"hostname": "box", "platform": "linux", "cpus": 8},
                "created": "2024-01-01T00:00:00", "concurrent_tasks": 2,
                "threads_per_task": 4, "dataset_notes": ["pair P37 excluded", XSS]}
    (tmp_path / "run.json").write_text(json.dumps(manifest))
    return tmp_path


@pytest.fixture
def run_dir(tmp_path):
    return make_fake_run(tmp_path)


def test_results_csv(run_dir):
    paths = write_results(run_dir)
    df = pd.read_csv(paths["results"])
    assert len(df) == 3 + 6 + 3 + 2
    assert list(df.columns[:len(RESULT_COLUMNS)]) == list(RESULT_COLUMNS)
    assert {"meta_category", "meta_tags"} <= set(df.columns)
    assert set(METRICS) <= set(df.columns)
    keys = ["method", "pair_id", "seed"]
    assert df[keys].equals(df.sort_values(keys).reset_index(drop=True)[keys])
    # values round-trip from the records
    recs = {(r.method, r.pair_id, r.seed): r for r in iter_records(run_dir)}
    for row in df.itertuples(index=False):
        rec = recs[(row.method, row.pair_id, row.seed)]
        assert row.status == rec.status and row.wall_s == pytest.approx(rec.wall_s)
        assert json.loads(row.method_params) == rec.method_params
        assert row.meta_category == rec.meta["category"]
        assert json.loads(row.meta_tags) == ["a", "b"]
        if rec.scored:
            assert row.n_landmarks == 6
            for m in METRICS:
                assert getattr(row, m) == pytest.approx(rec.metrics[m])
        else:
            assert row.n_landmarks == 0 and np.isnan(row.naed)
    assert df.loc[df.status == "failed", "error"].str.contains(XSS, regex=False).all()


def test_summary_matches_recomputation(run_dir):
    paths = write_results(run_dir)
    df = pd.read_csv(paths["results"])
    summary = pd.read_csv(paths["summary"])
    assert list(summary.columns) == list(SUMMARY_COLUMNS)
    for row in summary.itertuples(index=False):
        g = df[df.method == row.method]
        naed = g.naed.to_numpy()
        naed = naed[~np.isnan(naed)]
        assert row.n_pairs == len(g)
        assert row.n_scored == g.scored.sum()
        assert row.n_failed == (g.status == "failed").sum()
        assert row.naed_mean == pytest.approx(np.mean(naed))
        assert row.naed_median == pytest.approx(np.median(naed))
        if len(naed) > 1:
            assert row.naed_std == pytest.approx(np.std(naed, ddof=1))
        else:
            assert np.isnan(row.naed_std)
        assert row.tre_mean == pytest.approx(np.nanmean(g.tre_mean))
        assert row.tre_median == pytest.approx(np.nanmedian(g.tre_median))
        assert row.robustness_mean == pytest.approx(np.nanmean(g.robustness))
        assert row.time_median_s == pytest.approx(np.median(g.wall_s))
        assert row.time_total_s == pytest.approx(np.sum(g.wall_s))
    order = list(summary.method)
    assert order[-1] == "identity"
    assert list(summary.naed_mean[:-1]) == sorted(summary.naed_mean[:-1])
    # the single-pair std is written as an empty cell
    solo = paths["summary"].read_text().splitlines()[1 + order.index("solo")].split(",")
    assert solo[SUMMARY_COLUMNS.index("naed_std")] == ""


def test_failed_pairs_count(run_dir):
    s = summary_frame(load_results(run_dir)).set_index("method")
    assert s.loc["mmi", "n_failed"] == 1 and s.loc["mmi", "n_scored"] == 3
    assert s.loc["solo", "n_pairs"] == 2 and s.loc["solo", "n_scored"] == 1


def test_report_html(run_dir):
    path = build_reports(run_dir)
    assert path == run_dir / "report.html"
    text = path.read_text()
    assert XSS not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; co" in text
    assert "<script" not in text.lower()
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", text, re.I)
    assert "<link" not in text.lower()
    assert text.count('src="data:image/png;base64,') == 4
    for name in ("fig_time.png", "fig_naed.png", "fig_time_naed.png", "fig_success.png",
                 "results.csv", "summary.csv", "stats.csv", "metrics.json"):
        assert (run_dir / name).stat().st_size > 0
    assert (run_dir / "fig_time.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for piece in ("fake", "diagonal", "Machine hostname", "0.1.0", "concurrently", "drmime",
                  "bins", "4 thread(s) each", "<li>pair P37 excluded</li>",
                  "<li>&lt;script&gt;alert(1)&lt;/script&gt;</li>"):
        assert piece in text
    summary_at = text.index("<h2>Summary per method</h2>")
    assert text.index(">drmime<", summary_at) < text.index(">identity<", summary_at)
    # the fake dataset cannot be loaded: the overlay section says so
    assert "cannot be loaded here" in text


def test_empty_run(tmp_path):
    path = build_reports(tmp_path)
    assert path.exists() and (tmp_path / "fig_naed.png").exists()
    assert pd.read_csv(tmp_path / "results.csv").empty
    assert list(pd.read_csv(tmp_path / "summary.csv").columns) == list(SUMMARY_COLUMNS)
    assert results_frame([]).columns[0] == "method"


@pytest.mark.parametrize("manifest", ['{"config": {"dataset": "x"}}', "{}", "[1, 2]",
                                      "not json", '{"config": [], "device": "cuda",'
                                      ' "machine": null, "versions": 3}'])
def test_partial_manifest(run_dir, manifest, monkeypatch):
    from mibench.reports import figures

    monkeypatch.setattr(figures, "FIGURES", [])  # figures do not read run.json; saves time
    (run_dir / "run.json").write_text(manifest)
    text = build_reports(run_dir).read_text()
    assert "<h2>Summary per method</h2>" in text and "&lt;script&gt;" in text
