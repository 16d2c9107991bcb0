"""What every part of the HTML report shares: escaping, number formats, tables and the context.

Every string that comes from data goes through ``esc`` before it enters the page.
"""

from __future__ import annotations

import base64
import html
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from mibench.records import canonical_json
from mibench.reports.results import method_order

if TYPE_CHECKING:
    from mibench.reports.evaluation import Evaluation
    from mibench.reports.overlays import Overlay


def esc(value: Any) -> str:
    """HTML-escaped text of any value (None -> empty)."""
    return "" if value is None else html.escape(str(value), quote=True)


def missing(x: Any) -> bool:
    """True for None and NaN-like values."""
    if x is None:
        return True
    try:
        return bool(pd.isna(x))
    except (TypeError, ValueError):
        return False


def fmt(x: Any, sig: int = 4) -> str:
    """A number with ``sig`` significant digits; an en dash when missing."""
    if missing(x):
        return "–"
    if isinstance(x, (int, np.integer)) and not isinstance(x, bool):
        return str(int(x))
    try:
        return f"{float(x):.{sig}g}"
    except (TypeError, ValueError):
        return esc(x)


#: Significance levels a printed p-value must never appear to cross by rounding.
P_LEVELS = (0.05, 0.01, 0.001)


def fmt_p(p: Any) -> str:
    """A p-value as the paper prints it: two significant digits in exponent form (``1.3e-04``),
    more where two would round it across 0.05, 0.01 or 0.001 (``4.96e-02``, not ``5.0e-02``);
    an en dash when missing; ``<1e-300`` for a p-value that underflowed to 0 (a p-value is
    never 0; escape it for HTML)."""
    if missing(p):
        return "–"
    p = float(p)
    if p >= 1:
        return "1"
    if p == 0:
        return "<1e-300"
    for decimals in range(1, 7):
        text = f"{p:.{decimals}e}"
        if all((float(text) < level) == (p < level) for level in P_LEVELS):
            break
    return text


def fmt_pm(mean: Any, std: Any, sig: int = 4) -> str:
    """``mean ± std`` (the std left out when undefined)."""
    spread = fmt_std(std, sig)
    return fmt(mean, sig) + (f" ± {spread}" if spread else "")


def fmt_std(std: Any, sig: int = 4) -> str:
    """A standard deviation as ``fmt`` prints it; empty when undefined (missing or infinite)."""
    return "" if missing(std) or math.isinf(float(std)) else fmt(std, sig)


def to_json(value: Any) -> str:
    """Compact JSON of a non-empty value; empty string for None, {} and []."""
    return canonical_json(value) if value not in (None, {}, []) else ""


def table(header: list[str], rows: list[list[str]], cls: str = "") -> str:
    """An HTML table; header and cells are HTML fragments (escape data before passing it)."""
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    attr = f' class="{cls}"' if cls else ""
    # The wrapper scrolls sideways, so a wide table never widens the page.
    return (f'<div class="scroll"><table{attr}><thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table></div>")


def img(png: bytes, alt: str, caption: str = "") -> str:
    """A figure with the PNG embedded as a data URI (the page needs no other file)."""
    data = base64.b64encode(png).decode("ascii")
    cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    return f'<figure><img alt="{esc(alt)}" src="data:image/png;base64,{data}">{cap}</figure>'


@dataclass
class ReportContext:
    """Everything a section may use."""

    run_dir: Path
    manifest: dict[str, Any]
    results: pd.DataFrame
    summary: pd.DataFrame
    evaluation: Evaluation | None = None
    figures: dict[str, bytes] = field(default_factory=dict)  # file name -> PNG bytes
    overlays: list[Overlay] = field(default_factory=list)
    overlay_note: str = ""

    @property
    def config(self) -> dict[str, Any]:
        c = self.manifest.get("config")
        return c if isinstance(c, dict) else {}

    @property
    def order(self) -> list[str]:
        return method_order(self.summary)


__all__ = ["ReportContext", "esc", "fmt", "fmt_p", "fmt_pm", "fmt_std", "img", "missing", "table",
           "to_json"]
