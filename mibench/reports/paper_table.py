"""The paper-style table as LaTeX and Markdown, ready for a paper or a README.

The same rows as the report's table (``Evaluation.paper``, DRMIME's Tables I and II): the
reference method first (in bold), then the other methods by mean NAED. The columns are
Method, NAED mean ± std (ddof 1, over per-pair values that are means over seeds), p-value (the
two-sided paired t-test against the reference), p (Holm-corrected across the comparisons) and
the number of pairs. When the pairs carry FIRE's categories, a second table gives the success
AUC per category and mAUC (the report's success table). Numbers are printed as in the HTML
report (``fmt``, ``fmt_p``). What makes the comparison doubtful (``Evaluation.warnings``,
undefined tests) is written beside the table: LaTeX comments in ``paper_table.tex``, notes
under ``paper_table.md``.

``paper_table.tex`` is a ``table`` float that needs ``\\usepackage{booktabs}``.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

from mibench.reports.evaluation import Evaluation
from mibench.reports.page import fmt, fmt_p, missing

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
        std = "" if missing(r.std) or math.isinf(float(r.std)) else fmt(r.std)
        p, holm = ("–", "–") if r.is_reference else (fmt_p(r.p_ttest), fmt_p(r.p_ttest_holm))
        out.append((r.method, fmt(r.mean), std, p, holm, fmt(r.n_pairs), r.is_reference))
    return out


def _notes(ev: Evaluation) -> list[str]:
    notes = list(ev.warnings)
    notes += [f"{t.method}: {t.note}" for t in ev.tests if t.note and t.n_pairs >= 2]
    unpaired = [f"{t.method}: {t.n_unpaired}" for t in ev.tests if t.n_unpaired]
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


#: Columns of the FIRE success table (FIRE's protocol: AUC per category and their mean).
FIRE_COLUMNS = ("S", "P", "A", "mAUC")

FIRE_CAPTION = ("FIRE success: area under the success-rate curve (the share of pairs whose mean "
                "landmark error in native pixels is below t, for t = 1..25 px) per category; "
                "mAUC: the mean of the S, P and A AUCs. Best per column in bold.")


def _fire_rows(ev: Evaluation) -> list[tuple[str, list[str], list[bool]]]:
    """``(method, AUC texts, best flags)`` per method with success curves, in table order
    (empty unless the pairs carry FIRE categories)."""
    if not ev.fire_categories:
        return []
    methods = [r.method for r in ev.paper if r.method in ev.aucs]
    values = {m: [ev.aucs[m].get(c) for c in FIRE_COLUMNS] for m in methods}
    best = []
    for k in range(len(FIRE_COLUMNS)):
        col = [v[k] for v in values.values() if not missing(v[k])]
        best.append(round(max(col), 3) if col else None)
    return [(m, [fmt(v, 3) for v in values[m]],
             [not missing(v) and round(v, 3) == b for v, b in zip(values[m], best, strict=True)])
            for m in methods]


def _label_suffix(dataset: str | None) -> str:
    """``-<dataset>`` for the LaTeX labels (letters, digits and dashes), so that tables of
    several datasets can sit in one document."""
    slug = re.sub(r"[^a-z0-9]+", "-", str(dataset or "").lower()).strip("-")
    return f"-{slug}" if slug else ""


def paper_table_latex(ev: Evaluation, normalisation: str | None = None,
                      dataset: str | None = None) -> str:
    """The paper-style table as a LaTeX ``table`` float (``booktabs``; label
    ``tab:mibench-naed-<dataset>``). ``normalisation``: the run's NAED normalisation (for the
    caption and the column header; default: the records', ``ev.normalisation``); ``dataset``:
    the run's dataset (in the labels, and first in the caption)."""
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
    fire = _fire_rows(ev)
    if fire:
        lines += ["", "\\begin{table}[t]", "\\centering",
                  f"\\caption{{{tex_escape(FIRE_CAPTION)}}}",
                  f"\\label{{tab:mibench-fire-auc{suffix}}}",
                  "\\begin{tabular}{lcccc}", "\\toprule",
                  "Method & " + " & ".join(FIRE_COLUMNS) + " \\\\", "\\midrule"]
        for method, texts, best in fire:
            cells = [("--" if t == "–" else f"\\textbf{{{t}}}" if b else t)
                     for t, b in zip(texts, best, strict=True)]
            lines.append(f"{tex_escape(method)} & " + " & ".join(cells) + " \\\\")
        lines += ["\\bottomrule", "\\end{tabular}", "\\end{table}"]
    return "\n".join(lines) + "\n"


def paper_table_markdown(ev: Evaluation, normalisation: str | None = None,
                         dataset: str | None = None) -> str:
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
    fire = _fire_rows(ev)
    if fire:
        lines += ["", "| Method | " + " | ".join(FIRE_COLUMNS) + " |",
                  "|---" * (len(FIRE_COLUMNS) + 1) + "|"]
        for method, texts, best in fire:
            cells = [f"**{t}**" if b else t for t, b in zip(texts, best, strict=True)]
            lines.append(f"| {_md_escape(method)} | " + " | ".join(cells) + " |")
        lines += ["", FIRE_CAPTION]
    return "\n".join(lines) + "\n"


def write_paper_tables(run_dir: Path, ev: Evaluation, normalisation: str | None = None,
                       dataset: str | None = None) -> dict[str, Path]:
    """Write ``paper_table.tex`` and ``paper_table.md`` into ``run_dir`` (nothing when no
    pair was scored, and stale ones are removed); return the paths written."""
    run_dir = Path(run_dir)
    paths = {"paper_tex": run_dir / PAPER_TEX, "paper_md": run_dir / PAPER_MD}
    if not ev.paper:
        for path in paths.values():
            path.unlink(missing_ok=True)
        return {}
    paths["paper_tex"].write_text(paper_table_latex(ev, normalisation, dataset), encoding="utf-8")
    paths["paper_md"].write_text(paper_table_markdown(ev, normalisation, dataset), encoding="utf-8")
    return paths


__all__ = ["PAPER_MD", "PAPER_TEX", "paper_table_latex", "paper_table_markdown", "tex_escape",
           "write_paper_tables"]
