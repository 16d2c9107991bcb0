"""stats.csv, metrics.json and the report's tables recomputed with scipy from results.csv;
overlays, merging and the report command on real (toy) runs."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from helpers.runs import make_fake_run
from helpers.stats import holm_brute_force
from scipy import stats

from mibench.cli import cli
from mibench.paths import RECORDS_DIR, manifest_path
from mibench.records import iter_records
from mibench.reports import build_reports
from mibench.reports.formatting import fmt, fmt_p, fmt_pm
from mibench.runner import run_benchmark
from mibench.settings import RunSettings


@pytest.fixture(scope="module")
def fake_run(tmp_path_factory):
    run_dir = make_fake_run(tmp_path_factory.mktemp("fake"))
    build_reports(run_dir)
    return run_dir


def _per_pair(df, method):
    g = df[(df.method == method) & df.naed.notna()]
    return g.groupby("pair_id").naed.mean()


def test_paper_table_recomputed_from_results_csv(fake_run):
    df = pd.read_csv(fake_run / "results.csv")
    st = pd.read_csv(fake_run / "stats.csv")
    doc = json.loads((fake_run / "metrics.json").read_text())
    html = (fake_run / "report.html").read_text()
    paper_html = html[html.index("NAED against the reference"):html.index("Summary per method")]
    assert doc["reference"] == "drmime" and st.method[0] == "drmime"
    ref = _per_pair(df, "drmime")
    others = [m for m in sorted(df.method.unique()) if m != "drmime"]
    expected_p = {}
    for m in others:
        x = _per_pair(df, m)
        both = x.index.intersection(ref.index)
        expected_p[m] = stats.ttest_rel(x[both], ref[both]).pvalue if len(both) > 1 else np.nan
    holm = dict(zip(others, holm_brute_force([expected_p[m] for m in others]), strict=True))
    means = {m: _per_pair(df, m).mean() for m in df.method.unique()}
    # reference first, then by mean NAED
    assert list(st.method) == ["drmime"] + sorted(others, key=means.get)
    assert [r["method"] for r in doc["paper_table"]] == list(st.method)
    for row, paper in zip(st.itertuples(index=False), doc["paper_table"], strict=True):
        x = _per_pair(df, row.method).to_numpy()
        std = np.std(x, ddof=1) if x.size > 1 else np.nan
        assert row.mean == pytest.approx(x.mean()) and paper["mean"] == pytest.approx(x.mean())
        if x.size > 1:
            assert row.std == pytest.approx(std) and paper["std"] == pytest.approx(std)
        else:
            assert np.isnan(row.std) and paper["std"] is None
        # bold means best: the lowest mean as printed
        cell = fmt_pm(x.mean(), std)
        best = fmt(x.mean()) == fmt(min(means.values()))
        assert (f"<td><b>{cell}</b></td>" if best else f"<td>{cell}</td>") in paper_html
        if row.method == "drmime":
            continue
        p = expected_p[row.method]
        if np.isnan(p):
            assert np.isnan(row.p_ttest) and paper["p_ttest"] is None
            continue
        assert row.p_ttest == pytest.approx(p) and paper["p_ttest"] == pytest.approx(p)
        assert row.p_ttest_holm == pytest.approx(holm[row.method])
        assert f"<td>{fmt_p(p)}</td><td>{fmt_p(holm[row.method])}</td>" in paper_html
        both = _per_pair(df, row.method).index.intersection(ref.index)
        d = np.round(_per_pair(df, row.method)[both] - ref[both], 12)
        assert row.p_wilcoxon == pytest.approx(stats.wilcoxon(d).pvalue)
    # "solo" has one paired pair and two the reference has alone: counted, and said
    solo = st.set_index("method").loc["solo"]
    assert solo.n_pairs == 1 and solo.n_unpaired == 2
    assert "solo: 2" in paper_html
    # Friedman over the pairs every method has (none: solo lacks two, so the test is skipped)
    assert doc["friedman"]["n_dropped"] == 2


def test_summary_ranks_auc_and_groups(fake_run):
    df = pd.read_csv(fake_run / "results.csv")
    summary = pd.read_csv(fake_run / "summary.csv").set_index("method")
    doc = json.loads((fake_run / "metrics.json").read_text())
    methods = list(summary.index)
    pairs = sorted(df.loc[df.scored, "pair_id"].unique())
    for metric in ("rtre_median", "rtre_max"):
        # ANHIR rank by brute force: per pair, 1 + better + half the ties; missing -> worst
        total = dict.fromkeys(methods, 0.0)
        for p in pairs:
            vals = {m: df[(df.method == m) & (df.pair_id == p)][metric].mean() for m in methods}
            for m, v in vals.items():
                if np.isnan(v):
                    total[m] += len(methods)
                    continue
                others = [w for k, w in vals.items() if k != m and not np.isnan(w)]
                total[m] += 1 + sum(w < v for w in others) + 0.5 * sum(w == v for w in others)
        for m in methods:
            assert summary.loc[m, f"rank_{metric}"] == pytest.approx(total[m] / len(pairs))
    for m in methods:
        g = df[df.method == m]
        tre = g.tre_mean.dropna().to_numpy()
        auc = np.mean([(tre < t).mean() for t in range(1, 26)])
        assert summary.loc[m, "success_auc"] == pytest.approx(auc)
        assert summary.loc[m, "rtre_median_mean"] == pytest.approx(g.rtre_median.mean())
        assert summary.loc[m, "n_unscored"] == (~g.scored).sum()
        q = g.wall_s.quantile([0.25, 0.75])
        assert summary.loc[m, "time_iqr_s"] == pytest.approx(q[0.75] - q[0.25])
        # FIRE categories (the fake pairs are A01, P02, S03): per category and mAUC
        aucs = doc["success"]["auc"][m]
        for cat in sorted(set(g.meta_category.dropna())):
            sub = g[(g.meta_category == cat)].tre_mean.dropna().to_numpy()
            if sub.size:
                expected = np.mean([(sub < t).mean() for t in range(1, 26)])
                assert aucs[cat] == pytest.approx(expected)
        if {"S", "P", "A"} <= set(aucs):
            assert aucs["mAUC"] == pytest.approx((aucs["S"] + aucs["P"] + aucs["A"]) / 3)
    assert doc["success"]["fire_categories"] is True
    html = (fake_run / "report.html").read_text()
    assert "<h3>By category</h3>" in html and "mAUC" in html
    group = doc["groups"]["category"]["P"]["mmi"]
    assert group["n_failed"] == 1
    g = df[(df.method == "mmi") & (df.meta_category == "P")]
    assert group["naed_mean"] == pytest.approx(g.naed.mean())
    assert doc["counts"]["unscored"] == 1 and "1 registered, not scored" in html


def test_reference_option_and_unknown_reference(tmp_path):
    run_dir = make_fake_run(tmp_path, reference="mmi")
    build_reports(run_dir)
    st = pd.read_csv(run_dir / "stats.csv")
    assert st.method[0] == "mmi" and (st.reference == "mmi").all()
    res = _cli("report", str(run_dir), "--reference", "nope")
    assert res.exit_code == 2 and len(res.stderr.strip().splitlines()) == 1
    assert "nope" in res.stderr


def _cli(*args):
    return CliRunner().invoke(cli, list(args))


def _toy(tmp_path, name, methods, **kw):
    cfg = RunSettings(methods=methods, dataset="toy", dataset_options={"pairs": 3, "size": 32},
                    workers=0, out=str(tmp_path / name), plugins=["helpers.fakeplugin"], **kw)
    return run_benchmark(cfg, progress=False)


def test_overlays_of_a_real_run_and_a_lost_dataset(tmp_path):
    res = _toy(tmp_path, "run", "identity,noisy", reference="noisy")
    html = res.report.html.read_text()
    assert (res.run_dir / "fig_overlay_best.png").read_bytes()[:4] == b"\x89PNG"
    assert (res.run_dir / "fig_overlay_worst.png").exists()
    best = json.loads((res.run_dir / "metrics.json").read_text())
    values = {r.task.pair_id: r.metrics["naed"] for r in iter_records(res.run_dir)
              if r.task.method == "noisy"}
    assert best["reference"] == "noisy"
    assert f"noisy: {min(values, key=values.get)} (seed 0" in html
    assert f"noisy: {max(values, key=values.get)} (seed 0" in html
    # the data is gone: the report still builds and says why there are no overlays
    manifest = json.loads(manifest_path(res.run_dir).read_text())
    manifest["config"]["plugins"] = []
    manifest_path(res.run_dir).write_text(json.dumps(manifest))
    text = build_reports(res.run_dir).html.read_text()
    assert "cannot be loaded here" in text and "fig_overlay" not in text
    assert not (res.run_dir / "fig_overlay_best.png").exists()
    # a plugin's own transform type: the report says that, not that the data is gone
    manifest["config"]["plugins"] = ["helpers.fakeplugin"]
    manifest_path(res.run_dir).write_text(json.dumps(manifest))
    for path in (res.run_dir / "records" / "noisy").glob("*.json"):
        rec = json.loads(path.read_text())
        rec["transform"] = {"type": "shift", "dx": 1.0}
        path.write_text(json.dumps(rec))
    text = build_reports(res.run_dir).html.read_text()
    assert "cannot be rebuilt from its record (unknown transform type &#39;shift&#39;)" in text
    assert "cannot be loaded here" not in text


def test_merge_runs_dedupes_and_refuses_other_datasets(tmp_path, monkeypatch):
    from mibench.reports import figures

    monkeypatch.setattr(figures, "FIGURES", [])  # not what this test is about; saves time
    a = _toy(tmp_path, "a", "identity,noisy")
    b = _toy(tmp_path, "b", "noisy,oracle")
    out = tmp_path / "merged"
    res = _cli("report", str(a.run_dir), str(b.run_dir), "--out", str(out))
    assert res.exit_code == 0, res.stderr
    recs = list(iter_records(out))
    assert len(recs) == 9  # 3 methods x 3 pairs; noisy's identical tasks once
    assert len({r.key for r in recs}) == 9
    df = pd.read_csv(out / "results.csv")
    assert sorted(df.method.unique()) == ["identity", "noisy", "oracle"]
    manifest = json.loads(manifest_path(out).read_text())
    assert [s["run_dir"] for s in manifest["merged_from"]] == [str(a.run_dir), str(b.run_dir)]
    assert set(manifest["config"]["methods"]) == {"identity", "noisy", "oracle"}
    assert "Merged from" in (out / "report.html").read_text()
    # a rerun of the merged directory's report works like any run's
    assert build_reports(out).html.exists()
    cfg = RunSettings(methods="identity", dataset="toy", dataset_options={"pairs": 4, "size": 32},
                    workers=0, out=str(tmp_path / "c"), plugins=["helpers.fakeplugin"])
    c = run_benchmark(cfg, progress=False)
    res = _cli("report", str(a.run_dir), str(c.run_dir), "--out", str(tmp_path / "bad"))
    assert res.exit_code == 2 and len(res.stderr.strip().splitlines()) == 1
    assert "dataset_params differs" in res.stderr
    assert not (tmp_path / "bad" / RECORDS_DIR).exists()


def test_reference_is_recorded_but_changes_neither_run_dir_nor_tasks(tmp_path):
    from mibench.plan import plan_run
    from mibench.registry import Registry

    registry = Registry(["helpers.fakeplugin"])
    base = dict(methods="identity,noisy", dataset="toy", plugins=["helpers.fakeplugin"])
    plain = plan_run(registry, RunSettings(**base))
    ref = plan_run(registry, RunSettings(**base, reference="Noisy"))
    assert ref.config["reference"] == "noisy" and plain.config["reference"] is None
    assert ref.run_dir == plain.run_dir
    assert [t.key for t in ref.tasks] == [t.key for t in plain.tasks]
    res = _cli("run", "--plugin", "helpers.fakeplugin", "--dataset", "toy", "--methods", "identity",
               "--reference", "noisy", "--out", str(tmp_path / "x"))
    assert res.exit_code == 2 and "not one of the selected methods" in res.stderr


def test_overlay_helpers_brute_force():
    from mibench.reports.overlays import checkerboard, colour_overlay, warp_strided
    from mibench.transform import MatrixTransform

    rng = np.random.default_rng(6)
    a, b = rng.random((10, 13)), rng.random((10, 13))
    cb = checkerboard(a, b, tiles=4)
    for y in range(10):
        for x in range(13):
            white = (y * 4 // 10 + x * 4 // 13) % 2 == 0
            assert cb[y, x] == (a[y, x] if white else b[y, x])
    rgb = colour_overlay(a, b)
    assert (rgb[..., 1] == a).all() and (rgb[..., 0] == b).all() and (rgb[..., 2] == b).all()
    moving = rng.random((61, 57)).astype(np.float32)
    t = MatrixTransform([[0.97, 0.05, 2.3], [-0.04, 1.02, -1.7], [0, 0, 1]])
    full = t.warp(moving, (50, 47))
    for step in (1, 3, 4):
        np.testing.assert_allclose(warp_strided(moving, t, (50, 47), step),
                                   full[::step, ::step], atol=1e-5)


def test_run_with_only_unscored_pairs(tmp_path):
    from helpers.runs import make_record as _record

    from mibench.records import write_record

    for method in ("identity", "drmime"):
        for pair in ("E01", "E02"):
            write_record(tmp_path, *_record(method, pair, scored=False))
    text = build_reports(tmp_path).html.read_text()
    assert "Registered, not scored (no fixed landmarks): 4 task(s)" in text
    assert "No scored pairs" in text
    st = pd.read_csv(tmp_path / "stats.csv")
    assert st.empty and "p_ttest" in st.columns
    doc = json.loads((tmp_path / "metrics.json").read_text())
    assert doc["reference"] is None and doc["counts"]["unscored"] == 4
    assert not (tmp_path / "paper_table.tex").exists()
    assert not (tmp_path / "paper_table.md").exists()


def test_overlays_of_a_reference_that_failed_say_so(tmp_path):
    res = _toy(tmp_path, "run", "identity,raises", reference="raises")
    html = res.report.html.read_text()
    doc = json.loads((res.run_dir / "metrics.json").read_text())
    assert doc["reference"] == "raises" and doc["reference_failures"]["failed"] == 3
    overlays = html[html.index("<h2>Overlays</h2>"):html.index("<h2>Failures</h2>")]
    assert overlays.count("The registration FAILED on this pair (ValueError: this method "
                          "always fails)") == 2


def test_merged_reference_is_not_inherited_from_the_first_input(tmp_path, monkeypatch):
    from mibench.reports import figures

    monkeypatch.setattr(figures, "FIGURES", [])
    a = _toy(tmp_path, "a", "identity,noisy", reference="noisy")
    b = _toy(tmp_path, "b", "identity,oracle")
    docs = []
    for name, inputs in (("ab", (a, b)), ("ba", (b, a))):
        res = _cli("report", *(str(r.run_dir) for r in inputs), "--out", str(tmp_path / name))
        assert res.exit_code == 0, res.stderr
        assert json.loads(manifest_path(tmp_path / name).read_text())["config"]["reference"] \
            is None
        docs.append(json.loads((tmp_path / name / "metrics.json").read_text()))
    assert docs[0]["reference"] == docs[1]["reference"] == "oracle"
    assert "requested" not in docs[0]["reference_reason"]
    # every input asked for the same reference: kept, and said where it comes from
    c = _toy(tmp_path, "c", "noisy,oracle", reference="noisy")
    res = _cli("report", str(a.run_dir), str(c.run_dir), "--out", str(tmp_path / "ac"))
    assert res.exit_code == 0, res.stderr
    doc = json.loads((tmp_path / "ac" / "metrics.json").read_text())
    assert doc["reference"] == "noisy"
    assert doc["reference_reason"] == "requested (--reference of every merged run)"
    # asked for by the report command itself
    res = _cli("report", str(tmp_path / "ab"), "--reference", "noisy")
    doc = json.loads((tmp_path / "ab" / "metrics.json").read_text())
    assert doc["reference_reason"] == "requested (--reference)"


def test_metrics_success_auc_is_the_summary_number(fake_run):
    summary = pd.read_csv(fake_run / "summary.csv").set_index("method")
    doc = json.loads((fake_run / "metrics.json").read_text())
    for method, agg in doc["aggregates"].items():
        assert agg["success_auc"] == pytest.approx(summary.loc[method, "success_auc"])
        assert agg["success_auc_by_group"] == doc["success"]["auc"][method]


def test_html_statistics_follow_the_paper_order(fake_run):
    st = pd.read_csv(fake_run / "stats.csv")
    html = (fake_run / "report.html").read_text()
    stats_html = html[html.index("<h2>Statistics</h2>"):html.index("<h3>Friedman")]
    shown = [m for m in st.method[1:] if f"<td>{m}</td>" in stats_html]
    assert shown == list(st.method[1:])
    positions = [stats_html.index(f"<tr><td>{m}</td>") for m in shown]
    assert positions == sorted(positions)
    assert [c["method"] for c in json.loads((fake_run / "metrics.json").read_text())
            ["comparisons"]] == list(st.method[1:])


def _tex_rows(tex):
    body = tex.split("\\midrule\n", 1)[1].split("\n\\bottomrule", 1)[0]
    return [line.removesuffix(" \\\\").split(" & ") for line in body.splitlines()]


def test_paper_tables_in_latex_and_markdown_match_stats_csv(fake_run):
    """paper_table.tex / .md: the rows of stats.csv in its order, printed as the HTML report
    prints them, the best (lowest mean) in bold, the reference marked (a dagger, "(ref.)"), and
    the comparison's warnings beside the table."""
    st = pd.read_csv(fake_run / "stats.csv")
    tex = (fake_run / "paper_table.tex").read_text()
    md = (fake_run / "paper_table.md").read_text()
    assert tex.count("\\begin{") == tex.count("\\end{") == 4  # NAED and FIRE AUC tables
    assert tex.count("{") == tex.count("}") and "\\toprule" in tex
    rows = _tex_rows(tex)
    md_rows = [line.strip("|").split(" | ") for line in md.splitlines()[2:2 + len(st)]]
    assert len(rows) == len(md_rows) == len(st)
    lowest = fmt(st["mean"].min())
    for row, md_row, ref in zip(rows, md_rows, st.itertuples(index=False), strict=True):
        name = ref.method
        is_ref, is_best = name == "drmime", fmt(ref.mean) == lowest
        assert row[0] == (f"\\textbf{{{name}}}" if is_best else name) + \
            ("$^\\dagger$" if is_ref else "")
        assert md_row[0].strip() == (f"**{name}**" if is_best else name) + \
            (" (ref.)" if is_ref else "")
        mean = fmt(ref.mean)
        value = f"{mean} \\pm {fmt(ref.std)}" if not np.isnan(ref.std) else mean
        assert f"${value}$" in row[1]
        assert md_row[1].strip("* ") == value.replace("\\pm", "±")
        p, holm = ("–", "–") if is_ref else (fmt_p(ref.p_ttest), fmt_p(ref.p_ttest_holm))
        assert md_row[2:4] == [p, holm]
        if p == "–":
            assert row[2:4] == ["--", "--"]
        else:
            mantissa, exponent = p.split("e")
            assert row[2] == f"${mantissa} \\times 10^{{{int(exponent)}}}$"
        assert row[4] == md_row[4].strip() == str(ref.n_pairs)
    doc = json.loads((fake_run / "metrics.json").read_text())
    for warning in doc["warnings"]:
        assert f"% WARNING: {warning}" in tex and f"> Warning: {warning}" in md
    assert "solo: 2" in tex and "against drmime" in md


