"""Reading dataset files robustly: paths, images, landmark files and working-scale resampling.

Every problem with a user's files is a :class:`mibench.errors.UserError` whose one-line message
names the file and says what was expected, so that the CLI can print it without a traceback.

Coordinates follow the README's *Conventions*: a point is ``(x, y)`` = (column, row) in
pixels, ``(0, 0)`` the centre of the top-left pixel.

Working scale. :func:`downscale` resamples so that working pixel ``(x, y)`` is native pixel
``(x / s, y / s)`` *exactly* (the top-left pixel centres coincide), so that landmarks scale by a
plain factor, ``p_work = s * p_native``, and errors and warped landmarks go back to native pixels
by multiplying with ``1 / s`` (``Pair.native_scale``), with no half-pixel offset.
"""

from __future__ import annotations

import math
import os
import re
import warnings
from pathlib import Path

import numpy as np

from mibench.errors import UserError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")
LANDMARK_SUFFIXES = (".csv", ".txt", ".pts")


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
        raise UserError(f"{where}: empty path")
    if os.path.isabs(text) or re.match(r"^[A-Za-z]:[\\/]", text):
        raise UserError(f"{where}: path {text!r} is absolute; paths must be relative to the "
                        f"data directory {data_dir}")
    joined = os.path.normpath(os.path.join(str(data_dir), text))
    root = os.path.normpath(str(data_dir))
    if os.path.commonpath([root, joined]) != root:
        raise UserError(f"{where}: path {text!r} escapes the data directory {data_dir}; refused")
    return Path(joined)


def check_data_dir(data_dir: Path | None, dataset: str) -> Path:
    """``data_dir`` (of dataset ``dataset``) as a :class:`Path`, refused unless it is an
    existing directory.

    The command line checks this before a factory runs; this repeats it for factories called
    directly from Python, where a file would otherwise fail later with a misleading message
    (a table "not found" inside it, or an ``OSError`` traceback).
    """
    if data_dir is None:
        raise UserError(f"dataset {dataset!r} needs a data directory (--data-dir)")
    path = Path(data_dir)
    if path.is_dir():
        return path
    # The same words as the command line's own check (mibench.config.resolve_data_dir).
    what = "is a file, not a directory" if path.exists() else "does not exist"
    raise UserError(f"{path}: data directory {what}")


def check_file(path: Path, what: str) -> None:
    """Refuse a missing ``path``, or one that is a folder, naming ``what`` it should be."""
    if path.is_dir():
        raise UserError(f"{path}: {what} path is a folder, not a file")
    if not path.is_file():
        raise UserError(f"{path}: {what} file not found")


def find_table(data_dir: Path, table: str, what: str = "cover table",
               option: str = "table") -> Path:
    """A table file: an absolute path, a path from the current directory, or one inside
    ``data_dir``."""
    if not table:
        raise UserError(f"this dataset needs its {what}: -o {option}=PATH")
    given = Path(table).expanduser()
    candidates = (given,) if given.is_absolute() else (given, Path(data_dir) / given)
    files = [path for path in candidates if path.is_file()]
    if len(files) == 2 and not files[0].samefile(files[1]):
        # Two different tables of that name (say a stray copy where the command runs): using
        # either silently could register the wrong pairs.
        raise UserError(f"{table}: two {what}s of that name, {files[0].resolve()} and "
                        f"{files[1].resolve()}; give the one to use as an absolute path "
                        f"(-o {option}=PATH)")
    if files:
        return files[0].resolve()
    for path in candidates:
        if path.is_dir():  # found, but not a file: say so rather than "not found"
            raise UserError(f"{path}: {what} path is a folder, not a file (-o {option}=PATH)")
    raise UserError(f"{table}: {what} not found (looked in the current directory and in "
                    f"{data_dir})")


# ---------------------------------------------------------------------------------- images


def _check_complete(path: Path, fmt: str | None) -> None:
    """Refuse JPEG and PNG files cut short (a common result of an interrupted download)."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        fh.seek(max(0, size - 64))
        tail = fh.read()
    if fmt == "JPEG" and b"\xff\xd9" not in tail and not _jpeg_decodes(path):
        raise UserError(f"{path}: truncated JPEG image (no end-of-image marker); "
                        "download it again")
    if fmt == "PNG" and b"IEND" not in tail:
        raise UserError(f"{path}: truncated PNG image (no IEND chunk); download it again")


def _jpeg_decodes(path: Path) -> bool:
    """Whether a JPEG without an end-of-image marker at its very end decodes in full.

    Some cameras append data after the image (a trailer, an embedded video), so the marker is
    not always in the last bytes; such a file is complete. A cut-short file fails to decode.
    Only these rare files pay for the decode.
    """
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
    except (OSError, ValueError, SyntaxError):
        return False
    return True


def image_size(path: Path, what: str = "image") -> tuple[int, int]:
    """``(H, W)`` of an image file from its header only (cheap: nothing is decoded).

    Also refuses a missing, unreadable or truncated (JPEG, PNG) file with a one-line
    :class:`UserError`.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    check_file(path, what)
    try:
        with Image.open(path) as im:
            width, height = im.size
            fmt = im.format
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise UserError(f"{path}: cannot read {what}: not a readable image file "
                        f"({type(exc).__name__})") from None
    _check_complete(path, fmt)
    return height, width


