"""Builders of small datasets in the exact on-disk formats of FIRE, ANHIR, BIRL covers and NIfTI.

The real datasets cannot be downloaded in CI, so tests write miniature copies: same folder
names, file names, file formats and text layouts, with small images whose landmarks are known.
Every builder returns the ground truth it wrote, so tests can compute expected values by hand.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

FIRE_SIZE = 96  # stands for FIRE's 2912 px


def blob_image(shape: tuple[int, int], centres: np.ndarray, sigma: float = 5.0,
               rgb: bool = False) -> np.ndarray:
    """uint8 image: Gaussian blobs of the given sigma (pixels) at ``(x, y)`` centres on 20."""
    ys, xs = np.mgrid[: shape[0], : shape[1]].astype(np.float64)
    img = np.full(shape, 20.0)
    for x, y in np.atleast_2d(centres):
        img += 220.0 * np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * sigma**2))
    img = np.clip(img, 0, 255).astype(np.uint8)
    return np.stack([img // 2, img, img // 3], axis=-1) if rgb else img


def save(path: Path, pixels: np.ndarray, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, **kw)
    return path


# ------------------------------------------------------------------------------------ FIRE


@dataclass
class FireTruth:
    root: Path
    points: dict[str, np.ndarray] = field(default_factory=dict)  # id -> (10, 4) native


def fire_points(pair_index: int) -> np.ndarray:
    """10 control points ``x_ref y_ref x_test y_test``: the test points are the reference ones
    shifted by ``(3, 4) * (pair_index + 1)`` native px, so identity errors are ``5 (i + 1)``."""
    rng = np.random.default_rng(pair_index)
    ref = rng.uniform(20, FIRE_SIZE - 20, size=(10, 2)).round(2)
    test = ref + np.array([3.0, 4.0]) * (pair_index + 1)
    return np.hstack([ref, test])


def make_fire(root: Path, ids=("S01", "P02", "P37", "A03")) -> FireTruth:
    """A FIRE folder: ``Images/``, ``Ground Truth/``, ``Masks/`` with the given pair ids."""
    truth = FireTruth(root)
    disc = np.hypot(*np.mgrid[-47.5:48.5, -47.5:48.5]) < 44
    save(root / "Masks" / "mask.png", (disc * 255).astype(np.uint8))
    feature = np.hypot(*np.mgrid[-47.5:48.5, -47.5:48.5]) < 40
    save(root / "Masks" / "feature_mask.png", (feature * 255).astype(np.uint8))
    for i, pair_id in enumerate(ids):
        pts = fire_points(i)
        truth.points[pair_id] = pts
        shape = (FIRE_SIZE, FIRE_SIZE)
        save(root / "Images" / f"{pair_id}_1.jpg", blob_image(shape, pts[:3, :2], rgb=True),
             quality=95)
        save(root / "Images" / f"{pair_id}_2.jpg", blob_image(shape, pts[:3, 2:], rgb=True),
             quality=95)
        lines = [" ".join(f"{v:.2f}" for v in row) for row in pts]
        gt = root / "Ground Truth" / f"control_points_{pair_id}_1_2.txt"
        gt.parent.mkdir(parents=True, exist_ok=True)
        gt.write_text("\n".join(lines) + "\n")
    return truth


# ----------------------------------------------------------------------------------- ANHIR

COVER_COLUMNS = ("Target image", "Source image", "Target landmarks", "Source landmarks")
ANHIR_EXTRA = ("status", "Image size [pixels]", "Image diagonal [pixels]",
               "Warped target landmarks", "Warped source landmarks", "Execution time [minutes]")


def write_landmarks_csv(path: Path, points: np.ndarray) -> Path:
    """ANHIR's landmark CSV: header ``,X,Y`` and a 1-based index column."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [",X,Y"] + [f"{i},{x},{y}" for i, (x, y) in enumerate(points, start=1)]
    path.write_text("\n".join(rows) + "\n")
    return path


