"""Where a run keeps its files: every file name of a run directory, and the paths built from them.

A run directory holds ``run.json`` (the manifest), ``records/<group>/<name>.json`` (one record per
task, the single source of truth) and what the reports write from the records. Nothing else in
mibench spells these names.
"""

from __future__ import annotations

from pathlib import Path

#: The manifest: resolved settings, versions, device, machine, invocations.
RUN_JSON = "run.json"
#: One folder per record group (a method, for registration tasks), one JSON file per task.
RECORDS_DIR = "records"
RECORD_SUFFIX = ".json"
#: A write in progress: the name does not end in ``.json``, so a cut-short write is never a record.
TMP_PREFIX = ".tmp-"
TMP_SUFFIX = ".part"
#: A damaged record or manifest is renamed with this suffix: kept for inspection, no longer read.
DAMAGED_SUFFIX = ".damaged"

RESULTS_CSV = "results.csv"
SUMMARY_CSV = "summary.csv"
STATS_CSV = "stats.csv"
METRICS_JSON = "metrics.json"
PAPER_TEX = "paper_table.tex"
PAPER_MD = "paper_table.md"
REPORT_HTML = "report.html"
#: ANHIR's submission format: ``warped-landmarks/<method>/<pair>[.s<seed>].csv``.
WARPED_DIR = "warped-landmarks"
#: One page per pair, every method side by side: ``pairs/<pair>.html``.
PAIRS_DIR = "pairs"
#: An affine transform file (ITK's text format), after the record's name without ``.json``.
TRANSFORM_SUFFIX = ".tfm"
#: An ITK transform file in HDF5: a displacement field (perspective results, non-matrix results
#: with geometry) or a B-spline composite (:func:`mibench.bspline.to_sitk`).
FIELD_SUFFIX = ".h5"
#: A non-matrix result (a B-spline's grid, matrix part and coefficients, ``.npz``) stored beside
#: its record, which references it by name: after the record's name without ``.json``.
BSPLINE_SUFFIX = ".bspline.npz"
#: The warped moving volume (NIfTI, gzip) and the warped moving 2-D image (PNG).
WARPED_VOLUME_SUFFIX = ".warped.nii.gz"
WARPED_IMAGE_SUFFIX = ".warped.png"
#: Figures are written as ``fig_<name>.png`` beside the report.
FIGURE_PREFIX = "fig_"
#: Where ``mibench run`` puts a run directory when ``--out`` is not given.
DEFAULT_RUNS_DIR = "runs"


def manifest_path(run_dir: Path | str) -> Path:
    return Path(run_dir) / RUN_JSON


def records_dir(run_dir: Path | str) -> Path:
    return Path(run_dir) / RECORDS_DIR


def record_path(run_dir: Path | str, group: str, name: str) -> Path:
    """``run_dir/records/<group>/<name>.json``; ``name`` is a task's file stem."""
    return records_dir(run_dir) / group / f"{name}{RECORD_SUFFIX}"


def beside_record(record: Path | str, suffix: str) -> Path:
    """The file ``suffix`` names beside a record: ``<name>.json`` -> ``<name><suffix>`` in the
    same folder (pair ids may hold dots, so not ``Path.stem``)."""
    record = Path(record)
    name = record.name
    stem = name[:-len(RECORD_SUFFIX)] if name.endswith(RECORD_SUFFIX) else name
    return record.with_name(stem + suffix)


def record_files(run_dir: Path | str) -> list[Path]:
    """Every record file of a run directory, sorted (damaged and temporary files excluded)."""
    return sorted(records_dir(run_dir).glob(f"*/*{RECORD_SUFFIX}"))


def temporary_files(run_dir: Path | str) -> list[Path]:
    """Half-written files a killed run may have left (manifest and records)."""
    pattern = f"{TMP_PREFIX}*{TMP_SUFFIX}"
    return [*Path(run_dir).glob(pattern), *records_dir(run_dir).glob(f"*/{pattern}")]


def damaged_path(path: Path) -> Path:
    """Where a damaged file is set aside: the same name with :data:`DAMAGED_SUFFIX`."""
    return path.with_name(path.name + DAMAGED_SUFFIX)


def default_run_dir(dataset: str, digest: str) -> Path:
    """``runs/<dataset>-<digest>``: a new run directory per configuration."""
    return Path(DEFAULT_RUNS_DIR) / f"{dataset}-{digest}"


def figure_name(name: str) -> str:
    """``fig_<name>.png``."""
    return f"{FIGURE_PREFIX}{name}.png"
