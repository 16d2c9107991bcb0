"""Toolbox baselines (SimpleITK ``sitk-*``, elastix ``elastix-*``): the ITK <-> pixel conversion
against ITK's own point mapping, and recovery of known transforms."""

import importlib.util

import numpy as np
import pytest
import torch
from helpers.registration import POINTS, make_pair

import mibench
from mibench.geometry import Geometry
from mibench.methods import itk_convert as ic
from mibench.plan import select_methods
from mibench.registry import Registry
from mibench.transform import MatrixTransform

sitk = pytest.importorskip("SimpleITK")

#: An affine truth with rotation, anisotropic scale, shear and shift (fixed px -> moving px).
TRUE_T = np.array([[1.04, -0.07, 3.5], [0.05, 0.97, -2.5], [0.0, 0.0, 1.0]])
ROT = np.deg2rad(30.0)
GEOMETRY_F = ic.ImageGeometry((0.5, 2.0), (10.0, -5.0),
                              (np.cos(ROT), -np.sin(ROT), np.sin(ROT), np.cos(ROT)))
GEOMETRY_M = ic.ImageGeometry((1.5, 0.75), (-3.0, 7.0), (0.0, 1.0, 1.0, 0.0))


def sitk_image(geometry, size=(40, 30)):
    image = sitk.Image(size, sitk.sitkFloat32)
    image.SetSpacing(geometry.spacing)
    image.SetOrigin(geometry.origin)
    image.SetDirection(geometry.direction)
    return image


def itk_reference(tx, fixed_img, moving_img, points):
    """Map fixed pixels to moving pixels with ITK's own index/physical conversions."""
    out = []
    for x, y in points:
        p = fixed_img.TransformContinuousIndexToPhysicalPoint((float(x), float(y)))
        out.append(moving_img.TransformPhysicalPointToContinuousIndex(tx.TransformPoint(p)))
    return np.array(out)


def test_itk_affine_to_pixel_matches_itk_point_mapping():
    tx = sitk.AffineTransform(2)
    tx.SetMatrix((1.1, 0.2, -0.15, 0.9))
    tx.SetTranslation((4.0, -6.5))
    tx.SetCenter((12.0, 3.0))
    f_img, m_img = sitk_image(GEOMETRY_F), sitk_image(GEOMETRY_M)
    np.testing.assert_allclose(ic.ImageGeometry.of(f_img).index_to_physical(),
                               GEOMETRY_F.index_to_physical(), atol=1e-12)
    matrix = ic.itk_affine_to_pixel(tx.GetMatrix(), tx.GetTranslation(), tx.GetCenter(),
                                    ic.ImageGeometry.of(f_img), ic.ImageGeometry.of(m_img))
    pts = np.array([[0.0, 0.0], [39.0, 0.0], [7.5, 21.25], [39.0, 29.0]])
    np.testing.assert_allclose(MatrixTransform(matrix).fixed_to_moving(pts),
                               itk_reference(tx, f_img, m_img, pts), atol=1e-9)


def test_pixel_to_itk_affine_round_trip():
    centre = (3.0, -8.0)
    a, t = ic.pixel_to_itk_affine(TRUE_T, centre, GEOMETRY_F, GEOMETRY_M)
    back = ic.itk_affine_to_pixel(a, t, centre, GEOMETRY_F, GEOMETRY_M)
    np.testing.assert_allclose(back, TRUE_T, atol=1e-12)
    with pytest.raises(ValueError, match="affine"):
        ic.pixel_to_itk_affine(np.array([[1, 0, 0], [0, 1, 0], [1e-3, 0, 1.0]]), centre)


def test_itk_centred_affine_by_hand():
    """ITK's centred affine ``p -> A (p - c) + c + t``, converted by hand."""
    # A 90 degree rotation about c = (10, 5), then t = (1, 2): c itself goes to c + t.
    a = np.array([[0.0, -1.0], [1.0, 0.0]])
    m = ic.itk_affine_to_pixel(a.ravel(), (1.0, 2.0), (10.0, 5.0))
    t = MatrixTransform(m)
    np.testing.assert_allclose(t.fixed_to_moving([[10.0, 5.0]]), [[11.0, 7.0]], atol=1e-12)
    # (11, 5) is c + (1, 0) -> c + A (1, 0) + t = (10, 6) + (1, 2).
    np.testing.assert_allclose(t.fixed_to_moving([[11.0, 5.0]]), [[11.0, 8.0]], atol=1e-12)


