"""What each section of ``report.html`` shows, as plain data for its template.

One function per section turns a :class:`~mibench.reports.analysis.RunAnalysis` into the values
and sentences its template (``templates/<section>.html.j2``) lays out. Everything here is plain
text: the templates escape it (autoescaping), so no function here writes markup.
"""

from __future__ import annotations

from typing import Any

from mibench.metrics import FIRE_CATEGORIES
from mibench.reports.analysis import RunAnalysis
from mibench.reports.figures import FIGURES
from mibench.reports.formatting import (
    DEFORMATION_CAPTION,
    fmt,
    fmt_pm,
    missing,
    naed_definition,
    naed_header,
    normalised,
    seed_groups,
)
from mibench.reports.overlays import VOLUME_NOTE, Overlay
from mibench.reports.paper_table import REF_MARK, legend, printed_rows
from mibench.reports.run_details import headline, run_view, single_seed_text
from mibench.reports.timing import timing_view
from mibench.reports.units import DEFAULT_UNIT, in_unit, symbol, words

#: Said under a NAED figure when NAED is not normalised, where the figure is, not only in a table.
UNNORMALISED_FIGURE = " NAED here is the mean landmark error in pixels (--naed-norm none: D = 1)."

#: The per-method summary table: (summary column, heading, significant digits, which is best:
#: "min", "max" or None, the protocol it belongs to or None for every protocol).
SUMMARY_TABLE = (
    ("n_pairs", "tasks", 4, None, None), ("n_scored", "scored", 4, None, None),
    ("n_unscored", "not scored", 4, None, None), ("n_failed", "failed", 4, None, None),
    ("naed_mean", "{naed} mean ± std", 4, "min", None),
    ("naed_median", "{naed} median", 4, "min", None),
    ("tre_mean", "TRE mean [{unit}]", 4, "min", None),
    ("tre_median", "TRE median [{unit}]", 4, "min", None),
    ("robustness_mean", "robustness", 3, "max", None),
    ("rtre_median_mean", "avg median rTRE", 4, "min", "anhir"),
    ("rank_rtre_median", "rank median rTRE", 3, "min", "anhir"),
    ("rank_rtre_max", "rank max rTRE", 3, "min", "anhir"),
    ("success_auc", "AUC 1–25 px", 3, "max", "fire"),
    # Only in runs with non-matrix results (summary.csv has them then).
    ("folding_mean", "folding", 3, "min", None),
    ("sd_log_jacobian_mean", "SD log J", 3, "min", None),
)


def section_figures(pngs: dict[str, bytes], section: str, naed_norm: str | None,
                    unit: str = DEFAULT_UNIT) -> list[dict[str, Any]]:
    """The figures of one section (``naed``, ``success``, ``timing``) that were drawn:
    ``png``, ``alt`` and ``caption`` each (lengths said in ``unit``, the records')."""
    out = []
    for f in FIGURES:
        if f.section != section or f.name not in pngs:
            continue
        caption = f.caption
        if not normalised(naed_norm) and "NAED" in caption:
            caption += UNNORMALISED_FIGURE
        caption = in_unit(caption, unit)
        out.append({"png": pngs[f.name], "alt": f.name, "caption": f"{caption} ({f.name})"})
    return out


def paper_view(a: RunAnalysis, pngs: dict[str, bytes]) -> dict[str, Any] | None:
    """The main result: the paper-style table, the NAED figure and the page's one definition of
    NAED mean ± std; None when no pair is scored."""
    ev = a.evaluation
    if ev is None or not ev.paper:
        return None
    norm = a.naed_norm
    sets = {tuple(v) for v in ev.seeds.values()}
    return {"rows": printed_rows(ev), "naed": naed_header(norm, unit=a.unit),
            "warnings": ev.warnings,
            "definition": naed_definition(norm, a.unit), "normalised": normalised(norm),
            "reference": ev.reference, "reason": ev.reference_reason,
            "legend": legend(ev), "mark": REF_MARK,
            # per-pair values are means over each method's seeds: the same for all, or not
            "seed_groups": seed_groups(ev.seeds) if len(sets) > 1 else "",
            "n_seeds": len(next(iter(sets))) if len(sets) == 1 else 0,
            "reused": single_seed_text(a),
            "figures": section_figures(pngs, "naed", norm, a.unit),
            "noted": ev.noted_texts(), "unpaired": ev.unpaired_text()}


