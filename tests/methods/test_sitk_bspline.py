"""sitk-bspline: SimpleITK's affine then B-spline with Mattes MI, as a mibench B-spline."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

sitk = pytest.importorskip("SimpleITK")

from helpers.registration import pair_inputs, small_elastic_pair  # noqa: E402

from mibench.bspline import BSplineTransform  # noqa: E402
from mibench.methods.sitk import register_sitk  # noqa: E402
from mibench.methods.sitk_bspline import _dense_mapping, register_sitk_bspline  # noqa: E402


@pytest.fixture(scope="module")
def elastic_pair():
    return small_elastic_pair()


def _errors(pair, transform):
    mapped = transform.moving_to_fixed(pair.moving_landmarks)
    return np.linalg.norm(mapped - pair.fixed_landmarks, axis=1)


def test_sitk_bspline_improves_over_sitk_mmi(elastic_pair):
    pair = elastic_pair
    args = pair_inputs(pair)
    affine = register_sitk(metric="mmi", seed=0, **args).transform
    out = register_sitk_bspline(seed=0, spacing=16.0, **args)
    t = out.transform
    assert isinstance(t, BSplineTransform) and t.is_valid
    # The affine stage is sitk-mmi itself.
    np.testing.assert_array_equal(t.affine.matrix, affine.matrix)
    np.testing.assert_array_equal(out.info["affine"]["matrix"], affine.matrix)
    before, after = _errors(pair, affine), _errors(pair, t)
    assert np.median(after) < 0.7 * np.median(before), (np.median(before), np.median(after))
    # ITK's order (B-spline, then the affine) fitted in mibench's (affine, then B-spline).
    assert out.info["fit_residual_max_px"] < 0.05
    assert out.info["fit_spacing_px"] == pytest.approx(min(out.info["itk_spacing_px"]) / 4)


def test_dense_mapping_is_itk_transform_point():
    """The fitted samples: ITK's own TransformPoint at every pixel, through one dense field."""
    bs = sitk.BSplineTransformInitializer(sitk.Image(20, 14, sitk.sitkFloat32), [3, 2], 3)
    rng = np.random.default_rng(0)
    bs.SetParameters(tuple(rng.uniform(-2, 2, bs.GetNumberOfParameters()).tolist()))
    affine = sitk.AffineTransform(2)
    affine.SetMatrix((1.05, 0.1, -0.08, 0.97))
    affine.SetTranslation((1.5, -0.5))
    full = sitk.CompositeTransform(2)
    full.AddTransform(affine)
    full.AddTransform(bs)
    ys, xs = np.mgrid[0:14, 0:20]
    pts = np.column_stack([xs.ravel(), ys.ravel()]).astype(np.float64)
    expect = np.array([affine.TransformPoint(bs.TransformPoint(tuple(p))) for p in pts])
    np.testing.assert_allclose(_dense_mapping(full, (14, 20))(pts), expect, atol=1e-9)
    with pytest.raises(ValueError, match="pixel centres"):
        _dense_mapping(full, (14, 20))(pts + 0.5)


def test_elastix_bspline_maps_convert_as_itk_reads_them():
    """elastix's result maps (affine, then a composed B-spline whose ``Grid*`` are ITK's
    B-spline fixed parameters) against SimpleITK's own transforms built from the same numbers
    (the test below runs elastix itself)."""
    from mibench.methods.elastix import elastix_bspline_to_mibench
    from mibench.methods.itk_convert import ImageGeometry

    rng = np.random.default_rng(5)
    size, origin, spacing = (7, 8), (-9.5, -11.0), (6.0, 5.5)
    coefficients = rng.uniform(-2, 2, 2 * size[0] * size[1])
    a, t, c = np.array([[1.04, 0.07], [-0.05, 0.96]]), np.array([1.5, -2.0]), np.array([12., 9.])
    affine_map = {"Transform": ["AffineTransform"],
                  "TransformParameters": [str(float(v)) for v in [*a.ravel(), *t]],
                  "CenterOfRotationPoint": [str(float(v)) for v in c]}
    bspline_map = {"Transform": ["BSplineTransform"], "HowToCombineTransforms": ["Compose"],
                   "GridSize": [str(v) for v in size],
                   "GridOrigin": [str(float(v)) for v in origin],
                   "GridSpacing": [str(float(v)) for v in spacing],
                   "GridDirection": ["1", "0", "0", "1"],
                   "TransformParameters": [str(float(v)) for v in coefficients]}
    ours = elastix_bspline_to_mibench(affine_map, bspline_map, ImageGeometry(), ImageGeometry())
    bs = sitk.BSplineTransform(2, 3)
    bs.SetFixedParameters([*map(float, size), *origin, *spacing, 1.0, 0.0, 0.0, 1.0])
    bs.SetParameters(tuple(coefficients.tolist()))
    af = sitk.AffineTransform(2)
    af.SetMatrix(tuple(a.ravel().tolist()))
    af.SetTranslation(tuple(t.tolist()))
    af.SetCenter(tuple(c.tolist()))
    # Points whose affine image lies inside ITK's support region (where the two agree).
    pts = rng.uniform(3, 15, (300, 2))
    expect = np.array([bs.TransformPoint(af.TransformPoint(tuple(p))) for p in pts])
    np.testing.assert_allclose(ours.fixed_to_moving(pts), expect, atol=1e-9)


def test_elastix_bspline_result_maps_pixels_as_transformix_does(elastic_pair, tmp_path):
    """elastix-bspline end to end: the converted result maps every fixed pixel where
    transformix's own deformation field sends it, and the registration recovers the field."""
    itk = pytest.importorskip("itk")
    if importlib.util.find_spec("itk.ElastixPython") is None:
        pytest.skip("itk-elastix is not installed")
    from mibench.methods.elastix import (
        _geometry,
        elastix_bspline_to_mibench,
        register_elastix_bspline,
        run_elastix_bspline,
    )
    from mibench.metrics import landmark_errors

    pair, inputs = elastic_pair, pair_inputs(elastic_pair)
    result, f_img, m_img, _ = run_elastix_bspline(**inputs, resolutions=3, iterations=100)
    maps = [{k: list(v) for k, v in result.GetParameterMap(i).items()} for i in range(2)]
    ours = elastix_bspline_to_mibench(*maps, _geometry(f_img), _geometry(m_img))
    # transformix also writes the field to a file: into tmp_path, not the current directory.
    field = itk.array_from_image(itk.transformix_deformation_field(
        m_img, result, output_directory=str(tmp_path)))
    h, w = np.asarray(pair.fixed).shape[:2]
    ys, xs = np.mgrid[0:h, 0:w]
    pts = np.stack([xs.ravel(), ys.ravel()], 1).astype(float)
    np.testing.assert_allclose(ours.fixed_to_moving(pts), pts + field.reshape(-1, 2),
                               atol=1e-4)  # transformix computes in float32

    out = register_elastix_bspline(**inputs, resolutions=3, iterations=100)
    assert isinstance(out.transform, BSplineTransform)
    np.testing.assert_array_equal(out.transform.coefficients, ours.coefficients)  # seeded
    before = landmark_errors(None, pair.fixed_landmarks, pair.moving_landmarks)
    after = landmark_errors(out.transform, pair.fixed_landmarks, pair.moving_landmarks)
    assert np.median(after) < 1.0 and np.median(after) < np.median(before) / 4
