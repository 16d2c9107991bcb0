"""The report's figures, checked through their artists (axis scale, labels, drawn points), not
their pixels: zeros and spans of decades drawn where they belong, a diverged method that does not
flatten the others, and timings of different devices that say so."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mibench.reports.analysis import RunAnalysis
from mibench.reports.figures import fig_naed, fig_time, fig_time_naed, naed_label


def _analysis(results: pd.DataFrame, config: dict | None = None) -> RunAnalysis:
    """An analysis of ``results`` alone: what the figures read (no records, no evaluation)."""
    summary = (results.groupby("method", as_index=False)["naed"].mean()
               .rename(columns={"naed": "naed_mean"}))
    return RunAnalysis(run_dir=Path("."), manifest={"config": config or {}}, records=[],
                       results=results, summary=summary)


def _ctx(values: dict[str, list[float]], *, column: str = "naed", norm: str | None = "diagonal",
         config: dict | None = None, failed: set[tuple[str, int]] = frozenset()
         ) -> RunAnalysis:
    """A context whose results hold ``values[method]`` in ``column`` (one task per value); the
    other of ``naed`` / ``wall_s`` is a harmless positive constant."""
    rows = []
    for m, vs in values.items():
        for i, v in enumerate(vs):
            rows.append({"method": m, "pair_id": f"p{i}", "seed": 0,
                         "status": "failed" if (m, i) in failed else "ok",
                         "naed": 0.01, "wall_s": 0.5, "naed_norm": norm, column: v})
    return _analysis(pd.DataFrame(rows), config)


def _axes(fig):
    return fig.axes[0]


def _points(ax) -> dict[str, list[float]]:
    """The x values of the scatter points drawn on each method's row of a strip-box figure."""
    ticks = dict(zip([t.get_text() for t in ax.get_yticklabels()], ax.get_yticks(), strict=True))
    out: dict[str, list[float]] = {m: [] for m in ticks}
    for coll in ax.collections:
        for x, y in np.asarray(coll.get_offsets()):
            m = min(ticks, key=lambda k: abs(ticks[k] - y))
            out[m].append(float(x))
    return out


def test_naed_zero_is_drawn_on_a_linear_axis():
    """A perfect method (NAED exactly 0) is drawn, even when the other values span decades (a
    log axis would have to leave its points out)."""
    ctx = _ctx({"oracle": [0.0, 0.0, 0.0], "identity": [1e-4, 0.02, 0.5], "good": [1e-3, 0.0]},
               failed={("identity", 2)})
    ax = _axes(fig_naed(ctx))
    assert ax.get_xscale() == "linear"
    pts = _points(ax)
    assert sorted(pts["oracle"]) == [0.0, 0.0, 0.0]
    assert sorted(pts["good"]) == pytest.approx([0.0, 1e-3])
    assert sorted(pts["identity"]) == pytest.approx([1e-4, 0.02, 0.5])  # the failed one too
    assert ax.get_title() == ""


def test_naed_positive_values_over_decades_get_a_log_axis():
    ctx = _ctx({"a": [1e-4, 2e-4], "b": [0.05, 0.5]})
    ax = _axes(fig_naed(ctx))
    assert ax.get_xscale() == "log"
    assert sum(len(v) for v in _points(ax).values()) == 4 and ax.get_title() == ""


def test_forced_log_axis_says_how_many_values_it_left_out():
    """Registration time is always on a log axis: a time of 0 (a coarse clock) cannot be drawn,
    and the figure counts what it left out per method."""
    ctx = _ctx({"fast": [0.0, 0.0, 1e-3], "slow": [2.0, 3.0]}, column="wall_s")
    ax = _axes(fig_time(ctx))
    assert ax.get_xscale() == "log"
    pts = _points(ax)
    assert pts["fast"] == pytest.approx([1e-3]) and sorted(pts["slow"]) == [2.0, 3.0]
    assert "fast: 2" in ax.get_title() and "slow" not in ax.get_title()
    # nothing positive at all: a message rather than an empty log axis
    nothing = _axes(fig_time(_ctx({"fast": [0.0, 0.0]}, column="wall_s")))
    assert any("log axis" in t.get_text() for t in nothing.texts)


def test_time_naed_counts_tasks_it_cannot_draw():
    ctx = _ctx({"fast": [0.0, 1e-3, 2e-3], "slow": [2.0, 3.0]}, column="wall_s")
    ax = _axes(fig_time_naed(ctx))
    assert "fast: 1" in ax.get_title() and "slow" not in ax.get_title()


