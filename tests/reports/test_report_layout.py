"""The report as a reader meets it (issue 20): the main result first, bold only for the best, the
reference marked otherwise, one definition of NAED mean ± std, protocol metrics only on their
data, deterministic methods reused over seeds, and timings that say what to trust."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
from helpers.runs import PAIRS
from helpers.runs import make_record as _record

from mibench.paths import manifest_path
from mibench.records import write_record
from mibench.reports import build_reports
from mibench.reports.figures import fig_success


@pytest.fixture(autouse=True)
def _no_figures(monkeypatch):
    """Most of these tests are about text: drawing is slow on a shared machine."""
    from mibench.reports import figures

    monkeypatch.setattr(figures, "FIGURES", [])


def _build(tmp_path, recs, config=None, **manifest):
    for task, rec in recs:
        write_record(tmp_path, task, rec)
    cfg = {"dataset": "fake", "naed_norm": "diagonal", "dataset_params": {"size": 64},
           **(config or {})}
    manifest_path(tmp_path).write_text(json.dumps({"config": cfg, **manifest}))
    return build_reports(tmp_path)


def _section(html, heading):
    start = html.index(f"<h2>{heading}</h2>") if f"<h2>{heading}</h2>" in html else \
        html.index(heading)
    nxt = html.find("<h2", start + 1)
    return html[start:nxt if nxt > 0 else len(html)]


def _worse_reference(tmp_path):
    """drmime (the reference, requested) is worse than nmi on every pair."""
    recs = [_record("drmime", p, scale=0.5) for p in PAIRS]
    recs += [_record("nmi", p, scale=0.05) for p in PAIRS]
    recs += [_record("identity", p, scale=1.0 / 0.7) for p in PAIRS]
    return _build(tmp_path, recs, {"reference": "drmime"})


def test_bold_is_the_best_and_the_reference_is_marked_otherwise(tmp_path):
    reports = _worse_reference(tmp_path)
    ev = reports.analysis.evaluation
    assert ev.reference == "drmime" and [r.method for r in ev.paper][:2] == ["drmime", "nmi"]
    paper = _section(reports.html.read_text(), "NAED against the reference")
    rows = re.findall(r"<tr[^>]*><td>(.*?)</td><td>(.*?)</td>", paper)
    cells = {re.sub(r"<[^>]+>|\s*\(ref\.\)", "", name).strip(): (name, value)
             for name, value in rows}
    assert cells["nmi"][0] == "<b>nmi</b>" and cells["nmi"][1].startswith("<b>")
    assert "<b>" not in "".join(cells["drmime"]) and "(ref.)" in cells["drmime"][0]
    assert "<b>" not in "".join(cells["identity"])
    assert "Bold: best (lowest NAED mean). (ref.): the reference method drmime" in paper
    # Markdown (what the CLI prints) and paper_table.md / .tex say the same
    md = reports.naed_table_markdown
    assert "| drmime (ref.) | " in md and "| **nmi** | **" in md and "**drmime" not in md
    assert md.endswith("Bold: best (lowest NAED mean). (ref.): the reference method drmime, "
                       "the one the p-values test the other methods against.")
    tex = (tmp_path / "paper_table.tex").read_text()
    assert "\ndrmime$^\\dagger$ & $" in tex and "\\textbf{nmi} & {\\boldmath $" in tex
    assert "$^\\dagger$: the reference method drmime" in tex
    assert "(ref.): the reference method drmime" in (tmp_path / "paper_table.md").read_text()


def test_bold_in_the_summary_and_group_tables_is_the_best_of_each_column(tmp_path):
    html = _worse_reference(tmp_path).html.read_text()
    summary = _section(html, "Summary per method")
    head = re.findall(r"<th>(.*?)</th>", summary)
    rows = {r[0]: r[1:] for r in (re.findall(r"<td>(.*?)</td>", tr)
                                  for tr in re.findall(r"<tr><td>.*?</tr>", summary))}
    naed = head.index("NAED mean ± std")
    assert rows["nmi"][naed - 1].startswith("<b>")
    assert not rows["drmime"][naed - 1].startswith("<b>")
    robust = head.index("robustness")  # higher is better
    assert rows["nmi"][robust - 1].startswith("<b>")
    assert all("<b>" not in cells[0] for cells in rows.values())  # never bold for a name
    groups = _section(html, "By group")
    assert groups.count("<b>") == len(PAIRS)  # one best per category (one pair each)


def test_main_result_comes_before_the_run_details(tmp_path):
    html = _worse_reference(tmp_path).html.read_text()
    result = html.index("<h2>NAED against the reference</h2>")
    assert result < html.index("<h2>Summary per method</h2>") < html.index('<h2 id="run">')
    assert html.index('<h2 id="run">') > html.index("<h2>Timing</h2>")
    # nothing of the run's configuration above the result but the one-line summary
    assert "Dataset options" not in html[:result] and "<table" not in html[:result]
    assert 'href="#run"' in html[:result]


def test_naed_mean_std_is_defined_once_per_page(tmp_path):
    html = _worse_reference(tmp_path).html.read_text()
    assert html.count("mean landmark error / D") == 1
    assert html.count('id="naed-def"') == 1 and "<dfn>NAED mean ± std</dfn>" in html
    assert html.index('id="naed-def"') < html.index("<table")  # before the first table
    for heading in ("Summary per method", "By group"):
        assert 'href="#naed-def"' in _section(html, heading)


def test_parameters_read_as_tables_without_json(tmp_path):
    recs = [_record(m, p, params=params, scale=scale) for p in PAIRS
            for m, params, scale in (("drmime", {"lr": [0.01, 0.001], "preset": None}, 0.1),
                                     ("nmi", {"bins": 32}, 0.5))]
    html = _build(tmp_path, recs, {"dataset_params": {"families": "fundus,histology",
                                                      "seed": 0}}).html.read_text()
    run = html[html.index('<h2 id="run">'):]
    assert "<tr><td>families</td><td>fundus,histology</td></tr>" in run
    assert "<tr><td>lr</td><td>0.01, 0.001</td><td>–</td></tr>" in run
    assert "<tr><td>preset</td><td>none</td><td>–</td></tr>" in run
    assert "<tr><td>bins</td><td>–</td><td>32</td></tr>" in run
    assert "{" not in run and "&#34;" not in run
    assert "break-all" not in html  # nothing broken mid-word


def _protocol_run(tmp_path, dataset):
    """Pairs with FIRE categories (A01, P02, S03) under ``dataset``'s name."""
    recs = [_record(m, p, scale=s) for p in PAIRS
            for m, s in (("drmime", 0.1), ("nmi", 0.3), ("identity", 1.0 / 0.7))]
    return _build(tmp_path, recs, {"dataset": dataset})