def read_image(path: Path, channels: str = "grey", what: str = "image") -> np.ndarray:
    """Decode an image file as float32 in [0, 1].

    Parameters
    ----------
    path : Path
        A file PIL can decode (JPEG, PNG, TIFF, ...); 8- or 16-bit, grey or colour.
    channels : {"grey", "green", "rgb"}
        ``grey``: ITU-R 601 luma ``0.299 R + 0.587 G + 0.114 B``, ``(H, W)``; ``green``: the
        green channel (most vessel contrast in fundus photographs), ``(H, W)``; ``rgb``: all
        three, ``(H, W, 3)``. A grey file gives ``(H, W)`` whatever ``channels`` is.
    what : str
        What the file is, for the error message.

    Returns
    -------
    ndarray
        float32 ``(H, W)`` or ``(H, W, 3)``, values in [0, 1].
    """
    from PIL import Image, UnidentifiedImageError

    image_size(path, what)  # existence, header and truncation, with their own messages
    try:
        with Image.open(path) as im:
            if im.mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV"):
                im = im.convert("RGB")  # palette indices and other spaces are not intensities
            im.load()
            arr = np.asarray(im)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise UserError(f"{path}: cannot decode {what} ({type(exc).__name__}: {exc})") from None
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
    arr = np.clip(arr.astype(np.float32, copy=False), 0.0, 1.0)
    if arr.ndim == 3 and channels == "grey":
        # Per-channel sums: a (H, W, 3) @ (3,) product goes through a slow strided path.
        arr = 0.299 * arr[..., 0] + 0.587 * arr[..., 1] + 0.114 * arr[..., 2]
    if arr.ndim not in (2, 3):
        raise UserError(f"{path}: expected a 2-D grey or colour {what}, got shape {arr.shape}")
    return np.ascontiguousarray(arr, dtype=np.float32)


def read_mask(path: Path, what: str = "mask") -> np.ndarray:
    """A bool ``(H, W)`` mask: True where the image is above half its maximum (any channel)."""
    arr = read_image(path, "grey", what)
    top = float(arr.max())
    if top <= 0:
        raise UserError(f"{path}: {what} is empty (all pixels are 0)")
    return arr > 0.5 * top


# ---------------------------------------------------------------------------- resampling


def working_shape(shape: tuple[int, int], scale: float) -> tuple[int, int]:
    """``(H, W)`` of an image of native ``shape`` at working scale ``scale`` (pixel counts
    rounded, at least 1)."""
    return tuple(max(1, int(round(n * scale))) for n in shape[:2])


def downscale(image: np.ndarray, scale: float, *, order: int = 1) -> np.ndarray:
    """Resample ``image`` to working scale ``scale`` (<= 1) with anti-aliasing.

    Working pixel ``(x, y)`` samples native position ``(x / scale, y / scale)``, so landmarks
    scale by ``scale`` exactly (see the module docstring). A Gaussian of sigma
    ``(1 / scale - 1) / 2`` native pixels (scikit-image's anti-aliasing default) is applied
    first; samples past the last native pixel (at most one working pixel) repeat the edge.

    Parameters
    ----------
    image : ndarray
        ``(H, W)`` or ``(H, W, C)`` float in [0, 1], or a bool ``(H, W)`` mask (pass
        ``order=0`` for masks: nearest sampling, no blur).
    scale : float
        Working pixels per native pixel, in (0, 1].
    order : int
        Spline order of the interpolation (1: bilinear; 0: nearest, no anti-aliasing).

    Returns
    -------
    ndarray
        Shape :func:`working_shape` ``(image.shape, scale)`` (plus channels); float32 in
        [0, 1], or bool for a bool input. ``scale == 1`` returns ``image`` itself.
    """
    from scipy import ndimage

    if not 0 < scale <= 1:
        raise ValueError(f"scale must be in (0, 1], got {scale}")
    if scale == 1:
        return image
    out_shape = working_shape(image.shape, scale)
    step = 1.0 / scale
    is_bool = image.dtype == bool
    src = image.astype(np.float32)
    sigma = (step - 1.0) / 2.0 if order > 0 else 0.0

    def one(channel: np.ndarray) -> np.ndarray:
        if sigma > 0:
            channel = ndimage.gaussian_filter(channel, sigma, mode="nearest")
        return ndimage.affine_transform(channel, [step, step], output_shape=out_shape,
                                        order=order, mode="nearest", prefilter=False)

    if src.ndim == 3:
        out = np.stack([one(src[..., c]) for c in range(src.shape[-1])], axis=-1)
    else:
        out = one(src)
    if is_bool:
        return out > 0.5
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def check_scale(scale: float, name: str = "scale") -> float:
    if not (math.isfinite(scale) and 0 < scale <= 1):
        raise UserError(f"option {name!r} must be in (0, 1] (working pixels per native pixel); "
                        f"got {scale}")
    return float(scale)


