"""Bad dataset files and options: each gives one line naming the file (or option) and the
problem, exit status 2, and no traceback, from ``mibench run``; the datasets themselves raise
``ValueError``, which the harness reports as ``dataset 'NAME': ...``."""

import shutil

import numpy as np
import pytest
from helpers.datasets import expect_error, invoke, make_anhir, make_cover, make_fire, make_nifti

import mibench


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    root = tmp_path_factory.mktemp("pristine")
    make_fire(root / "fire", ids=("S01", "P02"))
    make_cover(root / "cover")
    make_anhir(root / "anhir")
    make_nifti(root / "nifti")
    return root


def copy(pristine, tmp_path, name):
    return shutil.copytree(pristine / name, tmp_path / name)


def test_missing_data_directory(tmp_path):
    expect_error("fire", tmp_path / "nowhere", match=r"nowhere: data directory does not exist")


def test_fire_wrong_layout(tmp_path):
    (tmp_path / "notfire" / "images").mkdir(parents=True)
    expect_error("fire", tmp_path / "notfire",
                 match=r"notfire: not a FIRE directory: expected the folders 'Images/' and "
                       r"'Ground Truth/' \(found: images/\)")


def test_fire_truncated_and_unreadable_images(pristine, tmp_path):
    data = copy(pristine, tmp_path, "fire")
    image = data / "Images" / "S01_1.jpg"
    image.write_bytes(image.read_bytes()[:-100])
    expect_error("fire", data, match=r"^mibench: error: dataset 'fire': \S*Images/S01_1\.jpg: "
                                     r"truncated JPEG image")
    shutil.copy(pristine / "fire" / "Images" / "S01_1.jpg", image)
    (data / "Images" / "P02_2.jpg").write_bytes(b"\x00" * 500)
    expect_error("fire", data, match=r"Images/P02_2\.jpg: cannot read FIRE test image")
    (data / "Images" / "P02_2.jpg").unlink()
    expect_error("fire", data, match=r"Images/P02_2\.jpg: FIRE test image file not found")


def test_fire_ground_truth_with_wrong_columns(pristine, tmp_path):
    data = copy(pristine, tmp_path, "fire")
    gt = data / "Ground Truth" / "control_points_P02_1_2.txt"
    lines = gt.read_text().splitlines()
    lines[3] = " ".join(lines[3].split()[:3])
    gt.write_text("\n".join(lines) + "\n")
    expect_error("fire", data, match=r"control_points_P02_1_2\.txt: line 4: expected 4 numbers "
                                     r"per line \(x_ref y_ref x_test y_test\), got 3")


def test_fire_missing_mask(pristine, tmp_path):
    data = copy(pristine, tmp_path, "fire")
    (data / "Masks" / "mask.png").unlink()
    expect_error("fire", data, match=r"Masks/mask\.png: FIRE fov mask file not found")


def _edit_table(table, old, new):
    table.write_text(table.read_text().replace(old, new, 1))


def test_cover_problems(pristine, tmp_path):
    data = copy(pristine, tmp_path, "cover")
    table = data / "my_cover.csv"
    expect_error("cover", data, match=r"needs its cover table: -o table=PATH")
    expect_error("cover", data, "table=other.csv", match=r"other\.csv: cover table not found")
    _edit_table(table, "imgs/000_fixed.png", "../outside.png")
    expect_error("cover", data, "table=my_cover.csv",
                 match=r"my_cover\.csv, row 0: path '../outside\.png' escapes the data directory")
    shutil.copy(pristine / "cover" / "my_cover.csv", table)
    (data / "pts" / "001_moving.txt").unlink()
    expect_error("cover", data, "table=my_cover.csv",
                 match=r"pts/001_moving\.txt: landmark file not found")
    _edit_table(table, "Source landmarks", "Moving points")
    expect_error("cover", data, "table=my_cover.csv",
                 match=r"my_cover\.csv: not a cover table: missing column\(s\) 'Source landmarks'")


def test_anhir_problems(pristine, tmp_path):
    data = copy(pristine, tmp_path, "anhir")
    expect_error("anhir", data, "table=dataset_small.csv",
                 match=r"dataset_small\.csv: cover table not found")
    lnd = data / "COAD_07" / "scale-25pc" / "S1.csv"
    lnd.write_text(",X,Y,Z\n1,2,3,4\n")
    expect_error("anhir", data, match=r"S1\.csv: expected 2 coordinate columns \(x y\), got 3")
    # The target landmarks of a training pair may not be missing (only evaluation ones may).
    lnd.unlink()
    expect_error("anhir", data, match=r"S1\.csv: landmark file not found")
    expect_error("anhir", data, "scale=10", "status=evaluation",
                 match=r"scale-10pc/S3\.png: target image file not found")


def test_nifti_problems(pristine, tmp_path):
    data = copy(pristine, tmp_path, "nifti")
    volume = data / "t2.nii.gz"
    volume.write_bytes(volume.read_bytes()[:-200])
    expect_error("nifti", data, match=r"t2\.nii\.gz: truncated or corrupt NIfTI file")
    volume.write_bytes(b"not a volume at all")
    expect_error("nifti", data, match=r"t2\.nii\.gz: cannot read moving volume as NIfTI")
    volume.unlink()
    expect_error("nifti", data, match=r"t2\.nii\.gz: moving volume file not found")
    shutil.copy(pristine / "nifti" / "t2.nii.gz", volume)
    expect_error("nifti", data, "mode=slice", "index=9",
                 match=r"t1\.nii\.gz: slice index 9 is out of range")
    expect_error("nifti", data, "mode=slice", "index=3",
                 match=r"row 0: no fixed landmark lies within 0\.5 voxels of slice 3")