def test_tex_escape_and_a_method_name_with_specials():
    from mibench.reports.evaluation import evaluate
    from mibench.reports.paper_table import paper_table_latex, paper_table_markdown, tex_escape

    assert tex_escape("a_b%c&d#e$f{g}h~i^j\\k") == (
        "a\\_b\\%c\\&d\\#e\\$f\\{g\\}h\\textasciitilde{}i\\textasciicircum{}j"
        "\\textbackslash{}k")
    from helpers.runs import make_record as _record

    from mibench.reports.results import results_frame

    records = [_record(m, f"A0{i}", scale=scale)[1]
               for m, scale in (("ref_1", 0.1), ("x%y", 0.5)) for i in range(4)]
    ev = evaluate(results_frame(records), "ref_1")
    tex = paper_table_latex(ev, "none")
    assert "\\textbf{ref\\_1}" in tex and "\\\\\nx\\%y & " in tex
    assert "NAED [px, $D = 1$] mean" in tex and "D = 1: NAED is the mean landmark error" in tex
    md = paper_table_markdown(ev, "none")
    assert "| **ref\\_1** (ref.) |" in md and "| NAED [px, D = 1] mean ± std |" in md


def test_fire_auc_table_matches_metrics_json(fake_run):
    """With FIRE categories, the paper tables add the success AUCs per category and mAUC (as
    metrics.json has them), the best of each column in bold; no such table otherwise."""
    doc = json.loads((fake_run / "metrics.json").read_text())
    aucs = doc["success"]["auc"]
    md = (fake_run / "paper_table.md").read_text()
    table = md.split("| Method | S | P | A | mAUC |\n", 1)[1].splitlines()
    assert table[0] == "|---|---|---|---|---|"
    rows = [line.strip("|").split(" | ") for line in table[1:] if line.startswith("|")]
    assert [r[0].strip() for r in rows] == [r["method"] for r in doc["paper_table"]]
    for k, col in enumerate(("S", "P", "A", "mAUC")):
        values = {m: a.get(col) for m, a in aucs.items()}
        best = fmt(max(v for v in values.values() if v is not None), 3)
        for row in rows:
            v, cell = values[row[0].strip()], row[k + 1].strip(" |")
            if v is None:
                assert cell == "–"
            else:
                assert cell.strip("*") == fmt(v, 3)
                assert cell.startswith("**") == (fmt(v, 3) == best)  # ties as printed
    tex = (fake_run / "paper_table.tex").read_text()
    assert "\\label{tab:mibench-fire-auc-fake}" in tex and tex.count("\\begin{table}") == 2
    assert "\\label{tab:mibench-naed-fake}" in tex and "Dataset fake. NAED = " in tex


