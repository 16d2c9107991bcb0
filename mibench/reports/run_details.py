"""What produced a run, as the report's last section shows it and its first line sums it up.

Plain text only (the templates escape and lay it out): the run's settings as name / value rows,
the dataset's options one per row, the methods' options as one option x method table (no JSON),
when the run started and finished, and which methods ran once for every seed.
"""

from __future__ import annotations

from typing import Any

from mibench.errors import UserError
from mibench.reports.analysis import RunAnalysis, run_seeds
from mibench.reports.formatting import (
    DASH,
    normalised,
    plural,
    seed_groups,
    seed_text,
)
from mibench.reports.units import DEFAULT_UNIT, MIXED, in_unit, long_words
from mibench.variants import base_name


def option_text(value: Any) -> str:
    """An option's value as a reader types it: lists comma-separated, mappings as
    ``key=value``, None as ``none``; never JSON braces or quotes."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ", ".join(option_text(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}={option_text(v)}" for k, v in value.items())
    return str(value)


def duration_text(seconds: Any) -> str:
    """``"42 s"``, ``"3 min 5 s"``, ``"2 h 04 min"``; empty when unknown."""
    try:
        s = float(seconds)
    except (TypeError, ValueError):
        return ""
    if s != s or s < 0:  # NaN
        return ""
    if s < 60:
        return f"{s:.1f} s" if s < 10 else f"{s:.0f} s"
    m, sec = divmod(round(s), 60)
    if m < 60:
        return f"{m} min {sec} s"
    h, m = divmod(m, 60)
    return f"{h} h {m:02d} min"


def _when(value: Any) -> str:
    """An ISO time stamp as a reader reads it: ``2026-12-07 18:31:11 UTC`` (another offset kept
    as written, e.g. ``+01:00``); empty when missing."""
    if not isinstance(value, str) or not value:
        return ""
    text = value.replace("T", " ")
    for utc in ("+00:00", "Z"):
        if text.endswith(utc):
            return text.removesuffix(utc) + " UTC"
    return text


def _span(started: str, finished: str) -> str:
    """``"2026-12-07 18:57:14 to 18:57:51 UTC"``: the finish's date left out on the same day."""
    if not finished:
        return started
    day, _, rest = finished.partition(" ")
    if started.startswith(day + " ") and rest:
        zone = " UTC" if started.endswith(" UTC") and rest.endswith(" UTC") else ""
        return f"{started.removesuffix(zone)} to {rest}"
    return f"{started} to {finished}"


def single_seed_text(a: RunAnalysis) -> str:
    """``"deterministic: identity, nmi run once with seed 0, result reused for seeds 1, 2"``
    (empty when no record is reused)."""
    if not a.single_seed:
        return ""
    first = run_seeds(a.config, a.results)[:1]
    groups: dict[tuple[int, ...], list[str]] = {}
    for method, seeds in a.single_seed.items():
        groups.setdefault(tuple(seeds), []).append(method)
    return "; ".join(
        f"deterministic: {', '.join(ms)} run once with seed {first[0] if first else '?'}, "
        f"result reused for {seed_text(list(s))}" for s, ms in groups.items())


def seeds_text(a: RunAnalysis) -> str:
    """The run's seeds as the records have them (run.json has only the last invocation's)."""
    ev = a.evaluation
    if ev and ev.seeds:
        sets = {tuple(v) for v in ev.seeds.values()}
        text = seed_text(list(sets.pop())) if len(sets) == 1 else seed_groups(ev.seeds)
    else:
        seeds = a.config.get("seeds")
        text = seed_text(seeds) if isinstance(seeds, list) and seeds else ""
    reused = single_seed_text(a)
    return f"{text} ({reused})" if reused and text else text or reused


def run_times(man: dict[str, Any]) -> dict[str, str]:
    """``started``, ``finished`` and ``duration`` of the run (the sum of its invocations'
    durations, the gaps between them not counted); empty strings for an old run.json."""
    return {"started": _when(man.get("started")), "finished": _when(man.get("finished")),
            "duration": duration_text(man.get("duration_s"))}


