"""The ``cover`` dataset: any BIRL-style cover table, for the user's own data.

A cover table is a CSV with one row per pair and (at least) the columns ``Target image``,
``Source image``, ``Target landmarks`` and ``Source landmarks``: paths relative to the data
directory (a path that would leave it is refused). Target = fixed, source = moving. Other
columns (``Image size [pixels]``, ``status``, empty result columns) are allowed; an unnamed first
column (pandas' index) gives the pair ids, otherwise the row number does: ids are the number with
three digits, ``000``, ``001``, ...

Landmark files are ``.csv`` (header ``,X,Y``), ``.pts`` or plain ``x y`` text (see
:func:`mibench.io.read_points`), in pixels of the image they belong to. An empty
``Target landmarks`` cell makes the pair registered but not scored; an empty ``Source landmarks``
cell leaves it without landmarks. Unequal counts use the common prefix, with a warning.

Scales. BIRL datasets keep each image at several scales in folders ``scale-<P>pc``. ``scale=P``
reads the images from ``scale-P pc`` instead of the folder the table names, and multiplies the
table's landmarks by ``P / P_table``; ``working_scale`` then resizes in memory. Errors (and
written warped landmarks) are in pixels of the images the table names (its "native" scale), so
that they are comparable with results at any other scale.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mibench.datasets.layout import (
    check_data_dir,
    common_prefix,
    find_table,
    read_csv_table,
    resolve_inside,
    scaled,
)
from mibench.datasets.pixels import downscale
from mibench.io import image_size, read_image, read_points, same_channels
from mibench.pairs import Pair, PairInfo

PATH_COLUMNS = ("Target image", "Source image", "Target landmarks", "Source landmarks")
_SCALE_DIR = re.compile(r"^scale-(\d+)pc$")


@dataclass
class CoverRow:
    """One pair of a cover table, checked; landmarks at the table's scale (``None``: absent)."""

    id: str
    row: int
    target: Path
    source: Path
    target_landmarks: np.ndarray | None
    source_landmarks: np.ndarray | None
    target_ratio: float  # pixels of the image read per pixel of the table's image
    source_ratio: float
    native_shape: tuple[int, int]
    meta: dict[str, Any] = field(default_factory=dict)


def read_table(path: Path):
    """Read a cover table as strings; ``Unnamed: *`` columns (an index) are kept apart.

    Returns ``(frame, index)``: the named columns, and the integer ids from the first unnamed
    column or None.
    """
    frame = read_csv_table(path, "cover table", PATH_COLUMNS, ", ".join(PATH_COLUMNS))
    unnamed = [c for c in frame.columns if c.startswith("Unnamed:") or c == ""]
    index = None
    if unnamed and frame.columns[0] in unnamed:
        values = frame[frame.columns[0]].str.strip()
        if values.str.fullmatch(r"\d+").all():
            numbers = [int(v) for v in values]
            # Unique as numbers ("1" and "01" give the same id, and one pair would replace the
            # other); otherwise the row numbers are the ids, as without an index column.
            if len(set(numbers)) == len(numbers):
                index = numbers
    return frame.drop(columns=unnamed), index


def _scale_of(path: str) -> tuple[int, int] | None:
    """``(position, P)`` of the ``scale-<P>pc`` folder in a relative path, or None."""
    for i, part in enumerate(Path(path).parts):
        match = _SCALE_DIR.match(part)
        if match:
            return i, int(match.group(1))
    return None


