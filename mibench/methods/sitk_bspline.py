"""SimpleITK B-spline baseline ``sitk-bspline``: ``sitk-mmi``'s affine, then a cubic B-spline with
Mattes MI, returned as a :class:`mibench.bspline.BSplineTransform`.

:func:`register_sitk_bspline` says how ITK's order (the optimised B-spline first, the affine
moving initial transform after it) is converted to mibench's (the affine first). 2-D pixel
space, as the affine methods of :mod:`.sitk`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import SimpleITK as sitk

from mibench.geometry import Geometry
from mibench.methods.itk_convert import grey_arrays, mask_array
from mibench.methods.options import SITK_BSPLINE_DEFAULTS
from mibench.methods.sitk import execute_single_threaded, itk_image, register_sitk, settings
from mibench.transform import RegistrationOutput


def _itk_pixel_affine(matrix: np.ndarray) -> sitk.AffineTransform:
    """mibench's 3x3 affine pixel matrix as ITK's (centre 0; physical = pixel in 2-D here)."""
    out = sitk.AffineTransform(2)
    out.SetMatrix(tuple(np.asarray(matrix[:2, :2], dtype=np.float64).ravel().tolist()))
    out.SetTranslation(tuple(np.asarray(matrix[:2, 2], dtype=np.float64).tolist()))
    return out


def _dense_mapping(transform: sitk.Transform, shape: tuple[int, int]):
    """``(K, 2)`` integer fixed pixels ``(x, y)`` -> ITK's moving points, from ITK's own dense
    displacement field on the fixed grid (``TransformToDisplacementField``: one pass in C++
    instead of a ``TransformPoint`` call per pixel). Exact at pixel centres."""
    h, w = shape
    field = sitk.TransformToDisplacementField(transform, sitk.sitkVectorFloat64, (w, h),
                                              (0.0, 0.0), (1.0, 1.0), (1.0, 0.0, 0.0, 1.0))
    disp = sitk.GetArrayFromImage(field)  # (H, W, 2), (dx, dy)

    def mapping(points: np.ndarray) -> np.ndarray:
        p = np.asarray(points, dtype=np.float64)
        ij = np.rint(p).astype(np.int64)
        if not np.array_equal(ij, p):
            raise ValueError("the dense mapping is sampled at pixel centres only")
        return p + disp[ij[:, 1], ij[:, 0]]

    return mapping


def register_sitk_bspline(fixed, moving, *, fixed_mask=None, moving_mask=None, seed: int = 0,
                          fixed_geometry: Geometry | None = None,
                          moving_geometry: Geometry | None = None,
                          spacing: float = SITK_BSPLINE_DEFAULTS["spacing"],
                          bspline_levels: int = SITK_BSPLINE_DEFAULTS["bspline_levels"],
                          bspline_iterations: int = SITK_BSPLINE_DEFAULTS["bspline_iterations"],
                          bspline_sampling: float = SITK_BSPLINE_DEFAULTS["bspline_sampling"],
                          bins: int | None = None, **affine_options) -> RegistrationOutput:
    """SimpleITK affine (as ``sitk-mmi``), then a cubic B-spline with Mattes MI, in 2-D.

    Stage 1 is :func:`register_sitk` with ``metric="mmi"`` (``affine_options``: its ``preset``,
    ``iterations``, ``learning_rate``, ``sampling``, ``levels``). Stage 2 registers a
    ``BSplineTransform`` placed by ``sitk.BSplineTransformInitializer`` over the fixed image
    (pixel space, as stage 1) with the affine as ITK's *moving initial transform*, Mattes MI
    (``bins``, as stage 1), seeded RANDOM sampling of ``bspline_sampling`` of each level's
    pixels (drawn once per level, so the objective is deterministic within a level),
    ``bspline_levels`` image levels (shrink ``2^(L-1) .. 1``, smoothing sigma half the shrink,
    px) with one mesh for all of them (ITK's L-BFGS-B does not follow a mesh that an adaptor
    refines between levels), and L-BFGS-B (``bspline_iterations`` per level; SimpleITK's
    example settings: gradient tolerance 1e-5, 5 corrections, 1000 evaluations, cost factor
    1e7), on one thread.

    Order and conversion. ITK composes the moving initial transform *after* the optimised one,
    ``p -> A(p + v(p))`` with ``v`` on a grid over the fixed image, while mibench's B-spline is
    ``A(p) + u(A(p))`` with ``u`` on an axis-aligned grid over ``A`` of the fixed image
    (:mod:`mibench.bspline`). ``u(q) = L v(A^-1 q)`` (``L`` the affine's linear part) is a
    B-spline on the grid ``A`` maps ITK's onto, axis-aligned only when ``L`` is diagonal, so the
    result is *fitted* by least squares (:func:`mibench.bspline.fit_coefficients`) to ITK's mapping
    sampled at every fixed pixel (every ``k``-th, ``k = ceil(sqrt(H W / 2^18))``, on larger
    images), on a grid of a quarter of ITK's control-point spacing placed over ``A`` of the
    fixed image (:meth:`mibench.bspline.BSplineTransform.over`; half the spacing left up to
    0.13 px). The fit's residual against ITK's mapping at those pixels is in ``info``
    (``fit_residual_max_px``, ``fit_residual_mean_px``, moving pixels): at most 0.026 px on the
    first four 256 x 256 synthetic elastic pairs.

    Parameters
    ----------
    fixed, moving : Tensor ``(1, C, H, W)``
        Images in [0, 1] (grey by the channel mean). 2-D only.
    spacing : float
        Control-point spacing in fixed pixels: the mesh has ``max(1, round((n - 1) /
        spacing))`` cells along an axis of ``n`` pixels.
    bspline_levels, bspline_iterations, bspline_sampling
        See above.
    bins : int, optional
        Histogram bins of both stages (the preset's: 32 practical, 100 paper).

    Returns
    -------
    RegistrationOutput
        A :class:`mibench.bspline.BSplineTransform` (fixed pixel -> moving pixel) and ``info``:
        ``affine`` (stage 1's info and ``matrix``), the stage-2 ``metric_value``,
        ``optimizer_iterations`` (last level), ``stop``, ``mesh_size`` (cells per axis ``(x,
        y)``), ``itk_spacing_px``, ``fit_spacing_px``, ``fit_step_px`` and the fit residuals.
    """
    from mibench.bspline import BSplineTransform, fit_coefficients

    f_arr, m_arr = grey_arrays(fixed, moving)
    if f_arr.ndim != 2:
        raise ValueError("sitk-bspline registers 2-D images only")
    if spacing <= 0 or bspline_levels < 1 or bspline_iterations < 1 \
            or not 0.0 < bspline_sampling <= 1.0:
        raise ValueError("sitk-bspline: spacing > 0, bspline_levels and bspline_iterations "
                         ">= 1, bspline_sampling in (0, 1]")
    first = register_sitk(fixed, moving, metric="mmi", fixed_mask=fixed_mask,
                          moving_mask=moving_mask, seed=seed, bins=bins, **affine_options)
    a = first.transform.matrix
    s = settings("mmi", affine_options.get("preset", "practical"), bins=bins)
    f_img, m_img = itk_image(f_arr), itk_image(m_arr)
    h, w = f_arr.shape
    mesh = [max(1, int(round((n - 1) / spacing))) for n in (w, h)]
    bspline = sitk.BSplineTransformInitializer(f_img, mesh, 3)

    reg = sitk.ImageRegistrationMethod()
    reg.SetNumberOfThreads(1)
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=s.bins)
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentage(bspline_sampling, int(seed) % (2**31 - 2) + 1)
    for mask, setter in ((fixed_mask, reg.SetMetricFixedMask),
                         (moving_mask, reg.SetMetricMovingMask)):
        arr = mask_array(mask)
        if arr is not None:
            setter(itk_image(arr, None, sitk.sitkUInt8))
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsLBFGSB(gradientConvergenceTolerance=1e-5,
                             numberOfIterations=bspline_iterations,
                             maximumNumberOfCorrections=5,
                             maximumNumberOfFunctionEvaluations=1000,
                             costFunctionConvergenceFactor=1e7)
    shrink = [2 ** k for k in reversed(range(bspline_levels))]
    reg.SetShrinkFactorsPerLevel(shrink)
    reg.SetSmoothingSigmasPerLevel([k / 2 if k > 1 else 0.0 for k in shrink])
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    affine_itk = _itk_pixel_affine(a)
    reg.SetMovingInitialTransform(affine_itk)
    # One mesh on every level: ITK's L-BFGS-B keeps the first level's parameter scales when a
    # mesh adaptor refines the grid ("Size of scales must equal number of local parameters").
    reg.SetInitialTransform(bspline, inPlace=True)
    execute_single_threaded(reg, f_img, m_img)

    # ITK's full mapping: the optimised B-spline first, then the moving initial affine.
    full = sitk.CompositeTransform(2)
    full.AddTransform(affine_itk)
    full.AddTransform(bspline)
    mesh = [int(v) for v in bspline.GetTransformDomainMeshSize()]
    itk_spacing = [float(d) / m for d, m in
                   zip(bspline.GetTransformDomainPhysicalDimensions(), mesh, strict=True)]
    fit_spacing = min(itk_spacing) / 4
    step = float(max(1, int(np.ceil(np.sqrt(h * w / 2**18)))))
    mapping = _dense_mapping(full, (h, w))
    result = BSplineTransform.over((h, w), fit_spacing, a)
    ys, xs = np.mgrid[0:h:int(step), 0:w:int(step)].astype(np.float64)
    pts = np.column_stack([xs.ravel(), ys.ravel()])
    q = result.affine.fixed_to_moving(pts)
    target = mapping(pts)
    result.coefficients = fit_coefficients(result.grid, q, target - q)
    residual = np.linalg.norm(result.fixed_to_moving(pts) - target, axis=1)
    if not result.is_valid or not np.isfinite(residual).all():
        raise RuntimeError("SimpleITK's B-spline result is not finite")
    info: dict[str, Any] = {
        "affine": {**first.info, "matrix": a.tolist()},
        "spacing": float(spacing), "bspline_levels": int(bspline_levels),
        "bspline_iterations": int(bspline_iterations),
        "bspline_sampling": float(bspline_sampling), "bins": int(s.bins),
        "metric_value": float(reg.GetMetricValue()),
        "optimizer_iterations": int(reg.GetOptimizerIteration()),
        "stop": reg.GetOptimizerStopConditionDescription(),
        "mesh_size": mesh, "itk_spacing_px": itk_spacing, "fit_spacing_px": fit_spacing,
        "fit_step_px": step, "fit_residual_max_px": float(residual.max()),
        "fit_residual_mean_px": float(residual.mean()), "seed": int(seed),
    }
    return RegistrationOutput(result, info=info)


#: The ``sitk-bspline`` method's factory.
bspline = register_sitk_bspline
