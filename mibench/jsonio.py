"""JSON as a run directory stores it: canonical text for hashing, and atomic writes."""

from __future__ import annotations

import functools
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from mibench.paths import TMP_PREFIX, TMP_SUFFIX


def canonical_json(obj: Any) -> str:
    """One text per value (sorted keys, no spaces): what task keys and comparisons hash."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def json_safe(obj: Any) -> Any:
    """Replace NaN and infinities (not valid JSON) by None, recursively."""
    if isinstance(obj, float):
        return obj if obj == obj and obj not in (float("inf"), float("-inf")) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


@functools.cache
def _new_file_mode() -> int:
    """The mode ``open()`` gives a new file: 0o666 less the umask (read once, as the umask can
    only be read by setting it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON so that readers see either the old file or the complete new one
    (:func:`write_bytes_atomic`)."""
    text = json.dumps(json_safe(data), indent=1, allow_nan=False, default=str)
    write_bytes_atomic(path, text.encode())


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` so that readers see either the old file or the complete new one: through
    a temporary file in the same folder, then a rename.

    The file gets the usual mode of a new file (``mkstemp`` makes it private to its owner,
    which would hide a shared run directory's records from colleagues)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The temporary name does not end in .json, so that a write cut short by a kill never
    # looks like a record; records.remove_stale_temporaries() clears such leftovers.
    for attempt in range(3):
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=TMP_PREFIX, suffix=TMP_SUFFIX)
        try:
            os.fchmod(fd, _new_file_mode())
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
            return
        except FileNotFoundError:
            # Another run starting in this directory took the temporary file for a leftover
            # (remove_stale_temporaries) and deleted it: write it again.
            Path(tmp).unlink(missing_ok=True)
            if attempt == 2:
                raise
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def read_json_object(path: Path) -> dict[str, Any]:
    """A JSON file holding an object. ``OSError`` when it cannot be read, ``ValueError`` when it
    is not JSON or not an object (cut short, edited)."""
    data = json.loads(Path(path).read_text())
    if not isinstance(data, dict):
        raise ValueError(f"a JSON {type(data).__name__}, not an object")
    return data