def test_no_fire_table_without_fire_categories():
    from helpers.runs import make_record as _record

    from mibench.reports.evaluation import evaluate
    from mibench.reports.paper_table import paper_table_latex, paper_table_markdown
    from mibench.reports.results import results_frame

    records = [_record(m, f"histology-{i}", scale=s)[1]
               for m, s in (("a", 0.2), ("b", 0.5)) for i in range(3)]
    ev = evaluate(results_frame(records), "a")
    assert not ev.fire_categories
    assert "mAUC" not in paper_table_latex(ev) and "mAUC" not in paper_table_markdown(ev)


def test_report_and_run_print_the_paper_table(fake_run, tmp_path):
    out = _cli("report", str(fake_run))
    assert out.exit_code == 0, out.output
    st = pd.read_csv(fake_run / "stats.csv")
    lines = out.output.splitlines()
    head = lines.index("| Method | NAED mean ± std | p-value | p (Holm) | pairs |")
    assert lines[head + 2].startswith("| **drmime** (ref.) | ")  # best, and the reference
    assert [line.split(" | ")[0].removesuffix(" (ref.)").strip("|* ")
            for line in lines[head + 2:head + 2 + len(st)]] == list(st.method)
    assert "Bold: best (lowest NAED mean). (ref.): the reference method drmime" in out.output
    assert lines[-1] == f"report: {fake_run / 'report.html'}"
    res = _cli("run", "-m", "identity", "--limit", "2", "--workers", "0", "-q",
               "--out", str(tmp_path / "r"))
    assert res.exit_code == 0, res.output
    assert "| **identity** (ref.) | " in res.output and "report: " in res.output


