"""Where a dataset's files are and how they pair up: paths inside the data directory, tables
(cover tables, manifests), comma-list options and landmark pairing.

Reading the files themselves (images, masks, landmark points) is :mod:`mibench.io`'s job, and
resampling to a working scale :mod:`mibench.datasets.pixels`'.

Every problem is a :class:`ValueError` whose one-line message names the file (or option) and
says what was expected; the harness turns it into a one-line ``UserError`` naming the dataset
(``dataset 'cover': ...``) where it opens the dataset.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import numpy as np

# ----------------------------------------------------------------------------------- paths


def resolve_inside(data_dir: Path, relative: str, where: str) -> Path:
    """The path ``relative`` inside ``data_dir``; one that would leave it is refused.

    The check is lexical (``..`` and absolute paths), so a symbolic link the user placed inside
    the data directory is followed on purpose.

    Parameters
    ----------
    data_dir : Path
        The data directory (absolute).
    relative : str
        A path as written in a table, relative to ``data_dir``.
    where : str
        Names the table and row in the error message, e.g. ``"cover.csv, row 3"``.
    """
    text = str(relative).strip()
    if not text:
        raise ValueError(f"{where}: empty path")
    if os.path.isabs(text) or re.match(r"^[A-Za-z]:[\\/]", text):
        raise ValueError(f"{where}: path {text!r} is absolute; paths must be relative to the "
                         f"data directory {data_dir}")
    joined = os.path.normpath(os.path.join(str(data_dir), text))
    root = os.path.normpath(str(data_dir))
    if os.path.commonpath([root, joined]) != root:
        raise ValueError(f"{where}: path {text!r} escapes the data directory {data_dir}; "
                         "refused")
    return Path(joined)


def check_data_dir(data_dir: Path | None, dataset: str) -> Path:
    """``data_dir`` (of dataset ``dataset``) as a :class:`Path`, refused unless it is an
    existing directory.

    The harness checks this before a factory runs; this repeats it for factories called
    directly from Python, where a file would otherwise fail later with a misleading message
    (a table "not found" inside it, or an ``OSError`` traceback).
    """
    if data_dir is None:
        raise ValueError(f"dataset {dataset!r} needs a data directory (--data-dir)")
    path = Path(data_dir)
    if path.is_dir():
        return path
    # The same words as the harness's own check (mibench.callables.resolve_data_dir).
    what = "is a file, not a directory" if path.exists() else "does not exist"
    raise ValueError(f"{path}: data directory {what}")


# ---------------------------------------------------------------------------------- tables


def find_table(data_dir: Path, table: str, what: str = "cover table",
               option: str = "table") -> Path:
    """A table file: an absolute path, a path from the current directory, or one inside
    ``data_dir``."""
    if not table:
        raise ValueError(f"this dataset needs its {what}: -o {option}=PATH")
    given = Path(table).expanduser()
    candidates = (given,) if given.is_absolute() else (given, Path(data_dir) / given)
    files = [path for path in candidates if path.is_file()]
    if len(files) == 2 and not files[0].samefile(files[1]):
        # Two different tables of that name (say a stray copy where the command runs): using
        # either silently could register the wrong pairs.
        raise ValueError(f"{table}: two {what}s of that name, {files[0].resolve()} and "
                         f"{files[1].resolve()}; give the one to use as an absolute path "
                         f"(-o {option}=PATH)")
    if files:
        return files[0].resolve()
    for path in candidates:
        if path.is_dir():  # found, but not a file: say so rather than "not found"
            raise ValueError(f"{path}: {what} path is a folder, not a file (-o {option}=PATH)")
    raise ValueError(f"{table}: {what} not found (looked in the current directory and in "
                     f"{data_dir})")


def read_csv_table(path: Path, what: str, required: tuple[str, ...], expected: str, *,
                   keep_blank_lines: bool = False):
    """Read a CSV table (a cover table, a manifest) as strings, and refuse missing columns.

    Cells stay text (an empty cell is ``""``, never NaN; ``"007"`` keeps its zeros); column
    names and the spaces after commas are stripped.

    Parameters
    ----------
    path : Path
        The table.
    what : str
        What the table is, for the messages (``"cover table"``).
    required : tuple of str
        Columns it must have.
    expected : str
        The columns in words, for the message about missing ones.
    keep_blank_lines : bool
        Keep blank lines as rows of empty cells, so that row ``i`` is line ``i + 2`` of the
        file (the caller then skips them); otherwise they are dropped.

    Returns
    -------
    pandas.DataFrame
        One row per table row, every cell a ``str``.
    """
    import pandas as pd

    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True,
                            skip_blank_lines=not keep_blank_lines)
    except (ValueError, OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: cannot read the {what} as CSV "
                         f"({type(exc).__name__}: {exc})".splitlines()[0]) from None
    frame.columns = [str(c).strip() for c in frame.columns]
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: not a {what}: missing column(s) "
                         f"{', '.join(repr(c) for c in missing)} (expected {expected})")
    return frame


# --------------------------------------------------------------------------------- options


def comma_list(text: str, allowed: tuple[str, ...], option: str) -> tuple[str, ...]:
    """The items of a comma-list option, each one of ``allowed`` (in any case), in the order
    given, repeats dropped, spelled as in ``allowed``; an unknown item or none is refused."""
    spelling = {name.lower(): name for name in allowed}
    items = [item.strip().lower() for item in text.split(",") if item.strip()]
    if not items or any(item not in spelling for item in items):
        raise ValueError(f"option {option!r} takes a comma list of {', '.join(allowed)}; "
                         f"got {text!r}")
    return tuple(dict.fromkeys(spelling[item] for item in items))


# ------------------------------------------------------------------------------- landmarks


def common_prefix(fixed: np.ndarray, moving: np.ndarray, where: str,
                  notes: list[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Pair landmarks by row; with unequal counts keep the first ``min`` rows and warn.

    This is what the FIRE and BIRL tools do. The warning (a :class:`UserWarning`) is also
    appended to ``notes`` when given, so that the report shows it.
    """
    if len(fixed) == len(moving):
        return fixed, moving
    k = min(len(fixed), len(moving))
    message = (f"{where}: {len(fixed)} fixed and {len(moving)} moving landmarks; "
               f"using the first {k} of each")
    warnings.warn(message, UserWarning, stacklevel=2)
    if notes is not None:
        notes.append(message)
    return fixed[:k], moving[:k]


def scaled(points: np.ndarray | None, factor: float) -> np.ndarray | None:
    """Landmarks ``(K, 2)`` multiplied by ``factor`` (to a working scale); None stays None."""
    return None if points is None else points * factor