def test_elastix_parameter_map_to_pixel():
    # elastix's AffineTransform is ITK's: (a11, a12, a21, a22, t1, t2) about CenterOfRotationPoint.
    params = (0.95, 0.1, -0.05, 1.02, 2.25, -1.5)
    centre = (20.0, 14.5)
    pmap = {"Transform": ("AffineTransform",), "TransformParameters": tuple(map(str, params)),
            "CenterOfRotationPoint": tuple(map(str, centre))}
    tx = sitk.AffineTransform(2)
    tx.SetMatrix(params[:4])
    tx.SetTranslation(params[4:])
    tx.SetCenter(centre)
    f_img, m_img = sitk_image(GEOMETRY_F), sitk_image(GEOMETRY_M)
    matrix = ic.elastix_affine_to_pixel(pmap, GEOMETRY_F, GEOMETRY_M)
    np.testing.assert_allclose(MatrixTransform(matrix).fixed_to_moving(POINTS),
                               itk_reference(tx, f_img, m_img, POINTS), atol=1e-9)
    with pytest.raises(ValueError, match="AffineTransform"):
        ic.elastix_affine_to_pixel({**pmap, "Transform": ("BSplineTransform",)})


def test_grey_arrays_and_masks():
    rgb = torch.rand(1, 3, 5, 7, generator=torch.Generator().manual_seed(0))
    f, m = ic.grey_arrays(rgb, rgb[:, :1])
    np.testing.assert_allclose(f, rgb[0].mean(0).numpy() * 255, rtol=1e-6)
    assert f.dtype == np.float32 and m.shape == (5, 7)
    mask = ic.mask_array(rgb[:, :1] > 0.5)
    assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1}
    assert ic.mask_array(None) is None


def pixel_errors(transform, truth):
    return np.linalg.norm(transform.fixed_to_moving(POINTS)
                          - MatrixTransform(truth).fixed_to_moving(POINTS), axis=1)


@pytest.mark.parametrize("name", ["sitk-mse", "sitk-ncc", "sitk-mmi"])
def test_sitk_recovers_known_affine(canvas, name):
    # Moving image of another size than the fixed one: exercises the geometry on both sides.
    fixed, moving = make_pair(canvas, TRUE_T, moving_shape=(120, 140))
    out = mibench.method(name, device="cpu")(fixed, moving, seed=3)
    assert pixel_errors(out.transform, TRUE_T).max() < 0.25
    assert out.info["preset"] == "practical" and out.info["seed"] == 3


def test_sitk_repeats_exactly_and_uses_masks(canvas):
    fixed, moving = make_pair(canvas, TRUE_T)
    mask = torch.zeros_like(fixed, dtype=torch.bool)
    mask[..., 16:112, 16:112] = True
    method = mibench.method("sitk-mmi", device="cpu")
    a = method(fixed, moving, fixed_mask=mask, moving_mask=mask, seed=1)
    b = method(fixed, moving, fixed_mask=mask, moving_mask=mask, seed=1)
    np.testing.assert_array_equal(a.transform.matrix, b.transform.matrix)
    assert pixel_errors(a.transform, TRUE_T).max() < 0.5
    # A mask that leaves no sample is refused by ITK, so the mask does reach the metric
    # (called past the method wrapper, which refuses an empty mask itself).
    with pytest.raises(RuntimeError):
        method.spec.load()(fixed, moving, fixed_mask=torch.zeros_like(mask), seed=1,
                           **method.params)
    with pytest.raises(ValueError, match="the fixed mask selects no pixel"):
        method(fixed, moving, fixed_mask=torch.zeros_like(mask), seed=1)


def test_sitk_paper_preset(canvas):
    from mibench.methods import sitk as sitk_methods

    s = sitk_methods.settings("mse", "paper")
    assert (s.iterations, s.bins, s.sampling, s.learning_rate) == (5000, 100, 0.5, 1e-6)
    assert sitk_methods.settings("jhmi", "paper").learning_rate == 1e-1
    fixed, moving = make_pair(canvas, TRUE_T)
    out = mibench.method("sitk-ncc", preset="paper", iterations=30, device="cpu")(fixed, moving)
    assert out.info["iterations"] == 30 and out.info["optimizer_iterations"] <= 30
    assert "GradientDescent" in out.info["stop"] and out.transform.is_valid


