"""SimpleITK baselines: ``sitk-mmi``, ``sitk-jhmi``, ``sitk-ncc``, ``sitk-mse``, ``sitk-bspline``.

``sitk-bspline`` (2-D) runs ``sitk-mmi``'s affine registration, then a cubic B-spline with Mattes
MI on top of it, and returns a :class:`mibench.bspline.BSplineTransform`
(:func:`register_sitk_bspline` says how ITK's order is converted). The rest of this page is about
the affine methods.

Affine registration with SimpleITK's ``ImageRegistrationMethod``, one method per metric (Mattes
MI, joint-histogram MI, correlation, mean squares), as the DRMIME paper's toolbox baselines
(``research/drmime.md`` section 6). Images are registered as grey float32 images scaled to
[0, 255] (the 8-bit range of the datasets those settings come from) with unit spacing, zero
origin and identity direction, so ITK's physical space is the pixel space; the result is converted
with :mod:`mibench.methods.itk_convert`. The transform starts at the pixel identity with its
centre at the fixed image's centre. Masks, when the pair has them, become the metric's fixed and
moving masks.

Volumes (``(1, C, D, H, W)`` tensors) are registered in 3-D with a 12-parameter affine transform,
in physical space: each image gets its :class:`~mibench.geometry.Geometry`'s ITK (LPS) spacing,
origin and direction (``Geometry.to_itk()``), the transform starts from SimpleITK's centred
initialiser by geometry (centre at the fixed volume's centre, translation from it to the moving
volume's centre; the world identity when both volumes share their grid), and the result goes
back exactly to the 4x4 fixed voxel -> moving voxel matrix
(:func:`~mibench.methods.itk_convert.itk_affine_to_voxel`). Step lengths (``learning_rate``,
the minimum step) are then in the geometry's unit (mm), pyramid smoothing stays in voxels. A
volume pair without both geometries is registered in voxel space (unit spacing). 2-D pairs are
registered in pixel space as before, even when they carry a geometry (a histology pixel size
would otherwise change the preset's steps).
On the 2 mm ``brain`` pairs (95 x 117 x 99 voxels) the ``practical`` preset, unchanged, takes
7-19 s on one thread (measured on a loaded 2-core machine) and brings the median TRE from about
18 mm to 0.16-0.38 mm.

Two presets (every value can be overridden by its own option):

``paper``
    The settings [3P] attributes to the paper: one resolution, metric sampling RANDOM 50 %, plain
    gradient descent without parameter scaling, 5000 iterations, convergence minimum 1e-9 over a
    window of 200, 100 histogram bins, learning rate 1e-5 (MMI), 1e-1 (JHMI, NCC), 1e-6 (MSE).
    Unverified; the paper does not say whether it used a pyramid (assumed not).
``practical`` (default)
    Tuned on the synthetic 256 x 256 pairs: 3 levels (shrink 4, 2, 1; smoothing sigma 2, 1, 0
    px), RANDOM sampling of 50 % of each level's pixels, regular-step gradient descent with
    scales from physical shift (first step 1 px, halved on each reversal, stop below 1e-3 px or
    after 200 iterations per level), 32 histogram bins. Plain gradient descent with SimpleITK's
    estimated learning rate (the notebooks' recipe) stopped at the window convergence test after
    ~10 iterations of the full-resolution level, 2 px from the optimum even on monomodal pairs;
    50 bins left too few samples per bin at the coarse level (some monomodal pairs diverged).
    About a second per 256^2 pair. ITK's joint-histogram MI (``sitk-jhmi``) still fails on most
    multimodal synthetic pairs with every setting tried (bins 16-32, sampling 25-100 %, 1-3
    levels, with and without masks); it is kept as the toolbox gives it.

Runs repeat exactly: the sampling seed is fixed (derived from the task's ``seed``; SimpleITK's
seed 0 would mean "wall clock", so ``seed + 1`` is used) and the registration runs on one thread
(a multi-threaded metric sums its samples in an order that changes from run to run; the method's
own thread count does not reach the metric, so ITK's global default is set to 1 during the call
and restored after it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import SimpleITK as sitk

from mibench.errors import check_choice
from mibench.geometry import Geometry
from mibench.methods.itk_convert import (
    ImageGeometry,
    grey_arrays,
    itk_affine_to_pixel,
    itk_affine_to_voxel,
    itk_geometry,
    mask_array,
)
from mibench.methods.options import SITK_METRICS, TOOLBOX_PRESETS
from mibench.transform import MatrixTransform, RegistrationOutput

#: The paper preset's learning rates ([3P], unverified).
PAPER_LEARNING_RATE = {"mmi": 1e-5, "jhmi": 1e-1, "ncc": 1e-1, "mse": 1e-6}


@dataclass(frozen=True)
class SitkSettings:
    """Everything that defines one SimpleITK registration (a preset with its overrides)."""

    metric: str
    iterations: int
    learning_rate: float
    bins: int
    sampling: float
    levels: int
    optimizer: str  # "regular-step" (scaled by physical shift) or "gradient-descent" (plain)
    min_step: float  # regular-step: stop when the step falls below this (physical units)
    convergence_value: float  # gradient-descent: window convergence threshold
    convergence_window: int


def settings(metric: str, preset: str = "practical", *, iterations: int | None = None,
             learning_rate: float | None = None, bins: int | None = None,
             sampling: float | None = None, levels: int | None = None) -> SitkSettings:
    """Resolve a preset and its overrides into :class:`SitkSettings` (None = the preset's)."""
    check_choice("metric", metric, SITK_METRICS)
    check_choice("preset", preset, TOOLBOX_PRESETS)
    if preset == "paper":
        base = SitkSettings(metric, 5000, PAPER_LEARNING_RATE[metric], 100, 0.5, 1,
                            "gradient-descent", 0.0, 1e-9, 200)
    else:  # practical
        base = SitkSettings(metric, 200, 1.0, 32, 0.5, 3, "regular-step", 1e-3, 0.0, 0)
    over = {"iterations": iterations, "learning_rate": learning_rate, "bins": bins,
            "sampling": sampling, "levels": levels}
    values = {**base.__dict__, **{k: v for k, v in over.items() if v is not None}}
    out = SitkSettings(**values)
    if out.iterations < 1 or out.levels < 1 or not 0.0 < out.sampling <= 1.0:
        raise ValueError(f"invalid settings {out}: iterations and levels must be >= 1, "
                         "sampling in (0, 1]")
    return out


def _image(array: np.ndarray, pixel_type: int = sitk.sitkFloat32) -> sitk.Image:
    """A 2-D array as a SimpleITK image with unit spacing and zero origin (physical = pixel)."""
    image = sitk.GetImageFromArray(array)
    return sitk.Cast(image, pixel_type) if image.GetPixelID() != pixel_type else image


def itk_image(array: np.ndarray, geometry: Geometry | None = None,
              pixel_type: int = sitk.sitkFloat32) -> sitk.Image:
    """A numpy ``(H, W)`` / ``(D, H, W)`` array as a SimpleITK image placed by ``geometry``.

    The array's last axis is ITK's first index (x), as in mibench. ``geometry`` (RAS+) is set as
    ``Geometry.to_itk()``'s LPS spacing, origin and direction; None leaves ITK's unit spacing,
    zero origin and identity direction (physical = voxel).
    """
    image = _image(array, pixel_type)
    if geometry is not None:
        if geometry.ndim != array.ndim:
            raise ValueError(f"a {geometry.ndim}-D geometry for an array of shape {array.shape}")
        spacing, origin, direction = geometry.to_itk()
        image.SetSpacing(spacing)
        image.SetOrigin(origin)
        image.SetDirection(direction)
    return image


def _set_metric(reg: sitk.ImageRegistrationMethod, s: SitkSettings) -> None:
    if s.metric == "mmi":
        reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=s.bins)
    elif s.metric == "jhmi":
        reg.SetMetricAsJointHistogramMutualInformation(numberOfHistogramBins=s.bins,
                                                       varianceForJointPDFSmoothing=1.5)
    elif s.metric == "ncc":
        reg.SetMetricAsCorrelation()
    else:
        reg.SetMetricAsMeanSquares()


