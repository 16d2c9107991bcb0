"""Reading and writing the files mibench works with: images, masks and landmark points.

One reader serves every part of mibench (each dataset, ``mibench estimate``), so that a file
gives the same array wherever it is read. Nothing here knows a dataset's layout: finding files
inside a data directory is :mod:`mibench.datasets.layout`'s job.

Every problem with a file is a :class:`ValueError` whose one-line message names the file and
says what was expected (scikit-image's convention); the caller turns it into a
:class:`mibench.errors.UserError` at its boundary (the command line, the opening of a dataset).

Coordinates follow the README's *Conventions*: a point is ``(x, y)`` = (column, row) in
pixels, ``(0, 0)`` the centre of the top-left pixel.
"""

from __future__ import annotations

import csv
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")
LANDMARK_SUFFIXES = (".csv", ".txt", ".pts")
CHANNELS = ("grey", "green", "rgb")

# Classic and BigTIFF, little- and big-endian: the format is told by content, not by suffix.
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
# Float images slightly past [0, 1] by rounding are clipped; anything further is refused.
_FLOAT_SLACK = 1e-6


def check_file(path: Path, what: str) -> None:
    """Refuse a missing ``path``, or one that is a folder, naming ``what`` it should be."""
    if path.is_dir():
        raise ValueError(f"{path}: {what} path is a folder, not a file")
    if not path.is_file():
        raise ValueError(f"{path}: {what} file not found")


# ---------------------------------------------------------------------------------- images


def pixel_limit() -> int | None:
    """The most pixels an image may have: twice ``PIL.Image.MAX_IMAGE_PIXELS``.

    That is where Pillow refuses a file as a possible decompression bomb (about 179 million
    pixels by default); the same limit holds for TIFFs read with tifffile. None: no limit (the
    user set ``MAX_IMAGE_PIXELS = None``).
    """
    from PIL import Image

    limit = Image.MAX_IMAGE_PIXELS
    return None if limit is None else 2 * int(limit)


def _too_large(path: Path, what: str, pixels: int, limit: int) -> ValueError:
    return ValueError(f"{path}: {what} has {pixels:,} pixels, over Pillow's decompression-bomb "
                      f"limit of {limit:,}; use a smaller copy of it (e.g. a lower scale)")


@dataclass(frozen=True)
class _Header:
    """What an image file's header says: ``(H, W)``, the format, and the decoder to use."""

    height: int
    width: int
    fmt: str | None
    tifffile: bool  # decode with tifffile: Pillow would lose values or could not read them