def test_specs_declare_extras_and_all_skips_when_missing(monkeypatch):
    registry = Registry(entry_points=False)
    for name, extra in (("sitk-mmi", "sitk"), ("elastix-nmi", "elastix")):
        spec = registry.get("method", name)
        assert f'mibench[{extra}]' in spec.requires[0].hint
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda m, *a: None if m in ("itk", "SimpleITK") else real(m, *a))
    why = registry.get("method", "elastix-ami").unavailable_reason()
    assert "mibench[elastix]" in why
    chosen, skipped = select_methods(registry, ("all",))
    assert {"sitk-mse", "elastix-ami"} <= set(skipped)
    assert not {s.name for s in chosen} & {"sitk-mse", "elastix-ami"}


def test_elastix_recovers_known_affine(canvas):
    pytest.importorskip("itk")
    if importlib.util.find_spec("itk.ElastixPython") is None:
        pytest.skip("itk-elastix is not installed")
    fixed, moving = make_pair(canvas, TRUE_T, moving_shape=(120, 140))
    method = mibench.method("elastix-ami", device="cpu")
    a = method(fixed, moving, seed=2)
    b = method(fixed, moving, seed=2)
    np.testing.assert_array_equal(a.transform.matrix, b.transform.matrix)
    assert pixel_errors(a.transform, TRUE_T).max() < 0.25
    out = mibench.method("elastix-nmi", iterations=100, device="cpu")(fixed, moving)
    assert pixel_errors(out.transform, TRUE_T).max() < 0.5


# ---------------------------------------------------------------- volumes (3-D, physical space)

def rotation(angles_deg, order="xyz"):
    from scipy.spatial.transform import Rotation

    return Rotation.from_euler(order, angles_deg, degrees=True).as_matrix()


#: Oblique, anisotropic geometries (RAS+ mm) for the fixed and the moving volume.
GEO3_F = Geometry.from_spacing((0.9, 1.3, 2.5), (-40.0, 12.0, 7.5), rotation([12, -7, 25]))
GEO3_M = Geometry.from_spacing((1.1, 0.8, 2.0), (-35.0, 20.0, -3.0), rotation([-9, 14, 4], "zyx"))


def ras_to_lps(points):
    """LPS = (-x, -y, z) of RAS, written out here as the independent reference."""
    out = np.array(points, dtype=np.float64)
    out[:, :2] *= -1
    return out


def test_itk_image_geometry_round_trip():
    from mibench.methods.sitk import itk_image

    arr = np.random.default_rng(0).random((6, 7, 8)).astype(np.float32)  # (D, H, W)
    image = itk_image(arr, GEO3_F)
    assert image.GetSize() == (8, 7, 6)
    back = Geometry.from_itk(image.GetSpacing(), image.GetOrigin(), image.GetDirection())
    np.testing.assert_allclose(back.affine, GEO3_F.affine, atol=1e-12)
    np.testing.assert_allclose(image.GetSpacing(), GEO3_F.spacing, atol=1e-12)
    p = np.array([[0.0, 0.0, 0.0], [7.0, 6.0, 5.0], [2.5, 1.25, 3.75]])
    itk_points = [image.TransformContinuousIndexToPhysicalPoint(q) for q in p]
    np.testing.assert_allclose(itk_points, ras_to_lps(GEO3_F.voxel_to_world(p)), atol=1e-12)
    # ITK's index (x, y, z) is numpy's [z, y, x].
    assert image.GetPixel((7, 2, 4)) == arr[4, 2, 7]
    plain = itk_image(arr)
    assert plain.GetSpacing() == (1.0, 1.0, 1.0) and plain.GetOrigin() == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="3-D geometry"):
        itk_image(arr[0], GEO3_F)


