"""``report.html``: one self-contained page (inline CSS, figures as base64 PNG) about a run.

The page is a list of sections, each a function ``ReportContext -> str`` (an HTML fragment) in
``SECTIONS``; figures are functions in ``FIGURES`` that draw on a fresh matplotlib ``Figure`` and
are written as PNG files next to the report as well as embedded. To add a section or a figure,
write the function and append it. Every string that comes from data goes through ``esc``.

matplotlib is used through ``matplotlib.figure.Figure`` with the Agg canvas, imported inside the
drawing functions: no pyplot, no global backend switch, safe in threads and headless machines.
"""

from __future__ import annotations

import base64
import html
import inspect
import io
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mibench.records import canonical_json
from mibench.reports.results import (
    load_manifest,
    load_results,
    method_order,
    summary_frame,
    write_results,
)

REPORT_HTML = "report.html"


# --------------------------------------------------------------------------- formatting helpers


def esc(value: Any) -> str:
    """HTML-escaped text of any value (None -> empty)."""
    return "" if value is None else html.escape(str(value), quote=True)


def _missing(x: Any) -> bool:
    if x is None:
        return True
    try:
        return bool(pd.isna(x))
    except (TypeError, ValueError):
        return False


def fmt(x: Any, sig: int = 4) -> str:
    """A number with ``sig`` significant digits; an en dash when missing."""
    if _missing(x):
        return "–"
    if isinstance(x, (int, np.integer)) and not isinstance(x, bool):
        return str(int(x))
    try:
        return f"{float(x):.{sig}g}"
    except (TypeError, ValueError):
        return esc(x)


def _json(value: Any) -> str:
    return canonical_json(value) if value not in (None, {}, []) else ""


def table(header: list[str], rows: list[list[str]], cls: str = "") -> str:
    """An HTML table; header and cells are HTML fragments (escape data before passing it)."""
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    attr = f' class="{cls}"' if cls else ""
    return (f"<table{attr}><thead><tr>{head}</tr></thead>"
            f"<tbody>{body}</tbody></table>")


def _get(d: Any, *keys: str, default: Any = None) -> Any:
    """``d[k1][k2]...`` tolerant of missing keys and non-dict values."""
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return default
        d = d[k]
    return d


# --------------------------------------------------------------------------- context


@dataclass
class ReportContext:
    """Everything a section may use."""

    run_dir: Path
    manifest: dict[str, Any]
    results: pd.DataFrame
    summary: pd.DataFrame
    figures: dict[str, bytes] = field(default_factory=dict)  # file name -> PNG bytes

    @property
    def config(self) -> dict[str, Any]:
        c = self.manifest.get("config")
        return c if isinstance(c, dict) else {}

    @property
    def order(self) -> list[str]:
        return method_order(self.summary)


# --------------------------------------------------------------------------- figures


def _new_figure(n_methods: int):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 1.2 + 0.45 * max(n_methods, 1)), dpi=110)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot(1, 1, 1)


