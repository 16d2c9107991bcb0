"""The sections of ``report.html``: each a function ``ReportContext -> str`` (an HTML fragment),
listed in page order in ``SECTIONS``. To add one, write the function and append it.
Every string that comes from data goes through ``esc``.
"""

from __future__ import annotations

from collections.abc import Callable

from mibench.reports.figures import FIGURES
from mibench.reports.page import ReportContext, esc, fmt, fmt_p, fmt_pm, img, missing, table
from mibench.reports.page import to_json as _json


def _figures(ctx: ReportContext, section: str) -> list[str]:
    return [img(ctx.figures[f.name], f.name, f"{f.caption} ({f.name})")
            for f in FIGURES if f.section == section and f.name in ctx.figures]


def _concurrency(ctx: ReportContext) -> tuple[int | None, int | None]:
    man, cfg = ctx.manifest, ctx.config
    concurrent = man.get("concurrent_tasks", cfg.get("workers"))
    try:
        concurrent = int(concurrent)
    except (TypeError, ValueError):
        concurrent = None
    threads = man.get("threads_per_task")
    return concurrent, threads if isinstance(threads, int) else None


def section_run(ctx: ReportContext) -> str:
    """What produced the run: dataset, options, methods and parameters, device, versions."""
    cfg, man = ctx.config, ctx.manifest
    dataset = cfg.get("dataset") or ", ".join(sorted(set(ctx.results.get("dataset", []))))
    norm = cfg.get("normalisation")
    rec_norms = sorted(set(ctx.results["normalisation"].dropna())) if len(ctx.results) else []
    if not norm:
        norm = ", ".join(rec_norms)
    concurrent, threads = _concurrency(ctx)
    dev = man.get("device") if isinstance(man.get("device"), dict) else {}
    device = dev.get("name") or cfg.get("device")
    if device and dev.get("type"):
        device = f"{device} ({dev['type']})"
    seeds = cfg.get("seeds")
    ev = ctx.evaluation
    counts = ev.counts if ev else {}
    tasks = esc(len(ctx.results))
    if counts:
        tasks += (f" ({counts['pairs']} pairs; {counts['failed']} failed; "
                  f"{counts['unscored']} registered, not scored)")
    items: list[tuple[str, str]] = [
        ("Dataset", esc(dataset)),
        ("Dataset options", f"<code>{esc(_json(cfg.get('dataset_params')))}</code>"),
        ("Seeds", esc(", ".join(map(str, seeds)) if isinstance(seeds, list) else seeds)),
        ("Tasks", tasks),
        ("NAED normalisation", esc(norm)),
        ("Device", esc(device)),
        ("Requested device", esc(cfg.get("device"))),
        ("Workers", esc(cfg.get("workers"))),
        ("Time-out [s]", esc(cfg.get("timeout"))),
        ("Reference method", esc(f"{ev.reference} ({ev.reference_reason})") if ev and
         ev.reference else esc(cfg.get("reference"))),
        ("Concurrent tasks", esc(concurrent)),
        ("Threads per task", esc(threads)),
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
    out += [f"<dt>{k}</dt><dd>{v}</dd>" for k, v in items
            if v not in ("", "<code></code>", "None")]
    out.append("</dl>")
    notes = man.get("dataset_notes")
    if isinstance(notes, list) and notes:
        out.append("<h3>Dataset notes</h3><ul>"
                   + "".join(f"<li>{esc(n)}</li>" for n in notes) + "</ul>")
    if len(rec_norms) > 1:
        out.append(f'<p class="note">Records use several NAED normalisations '
                   f"({esc(', '.join(rec_norms))}): their NAED values are not comparable.</p>")
    merged = man.get("merged_from")
    if isinstance(merged, list) and merged:
        rows = []
        for s in merged:
            s = s if isinstance(s, dict) else {}
            d = s.get("device") if isinstance(s.get("device"), dict) else {}
            rows.append([f"<code>{esc(s.get('run_dir'))}</code>", esc(d.get("name")),
                         esc(s.get("concurrent_tasks")), esc(s.get("updated")),
                         f"<code>{esc(_json(s.get('versions')))}</code>"])
        out += ["<h3>Merged from</h3>",
                table(["run directory", "device", "concurrent tasks", "updated", "versions"],
                      rows)]

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


def section_paper(ctx: ReportContext) -> str:
    """The paper-style table: Method | NAED mean ± std | p-value against the reference."""
    ev = ctx.evaluation
    out = ["<h2>NAED against the reference</h2>"]
    if ev is None or not ev.paper:
        return out[0] + "<p>No scored pairs.</p>"
    rows = []
    for r in ev.paper:
        name = f"<b>{esc(r.method)}</b>" if r.is_reference else esc(r.method)
        rows.append([name, fmt_pm(r.mean, r.std), "–" if r.is_reference else fmt_p(r.p_ttest),
                     "–" if r.is_reference else fmt_p(r.p_ttest_holm), fmt(r.n_pairs)])
    out.append(table(["Method", "NAED mean ± std", "p-value", "p (Holm)", "pairs"], rows,
                     "num paper"))
    seeds = ev.counts.get("seeds", [])
    out.append(f'<p class="note">Reference: <b>{esc(ev.reference)}</b> '
               f"({esc(ev.reference_reason)}), then the other methods by NAED mean. Values per "
               "pair" + (f" are means over the {len(seeds)} seeds" if len(seeds) > 1 else "")
               + "; std with ddof=1. p-value: two-sided paired t-test "
               "(<code>scipy.stats.ttest_rel</code>) against the reference over the pairs both "
               "methods have; Holm: corrected across the comparisons. Failed pairs count with "
               "their initial error.</p>")
    unpaired = [t for t in ev.tests if t.n_unpaired]
    if unpaired:
        items = ", ".join(f"{esc(t.method)}: {t.n_unpaired}" for t in unpaired)
        out.append(f'<p class="note warn">Pairs left out of a paired test because only one of '
                   f"the two methods has them: {items}.</p>")
    return "\n".join(out)


def section_methods(ctx: ReportContext) -> str:
    """The per-method summary table."""
    out = ["<h2>Summary per method</h2>"]
    if ctx.summary.empty:
        return out[0] + "<p>No records.</p>"
    rows = []
    for r in ctx.summary.itertuples(index=False):
        rows.append([f"<b>{esc(r.method)}</b>", fmt(r.n_pairs), fmt(r.n_scored),
                     fmt(r.n_unscored), fmt(r.n_failed), fmt_pm(r.naed_mean, r.naed_std),
                     fmt(r.naed_median), fmt(r.tre_mean), fmt(r.tre_median),
                     fmt(r.robustness_mean, 3), fmt(r.rtre_median_mean),
                     fmt(r.rank_rtre_median, 3), fmt(r.rank_rtre_max, 3), fmt(r.success_auc, 3),
                     fmt(r.time_median_s, 3), fmt(r.time_iqr_s, 3)])
    header = ["method", "tasks", "scored", "not scored", "failed", "NAED mean ± std",
              "NAED median", "TRE mean [px]", "TRE median [px]", "robustness",
              "avg median rTRE", "rank median rTRE", "rank max rTRE", "AUC 1–25 px",
              "median time [s]", "time IQR [s]"]
    out.append(table(header, rows, "num wide"))
    out.append('<p class="note">One value per task (pair × seed). Sorted by NAED mean, the '
               "<code>identity</code> baseline (no registration) last. Failed tasks count in "
               "every statistic with their initial error; tasks without fixed landmarks are "
               "registered, not scored, and enter no metric. TRE mean: mean over tasks of the "
               "mean landmark error; TRE median: median over tasks of the median landmark "
               "error (native pixels). Robustness: share of landmarks whose error decreased. "
               "rTRE = error / diagonal; ranks (ANHIR): per pair, 1 = best, a method missing a "
               "pair gets the worst rank. AUC: mean success rate over thresholds 1–25 px.</p>")
    return "\n".join(out)


def section_stats(ctx: ReportContext) -> str:
    """Every paired comparison in full, and the Friedman test."""
    ev = ctx.evaluation
    out = ["<h2>Statistics</h2>"]
    if ev is None or not ev.tests:
        return out[0] + "<p>Fewer than two methods with scored pairs: no tests.</p>"
    rows = [[esc(t.method), fmt(t.n_pairs), fmt(t.n_unpaired), fmt(t.mean_diff),
             fmt(t.t_statistic), fmt_p(t.p_ttest), fmt_p(t.p_ttest_holm), fmt(t.w_statistic),
             fmt_p(t.p_wilcoxon), fmt_p(t.p_wilcoxon_holm), fmt(t.effect_dz, 3),
             fmt(t.effect_rank_biserial, 3)] for t in ev.tests]
    out.append(table(["method", "pairs", "unpaired", "mean diff", "t", "p (t)", "p (t, Holm)",
                      "W", "p (Wilcoxon)", "p (W, Holm)", "d<sub>z</sub>", "r<sub>rb</sub>"],
                     rows, "num"))
    out.append(f'<p class="note">Each method against <b>{esc(ev.reference)}</b> on per-pair '
               "NAED; differences are method − reference (positive: larger error). Wilcoxon "
               "signed-rank on differences rounded to 12 decimals, zero differences dropped. "
               "Holm: step-down correction across the comparisons, per test. "
               "d<sub>z</sub>: mean difference / std of the differences; r<sub>rb</sub>: "
               "matched-pairs rank-biserial correlation.</p>")
    fr = ev.friedman
    if fr is not None and fr.mean_ranks:
        ranks = sorted(fr.mean_ranks.items(), key=lambda kv: kv[1])
        out.append("<h3>Friedman test</h3>")
        dropped = (f" ({fr.n_dropped} pairs left out: some method lacks them)"
                   if fr.n_dropped else "")
        if missing(fr.pvalue):
            out.append(f"<p>Not computed: it needs three methods or more on two complete pairs "
                       f"or more; there are {fr.n_methods} methods on {fr.n_pairs} complete "
                       f"pair(s){dropped}. Mean ranks over the complete pairs:</p>")
        else:
            out.append(f"<p>χ² = {fmt(fr.statistic)}, p = {fmt_p(fr.pvalue)} over "
                       f"{fr.n_pairs} pairs and {fr.n_methods} methods{dropped}.</p>")
        out.append(table(["method", "mean rank (1 = lowest NAED)"],
                         [[esc(m), fmt(r, 3)] for m, r in ranks], "num"))
    return "\n".join(out)


def section_groups(ctx: ReportContext) -> str:
    """One table per pair-metadata key (category, tissue, status, family)."""
    ev = ctx.evaluation
    if ev is None or ev.groups.empty:
        return ""
    out = ["<h2>By group</h2>"]
    for key, g in ev.groups.groupby("key", sort=False):
        groups = list(dict.fromkeys(g["group"]))
        methods = [m for m in ctx.order if m in set(g["method"])]
        cell = {(r.group, r.method): r for r in g.itertuples(index=False)}
        rows = []
        for m in methods:
            row = [f"<b>{esc(m)}</b>"]
            for grp in groups:
                r = cell.get((grp, m))
                if r is None:
                    row.append("–")
                    continue
                extra = []
                if r.n_failed:
                    extra.append(f"{r.n_failed} failed")
                if r.n_tasks - r.n_scored:
                    extra.append(f"{r.n_tasks - r.n_scored} not scored")
                tail = f" <small>({', '.join(extra)})</small>" if extra else ""
                row.append(fmt_pm(r.naed_mean, r.naed_std) + tail)
            rows.append(row)
        header = ["method"] + [f"{esc(grp)} <small>(n={int(g[g['group'] == grp]['n_tasks'].max())}"
                               ")</small>" for grp in groups]
        out += [f"<h3>By {esc(key)}</h3>", table(header, rows, "num")]
    out.append('<p class="note">NAED mean ± std per group (tasks); n: tasks per method in the '
               "group. Full numbers (median rTRE, success AUC) in <code>metrics.json</code>.</p>")
    return "\n".join(out)


def section_naed(ctx: ReportContext) -> str:
    return "\n".join(["<h2>NAED distribution</h2>", *_figures(ctx, "naed")])


def section_success(ctx: ReportContext) -> str:
    """Success curves, with the FIRE AUC table when the pairs carry FIRE categories."""
    ev = ctx.evaluation
    out = ["<h2>Success rate</h2>", *_figures(ctx, "success")]
    if ev is None or not ev.aucs:
        return "\n".join(out)
    cols = ["all"] + (["S", "P", "A", "mAUC"] if ev.fire_categories else [])
    rows = [[esc(m)] + [fmt(ev.aucs[m].get(c), 3) for c in cols] for m in ctx.order
            if m in ev.aucs]
    out.append(table(["method"] + [esc(c) for c in cols], rows, "num"))
    note = ("FIRE protocol: a task succeeds at threshold t when its mean landmark error "
            "(native pixels) is below t; AUC = mean success rate over t = 1…25 px")
    note += ("; mAUC = mean of the S, P and A AUCs." if ev.fire_categories else
             ". The pairs carry no FIRE categories (S, P, A): one curve over all pairs.")
    out.append(f'<p class="note">{note}</p>')
    return "\n".join(out)


def section_timing(ctx: ReportContext) -> str:
    """Timing figures, with how the tasks shared the machine."""
    concurrent, threads = _concurrency(ctx)
    out = ["<h2>Timing</h2>"]
    if concurrent is not None and concurrent > 1:
        out.append(f'<p class="note warn">{concurrent} tasks ran concurrently'
                   + (f", {threads} thread(s) each" if threads else "")
                   + ": their timings share the machine's cores (and device), so they are not "
                   "those of a task run alone.</p>")
    elif concurrent == 1:
        out.append('<p class="note">Tasks ran one at a time'
                   + (f" with {threads} thread(s)" if threads else "") + ".</p>")
    else:
        out.append('<p class="note">run.json does not say whether tasks ran concurrently.</p>')
    out += _figures(ctx, "timing")
    return "\n".join(out)


def section_overlays(ctx: ReportContext) -> str:
    out = ["<h2>Overlays</h2>"]
    if ctx.overlay_note:
        out.append(f"<p>{esc(ctx.overlay_note)}</p>")
    for o in ctx.overlays:
        caption = (f"{o.label} pair of the reference method {o.method}: {o.pair_id} (seed "
                   f"{o.seed}, NAED {fmt(o.naed)}). Top: checkerboard of fixed and warped "
                   "moving image; bottom: fixed in green, moving in magenta, fixed landmarks as "
                   "circles, moving landmarks mapped into the fixed frame as crosses. Left: "
                   f"before registration; right: after ({o.name}).")
        out.append(img(o.png, o.name, caption))
    return "\n".join(out)


def section_failures(ctx: ReportContext) -> str:
    """Every failed task with its error text, and the tasks registered but not scored."""
    df = ctx.results
    failed = df[df["status"] == "failed"] if len(df) else df
    out = ["<h2>Failures</h2>"]
    if failed.empty:
        out.append("<p>None.</p>")
    else:
        rows = [[esc(r.method), esc(r.pair_id), esc(r.seed), f"<pre>{esc(r.error)}</pre>"]
                for r in failed.itertuples(index=False)]
        out.append(table(["method", "pair", "seed", "error"], rows, "failures"))
    unscored = df[~df["scored"].astype(bool)] if len(df) else df
    if not unscored.empty:
        by_method = unscored.groupby("method")["pair_id"].nunique()
        items = ", ".join(f"{esc(m)}: {n}" for m, n in by_method.items())
        out.append(f"<p>Registered, not scored (no fixed landmarks): {len(unscored)} task(s) "
                   f"({items}).</p>")
    return "\n".join(out)


#: The sections of the page, in order.
SECTIONS: list[Callable[[ReportContext], str]] = [
    section_run, section_paper, section_methods, section_stats, section_groups, section_naed,
    section_success, section_timing, section_overlays, section_failures,
]

__all__ = ["SECTIONS"]
