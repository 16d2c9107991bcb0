"""SimpleITK baselines: ``sitk-mmi``, ``sitk-jhmi``, ``sitk-ncc`` and ``sitk-mse``.

(``sitk-bspline``, this affine registration then a B-spline, is in :mod:`.sitk_bspline`.)

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


def execute_single_threaded(reg, fixed_image, moving_image) -> None:
    """Run ``reg`` (an ``ImageRegistrationMethod``) with one ITK thread.

    The method's own thread count does not reach the metric's internal filters: only the
    global default makes runs repeat bit for bit. It is restored afterwards (in-process runs).
    """
    threads = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    try:
        reg.Execute(fixed_image, moving_image)
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)


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
    execute_single_threaded(reg, f_img, m_img)

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