def register_sitk(fixed, moving, *, metric: str, fixed_mask=None, moving_mask=None,
                  seed: int = 0, fixed_geometry: Geometry | None = None,
                  moving_geometry: Geometry | None = None, preset: str = "practical",
                  iterations: int | None = None, learning_rate: float | None = None,
                  bins: int | None = None, sampling: float | None = None,
                  levels: int | None = None) -> RegistrationOutput:
    """Affine registration of ``moving`` to ``fixed`` with SimpleITK, in 2-D or 3-D.

    Parameters
    ----------
    fixed, moving : Tensor ``(1, C, H, W)`` or ``(1, C, D, H, W)``
        Images in [0, 1] on any device (copied to the host for ITK); converted to grey by the
        channel mean. Sizes may differ.
    metric : {"mmi", "jhmi", "ncc", "mse"}
    fixed_mask, moving_mask : bool Tensor ``(1, 1, H, W)`` (``(1, 1, D, H, W)``) or None
        Valid pixels; used as the metric's masks.
    seed : int
        Seeds the metric's random sampling (as ``seed + 1``; 0 would be the wall clock).
    fixed_geometry, moving_geometry : Geometry or None
        Where the volumes lie (RAS+); used for volumes only, and only when both are given (see
        the module docstring). Ignored in 2-D.
    preset : {"practical", "paper"}
        Defaults of the remaining options (see the module docstring).
    iterations : int, optional
        Most optimizer iterations per pyramid level.
    learning_rate : float, optional
        ``paper``: the gradient-descent learning rate (raw parameters). ``practical``: the first
        step of regular-step gradient descent, in pixels of displacement (in the geometry's
        unit for volumes with geometry).
    bins : int, optional
        Histogram bins (MI metrics).
    sampling : float, optional
        Share of each level's pixels sampled at random, in (0, 1].
    levels : int, optional
        Pyramid levels: shrink factors ``2^(levels-1), ..., 1``, smoothing sigma half the shrink
        factor (0 at full resolution), in pixels (voxels).

    Returns
    -------
    RegistrationOutput
        The affine :class:`MatrixTransform` (fixed pixel ``(x, y)`` -> moving pixel; 4x4, fixed
        voxel ``(x, y, z)`` -> moving voxel, for volumes) and ``info``: the preset and resolved
        settings, ``metric_value`` (SimpleITK's final value, lower is better),
        ``optimizer_iterations`` (of the last level), ``stop`` (the optimizer's stop condition);
        for volumes also ``space``: ``"world"`` (registered in the geometries' physical space)
        or ``"voxel"``.

    Raises
    ------
    RuntimeError
        SimpleITK's own errors (e.g. "Too many samples map outside moving image buffer") or a
        non-finite result.
    """
    s = settings(metric, preset, iterations=iterations, learning_rate=learning_rate, bins=bins,
                 sampling=sampling, levels=levels)
    f_arr, m_arr = grey_arrays(fixed, moving)
    ndim = f_arr.ndim
    if ndim == 3:
        world = fixed_geometry is not None and moving_geometry is not None
        f_geo = itk_geometry(fixed_geometry if world else None, 3)
        m_geo = itk_geometry(moving_geometry if world else None, 3)
    else:
        f_geo = m_geo = None  # 2-D: pixel space, as before volumes existed
    f_img, m_img = itk_image(f_arr, f_geo), itk_image(m_arr, m_geo)

    reg = sitk.ImageRegistrationMethod()
    reg.SetNumberOfThreads(1)
    _set_metric(reg, s)
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentage(s.sampling, int(seed) % (2**31 - 2) + 1)
    for mask, setter, geo in ((fixed_mask, reg.SetMetricFixedMask, f_geo),
                              (moving_mask, reg.SetMetricMovingMask, m_geo)):
        arr = mask_array(mask)
        if arr is not None:
            setter(itk_image(arr, geo, sitk.sitkUInt8))
    reg.SetInterpolator(sitk.sitkLinear)

    if s.optimizer == "regular-step":
        reg.SetOptimizerAsRegularStepGradientDescent(
            learningRate=s.learning_rate, minStep=s.min_step, numberOfIterations=s.iterations,
            relaxationFactor=0.5, gradientMagnitudeTolerance=1e-8)
        # One step unit = one pixel of displacement, whichever parameter moves.
        reg.SetOptimizerScalesFromPhysicalShift()
    else:
        reg.SetOptimizerAsGradientDescent(
            learningRate=s.learning_rate, numberOfIterations=s.iterations,
            convergenceMinimumValue=s.convergence_value,
            convergenceWindowSize=s.convergence_window,
            estimateLearningRate=reg.Never)

    shrink = [2 ** k for k in reversed(range(s.levels))]
    reg.SetShrinkFactorsPerLevel(shrink)
    reg.SetSmoothingSigmasPerLevel([k / 2 if k > 1 else 0.0 for k in shrink])
    if ndim == 2:
        reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()  # physical = pixels of the full image
        tx = sitk.AffineTransform(2)
        h, w = f_arr.shape
        tx.SetCenter(((w - 1) / 2.0, (h - 1) / 2.0))
    else:
        # In voxels: a physical sigma would blur an anisotropic volume unevenly per axis.
        reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
        tx = sitk.CenteredTransformInitializer(
            f_img, m_img, sitk.AffineTransform(3),
            sitk.CenteredTransformInitializerFilter.GEOMETRY)
    reg.SetInitialTransform(tx, inPlace=True)
    # The method's own thread count does not reach the metric's internal filters: only the
    # global default makes runs repeat bit for bit. Restored afterwards (in-process runs).
    threads = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    try:
        reg.Execute(f_img, m_img)
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)

    if ndim == 2:
        matrix = itk_affine_to_pixel(tx.GetMatrix(), tx.GetTranslation(), tx.GetCenter(),
                                     ImageGeometry.of(f_img), ImageGeometry.of(m_img))
    else:
        matrix = itk_affine_to_voxel(tx.GetMatrix(), tx.GetTranslation(), tx.GetCenter(),
                                     f_geo, m_geo)
    if not np.isfinite(matrix).all():
        raise RuntimeError("SimpleITK returned a non-finite transform")
    info: dict[str, Any] = {
        "preset": preset,
        **{k: v for k, v in s.__dict__.items() if k != "metric"},
        "metric_value": float(reg.GetMetricValue()),
        "optimizer_iterations": int(reg.GetOptimizerIteration()),
        "stop": reg.GetOptimizerStopConditionDescription(),
        "seed": int(seed),
    }
    if ndim == 3:
        info["space"] = "world" if world else "voxel"
    return RegistrationOutput(MatrixTransform(matrix), info=info)