def write_pts(path: Path, points: np.ndarray) -> Path:
    """BIRL's ``.pts``: ``point``, the count, then ``x y`` lines."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["point", str(len(points))] + [f"{x} {y}" for x, y in points]
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass
class AnhirTruth:
    root: Path
    table: Path
    # row -> (target points, source points) at the table's scale (25 %); target None if hidden
    points: dict[int, tuple[np.ndarray | None, np.ndarray]] = field(default_factory=dict)
    shapes: dict[int, tuple[tuple[int, int], tuple[int, int]]] = field(default_factory=dict)


# (set, target name, source name, target (H, W), source (H, W), status, suffix)
ANHIR_ROWS = (
    ("lung-lesion_2", "29-041-Izd2-w35-He-les2", "29-041-Izd2-w35-Cc10-5-les2",
     (80, 100), (90, 70), "training", ".jpg"),
    ("COAD_07", "S1", "S2", (60, 80), (60, 80), "training", ".png"),
    ("COAD_07", "S3", "S4", (70, 60), (60, 90), "evaluation", ".png"),
)


def anhir_points(row: int, shape: tuple[int, int]) -> np.ndarray:
    """Landmarks at the 25 % scale, multiples of 0.2 px apart from the grid (exact at 5 %)."""
    rng = np.random.default_rng(100 + row)
    h, w = shape
    return np.column_stack([rng.integers(10, w - 10, 6), rng.integers(10, h - 10, 6)]) * 1.0


def make_anhir(root: Path) -> AnhirTruth:
    """An ANHIR tree at scale-25pc and scale-5pc, and its cover ``dataset_medium.csv``.

    The evaluation row names a target landmark file that does not exist (as released).
    """
    table = root / "dataset_medium.csv"
    truth = AnhirTruth(root, table)
    lines = [",".join(["", *COVER_COLUMNS, *ANHIR_EXTRA])]
    for row, (set_name, tname, sname, tshape, sshape, status, suffix) in enumerate(ANHIR_ROWS):
        tpts = anhir_points(row, tshape)
        spts = tpts + np.array([2.0, -3.0]) * (row + 1)
        for scale in (25, 5):
            ratio = scale / 25
            folder = root / set_name / f"scale-{scale}pc"
            for name, shape, pts in ((tname, tshape, tpts), (sname, sshape, spts)):
                small = (round(shape[0] * ratio), round(shape[1] * ratio))
                save(folder / f"{name}{suffix}", blob_image(small, pts[:2] * ratio, 4 * ratio))
                hidden = status == "evaluation" and name == tname
                if not hidden:
                    write_landmarks_csv(folder / f"{name}.csv", pts * ratio)
        truth.points[row] = (None if status == "evaluation" else tpts, spts)
        truth.shapes[row] = (tshape, sshape)
        rel = f"{set_name}/scale-25pc"
        diag = np.hypot(*tshape)
        lines.append(",".join([str(row), f"{rel}/{tname}{suffix}", f"{rel}/{sname}{suffix}",
                               f"{rel}/{tname}.csv", f"{rel}/{sname}.csv", status,
                               f'"{tshape}"', f"{diag:.1f}", "", "", ""]))
    table.write_text("\n".join(lines) + "\n")
    return truth


# ----------------------------------------------------------------------------------- cover


def make_cover(root: Path) -> tuple[Path, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """A generic cover table (no index column) with ``.pts`` and plain-text landmarks, images
    of different sizes, in a user's own folder names."""
    truth = {}
    lines = [",".join(COVER_COLUMNS)]
    specs = (("000", (50, 64), (64, 50), ".pts"), ("001", (40, 40), (48, 56), ".txt"))
    for pair_id, fshape, mshape, suffix in specs:
        f = np.array([[10.0, 12.0], [30.5, 20.25], [20.0, 30.0], [15.0, 35.0]])
        m = f + np.array([6.0, 8.0]) if pair_id == "000" else f * 1.1
        save(root / "imgs" / f"{pair_id}_fixed.png", blob_image(fshape, f[:2]))
        save(root / "imgs" / f"{pair_id}_moving.png", blob_image(mshape, m[:2]))
        if suffix == ".pts":
            write_pts(root / "pts" / f"{pair_id}_fixed.pts", f)
            write_pts(root / "pts" / f"{pair_id}_moving.pts", m)
        else:
            for name, pts in (("fixed", f), ("moving", m)):
                path = root / "pts" / f"{pair_id}_{name}.txt"
                path.write_text("\n".join(f"{x} {y}" for x, y in pts) + "\n")
        lines.append(",".join([f"imgs/{pair_id}_fixed.png", f"imgs/{pair_id}_moving.png",
                               f"pts/{pair_id}_fixed{suffix}", f"pts/{pair_id}_moving{suffix}"]))
        truth[pair_id] = (f, m)
    table = root / "my_cover.csv"
    table.write_text("\n".join(lines) + "\n")
    return table, truth


