"""Per-pair pages: every method of the pair listed with the numbers of results.csv, the shown
seed the median one, pages spread over the reference's ranking and linked from the report."""

from __future__ import annotations

import base64
import re
from html import unescape

import numpy as np
import pandas as pd
import pytest

from mibench.reports import build_reports
from mibench.reports.analysis import analyse_run
from mibench.reports.formatting import fmt
from mibench.reports.pair_pages import page_pairs, ranked_pairs
from mibench.runner import run_benchmark
from mibench.settings import RunSettings

METHODS = ("identity", "noisy", "raises")


@pytest.fixture(scope="module")
def seeded_run(tmp_path_factory):
    from mibench.reports import figures

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(figures, "FIGURES", [])  # the NAED/time figures are not tested here
        cfg = RunSettings(methods=",".join(METHODS), dataset="toy",
                          dataset_options={"pairs": 4, "size": 32}, workers=0, seeds="0,1,2",
                          out=str(tmp_path_factory.mktemp("toy")), reference="noisy",
                          plugins=["helpers.fakeplugin"])
        return run_benchmark(cfg, progress=False).run_dir


def _rows(html: str) -> list[list[str]]:
    body = html[html.index("<tbody>"):html.index("</tbody>")]
    cells = [re.findall(r"<td[^>]*>(.*?)</td>", tr) for tr in re.findall(r"<tr>(.*?)</tr>", body)]
    return [[unescape(re.sub(r"<[^>]+>", "", c)).strip() for c in row] for row in cells]


def test_each_page_lists_every_task_of_its_pair(seeded_run):
    df = pd.read_csv(seeded_run / "results.csv")
    ran = df[df.reused_seed.isna()]
    for pair_id in sorted(df.pair_id.unique()):
        html = (seeded_run / "pairs" / f"{pair_id}.html").read_text()
        assert 'href="../report.html"' in html and html.count("data:image/") == 1
        assert re.search(r"group: [ab]<", html)  # the pair's labels
        (data,) = re.findall(r'src="data:image/jpeg;base64,([^"]+)"', html)
        assert base64.b64decode(data)[:3] == b"\xff\xd8\xff"  # a JPEG
        rows = _rows(html)
        mine = ran[ran.pair_id == pair_id]
        assert len(rows) == len(mine)
        assert {r[0].split(" ")[0] for r in rows} == set(METHODS)
        assert rows[0][0].startswith("noisy") and "(reference)" in rows[0][0]
        for r in rows:
            method, seed = r[0].split(" ")[0], int(r[1])
            t = mine[(mine.method == method) & (mine.seed == seed)].iloc[0]
            assert r[2] == t.status
            assert r[3:7] == [fmt(t.naed), fmt(t.tre_mean), fmt(t.ire_mean), fmt(t.wall_s)]
            if method == "raises":  # failed: scored with its initial error
                assert r[2] == "failed" and r[4] == r[5] and "always fails" in r[7]
                assert '<td class="warn">failed</td>' in html


def test_the_shown_seed_is_the_median_one(seeded_run):
    df = pd.read_csv(seeded_run / "results.csv")
    for pair_id in sorted(df.pair_id.unique()):
        rows = _rows((seeded_run / "pairs" / f"{pair_id}.html").read_text())
        shown = [r for r in rows if r[0].startswith("noisy") and "\u2022" in r[0]]
        assert len(shown) == 1
        naed = df[(df.method == "noisy") & (df.pair_id == pair_id)].naed
        assert float(np.median(naed)) == pytest.approx(
            float(df[(df.method == "noisy") & (df.pair_id == pair_id)
                     & (df.seed == int(shown[0][1]))].naed.iloc[0]))


def test_pages_are_spread_over_the_ranking_and_linked(seeded_run, monkeypatch):
    from mibench.reports import figures

    monkeypatch.setattr(figures, "FIGURES", [])
    a = analyse_run(seeded_run)
    df = a.results
    ref = df[df.method == "noisy"].groupby("pair_id").naed.mean().sort_values()
    ranked = ranked_pairs(a)
    assert list(ranked.index) == list(ref.index)
    np.testing.assert_allclose(ranked.to_numpy(), ref.to_numpy())
    assert list(page_pairs(a, 2).index) == [ref.index[0], ref.index[-1]]
    assert len(page_pairs(a, 3)) == 3 and len(page_pairs(a, None)) == 4
    assert page_pairs(a, 0).empty
    html = (seeded_run / "report.html").read_text()
    for pair_id in ref.index:
        assert f'href="pairs/{pair_id}.html"' in html
    # a smaller cap removes the pages of an earlier build
    build_reports(seeded_run, pair_pages=2)
    assert sorted(p.stem for p in (seeded_run / "pairs").glob("*.html")) == \
        sorted([ref.index[0], ref.index[-1]])
    build_reports(seeded_run, pair_pages=0)
    assert not list((seeded_run / "pairs").glob("*.html"))
    assert "pairs/" not in (seeded_run / "report.html").read_text()


def test_page_names_are_safe_file_names():
    from mibench.reports.pair_pages import page_href

    assert page_href("fundus-000") == "pairs/fundus-000.html"
    for bad in ("../x", "a/b", "<script>", ".hidden", "", "x" * 300):
        href = page_href(bad)
        assert re.fullmatch(r"pairs/pair-[0-9a-f]{12}\.html", href), href
    assert page_href("a/b") != page_href("a/c")


def test_mibench_report_chooses_the_overlay_methods_and_the_pages(seeded_run, tmp_path):
    import shutil

    from click.testing import CliRunner

    from mibench.cli import cli

    run = tmp_path / "copy"
    shutil.copytree(seeded_run, run)
    result = CliRunner().invoke(cli, ["report", str(run), "--overlays", "identity,NOISY",
                                      "--pair-pages", "1"])
    assert result.exit_code == 0, result.output
    assert len(list((run / "pairs").glob("*.html"))) == 1
    page = next((run / "pairs").glob("*.html")).read_text()
    assert "noisy" in page and "identity" in page
    result = CliRunner().invoke(cli, ["report", str(run), "--all-pair-pages"])
    assert result.exit_code == 0, result.output
    assert len(list((run / "pairs").glob("*.html"))) == 4
    result = CliRunner().invoke(cli, ["report", str(run), "--overlays", "nosuch"])
    assert result.exit_code != 0 and "nosuch" in result.output
