"""report.html in a real headless browser (Debian's chromium, driven by playwright): it loads with
no console error, every image renders, the paper-style table is on the first screen (1280 x 900)
and the run's details below it, a pair id holding a script tag is shown as text, and a
screenshot is taken. Skips only when no chromium is installed."""

from __future__ import annotations

import shutil

import pytest
from helpers.runs import make_fake_run

from mibench.jsonio import write_json_atomic
from mibench.paths import RECORDS_DIR
from mibench.registration import Record, RegistrationTask
from mibench.reports import build_reports

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))
                 if p), None)

#: Runs script if it ever reaches the page as markup; a broken <img> would also log an error.
EVIL = '<script>window.__xss=1</script><img src="x" onerror="window.__xss=2">'


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium browser installed "
                    "(CI installs Debian's chromium: apt-get install -y chromium)")
def test_report_in_headless_chromium(tmp_path):
    from playwright.sync_api import sync_playwright

    run_dir = make_fake_run(tmp_path / "run")
    # A record whose pair id (as a dataset could name it) holds markup; records are looked up
    # by content, so the file name can stay harmless.
    task = RegistrationTask(method="mmi", method_params={"bins": 32}, dataset="fake",
                            dataset_params={"size": 64}, pair_id=EVIL, seed=0)
    rec = Record(task, status="failed", error=f"ValueError: {EVIL}", meta={"category": "S"},
                 wall_s=0.1)
    write_json_atomic(run_dir / RECORDS_DIR / "mmi" / "evil.s0.evil0000.json", rec.to_dict())
    report = build_reports(run_dir).html

    errors: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url}"))
            page.goto(report.as_uri(), wait_until="load")
            widths = page.eval_on_selector_all(
                "img", "imgs => imgs.map(i => [i.alt, i.complete, i.naturalWidth])")
            xss = page.evaluate("typeof window.__xss")
            text = page.inner_text("body")
            # the main result is on the first screen, the run's details below it
            result_top = page.eval_on_selector("table.paper",
                                               "t => t.getBoundingClientRect().bottom")
            run_top = page.eval_on_selector("#run", "h => h.getBoundingClientRect().top")
            page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        finally:
            browser.close()

    assert errors == []
    assert result_top < 900 < run_top, (result_top, run_top)
    assert len(widths) >= 4 and all(done and w > 0 for _alt, done, w in widths), widths
    assert xss == "undefined"
    assert EVIL in text  # shown as text, literally
    assert (tmp_path / "report.png").read_bytes()[:4] == b"\x89PNG"
