"""What each section of ``report.html`` shows, as plain data for its template.

One function per section turns a :class:`~mibench.reports.analysis.RunAnalysis` into the values
and sentences its template (``templates/<section>.html.j2``) lays out. Everything here is plain
text: the templates escape it (autoescaping), so no function here writes markup.
"""

from __future__ import annotations

from typing import Any

from mibench.errors import UserError
from mibench.metrics import FIRE_CATEGORIES
from mibench.reports.analysis import RunAnalysis
from mibench.reports.figures import FIGURES
from mibench.reports.formatting import (
    missing,
    naed_definition,
    naed_header,
    normalised,
    plural,
    seed_groups,
    seed_text,
    to_json,
)
from mibench.reports.overlays import Overlay
from mibench.reports.paper_table import printed_rows
from mibench.variants import base_name

#: Said under a NAED figure when NAED is not normalised, where the figure is, not only in a table.
UNNORMALISED_FIGURE = " NAED here is the mean landmark error in pixels (--naed-norm none: D = 1)."


def section_figures(pngs: dict[str, bytes], section: str, naed_norm: str | None
                    ) -> list[dict[str, Any]]:
    """The figures of one section (``naed``, ``success``, ``timing``) that were drawn:
    ``png``, ``alt`` and ``caption`` each."""
    out = []
    for f in FIGURES:
        if f.section != section or f.name not in pngs:
            continue
        caption = f.caption
        if not normalised(naed_norm) and "NAED" in caption:
            caption += UNNORMALISED_FIGURE
        out.append({"png": pngs[f.name], "alt": f.name, "caption": f"{caption} ({f.name})"})
    return out


def concurrency(a: RunAnalysis) -> tuple[int | None, bool]:
    """The most tasks that ran at once, and whether invocations (or merged runs) differed."""
    man, cfg = a.manifest, a.config
    concurrent = man.get("concurrent_tasks", cfg.get("workers"))
    try:
        concurrent = int(concurrent)
    except (TypeError, ValueError):
        concurrent = None
    runs = man.get("invocations") or man.get("merged_from") or []
    each = {r.get("concurrent_tasks") for r in runs if isinstance(r, dict)
            and isinstance(r.get("concurrent_tasks"), int) and r["concurrent_tasks"] > 0}
    return concurrent, len(each) > 1


def thread_counts(a: RunAnalysis) -> dict[int, int]:
    """Tasks per torch thread count, from the records (``info.torch_threads``); when no record
    says, run.json's ``threads_per_task`` (the last invocation's) as one entry with no task
    count (0); ``{}`` when neither says."""
    df = a.results
    if len(df) and "torch_threads" in df and df["torch_threads"].notna().any():
        vc = df["torch_threads"].dropna().astype(int).value_counts().sort_index()
        return {int(k): int(v) for k, v in vc.items()}
    t = a.manifest.get("threads_per_task")
    return {t: 0} if isinstance(t, int) and not isinstance(t, bool) else {}


def threads_text(counts: dict[int, int]) -> str:
    if len(counts) == 1:
        return str(next(iter(counts)))
    return "; ".join(f"{plural(t, 'thread')}: {plural(n, 'task')}" for t, n in counts.items())


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _method_rows(a: RunAnalysis) -> list[dict[str, Any]]:
    """Every method with records and the parameters its records ran with (run.json's
    ``config.methods`` holds only the last invocation's selection), then the methods run.json
    selects that have no records yet. ``params``: one JSON text per parameter set, None for
    the defaults."""
    def params(p: object) -> str | None:
        text = p if isinstance(p, str) else to_json(p)
        return text if text not in ("", "{}", None) else None

    def how(name: str) -> str:
        """What a derived method is (its spec's description: the estimator and optimiser)."""
        try:
            spec = a.registry.get("method", base_name(name)) if a.registry else None
        except UserError:  # a plugin that no longer loads: nothing to say
            spec = None
        return spec.description if spec is not None and spec.derived_from else ""

    rows = []
    df = a.results
    ran = set(df["method"]) if len(df) else set()
    with_records = [m for m in a.order if m in ran]
    for m in with_records:
        sets = sorted(set(df.loc[df["method"] == m, "method_params"].dropna()))
        rows.append({"name": m, "params": [params(p) for p in sets] or [None],
                     "differ": len(sets) > 1, "records": True, "how": how(m)})
    configured = a.config.get("methods")
    for m, p in (configured.items() if isinstance(configured, dict) else []):
        if m not in with_records:
            rows.append({"name": m, "params": [params(p)], "differ": False, "records": False,
                         "how": how(m)})
    return rows


