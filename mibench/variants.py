"""Method variants: one method under several option sets in one run, ``nmi[bins=64]``.

A variant is written ``name[option=value,option=value]`` wherever a method is named (``--methods``,
a config file's ``methods`` list, ``mibench.run(methods=[...])``, ``--reference``). Its canonical
name lists, sorted by option, the options whose value differs from the method's default, each
value as the option's type prints it: ``nmi[bins=064]`` and ``nmi[ bins = 64 ]`` are both
``nmi[bins=64]``, and ``nmi[bins=32]`` (the default) is plain ``nmi``. Downstream (task keys,
records, tables, statistics, figures) a variant is a method like any other, under its canonical
name; only the registry lookup uses its base name (:func:`base_name`).
"""

from __future__ import annotations

import re
from typing import Any

from mibench.errors import UserError

#: Characters of a value in a variant name: the name becomes a folder of the run directory.
_VALUE = re.compile(r"[A-Za-z0-9._+-]+")


def split_methods(text: str) -> tuple[str, ...]:
    """``"nmi,nmi[bins=64,kernel=linear]"`` -> ``("nmi", "nmi[bins=64,kernel=linear]")``: a
    comma list whose commas inside brackets belong to a variant."""
    items, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        elif ch == "," and depth == 0:
            items.append(text[start:i])
            start = i + 1
    items.append(text[start:])
    return tuple(item.strip() for item in items if item.strip())


def parse_variant(text: str) -> tuple[str, dict[str, str]]:
    """``"NMI[bins=64]"`` -> ``("nmi", {"bins": "64"})``: the base name (lower case) and the
    options as text. Bad syntax is a one-line :class:`UserError`."""
    text = text.strip()
    base, bracket, rest = text.partition("[")
    base = base.strip().lower()
    if not bracket:
        if "]" in text:
            raise UserError(f"method {text!r}: a ']' without '['")
        return base, {}
    if not rest.endswith("]") or "[" in rest or rest.count("]") != 1 or not base:
        raise UserError(f"method variant {text!r}: write it as name[option=value,...]")
    options: dict[str, str] = {}
    for item in rest[:-1].split(","):
        key, eq, value = (part.strip() for part in item.partition("="))
        if not eq or not key or not value:
            raise UserError(f"method variant {text!r}: expected option=value, got {item.strip()!r}")
        if key in options:
            raise UserError(f"method variant {text!r}: option {key!r} given twice")
        options[key] = value
    return base, options


def normalise(text: str) -> str:
    """A method as written, with its base name in lower case (option values keep their case):
    ``" NMI[kernel=Linear] "`` -> ``"nmi[kernel=Linear]"``."""
    base, bracket, rest = text.strip().partition("[")
    return base.strip().lower() + bracket + rest


def base_name(name: str) -> str:
    """The method a variant name is a variant of: ``"nmi[bins=64]"`` -> ``"nmi"``."""
    return name.partition("[")[0]


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)


def variant_name(base: str, options: dict[str, Any], defaults: dict[str, Any]) -> str:
    """The canonical name of method ``base`` with resolved ``options``: those that differ from
    ``defaults``, sorted, in brackets (plain ``base`` when none does)."""
    differ = {k: v for k, v in sorted(options.items()) if defaults.get(k) != v}
    if not differ:
        return base
    parts = []
    for key, value in differ.items():
        text = _text(value)
        if not _VALUE.fullmatch(text):
            raise UserError(f"method variant {base}[{key}={text}]: a value in a variant name "
                            "may only hold letters, digits, '.', '_', '+' and '-' (it names a "
                            "folder of the run directory)")
        parts.append(f"{key}={text}")
    return f"{base}[{','.join(parts)}]"