def invocation_rows(man: dict[str, Any]) -> list[list[str]]:
    """One row per invocation (started, finished, duration, concurrent tasks) when there were
    several and they say when they ran."""
    runs = [r for r in man.get("invocations") or [] if isinstance(r, dict)]
    if len(runs) < 2 or not any(r.get("started") for r in runs):
        return []
    return [[_when(r.get("started")), _when(r.get("finished")),
             duration_text(r.get("duration_s")), str(r.get("concurrent_tasks") or "")]
            for r in runs]


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
    """``"4"``, or ``"1 thread: 3 tasks; 4 threads: 2 tasks"`` when they differ."""
    if len(counts) == 1:
        return str(next(iter(counts)))
    return "; ".join(f"{plural(t, 'thread')}: {plural(n, 'task')}" for t, n in counts.items())


def headline(a: RunAnalysis) -> str:
    """The page's first line: dataset, pairs, methods, seeds, device, and when it ran."""
    ev, cfg = a.evaluation, a.config
    parts = []
    dataset = cfg.get("dataset")
    if dataset:
        parts.append(f"Dataset {dataset}")
    if ev and ev.counts:
        parts.append(plural(ev.counts["pairs"], "pair"))
    methods = sorted(set(a.results["method"])) if len(a.results) else []
    if methods:
        parts.append(plural(len(methods), "method"))
    seeds = seeds_text(a)
    if seeds:
        parts.append(seeds)
    dev = a.manifest.get("device") if isinstance(a.manifest.get("device"), dict) else {}
    device = dev.get("name") or cfg.get("device")
    if device:
        parts.append(f"device {device}")
    times = run_times(a.manifest)
    if times["started"]:
        span = f"ran {_span(times['started'], times['finished'])}"
        parts.append(span + (f" ({times['duration']})" if times["duration"] else ""))
    return "; ".join(parts) + ("." if parts else "")


def _describe(a: RunAnalysis, name: str) -> str:
    """What a derived method is (its spec's description: the estimator and optimiser)."""
    try:
        spec = a.registry.get("method", base_name(name)) if a.registry else None
    except UserError:  # a plugin that no longer loads: nothing to say
        spec = None
    return spec.description if spec is not None and spec.derived_from else ""


def _param_sets(value: Any) -> dict[str, Any]:
    """A record's ``method_params`` (compact JSON text or a mapping) as a mapping."""
    import json

    if isinstance(value, dict):
        return value
    try:
        parsed = json.loads(value) if isinstance(value, str) and value else {}
    except ValueError:
        return {"parameters": value}
    return parsed if isinstance(parsed, dict) else {"parameters": parsed}


def method_options(a: RunAnalysis) -> dict[str, Any]:
    """The methods' options as one table: a column per method (per parameter set where a
    method's records differ), a row per option, ``–`` where a method has no such option.

    Methods with records come in table order with the options their records ran with (run.json's
    ``config.methods`` holds only the last invocation's selection), then the methods run.json
    selects that have no records yet.
    """
    df = a.results
    ran = set(df["method"]) if len(df) else set()
    columns: list[dict[str, Any]] = []
    for m in [m for m in a.order if m in ran]:
        sets = sorted(set(df.loc[df["method"] == m, "method_params"].dropna()))
        for k, p in enumerate(sets or ["{}"]):
            label = m if len(sets) < 2 else f"{m} (set {k + 1} of {len(sets)})"
            columns.append({"name": label, "options": _param_sets(p), "records": True,
                            "differ": len(sets) > 1, "how": _describe(a, m)})
    configured = a.config.get("methods")
    for m, p in (configured.items() if isinstance(configured, dict) else []):
        if m not in ran:
            columns.append({"name": m, "options": _param_sets(p), "records": False,
                            "differ": False, "how": _describe(a, m)})
    names = list(dict.fromkeys(k for c in columns for k in c["options"]))
    rows = [(n, [option_text(c["options"][n]) if n in c["options"] else DASH
                 for c in columns]) for n in names]
    return {"columns": columns, "rows": rows,
            "described": [(c["name"], c["how"]) for c in columns if c["how"]]}


def unit_text(a: RunAnalysis) -> str:
    """The unit of the run's landmark errors in words; with mixed units, how many tasks have
    each."""
    if a.unit != MIXED:
        return long_words(a.unit)
    counts = ", ".join(f"{long_words(u)}: {n} tasks" for u, n in sorted(a.unit_counts.items()))
    return f"mixed ({counts}); errors in different units are never averaged"