# ------------------------------------------------------------------------------ landmarks


def _numbers(path: Path, lines: list[str], columns: int | None, what: str,
             first_line: int = 1) -> np.ndarray:
    """Parse whitespace- or comma-separated numeric lines into ``(K, columns)`` float64."""
    rows = []
    for n, line in enumerate(lines, start=first_line):
        text = line.strip()
        if not text:
            continue
        fields = [f for f in re.split(r"[,\s;]+", text) if f]
        if columns is not None and len(fields) != columns:
            raise UserError(f"{path}: line {n}: expected {columns} numbers per line "
                            f"({what}), got {len(fields)}")
        try:
            rows.append([float(f) for f in fields])
        except ValueError:
            raise UserError(f"{path}: line {n}: expected numbers ({what}), got {text!r}") from None
    if not rows:
        raise UserError(f"{path}: no landmarks in the file ({what})")
    if len({len(r) for r in rows}) > 1:
        raise UserError(f"{path}: lines have different numbers of columns ({what})")
    arr = np.asarray(rows, dtype=np.float64)
    if not np.isfinite(arr).all():
        raise UserError(f"{path}: landmark coordinates must be finite numbers ({what})")
    return arr


def read_points(path: Path, columns: int | None = None, what: str = "landmarks") -> np.ndarray:
    """Read a point file into ``(K, D)`` float64.

    Formats, chosen by suffix:

    ``.csv``
        A header line, then one point per line. The BIRL/ANHIR form is ``,X,Y`` with an index
        column; in general, columns named ``X``, ``Y`` (and ``Z``; any case) are taken in that
        order and other columns (an index) are ignored. Without a header the file is read as
        plain numbers, like ``.txt``.
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
        :class:`UserError` naming the line.
    what : str
        What the numbers are, for the messages (e.g. ``"x_ref y_ref x_test y_test"``).
    """
    path = Path(path)
    check_file(path, "landmark")
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read landmark file ({type(exc).__name__})") from None
    suffix = path.suffix.lower()
    if suffix == ".pts":
        return _read_pts(path, lines, columns, what)
    if suffix == ".csv" and lines and re.search(r"[A-Za-z]", lines[0]):
        return _read_csv_with_header(path, lines, columns, what)
    return _numbers(path, lines, columns, what)


def _read_pts(path: Path, lines: list[str], columns: int | None, what: str) -> np.ndarray:
    body = [line for line in lines if line.strip()]
    if len(body) < 2 or not body[0].strip().lower().startswith("point"):
        raise UserError(f"{path}: expected a .pts file: the line 'point', the number of points, "
                        "then one 'x y' line per point")
    try:
        count = int(body[1].strip())
    except ValueError:
        raise UserError(f"{path}: line 2: expected the number of points, got "
                        f"{body[1].strip()!r}") from None
    points = _numbers(path, body[2:], columns, what, first_line=3)
    if len(points) != count:
        raise UserError(f"{path}: header says {count} points, the file has {len(points)}")
    return points


def _read_csv_with_header(path: Path, lines: list[str], columns: int | None,
                          what: str) -> np.ndarray:
    header = [h.strip().strip('"').lower() for h in lines[0].split(",")]
    wanted = [name for name in ("x", "y", "z") if name in header]
    if "x" not in wanted or "y" not in wanted:
        raise UserError(f"{path}: expected a CSV header with columns X and Y (as ',X,Y'), got "
                        f"{lines[0].strip()!r}")
    index = [header.index(name) for name in wanted]
    rows = []
    for n, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = [f.strip().strip('"') for f in line.split(",")]
        if len(fields) != len(header):
            raise UserError(f"{path}: line {n}: expected {len(header)} comma-separated columns "
                            f"like the header, got {len(fields)}")
        try:
            rows.append([float(fields[i]) for i in index])
        except ValueError:
            raise UserError(f"{path}: line {n}: expected numbers in columns "
                            f"{', '.join(w.upper() for w in wanted)}") from None
    if not rows:
        raise UserError(f"{path}: no landmarks in the file ({what})")
    arr = np.asarray(rows, dtype=np.float64)
    if columns is not None and arr.shape[1] != columns:
        raise UserError(f"{path}: expected {columns} coordinate columns ({what}), got "
                        f"{arr.shape[1]}")
    if not np.isfinite(arr).all():
        raise UserError(f"{path}: landmark coordinates must be finite numbers ({what})")
    return arr


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


def write_points_csv(path: Path, points: np.ndarray) -> None:
    """Write ``(K, 2)`` points in the BIRL/ANHIR landmark format: header ``,X,Y`` and a
    1-based index column (as in the files ANHIR ships)."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    lines = [",X,Y"] + [f"{i},{x!r},{y!r}" for i, (x, y) in enumerate(pts.tolist(), start=1)]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.part")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, path)