def test_fire_metrics_only_on_fire_data(tmp_path):
    """The synthetic dataset declares no protocol: its pairs' S/P/A-like names do not make
    FIRE's success AUC or ANHIR's ranks apply; FIRE data shows them."""
    synthetic = _protocol_run(tmp_path / "s", "synthetic")
    assert synthetic.analysis.protocol == ""
    html = synthetic.html.read_text()
    assert "<h2>Success rate</h2>" not in html and "mAUC" not in html
    assert "AUC 1–25 px" not in html and "rank median rTRE" not in html
    summary = _section(html, "Summary per method")
    assert ("does not define them: FIRE&#39;s success AUC and ANHIR&#39;s rTRE and ranks "
            "(still in <code>summary.csv</code>)") in summary
    md = (tmp_path / "s" / "paper_table.md").read_text()
    assert "mAUC" not in md and "rTRE" not in md
    assert fig_success(synthetic.analysis) is None  # no fig_success.png either
    # the CSVs keep their columns
    assert "success_auc" in pd.read_csv(tmp_path / "s" / "summary.csv").columns
    fire = _protocol_run(tmp_path / "f", "fire")
    assert fire.analysis.protocol == "fire"
    html = fire.html.read_text()
    assert "<h2>Success rate</h2>" in html and "AUC 1–25 px" in html and "mAUC" in html
    assert "rank median rTRE" not in html  # ANHIR's ranks only on ANHIR data
    assert "| S | P | A | mAUC |" in (tmp_path / "f" / "paper_table.md").read_text()
    assert fig_success(fire.analysis) is not None


def test_anhir_ranks_only_on_anhir_data(tmp_path):
    recs = [_record(m, p, scale=s) for p in PAIRS
            for m, s in (("drmime", 0.1), ("nmi", 0.3))]
    anhir = _build(tmp_path, recs, {"dataset": "anhir"})
    html = anhir.html.read_text()
    assert "rank median rTRE" in html and "AUC 1–25 px" not in html
    assert "| median rTRE |" in (tmp_path / "paper_table.md").read_text()
    # A BIRL cover table is ANHIR's format, scored as ANHIR scores it.
    cover = _build(tmp_path / "c", recs, {"dataset": "cover"})
    assert cover.analysis.protocol == "anhir"
    assert "rank median rTRE" in cover.html.read_text()


