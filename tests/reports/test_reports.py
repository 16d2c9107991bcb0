"""results.csv, summary.csv and report.html built from fake records."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
from helpers.runs import PAIRS, XSS, make_fake_run
from helpers.runs import make_record as _record

from mibench.metrics import pair_scores
from mibench.paths import WARPED_DIR, manifest_path
from mibench.records import iter_records, write_record
from mibench.registration import Record, RegistrationTask
from mibench.reports import analyse_run, build_reports, results_frame, write_results
from mibench.reports.results import METRICS, RESULT_COLUMNS, SUMMARY_COLUMNS


@pytest.fixture
def run_dir(tmp_path):
    return make_fake_run(tmp_path)


def test_results_csv(run_dir):
    paths = write_results(analyse_run(run_dir))
    df = pd.read_csv(paths["results"])
    assert len(df) == 3 + 6 + 3 + 2
    assert list(df.columns[:len(RESULT_COLUMNS)]) == list(RESULT_COLUMNS)
    assert {"meta_category", "meta_tags"} <= set(df.columns)
    assert set(METRICS) <= set(df.columns)
    keys = ["method", "pair_id", "seed"]
    assert df[keys].equals(df.sort_values(keys).reset_index(drop=True)[keys])
    # values round-trip from the records
    recs = {(r.task.method, r.task.pair_id, r.task.seed): r for r in iter_records(run_dir)}
    for row in df.itertuples(index=False):
        rec = recs[(row.method, row.pair_id, row.seed)]
        assert row.status == rec.status and row.wall_s == pytest.approx(rec.wall_s)
        assert json.loads(row.method_params) == rec.task.method_params
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
    paths = write_results(analyse_run(run_dir))
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
    s = analyse_run(run_dir).summary.set_index("method")
    assert s.loc["mmi", "n_failed"] == 1 and s.loc["mmi", "n_scored"] == 3
    assert s.loc["solo", "n_pairs"] == 2 and s.loc["solo", "n_scored"] == 1


def test_report_html(run_dir):
    path = build_reports(run_dir).html
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
    for piece in ("fake", "diagonal", "Machine: hostname", "0.1.0", "concurrently", "drmime",
                  "iters", "4 thread(s) each", "<li>pair P37 excluded</li>",
                  "<li>&lt;script&gt;alert(1)&lt;/script&gt;</li>"):
        assert piece in text
    summary_at = text.index("<h2>Summary per method</h2>")
    assert text.index(">drmime<", summary_at) < text.index(">identity<", summary_at)
    # the fake dataset cannot be loaded: the overlay section says so
    assert "cannot be loaded here" in text


def test_empty_run(tmp_path):
    path = build_reports(tmp_path).html
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
    manifest_path(run_dir).write_text(manifest)
    text = build_reports(run_dir).html.read_text()
    assert "<h2>Summary per method</h2>" in text and "&lt;script&gt;" in text


# --- the report's content: one test per audit finding ----------------------------------------

def _run(tmp_path, recs, monkeypatch, *, config=None, **manifest):
    """Write hand-made records and a run.json, build the reports (no figures: not what these
    tests are about), return (html, metrics.json)."""
    from mibench.reports import figures

    monkeypatch.setattr(figures, "FIGURES", [])
    for task, rec in recs:
        write_record(tmp_path, task, rec)
    cfg = {"dataset": "fake", "dataset_params": {"size": 64}, "naed_norm": "diagonal",
           **(config or {})}
    manifest_path(tmp_path).write_text(json.dumps({"config": cfg, **manifest}))
    html = build_reports(tmp_path).html.read_text()
    return html, json.loads((tmp_path / "metrics.json").read_text())


def _between(html, start, end):
    return html[html.index(start):html.index(end, html.index(start))]


def test_automatic_reference_skips_a_method_that_failed_everywhere(tmp_path, monkeypatch):
    # "failall" has the lowest mean (its initial errors) but never registered anything
    recs = [_record("identity", p, scale=1.0 / 0.7) for p in PAIRS]
    recs += [_record("failall", p, status="failed", error="ValueError: no") for p in PAIRS]
    recs += [_record("worse", p, scale=3.0) for p in PAIRS]
    html, doc = _run(tmp_path, recs, monkeypatch)
    assert doc["reference"] == "worse"
    assert "failall, which failed on every scored task" in doc["reference_reason"]
    assert doc["warnings"] == [] and doc["reference_failures"] == {"failed": 0, "scored": 3}
    # only identity left: identity it is, not the method that failed
    (tmp_path / "records" / "worse").rename(tmp_path / "worse-away")
    _html, doc = _run(tmp_path, [], monkeypatch)
    assert doc["reference"] == "identity"


def test_a_requested_reference_that_failed_everywhere_is_warned_about(tmp_path, monkeypatch):
    recs = [_record("identity", p, scale=1.0 / 0.7) for p in PAIRS]
    recs += [_record("failall", p, status="failed", error="ValueError: no") for p in PAIRS]
    recs += [_record("twin", p, scale=1.0 / 0.7) for p in PAIRS]
    html, doc = _run(tmp_path, recs, monkeypatch, config={"reference": "failall"})
    assert doc["reference"] == "failall"
    assert doc["reference_failures"] == {"failed": 3, "scored": 3}
    assert any("failall failed on 3 of 3 scored tasks" in w for w in doc["warnings"])
    paper = _between(html, "<h2>NAED against the reference</h2>", "<h2>Summary")
    assert 'class="note warn">The reference failall failed on 3 of 3 scored tasks' in paper


def test_methods_table_lists_every_method_with_records(tmp_path, monkeypatch):
    """One column per method (those with records, then those run.json selects without any),
    one row per option, values as a reader types them (no JSON), – where a method has no such
    option."""
    # run.json's config.methods is the last invocation's: identity only
    recs = [_record("identity", p, params={}) for p in PAIRS]
    recs += [_record("ncc", p, params={"iterations": 5, "levels": [4, 2]}) for p in PAIRS]
    html, _doc = _run(tmp_path, recs, monkeypatch,
                      config={"methods": {"identity": {}, "later": {"x": None}}})
    methods = _between(html, "<h3>Methods</h3>", "</table>")
    head = _between(methods, "<thead>", "</thead>")
    assert re.findall(r"<th>(\w+)", head) == ["option", "ncc", "identity", "later"]
    assert "no records" in head and "{" not in methods and "&#34;" not in methods
    assert "<tr><td>iterations</td><td>5</td><td>–</td><td>–</td></tr>" in methods
    assert "<tr><td>levels</td><td>4, 2</td><td>–</td><td>–</td></tr>" in methods
    assert "<tr><td>x</td><td>–</td><td>–</td><td>none</td></tr>" in methods
    assert "<b>" not in methods  # bold means best; a method's name is not


def test_different_seed_sets_are_said_and_warned_about(tmp_path, monkeypatch):
    recs = [_record("identity", p, scale=1.0 / 0.7) for p in PAIRS]
    recs += [_record("drmime", p, seed=s, scale=0.1) for p in PAIRS for s in (0, 1, 2)]
    html, doc = _run(tmp_path, recs, monkeypatch)
    paper = _between(html, "<h2>NAED against the reference</h2>", "<h2>Summary")
    assert "over the 3 seeds" not in paper
    assert "means over each method's seeds (seeds 0, 1, 2: drmime; seed 0: identity)" in paper
    assert any("different seeds" in w for w in doc["warnings"])
    assert doc["counts"]["seeds_per_method"] == {"drmime": [0, 1, 2], "identity": [0]}
    # the same seeds for every method: the plain note, no warning
    for s in (1, 2):
        for p in PAIRS:
            write_record(tmp_path, *_record("identity", p, seed=s, scale=1.0 / 0.7))
    html = build_reports(tmp_path).html.read_text()
    assert "are means over the 3 seeds" in html and "different seeds" not in html


def test_timing_note_uses_the_records_torch_threads(tmp_path, monkeypatch):
    recs = [_record("identity", p, info={"torch_threads": 1}) for p in PAIRS]
    recs += [_record("drmime", p, scale=0.1, info={"torch_threads": 2}) for p in PAIRS]
    html, _doc = _run(tmp_path, recs, monkeypatch, concurrent_tasks=2, threads_per_task=2,
                      invocations=[{"concurrent_tasks": 1}, {"concurrent_tasks": 2}])
    timing = _between(html, "<h2>Timing</h2>", "<h2>Overlays")
    assert "thread(s) each" not in timing and "Up to 2 tasks ran concurrently" in timing
    assert "different torch thread counts (1 thread: 3 tasks; 2 threads: 3 tasks" in timing
    df = pd.read_csv(tmp_path / "results.csv")
    assert dict(zip(df.method, df.torch_threads, strict=True)) == {"identity": 1, "drmime": 2}
    # one thread count: said as before
    for p in PAIRS:
        write_record(tmp_path, *_record("drmime", p, scale=0.1, info={"torch_threads": 1}))
    html = build_reports(tmp_path).html.read_text()
    assert "2 tasks ran concurrently, 1 thread(s) each" in html


def test_warped_landmark_names_follow_the_runs_seeds_and_stale_files_go(tmp_path):
    from mibench.reports.landmarks import write_warped_landmarks

    pts = [[1.0, 2.0], [3.0, 4.0]]
    recs = [_record("a", "p-0", seed=0, warped_moving_landmarks=pts)[1],
            _record("b", "p-0", seed=0, warped_moving_landmarks=pts)[1],
            _record("b", "p-0", seed=1, status="failed", error="x")[1]]
    root = tmp_path / WARPED_DIR
    (root / "b").mkdir(parents=True)
    (root / "b" / "p-0.csv").write_text(",X,Y\n")  # from an earlier build with one seed
    (root / "gone" / "deep").mkdir(parents=True)
    (root / "gone" / "deep" / "p-9.csv").write_text(",X,Y\n")
    written = write_warped_landmarks(tmp_path, recs)
    assert sorted(p.relative_to(root).as_posix() for p in written) == ["a/p-0.s0.csv",
                                                                        "b/p-0.s0.csv"]
    left = sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))
    assert left == ["a", "a/p-0.s0.csv", "b", "b/p-0.s0.csv"]
    # one seed in the run: plain names
    written = write_warped_landmarks(tmp_path, recs[:2])
    assert sorted(p.name for p in root.rglob("*.csv")) == ["p-0.csv", "p-0.csv"]


@pytest.mark.parametrize("norm", ["none", "diagonal"])
def test_naed_normalisation_is_named_by_the_tables(tmp_path, monkeypatch, norm):
    recs = [_record(m, p, scale=s, naed_norm=norm) for p in PAIRS
            for m, s in (("identity", 1.0), ("drmime", 0.1))]
    html, doc = _run(tmp_path, recs, monkeypatch, config={"naed_norm": norm})
    paper = _between(html, "<h2>NAED against the reference</h2>", "<h2>Summary")
    summary = _between(html, "<h2>Summary per method</h2>", "<h2>Statistics")
    assert doc["naed_norm"] == norm
    if norm == "none":
        assert "<th>NAED [px, D = 1] mean ± std</th>" in paper
        assert "NAED is the mean landmark error (TRE) in native pixels" in paper
        assert "<th>NAED [px, D = 1] mean ± std</th>" in summary
    else:
        assert "<th>NAED mean ± std</th>" in paper
        assert "D = the fixed image&#39;s diagonal" in paper


def test_one_scored_pair_says_tests_need_two(tmp_path, monkeypatch):
    recs = [_record("identity", "A01", scale=1.0 / 0.7), _record("drmime", "A01", scale=0.1)]
    html, doc = _run(tmp_path, recs, monkeypatch)
    assert any("at least two pairs" in w and "identity (1 pair)" in w for w in doc["warnings"])
    stats_html = _between(html, "<h2>Statistics</h2>", "<h2>Success")
    assert "No test for identity (1 pair): the paired tests need at least two pairs" in stats_html


def test_constant_difference_is_undefined_in_every_output(tmp_path, monkeypatch):
    """A method exactly 1 px worse than the reference on every landmark: the t-test is
    undefined (–, blank, null), not p = 0, and the report says why."""
    import pandas as pd

    recs = []
    for pair in PAIRS:
        task, ref = _record("drmime", pair, scale=0.1)
        recs.append((task, ref))
        worse = [e + 1.0 for e in ref.landmark_errors]
        recs.append(_shifted(pair, ref, worse))
    html, doc = _run(tmp_path, recs, monkeypatch)
    stats = pd.read_csv(tmp_path / "stats.csv").set_index("method")
    assert np.isnan(stats.loc["shifted", "p_ttest"]) and "constant difference" in \
        stats.loc["shifted", "note"]
    comp = next(c for c in doc["comparisons"] if c["method"] == "shifted")
    assert comp["p_ttest"] is None and "constant difference" in comp["note"]
    start = html.index("<h2>NAED against the reference</h2>")
    paper = html[start:html.index("<h2>", start + 1)]
    assert "shifted: constant difference" in paper


def _shifted(pair, ref, worse):
    task = RegistrationTask(method="shifted", method_params={}, dataset="fake",
                            dataset_params={"size": 64}, pair_id=pair, seed=0)
    rec = Record(task, status="ok", scored=True, norm_length=90.5, wall_s=0.5,
                 meta=ref.meta, landmark_errors=worse, initial_errors=ref.initial_errors,
                 metrics=pair_scores(np.array(worse), np.array(ref.initial_errors), 90.5, 90.5))
    return task, rec


def test_stats_csv_has_the_same_columns_when_nothing_is_scored(tmp_path, monkeypatch):
    import pandas as pd

    _run(tmp_path, [_record("identity", p, scored=False) for p in PAIRS], monkeypatch)
    columns = list(pd.read_csv(tmp_path / "stats.csv").columns)
    assert columns[:2] == ["metric", "method"] and columns[-1] == "friedman_mean_rank"


def test_missing_fire_category_is_named_for_mauc(tmp_path, monkeypatch):
    recs = [_record(m, p, scale=s) for p in ("S03", "P02", "S04")
            for m, s in (("identity", 1.0), ("drmime", 0.1))]
    html, doc = _run(tmp_path, recs, monkeypatch)
    assert doc["success"]["fire_categories"] is True
    assert "No scored task in FIRE category A: mAUC" in html


@pytest.mark.parametrize("norm", ["none", "diagonal"])
def test_naed_figure_captions_name_an_unnormalised_naed(norm):
    from mibench.reports.views import section_figures

    pngs = {"fig_naed.png": b"\x89PNG", "fig_time.png": b"\x89PNG"}
    naed = " ".join(f["caption"] for f in section_figures(pngs, "naed", norm))
    timing = " ".join(f["caption"] for f in section_figures(pngs, "timing", norm))
    said = "mean landmark error in pixels (--naed-norm none: D = 1)"
    assert (said in naed) == (norm == "none")
    assert said not in timing  # the time figure's caption does not mention NAED


def test_a_run_written_before_the_rename_reports_and_merges_as_naed_norm(tmp_path):
    """Records and run.json that still call the NAED normaliser ``normalisation`` are read as
    ``naed_norm``: the tables say so, and such a run merges with a new one."""
    from mibench.paths import record_files
    from mibench.reports import merge_runs

    old, new = tmp_path / "old", tmp_path / "new"
    for run, pairs in ((old, PAIRS[:2]), (new, PAIRS[2:])):
        for p in pairs:
            for m, s in (("identity", 1.0), ("drmime", 0.1)):
                write_record(run, *_record(m, p, scale=s, naed_norm="none"))
    for path in record_files(old):
        rec = json.loads(path.read_text())
        rec["normalisation"] = rec.pop("naed_norm")
        path.write_text(json.dumps(rec))
    for run, key in ((old, "normalisation"), (new, "naed_norm")):
        manifest_path(run).write_text(json.dumps({"config": {"dataset": "fake", key: "none"}}))
    reports = build_reports(old)
    assert set(pd.read_csv(old / "results.csv")["naed_norm"]) == {"none"}
    assert json.loads((old / "metrics.json").read_text())["naed_norm"] == "none"
    assert "<th>NAED [px, D = 1] mean ± std</th>" in reports.html.read_text()
    merged = merge_runs([old, new], tmp_path / "merged")
    assert json.loads(manifest_path(merged).read_text())["config"]["naed_norm"] == "none"
    assert len(build_reports(merged).analysis.records) == 6  # 3 pairs x 2 methods


def test_default_reference_follows_the_method_flags_of_the_runs_plugins():
    """A method flagged preferred_reference is the reference whenever it ran; otherwise the
    lowest mean other than the baseline methods. A plugin that no longer loads leaves the
    built-ins' flags (drmime preferred, identity a baseline) and gives its methods none."""
    from mibench.reports.reference import (
        MethodRoles,
        choose_reference,
        method_roles,
        run_registry,
    )

    table = pd.DataFrame({"a": [0.1, 0.2], "b": [0.3, 0.4], "base": [0.05, 0.05]})
    assert choose_reference(table, None)[0] == "base"  # no flags: the lowest mean
    roles = MethodRoles(preferred=frozenset({"b"}), baseline=frozenset({"base"}))
    assert choose_reference(table, None, roles=roles) == ("b", "default: b ran")
    assert choose_reference(table[["a", "base"]], None, roles=roles) == (
        "a", "b did not run: lowest mean NAED, excluding the base baseline")
    roles = method_roles(run_registry({"plugins": ["surely.not.a.plugin"]}))
    assert "drmime" in roles.preferred and "identity" in roles.baseline