class CoverDataset:
    """Pairs listed in a BIRL-style cover table.

    Parameters
    ----------
    data_dir : Path
        The directory the table's paths are relative to.
    table : str
        The cover table (CSV).
    scale : int
        ``0``: the images the table names; ``P``: the same images from the ``scale-<P>pc``
        folder instead (landmarks rescaled from the table's).
    working_scale : float
        In (0, 1]: images (and landmarks) are resized by it in memory before registration.
    channels : {"grey", "rgb"}
        Colour images as luma or as three channels.
    """

    name = "cover"

    def __init__(self, data_dir: Path, *, table: str = "", scale: int = 0,
                 working_scale: float = 1.0, channels: str = "grey"):
        self.data_dir = check_data_dir(data_dir, self.name)
        self.table = find_table(self.data_dir, table)
        self.scale = int(scale)
        self.working_scale = float(working_scale)
        self.channels = channels
        self.notes: list[str] = []
        frame, index = read_table(self.table)
        self._rows: dict[str, CoverRow] = {}
        for position, values in enumerate(frame.to_dict("records")):
            number = index[position] if index is not None else position
            where = f"{self.table.name}, row {number}"
            if not self.keep(values):
                continue
            row = self._read_row(f"{number:03d}", number, values, where)
            self._rows[row.id] = row
        self.describe()
        if self.scale:
            self.notes.append(f"images read from the scale-{self.scale}pc folders; errors in "
                              "pixels of the images the cover table names")

    # Hooks for datasets built on cover tables (anhir) ----------------------------------

    def keep(self, values: dict[str, str]) -> bool:
        """Whether a table row is used (all rows here)."""
        return True

    def row_meta(self, values: dict[str, str], target_rel: str) -> dict[str, Any]:
        """Metadata of a row's pair (none here)."""
        return {}

    def target_landmarks_optional(self, values: dict[str, str]) -> bool:
        """Whether a missing ``Target landmarks`` file means "not scored" rather than an error."""
        return False

    def describe(self) -> None:
        """Append what the report should say about this dataset to :attr:`notes`."""
        unscored = len(self.unscored())
        if unscored:
            self.notes.append(f"{unscored} pair(s) have no target landmarks: registered, warped "
                              "source landmarks written out, not scored")

    def unscored(self) -> list[CoverRow]:
        """Rows registered but not scored: source landmarks to warp, no target ones."""
        return [r for r in self._rows.values()
                if r.target_landmarks is None and r.source_landmarks is not None]

    # --------------------------------------------------------------------------------------

    def _image(self, rel: str, where: str, what: str) -> tuple[Path, float, Path]:
        """``(path to read, ratio to the table's image, path of the table's image)``."""
        table_path = resolve_inside(self.data_dir, rel, where)
        if not self.scale:
            return table_path, 1.0, table_path
        found = _scale_of(rel)
        if found is None:
            raise ValueError(f"{where}: {what} path {rel!r} has no scale-<P>pc folder, so option "
                             "'scale' cannot choose another scale")
        position, table_scale = found
        parts = list(Path(rel).parts)
        parts[position] = f"scale-{self.scale}pc"
        path = resolve_inside(self.data_dir, str(Path(*parts)), where)
        return path, self.scale / table_scale, table_path

    def _landmarks(self, rel: str, where: str, optional: bool) -> np.ndarray | None:
        if not rel.strip():
            return None
        path = resolve_inside(self.data_dir, rel, where)
        if optional and not path.is_file():
            return None
        return read_points(path, 2, "x y")

    def _read_row(self, pair_id: str, number: int, values: dict[str, str],
                  where: str) -> CoverRow:
        target_rel, source_rel = values["Target image"].strip(), values["Source image"].strip()
        target, target_ratio, target_table = self._image(target_rel, where, "target image")
        source, source_ratio, _ = self._image(source_rel, where, "source image")
        shape = image_size(target, "target image")
        image_size(source, "source image")
        if target_table.is_file():
            native_shape = image_size(target_table, "target image")
        else:  # only the chosen scale is on disk
            native_shape = (round(shape[0] / target_ratio), round(shape[1] / target_ratio))
        fixed = self._landmarks(values["Target landmarks"], where,
                                self.target_landmarks_optional(values))
        moving = self._landmarks(values["Source landmarks"], where, False)
        if fixed is not None and moving is not None:
            fixed, moving = common_prefix(fixed, moving, f"{self.table.name}, pair {pair_id}",
                                          self.notes)
        meta = {"row": number, **self.row_meta(values, target_rel)}
        return CoverRow(pair_id, number, target, source, fixed, moving, target_ratio,
                        source_ratio, native_shape, meta)

    def pairs(self) -> list[PairInfo]:
        return [PairInfo(r.id, dict(r.meta)) for r in self._rows.values()]

    def load(self, pair_id: str) -> Pair:
        try:
            r = self._rows[pair_id]
        except KeyError:
            raise ValueError(f"{self.table}: no pair {pair_id!r} (with these options)") from None
        fixed = read_image(r.target, self.channels, "target image")
        moving = read_image(r.source, self.channels, "source image")
        fixed, moving = same_channels(fixed, moving)
        s = self.working_scale
        fixed_factor, moving_factor = r.target_ratio * s, r.source_ratio * s
        return Pair(
            id=r.id,
            fixed=downscale(fixed, s),
            moving=downscale(moving, s),
            fixed_landmarks=scaled(r.target_landmarks, fixed_factor),
            moving_landmarks=scaled(r.source_landmarks, moving_factor),
            native_scale=1.0 / fixed_factor,
            native_shape=r.native_shape,
            meta=dict(r.meta),
        )


def load_dataset(data_dir: Path | None, **params: Any) -> CoverDataset:
    """Factory of the ``cover`` dataset: options checked against the spec's bounds and
    choices, missing ones defaulted (also when called directly from Python)."""
    from mibench.datasets import COVER

    return CoverDataset(data_dir, **COVER.resolve(params))
