"""The paper-style table as LaTeX and Markdown, ready for a paper or a README.

The same rows as the report's table (``Evaluation.paper``, DRMIME's Tables I and II): the
reference method first (marked: "(ref.)" in Markdown, a dagger in LaTeX), then the other methods
by mean NAED. Bold always means best: the lowest NAED mean as printed (ties all bold). The
columns are Method, NAED mean ± std (ddof 1, over per-pair values that are means over seeds),
p-value (the two-sided paired t-test against the reference), p (Holm-corrected across the
comparisons) and the number of pairs. Secondary tables follow where the data call for them
(:func:`metric_tables`): FIRE's success AUC per category and mAUC, ANHIR's rTRE metrics.
Numbers are printed as in the HTML report (:func:`printed_rows`). What makes the comparison
doubtful (``Evaluation.notes``) is written beside the table: LaTeX comments in
``paper_table.tex``, notes under ``paper_table.md``.

``paper_table.tex`` is a ``table`` float that needs ``\\usepackage{booktabs}``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from mibench.paths import PAPER_MD, PAPER_TEX
from mibench.reports.analysis import RunAnalysis
from mibench.reports.evaluation import Evaluation
from mibench.reports.formatting import (
    DASH,
    fmt,
    fmt_p,
    fmt_std,
    missing,
    naed_definition,
    naed_header,
)

# Beyond LaTeX's specials, the few non-ASCII characters our captions use (pdflatex's default
# input encoding has none of them).
_TEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
                "^": r"\textasciicircum{}", "±": r"$\pm$", "√": r"$\surd$",
                "²": r"\textsuperscript{2}", "†": r"$^\dagger$"}


def tex_escape(text: str) -> str:
    """``text`` with LaTeX's special characters escaped (method names such as ``kde_mi``)."""
    return "".join(_TEX_SPECIAL.get(ch, ch) for ch in str(text))


def _md_escape(text: str) -> str:
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("*", "\\*") \
        .replace("_", "\\_")


def _tex_number(text: str) -> str:
    """A number as ``fmt`` prints it, in math mode (``1.3e-04`` -> ``1.3 \\times 10^{-4}``)."""
    if text == DASH:
        return "--"
    if "e" in text:
        mantissa, exponent = text.split("e")
        return f"${mantissa} \\times 10^{{{int(exponent)}}}$"
    return f"${text}$"


@dataclass(frozen=True)
class PrintedRow:
    """A row of the paper-style table as every artefact prints it (``std`` empty when
    undefined; the reference has no p-values). ``is_best``: its NAED mean, as printed, is the
    lowest (every artefact prints it in bold)."""

    method: str
    mean: str
    std: str
    p: str
    p_holm: str
    pairs: str
    is_reference: bool
    is_best: bool = False

    @property
    def value(self) -> str:
        """``mean ± std``, or the mean alone."""
        return f"{self.mean} ± {self.std}" if self.std else self.mean


def printed_rows(ev: Evaluation) -> list[PrintedRow]:
    """The paper-style table's rows as printed, in table order; the lowest NAED mean as printed
    is best (several when they print the same)."""
    means = [float(r.mean) for r in ev.paper if not missing(r.mean)]
    best = fmt(min(means)) if means else None
    out = []
    for r in ev.paper:
        p, holm = (DASH, DASH) if r.is_reference else (fmt_p(r.p_ttest), fmt_p(r.p_ttest_holm))
        mean = fmt(r.mean)
        out.append(PrintedRow(r.method, mean, fmt_std(r.std), p, holm, fmt(r.n_pairs),
                              r.is_reference, is_best=mean != DASH and mean == best))
    return out


#: How the reference is marked in the Markdown tables (and the report's).
REF_MARK = "(ref.)"

def legend(ev: Evaluation, mark: str = REF_MARK) -> str:
    """What bold and the reference's ``mark`` mean, said under every NAED table."""
    return (f"Bold: best (lowest NAED mean). {mark}: the reference method {ev.reference}, the "
            "one the p-values test the other methods against.")


def _caption(ev: Evaluation, naed_norm: str | None, dataset: str | None = None,
             mark: str = REF_MARK) -> str:
    where = f"Dataset {dataset}. " if dataset else ""
    what = naed_definition(naed_norm, ev.unit)
    return (f"{where}NAED = mean landmark error / D ({what}), mean ± std over the pairs."
            f" p-value: two-sided paired t-test against {ev.reference}; "
            "p (Holm): corrected across the comparisons. Failed registrations count with their "
            f"initial error. {legend(ev, mark)}")


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

#: (summary column, header, higher is better) appended to the ANHIR table when the run has
#: non-matrix results (the summary then has them; :data:`DEFORMATION_CAPTION`).
DEFORMATION_COLUMNS = (("folding_mean", "folding", False),
                       ("sd_log_jacobian_mean", "SD log J", False))