def run_view(a: RunAnalysis) -> dict[str, Any]:
    """What produced the run: dataset, options, methods and parameters, device, versions."""
    cfg, man, ev = a.config, a.manifest, a.evaluation
    dataset = cfg.get("dataset") or ", ".join(sorted(set(a.results.get("dataset", []))))
    norm = a.naed_norm
    concurrent, varied = concurrency(a)
    dev = man.get("device") if isinstance(man.get("device"), dict) else {}
    device = dev.get("name") or cfg.get("device")
    if device and dev.get("type"):
        device = f"{device} ({dev['type']})"
    seeds = cfg.get("seeds")
    seeds = ", ".join(map(str, seeds)) if isinstance(seeds, list) else seeds
    if ev and ev.seeds:  # the records' seeds: run.json has only the last invocation's
        sets = {tuple(v) for v in ev.seeds.values()}
        seeds = seed_text(list(sets.pop())) if len(sets) == 1 else seed_groups(ev.seeds)
    tasks = str(len(a.results))
    if ev and ev.counts:
        c = ev.counts
        tasks += (f" ({c['pairs']} pairs; {c['failed']} failed; {c['unscored']} registered, "
                  "not scored)")
    reference = (f"{ev.reference} ({ev.reference_reason})" if ev and ev.reference
                 else cfg.get("reference"))
    # (label, text, shown as code)
    items: list[tuple[str, str, bool]] = [
        ("Dataset", _text(dataset), False),
        ("Dataset options", to_json(cfg.get("dataset_params")), True),
        ("Seeds", _text(seeds), False),
        ("Tasks", tasks, False),
        ("NAED normalisation", _text(norm) + (" (D = 1: NAED is the mean TRE in pixels)"
                                              if not normalised(norm) else ""), False),
        ("Device", _text(device), False),
        ("Requested device", _text(cfg.get("device")), False),
        ("Workers", _text(cfg.get("workers")), False),
        ("Time-out [s]", _text(cfg.get("timeout")), False),
        ("Reference method", _text(reference), False),
        ("Concurrent tasks", _text(f"up to {concurrent}" if varied and concurrent
                                   else concurrent), False),
        ("Torch threads per task", threads_text(thread_counts(a)), False),
        ("Created", _text(man.get("created")), False),
        ("Updated", _text(man.get("updated")), False),
    ]
    shown = {"dataset", "dataset_params", "seeds", "naed_norm", "device", "workers", "timeout",
             "reference", "methods"}
    items += [(k, v if isinstance(v, str) else to_json(v), True)
              for k, v in sorted(cfg.items()) if k not in shown]
    machine = man.get("machine")
    if isinstance(machine, dict):
        items += [(f"Machine {k}", _text(v), False) for k, v in machine.items()]
    # An empty value, or one that only says None, is left out rather than shown blank.
    items = [(k, v, code) for k, v, code in items if v != "" and (code or v != "None")]
    notes = man.get("dataset_notes")
    merged = man.get("merged_from")
    merged_rows = []
    for s in merged if isinstance(merged, list) else []:
        s = s if isinstance(s, dict) else {}
        d = s.get("device") if isinstance(s.get("device"), dict) else {}
        merged_rows.append([_text(s.get("run_dir")), _text(d.get("name")),
                            _text(s.get("concurrent_tasks")), _text(s.get("updated")),
                            to_json(s.get("versions"))])
    versions = man.get("versions")
    return {
        "items": items,
        "notes": [_text(n) for n in notes] if isinstance(notes, list) else [],
        "mixed_norms": ", ".join(a.record_naed_norms) if len(a.record_naed_norms) > 1 else "",
        "merged": merged_rows,
        "methods": _method_rows(a),
        "versions": [(_text(k), _text(v)) for k, v in versions.items()]
        if isinstance(versions, dict) else [],
    }


def paper_view(a: RunAnalysis) -> dict[str, Any] | None:
    """The paper-style table and what it rests on; None when no pair is scored."""
    ev = a.evaluation
    if ev is None or not ev.paper:
        return None
    norm = a.naed_norm
    sets = {tuple(v) for v in ev.seeds.values()}
    return {"rows": printed_rows(ev), "naed": naed_header(norm), "warnings": ev.warnings,
            "definition": naed_definition(norm), "normalised": normalised(norm),
            "reference": ev.reference, "reason": ev.reference_reason,
            # per-pair values are means over each method's seeds: the same for all, or not
            "seed_groups": seed_groups(ev.seeds) if len(sets) > 1 else "",
            "n_seeds": len(next(iter(sets))) if len(sets) == 1 else 0,
            "noted": ev.noted_texts(), "unpaired": ev.unpaired_text()}


def methods_view(a: RunAnalysis) -> dict[str, Any]:
    """The per-method summary table (``summary.csv``)."""
    return {"rows": list(a.summary.itertuples(index=False)), "naed": naed_header(a.naed_norm),
            "baseline": [m for m in a.order if m in a.roles.baseline]}


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
        for m in [m for m in a.order if m in set(g["method"])]:
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
                cells.append({"mean": r.naed_mean, "std": r.naed_std, "extra": ", ".join(extra)})
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
    """Success curves, with the AUC table (per FIRE category when the pairs have them)."""
    ev = a.evaluation
    view: dict[str, Any] = {"figures": section_figures(pngs, "success", a.naed_norm),
                            "columns": []}
    if ev is None or not ev.aucs:
        return view
    columns = ["all"] + (["S", "P", "A", "mAUC"] if ev.fire_categories else [])
    view.update(columns=columns, fire=ev.fire_categories,
                rows=[(m, [ev.aucs[m].get(c) for c in columns]) for m in a.order
                      if m in ev.aucs],
                mauc_notes=_mauc_notes(a) if ev.fire_categories else [])
    return view


def timing_view(a: RunAnalysis, pngs: dict[str, bytes]) -> dict[str, Any]:
    """Timing figures, with how the tasks shared the machine."""
    concurrent, varied = concurrency(a)
    counts = thread_counts(a)
    return {"concurrent": concurrent, "varied": varied,
            "threads": next(iter(counts)) if len(counts) == 1 else None,
            "mixed_threads": threads_text(counts) if len(counts) > 1 else "",
            "figures": section_figures(pngs, "timing", a.naed_norm)}


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
    return {"note": note, "figures": figures}


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
        "run": run_view(a),
        "paper": paper_view(a),
        "methods": methods_view(a),
        "stats": stats_view(a),
        "groups": groups_view(a),
        "naed_figures": section_figures(pngs, "naed", a.naed_norm),
        "success": success_view(a, pngs),
        "timing": timing_view(a, pngs),
        "overlays": overlays_view(a, overlays, overlay_note),
        "failures": failures_view(a),
    }


__all__ = ["page_view", "section_figures"]