def test_a_deterministic_method_is_reused_for_every_seed(tmp_path):
    """identity ran once (seed 0) in a 3-seed run: its record stands for seeds 1 and 2, so
    the paired tests pair it with drmime over every (pair, seed) and nothing is unpaired."""
    recs = [_record("identity", p, scale=1.0 / 0.7, wall=1e-3) for p in PAIRS]
    recs += [_record("drmime", p, seed=s, scale=0.1 * (s + 1)) for p in PAIRS for s in (0, 1, 2)]
    reports = _build(tmp_path, recs, {"seeds": [0, 1, 2], "single_seed_methods": ["identity"],
                                      "reference": "drmime"})
    a = reports.analysis
    ident = a.results[a.results["method"] == "identity"].set_index(["pair_id", "seed"])
    assert len(ident) == 9 and a.single_seed == {"identity": [1, 2]}
    for p in PAIRS:
        assert ident.loc[(p, 1), "naed"] == ident.loc[(p, 2), "naed"] == ident.loc[(p, 0), "naed"]
        assert ident.loc[(p, 1), "reused_seed"] == 0 and pd.isna(ident.loc[(p, 1), "wall_s"])
    ev = a.evaluation
    assert ev.seeds == {"drmime": [0, 1, 2], "identity": [0, 1, 2]}
    test = next(t for t in ev.tests if t.method == "identity")
    assert test.n_pairs == len(PAIRS) and test.n_unpaired == 0
    assert not any("different seeds" in w for w in ev.warnings)
    # the per-pair value of identity is its one record's value (the mean of three copies)
    for p in PAIRS:
        assert ev.table.loc[p, "identity"] == pytest.approx(ident.loc[(p, 0), "naed"])
    html = reports.html.read_text()
    said = "deterministic: identity run once with seed 0, result reused for seeds 1, 2"
    assert said in _section(html, "NAED against the reference") and said in html[
        html.index('<h2 id="run">'):]
    assert "<td>18 (3 pairs; 6 reuse a deterministic method&#39;s one run; 0 failed;" in html
    results = pd.read_csv(tmp_path / "results.csv")
    assert results["reused_seed"].notna().sum() == 6  # the copies say so in results.csv
    timing = _section(html, "Timing")
    assert "6 tasks reuse the result of a deterministic method" in timing
    assert re.search(r"<tr><td>identity</td><td>3</td>", timing)  # timed once per pair


def _costed(method, pair, *, wall, cpu, contended, load=0.0):
    return _record(method, pair, wall=wall, cpu_s=cpu, peak_rss_mb=300.0 + cpu, load_cpus=load,
                   cpus=8, contended=contended)


def test_timing_says_what_to_trust_and_how_many_tasks_were_contended(tmp_path):
    recs = [_costed("drmime", p, wall=4.0 + i, cpu=2.0, contended=i == 0, load=3.0)
            for i, p in enumerate(PAIRS)]
    recs += [_costed("nmi", p, wall=1.0, cpu=0.5, contended=i == 2, load=1.0)
             for i, p in enumerate(PAIRS)]
    reports = _build(tmp_path, recs)
    timing = _section(reports.html.read_text(), "Timing")
    assert ("2 of 6 tasks ran while other processes competed for the CPUs: their wall times are "
            "inflated, CPU time is less affected.") in timing
    assert "On the CPU, trust the CPU time" in timing
    assert "threads each" not in timing  # these records do not say how many threads ran
    assert "Other processes kept on average 2 of the machine&#39;s 8 CPUs busy" in timing
    head = re.findall(r"<th>(.*?)</th>", timing)
    assert head[:5] == ["method", "tasks run", "median wall [s]", "median CPU [s]", "CPU / wall"]
    assert "median device [s]" not in head and head[-1] == "contended"
    row = re.search(r"<tr><td>drmime</td>(.*?)</tr>", timing).group(1)
    cells = re.findall(r"<td>(.*?)</td>", row)
    assert cells[:4] == ["3", "5", "2", "0.4"] and cells[-1] == "1 of 3"
    assert "302" in cells  # median peak RSS [MiB]


def test_contended_multithreaded_tasks_are_said_to_spin():
    import pandas as pd

    from mibench.reports.timing import contention_text

    frame = pd.DataFrame({"n_contention_known": [4], "n_contended": [2]})
    rows = pd.DataFrame({"contended": [True, True, False, None], "torch_threads": [2, 2, 2, 2]})
    text = contention_text(frame, rows)
    assert text.startswith("2 of 4 tasks ran while other processes competed")
    assert "computed with 2 threads each" in text and "OMP_WAIT_POLICY=PASSIVE" in text
    single = rows.assign(torch_threads=1)
    assert "threads each" not in contention_text(frame, single)