def best_flags(values: list[Any], best: str | None, sig: int) -> list[bool]:
    """Which of ``values`` are best (``"min"`` or ``"max"``) as printed with ``sig`` significant
    digits (ties all best); none when ``best`` is None or nothing has a value."""
    present = [float(v) for v in values if not missing(v)]
    if best is None or not present:
        return [False] * len(values)
    top = fmt(min(present) if best == "min" else max(present), sig)
    return [not missing(v) and fmt(v, sig) == top for v in values]


def methods_view(a: RunAnalysis) -> dict[str, Any]:
    """The per-method summary table (``summary.csv``): the columns the dataset's protocol
    applies to, each cell ``{"text", "best"}``."""
    ev, df = a.evaluation, a.summary
    applies = {None: True, "fire": bool(ev and ev.fire_applies),
               "anhir": bool(ev and ev.anhir_applies)}
    naed = naed_header(a.naed_norm, unit=a.unit)
    columns = [c for c in SUMMARY_TABLE if applies[c[4]] and c[0] in df]
    cells = []
    for col, _head, sig, best, _ in columns:
        values = list(df[col])
        flags = best_flags(values, best, sig)
        if col == "naed_mean":
            texts = [fmt_pm(m, s) for m, s in zip(values, df["naed_std"], strict=True)]
        else:
            texts = [fmt(v, sig) for v in values]
        cells.append([{"text": t, "best": f} for t, f in zip(texts, flags, strict=True)])
    rows = [(m, [c[i] for c in cells]) for i, m in enumerate(df["method"])]
    hidden = [] if ev is None else ["FIRE's success AUC"] * (not ev.fire_applies) + \
        ["ANHIR's rTRE and ranks"] * (not ev.anhir_applies)
    unit = symbol(a.unit)
    return {"rows": rows, "header": [h.format(naed=naed, unit=unit) for _, h, _, _, _ in columns],
            "naed": naed, "hidden": hidden, "unit": a.unit, "unit_words": words(a.unit),
            "baseline": [m for m in a.order if m in a.roles.baseline],
            "deformation": DEFORMATION_CAPTION if "folding_mean" in df else ""}


def stats_view(a: RunAnalysis) -> dict[str, Any]:
    """Every paired comparison in full, and the Friedman test."""
    ev = a.evaluation
    if ev is None or not ev.tests:
        return {"tests": []}
    fr = ev.friedman
    ranks = sorted(fr.mean_ranks.items(), key=lambda kv: kv[1]) if fr is not None else []
    return {"tests": ev.tests, "reference": ev.reference, "short": ev.short_text(),
            "noted": ev.noted_texts(), "friedman": fr if ranks else None, "ranks": ranks,
            "friedman_missing": fr is not None and missing(fr.pvalue)}


def groups_view(a: RunAnalysis) -> dict[str, Any]:
    """One table per pair-metadata key (category, tissue, status, family)."""
    ev = a.evaluation
    if ev is None or ev.groups.empty:
        return {"tables": []}
    tables = []
    for key, g in ev.groups.groupby("key", sort=False):
        groups = list(dict.fromkeys(g["group"]))
        cell = {(r.group, r.method): r for r in g.itertuples(index=False)}
        rows = []
        methods = [m for m in a.order if m in set(g["method"])]
        best = {grp: best_flags([getattr(cell.get((grp, m)), "naed_mean", None)
                                 for m in methods], "min", 4) for grp in groups}
        for i, m in enumerate(methods):
            cells = []
            for grp in groups:
                r = cell.get((grp, m))
                if r is None:
                    cells.append(None)
                    continue
                extra = []
                if r.n_failed:
                    extra.append(f"{r.n_failed} failed")
                if r.n_tasks - r.n_scored:
                    extra.append(f"{r.n_tasks - r.n_scored} not scored")
                cells.append({"mean": r.naed_mean, "std": r.naed_std, "extra": ", ".join(extra),
                              "best": best[grp][i]})
            rows.append({"method": m, "cells": cells})
        header = [(grp, int(g[g["group"] == grp]["n_tasks"].max())) for grp in groups]
        tables.append({"key": key, "header": header, "rows": rows})
    return {"tables": tables, "normalised": normalised(a.naed_norm)}


