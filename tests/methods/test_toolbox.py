"""Toolbox baselines (SimpleITK ``sitk-*``, elastix ``elastix-*``): the ITK <-> pixel conversion
against ITK's own point mapping, and recovery of known transforms."""

import importlib.util

import numpy as np
import pytest
import torch
from helpers.registration import POINTS, make_pair

import mibench
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


@pytest.mark.slow  # ITK loads its modules lazily: the first elastix call takes 30-90 s
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
