"""The sections of ``report.html``: each a function ``ReportContext -> str`` (an HTML fragment),
listed in page order in ``SECTIONS``. To add one, write the function and append it.
Every string that comes from data goes through ``esc``.
"""

from __future__ import annotations

from collections.abc import Callable

from mibench.metrics import FIRE_CATEGORIES
from mibench.reports.evaluation import seed_groups, seed_text
from mibench.reports.figures import FIGURES
from mibench.reports.page import ReportContext, esc, fmt, fmt_p, fmt_pm, img, missing, table
from mibench.reports.page import to_json as _json


def _figures(ctx: ReportContext, section: str) -> list[str]:
    unnormalised = _normalisation(ctx) == "none"

    def caption(f) -> str:
        text = f.caption
        if unnormalised and "NAED" in text:  # say it where the figure is, not only in a table
            text += " NAED here is the mean landmark error in pixels (--naed-norm none: D = 1)."
        return f"{text} ({f.name})"

    return [img(ctx.figures[f.name], f.name, caption(f))
            for f in FIGURES if f.section == section and f.name in ctx.figures]


#: What D (the NAED normaliser) is, per ``--naed-norm``.
NORM_TEXT = {
    "diagonal": "D = the fixed image's diagonal √(w² + h²) in native pixels",
    "max-side": "D = the fixed image's longer side max(w, h) in native pixels",
    "none": "D = 1 (<code>--naed-norm none</code>): NAED is the mean landmark error (TRE) in "
            "native pixels, not a normalised value",
}


def _normalisation(ctx: ReportContext) -> str | None:
    """The run's NAED normalisation: run.json's, else the records'."""
    norm = ctx.config.get("normalisation")
    if isinstance(norm, str) and norm:
        return norm
    return ctx.evaluation.normalisation if ctx.evaluation else None


def _naed_header(ctx: ReportContext) -> str:
    """The NAED column's header: says so when NAED is not normalised (D = 1)."""
    return "NAED [px, D = 1]" if _normalisation(ctx) == "none" else "NAED"


def _concurrency(ctx: ReportContext) -> tuple[int | None, bool]:
    """The most tasks that ran at once, and whether invocations (or merged runs) differed."""
    man, cfg = ctx.manifest, ctx.config
    concurrent = man.get("concurrent_tasks", cfg.get("workers"))
    try:
        concurrent = int(concurrent)
    except (TypeError, ValueError):
        concurrent = None
    runs = man.get("invocations") or man.get("merged_from") or []
    each = {r.get("concurrent_tasks") for r in runs if isinstance(r, dict)
            and isinstance(r.get("concurrent_tasks"), int) and r["concurrent_tasks"] > 0}
    return concurrent, len(each) > 1


def _thread_counts(ctx: ReportContext) -> dict[int, int]:
    """Tasks per torch thread count, from the records (``info.torch_threads``); ``{}`` when no
    record says, and then run.json's ``threads_per_task`` (the last invocation's) as one
    entry with no task count (0)."""
    df = ctx.results
    if len(df) and "torch_threads" in df and df["torch_threads"].notna().any():
        vc = df["torch_threads"].dropna().astype(int).value_counts().sort_index()
        return {int(k): int(v) for k, v in vc.items()}
    t = ctx.manifest.get("threads_per_task")
    return {t: 0} if isinstance(t, int) and not isinstance(t, bool) else {}


def _threads_text(counts: dict[int, int]) -> str:
    if len(counts) == 1:
        return str(next(iter(counts)))
    return "; ".join(f"{t} thread{'s' if t != 1 else ''}: {n} task{'s' if n != 1 else ''}"
                     for t, n in counts.items())


def _method_rows(ctx: ReportContext) -> list[list[str]]:
    """Every method with records and the parameters its records ran with (run.json's
    ``config.methods`` holds only the last invocation's selection), then the methods run.json
    selects that have no records yet."""
    def cell(p: object) -> str:
        text = p if isinstance(p, str) else _json(p)
        return f"<code>{esc(text)}</code>" if text not in ("", "{}", None) else "defaults"

    rows = []
    df = ctx.results
    ran = set(df["method"]) if len(df) else set()
    with_records = [m for m in ctx.order if m in ran]
    for m in with_records:
        params = sorted(set(df.loc[df["method"] == m, "method_params"].dropna()))
        text = " | ".join(cell(p) for p in params) or "defaults"
        if len(params) > 1:
            text += ' <span class="warn">(records with different parameters)</span>'
        rows.append([f"<b>{esc(m)}</b>", text])
    configured = ctx.config.get("methods")
    for m, p in (configured.items() if isinstance(configured, dict) else []):
        if m not in with_records:
            rows.append([f"<b>{esc(m)}</b>", cell(p) + " <small>(no records)</small>"])
    return rows


