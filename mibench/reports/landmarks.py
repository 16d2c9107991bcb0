"""Warped landmarks written out in ANHIR's submission format.

An ANHIR submission holds, for every pair, the *source* (moving) landmarks mapped into the
*target* (fixed) frame, ``T^-1(m_k)`` with ``T`` the fixed -> moving transform, as a CSV with the
header ``,X,Y`` and an index column; the organisers compare them with the hidden target
landmarks. The records already hold exactly these points (``warped_moving_landmarks``, in
native pixels of the fixed image), also for pairs that were not scored (evaluation pairs without
target landmarks), so this module only writes them. Volumes get the same file with a third
column, ``,X,Y,Z`` in voxels of the fixed volume (:func:`mibench.io.read_points` reads both).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from mibench.io import write_points_csv
from mibench.paths import WARPED_DIR
from mibench.registration import Record


def write_warped_landmarks(run_dir: Path, records: Iterable[Record]) -> list[Path]:
    """Write ``<run_dir>/warped-landmarks/<method>/<pair_id>.csv`` for each record that has
    warped landmarks, and remove every other file under ``warped-landmarks/``.

    Parameters
    ----------
    run_dir : Path
        The run directory.
    records : iterable of Record
        All the records of the run, typically ``RunAnalysis.records``. Failed
        records have no warped landmarks and get no file, which ANHIR's evaluation scores as
        the initial error.

    Returns
    -------
    list of Path
        The files written. Points are ``(x, y)`` native pixels of the fixed (target) image,
        ``(0, 0)`` the centre of its top-left pixel (volumes: ``(x, y, z)`` voxels of the fixed
        volume, header ``,X,Y,Z``), rows in the order of the source landmarks.
        When the records hold several seeds (any method, any pair), every file is named
        ``<pair_id>.s<seed>.csv`` instead, so that none overwrites another and a file's name
        does not depend on which other tasks of its pair failed. Files left by an earlier
        build that this one does not write (a task that failed since, a run resumed with more
        seeds) are removed, so the folder holds exactly the current submission.
    """
    records = list(records)
    several = len({r.task.seed for r in records}) > 1
    root = Path(run_dir) / WARPED_DIR
    written = []
    for r in sorted(records, key=lambda r: (r.task.method, r.task.pair_id, r.task.seed)):
        if r.warped_moving_landmarks is None:
            continue
        task = r.task
        name = f"{task.pair_id}.s{task.seed}" if several else task.pair_id
        path = root / task.method / f"{name}.csv"
        write_points_csv(path, r.warped_moving_landmarks)
        written.append(path)
    _remove_stale(root, set(written))
    return written


def _remove_stale(root: Path, keep: set[Path]) -> None:
    """Remove what ``root`` holds besides ``keep``, then the folders left empty.

    Links are removed, never followed, so nothing outside ``root`` is touched.
    """
    if not root.is_dir() or root.is_symlink():
        return
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        here = Path(dirpath)
        for name in filenames + [d for d in dirnames if (here / d).is_symlink()]:
            if here / name not in keep:
                (here / name).unlink()
        if here != root and not any(here.iterdir()):
            here.rmdir()


__all__ = ["write_warped_landmarks"]