def test_timing_of_old_records_says_what_it_lacks(tmp_path):
    recs = [_record("drmime", p, wall=2.0) for p in PAIRS]
    timing = _section(_build(tmp_path, recs).html.read_text(), "Timing")
    assert "do not say whether other processes competed for the CPUs" in timing
    assert "carry only wall time" in timing and "median CPU" not in timing


def test_timing_figure_draws_cpu_time_and_contended_tasks_hollow(tmp_path):
    from mibench.reports.analysis import analyse_run
    from mibench.reports.figures import fig_time

    recs = [_costed("drmime", p, wall=4.0, cpu=2.0, contended=i == 0)
            for i, p in enumerate(PAIRS)]
    for task, rec in recs:
        write_record(tmp_path, task, rec)
    fig = fig_time(analyse_run(tmp_path))
    wall, cpu = fig.axes[:2]
    assert "wall" in wall.get_xlabel() and "CPU" in cpu.get_xlabel()
    for ax, expected in ((wall, 4.0), (cpu, 2.0)):
        hollow = [c for c in ax.collections if len(c.get_offsets())
                  and np.all(c.get_facecolors()[:, 3] == 0)]
        assert len(hollow) == 1 and len(hollow[0].get_offsets()) == 1
        assert hollow[0].get_offsets()[0][0] == pytest.approx(expected)


def test_run_start_end_and_duration_are_shown(tmp_path):
    recs = [_record("drmime", p) for p in PAIRS]
    inv = [{"started": "2026-12-07T18:00:00+00:00", "finished": "2026-12-07T18:02:05+00:00",
            "duration_s": 125.0, "concurrent_tasks": 2},
           {"started": "2026-12-07T19:00:00+00:00", "finished": "2026-12-07T19:00:30+00:00",
            "duration_s": 30.0, "concurrent_tasks": 2}]
    html = _build(tmp_path, recs, started=inv[0]["started"], finished=inv[1]["finished"],
                  duration_s=155.0, invocations=inv).html.read_text()
    run = html[html.index('<h2 id="run">'):]
    assert "<th scope=\"row\">Started</th><td>2026-12-07 18:00:00 UTC</td>" in run
    assert "<th scope=\"row\">Finished</th><td>2026-12-07 19:00:30 UTC</td>" in run
    assert "<th scope=\"row\">Duration</th><td>2 min 35 s</td>" in run
    assert "<td>2 min 5 s</td>" in run and "<td>30 s</td>" in run  # one row per invocation
    assert "ran 2026-12-07 18:00:00 to 19:00:30 UTC (2 min 35 s)" in html
    # an old run.json: no such rows, and nothing fails
    old = _build(tmp_path / "old", recs, created="2024-01-01T00:00:00").html.read_text()
    assert "Duration</th>" not in old and "Started</th><td>2024-01-01 00:00:00</td>" in old


def test_a_merge_keeps_the_methods_that_ignore_the_seed(tmp_path):
    from mibench.reports.merge import merged_manifest

    manifests = [{"config": {"seeds": [0, 1], "single_seed_methods": ["identity"]}},
                 {"config": {"seeds": [2], "single_seed_methods": ["ncc", "identity"]}},
                 {"config": {"seeds": [0]}}]
    merged = merged_manifest([tmp_path / "a", tmp_path / "b", tmp_path / "c"], manifests, {})
    assert merged["config"]["single_seed_methods"] == ["identity", "ncc"]
    assert merged["config"]["seeds"] == [0, 1, 2]


def test_on_cuda_the_device_time_is_the_one_to_trust(tmp_path):
    recs = []
    for p in PAIRS:
        task, rec = _record("drmime", p, wall=3.0, cpu_s=3.1, peak_rss_mb=900.0,
                            peak_gpu_mb=1234.5, device="cuda:0", contended=False)
        rec.device_s = 2.5  # the helper sets None (a CPU run)
        recs.append((task, rec))
    timing = _section(_build(tmp_path, recs).html.read_text(), "Timing")
    assert "Trust the device time for tasks that ran on CUDA" in timing
    head = re.findall(r"<th>(.*?)</th>", timing)
    assert "median device [s]" in head and "max peak GPU [MiB]" in head
    cells = re.findall(r"<td>(.*?)</td>", re.search(r"<tr><td>drmime</td>.*?</tr>",
                                                   timing).group(0))
    assert cells[head.index("median device [s]")] == "2.5"
    assert cells[head.index("max peak GPU [MiB]")] == "1234"  # 4 significant digits
    assert "None of the 3 tasks ran while other processes competed for the CPUs." in timing