def write_table(path: Path, rows) -> Path:
    """A cover table of ``(target image, source image)`` rows (paths relative to the table's
    folder) without landmarks: pairs that are registered, not scored."""
    lines = [",".join(COVER_COLUMNS)] + [f"{target},{source},," for target, source in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


# ----------------------------------------------------------------------------------- NIfTI


@dataclass
class NiftiTruth:
    root: Path
    manifest: Path
    fixed_voxels: np.ndarray  # (K, 3) i j k
    moving_voxels: np.ndarray
    bright: tuple[int, int, int]  # (i, j, k) of the brightest voxel of the fixed volume


def make_nifti(root: Path, shape=(20, 24, 5), gz: bool = True) -> NiftiTruth:
    """A fixed (T1-like) and a moving (T2-like, inverted contrast) volume, voxel landmarks, and
    a manifest; the fixed volume has one voxel brighter than all others at ``bright``."""
    import nibabel as nib

    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    base = rng.uniform(100, 200, size=shape).astype(np.float32)
    bright = (5, 7, 2)
    fixed = base.copy()
    fixed[bright] = 1000.0
    moving = (400 - base).astype(np.float32)
    affine = np.diag([0.9, 1.1, 3.0, 1.0])
    ext = ".nii.gz" if gz else ".nii"
    for name, vol in (("t1", fixed), ("t2", moving)):
        nib.save(nib.Nifti1Image(vol, affine), str(root / f"{name}{ext}"))
    mask = np.zeros(shape, np.uint8)
    mask[2:18, 3:20] = 1
    nib.save(nib.Nifti1Image(mask, affine), str(root / f"mask{ext}"))
    fv = np.array([[3.0, 4.0, 2.0], [10.0, 15.0, 2.2], [12.0, 6.0, 4.0], [16.0, 20.0, 1.8]])
    mv = fv + np.array([1.0, -2.0, 0.0])
    np.savetxt(root / "t1_points.txt", fv)
    np.savetxt(root / "t2_points.txt", mv)
    manifest = root / "manifest.csv"
    manifest.write_text("id,fixed,moving,fixed_landmarks,moving_landmarks,fixed_mask\n"
                        f"subject-01,t1{ext},t2{ext},t1_points.txt,t2_points.txt,mask{ext}\n")
    return NiftiTruth(root, manifest, fv, mv, bright)


def oblique_affine(spacing, angles_deg, origin) -> np.ndarray:
    """A 4x4 voxel -> RAS+ affine: rotation (about x, then y, then z, degrees) times the voxel
    sizes, as a scanner writes an oblique, anisotropic acquisition."""
    from scipy.spatial.transform import Rotation

    affine = np.eye(4)
    affine[:3, :3] = (Rotation.from_euler("xyz", angles_deg, degrees=True).as_matrix()
                      @ np.diag(spacing))
    affine[:3, 3] = origin
    return affine


@dataclass
class NiftiVolumes:
    root: Path
    fixed_affine: np.ndarray
    moving_affine: np.ndarray
    fixed_data: np.ndarray  # nibabel (i, j, k)
    fixed_voxels: np.ndarray  # (K, 3) i j k
    moving_voxels: np.ndarray
    true_transform: np.ndarray  # fixed voxel -> moving voxel, 4x4
    bright: tuple[int, int, int]  # (i, j, k) of the brightest voxel of the fixed volume


def make_nifti_volumes(root: Path, shape=(18, 22, 9)) -> NiftiVolumes:
    """A fixed and a moving volume on two different oblique, anisotropic grids, a mask on the
    fixed grid, and landmarks in voxels (``*_vox.csv``, header ``x,y,z``) and in RAS+ mm
    (``*_mm.csv``, header ``label,x,y,z``), with a manifest for each space (``voxel.csv``,
    ``world.csv``). Moving landmarks are the fixed ones under a known voxel transform."""
    import nibabel as nib

    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(21)
    fixed_affine = oblique_affine([0.8, 1.1, 2.7], [12.0, -20.0, 35.0], [-40.0, 25.0, 10.0])
    moving_affine = oblique_affine([1.0, 0.9, 2.5], [-5.0, 8.0, 20.0], [-35.0, 20.0, 14.0])
    data = rng.uniform(100, 200, size=shape).astype(np.float32)
    bright = (4, 15, 6)
    data[bright] = 1000.0
    nib.save(nib.Nifti1Image(data, fixed_affine), str(root / "t1.nii.gz"))
    nib.save(nib.Nifti1Image((400 - data).astype(np.float32), moving_affine),
             str(root / "t2.nii.gz"))
    mask = np.zeros(shape, np.uint8)
    mask[2:16, 3:20, 1:8] = 1
    nib.save(nib.Nifti1Image(mask, fixed_affine), str(root / "mask.nii.gz"))
    # The header stores the affine in float32: the truth is what nibabel reads back.
    fixed_affine = nib.load(str(root / "t1.nii.gz")).affine
    moving_affine = nib.load(str(root / "t2.nii.gz")).affine
    true = np.eye(4)
    true[:3, :3] += rng.normal(0, 0.02, (3, 3))
    true[:3, 3] = [0.6, -1.2, 0.4]
    fv = rng.uniform(3, [shape[0] - 4, shape[1] - 4, shape[2] - 3], size=(7, 3))
    mv = fv @ true[:3, :3].T + true[:3, 3]
    for name, voxels, affine in (("t1", fv, fixed_affine), ("t2", mv, moving_affine)):
        world = voxels @ affine[:3, :3].T + affine[:3, 3]
        np.savetxt(root / f"{name}_vox.csv", voxels, delimiter=",", header="x,y,z",
                   comments="", fmt="%.17g")
        labelled = np.column_stack([np.arange(1, len(world) + 1), world])
        np.savetxt(root / f"{name}_mm.csv", labelled, delimiter=",", header="label,x,y,z",
                   comments="", fmt="%.17g")
    for space, suffix in (("voxel", "vox"), ("world", "mm")):
        (root / f"{space}.csv").write_text(
            "id,fixed,moving,fixed_landmarks,moving_landmarks,fixed_mask\n"
            f"s1,t1.nii.gz,t2.nii.gz,t1_{suffix}.csv,t2_{suffix}.csv,mask.nii.gz\n")
    return NiftiVolumes(root, fixed_affine, moving_affine, data, fv, mv, true, bright)


# ------------------------------------------------------------------------------ the CLI


def invoke(*args: str):
    """Run ``mibench ARGS`` in-process; returns click's Result (stdout and stderr apart)."""
    from click.testing import CliRunner

    from mibench.cli import cli

    return CliRunner().invoke(cli, [str(a) for a in args])


def run_identity(out: Path, dataset: str, data_dir: Path, *options: str):
    """``mibench run --dataset D --methods identity --workers 0`` with ``-o`` options; returns
    ``(result, {pair_id: record})``."""
    from mibench.records import iter_records

    args = ["run", "--dataset", dataset, "--data-dir", data_dir, "--methods", "identity",
            "--workers", "0", "--out", out, "-q"]
    for option in options:
        args += ["-o", option]
    result = invoke(*args)
    assert result.exit_code == 0, (result.output, result.exception)
    return result, {r.task.pair_id: r for r in iter_records(out)}


def expect_error(dataset, data_dir, *options, match):
    """``mibench run`` must stop with exit status 2 and one line ``mibench: error: ...``
    matching ``match``, no traceback, before any run directory is made."""
    args = ["run", "--dataset", dataset, "--data-dir", data_dir, "--methods", "identity",
            "--workers", "0", "-q", "--out", data_dir.parent / "run"]
    for option in options:
        args += ["-o", option]
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output, result.stderr
    assert lines[0].startswith("mibench: error: ")
    assert re.search(match, lines[0]), lines[0]
    assert not (data_dir.parent / "run").exists()  # refused before anything ran
