"""Export beside the records (``--save-transforms``, ``--save-warped``): the transform files read
back by SimpleITK map points as mibench does, and the warped images keep the fixed grid."""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from mibench import export
from mibench.geometry import Geometry
from mibench.pairs import Pair
from mibench.transform import MatrixTransform

sitk = pytest.importorskip("SimpleITK")
nib = pytest.importorskip("nibabel")

#: Oblique and anisotropic: fixed and moving differ in spacing, origin and direction.
GEO_F = Geometry.from_spacing((0.9, 1.3, 2.5), (-40.0, 12.0, 7.5),
                              Rotation.from_euler("xyz", [12, -7, 25], degrees=True).as_matrix())
GEO_M = Geometry.from_spacing((1.1, 0.8, 2.0), (-35.0, 20.0, -3.0),
                              Rotation.from_euler("zyx", [-9, 14, 4], degrees=True).as_matrix())
#: Fixed voxel -> moving voxel, a general affine.
T3 = np.array([[0.97, 0.06, -0.03, 1.5], [-0.05, 1.04, 0.02, -2.0],
               [0.04, -0.01, 0.95, 0.75], [0.0, 0.0, 0.0, 1.0]])
T2 = np.array([[1.04, -0.07, 3.5], [0.05, 0.97, -2.5], [0.0, 0.0, 1.0]])
SHAPE3 = (14, 17, 19)  # (D, H, W)


def ras_to_lps(points):
    """LPS = (-x, -y, z) of RAS, written out here as the independent reference."""
    out = np.array(points, dtype=np.float64)
    out[:, :2] *= -1
    return out


def smooth(shape, seed):
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    return gaussian_filter(rng.random(shape), 1.5).astype(np.float32)


def voxels(shape, k=12, seed=0):
    """``k`` random ``(x, y[, z])`` points inside a numpy ``shape``."""
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 1, (k, len(shape))) * (np.array(shape[::-1]) - 1)


def volume_pair(**kw):
    return Pair("vol", smooth(SHAPE3, 0), smooth((12, 15, 16), 1), fixed_geometry=GEO_F,
                moving_geometry=GEO_M, **kw)


def read_back(tmp_path, written):
    return sitk.ReadTransform(str(tmp_path / written["transform"]))


def test_volume_transform_file_maps_world_points_as_mibench(tmp_path):
    record = tmp_path / "vol.s0.json"
    written = export.write_task_outputs(record, volume_pair(), MatrixTransform(T3),
                                        transforms=True, warped=False)
    assert written == {"transform": "vol.s0.tfm"}
    tx = read_back(tmp_path, written)
    assert tx.GetName() == "AffineTransform" and tx.GetDimension() == 3
    p = voxels(SHAPE3)
    expected = GEO_M.voxel_to_world(MatrixTransform(T3).fixed_to_moving(p))
    got = ras_to_lps([tx.TransformPoint(q) for q in ras_to_lps(GEO_F.voxel_to_world(p))])
    np.testing.assert_allclose(got, expected, atol=1e-9)
    # No temporary file is left behind.
    assert sorted(f.name for f in tmp_path.iterdir()) == ["vol.s0.tfm"]


def test_transform_file_resamples_like_mibench_warp(tmp_path):
    """ITK's own resampling with the saved transform, the images placed by Geometry.to_itk()
    (ITK's reading of a NIfTI file's geometry), reproduces mibench's warp."""
    from mibench.methods.sitk import itk_image

    pair = volume_pair()
    written = export.write_task_outputs(tmp_path / "vol.json", pair, MatrixTransform(T3),
                                        transforms=True, warped=True)
    tx = read_back(tmp_path, written)
    reference = sitk.GetArrayFromImage(sitk.Resample(
        itk_image(pair.moving, GEO_M), itk_image(pair.fixed, GEO_F), tx, sitk.sitkLinear, 0.0))
    ours = MatrixTransform(T3).warp(pair.moving, SHAPE3)
    # Compare where the fixed voxel maps well inside the moving volume (the borders differ in
    # how each library pads).
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in SHAPE3], indexing="ij")[::-1], -1)
    q = MatrixTransform(T3).fixed_to_moving(grid.reshape(-1, 3)).reshape(*SHAPE3, 3)
    inside = ((q >= 0.5) & (q <= np.array(pair.moving.shape[::-1]) - 1.5)).all(-1)
    assert inside.sum() > 500
    np.testing.assert_allclose(reference[inside], ours[inside], atol=1e-5)


