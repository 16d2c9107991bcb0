"""The report's figures: each a function ``RunAnalysis -> Figure | None`` in ``FIGURES``.

A function returns None when it has nothing to draw (the figure is then left out). Figures are
drawn on detached Agg figures (:mod:`mibench.reports.plotting`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from mibench.metrics import NAED_NORMS
from mibench.paths import figure_name
from mibench.reports.analysis import RunAnalysis
from mibench.reports.plotting import new_figure, png_bytes
from mibench.reports.units import in_unit, symbol


def _no_data(ax, text: str = "no data") -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes)
    ax.set_axis_off()


def naed_label(ctx: RunAnalysis) -> str:
    """The axis label (or table heading) of per-task NAED for this run's normaliser
    (``NaedNorm.label``).

    Several normalisers in one run (a merge) make the values incomparable: the label says so.
    An unknown or unrecorded one gives the plain "NAED per task".
    """
    norms = ctx.plotted_naed_norms
    if len(norms) > 1:
        return f"NAED per task (mixed D: {', '.join(norms)}; not comparable)"
    known = NAED_NORMS.get(norms[0]) if norms else None
    # D = 1 makes NAED a mean error, in the records' unit.
    return in_unit(known.label, ctx.unit) if known else "NAED per task"


def _strip_box(ctx: RunAnalysis, column: str, xlabel: str, log: bool | None,
               labels: dict[str, str] | None = None, ax=None, hollow: str | None = None):
    """Horizontal box plot per method (summary order, best at the top) with the points on it;
    failed tasks as red crosses; tasks whose ``hollow`` column is true (e.g. ``contended``) as
    hollow circles. Draws on ``ax`` when given (its figure is returned), else on a new figure.

    ``log=None`` picks a log axis only when every value is positive and they span over two
    decades: a value of 0 (a perfect method's NAED) cannot be drawn on a log axis, and a linear
    one shows it where it belongs. ``log=True`` forces a log axis; values <= 0 are then left
    out, and the title says how many per method, so that no point disappears unsaid.
    """
    order = ctx.order
    if ax is None:
        fig, ax = new_figure(height=1.2 + 0.45 * max(len(order), 1))
    else:
        fig = ax.figure
    df = ctx.results
    if "reused_seed" in df:
        # A deterministic method ran once per pair: its copies for the other seeds would draw
        # every point again.
        df = df[df["reused_seed"].isna()]
    data, failed, empty = [], [], []
    for m in order:
        g = df[df["method"] == m]
        v = g[column].to_numpy(dtype=float)
        ok = np.isfinite(v)  # NaN: registered, not scored (the tables count those)
        data.append(v[ok])
        failed.append((g["status"].to_numpy() == "failed")[ok])
        marks = (g[hollow].fillna(False).to_numpy(dtype=bool) if hollow and hollow in g
                 else np.zeros(len(g), dtype=bool))
        empty.append(marks[ok])
    values = np.concatenate(data) if data else np.array([])
    if values.size == 0:
        _no_data(ax)
        return fig
    if log is None:
        log = bool(np.all(values > 0) and values.max() / values.min() > 100)
    left_out = {}
    if log:
        for i, m in enumerate(order):
            keep = data[i] > 0
            if not keep.all():
                left_out[m] = int((~keep).sum())
                data[i], failed[i], empty[i] = data[i][keep], failed[i][keep], empty[i][keep]
        if not any(d.size for d in data):
            _no_data(ax, "no value > 0 to draw on a log axis")
            return fig
    ys = np.arange(len(order), 0, -1)
    nonempty = [i for i, d in enumerate(data) if d.size]
    horizontal = ({"orientation": "horizontal"}  # matplotlib >= 3.10; `vert` is deprecated
                  if "orientation" in inspect.signature(ax.boxplot).parameters else {"vert": False})
    ax.boxplot([data[i] for i in nonempty], positions=ys[nonempty], widths=0.6,
               showfliers=False, medianprops={"color": "black"}, **horizontal)
    rng = np.random.default_rng(0)
    for y, d, f, e in zip(ys, data, failed, empty, strict=True):
        jitter = y + rng.uniform(-0.18, 0.18, d.size)
        solid = ~f & ~e
        ax.scatter(d[solid], jitter[solid], s=10, alpha=0.6, color="tab:blue", zorder=3)
        if (e & ~f).any():
            ax.scatter(d[e & ~f], jitter[e & ~f], s=18, facecolors="none",
                       edgecolors="tab:blue", linewidths=0.9, zorder=3,
                       label="contended (other processes competed for the CPUs)")
        if f.any():
            ax.scatter(d[f], jitter[f], s=22, marker="x", color="tab:red", zorder=4,
                       label="failed")
    if log:
        ax.set_xscale("log")
    if left_out:
        counts = ", ".join(f"{m}: {k}" for m, k in left_out.items())
        ax.set_title(f"values <= 0 not drawn on the log axis ({counts})", fontsize="small")
    ax.set_yticks(ys)
    ax.set_yticklabels([(labels or {}).get(m, m) for m in order])
    ax.set_ylim(0.4, len(order) + 0.6)
    ax.set_xlabel(xlabel)
    ax.grid(axis="x", alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        unique = dict(zip(labels, handles, strict=True))  # one entry per kind of marker
        ax.legend(list(unique.values()), list(unique), loc="best", fontsize="small")
    fig.tight_layout()
    return fig


def fig_naed(ctx: RunAnalysis):
    return _strip_box(ctx, "naed", naed_label(ctx), log=None)


def _device_labels(ctx: RunAnalysis) -> dict[str, str]:
    """Method -> ``"method (device)"`` when the tasks ran on more than one kind of device (a
    merge of a GPU run and a CPU run): their times are not comparable, and the timing figures
    say which is which. Empty when there is one kind (``cuda:0`` and ``cuda:1`` are one)."""
    df = ctx.results
    if not len(df) or "device" not in df:
        return {}
    kinds = df["device"].dropna().astype(str).str.split(":").str[0]
    if kinds.nunique() < 2:
        return {}
    per_method = kinds.groupby(df.loc[kinds.index, "method"]).agg(
        lambda k: ", ".join(sorted(set(k))))
    return {m: f"{m} ({d})" for m, d in per_method.items()}


def fig_time(ctx: RunAnalysis):
    """Wall time per task and, when the records have it, CPU time beside it (same methods,
    same rows); contended tasks hollow."""
    df = ctx.results
    labels = _device_labels(ctx)
    has_cpu = len(df) and "cpu_s" in df and bool(df["cpu_s"].notna().any())
    if not has_cpu:
        return _strip_box(ctx, "wall_s", "registration time per task [s] (log)", log=True,
                          labels=labels, hollow="contended")
    fig, (wall, cpu) = new_figure(width=11, height=1.2 + 0.45 * max(len(ctx.order), 1),
                                  ncols=2)
    _strip_box(ctx, "wall_s", "wall time per task [s] (log)", log=True, labels=labels,
               ax=wall, hollow="contended")
    _strip_box(ctx, "cpu_s", "CPU time per task [s] (log; user + system, all threads)",
               log=True, labels=labels, ax=cpu, hollow="contended")
    return fig


def trusted_time(df) -> tuple[str, str]:
    """The time column to read and its axis label: CUDA device time where the records have it,
    else the worker's CPU time, else wall time (records written before CPU time was measured)."""
    for column, label in (("device_s", "device time per task [s] (log)"),
                          ("cpu_s", "CPU time per task [s] (log)")):
        if len(df) and column in df and df[column].notna().any():
            return column, label
    return "wall_s", "registration time per task [s] (log)"


def fig_time_naed(ctx: RunAnalysis):
    """Registration time (log x; the time to trust, :func:`trusted_time`) against NAED per
    task; a large marker at each method's medians, so that the accuracy-speed trade-off reads
    at a glance. Tasks without a time > 0 cannot be drawn on the log axis: the title counts
    them."""
    df = ctx.results
    fig, ax = new_figure(height=4.5)
    time, xlabel = trusted_time(df)
    scored = df[np.isfinite(df["naed"])] if len(df) else df
    ok = scored[scored[time] > 0] if len(scored) else scored
    if ok.empty:
        _no_data(ax)
        return fig
    colours = _colours(ctx.order)
    labels = _device_labels(ctx)
    for m in ctx.order:
        g = ok[ok["method"] == m]
        if g.empty:
            continue
        c = colours[m]
        ax.scatter(g[time], g["naed"], s=12, alpha=0.45, color=c)
        ax.scatter([g[time].median()], [g["naed"].median()], s=110, marker="D", color=c,
                   edgecolor="black", zorder=4, label=labels.get(m, m))
    # reused copies of a deterministic method's one run have no time: not dropped, not drawn
    timed = scored[scored["reused_seed"].isna()] if "reused_seed" in scored else scored
    dropped = timed[~(timed[time] > 0)]["method"].value_counts()
    if len(dropped):
        counts = ", ".join(f"{m}: {dropped[m]}" for m in ctx.order if m in dropped)
        ax.set_title(f"tasks without a time > 0 not drawn on the log axis ({counts})",
                     fontsize="small")
    ax.set_xscale("log")
    # As in fig_naed: a diverged method (NAED in the hundreds) would flatten every other one
    # onto the zero line of a linear axis; a NAED of 0 cannot be drawn on a log one.
    naed = ok["naed"].to_numpy(dtype=float)
    if np.all(naed > 0) and naed.max() / naed.min() > 100:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(naed_label(ctx))
    ax.grid(alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize="small",
              title="median", frameon=False)
    fig.tight_layout()
    return fig


def _colours(methods: list[str]) -> dict[str, Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if len(methods) <= 10 else "tab20"]
    return {m: cmap(i % cmap.N) for i, m in enumerate(methods)}


def fig_success(ctx: RunAnalysis):
    """Success rate against threshold (FIRE protocol), one panel per FIRE category when the
    pairs have them, otherwise one panel over all pairs. None (no figure) on data of another
    protocol: FIRE's pixel thresholds mean nothing there."""
    ev = ctx.evaluation
    if ev is None or not ev.curves or not ev.fire_applies:
        return None
    groups = [c for c in ("S", "P", "A") if any(c in v for v in ev.curves.values())]
    panels = (groups + ["all"]) if ev.fire_categories else ["all"]
    fig, axes = new_figure(width=min(max(3.2 * len(panels) + 2.2, 7.5), 15), height=3.8,
                           ncols=len(panels))
    axes = axes if isinstance(axes, list) else [axes]
    colours = _colours(ctx.order)
    t = np.asarray(ev.thresholds)
    for ax, panel in zip(axes, panels, strict=True):
        for m in ctx.order:
            rates = ev.curves.get(m, {}).get(panel)
            if rates is None:
                continue
            auc = ev.aucs[m][panel]
            ax.plot(t, rates, color=colours[m], lw=1.5, label=f"{m} ({auc:.3f})")
        ax.set_title("all pairs" if panel == "all" else f"category {panel}")
        ax.set_xlabel(f"threshold [{symbol(ctx.unit)}]")
        ax.set_xlim(t.min(), t.max())
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("success rate")
    axes[-1].legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize="small",
                    title="method (AUC)", frameon=False)
    fig.tight_layout()
    return fig


