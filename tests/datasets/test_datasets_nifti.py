"""NIfTI volumes (whole, with their affine) and slices from a CSV manifest, through ``mibench
run --dataset nifti``."""

import nibabel as nib
import numpy as np
import pytest
from helpers.datasets import (
    expect_error,
    invoke,
    make_nifti,
    make_nifti_volumes,
    run_identity,
)
from nibabel.affines import apply_affine

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



# ------------------------------------------------------------------------- whole volumes


def _percentile_rescale(data):
    lo, hi = np.percentile(data, (0.5, 99.5))
    return np.clip((data - lo) / (hi - lo), 0, 1)


def test_whole_volume_with_an_oblique_anisotropic_affine(tmp_path):
    """The default mode: numpy (D, H, W) = nibabel (k, j, i), the NIfTI affine as the pair's
    geometry, so that mibench's world coordinates of voxel (x, y, z) = (i, j, k) are nibabel's
    apply_affine of (i, j, k); the mask on the same grid; voxel landmarks as they are."""
    truth = make_nifti_volumes(tmp_path, shape=(18, 22, 9))
    pair = check_pair(mibench.dataset("nifti", str(tmp_path), manifest="voxel.csv").load("s1"),
                      "s1")
    assert pair.ndim == 3 and pair.fixed.shape == (9, 22, 18) and pair.fixed.dtype == np.float32
    np.testing.assert_allclose(pair.fixed, _percentile_rescale(truth.fixed_data).T, atol=1e-6)
    i, j, k = truth.bright  # the one voxel at 1000: far above the 99.5th percentile
    assert pair.fixed[k, j, i] == 1.0 and pair.fixed[i, j, k] < 1.0
    rng = np.random.default_rng(0)
    voxels = rng.uniform(-0.5, 8.5, (20, 3)) * [2.0, 2.4, 1.0]
    for geometry, affine in ((pair.fixed_geometry, truth.fixed_affine),
                             (pair.moving_geometry, truth.moving_affine)):
        assert geometry.unit == "mm"
        np.testing.assert_allclose(geometry.voxel_to_world(voxels), apply_affine(affine, voxels),
                                   rtol=0, atol=1e-9)
    np.testing.assert_allclose(pair.fixed_geometry.spacing, [0.8, 1.1, 2.7], rtol=1e-6)
    assert pair.meta == {"spacing_x": pytest.approx(0.8), "spacing_y": pytest.approx(1.1),
                         "spacing_z": pytest.approx(2.7)}
    expected_mask = np.zeros((18, 22, 9), bool)
    expected_mask[2:16, 3:20, 1:8] = True
    np.testing.assert_array_equal(pair.fixed_mask, expected_mask.T)
    assert pair.moving_mask is None
    np.testing.assert_allclose(pair.fixed_landmarks, truth.fixed_voxels, rtol=1e-15)
    np.testing.assert_allclose(pair.moving_landmarks, truth.moving_voxels, rtol=1e-15)


def test_world_and_voxel_landmarks_give_the_same_points_and_tre(tmp_path):
    """The same landmarks written in voxels and in RAS+ mm (each through its own image's
    affine, with an extra label column) load as the same voxels and score the same TRE, in
    mm and in voxels; mm errors are world distances on the fixed grid."""
    from mibench.registration import RegistrationTask, score_record
    from mibench.transform import MatrixTransform

    truth = make_nifti_volumes(tmp_path)
    by_voxel = mibench.dataset("nifti", str(tmp_path), manifest="voxel.csv").load("s1")
    by_world = mibench.dataset("nifti", str(tmp_path), manifest="world.csv",
                               landmarks_space="world").load("s1")
    np.testing.assert_allclose(by_world.fixed_landmarks, by_voxel.fixed_landmarks, atol=1e-9)
    np.testing.assert_allclose(by_world.moving_landmarks, by_voxel.moving_landmarks, atol=1e-9)
    task = RegistrationTask("identity", {}, "nifti", {}, "s1", 0)
    off = truth.true_transform.copy()
    off[:3, 3] += [0.5, 0.0, -1.0]  # a result off the truth: non-zero errors
    records = [score_record(task, p, MatrixTransform(off), error=None, naed_norm="diagonal")
               for p in (by_voxel, by_world)]
    assert records[0].unit == records[1].unit == "mm"
    np.testing.assert_allclose(records[0].landmark_errors, records[1].landmark_errors,
                               rtol=1e-9)
    assert records[0].metrics == pytest.approx(records[1].metrics, rel=1e-9)
    assert records[0].voxel_metrics == pytest.approx(records[1].voxel_metrics, rel=1e-9)
    back = apply_affine(np.linalg.inv(off), truth.moving_voxels)
    mm = np.linalg.norm(apply_affine(truth.fixed_affine, back)
                        - apply_affine(truth.fixed_affine, truth.fixed_voxels), axis=1)
    np.testing.assert_allclose(records[0].landmark_errors, mm, rtol=1e-9)
    assert records[0].metrics["tre_mean"] > 1.0


#: The built-in identity as a plugin method that declares volumes (a third party's 3-D method
#: goes through the same run path), so that this test does not depend on the built-in specs.
IDENTITY_3D = """
    @hookimpl
    def mibench_methods():
        return [MethodSpec("identity-3d", "identity for volumes",
                           "mibench.methods.identity:register", needs_content=False,
                           uses_seed=False, dims=(2, 3))]
    """