def test_anhir_table_from_summary_csv(tmp_path):
    """Pairs with a tissue get ANHIR's table: mean median / max rTRE, their average ranks and
    robustness per method, as summary.csv has them, the best of each column in bold (lowest
    rTRE and rank, highest robustness)."""
    from helpers.runs import make_record as _record

    from mibench.records import write_record

    for method, scale in (("drmime", 0.2), ("ncc", 0.6), ("identity", 1.0)):
        for pair in ("lung-1", "lung-2", "kidney-1"):
            task, rec = _record(method, pair, scale=scale)
            rec.meta = {"tissue": pair.split("-")[0]}
            write_record(tmp_path, task, rec)
    build_reports(tmp_path)
    summary = pd.read_csv(tmp_path / "summary.csv").set_index("method")
    md = (tmp_path / "paper_table.md").read_text()
    head = ("| Method | median rTRE | max rTRE | rank median rTRE | rank max rTRE | "
            "robustness |\n")
    assert head in md and "| S | P | A | mAUC |" not in md
    lines = md.split(head, 1)[1].splitlines()[1:4]
    columns = [("rtre_median_mean", min), ("rtre_max_mean", min), ("rank_rtre_median", min),
               ("rank_rtre_max", min), ("robustness_mean", max)]
    for line in lines:
        cells = [c.strip() for c in line.strip("|").split("|")]
        method = cells[0]
        for cell, (col, pick) in zip(cells[1:], columns, strict=True):
            assert cell.strip("*") == fmt(summary.at[method, col], 3)
            best = fmt(pick(summary[col]), 3)
            assert cell.startswith("**") == (fmt(summary.at[method, col], 3) == best)
    assert [line.split("|")[1].strip() for line in lines] == ["drmime", "ncc", "identity"]
    tex = (tmp_path / "paper_table.tex").read_text()
    assert "\\label{tab:mibench-anhir}" in tex and "\\begin{tabular}{lccccc}" in tex