def _mauc_notes(a: RunAnalysis) -> list[str]:
    """Why mAUC is missing: the FIRE categories a method has no scored task in."""
    ev = a.evaluation
    lacking = {m: [c for c in FIRE_CATEGORIES if c not in ev.aucs[m]]
               for m in a.order if m in ev.aucs}
    lacking = {m: cats for m, cats in lacking.items() if cats}
    if not lacking:
        return []
    if len({tuple(c) for c in lacking.values()}) == 1 and len(lacking) == len(ev.aucs):
        cats = next(iter(lacking.values()))
        return [f"No scored task in FIRE categor{'y' if len(cats) == 1 else 'ies'} "
                f"{', '.join(cats)}: mAUC (the mean of the S, P and A AUCs) is not defined."]
    each = "; ".join(f"{m}: {', '.join(c)}" for m, c in lacking.items())
    return ["mAUC (the mean of the S, P and A AUCs) is not defined for methods without a "
            f"scored task in every category; missing categories: {each}."]


def success_view(a: RunAnalysis, pngs: dict[str, bytes]) -> dict[str, Any]:
    """Success curves, with the AUC table (per FIRE category when the pairs have them); only on
    FIRE-protocol data (``applies`` False: the section says why it is empty)."""
    ev = a.evaluation
    applies = bool(ev and ev.fire_applies)
    view: dict[str, Any] = {"figures": section_figures(pngs, "success", a.naed_norm, a.unit)
                            if applies else [], "columns": [], "applies": applies,
                            "dataset": a.dataset or "this run's"}
    if not applies or not ev.aucs:
        return view
    columns = ["all"] + (["S", "P", "A", "mAUC"] if ev.fire_categories else [])
    methods = [m for m in a.order if m in ev.aucs]
    flags = [best_flags([ev.aucs[m].get(c) for m in methods], "max", 3) for c in columns]
    view.update(columns=columns, fire=ev.fire_categories,
                rows=[(m, [{"text": fmt(ev.aucs[m].get(c), 3), "best": flags[k][i]}
                           for k, c in enumerate(columns)]) for i, m in enumerate(methods)],
                mauc_notes=_mauc_notes(a) if ev.fire_categories else [])
    return view


def overlays_view(a: RunAnalysis, overlays: list[Overlay], note: str) -> dict[str, Any]:
    """The overlay figures, each with its caption (a failed registration said first)."""
    df = a.results
    figures = []
    for o in overlays:
        task = df[(df["method"] == o.method) & (df["pair_id"] == o.pair_id)
                  & (df["seed"] == o.seed)] if len(df) else df
        failed = bool(len(task)) and bool((task["status"] == "failed").any())
        error = task["error"].iloc[0] if failed else None
        error = [] if missing(error) else str(error).strip().splitlines()
        figures.append({"png": o.png, "alt": o.name, "overlay": o, "failed": failed,
                        "why": f" ({error[0][:160]})" if error else ""})
    return {"note": note, "figures": figures, "volume_note": VOLUME_NOTE}


def failures_view(a: RunAnalysis) -> dict[str, Any]:
    """Every failed task with its error text, and the tasks registered but not scored."""
    df = a.results
    failed = df[df["status"] == "failed"] if len(df) else df
    unscored = df[~df["scored"].astype(bool)] if len(df) else df
    by_method = (unscored.groupby("method")["pair_id"].nunique() if len(unscored)
                 else {})
    return {"failed": list(failed.itertuples(index=False)), "unscored": len(unscored),
            "unscored_by_method": ", ".join(f"{m}: {n}" for m, n in dict(by_method).items())}


def page_view(a: RunAnalysis, pngs: dict[str, bytes], overlays: list[Overlay],
              overlay_note: str) -> dict[str, Any]:
    """Everything the page template needs, section by section."""
    return {
        "title": f"mibench report: {a.config.get('dataset') or a.run_dir.name}",
        "run_dir": str(a.run_dir),
        "headline": headline(a),
        "run": run_view(a),
        "paper": paper_view(a, pngs),
        "methods": methods_view(a),
        "stats": stats_view(a),
        "groups": groups_view(a),
        "success": success_view(a, pngs),
        "timing": timing_view(a, section_figures(pngs, "timing", a.naed_norm, a.unit)),
        "overlays": overlays_view(a, overlays, overlay_note),
        "failures": failures_view(a),
    }


__all__ = ["best_flags", "page_view", "section_figures"]
