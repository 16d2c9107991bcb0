"""Audit of the report's figures: a diverged method must not flatten the others, and timings of
different devices must not be drawn as if they were comparable without saying so."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from mibench.reports.figures import fig_time, fig_time_naed
from mibench.reports.page import ReportContext


def _ctx(rows: list[dict]) -> ReportContext:
    results = pd.DataFrame(rows)
    summary = (results.groupby("method", as_index=False)["naed"].mean()
               .rename(columns={"naed": "naed_mean"}))
    return ReportContext(run_dir=Path("."), manifest={"config": {}}, results=results,
                         summary=summary)


def _row(method: str, i: int, naed: float, wall_s: float, device: str = "cpu") -> dict:
    return {"method": method, "pair_id": f"p{i}", "seed": 0, "status": "ok", "naed": naed,
            "wall_s": wall_s, "normalisation": "diagonal", "device": device}


def test_time_naed_diverged_method_does_not_flatten_the_others():
    """One diverged task (NAED ~246, as sitk-jhmi in a real run) next to NAEDs of ~0.03: on a
    linear axis every other method is drawn on the zero line. Positive NAEDs spanning over two
    decades get a log axis, as in fig_naed."""
    rows = [_row("good", i, v, 1.0) for i, v in enumerate([0.02, 0.03, 0.05])]
    rows += [_row("diverged", 0, 246.7, 0.8), _row("diverged", 1, 0.47, 0.8)]
    ax = fig_time_naed(_ctx(rows)).axes[0]
    assert ax.get_yscale() == "log"
    # every point is still drawn
    assert sum(len(c.get_offsets()) for c in ax.collections) == 5 + 2  # points + 2 medians
    # values within two decades stay on a linear axis
    rows = [_row("a", i, v, 1.0) for i, v in enumerate([0.02, 0.03, 0.5])]
    assert fig_time_naed(_ctx(rows)).axes[0].get_yscale() == "linear"
    # a zero NAED cannot be drawn on a log axis: linear, as in fig_naed
    rows = [_row("a", 0, 0.0, 1.0), _row("a", 1, 300.0, 1.0), _row("b", 0, 0.01, 1.0)]
    assert fig_time_naed(_ctx(rows)).axes[0].get_yscale() == "linear"


def test_timing_figures_name_the_device_when_devices_are_mixed():
    """A merged GPU run and CPU toolbox run: the timing figures must say which method's times
    are which device's, since they are not comparable."""
    rows = [_row("drmime", i, 0.03, 2.0, "cuda:0") for i in range(2)]
    rows += [_row("sitk-mmi", i, 0.04, 0.1, "cpu") for i in range(2)]
    ctx = _ctx(rows)
    labels = [t.get_text() for t in fig_time(ctx).axes[0].get_yticklabels()]
    assert any("drmime" in t and "cuda" in t for t in labels), labels
    assert any("sitk-mmi" in t and "cpu" in t for t in labels), labels
    legend = fig_time_naed(ctx).axes[0].get_legend()
    texts = [t.get_text() for t in legend.get_texts()]
    assert any("drmime" in t and "cuda" in t for t in texts), texts
    assert any("sitk-mmi" in t and "cpu" in t for t in texts), texts
    # one device (two GPUs of one machine count as one kind): names stay plain
    rows = [_row("drmime", 0, 0.03, 2.0, "cuda:0"), _row("drmime", 1, 0.03, 2.0, "cuda:1"),
            _row("ncc", 0, 0.05, 1.0, "cuda:0")]
    labels = [t.get_text() for t in fig_time(_ctx(rows)).axes[0].get_yticklabels()]
    assert labels == ["drmime", "ncc"]