def _strip_box(ctx: ReportContext, column: str, xlabel: str, log: bool | None):
    """Horizontal box plot per method (summary order, best at the top) with the points on it;
    failed tasks as red crosses. ``log=None``: log axis when the values span over two decades."""
    order = ctx.order
    fig, ax = _new_figure(len(order))
    df = ctx.results
    data, failed = [], []
    for m in order:
        g = df[df["method"] == m]
        v = g[column].to_numpy(dtype=float)
        ok = np.isfinite(v) & ((v > 0) if log is not False else True)
        data.append(v[ok])
        failed.append((g["status"].to_numpy() == "failed")[ok])
    values = np.concatenate(data) if data else np.array([])
    if values.size == 0:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return fig
    if log is None:
        pos = values[values > 0]
        log = pos.size == values.size and pos.max() / pos.min() > 100
        if log:
            data = [d[d > 0] for d in data]
    ys = np.arange(len(order), 0, -1)
    nonempty = [i for i, d in enumerate(data) if d.size]
    horizontal = ({"orientation": "horizontal"}  # matplotlib >= 3.10; `vert` is deprecated
                  if "orientation" in inspect.signature(ax.boxplot).parameters else {"vert": False})
    ax.boxplot([data[i] for i in nonempty], positions=ys[nonempty], widths=0.6,
               showfliers=False, medianprops={"color": "black"}, **horizontal)
    rng = np.random.default_rng(0)
    for y, d, f in zip(ys, data, failed, strict=True):
        jitter = y + rng.uniform(-0.18, 0.18, d.size)
        ax.scatter(d[~f], jitter[~f], s=10, alpha=0.6, color="tab:blue", zorder=3)
        if f.any():
            ax.scatter(d[f], jitter[f], s=22, marker="x", color="tab:red", zorder=4,
                       label="failed")
    if log:
        ax.set_xscale("log")
    ax.set_yticks(ys)
    ax.set_yticklabels(order)
    ax.set_ylim(0.4, len(order) + 0.6)
    ax.set_xlabel(xlabel)
    ax.grid(axis="x", alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(handles[:1], labels[:1], loc="best", fontsize="small")
    fig.tight_layout()
    return fig


def fig_time(ctx: ReportContext):
    return _strip_box(ctx, "wall_s", "registration time per task [s] (log)", log=True)


def fig_naed(ctx: ReportContext):
    return _strip_box(ctx, "naed", "NAED per pair", log=None)


#: (file name, caption, drawing function) of each figure, in page order.
FIGURES: list[tuple[str, str, Callable[[ReportContext], Any]]] = [
    ("fig_naed.png", "NAED per pair and method (box: quartiles; red crosses: failed pairs, "
     "scored with their initial error).", fig_naed),
    ("fig_time.png", "Registration time per task and method (wall clock, registration alone).",
     fig_time),
]


def write_figures(ctx: ReportContext) -> dict[str, bytes]:
    """Draw every figure of ``FIGURES``, write it as PNG into the run dir, return the bytes."""
    out = {}
    for name, _caption, draw in FIGURES:
        buf = io.BytesIO()
        draw(ctx).savefig(buf, format="png", metadata={"Software": None})
        out[name] = buf.getvalue()
        (ctx.run_dir / name).write_bytes(out[name])
    return out


# --------------------------------------------------------------------------- sections


def section_run(ctx: ReportContext) -> str:
    """What produced the run: configuration, device, versions, machine."""
    cfg, man = ctx.config, ctx.manifest
    dataset = cfg.get("dataset") or ", ".join(sorted(set(ctx.results.get("dataset", []))))
    norm = cfg.get("normalisation")
    rec_norms = sorted(set(ctx.results["normalisation"].dropna())) if len(ctx.results) else []
    if not norm:
        norm = ", ".join(rec_norms)
    concurrent = man.get("concurrent_tasks", cfg.get("workers"))
    dev = man.get("device") if isinstance(man.get("device"), dict) else {}
    device = dev.get("name") or cfg.get("device")
    if device and dev.get("type"):
        device = f"{device} ({dev['type']})"
    seeds = cfg.get("seeds")
    items: list[tuple[str, str]] = [
        ("Dataset", esc(dataset)),
        ("Dataset options", f"<code>{esc(_json(cfg.get('dataset_params')))}</code>"),
        ("Seeds", esc(", ".join(map(str, seeds)) if isinstance(seeds, list) else seeds)),
        ("Tasks", esc(len(ctx.results))),
        ("NAED normalisation", esc(norm)),
        ("Device", esc(device)),
        ("Requested device", esc(cfg.get("device"))),
        ("Workers", esc(cfg.get("workers"))),
        ("Time-out [s]", esc(cfg.get("timeout"))),
        ("Reference method", esc(cfg.get("reference"))),
        ("Concurrent tasks", esc(concurrent)),
        ("Created", esc(man.get("created"))),
        ("Updated", esc(man.get("updated"))),
    ]
    shown = {"dataset", "dataset_params", "seeds", "normalisation", "device", "workers",
             "timeout", "reference", "methods"}
    items += [(esc(k), f"<code>{esc(_json(v) if not isinstance(v, str) else v)}</code>")
              for k, v in sorted(cfg.items()) if k not in shown]
    machine = man.get("machine")
    if isinstance(machine, dict):
        items += [(f"Machine {esc(k)}", esc(v)) for k, v in machine.items()]
    out = ["<h2>Run</h2>", "<dl>"]
    out += [f"<dt>{k}</dt><dd>{v}</dd>" for k, v in items if v not in ("", "<code></code>")]
    out.append("</dl>")
    try:
        many = int(concurrent) > 1
    except (TypeError, ValueError):
        many = False
    if many:
        out.append(f'<p class="note">{esc(concurrent)} tasks ran concurrently: their timings '
                   "share the machine's cores (and device), so they are not those of a task "
                   "run alone.</p>")
    if len(rec_norms) > 1:
        out.append(f'<p class="note">Records use several NAED normalisations '
                   f"({esc(', '.join(rec_norms))}): their NAED values are not comparable.</p>")

    methods = cfg.get("methods")
    if not isinstance(methods, dict) or not methods:
        methods = {}
        for m, g in ctx.results.groupby("method", sort=True) if len(ctx.results) else []:
            methods[m] = " | ".join(sorted(set(g["method_params"])))
    if methods:
        rows = [[f"<b>{esc(m)}</b>",
                 f"<code>{esc(p if isinstance(p, str) else _json(p))}</code>"
                 if p not in ("", None, {}) else "defaults"]
                for m, p in methods.items()]
        out += ["<h3>Methods</h3>", table(["method", "parameters"], rows)]
    versions = man.get("versions")
    if isinstance(versions, dict) and versions:
        out += ["<h3>Versions</h3>",
                table(["package", "version"], [[esc(k), esc(v)] for k, v in versions.items()])]
    return "\n".join(out)


def section_methods(ctx: ReportContext) -> str:
    """The per-method table."""
    out = ["<h2>Methods</h2>"]
    if ctx.summary.empty:
        return out[0] + "<p>No records.</p>"
    rows = []
    for r in ctx.summary.itertuples(index=False):
        naed = fmt(r.naed_mean) + ("" if _missing(r.naed_std) else f" ± {fmt(r.naed_std)}")
        rows.append([f"<b>{esc(r.method)}</b>", fmt(r.n_pairs), fmt(r.n_scored), naed,
                     fmt(r.naed_median), fmt(r.tre_mean), fmt(r.tre_median),
                     fmt(r.robustness_mean, 3), fmt(r.n_failed), fmt(r.time_median_s, 3)])
    header = ["method", "tasks", "scored", "NAED mean ± std", "NAED median", "TRE mean [px]",
              "TRE median [px]", "robustness", "failed", "median time [s]"]
    out.append(table(header, rows, "num"))
    out.append('<p class="note">Sorted by NAED mean, the <code>identity</code> baseline (no '
               "registration) last. Failed pairs count in every statistic with their initial "
               "error; std uses ddof=1. TRE mean: mean over pairs of the mean landmark error; "
               "TRE median: median over pairs of the median landmark error. Robustness: share "
               "of landmarks whose error decreased, averaged over pairs.</p>")
    return "\n".join(out)


def section_figures(ctx: ReportContext) -> str:
    out = ["<h2>Figures</h2>"]
    for name, caption, _draw in FIGURES:
        if name in ctx.figures:
            data = base64.b64encode(ctx.figures[name]).decode("ascii")
            out.append(f'<figure><img alt="{esc(name)}" src="data:image/png;base64,{data}">'
                       f"<figcaption>{esc(caption)} ({esc(name)})</figcaption></figure>")
    return "\n".join(out)


def section_failures(ctx: ReportContext) -> str:
    """Every failed task with its error text."""
    df = ctx.results
    failed = df[df["status"] == "failed"] if len(df) else df
    out = ["<h2>Failures</h2>"]
    if failed.empty:
        return out[0] + "<p>None.</p>"
    rows = [[esc(r.method), esc(r.pair_id), esc(r.seed), f"<pre>{esc(r.error)}</pre>"]
            for r in failed.itertuples(index=False)]
    out.append(table(["method", "pair", "seed", "error"], rows, "failures"))
    return "\n".join(out)


#: The sections of the page, in order.
SECTIONS: list[Callable[[ReportContext], str]] = [
    section_run, section_methods, section_figures, section_failures,
]

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2em auto;
max-width:70em;padding:0 1em;color:#222;line-height:1.4}
h1{margin-bottom:0.2em}h2{border-bottom:1px solid #ccc;margin-top:1.6em}
table{border-collapse:collapse;margin:0.5em 0;font-size:0.92em}
th,td{border:1px solid #ddd;padding:0.25em 0.6em;text-align:left;vertical-align:top}
th{background:#f3f3f3}table.num td+td{text-align:right;font-variant-numeric:tabular-nums}
dl{display:grid;grid-template-columns:max-content auto;gap:0.15em 1em}dt{font-weight:600}
dd{margin:0}code{font-size:0.9em;word-break:break-all}
pre{margin:0;white-space:pre-wrap;max-height:12em;overflow:auto;font-size:0.85em}
.note{color:#555;font-size:0.9em}figure{margin:1em 0}img{max-width:100%}
figcaption{color:#555;font-size:0.9em}
"""


def render(ctx: ReportContext, sections: list[Callable[[ReportContext], str]] | None = None
           ) -> str:
    """The whole page as a string."""
    title = f"mibench report: {ctx.config.get('dataset') or ctx.run_dir.name}"
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    body = "\n".join(s(ctx) for s in (SECTIONS if sections is None else sections))
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{esc(title)}</title><style>{CSS}</style></head><body>"
            f"<h1>{esc(title)}</h1><p class=\"note\">Run directory <code>{esc(ctx.run_dir)}"
            f"</code>; report built {esc(now)}.</p>\n{body}\n</body></html>\n")


def write_report(run_dir: Path, results: pd.DataFrame | None = None) -> Path:
    """Write the figures (``fig_*.png``) and ``report.html`` into ``run_dir``; return its path."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if results is None:
        results = load_results(run_dir)
    ctx = ReportContext(run_dir=run_dir, manifest=load_manifest(run_dir), results=results,
                        summary=summary_frame(results))
    ctx.figures = write_figures(ctx)
    path = run_dir / REPORT_HTML
    tmp = path.with_name(f".tmp-{REPORT_HTML}")
    tmp.write_text(render(ctx), encoding="utf-8")
    tmp.replace(path)
    return path


def build_reports(run_dir: Path) -> Path:
    """Write ``results.csv``, ``summary.csv``, the figures and ``report.html``.

    Returns the path of ``report.html``.
    """
    results = load_results(Path(run_dir))
    write_results(run_dir, results)
    return write_report(run_dir, results)


__all__ = ["FIGURES", "SECTIONS", "ReportContext", "build_reports", "esc", "fmt", "render",
           "write_report"]