def _is_tiff(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(4) in _TIFF_MAGIC


def _tiff_header(path: Path, what: str) -> _Header | None:
    """Header of a TIFF's first page, read with tifffile; None if tifffile cannot parse it.

    Pillow cannot open float colour or float64 TIFFs at all, and reads 16-bit colour ones as
    8-bit: those are decoded with tifffile. The others (8-bit, 16-bit grey, float32 grey) stay
    with Pillow, which reads them exactly and decodes more compressions without the optional
    ``imagecodecs`` package (LZW, JPEG, ...).
    """
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            axes, shape, dtype = page.axes, page.shape, np.dtype(page.dtype)
            samples = int(page.samplesperpixel)
    except Exception:  # tifffile raises several unrelated types for a file it cannot parse
        return None
    if "Y" not in axes or "X" not in axes:
        raise ValueError(f"{path}: expected a 2-D grey or colour {what}, got a TIFF page of "
                         f"axes {axes} and shape {shape}")
    pillow_exact = samples == 1 and (dtype.itemsize <= 2 or dtype == np.float32)
    return _Header(int(shape[axes.index("Y")]), int(shape[axes.index("X")]), "TIFF",
                   not pillow_exact)


def _pil_header(path: Path, what: str) -> _Header:
    from PIL import Image, UnidentifiedImageError

    limit = pixel_limit()
    try:
        with warnings.catch_warnings():
            # Between one and two times MAX_IMAGE_PIXELS Pillow only warns of a "DOS attack";
            # large scans are legitimate here, and the hard limit is checked by the caller.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                width, height = im.size
                fmt = im.format
    except Image.DecompressionBombError as exc:
        # The size is known only from Pillow's message ("Image size (N pixels) exceeds ...").
        found = re.search(r"\((\d+) pixels\)", str(exc))
        pixels = int(found.group(1)) if found else -1
        raise _too_large(path, what, pixels, limit or 0) from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise ValueError(f"{path}: cannot read {what}: not a readable image file "
                         f"({type(exc).__name__})") from None
    return _Header(height, width, fmt, False)


def _header(path: Path, what: str) -> _Header:
    """Check ``path`` as an image file from its header only (nothing is decoded): it exists,
    is readable, is not over :func:`pixel_limit` and, for JPEG and PNG, is not cut short."""
    path = Path(path)
    check_file(path, what)
    header = _tiff_header(path, what) if _is_tiff(path) else None
    if header is None:  # not a TIFF, or one only Pillow may read
        header = _pil_header(path, what)
    limit = pixel_limit()
    if limit is not None and header.height * header.width > limit:
        raise _too_large(path, what, header.height * header.width, limit)
    _check_complete(path, header.fmt, what)
    return header


def _check_complete(path: Path, fmt: str | None, what: str) -> None:
    """Refuse JPEG and PNG files cut short (a common result of an interrupted download)."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        fh.seek(max(0, size - 64))
        tail = fh.read()
    if fmt == "JPEG" and b"\xff\xd9" not in tail and not _jpeg_decodes(path):
        raise ValueError(f"{path}: truncated JPEG image (no end-of-image marker); "
                         "download it again")
    if fmt == "PNG" and b"IEND" not in tail:
        raise ValueError(f"{path}: truncated PNG image (no IEND chunk); download it again")


def _jpeg_decodes(path: Path) -> bool:
    """Whether a JPEG without an end-of-image marker at its very end decodes in full.

    Some cameras append data after the image (a trailer, an embedded video), so the marker is
    not always in the last bytes; such a file is complete. A cut-short file fails to decode.
    Only these rare files pay for the decode.
    """
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                im.load()
    except (OSError, ValueError, SyntaxError):
        return False
    return True


def image_size(path: Path, what: str = "image") -> tuple[int, int]:
    """``(H, W)`` of an image file from its header only (cheap: nothing is decoded).

    Also refuses a missing, unreadable, too large (:func:`pixel_limit`) or truncated (JPEG,
    PNG) file with a one-line :class:`ValueError`.
    """
    header = _header(Path(path), what)
    return header.height, header.width


def _pil_pixels(path: Path, what: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                if im.mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV"):
                    im = im.convert("RGB")  # palette indices and other spaces are not intensities
                im.load()
                return np.asarray(im)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise ValueError(f"{path}: cannot decode {what} ({type(exc).__name__}: {exc})"
                         .splitlines()[0]) from None


def _tiff_pixels(path: Path, what: str) -> np.ndarray:
    """The first page of a TIFF as ``(H, W)`` or ``(H, W, S)``, values as stored."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            arr, axes = page.asarray(), page.axes
    except Exception as exc:  # tifffile raises several unrelated types for a bad file
        # A compression tifffile needs the optional imagecodecs package for (LZW, say) says so.
        raise ValueError(f"{path}: cannot decode {what} ({type(exc).__name__}: {exc})"
                         .splitlines()[0]) from None
    if axes == "SYX":  # planar configuration "separate": one plane per channel
        arr = np.moveaxis(arr, 0, -1)
    elif axes not in ("YX", "YXS"):
        raise ValueError(f"{path}: expected a 2-D grey or colour {what}, got a TIFF page of "
                         f"axes {axes} and shape {arr.shape}")
    return arr


def _float_to_unit(arr: np.ndarray, path: Path, what: str) -> np.ndarray:
    """Float pixels are intensities in [0, 1] already: kept as they are, never rescaled (the
    two images of a pair must not be scaled differently); values far outside are refused."""
    arr = arr.astype(np.float32, copy=False)
    if not np.isfinite(arr).all():
        raise ValueError(f"{path}: float {what} has NaN or infinite pixels")
    lo, hi = float(arr.min()), float(arr.max())
    if lo < -_FLOAT_SLACK or hi > 1 + _FLOAT_SLACK:
        raise ValueError(f"{path}: float {what} has values in [{lo:.6g}, {hi:.6g}]; float "
                         "images must hold intensities in [0, 1]")
    return arr


def read_image(path: Path, channels: str = "grey", what: str = "image") -> np.ndarray:
    """Decode an image file as float32 in [0, 1].

    Parameters
    ----------
    path : Path
        A file Pillow can decode (JPEG, PNG, BMP, TIFF, ...), 8- or 16-bit, grey or colour, or
        a TIFF of any bit depth and channel count, floats included (read with tifffile where
        Pillow would lose values or cannot read it: 16-bit colour, float colour and float64
        TIFFs). Only the first page of a multi-page TIFF is read.
    channels : {"grey", "green", "rgb"}
        ``grey``: ITU-R 601 luma ``0.299 R + 0.587 G + 0.114 B``, ``(H, W)``; ``green``: the
        green channel (most vessel contrast in fundus photographs), ``(H, W)``; ``rgb``: all
        three, ``(H, W, 3)``. A grey file gives ``(H, W)`` whatever ``channels`` is.
    what : str
        What the file is, for the error messages.

    Returns
    -------
    ndarray
        float32 ``(H, W)`` or ``(H, W, 3)``, values in [0, 1]. 8-bit files are divided by 255,
        16-bit files by 65535 (whatever their values: a dark 16-bit image is not scaled as an
        8-bit one), float files are kept as they are (and must lie in [0, 1]).

    Raises
    ------
    ValueError
        One line naming the file: missing, unreadable, cut short, over :func:`pixel_limit`,
        not 2-D, or a float image outside [0, 1].
    """
    if channels not in CHANNELS:
        raise ValueError(f"channels must be one of {', '.join(CHANNELS)}; got {channels!r}")
    path = Path(path)
    header = _header(path, what)  # existence, size and truncation, with their own messages
    arr = _tiff_pixels(path, what) if header.tifffile else _pil_pixels(path, what)
    if not arr.dtype.isnative:
        # Big-endian files (Pillow's "I;16B") give ">u2": native order lets the 16-bit rule
        # below recognise them (a dark one would otherwise be scaled as 8-bit).
        arr = arr.astype(arr.dtype.newbyteorder("="))
    if arr.ndim == 3:
        arr = arr[..., :3]  # drop alpha
        if arr.shape[-1] in (1, 2):  # grey, or grey + alpha
            arr = arr[..., 0]
    if arr.ndim == 3 and channels == "green":
        arr = arr[..., 1]  # before the float conversion: a third of the work
    if arr.dtype == bool:
        arr = arr.astype(np.float32)
    elif arr.dtype == np.uint8:
        arr = arr.astype(np.float32) / 255.0
    elif arr.dtype == np.uint16:
        # A 16-bit file: its range is 16 bits whatever its values (a dark image must not be
        # scaled as 8-bit, nor the two images of a pair differently).
        arr = arr.astype(np.float32) / 65535.0
    elif np.issubdtype(arr.dtype, np.integer):
        # 32-bit integer containers (PIL mode "I"): 16-bit data from some decoders, 8-bit data
        # rarely, so the 16-bit range is assumed unless every value fits in 8 bits.
        top = 65535.0 if arr.max() > 255 else 255.0
        arr = arr.astype(np.float32) / top
    elif np.issubdtype(arr.dtype, np.floating):
        arr = _float_to_unit(arr, path, what)
    arr = np.clip(arr.astype(np.float32, copy=False), 0.0, 1.0)
    if arr.ndim == 3 and channels == "grey":
        # Per-channel sums: a (H, W, 3) @ (3,) product goes through a slow strided path.
        arr = 0.299 * arr[..., 0] + 0.587 * arr[..., 1] + 0.114 * arr[..., 2]
    if arr.ndim not in (2, 3):
        raise ValueError(f"{path}: expected a 2-D grey or colour {what}, got shape {arr.shape}")
    return np.ascontiguousarray(arr, dtype=np.float32)


def read_mask(path: Path, what: str = "mask") -> np.ndarray:
    """A bool ``(H, W)`` mask: True where the image is above half its maximum (any channel)."""
    arr = read_image(path, "grey", what)
    top = float(arr.max())
    if top <= 0:
        raise ValueError(f"{path}: {what} is empty (all pixels are 0)")
    return arr > 0.5 * top


def same_channels(fixed: np.ndarray, moving: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A grey and a colour image as two grey ones (the colour one as its channel mean);
    images with equal channel counts unchanged. Estimators and methods need equal counts."""
    if (fixed.ndim == 3) == (moving.ndim == 3):
        return fixed, moving
    fixed = fixed if fixed.ndim == 2 else fixed.mean(axis=-1, dtype=np.float32)
    moving = moving if moving.ndim == 2 else moving.mean(axis=-1, dtype=np.float32)
    return fixed, moving


# ------------------------------------------------------------------------------ landmarks


def _unquote(field: str) -> str:
    return field.strip().strip('"').strip()


def _numbers(path: Path, lines: list[str], columns: int | None, what: str,
             first_line: int = 1) -> np.ndarray:
    """Parse whitespace-, comma- or semicolon-separated numeric lines into ``(K, columns)``
    float64 (numbers may be quoted)."""
    rows = []
    for n, line in enumerate(lines, start=first_line):
        text = line.strip()
        if not text:
            continue
        fields = [_unquote(f) for f in re.split(r"[,\s;]+", text) if f]
        if columns is not None and len(fields) != columns:
            raise ValueError(f"{path}: line {n}: expected {columns} numbers per line "
                             f"({what}), got {len(fields)}")
        try:
            rows.append([float(f) for f in fields])
        except ValueError:
            raise ValueError(f"{path}: line {n}: expected numbers ({what}), got "
                             f"{text!r}") from None
    if not rows:
        raise ValueError(f"{path}: no landmarks in the file ({what})")
    if len({len(r) for r in rows}) > 1:
        raise ValueError(f"{path}: lines have different numbers of columns ({what})")
    arr = np.asarray(rows, dtype=np.float64)
    if not np.isfinite(arr).all():
        raise ValueError(f"{path}: landmark coordinates must be finite numbers ({what})")
    return arr


def read_points(path: Path, columns: int | None = None, what: str = "landmarks") -> np.ndarray:
    """Read a point file into ``(K, D)`` float64.

    Formats, chosen by suffix:

    ``.csv``
        A header line, then one point per line, parsed with the :mod:`csv` module (fields may
        be quoted: ``"X","Y"``, ``"1.5"``). The BIRL/ANHIR form is ``,X,Y`` with an index
        column; in general, columns named ``X``, ``Y`` (and ``Z``; any case) are taken in that
        order and other columns (an index) are ignored. A file whose first line is all numbers
        has no header and is read as plain numbers, like ``.txt``.
    ``.pts``
        The BIRL form: the line ``point``, then the count ``N``, then N lines of ``x y``.
    ``.txt`` and anything else
        Whitespace- (or comma-) separated numbers, one point per line.

    Parameters
    ----------
    path : Path
        The file.
    columns : int, optional
        The number of values each point must have (2 for ``x y``); a file that differs is a
        :class:`ValueError` naming the line.
    what : str
        What the numbers are, for the messages (e.g. ``"x_ref y_ref x_test y_test"``).

    Returns
    -------
    ndarray
        ``(K, D)`` float64, one point per row, in the file's units (pixels ``(x, y)``, or
        voxels, as the file holds them).
    """
    path = Path(path)
    check_file(path, "landmark")
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: cannot read landmark file ({type(exc).__name__})") from None
    suffix = path.suffix.lower()
    if suffix == ".pts":
        return _read_pts(path, lines, columns, what)
    if suffix == ".csv" and lines and _is_header(lines[0]):
        return _read_csv_with_header(path, lines, columns, what)
    return _numbers(path, lines, columns, what)


def _is_header(line: str) -> bool:
    """Whether a CSV line is a header: some field is not a number (``1e-3`` is one; a field
    may hold several numbers apart by spaces, as in a plain ``x y`` file named ``.csv``)."""
    for field in next(csv.reader([line]), []):
        for token in _unquote(field).split():
            try:
                float(_unquote(token))
            except ValueError:
                return True
    return False


def _read_pts(path: Path, lines: list[str], columns: int | None, what: str) -> np.ndarray:
    body = [line for line in lines if line.strip()]
    if len(body) < 2 or not body[0].strip().lower().startswith("point"):
        raise ValueError(f"{path}: expected a .pts file: the line 'point', the number of "
                         "points, then one 'x y' line per point")
    try:
        count = int(body[1].strip())
    except ValueError:
        raise ValueError(f"{path}: line 2: expected the number of points, got "
                         f"{body[1].strip()!r}") from None
    points = _numbers(path, body[2:], columns, what, first_line=3)
    if len(points) != count:
        raise ValueError(f"{path}: header says {count} points, the file has {len(points)}")
    return points


def _read_csv_with_header(path: Path, lines: list[str], columns: int | None,
                          what: str) -> np.ndarray:
    # The lines are parsed one by one (not as one stream) so that every message can name the
    # file's line; a quoted field with a line break is not a landmark file.
    header = [_unquote(h).lower() for h in next(csv.reader([lines[0]]))]
    wanted = [name for name in ("x", "y", "z") if name in header]
    if "x" not in wanted or "y" not in wanted:
        raise ValueError(f"{path}: expected a CSV header with columns X and Y (as ',X,Y'), got "
                         f"{lines[0].strip()!r}")
    index = [header.index(name) for name in wanted]
    rows = []
    for n, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = [_unquote(f) for f in next(csv.reader([line]))]
        if len(fields) != len(header):
            raise ValueError(f"{path}: line {n}: expected {len(header)} comma-separated columns "
                             f"like the header, got {len(fields)}")
        try:
            rows.append([float(fields[i]) for i in index])
        except ValueError:
            raise ValueError(f"{path}: line {n}: expected numbers in columns "
                             f"{', '.join(w.upper() for w in wanted)}") from None
    if not rows:
        raise ValueError(f"{path}: no landmarks in the file ({what})")
    arr = np.asarray(rows, dtype=np.float64)
    if columns is not None and arr.shape[1] != columns:
        raise ValueError(f"{path}: expected {columns} coordinate columns ({what}), got "
                         f"{arr.shape[1]}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{path}: landmark coordinates must be finite numbers ({what})")
    return arr


def write_points_csv(path: Path, points: np.ndarray) -> None:
    """Write ``(K, 2)`` points ``(x, y)`` in the BIRL/ANHIR landmark format: header ``,X,Y`` and
    a 1-based index column (as in the files ANHIR ships); ``(K, 3)`` voxel points ``(x, y, z)``
    the same way with a ``Z`` column (``,X,Y,Z``). Values as Python's shortest exact ``repr``,
    so reading the file back gives the same float64 values. Written atomically (a temporary
    file, then a rename)."""
    pts = np.asarray(points, dtype=np.float64)
    ndim = 3 if pts.ndim == 2 and pts.shape[1] == 3 else 2
    pts = pts.reshape(-1, ndim)
    header = ",X,Y,Z" if ndim == 3 else ",X,Y"
    lines = [header] + [",".join([str(i), *map(repr, row)])
                        for i, row in enumerate(pts.tolist(), start=1)]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.part")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, path)