@pytest.mark.parametrize(("norm", "expected"), [
    ("none", "mean TRE per task [px] (NAED with D = 1)"),
    ("diagonal", "NAED per task (D = image diagonal)"),
    ("max-side", "NAED per task (D = longest image side)"),
])
def test_naed_axes_name_the_normalisation(norm, expected):
    """With ``--naed-norm none`` D = 1: the values are mean TRE in pixels, and the axes say so."""
    ctx = _ctx({"a": [1.5, 2.0], "b": [3.0, 4.0]}, norm=norm)
    assert naed_label(ctx) == expected
    assert _axes(fig_naed(ctx)).get_xlabel() == expected
    assert _axes(fig_time_naed(ctx)).get_ylabel() == expected


def test_naed_label_from_config_and_mixed_runs():
    """Records are the ground truth; without the column the configuration says; a merge of
    runs scored differently is flagged as not comparable."""
    no_column = _ctx({"a": [1.0]}, config={"naed_norm": "none"})
    no_column.results = no_column.results.drop(columns="naed_norm")
    assert "[px]" in naed_label(no_column)
    mixed = _ctx({"a": [1.0]})
    mixed.results = pd.concat([mixed.results, mixed.results.assign(naed_norm="none")])
    assert "not comparable" in naed_label(mixed) and "none" in naed_label(mixed)
    assert naed_label(_ctx({"a": [1.0]}, norm=None)) == "NAED per task"


def _row(method: str, i: int, naed: float, wall_s: float, device: str = "cpu") -> dict:
    return {"method": method, "pair_id": f"p{i}", "seed": 0, "status": "ok", "naed": naed,
            "wall_s": wall_s, "naed_norm": "diagonal", "device": device}


def test_time_naed_diverged_method_does_not_flatten_the_others():
    """One diverged task (NAED ~246, as sitk-jhmi in a real run) next to NAEDs of ~0.03: on a
    linear axis every other method is drawn on the zero line. Positive NAEDs spanning over two
    decades get a log axis, as in fig_naed."""
    rows = [_row("good", i, v, 1.0) for i, v in enumerate([0.02, 0.03, 0.05])]
    rows += [_row("diverged", 0, 246.7, 0.8), _row("diverged", 1, 0.47, 0.8)]
    ax = fig_time_naed(_analysis(pd.DataFrame(rows))).axes[0]
    assert ax.get_yscale() == "log"
    # every point is still drawn
    assert sum(len(c.get_offsets()) for c in ax.collections) == 5 + 2  # points + 2 medians
    # values within two decades stay on a linear axis
    rows = [_row("a", i, v, 1.0) for i, v in enumerate([0.02, 0.03, 0.5])]
    assert fig_time_naed(_analysis(pd.DataFrame(rows))).axes[0].get_yscale() == "linear"
    # a zero NAED cannot be drawn on a log axis: linear, as in fig_naed
    rows = [_row("a", 0, 0.0, 1.0), _row("a", 1, 300.0, 1.0), _row("b", 0, 0.01, 1.0)]
    assert fig_time_naed(_analysis(pd.DataFrame(rows))).axes[0].get_yscale() == "linear"


def test_timing_figures_name_the_device_when_devices_are_mixed():
    """A merged GPU run and CPU toolbox run: the timing figures must say which method's times
    are which device's, since they are not comparable."""
    rows = [_row("drmime", i, 0.03, 2.0, "cuda:0") for i in range(2)]
    rows += [_row("sitk-mmi", i, 0.04, 0.1, "cpu") for i in range(2)]
    ctx = _analysis(pd.DataFrame(rows))
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
    ax = fig_time(_analysis(pd.DataFrame(rows))).axes[0]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == ["drmime", "ncc"]


def test_a_deterministic_method_is_drawn_once_per_pair_not_once_per_seed():
    ctx = _ctx({"nmi": [0.01, 0.02, 0.01, 0.02], "drmime": [0.03, 0.04, 0.05, 0.06]})
    results = ctx.results
    # nmi ran once per pair (seed 0); its rows for seed 1 are copies reused for that seed.
    results["seed"] = [0, 0, 1, 1, 0, 0, 1, 1]
    results["pair_id"] = ["p0", "p1", "p0", "p1"] * 2
    results["reused_seed"] = [np.nan, np.nan, 0, 0] + [np.nan] * 4
    pts = _points(_axes(fig_naed(ctx)))
    assert sorted(pts["nmi"]) == pytest.approx([0.01, 0.02])
    assert len(pts["drmime"]) == 4
