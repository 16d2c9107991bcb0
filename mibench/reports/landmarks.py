"""Warped landmarks written out in ANHIR's submission format.

An ANHIR submission holds, for every pair, the *source* (moving) landmarks mapped into the
*target* (fixed) frame, ``T^-1(m_k)`` with ``T`` the fixed -> moving transform, as a CSV with the
header ``,X,Y`` and an index column; the organisers compare them with the hidden target
landmarks. The records already hold exactly these points (``warped_moving_landmarks``, in
native pixels of the fixed image), also for pairs that were not scored (evaluation pairs without
target landmarks), so this module only writes them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from mibench.datasets.io import write_points_csv
from mibench.records import Record

WARPED_DIR = "warped-landmarks"


def write_warped_landmarks(run_dir: Path, records: Iterable[Record]) -> list[Path]:
    """Write ``<run_dir>/warped-landmarks/<method>/<pair_id>.csv`` for each record that has
    warped landmarks.

    Parameters
    ----------
    run_dir : Path
        The run directory.
    records : iterable of Record
        Typically ``mibench.records.iter_records(run_dir)``. Failed records have no warped
        landmarks and are skipped, which ANHIR's evaluation scores as the initial error.

    Returns
    -------
    list of Path
        The files written. Points are ``(x, y)`` native pixels of the fixed (target) image,
        ``(0, 0)`` the centre of its top-left pixel, rows in the order of the source landmarks.
        When a (method, pair) has records for several seeds, each file is named
        ``<pair_id>.s<seed>.csv`` instead, so that none overwrites another.
    """
    chosen = [r for r in records if r.warped_moving_landmarks is not None]
    seeds = Counter((r.method, r.pair_id) for r in chosen)
    written = []
    for r in sorted(chosen, key=lambda r: (r.method, r.pair_id, r.seed)):
        name = r.pair_id if seeds[(r.method, r.pair_id)] == 1 else f"{r.pair_id}.s{r.seed}"
        path = Path(run_dir) / WARPED_DIR / r.method / f"{name}.csv"
        write_points_csv(path, r.warped_moving_landmarks)
        written.append(path)
    return written
