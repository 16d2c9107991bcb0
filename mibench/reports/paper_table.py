"""The paper-style table as LaTeX and Markdown, ready for a paper or a README.

The same rows as the report's table (``Evaluation.paper``, DRMIME's Tables I and II): the
reference method first (in bold), then the other methods by mean NAED. The columns are
Method, NAED mean ± std (ddof 1, over per-pair values that are means over seeds), p-value (the
two-sided paired t-test against the reference), p (Holm-corrected across the comparisons) and
the number of pairs. Secondary tables follow where the data call for them
(:func:`metric_tables`): FIRE's success AUC per category and mAUC, ANHIR's rTRE metrics.
Numbers are printed as in the HTML report (``fmt``, ``fmt_p``). What makes the comparison
doubtful (``Evaluation.warnings``, undefined tests) is written beside the table: LaTeX
comments in ``paper_table.tex``, notes under ``paper_table.md``.

``paper_table.tex`` is a ``table`` float that needs ``\\usepackage{booktabs}``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from mibench.reports.evaluation import Evaluation
from mibench.reports.page import fmt, fmt_p, fmt_std, missing

PAPER_TEX = "paper_table.tex"
PAPER_MD = "paper_table.md"

#: What D is, per NAED normalisation (plain text; the report's HTML has its own).
NORM_PLAIN = {
    "diagonal": "D is the fixed image's diagonal in native pixels",
    "max-side": "D is the fixed image's longer side in native pixels",
    "none": "D = 1: NAED is the mean landmark error in native pixels, not a normalised value",
}

_TEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
                "^": r"\textasciicircum{}"}


def tex_escape(text: str) -> str:
    """``text`` with LaTeX's special characters escaped (method names such as ``kde_mi``)."""
    return "".join(_TEX_SPECIAL.get(ch, ch) for ch in str(text))


def _md_escape(text: str) -> str:
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("*", "\\*") \
        .replace("_", "\\_")


def _tex_number(text: str) -> str:
    """A number as ``fmt`` prints it, in math mode (``1.3e-04`` -> ``1.3 \\times 10^{-4}``)."""
    if text == "–":
        return "--"
    if "e" in text:
        mantissa, exponent = text.split("e")
        return f"${mantissa} \\times 10^{{{int(exponent)}}}$"
    return f"${text}$"


def _rows(ev: Evaluation) -> list[tuple[str, str, str, str, str, str, bool]]:
    """``(method, mean, std, p, p_holm, pairs, is_reference)`` as printed, in table order."""
    out = []
    for r in ev.paper:
        std = fmt_std(r.std)
        p, holm = ("–", "–") if r.is_reference else (fmt_p(r.p_ttest), fmt_p(r.p_ttest_holm))
        out.append((r.method, fmt(r.mean), std, p, holm, fmt(r.n_pairs), r.is_reference))
    return out


def _notes(ev: Evaluation) -> list[str]:
    notes = list(ev.warnings)
    notes += [f"{t.method}: {t.note}" for t in ev.noted_tests()]
    unpaired = [f"{t.method}: {t.n_unpaired}" for t in ev.unpaired_tests()]
    if unpaired:
        notes.append("pairs left out of a paired test because only one of the two methods has "
                     "them: " + ", ".join(unpaired))
    return notes


def _caption(ev: Evaluation, normalisation: str | None, dataset: str | None = None) -> str:
    d = NORM_PLAIN.get(normalisation or "", f"normalisation {normalisation or 'not recorded'}")
    where = f"Dataset {dataset}. " if dataset else ""
    return (f"{where}NAED = mean landmark error / D ({d}), mean ± std over the pairs. p-value: "
            f"two-sided paired t-test against {ev.reference}; p (Holm): corrected across the "
            "comparisons. Failed registrations count with their initial error.")


@dataclass(frozen=True)
class MetricTable:
    """A secondary table of per-method metrics, the best of each column in bold."""

    label: str  # LaTeX label stem, e.g. "fire-auc"
    caption: str
    header: tuple[str, ...]  # the metric columns
    rows: list[tuple[str, list[str], list[bool]]]  # (method, cells as printed, best flags)


FIRE_CAPTION = ("FIRE success: area under the success-rate curve (the share of pairs whose mean "
                "landmark error in native pixels is below t, for t = 1..25 px) per category; "
                "mAUC: the mean of the S, P and A AUCs. A failed registration counts with its "
                "initial error, not as never succeeding. Best per column in bold.")

