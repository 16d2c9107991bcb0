"""NIfTI slices from a CSV manifest, through ``mibench run --dataset nifti``."""

import nibabel as nib
import numpy as np
import pytest
from helpers.datasets import expect_error, make_nifti, run_identity

import mibench
from mibench.errors import UserError
from mibench.pairs import check_pair


def test_run_projects_voxel_landmarks_onto_the_slice(tmp_path):
    """Landmarks are voxels (i, j, k); slice k = 2 keeps those with |k - 2| <= 0.5 (3 of 4) as
    pixels (x, y) = (j, i). The moving ones are shifted by (di, dj) = (1, -2): identity error
    sqrt(5) voxels each."""
    truth = make_nifti(tmp_path / "data")
    _, records = run_identity(tmp_path / "run", "nifti", truth.root, "mode=slice",
                              "index=2")
    rec = records["subject-01"]
    assert rec.status == "ok" and rec.scored
    np.testing.assert_allclose(rec.landmark_errors, [np.sqrt(5.0)] * 3, rtol=1e-12)
    assert rec.meta == {"spacing_x": pytest.approx(1.1), "spacing_y": pytest.approx(0.9),
                        "slice": 2}
    assert rec.metrics["naed"] == pytest.approx(np.sqrt(5.0) / np.hypot(24, 20))


@pytest.mark.parametrize("gz", [True, False])
def test_voxel_to_pixel_convention_and_mask(tmp_path, gz):
    truth = make_nifti(tmp_path, gz=gz)
    pair = mibench.dataset("nifti", str(tmp_path), mode="slice", index=2).load("subject-01")
    i, j, k = truth.bright
    assert pair.fixed.shape == (20, 24)  # rows = voxel axis 0, columns = voxel axis 1
    assert np.unravel_index(pair.fixed.argmax(), pair.fixed.shape) == (i, j)  # pixel (x=j, y=i)
    on_slice = np.abs(truth.fixed_voxels[:, 2] - 2) <= 0.5
    np.testing.assert_allclose(pair.fixed_landmarks, truth.fixed_voxels[on_slice][:, [1, 0]])
    np.testing.assert_allclose(pair.moving_landmarks, truth.moving_voxels[on_slice][:, [1, 0]])
    expected_mask = np.zeros((20, 24), bool)
    expected_mask[2:18, 3:20] = True
    np.testing.assert_array_equal(pair.fixed_mask, expected_mask)
    assert pair.moving_mask is None
    # Intensities: the 0.5 / 99.5 percentiles of the slice map to 0 / 1.
    raw = np.asarray(nib.load(str(tmp_path / ("t1.nii.gz" if gz else "t1.nii"))).dataobj)[..., 2]
    lo, hi = np.percentile(raw, (0.5, 99.5))
    np.testing.assert_allclose(pair.fixed, np.clip((raw - lo) / (hi - lo), 0, 1), atol=1e-6)


def test_other_axis_middle_slice_and_pixel_landmarks(tmp_path):
    truth = make_nifti(tmp_path)
    np.savetxt(tmp_path / "xy_f.txt", [[2.0, 7.0], [1.0, 3.0]])
    np.savetxt(tmp_path / "xy_m.txt", [[2.5, 7.0], [1.0, 4.0]])
    (tmp_path / "axis0.csv").write_text("fixed,moving,fixed_landmarks,moving_landmarks\n"
                                        "t1.nii.gz,t2.nii.gz,xy_f.txt,xy_m.txt\n")
    ds = mibench.dataset("nifti", str(tmp_path), manifest="axis0.csv", mode="slice", axis=0,
                         index=-1)
    assert [p.id for p in ds.pairs()] == ["000"]
    pair = ds.load("000")
    assert pair.meta["slice"] == 10  # middle of 20 along axis 0
    assert pair.fixed.shape == (24, 5)  # rows = voxel axis 1 (j), columns = voxel axis 2 (k)
    np.testing.assert_allclose(pair.fixed_landmarks, [[2.0, 7.0], [1.0, 3.0]])
    at = mibench.dataset("nifti", str(tmp_path), manifest="axis0.csv", mode="slice", axis=0,
                         index=truth.bright[0]).load("000")
    i, j, k = truth.bright
    assert np.unravel_index(at.fixed.argmax(), at.fixed.shape) == (j, k)  # pixel (x=k, y=j)