def test_warped_nifti_has_fixed_affine_and_matches_warp(tmp_path):
    pair = volume_pair()
    written = export.write_task_outputs(tmp_path / "vol.json", pair, MatrixTransform(T3),
                                        transforms=False, warped=True)
    assert written == {"warped": "vol.warped.nii.gz"}
    image = nib.load(tmp_path / written["warped"])
    np.testing.assert_allclose(image.affine, GEO_F.affine, atol=1e-6)
    data = np.asarray(image.dataobj)
    assert data.dtype == np.float32 and data.shape == SHAPE3[::-1]  # nibabel (i, j, k)
    np.testing.assert_array_equal(data.T, MatrixTransform(T3).warp(pair.moving, SHAPE3))
    assert image.header.get_xyzt_units()[0] == "mm"


def test_image_without_geometry_exports_pixel_coordinates(tmp_path):
    pair = Pair("img", smooth((30, 40), 2), smooth((35, 33), 3))
    written = export.write_task_outputs(tmp_path / "img.json", pair, MatrixTransform(T2),
                                        transforms=True, warped=True)
    assert written == {"transform": "img.tfm", "warped": "img.warped.png"}
    tx = read_back(tmp_path, written)
    p = voxels((30, 40))
    np.testing.assert_allclose([tx.TransformPoint(q) for q in p],
                               MatrixTransform(T2).fixed_to_moving(p), atol=1e-9)
    from PIL import Image

    png = np.asarray(Image.open(tmp_path / written["warped"]))
    assert png.dtype == np.uint8 and png.shape == (30, 40)
    expected = np.round(np.clip(MatrixTransform(T2).warp(pair.moving, (30, 40)), 0, 1) * 255)
    np.testing.assert_array_equal(png, expected.astype(np.uint8))


def test_image_with_geometry_exports_lps_physical_points(tmp_path):
    rot = np.deg2rad(20.0)
    geo_f = Geometry.from_spacing((0.5, 0.7), (100.0, -20.0), [[np.cos(rot), -np.sin(rot)],
                                                                [np.sin(rot), np.cos(rot)]], "um")
    geo_m = Geometry.from_spacing((0.6, 0.6), (90.0, -25.0), unit="um")
    pair = Pair("img", smooth((30, 40), 2), smooth((35, 33), 3), fixed_geometry=geo_f,
                moving_geometry=geo_m)
    tx = read_back(tmp_path, export.write_task_outputs(
        tmp_path / "img.json", pair, MatrixTransform(T2), transforms=True, warped=False))
    p = voxels((30, 40))
    got = ras_to_lps([tx.TransformPoint(q) for q in ras_to_lps(geo_f.voxel_to_world(p))])
    np.testing.assert_allclose(got, geo_m.voxel_to_world(MatrixTransform(T2).fixed_to_moving(p)),
                               atol=1e-9)