def section_run(ctx: ReportContext) -> str:
    """What produced the run: dataset, options, methods and parameters, device, versions."""
    cfg, man = ctx.config, ctx.manifest
    dataset = cfg.get("dataset") or ", ".join(sorted(set(ctx.results.get("dataset", []))))
    norm = cfg.get("normalisation")
    rec_norms = sorted(set(ctx.results["normalisation"].dropna())) if len(ctx.results) else []
    if not norm:
        norm = ", ".join(rec_norms)
    concurrent, varied = _concurrency(ctx)
    dev = man.get("device") if isinstance(man.get("device"), dict) else {}
    device = dev.get("name") or cfg.get("device")
    if device and dev.get("type"):
        device = f"{device} ({dev['type']})"
    ev = ctx.evaluation
    seeds = cfg.get("seeds")
    seeds = ", ".join(map(str, seeds)) if isinstance(seeds, list) else seeds
    if ev and ev.seeds:  # the records' seeds: run.json has only the last invocation's
        sets = {tuple(v) for v in ev.seeds.values()}
        seeds = seed_text(list(sets.pop())) if len(sets) == 1 else seed_groups(ev.seeds)
    counts = ev.counts if ev else {}
    tasks = esc(len(ctx.results))
    if counts:
        tasks += (f" ({counts['pairs']} pairs; {counts['failed']} failed; "
                  f"{counts['unscored']} registered, not scored)")
    items: list[tuple[str, str]] = [
        ("Dataset", esc(dataset)),
        ("Dataset options", f"<code>{esc(_json(cfg.get('dataset_params')))}</code>"),
        ("Seeds", esc(seeds)),
        ("Tasks", tasks),
        ("NAED normalisation", esc(norm) + (" (D = 1: NAED is the mean TRE in pixels)"
                                            if norm == "none" else "")),
        ("Device", esc(device)),
        ("Requested device", esc(cfg.get("device"))),
        ("Workers", esc(cfg.get("workers"))),
        ("Time-out [s]", esc(cfg.get("timeout"))),
        ("Reference method", esc(f"{ev.reference} ({ev.reference_reason})") if ev and
         ev.reference else esc(cfg.get("reference"))),
        ("Concurrent tasks", esc(f"up to {concurrent}" if varied and concurrent
                                 else concurrent)),
        ("Torch threads per task", esc(_threads_text(_thread_counts(ctx)))),
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

    rows = _method_rows(ctx)
    if rows:
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
        rows.append([name, fmt_pm(r.mean, r.std), "–" if r.is_reference else esc(fmt_p(r.p_ttest)),
                     "–" if r.is_reference else esc(fmt_p(r.p_ttest_holm)), fmt(r.n_pairs)])
    naed = _naed_header(ctx)
    out.append(table(["Method", f"{naed} mean ± std", "p-value", "p (Holm)", "pairs"], rows,
                     "num paper"))
    out += [f'<p class="note warn">{esc(w)}</p>' for w in ev.warnings]
    norm = _normalisation(ctx)
    defined = ("NAED = mean landmark error / D, "
               + (f"{NORM_TEXT[norm]}" if norm in NORM_TEXT else
                  f"normalisation {esc(norm or 'not recorded')}") + ". ")
    if norm == "none":
        out.append(f'<p class="note warn">{defined}The values are not comparable with NAED '
                   "values normalised by the image size (as in DRMIME's tables).</p>")
        defined = ""
    sets = {tuple(v) for v in ev.seeds.values()}
    if len(sets) > 1:
        per_pair = ("Values per pair are means over each method's seeds ("
                    + esc(seed_groups(ev.seeds)) + ")")
    else:
        n = len(sets.pop()) if sets else 0
        per_pair = "Values per pair" + (f" are means over the {n} seeds" if n > 1 else "")
    out.append(f'<p class="note">{defined}Reference: <b>{esc(ev.reference)}</b> '
               f"({esc(ev.reference_reason)}), then the other methods by NAED mean. {per_pair}"
               "; std with ddof=1. p-value: two-sided paired t-test "
               "(<code>scipy.stats.ttest_rel</code>) against the reference over the pairs both "
               "methods have (at least two; undefined, –, when the difference is the same on "
               "every pair); Holm: corrected across the comparisons. Failed "
               "pairs count with their initial error. The same table for a paper: "
               "<code>paper_table.tex</code> (LaTeX, booktabs) and "
               "<code>paper_table.md</code>.</p>")
    noted = ev.noted_tests()
    if noted:
        out.append('<p class="note warn">' + "; ".join(f"{esc(t.method)}: {esc(t.note)}"
                                                       for t in noted) + ".</p>")
    unpaired = ev.unpaired_tests()
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
    naed = _naed_header(ctx)
    header = ["method", "tasks", "scored", "not scored", "failed", f"{naed} mean ± std",
              f"{naed} median", "TRE mean [px]", "TRE median [px]", "robustness",
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
               "pair gets the worst rank. AUC: mean success rate over thresholds 1–25 px."
               + (" NAED [px, D = 1]: <code>--naed-norm none</code>, NAED is the mean TRE."
                  if naed != "NAED" else "") + "</p>")
    return "\n".join(out)


def section_stats(ctx: ReportContext) -> str:
    """Every paired comparison in full, and the Friedman test."""
    ev = ctx.evaluation
    out = ["<h2>Statistics</h2>"]
    if ev is None or not ev.tests:
        return out[0] + "<p>Fewer than two methods with scored pairs: no tests.</p>"
    rows = [[esc(t.method), fmt(t.n_pairs), fmt(t.n_unpaired), fmt(t.mean_diff),
             fmt(t.t_statistic), esc(fmt_p(t.p_ttest)), esc(fmt_p(t.p_ttest_holm)),
             fmt(t.w_statistic), esc(fmt_p(t.p_wilcoxon)), esc(fmt_p(t.p_wilcoxon_holm)),
             fmt(t.effect_dz, 3),
             fmt(t.effect_rank_biserial, 3)] for t in ev.tests]
    out.append(table(["method", "pairs", "unpaired", "mean diff", "t", "p (t)", "p (t, Holm)",
                      "W", "p (Wilcoxon)", "p (W, Holm)", "d<sub>z</sub>", "r<sub>rb</sub>"],
                     rows, "num"))
    out.append(f'<p class="note">Each method against <b>{esc(ev.reference)}</b> on per-pair '
               "NAED; differences are method − reference (positive: larger error). Wilcoxon "
               "signed-rank on differences rounded to 12 decimals, zero differences dropped. "
               "Holm: step-down correction across the comparisons, per test. "
               "d<sub>z</sub>: mean difference / std of the differences; r<sub>rb</sub>: "
               "matched-pairs rank-biserial correlation. In the order of the paper-style table."
               "</p>")
    short = [t for t in ev.tests if t.n_pairs < 2]
    if short:
        each = ", ".join(f"{esc(t.method)} ({t.n_pairs} pair{'s' if t.n_pairs != 1 else ''})"
                         for t in short)
        out.append(f'<p class="note warn">No test for {each}: the paired tests need at least '
                   "two pairs that both the method and the reference have.</p>")
    noted = ev.noted_tests()
    if noted:
        out.append('<p class="note warn">' + "; ".join(f"{esc(t.method)}: {esc(t.note)}"
                                                       for t in noted)
                   + " (differences within 1e-12, or 1e-12 times the largest value, of each "
                   "other count as equal).</p>")
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
            out.append(f"<p>χ² = {fmt(fr.statistic)}, p = {esc(fmt_p(fr.pvalue))} over "
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
    unit = (" (<code>--naed-norm none</code>: NAED is the mean TRE in pixels)"
            if _normalisation(ctx) == "none" else "")
    out.append(f'<p class="note">NAED mean ± std per group (tasks){unit}; n: tasks per method '
               "in the group. Full numbers (median rTRE, success AUC) in "
               "<code>metrics.json</code>.</p>")
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
    note += (" A failed task counts with its initial error (as no registration), so it succeeds "
             "at the thresholds above that error; protocols that count a failure as never "
             "succeeding give lower AUCs to methods that fail.")
    out.append(f'<p class="note">{note}</p>')
    if ev.fire_categories:
        out += _mauc_notes(ctx)
    return "\n".join(out)


def _mauc_notes(ctx: ReportContext) -> list[str]:
    """Why mAUC is missing: the FIRE categories a method has no scored task in."""
    ev = ctx.evaluation
    lacking = {m: [c for c in FIRE_CATEGORIES if c not in ev.aucs[m]]
               for m in ctx.order if m in ev.aucs}
    lacking = {m: cats for m, cats in lacking.items() if cats}
    if not lacking:
        return []
    if len({tuple(c) for c in lacking.values()}) == 1 and len(lacking) == len(ev.aucs):
        cats = next(iter(lacking.values()))
        return [f'<p class="note warn">No scored task in FIRE categor'
                f"{'y' if len(cats) == 1 else 'ies'} {esc(', '.join(cats))}: mAUC (the mean "
                "of the S, P and A AUCs) is not defined.</p>"]
    each = "; ".join(f"{esc(m)}: {esc(', '.join(c))}" for m, c in lacking.items())
    return [f'<p class="note warn">mAUC (the mean of the S, P and A AUCs) is not defined for '
            f"methods without a scored task in every category; missing categories: "
            f"{each}.</p>"]


def section_timing(ctx: ReportContext) -> str:
    """Timing figures, with how the tasks shared the machine."""
    concurrent, varied = _concurrency(ctx)
    counts = _thread_counts(ctx)
    out = ["<h2>Timing</h2>"]
    each = f", {next(iter(counts))} thread(s) each" if len(counts) == 1 else ""
    if concurrent is not None and concurrent > 1:
        out.append(f'<p class="note warn">{"Up to " if varied else ""}{concurrent} tasks ran '
                   f"concurrently{each}: their timings share the machine's cores (and device), "
                   "so they are not those of a task run alone.</p>")
    elif concurrent == 1:
        out.append('<p class="note">Tasks ran one at a time'
                   + (f" with {next(iter(counts))} thread(s)" if len(counts) == 1 else "")
                   + ".</p>")
    else:
        out.append('<p class="note">run.json does not say whether tasks ran concurrently.</p>')
    if len(counts) > 1:
        out.append('<p class="note warn">The tasks ran with different torch thread counts '
                   f"({esc(_threads_text(counts))}; from the records' "
                   "<code>info.torch_threads</code>, e.g. a run resumed with other "
                   "<code>--workers</code>): their "
                   "timings are not comparable, and on the CPU a chaotic optimisation can end "
                   "elsewhere with another count.</p>")
    out += _figures(ctx, "timing")
    return "\n".join(out)


def section_overlays(ctx: ReportContext) -> str:
    out = ["<h2>Overlays</h2>"]
    if ctx.overlay_note:
        out.append(f"<p>{esc(ctx.overlay_note)}</p>")
    df = ctx.results
    for o in ctx.overlays:
        task = df[(df["method"] == o.method) & (df["pair_id"] == o.pair_id)
                  & (df["seed"] == o.seed)] if len(df) else df
        failed = bool(len(task)) and bool((task["status"] == "failed").any())
        error = task["error"].iloc[0] if failed else None
        error = [] if missing(error) else str(error).strip().splitlines()
        why = f" ({error[0][:160]})" if error else ""
        caption = (f"{o.label.capitalize()} pair of the reference method {o.method}: "
                   f"{o.pair_id} (seed {o.seed}, NAED {fmt(o.naed)}). ")
        if failed:  # before the picture is described: its "after" is no registration
            caption += (f"The registration FAILED on this pair{why}: 'after' shows no "
                        "registration and NAED is the initial error. ")
        caption += ("Top: checkerboard of fixed and warped moving image; bottom: fixed in "
                    "green, moving in magenta, fixed landmarks as circles, moving landmarks "
                    "mapped into the fixed frame as crosses. Left: before registration; right: "
                    f"after ({o.name}).")
        out.append(img(o.png, o.name, caption))
    return "\n".join(out)


def section_failures(ctx: ReportContext) -> str:
    """Every failed task with its error text, and the tasks registered but not scored."""
    df = ctx.results
    failed = df[df["status"] == "failed"] if len(df) else df
    out = ["<h2>Failures</h2>"]
    if failed.empty:
        out.append("<p>No failed tasks.</p>")
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
