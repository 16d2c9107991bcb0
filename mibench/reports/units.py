"""The unit of a run's landmark errors, and how every artefact names it.

A registration record's errors (``landmark_errors``, ``metrics``, ``norm_length``) are in its
``unit``: ``"px"`` (native pixels of the fixed image: every 2-D pair without geometry, and every
record written before the field existed), ``"mm"`` (volumes with a geometry) or ``"um"``
(histology with a pixel size). NAED is their ratio, dimensionless in every unit. A run whose
records mix units gets :data:`MIXED`: no statistic averages errors across units (the summary
leaves its TRE columns empty, the report says why), while NAED is still compared.

The bottom of :mod:`mibench.reports`, beside :mod:`~mibench.reports.formatting`: plain text
only, no import from the rest of :mod:`mibench.reports`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

#: The unit of a record that does not say (written before records had a ``unit``).
DEFAULT_UNIT = "px"

#: The "unit" of a set of errors in more than one unit.
MIXED = "mixed"

#: How a unit is printed next to a number, and in a sentence.
_SYMBOLS = {"px": "px", "mm": "mm", "um": "µm"}
_WORDS = {"px": "native pixels", "mm": "millimetres", "um": "micrometres"}
_LONG = {"px": "pixels of the fixed image at native resolution",
         "mm": "millimetres (world coordinates of the fixed image)",
         "um": "micrometres (physical coordinates of the fixed image)"}


def record_unit(record: Any) -> str:
    """The unit of a record's errors: its ``unit`` field, ``"px"`` when absent or empty."""
    unit = getattr(record, "unit", None)
    return unit if isinstance(unit, str) and unit else DEFAULT_UNIT


def common_unit(units: Iterable[Any]) -> str:
    """The one unit of ``units`` (missing values skipped; ``"px"`` when none is left), or
    :data:`MIXED` when they differ."""
    found = {str(u) for u in units if isinstance(u, str) and u}
    if not found:
        return DEFAULT_UNIT
    return found.pop() if len(found) == 1 else MIXED


def symbol(unit: str | None) -> str:
    """``unit`` as printed after a number or in a heading: ``px``, ``mm``, ``µm``; an unknown
    unit as it is; :data:`MIXED` as ``mixed units``."""
    unit = unit or DEFAULT_UNIT
    return "mixed units" if unit == MIXED else _SYMBOLS.get(unit, unit)


def words(unit: str | None) -> str:
    """``unit`` in a short phrase: ``native pixels``, ``millimetres``, ``micrometres``."""
    unit = unit or DEFAULT_UNIT
    return "mixed units" if unit == MIXED else _WORDS.get(unit, unit)


def long_words(unit: str | None) -> str:
    """``unit`` in a sentence, as the captions say it: ``pixels of the fixed image at native
    resolution``, ``millimetres (world coordinates of the fixed image)``."""
    unit = unit or DEFAULT_UNIT
    return "mixed units" if unit == MIXED else _LONG.get(unit, unit)


def in_unit(text: str, unit: str | None) -> str:
    """``text``, a sentence written for pixels (``native pixels``, ``pixels``, ``[px``,
    `` px``), said in ``unit`` instead; unchanged for ``"px"``."""
    unit = unit or DEFAULT_UNIT
    if unit == DEFAULT_UNIT:
        return text
    return (text.replace("native pixels", words(unit)).replace("pixels", words(unit))
            .replace("[px", f"[{symbol(unit)}").replace(" px", f" {symbol(unit)}"))


def mixed_text(counts: dict[str, int]) -> str:
    """The warning of a run whose records mix units, with how many tasks have each."""
    parts = ", ".join(f"{n} in {symbol(u)}" for u, n in sorted(counts.items()))
    return (f"The records mix units ({parts} tasks): landmark errors in different units are "
            "not averaged, so the TRE columns of the summary are empty for methods with tasks "
            "in more than one unit; NAED (dimensionless) is compared as usual. Per-task errors, "
            "each in its own unit, are in results.csv (column unit).")


__all__ = ["DEFAULT_UNIT", "MIXED", "common_unit", "in_unit", "long_words", "mixed_text",
           "record_unit", "symbol", "words"]