def _method(metric: str):
    def register(fixed, moving, *, fixed_mask=None, moving_mask=None, seed=0,
                 fixed_geometry=None, moving_geometry=None, **params):
        return register_sitk(fixed, moving, metric=metric, fixed_mask=fixed_mask,
                             moving_mask=moving_mask, seed=seed, fixed_geometry=fixed_geometry,
                             moving_geometry=moving_geometry, **params)

    register.__name__ = register.__qualname__ = metric
    register.__doc__ = f"SimpleITK affine registration with the {metric!r} metric; " \
        "options as :func:`register_sitk`."
    return register


mmi = _method("mmi")
jhmi = _method("jhmi")
ncc = _method("ncc")
mse = _method("mse")


# ------------------------------------------------------------------------- B-spline baseline

#: Defaults of ``sitk-bspline``'s deformable stage (as SimpleITK's
#: ``ImageRegistrationMethodBSpline1`` example: L-BFGS-B on one mesh).
BSPLINE_DEFAULTS = {"spacing": 32.0, "bspline_levels": 3, "bspline_iterations": 100,
                    "bspline_sampling": 0.2}


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


def _least_squares_bspline(grid, points: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Coefficients ``grid.coefficient_shape`` whose 2-D field best takes ``target`` ``(K, 2)``
    at ``points`` ``(K, 2)``: the normal equations of the sparse design (the 16 cubic weights of
    each point), with a ridge of 1e-10 times their mean diagonal so that control points no
    sample reaches come out 0, solved directly (``scipy.sparse.linalg.spsolve``).

    :func:`mibench.bspline.fit_coefficients` solves the same problem with LSQR to 1e-14, which
    runs to its 20,000-iteration limit when the target is not exactly a B-spline on the grid
    (ITK's field never is: 2 minutes for a 128 x 128 image, against a fraction of a second).
    """
    from scipy.sparse import coo_matrix, identity
    from scipy.sparse.linalg import spsolve

    from mibench.bspline import local_support

    ny, nx = grid.shape[1], grid.shape[0]
    (bx, wx), (by, wy) = local_support(grid, points, np)
    rows, cols, vals = [], [], []
    for j in range(4):
        iy = by.astype(np.int64) - 1 + j
        for i in range(4):
            ix = bx.astype(np.int64) - 1 + i
            inside = (ix >= 0) & (ix < nx) & (iy >= 0) & (iy < ny)  # none outside the grid
            rows.append(np.flatnonzero(inside))
            cols.append((iy * nx + ix)[inside])
            vals.append((wx[:, i] * wy[:, j])[inside])
    design = coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                        shape=(len(points), nx * ny)).tocsc()
    normal = (design.T @ design).tocsc()
    ridge = 1e-10 * max(float(normal.diagonal().mean()), 1e-300)
    lhs = (normal + ridge * identity(nx * ny, format="csc")).tocsc()
    rhs = np.asarray(design.T @ target)
    coefficients = np.stack([spsolve(lhs, rhs[:, k]) for k in range(2)])
    return coefficients.reshape(grid.coefficient_shape)


def register_sitk_bspline(fixed, moving, *, fixed_mask=None, moving_mask=None, seed: int = 0,
                          fixed_geometry: Geometry | None = None,
                          moving_geometry: Geometry | None = None,
                          spacing: float = BSPLINE_DEFAULTS["spacing"],
                          bspline_levels: int = BSPLINE_DEFAULTS["bspline_levels"],
                          bspline_iterations: int = BSPLINE_DEFAULTS["bspline_iterations"],
                          bspline_sampling: float = BSPLINE_DEFAULTS["bspline_sampling"],
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
    result is *fitted* by least squares (:func:`_least_squares_bspline`) to ITK's mapping
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
    from mibench.bspline import BSplineTransform

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
    threads = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    try:
        reg.Execute(f_img, m_img)
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)

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
    result.coefficients = _least_squares_bspline(result.grid, q, target - q)
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


def bspline(fixed, moving, *, fixed_mask=None, moving_mask=None, seed=0, fixed_geometry=None,
            moving_geometry=None, **params):
    """SimpleITK affine then B-spline registration with Mattes MI; options as
    :func:`register_sitk_bspline`."""
    return register_sitk_bspline(fixed, moving, fixed_mask=fixed_mask, moving_mask=moving_mask,
                                 seed=seed, fixed_geometry=fixed_geometry,
                                 moving_geometry=moving_geometry, **params)