ANHIR_CAPTION = ("ANHIR metrics: rTRE = landmark error / image diagonal; the mean over pairs of "
                 "each pair's median and max rTRE; their average rank over pairs (1 = best; a "
                 "method missing a pair gets the worst rank; ANHIR ranks by the median's); "
                 "robustness: the share of landmarks whose error decreased. Best per column in "
                 "bold.")

#: (summary column, header, higher is better) of the ANHIR table.
ANHIR_COLUMNS = (("rtre_median_mean", "median rTRE", False), ("rtre_max_mean", "max rTRE", False),
                 ("rank_rtre_median", "rank median rTRE", False),
                 ("rank_rtre_max", "rank max rTRE", False),
                 ("robustness_mean", "robustness", True))


def _best_rows(values: dict[str, list], higher: list[bool], sig: int = 3
               ) -> list[tuple[str, list[str], list[bool]]]:
    """Rows of printed values (``sig`` significant digits) with the best of each column
    flagged; ties as printed are all best."""
    printed = {m: [fmt(v, sig) for v in vals] for m, vals in values.items()}
    best = []
    for k, up in enumerate(higher):
        col = [float(vals[k]) for vals in values.values() if not missing(vals[k])]
        best.append(fmt(max(col) if up else min(col), sig) if col else None)
    return [(m, printed[m], [t != "–" and t == b for t, b in zip(printed[m], best, strict=True)])
            for m in values]


def metric_tables(ev: Evaluation, summary: pd.DataFrame | None = None) -> list[MetricTable]:
    """The secondary tables that the run's data call for, in table order of the methods.

    - FIRE (pairs with S, P, A categories): the success AUC per category and mAUC
      (``ev.aucs``, as the report's success table).
    - ANHIR (pairs with a ``tissue``; needs ``summary``, the ``summary.csv`` frame): the average
      median and max rTRE, their average ranks and the robustness.
    """
    order = [r.method for r in ev.paper]
    tables = []
    if ev.fire_categories:
        cols = ("S", "P", "A", "mAUC")
        values = {m: [ev.aucs[m].get(c) for c in cols] for m in order if m in ev.aucs}
        tables.append(MetricTable("fire-auc", FIRE_CAPTION, cols,
                                  _best_rows(values, [True] * len(cols))))
    has_tissue = not ev.groups.empty and "tissue" in set(ev.groups["key"])
    if has_tissue and summary is not None and not summary.empty:
        by_method = summary.set_index("method")
        values = {m: [by_method.at[m, c] if c in by_method else None
                      for c, _, _ in ANHIR_COLUMNS] for m in order if m in by_method.index}
        tables.append(MetricTable("anhir", ANHIR_CAPTION, tuple(h for _, h, _ in ANHIR_COLUMNS),
                                  _best_rows(values, [up for _, _, up in ANHIR_COLUMNS])))
    return tables


def _label_suffix(dataset: str | None) -> str:
    """``-<dataset>`` for the LaTeX labels (letters, digits and dashes), so that tables of
    several datasets can sit in one document."""
    slug = re.sub(r"[^a-z0-9]+", "-", str(dataset or "").lower()).strip("-")
    return f"-{slug}" if slug else ""