@pytest.mark.parametrize("with_geometry", [True, False])
def test_itk_affine_to_voxel_matches_itk_point_mapping(with_geometry):
    from mibench.methods.sitk import itk_image

    f_geo = ic.itk_geometry(GEO3_F if with_geometry else None, 3)
    m_geo = ic.itk_geometry(GEO3_M if with_geometry else None, 3)
    f_img = itk_image(np.zeros((6, 7, 8), np.float32), f_geo)
    m_img = itk_image(np.zeros((5, 9, 6), np.float32), m_geo)
    tx = sitk.AffineTransform(3)
    tx.SetMatrix((1.05, 0.1, -0.02, -0.08, 0.96, 0.05, 0.03, -0.04, 1.01))
    tx.SetTranslation((4.0, -6.5, 2.25))
    tx.SetCenter((-12.0, 3.0, 8.0))
    matrix = ic.itk_affine_to_voxel(tx.GetMatrix(), tx.GetTranslation(), tx.GetCenter(),
                                    f_geo, m_geo)
    p = np.array([[0.0, 0.0, 0.0], [7.0, 6.0, 5.0], [2.5, 1.25, 3.75], [6.0, 0.5, 1.0]])
    reference = [m_img.TransformPhysicalPointToContinuousIndex(
        tx.TransformPoint(f_img.TransformContinuousIndexToPhysicalPoint(q))) for q in p]
    np.testing.assert_allclose(MatrixTransform(matrix).fixed_to_moving(p), reference, atol=1e-9)
    # Through ImageGeometry (ITK's own geometry of the images), the same matrix.
    np.testing.assert_allclose(matrix, ic.itk_affine_to_pixel(
        tx.GetMatrix(), tx.GetTranslation(), tx.GetCenter(), ic.ImageGeometry.of(f_img),
        ic.ImageGeometry.of(m_img)), atol=1e-12)


def test_elastix_parameter_map_3d():
    params = (0.95, 0.1, -0.02, -0.05, 1.02, 0.03, 0.01, -0.04, 0.98, 2.25, -1.5, 3.0)
    centre = (20.0, 14.5, -6.0)
    pmap = {"Transform": ("AffineTransform",), "TransformParameters": tuple(map(str, params)),
            "CenterOfRotationPoint": tuple(map(str, centre))}
    a, t, c = ic.elastix_affine_parameters(pmap)
    tx = sitk.AffineTransform(3)
    tx.SetMatrix(params[:9])
    tx.SetTranslation(params[9:])
    tx.SetCenter(centre)
    f_geo, m_geo = ic.itk_geometry(GEO3_F, 3), ic.itk_geometry(GEO3_M, 3)
    matrix = ic.itk_affine_to_voxel(a.ravel(), t, c, f_geo, m_geo)
    p = np.array([[0.0, 0.0, 0.0], [7.0, 6.0, 5.0], [2.5, 1.25, 3.75]])
    lps = ras_to_lps(GEO3_F.voxel_to_world(p))
    expected = GEO3_M.world_to_voxel(ras_to_lps([tx.TransformPoint(q) for q in lps]))
    np.testing.assert_allclose(MatrixTransform(matrix).fixed_to_moving(p), expected, atol=1e-9)
    with pytest.raises(ValueError, match="12 and a 3-D centre"):
        ic.elastix_affine_parameters({**pmap, "TransformParameters": tuple(map(str, params[:9]))})


def test_grey_arrays_of_volumes():
    vol = torch.rand(1, 2, 5, 6, 7, generator=torch.Generator().manual_seed(0))
    f, m = ic.grey_arrays(vol, vol[:, :1])
    assert f.shape == (5, 6, 7) and f.dtype == np.float32
    np.testing.assert_allclose(f, vol[0].mean(0).numpy() * 255, rtol=1e-6)
    assert ic.mask_array(vol[:, :1] > 0.5).shape == (5, 6, 7)
    with pytest.raises(ValueError, match="dimensionality"):
        ic.grey_arrays(vol, vol[:, :, 0])


SIDE3, MARGIN3 = 48, 12