# ASCII only: it goes into the LaTeX table's caption too.
DEFORMATION_CAPTION = (" Folding: share of fixed pixels (in the mask) where the Jacobian "
                       "determinant of the fixed-to-moving mapping is not positive, mean over "
                       "pairs; SD log J: Learn2Reg's standard deviation of log(det J + 3), mean "
                       "over pairs (both for non-matrix transforms; a dash for a matrix, whose "
                       "det J is constant).")


def _best_rows(values: dict[str, list], higher: list[bool], sig: int = 3
               ) -> list[tuple[str, list[str], list[bool]]]:
    """Rows of printed values (``sig`` significant digits) with the best of each column
    flagged; ties as printed are all best."""
    printed = {m: [fmt(v, sig) for v in vals] for m, vals in values.items()}
    best = []
    for k, up in enumerate(higher):
        col = [float(vals[k]) for vals in values.values() if not missing(vals[k])]
        best.append(fmt(max(col) if up else min(col), sig) if col else None)
    return [(m, printed[m], [t != DASH and t == b for t, b in zip(printed[m], best, strict=True)])
            for m in values]


def metric_tables(ev: Evaluation, summary: pd.DataFrame | None = None) -> list[MetricTable]:
    """The secondary tables that the run's data call for, in table order of the methods.

    - FIRE (FIRE-protocol pairs with S, P, A categories): the success AUC per category and mAUC
      (``ev.aucs``, as the report's success table).
    - ANHIR (ANHIR-protocol data, ``ev.anhir_applies``; needs ``summary``, the
      ``summary.csv`` frame): the average
      median and max rTRE, their average ranks and the robustness; with non-matrix
      results also folding and SD log J (:data:`DEFORMATION_COLUMNS`).
    """
    order = [r.method for r in ev.paper]
    tables = []
    if ev.fire_categories:
        cols = ("S", "P", "A", "mAUC")
        values = {m: [ev.aucs[m].get(c) for c in cols] for m in order if m in ev.aucs}
        tables.append(MetricTable("fire-auc", FIRE_CAPTION, cols,
                                  _best_rows(values, [True] * len(cols))))
    if ev.anhir_applies and summary is not None and not summary.empty:
        by_method = summary.set_index("method")
        deformation = tuple(c for c in DEFORMATION_COLUMNS if c[0] in by_method)
        columns = ANHIR_COLUMNS + deformation
        caption = ANHIR_CAPTION + (DEFORMATION_CAPTION if deformation else "")
        values = {m: [by_method.at[m, c] if c in by_method else None
                      for c, _, _ in columns] for m in order if m in by_method.index}
        tables.append(MetricTable("anhir", caption, tuple(h for _, h, _ in columns),
                                  _best_rows(values, [up for _, _, up in columns])))
    return tables


def _label_suffix(dataset: str | None) -> str:
    """``-<dataset>`` for the LaTeX labels (letters, digits and dashes), so that tables of
    several datasets can sit in one document."""
    slug = re.sub(r"[^a-z0-9]+", "-", str(dataset or "").lower()).strip("-")
    return f"-{slug}" if slug else ""


def paper_table_latex(ev: Evaluation, naed_norm: str | None = None,
                      dataset: str | None = None, summary: pd.DataFrame | None = None) -> str:
    """The paper-style table as a LaTeX ``table`` float (``booktabs``; label
    ``tab:mibench-naed-<dataset>``).

    ``naed_norm``: the run's NAED normaliser (for the caption and the column header; default:
    the records', ``ev.naed_norm``); ``dataset``: the run's dataset (in the labels, and first in
    the caption); ``summary``: the ``summary.csv`` frame, for the ANHIR table
    (:func:`metric_tables`).
    """
    norm = naed_norm or ev.naed_norm
    lines = ["% mibench: the paper-style table (needs \\usepackage{booktabs})"]
    lines += [f"% WARNING: {note}" for note in ev.notes()]
    suffix = _label_suffix(dataset)
    lines += ["\\begin{table}[t]", "\\centering",
              f"\\caption{{{tex_escape(_caption(ev, norm, dataset, '†'))}}}",
              f"\\label{{tab:mibench-naed{suffix}}}", "\\begin{tabular}{lcccr}", "\\toprule",
              f"Method & {naed_header(norm, tex=True, unit=ev.unit)} mean $\\pm$ std & $p$-value & "
              "$p$ (Holm) & pairs \\\\",
              "\\midrule"]
    for r in printed_rows(ev):
        name = tex_escape(r.method)
        value = f"${r.mean} \\pm {r.std}$" if r.std else _tex_number(r.mean)
        if r.is_best:
            name, value = f"\\textbf{{{name}}}", f"{{\\boldmath {value}}}"
        if r.is_reference:
            name += "$^\\dagger$"
        lines.append(f"{name} & {value} & {_tex_number(r.p)} & {_tex_number(r.p_holm)} & "
                     f"{r.pairs} \\\\")
    lines += ["\\bottomrule", "\\end{tabular}", "\\end{table}"]
    for extra in metric_tables(ev, summary):
        lines += ["", "\\begin{table}[t]", "\\centering",
                  f"\\caption{{{tex_escape(extra.caption)}}}",
                  f"\\label{{tab:mibench-{extra.label}{suffix}}}",
                  f"\\begin{{tabular}}{{l{'c' * len(extra.header)}}}", "\\toprule",
                  "Method & " + " & ".join(extra.header) + " \\\\", "\\midrule"]
        for method, texts, best in extra.rows:
            cells = [("--" if t == DASH else f"\\textbf{{{t}}}" if b else t)
                     for t, b in zip(texts, best, strict=True)]
            lines.append(f"{tex_escape(method)} & " + " & ".join(cells) + " \\\\")
        lines += ["\\bottomrule", "\\end{tabular}", "\\end{table}"]
    return "\n".join(lines) + "\n"