def test_duplicate_ids_are_refused_with_their_lines(tmp_path):
    """Ids key the pairs and the records: a repeated one used to drop a pair silently. An empty
    id cell becomes the row number, which counts as a repeat of the same explicit id."""
    make_nifti(tmp_path / "data")
    (tmp_path / "data" / "manifest.csv").write_text(
        "id,fixed,moving\n"
        "s1,t1.nii.gz,t2.nii.gz\n"
        "\n"  # a blank line is skipped, but still counts for the line numbers
        ",t2.nii.gz,t2.nii.gz\n"  # row 1: id 001
        "s1,t2.nii.gz,t1.nii.gz\n"
        "001,t1.nii.gz,t1.nii.gz\n")
    expect_error("nifti", tmp_path / "data",
                 match=r"data/manifest\.csv: duplicate pair id\(s\): 's1' on lines 2, 5; '001' "
                       r"on lines 4, 6; each row needs its own id")


def test_blank_lines_keep_row_numbers_as_ids(tmp_path):
    make_nifti(tmp_path)
    (tmp_path / "plain.csv").write_text("fixed,moving\n\nt1.nii.gz,t2.nii.gz\n\n"
                                        "t2.nii.gz,t1.nii.gz\n\n")
    ds = mibench.dataset("nifti", str(tmp_path), manifest="plain.csv")
    assert [p.id for p in ds.pairs()] == ["000", "001"]


@pytest.mark.parametrize("slab", ["-1", "-0.5", "nan", "inf"])
def test_negative_nan_or_infinite_slab_is_refused(tmp_path, slab):
    make_nifti(tmp_path / "data")
    expect_error("nifti", tmp_path / "data", f"slab={slab}",
                 match=rf"dataset 'nifti': option 'slab' must be >= 0, got {float(slab)!r}$")


def test_slab_zero_keeps_the_landmarks_exactly_on_the_slice(tmp_path):
    truth = make_nifti(tmp_path)
    pair = mibench.dataset("nifti", str(tmp_path), mode="slice", index=2,
                           slab=0).load("subject-01")
    on_slice = truth.fixed_voxels[:, 2] == 2
    np.testing.assert_allclose(pair.fixed_landmarks, truth.fixed_voxels[on_slice][:, [1, 0]])


def test_folders_where_files_are_expected(tmp_path):
    make_nifti(tmp_path / "data")
    (tmp_path / "data" / "t2.nii.gz").unlink()
    (tmp_path / "data" / "t2.nii.gz").mkdir()
    expect_error("nifti", tmp_path / "data",
                 match=r"data/t2\.nii\.gz: moving volume path is a folder, not a file")
    (tmp_path / "data" / "sub").mkdir()
    with pytest.raises(UserError, match=r"^dataset 'nifti': \S*sub: NIfTI manifest path is a "
                                        r"folder, not a file \(-o manifest=PATH\)"):
        mibench.dataset("nifti", str(tmp_path / "data"), manifest="sub")
    from mibench.datasets.nifti import load_dataset  # the plugin itself: a ValueError

    with pytest.raises(ValueError, match=r"sub: NIfTI manifest path is a folder"):
        load_dataset(tmp_path / "data", manifest="sub")


def test_manifest_without_its_columns(tmp_path):
    make_nifti(tmp_path / "data")
    (tmp_path / "data" / "manifest.csv").write_text("id,fixed,moving_image\n"
                                                    "s1,t1.nii.gz,t2.nii.gz\n")
    expect_error("nifti", tmp_path / "data",
                 match=r"data/manifest\.csv: not a NIfTI manifest: missing column\(s\) 'moving' "
                       r"\(expected fixed, moving and optionally fixed_landmarks, ")


def test_fixed_only_voxel_landmarks_are_projected_onto_the_slice(tmp_path):
    """A manifest with fixed voxel landmarks (i j k) and no moving ones: the pair is registered,
    not scored, and its fixed landmarks follow the documented projection, worked out by hand:
    rows with |k - 2| <= 0.5 kept, pixel (x, y) = (j, i). They used to stay (K, 3), so every
    task of the pair failed the pair contract."""
    make_nifti(tmp_path)  # fixed_voxels: (3, 4, 2), (10, 15, 2.2), (12, 6, 4), (16, 20, 1.8)
    (tmp_path / "fixed_only.csv").write_text("fixed,moving,fixed_landmarks\n"
                                             "t1.nii.gz,t2.nii.gz,t1_points.txt\n")
    ds = mibench.dataset("nifti", str(tmp_path), manifest="fixed_only.csv", mode="slice",
                         index=2)
    pair = check_pair(ds.load("000"), "000")
    expected = [[4.0, 3.0], [15.0, 10.0], [20.0, 16.0]]  # rows 0, 1, 3 of fixed_voxels as (j, i)
    np.testing.assert_allclose(pair.fixed_landmarks, expected)
    assert pair.moving_landmarks is None