def test_run_scores_a_volume_pair_in_mm(tmp_path, write_plugin):
    """``mibench run --dataset nifti`` on whole volumes on two grids: the identity method
    returns the world identity, so its errors are the distances between the world points of
    the moving and the fixed landmarks, in mm, and the same offsets on the fixed grid in
    voxels."""
    from mibench.records import iter_records

    truth = make_nifti_volumes(tmp_path / "data")
    plugin = write_plugin("identity_3d", IDENTITY_3D)
    result = invoke("run", "--dataset", "nifti", "--data-dir", truth.root, "-o",
                    "manifest=world.csv", "-o", "landmarks_space=world", "--methods",
                    "identity-3d", "--plugin", plugin, "--workers", "0", "--out",
                    tmp_path / "run", "-q")
    assert result.exit_code == 0, (result.output, result.exception)
    (rec,) = iter_records(tmp_path / "run")
    assert rec.status == "ok", rec.error
    assert rec.scored and rec.unit == "mm"
    world_m = apply_affine(truth.moving_affine, truth.moving_voxels)
    world_f = apply_affine(truth.fixed_affine, truth.fixed_voxels)
    np.testing.assert_allclose(rec.landmark_errors, np.linalg.norm(world_m - world_f, axis=1),
                               rtol=1e-9)
    np.testing.assert_allclose(rec.landmark_errors, rec.initial_errors, rtol=1e-9)
    corner = apply_affine(truth.fixed_affine, [[0, 0, 0], [18, 22, 9]])
    assert rec.norm_length == pytest.approx(np.linalg.norm(corner[1] - corner[0]), rel=1e-9)
    in_fixed = apply_affine(np.linalg.inv(truth.fixed_affine), world_m)
    voxel = np.linalg.norm(in_fixed - truth.fixed_voxels, axis=1)
    assert rec.voxel_metrics["tre_mean"] == pytest.approx(voxel.mean(), rel=1e-9)
    assert rec.voxel_metrics["naed"] == pytest.approx(
        voxel.mean() / np.sqrt(18**2 + 22**2 + 9**2), rel=1e-9)


def test_volume_mode_problems_are_one_line_naming_the_file(tmp_path):
    import nibabel as nib

    truth = make_nifti_volumes(tmp_path / "data")
    data = truth.root
    # World mm read as voxels: outside the volume, and the message says which option to use.
    expect_error("nifti", data, "manifest=world.csv",
                 match=r"t1_mm\.csv: landmark 1 \(of 7\) is at voxel \(.*\), outside the 18 x "
                       r"22 x 9 volume t1\.nii\.gz; a file of world mm needs -o "
                       r"landmarks_space=world;")
    expect_error("nifti", data, "manifest=voxel.csv", "landmarks_space=world",
                 match=r"t1_vox\.csv: landmark \d+ \(of 7\) is at voxel .* outside the 18 x 22 "
                       r"x 9 volume t1\.nii\.gz; world files are RAS\+ mm")
    expect_error("nifti", data, "manifest=voxel.csv", "index=3",
                 match=r"option 'index' \(3\) picks a slice: add -o mode=slice")
    expect_error("nifti", data, "manifest=voxel.csv", "working_scale=0.5",
                 match=r"option 'working_scale' \(0\.5\) applies to mode=slice")
    # A mask on another grid.
    nib.save(nib.Nifti1Image(np.ones((18, 22, 9), np.uint8), truth.moving_affine),
             str(data / "mask.nii.gz"))
    expect_error("nifti", data, "manifest=voxel.csv",
                 match=r"mask\.nii\.gz: mask affine differs from the volume's \(t1\.nii\.gz\)")
    # 2-column landmarks for a volume; a 2-D image against a volume.
    np.savetxt(data / "xy.txt", [[1.0, 2.0]])
    (data / "xy.csv").write_text("fixed,moving,fixed_landmarks,moving_landmarks\n"
                                 "t1.nii.gz,t2.nii.gz,xy.txt,xy.txt\n")
    expect_error("nifti", data, "manifest=xy.csv",
                 match=r"xy\.txt: expected 3 columns \(x y z\) for a volume, got 2")
    nib.save(nib.Nifti1Image(np.ones((18, 22), np.float32), np.eye(4)), str(data / "flat.nii"))
    (data / "mixed.csv").write_text("fixed,moving\nt1.nii.gz,flat.nii\n")
    expect_error("nifti", data, "manifest=mixed.csv",
                 match=r"mixed\.csv, row 0: fixed t1\.nii\.gz is a 3-D volume, moving flat\.nii "
                       r"a 2-D image: both must be volumes or both 2-D")
    (data / "flat.csv").write_text("fixed,moving,fixed_landmarks\nflat.nii,flat.nii,xy.txt\n")
    expect_error("nifti", data, "manifest=flat.csv", "landmarks_space=world",
                 match=r"xy\.txt: landmarks_space=world needs 3 columns \(x y z, RAS\+ mm\) for a "
                       r"3-D volume, got 2 columns for a 2-D image \(flat\.nii\)")


def test_slice_mode_takes_world_landmarks_through_the_affine(tmp_path):
    """mode=slice with landmarks_space=world: world mm -> voxels of each volume, then the
    usual projection onto the slice, exactly as voxel files give."""
    make_nifti_volumes(tmp_path)
    voxel = mibench.dataset("nifti", str(tmp_path), manifest="voxel.csv", mode="slice",
                            slab=10).load("s1")
    world = mibench.dataset("nifti", str(tmp_path), manifest="world.csv", mode="slice",
                            slab=10, landmarks_space="world").load("s1")
    assert voxel.fixed.shape == (18, 22) and voxel.fixed_geometry is None
    np.testing.assert_allclose(world.fixed_landmarks, voxel.fixed_landmarks, atol=1e-9)
    np.testing.assert_allclose(world.moving_landmarks, voxel.moving_landmarks, atol=1e-9)
