"""The report's figures, checked through their artists (axis scale, labels, drawn points), not
their pixels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mibench.reports.figures import fig_naed, fig_time, fig_time_naed, naed_label
from mibench.reports.page import ReportContext


def _ctx(values: dict[str, list[float]], *, column: str = "naed", norm: str | None = "diagonal",
         config: dict | None = None, failed: set[tuple[str, int]] = frozenset()
         ) -> ReportContext:
    """A context whose results hold ``values[method]`` in ``column`` (one task per value); the
    other of ``naed`` / ``wall_s`` is a harmless positive constant."""
    rows = []
    for m, vs in values.items():
        for i, v in enumerate(vs):
            rows.append({"method": m, "pair_id": f"p{i}", "seed": 0,
                         "status": "failed" if (m, i) in failed else "ok",
                         "naed": 0.01, "wall_s": 0.5, "normalisation": norm, column: v})
    results = pd.DataFrame(rows)
    summary = (results.groupby("method", as_index=False)["naed"].mean()
               .rename(columns={"naed": "naed_mean"}))
    return ReportContext(run_dir=Path("."), manifest={"config": config or {}}, results=results,
                         summary=summary)


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
    no_column = _ctx({"a": [1.0]}, config={"normalisation": "none"})
    no_column.results = no_column.results.drop(columns="normalisation")
    assert "[px]" in naed_label(no_column)
    mixed = _ctx({"a": [1.0]})
    mixed.results = pd.concat([mixed.results, mixed.results.assign(normalisation="none")])
    assert "not comparable" in naed_label(mixed) and "none" in naed_label(mixed)
    assert naed_label(_ctx({"a": [1.0]}, norm=None)) == "NAED per task"