def test_unequal_landmark_counts_use_the_common_prefix_and_warn(pristine, tmp_path):
    data = copy(pristine, tmp_path, "cover")
    moving = data / "pts" / "001_moving.txt"
    moving.write_text(moving.read_text() + "1 2\n5 6\n")
    with pytest.warns(UserWarning, match=r"pair 001: 4 fixed and 6 moving landmarks; using the "
                                         r"first 4"):
        ds = mibench.dataset("cover", str(data), table="my_cover.csv")
    pair = ds.load("001")
    assert len(pair.fixed_landmarks) == len(pair.moving_landmarks) == 4
    np.testing.assert_allclose(pair.moving_landmarks, pair.fixed_landmarks * 1.1)
    assert any("using the first 4" in note for note in ds.notes)


def test_the_cli_prints_that_warning_as_one_line(pristine, tmp_path):
    import subprocess
    import sys

    data = copy(pristine, tmp_path, "cover")
    moving = data / "pts" / "001_moving.txt"
    moving.write_text(moving.read_text() + "1 2\n")
    result = subprocess.run(
        [sys.executable, "-c", "from mibench.cli import main; main()", "run", "--dataset",
         "cover", "--data-dir", str(data), "-o", "table=my_cover.csv", "--methods", "identity",
         "--workers", "0", "-q", "--out", str(tmp_path / "run")],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    warned = [line for line in result.stderr.splitlines() if "using the first 4" in line]
    assert warned and all(line.startswith("warning: ") and "pair 001" in line for line in warned)
    assert not any(line.lstrip().startswith("warnings.warn(") for line in
                   result.stderr.splitlines())


def test_cover_row_naming_a_folder(pristine, tmp_path):
    data = copy(pristine, tmp_path, "cover")
    _edit_table(data / "my_cover.csv", "imgs/001_moving.png", "imgs")
    expect_error("cover", data, "table=my_cover.csv",
                 match=r"cover/imgs: source image path is a folder, not a file; get it: your own")
    (data / "tables").mkdir()
    expect_error("cover", data, "table=tables",
                 match=r"cover/tables: cover table path is a folder, not a file")


@pytest.mark.parametrize("dataset", ["fire", "anhir", "cover", "nifti"])
def test_data_dir_that_is_a_file(pristine, tmp_path, dataset):
    """From the command line and from a factory called directly (which used to look for a
    table "inside" the file, or fail with an OSError)."""
    import importlib

    (tmp_path / "data.zip").write_bytes(b"PK")
    # From the command line the message ends with where to get the data (the spec's source).
    expect_error(dataset, tmp_path / "data.zip",
                 match=r"data\.zip: data directory is a file, not a directory; get it: \S")
    factory = importlib.import_module(f"mibench.datasets.{dataset}").load_dataset
    with pytest.raises(ValueError, match=r"data\.zip: data directory is a file, not a directory$"):
        factory(tmp_path / "data.zip")


@pytest.mark.parametrize("dataset, option, message", [
    ("fire", "scale=0", r"option 'scale' must be in \(0, 1\], got 0\.0"),
    ("fire", "scale=1.5", r"option 'scale' must be in \(0, 1\], got 1\.5"),
    ("fire", "channels=red", r"option 'channels' must be one of green, grey, rgb; got 'red'"),
    ("fire", "categories=S,X", r"option 'categories' takes a comma list of S, P, A; got 'S,X'"),
    ("cover", "working_scale=0", r"option 'working_scale' must be in \(0, 1\], got 0\.0"),
    ("cover", "scale=-5", r"option 'scale' must be >= 0, got -5"),
    ("anhir", "working_scale=nan", r"option 'working_scale' must be in \(0, 1\], got nan"),
    ("anhir", "status=test", r"option 'status' must be one of all, training, evaluation"),
    ("nifti", "axis=3", r"option 'axis' must be one of 0, 1, 2; got 3"),
    ("nifti", "index=-2", r"option 'index' must be >= -1, got -2"),
])
def test_options_out_of_their_bounds(pristine, tmp_path, dataset, option, message):
    """Bounds and choices are declared in the specs and checked before the dataset reads a
    file; a comma list (FIRE's categories) is checked by the dataset. Each is one line naming
    the dataset."""
    data = copy(pristine, tmp_path, dataset)
    table = ["table=my_cover.csv"] if dataset == "cover" else []
    expect_error(dataset, data, *table, option, match=rf"^mibench: error: dataset '{dataset}': "
                                                      rf"{message}")


def test_a_missing_dataset_says_where_to_get_it(tmp_path):
    """No --data-dir, a directory that does not exist, or one without the dataset: the one line
    ends with the dataset's source (issue 20)."""
    from mibench.registry import Registry

    source = Registry().get("dataset", "fire").source
    for args in ([], ["--data-dir", str(tmp_path / "nowhere")], ["--data-dir", str(tmp_path)]):
        result = invoke("run", "-d", "fire", "-m", "identity", *args)
        assert result.exit_code == 2
        assert result.stderr.strip().endswith(f"; get it: {source}"), result.stderr