def paper_table_latex(ev: Evaluation, normalisation: str | None = None,
                      dataset: str | None = None, summary: pd.DataFrame | None = None) -> str:
    """The paper-style table as a LaTeX ``table`` float (``booktabs``; label
    ``tab:mibench-naed-<dataset>``). ``normalisation``: the run's NAED normalisation (for the
    caption and the column header; default: the records', ``ev.normalisation``); ``dataset``:
    the run's dataset (in the labels, and first in the caption); ``summary``: the
    ``summary.csv`` frame, for the ANHIR table (:func:`metric_tables`)."""
    norm = normalisation or ev.normalisation
    naed = "NAED [px, $D = 1$]" if norm == "none" else "NAED"
    lines = ["% mibench: the paper-style table (needs \\usepackage{booktabs})"]
    lines += [f"% WARNING: {note}" for note in _notes(ev)]
    caption = tex_escape(_caption(ev, norm, dataset)).replace("±", r"$\pm$")
    suffix = _label_suffix(dataset)
    lines += ["\\begin{table}[t]", "\\centering", f"\\caption{{{caption}}}",
              f"\\label{{tab:mibench-naed{suffix}}}", "\\begin{tabular}{lcccr}", "\\toprule",
              f"Method & {naed} mean $\\pm$ std & $p$-value & $p$ (Holm) & pairs \\\\",
              "\\midrule"]
    for method, mean, std, p, holm, pairs, is_ref in _rows(ev):
        name = tex_escape(method)
        value = f"${mean} \\pm {std}$" if std else _tex_number(mean)
        if is_ref:
            name, value = f"\\textbf{{{name}}}", f"{{\\boldmath {value}}}"
        lines.append(f"{name} & {value} & {_tex_number(p)} & {_tex_number(holm)} & {pairs} \\\\")
    lines += ["\\bottomrule", "\\end{tabular}", "\\end{table}"]
    for extra in metric_tables(ev, summary):
        lines += ["", "\\begin{table}[t]", "\\centering",
                  f"\\caption{{{tex_escape(extra.caption)}}}",
                  f"\\label{{tab:mibench-{extra.label}{suffix}}}",
                  f"\\begin{{tabular}}{{l{'c' * len(extra.header)}}}", "\\toprule",
                  "Method & " + " & ".join(extra.header) + " \\\\", "\\midrule"]
        for method, texts, best in extra.rows:
            cells = [("--" if t == "–" else f"\\textbf{{{t}}}" if b else t)
                     for t, b in zip(texts, best, strict=True)]
            lines.append(f"{tex_escape(method)} & " + " & ".join(cells) + " \\\\")
        lines += ["\\bottomrule", "\\end{tabular}", "\\end{table}"]
    return "\n".join(lines) + "\n"


def paper_table_markdown(ev: Evaluation, normalisation: str | None = None,
                         dataset: str | None = None, summary: pd.DataFrame | None = None) -> str:
    """The paper-style table as a GitHub-flavoured Markdown table, its caption and notes
    below it (arguments as :func:`paper_table_latex`)."""
    norm = normalisation or ev.normalisation
    naed = "NAED [px, D = 1]" if norm == "none" else "NAED"
    lines = [f"| Method | {naed} mean ± std | p-value | p (Holm) | pairs |",
             "|---|---|---|---|---|"]
    for method, mean, std, p, holm, pairs, is_ref in _rows(ev):
        name = _md_escape(method)
        value = f"{mean} ± {std}" if std else mean
        if is_ref:
            name, value = f"**{name}**", f"**{value}**"
        lines.append(f"| {name} | {value} | {p} | {holm} | {pairs} |")
    lines += ["", _md_escape(_caption(ev, norm, dataset))]
    lines += [f"\n> Warning: {_md_escape(note)}" for note in _notes(ev)]
    for extra in metric_tables(ev, summary):
        lines += ["", "| Method | " + " | ".join(extra.header) + " |",
                  "|---" * (len(extra.header) + 1) + "|"]
        for method, texts, best in extra.rows:
            cells = [f"**{t}**" if b else t for t, b in zip(texts, best, strict=True)]
            lines.append(f"| {_md_escape(method)} | " + " | ".join(cells) + " |")
        lines += ["", extra.caption]
    return "\n".join(lines) + "\n"


def write_paper_tables(run_dir: Path, ev: Evaluation, normalisation: str | None = None,
                       dataset: str | None = None, summary: pd.DataFrame | None = None
                       ) -> dict[str, Path]:
    """Write ``paper_table.tex`` and ``paper_table.md`` into ``run_dir`` (nothing when no
    pair was scored, and stale ones are removed); return the paths written."""
    run_dir = Path(run_dir)
    paths = {"paper_tex": run_dir / PAPER_TEX, "paper_md": run_dir / PAPER_MD}
    if not ev.paper:
        for path in paths.values():
            path.unlink(missing_ok=True)
        return {}
    args = (ev, normalisation, dataset, summary)
    paths["paper_tex"].write_text(paper_table_latex(*args), encoding="utf-8")
    paths["paper_md"].write_text(paper_table_markdown(*args), encoding="utf-8")
    return paths


__all__ = ["PAPER_MD", "PAPER_TEX", "MetricTable", "metric_tables", "paper_table_latex",
           "paper_table_markdown", "tex_escape", "write_paper_tables"]