def _naed_markdown(ev: Evaluation, naed_norm: str | None) -> str:
    head = naed_header(naed_norm, unit=ev.unit)
    lines = [f"| Method | {head} mean ± std | p-value | p (Holm) | pairs |",
             "|---|---|---|---|---|"]
    for r in printed_rows(ev):
        name, value = _md_escape(r.method), r.value
        if r.is_best:
            name, value = f"**{name}**", f"**{value}**"
        if r.is_reference:
            name += f" {REF_MARK}"
        lines.append(f"| {name} | {value} | {r.p} | {r.p_holm} | {r.pairs} |")
    return "\n".join(lines)


def naed_table_markdown(ev: Evaluation, naed_norm: str | None = None) -> str | None:
    """The paper-style NAED table alone, as Markdown (header, rule and rows, then a blank line
    and what bold and the reference's mark mean; no trailing newline): what ``mibench run`` and
    ``mibench report`` print. None when no pair is scored."""
    if not ev.paper:
        return None
    return _naed_markdown(ev, naed_norm or ev.naed_norm) + "\n\n" + _md_escape(legend(ev))


def paper_table_markdown(ev: Evaluation, naed_norm: str | None = None,
                         dataset: str | None = None, summary: pd.DataFrame | None = None) -> str:
    """The paper-style table as a GitHub-flavoured Markdown table (:func:`naed_table_markdown`),
    its caption and notes below it, then the secondary tables (arguments as
    :func:`paper_table_latex`)."""
    norm = naed_norm or ev.naed_norm
    lines = [_naed_markdown(ev, norm), "", _md_escape(_caption(ev, norm, dataset))]
    lines += [f"\n> Warning: {_md_escape(note)}" for note in ev.notes()]
    for extra in metric_tables(ev, summary):
        lines += ["", "| Method | " + " | ".join(extra.header) + " |",
                  "|---" * (len(extra.header) + 1) + "|"]
        for method, texts, best in extra.rows:
            cells = [f"**{t}**" if b else t for t, b in zip(texts, best, strict=True)]
            lines.append(f"| {_md_escape(method)} | " + " | ".join(cells) + " |")
        lines += ["", extra.caption]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class PaperTables:
    """The paper tables of a run: ``paper_table.tex``, ``paper_table.md`` and the NAED table
    alone (the first block of the Markdown)."""

    latex: str
    markdown: str
    naed_markdown: str


def paper_tables(analysis: RunAnalysis) -> PaperTables | None:
    """The paper tables of ``analysis``; None when no pair was scored."""
    ev = analysis.evaluation
    if ev is None or not ev.paper:
        return None
    args = (ev, analysis.naed_norm, analysis.dataset, analysis.summary)
    return PaperTables(paper_table_latex(*args), paper_table_markdown(*args),
                       naed_table_markdown(ev, analysis.naed_norm) or "")


def write_paper_tables(run_dir: Path, tables: PaperTables | None) -> dict[str, Path]:
    """Write ``paper_table.tex`` and ``paper_table.md`` into ``run_dir`` (nothing when there
    are no tables, and stale ones are removed); return the paths written."""
    paths = {"paper_tex": Path(run_dir) / PAPER_TEX, "paper_md": Path(run_dir) / PAPER_MD}
    if tables is None:
        for path in paths.values():
            path.unlink(missing_ok=True)
        return {}
    paths["paper_tex"].write_text(tables.latex, encoding="utf-8")
    paths["paper_md"].write_text(tables.markdown, encoding="utf-8")
    return paths


__all__ = ["MetricTable", "PaperTables", "PrintedRow", "metric_tables", "naed_table_markdown",
           "legend", "paper_table_latex", "paper_table_markdown", "paper_tables", "printed_rows",
           "tex_escape", "write_paper_tables"]