@dataclass(frozen=True)
class FigureSpec:
    """A figure of the report: PNG file name, caption, drawing function and the report section
    (``naed``, ``success`` or ``timing``) it belongs to."""

    name: str
    caption: str
    draw: Callable[[RunAnalysis], Any]
    section: str


#: Every figure, in page order.
FIGURES: list[FigureSpec] = [
    FigureSpec(figure_name("naed"), "NAED per task and method (box: quartiles; red crosses: "
               "failed tasks, scored with their initial error).", fig_naed, "naed"),
    FigureSpec(figure_name("success"), "Success rate: share of tasks whose mean landmark error "
               "(native pixels) is below the threshold, for thresholds 1 to 25 px (FIRE "
               "protocol); AUC = mean success rate.", fig_success, "success"),
    FigureSpec(figure_name("time"), "Registration time per task and method, the registration "
               "alone, log axes: wall clock and, where the records have it, the worker's CPU "
               "time (right). Hollow circles: tasks that ran while other processes competed for "
               "the CPUs; red crosses: failed tasks.", fig_time, "timing"),
    FigureSpec(figure_name("time_naed"), "Registration time against NAED per task, in the time "
               "to trust (device time on CUDA, else CPU time, else wall time where the records "
               "have nothing else; see the axis); diamonds mark each method's median time and "
               "median NAED.", fig_time_naed, "timing"),
]


def draw_figures(ctx: RunAnalysis) -> dict[str, bytes]:
    """Draw every figure of ``FIGURES``, write it as PNG into the run directory (removing the
    file of a figure with nothing to draw), and return ``{file name: PNG bytes}``."""
    out = {}
    for spec in FIGURES:
        fig = spec.draw(ctx)
        if fig is None:
            (ctx.run_dir / spec.name).unlink(missing_ok=True)
            continue
        out[spec.name] = png_bytes(fig)
        (ctx.run_dir / spec.name).write_bytes(out[spec.name])
    return out


__all__ = ["FIGURES", "FigureSpec", "draw_figures", "naed_label"]
