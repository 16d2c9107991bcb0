"""How every artefact prints numbers and counts: the HTML page, the paper tables, the terminal.

The bottom of :mod:`mibench.reports`: plain text only (escaping is the job of whoever writes
HTML, Markdown or LaTeX: the templates, the paper tables), and no import from the rest of
:mod:`mibench.reports` but :mod:`~mibench.reports.units` (the words for the errors' unit).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from mibench.jsonio import canonical_json
from mibench.metrics import NAED_NORMS
from mibench.reports.units import DEFAULT_UNIT, in_unit, symbol

#: What a missing number prints as.
DASH = "–"

#: Significance levels a printed p-value must never appear to cross by rounding.
P_LEVELS = (0.05, 0.01, 0.001)


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
        return DASH
    if isinstance(x, (int, np.integer)) and not isinstance(x, bool):
        return str(int(x))
    try:
        return f"{float(x):.{sig}g}"
    except (TypeError, ValueError):
        return str(x)


def fmt_p(p: Any) -> str:
    """A p-value as the paper prints it.

    Two significant digits in exponent form (``1.3e-04``), more where two would round it across
    0.05, 0.01 or 0.001 (``4.96e-02``, not ``5.0e-02``); an en dash when missing; ``<1e-300``
    for a p-value that underflowed to 0 (a p-value is never 0).
    """
    if missing(p):
        return DASH
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


def fmt_std(std: Any, sig: int = 4) -> str:
    """A standard deviation as ``fmt`` prints it; empty when undefined (missing or infinite)."""
    return "" if missing(std) or math.isinf(float(std)) else fmt(std, sig)


def fmt_pm(mean: Any, std: Any, sig: int = 4) -> str:
    """``mean ± std`` (the std left out when undefined)."""
    spread = fmt_std(std, sig)
    return fmt(mean, sig) + (f" ± {spread}" if spread else "")


def to_json(value: Any) -> str:
    """Compact JSON of a non-empty value; empty string for None, {} and []."""
    return canonical_json(value) if value not in (None, {}, []) else ""


def plural(n: int, word: str) -> str:
    """``"1 pair"``, ``"3 pairs"``."""
    return f"{n} {word}{'' if n == 1 else 's'}"


def seed_text(seeds: list[int], limit: int = 6) -> str:
    """``"seed 0"``, ``"seeds 0, 1, 2"``, or for many ``"40 seeds (0 … 39)"``."""
    if len(seeds) == 1:
        return f"seed {seeds[0]}"
    if len(seeds) <= limit:
        return "seeds " + ", ".join(map(str, seeds))
    return f"{len(seeds)} seeds ({seeds[0]} … {seeds[-1]})"


def seed_groups(seeds: dict[str, list[int]]) -> str:
    """Methods grouped by their seeds: ``"seed 0: identity, ncc; seeds 0, 1, 2: drmime"``."""
    groups: dict[tuple[int, ...], list[str]] = {}
    for method, s in seeds.items():
        groups.setdefault(tuple(s), []).append(method)
    return "; ".join(f"{seed_text(list(s))}: {', '.join(ms)}" for s, ms in groups.items())


def normalised(naed_norm: str | None) -> bool:
    """Whether NAED under ``naed_norm`` is a normalised value (False for ``none``: D = 1, the
    mean TRE in pixels). An unknown or unrecorded normaliser counts as normalised, as before
    there was a choice."""
    norm = NAED_NORMS.get(naed_norm or "")
    return norm is None or norm.normalised


def naed_header(naed_norm: str | None, *, tex: bool = False, unit: str = DEFAULT_UNIT) -> str:
    """The heading of a NAED column: says so when NAED is not normalised (D = 1), a mean error
    in ``unit`` (the records' unit, see :mod:`~mibench.reports.units`)."""
    if normalised(naed_norm):
        return "NAED"
    u = symbol(unit)
    return f"NAED [{u}, $D = 1$]" if tex else f"NAED [{u}, D = 1]"


def naed_definition(naed_norm: str | None, unit: str = DEFAULT_UNIT) -> str:
    """What D is under ``naed_norm``, in a sentence (the one table :data:`NAED_NORMS`), with
    lengths in ``unit`` (the records' unit: D and the errors are both in it)."""
    norm = NAED_NORMS.get(naed_norm or "")
    if norm is None:
        return f"normalisation {naed_norm or 'not recorded'}"
    return in_unit(norm.definition, unit)


#: Said under a table with the deformation columns (summary, ANHIR's, a pair's page).
DEFORMATION_CAPTION = (
    "Deformation quality (Learn2Reg's definitions), for transforms that are not matrices "
    "(B-splines): the Jacobian determinant det J of the fixed → moving mapping on the fixed "
    "image's pixels (finite differences of 1 px), over the fixed mask; folding: the share of "
    "pixels with det J ≤ 0; SD log J: the standard deviation of log(det J + 3) (Learn2Reg's "
    "shift, clipped to [1e-9, 1e9]); per method, means over its tasks; both lower is better. "
    "— for a matrix transform: an affine's det J is one constant, so it does not fold (unless "
    "it reflects) and its SD log J is 0.")


__all__ = ["DASH", "DEFORMATION_CAPTION", "P_LEVELS", "fmt", "fmt_p", "fmt_pm", "fmt_std",
           "missing", "naed_definition", "naed_header", "normalised", "plural", "seed_groups",
           "seed_text", "to_json"]