def test_perspective_becomes_displacement_field_exact_at_grid_points(tmp_path):
    persp = np.array([[1.02, 0.05, 3.3], [-0.04, 0.97, -2.1], [1e-3, -5e-4, 1.0]])
    pair = Pair("img", smooth((30, 40), 2), smooth((35, 33), 3))
    written = export.write_task_outputs(tmp_path / "img.json", pair, MatrixTransform(persp),
                                        transforms=True, warped=False)
    assert written == {"transform": "img.h5"}
    tx = read_back(tmp_path, written)
    assert tx.GetName() == "DisplacementFieldTransform"
    grid = np.array([[0.0, 0.0], [39.0, 0.0], [17.0, 22.0], [39.0, 29.0], [5.0, 28.0]])
    np.testing.assert_allclose([tx.TransformPoint(q) for q in grid],
                               MatrixTransform(persp).fixed_to_moving(grid), atol=1e-9)


def test_volume_field_in_lps_matches_affine_file(tmp_path):
    """The displacement-field path of a volume, in physical space, agrees with the affine file
    at the grid points (a non-matrix transform is exported like this)."""

    class Wrapped:  # not a MatrixTransform: goes through the field path
        def __init__(self, m):
            self.inner = MatrixTransform(m)

        def fixed_to_moving(self, pts):
            return self.inner.fixed_to_moving(pts)

    field = export.itk_transform(Wrapped(T3), GEO_F, GEO_M, 3, fixed_shape=SHAPE3)
    affine = export.itk_transform(MatrixTransform(T3), GEO_F, GEO_M, 3)
    p = np.array([[0.0, 0.0, 0.0], [18.0, 16.0, 13.0], [4.0, 9.0, 2.0]])
    lps = ras_to_lps(GEO_F.voxel_to_world(p))
    np.testing.assert_allclose([field.TransformPoint(q) for q in lps],
                               [affine.TransformPoint(q) for q in lps], atol=1e-9)


def test_failed_task_and_no_flags_write_nothing(tmp_path):
    pair = volume_pair()
    assert export.write_task_outputs(tmp_path / "vol.json", pair, None, transforms=True,
                                     warped=True) == {}
    assert export.write_task_outputs(tmp_path / "vol.json", pair, MatrixTransform(T3),
                                     transforms=False, warped=False) == {}
    assert not list(tmp_path.iterdir())


def test_refuses_a_transform_of_the_wrong_dimension(tmp_path):
    with pytest.raises(ValueError, match="3-D transform for a 2-D pair"):
        export.write_task_outputs(tmp_path / "img.json", Pair("img", smooth((30, 40), 2),
                                                              smooth((30, 40), 3)),
                                  MatrixTransform(T3), transforms=True, warped=False)


def test_a_run_saves_each_tasks_transform_and_warped_image(tmp_path):
    """``mibench run --save-transforms --save-warped`` end to end on two synthetic pairs: the
    files sit beside the records, the record names them, and the transform file maps the
    fixed landmarks as the record's transform does."""
    import json

    import SimpleITK as sitk
    from PIL import Image

    import mibench
    from mibench.datasets import synthetic
    from mibench.transform import transform_from_dict

    out = tmp_path / "run"
    mibench.run(methods="identity,ncc", dataset="synthetic", limit=2, workers=0, out=str(out),
                dataset_options={"pairs": 2, "size": 48}, method_options={"iterations": 5},
                save_transforms=True, save_warped=True)
    records = sorted((out / "records").rglob("*.json"))
    assert len(records) == 4
    dataset = synthetic.load_dataset(pairs=2, size=48)
    for path in records:
        record = json.loads(path.read_text())
        outputs = record["info"]["outputs"]
        assert set(outputs) == {"transform", "warped"}, outputs
        tfm = sitk.ReadTransform(str(path.parent / outputs["transform"]))
        matrix = transform_from_dict(record["transform"])
        pair = dataset.load(record["pair_id"])
        for point in pair.fixed_landmarks[:5]:
            np.testing.assert_allclose(tfm.TransformPoint(tuple(map(float, point))),
                                       matrix.fixed_to_moving(point[None])[0], atol=1e-6)
        warped = np.asarray(Image.open(path.parent / outputs["warped"]))
        assert warped.shape[:2] == pair.fixed.shape[:2]