def _settings(a: RunAnalysis) -> list[tuple[str, str]]:
    """The run's settings as (name, value) rows, empty ones left out."""
    cfg, man, ev = a.config, a.manifest, a.evaluation
    dataset = cfg.get("dataset") or ", ".join(sorted(set(a.results.get("dataset", []))))
    dev = man.get("device") if isinstance(man.get("device"), dict) else {}
    device = dev.get("name") or cfg.get("device")
    if device and dev.get("type"):
        device = f"{device} ({dev['type']})"
    tasks = str(len(a.results))
    reused = (int(a.results["reused_seed"].notna().sum())
              if len(a.results) and "reused_seed" in a.results else 0)
    if ev and ev.counts:
        c = ev.counts
        again = f"{reused} reuse a deterministic method's one run; " if reused else ""
        tasks += (f" ({c['pairs']} pairs; {again}{c['failed']} failed; {c['unscored']} "
                  "registered, not scored)")
    reference = (f"{ev.reference} ({ev.reference_reason})" if ev and ev.reference
                 else cfg.get("reference"))
    norm = a.naed_norm
    protocol = {"fire": "FIRE", "anhir": "ANHIR", "": "none (landmark errors and NAED only)",
                None: "unknown here (from the pairs' metadata)"}.get(a.protocol, a.protocol)
    times = run_times(man)
    concurrent, varied = concurrency(a)
    items = [
        ("Dataset", dataset), ("Evaluation protocol", protocol), ("Seeds", seeds_text(a)),
        ("Tasks", tasks),
        ("NAED normalisation", f"{norm}" + ("" if normalised(norm) else in_unit(
            " (D = 1: NAED is the mean TRE in pixels)", a.unit)) if norm else ""),
        # Said only where it is news: pixels were the only unit before volumes.
        ("Unit of landmark errors", "" if a.unit == DEFAULT_UNIT else unit_text(a)),
        ("Reference method", reference), ("Device", device),
        ("Requested device", cfg.get("device")),
        ("Concurrent tasks", f"up to {concurrent}" if varied and concurrent else concurrent),
        ("Torch threads per task", threads_text(thread_counts(a))),
        ("Started", times["started"] or _when(man.get("created"))),
        ("Finished", times["finished"]), ("Duration", times["duration"]),
        ("Last updated", _when(man.get("updated"))),
    ]
    shown = {"dataset", "dataset_params", "seeds", "naed_norm", "device", "reference",
             "methods", "single_seed_methods"}
    items += [(k.replace("_", " ").capitalize(), option_text(v)) for k, v in sorted(cfg.items())
              if k not in shown and v not in (None, "", [], {})]
    machine = man.get("machine")
    if isinstance(machine, dict):
        items += [(f"Machine: {k}", option_text(v)) for k, v in machine.items()]
    return [(k, str(v)) for k, v in items if v not in (None, "", "None")]


def run_view(a: RunAnalysis) -> dict[str, Any]:
    """What produced the run: settings, dataset options, method options, times, versions."""
    man = a.manifest
    notes = man.get("dataset_notes")
    merged = man.get("merged_from")
    merged_rows = []
    for s in merged if isinstance(merged, list) else []:
        s = s if isinstance(s, dict) else {}
        d = s.get("device") if isinstance(s.get("device"), dict) else {}
        versions = s.get("versions") if isinstance(s.get("versions"), dict) else {}
        merged_rows.append([str(s.get("run_dir") or ""), str(d.get("name") or ""),
                            str(s.get("concurrent_tasks") or ""), _when(s.get("updated")),
                            option_text(versions)])
    versions = man.get("versions")
    dataset_params = a.config.get("dataset_params")
    return {
        "items": _settings(a),
        "dataset_options": [(str(k), option_text(v)) for k, v in dataset_params.items()]
        if isinstance(dataset_params, dict) else [],
        "notes": [str(n) for n in notes] if isinstance(notes, list) else [],
        "mixed_norms": ", ".join(a.record_naed_norms) if len(a.record_naed_norms) > 1 else "",
        "merged": merged_rows,
        "invocations": invocation_rows(man),
        "methods": method_options(a),
        "versions": [(str(k), option_text(v)) for k, v in versions.items()]
        if isinstance(versions, dict) else [],
    }


__all__ = ["concurrency", "duration_text", "headline", "method_options", "option_text", "run_times",
           "run_view", "seeds_text", "single_seed_text", "thread_counts", "threads_text"]