def volume_pair_3d():
    """A 48^3 smooth volume and its inverted-contrast copy moved by a known rigid world
    transform; the geometries are oblique and anisotropic (2.0 mm slices). Returns tensors, the
    geometries and the true fixed -> moving voxel matrix."""
    from scipy.ndimage import gaussian_filter

    from mibench.geometry import voxel_transform

    rng = np.random.default_rng(7)
    side = SIDE3 + 2 * MARGIN3
    canvas = gaussian_filter(rng.random((side,) * 3), 3.0)
    canvas = ((canvas - canvas.min()) / np.ptp(canvas)).astype(np.float32)
    f_geo = Geometry.from_spacing((1.0, 1.4, 2.0), (-30.0, 10.0, 5.0), rotation([10, -5, 20]))
    m_geo = Geometry.from_spacing((1.0, 1.4, 2.0), (-27.0, 8.0, 9.0), rotation([10, -5, 20]))
    centre = f_geo.voxel_to_world([[(SIDE3 - 1) / 2] * 3])[0]
    world = np.eye(4)
    world[:3, :3] = rotation([4.0, -3.0, 6.0])
    world[:3, 3] = centre - world[:3, :3] @ centre + np.array([3.0, -2.0, 4.0])
    truth = voxel_transform(world, f_geo, m_geo)
    shift = np.eye(4)
    shift[:3, 3] = MARGIN3
    crop = slice(MARGIN3, MARGIN3 + SIDE3)
    fixed = canvas[crop, crop, crop]
    moving = 1.0 - MatrixTransform(shift @ np.linalg.inv(truth)).warp(canvas, (SIDE3,) * 3)
    as_tensor = lambda a: torch.from_numpy(np.ascontiguousarray(a))[None, None]  # noqa: E731
    return as_tensor(fixed), as_tensor(moving), f_geo, m_geo, truth


def test_sitk_mmi_recovers_known_rigid_volume_transform():
    from mibench.geometry import voxel_transform
    from mibench.methods.sitk import mmi

    fixed, moving, f_geo, m_geo, truth = volume_pair_3d()

    out = mmi(fixed, moving, seed=1, fixed_geometry=f_geo, moving_geometry=m_geo)
    assert out.transform.matrix.shape == (4, 4) and out.info["space"] == "world"
    again = mmi(fixed, moving, seed=1, fixed_geometry=f_geo, moving_geometry=m_geo)
    np.testing.assert_array_equal(again.transform.matrix, out.transform.matrix)
    p = np.random.default_rng(0).uniform(8, SIDE3 - 9, (20, 3))
    err = np.linalg.norm(out.transform.fixed_to_moving(p)
                         - MatrixTransform(truth).fixed_to_moving(p), axis=1)
    # SimpleITK starts at the world identity (both grids share their centre's world position
    # up to the origins): the pair does need registering from there.
    start = MatrixTransform(voxel_transform(np.eye(4), f_geo, m_geo))
    initial = np.linalg.norm(start.fixed_to_moving(p)
                             - MatrixTransform(truth).fixed_to_moving(p), axis=1)
    assert initial.min() > 2.0
    assert err.max() < 0.3, err  # voxels of the moving volume


def test_sitk_ignores_a_2d_geometry(canvas):
    """2-D pairs are registered in pixel space whatever their geometry (the preset's steps are
    in pixels): a pixel size changes nothing."""
    from mibench.methods.sitk import ncc

    fixed, moving = make_pair(canvas, TRUE_T)
    geo = Geometry.from_spacing((0.5, 0.5), unit="um")
    a = ncc(fixed, moving, seed=2, iterations=30)
    b = ncc(fixed, moving, seed=2, iterations=30, fixed_geometry=geo, moving_geometry=geo)
    np.testing.assert_array_equal(a.transform.matrix, b.transform.matrix)
    assert "space" not in b.info


def test_elastix_recovers_known_rigid_volume_transform():
    pytest.importorskip("itk")
    if importlib.util.find_spec("itk.ElastixPython") is None:
        pytest.skip("itk-elastix is not installed")
    import itk

    from mibench.methods.elastix import _itk_image, ami

    # The images elastix sees are placed as SimpleITK's are (Geometry.to_itk()).
    image = _itk_image(np.zeros((6, 7, 8), np.float32), GEO3_F)
    np.testing.assert_allclose(
        Geometry.from_itk(tuple(image.GetSpacing()), tuple(image.GetOrigin()),
                          itk.array_from_matrix(image.GetDirection())).affine,
        GEO3_F.affine, atol=1e-12)
    fixed, moving, f_geo, m_geo, truth = volume_pair_3d()
    out = ami(fixed, moving, seed=1, fixed_geometry=f_geo, moving_geometry=m_geo)
    assert out.transform.matrix.shape == (4, 4) and out.info["space"] == "world"
    p = np.random.default_rng(0).uniform(8, SIDE3 - 9, (20, 3))
    err = np.linalg.norm(out.transform.fixed_to_moving(p)
                         - MatrixTransform(truth).fixed_to_moving(p), axis=1)
    assert err.max() < 0.5, err  # voxels of the moving volume
