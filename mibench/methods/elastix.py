"""elastix baselines: ``elastix-ami`` (AdvancedMattesMutualInformation) and ``elastix-nmi``
(NormalizedMutualInformation), through itk-elastix.

elastix's default ``affine`` parameter map (multi-resolution smoothing pyramids, adaptive
stochastic gradient descent with automatic parameter and scale estimation, RandomCoordinate
sampling of 2048 points drawn anew every iteration, linear interpolation) with the metric
replaced. The transform starts at the pixel identity (elastix puts the centre of rotation at the
fixed image's centre). Images are grey float32 in [0, 255] with unit spacing and zero origin, so
physical space is pixel space; the result parameter map is converted with
:func:`mibench.methods.itk_convert.elastix_affine_to_pixel`. Masks become elastix's fixed and
moving masks (not eroded).

Volumes (``(1, C, D, H, W)`` tensors) are registered in 3-D (elastix's 12-parameter affine
transform) in physical space: each image, and its mask, gets its
:class:`~mibench.geometry.Geometry`'s ITK (LPS) spacing, origin and direction
(``Geometry.to_itk()``; elastix uses direction cosines), and the result parameter map goes back
exactly to the 4x4 fixed voxel -> moving voxel matrix
(:func:`~mibench.methods.itk_convert.elastix_affine_parameters`,
:func:`~mibench.methods.itk_convert.itk_affine_to_voxel`). A volume pair without both
geometries is registered in voxel space; 2-D pairs in pixel space, as before, whatever their
geometry.

Presets (each value can be overridden by its option):

``paper``
    As [3P] attributes to the paper (unverified): 4 resolutions, 64 histogram bins, 5000
    iterations per resolution.
``practical`` (default)
    3 resolutions, 32 bins (elastix's default), 250 iterations per resolution (elastix's
    default is 256): about a second per 256^2 pair on one core.

Runs repeat exactly: ``RandomSeed`` is set from the task seed and elastix runs on one thread.
itk-elastix is an optional extra (``pip install "mibench[elastix]"``, about 1.6 GB with ITK);
its first import takes tens of seconds.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any

import numpy as np

from mibench.errors import check_choice
from mibench.geometry import Geometry
from mibench.methods.itk_convert import (
    ImageGeometry,
    elastix_affine_parameters,
    elastix_affine_to_pixel,
    grey_arrays,
    itk_affine_to_voxel,
    itk_geometry,
    mask_array,
)
from mibench.methods.options import ELASTIX_METRICS, TOOLBOX_PRESETS
from mibench.transform import MatrixTransform, RegistrationOutput


@dataclass(frozen=True)
class ElastixSettings:
    """One elastix registration: the metric and the preset values after overrides."""

    metric: str
    resolutions: int
    bins: int
    iterations: int
    samples: int


def settings(metric: str, preset: str = "practical", *, resolutions: int | None = None,
             bins: int | None = None, iterations: int | None = None,
             samples: int | None = None) -> ElastixSettings:
    """Resolve a preset and its overrides (None = the preset's value)."""
    check_choice("metric", metric, ELASTIX_METRICS)
    check_choice("preset", preset, TOOLBOX_PRESETS)
    if preset == "paper":
        base = ElastixSettings(metric, 4, 64, 5000, 2048)
    else:  # practical
        base = ElastixSettings(metric, 3, 32, 250, 2048)
    over = {"resolutions": resolutions, "bins": bins, "iterations": iterations,
            "samples": samples}
    out = ElastixSettings(**{**base.__dict__,
                             **{k: v for k, v in over.items() if v is not None}})
    if min(out.resolutions, out.bins, out.iterations, out.samples) < 1:
        raise ValueError(f"invalid settings {out}: every count must be >= 1")
    return out


def parameter_map(s: ElastixSettings, seed: int) -> dict[str, list[str]]:
    """The elastix parameter map for ``s`` (strings, as elastix wants them): the values that
    differ from elastix's default affine map."""
    return {
        "Metric": [ELASTIX_METRICS[s.metric]],
        "NumberOfResolutions": [str(s.resolutions)],
        "NumberOfHistogramBins": [str(s.bins)],
        "MaximumNumberOfIterations": [str(s.iterations)],
        "NumberOfSpatialSamples": [str(s.samples)],
        # elastix draws its samples from this seed; 0 is allowed but keep it apart from "unset".
        "RandomSeed": [str(int(seed) % (2**31 - 2) + 1)],
        "ErodeMask": ["false"],
        "WriteResultImage": ["false"],
    }


def _geometry(image) -> ImageGeometry:
    import itk

    direction = itk.array_from_matrix(image.GetDirection()).reshape(-1)
    return ImageGeometry(tuple(map(float, image.GetSpacing())),
                         tuple(map(float, image.GetOrigin())),
                         tuple(map(float, direction)))


def _itk_image(array: np.ndarray, geometry: Geometry | None):
    """An ITK image of ``array`` (numpy ``(H, W)`` / ``(D, H, W)``), placed by ``geometry``'s
    ITK (LPS) spacing, origin and direction when given (unit spacing otherwise)."""
    import itk

    image = itk.image_from_array(array)
    if geometry is not None:
        spacing, origin, direction = geometry.to_itk()
        n = geometry.ndim
        image.SetSpacing(spacing)
        image.SetOrigin(origin)
        image.SetDirection(itk.matrix_from_array(np.asarray(direction).reshape(n, n)))
    return image


def _require_elastix() -> None:
    # The requirement names only ``itk`` (finding a submodule would import ITK on listing).
    if importlib.util.find_spec("itk.ElastixPython") is None:
        raise RuntimeError('ITK is installed without elastix: pip install "mibench[elastix]"')


def _run(f_img, m_img, maps: list, fixed_mask: tuple, moving_mask: tuple):
    """Run elastix on one thread, silently, with the parameter ``maps`` in order; the masks
    are ``(mask tensor or None, geometry placing it or None)``. Returns elastix's result
    ``ParameterObject``."""
    import itk

    params = itk.ParameterObject.New()
    for pmap in maps:
        params.AddParameterMap(pmap)
    reg = itk.ElastixRegistrationMethod.New(f_img, m_img)
    reg.SetParameterObject(params)
    reg.SetNumberOfThreads(1)
    reg.SetLogToConsole(False)
    reg.SetLogToFile(False)
    for (mask, geo), setter in ((fixed_mask, reg.SetFixedMask),
                                (moving_mask, reg.SetMovingMask)):
        arr = mask_array(mask)
        if arr is not None:
            setter(_itk_image(arr, geo))
    reg.UpdateLargestPossibleRegion()
    return reg.GetTransformParameterObject()


def register_elastix(fixed, moving, *, metric: str, fixed_mask=None, moving_mask=None,
                     seed: int = 0, fixed_geometry: Geometry | None = None,
                     moving_geometry: Geometry | None = None, preset: str = "practical",
                     resolutions: int | None = None, bins: int | None = None,
                     iterations: int | None = None, samples: int | None = None
                     ) -> RegistrationOutput:
    """Affine registration of ``moving`` to ``fixed`` with elastix, in 2-D or 3-D.

    Parameters
    ----------
    fixed, moving : Tensor ``(1, C, H, W)`` or ``(1, C, D, H, W)``
        Images in [0, 1] on any device (copied to the host); grey by the channel mean.
    metric : {"ami", "nmi"}
        AdvancedMattesMutualInformation or NormalizedMutualInformation.
    fixed_mask, moving_mask : bool Tensor ``(1, 1, H, W)`` (``(1, 1, D, H, W)``) or None
        Valid pixels; passed to elastix as masks.
    seed : int
        elastix's ``RandomSeed`` (as ``seed + 1``).
    fixed_geometry, moving_geometry : Geometry or None
        Where the volumes lie (RAS+); used for volumes only, and only when both are given.
    preset : {"practical", "paper"}
        Defaults of the options below (see the module docstring).
    resolutions, bins, iterations, samples : int, optional
        Pyramid levels, histogram bins, iterations per level, random samples per iteration.

    Returns
    -------
    RegistrationOutput
        The affine :class:`MatrixTransform` (fixed pixel ``(x, y)`` -> moving pixel; 4x4 fixed
        voxel -> moving voxel for volumes) and ``info`` with the preset and resolved settings
        (for volumes also ``space``: ``"world"`` or ``"voxel"``).

    Raises
    ------
    RuntimeError
        elastix's own errors, or a non-finite result.
    """
    import itk

    _require_elastix()
    s = settings(metric, preset, resolutions=resolutions, bins=bins, iterations=iterations,
                 samples=samples)
    f_arr, m_arr = grey_arrays(fixed, moving)
    ndim = f_arr.ndim
    world = ndim == 3 and fixed_geometry is not None and moving_geometry is not None
    f_geo = m_geo = None  # 2-D: pixel space, as before volumes existed
    if ndim == 3:
        f_geo = itk_geometry(fixed_geometry if world else None, 3)
        m_geo = itk_geometry(moving_geometry if world else None, 3)
    f_img, m_img = _itk_image(f_arr, f_geo), _itk_image(m_arr, m_geo)

    pmap = itk.ParameterObject.New().GetDefaultParameterMap("affine", s.resolutions)
    for key, value in parameter_map(s, seed).items():
        pmap[key] = value
    result = _run(f_img, m_img, [pmap], (fixed_mask, f_geo), (moving_mask, m_geo))
    if result.GetNumberOfParameterMaps() != 1:
        raise RuntimeError(f"elastix returned {result.GetNumberOfParameterMaps()} transforms; "
                           "expected one")
    rmap = {k: list(v) for k, v in result.GetParameterMap(0).items()}
    if ndim == 2:
        matrix = elastix_affine_to_pixel(rmap, _geometry(f_img), _geometry(m_img))
    else:
        a, t, c = elastix_affine_parameters(rmap)
        matrix = itk_affine_to_voxel(a.ravel(), t, c, f_geo, m_geo)
    if not np.isfinite(matrix).all():
        raise RuntimeError("elastix returned a non-finite transform")
    info: dict[str, Any] = {"preset": preset,
                            **{k: v for k, v in s.__dict__.items() if k != "metric"},
                            "seed": int(seed)}
    if ndim == 3:
        info["space"] = "world" if world else "voxel"
    return RegistrationOutput(MatrixTransform(matrix), info=info)


def warm_up() -> None:
    """Load ITK's lazily imported elastix classes (tens of seconds the first time in a process),
    so that the runner can do it before it starts timing the registration."""
    import itk

    itk.ParameterObject.New()
    itk.image_from_array(np.zeros((2, 2), np.float32))


def _method(metric: str):
    def register(fixed, moving, *, fixed_mask=None, moving_mask=None, seed=0,
                 fixed_geometry=None, moving_geometry=None, **params):
        return register_elastix(fixed, moving, metric=metric, fixed_mask=fixed_mask,
                                moving_mask=moving_mask, seed=seed,
                                fixed_geometry=fixed_geometry, moving_geometry=moving_geometry,
                                **params)

    register.__name__ = register.__qualname__ = metric
    register.warm_up = warm_up
    register.__doc__ = f"elastix affine registration with {ELASTIX_METRICS[metric]}; options as " \
        ":func:`register_elastix`."
    return register


ami = _method("ami")
nmi = _method("nmi")


# ------------------------------------------------------------------------- B-spline baseline

#: ``elastix-bspline``'s parameters: the elastix parameter files of ANHIR's organisers' benchmark
#: framework BIRL (``configs/elastix_affine.txt`` and ``configs/elastix_bspline.txt`` of
#: https://github.com/Borda/BIRL, commit df148b1: elastix's model-zoo example file for B-spline
#: registration with their values), the affine map then the B-spline map, combined by
#: composition. The option names of ``elastix-bspline`` override the values marked. One value
#: departs from BIRL's files: ``ImageSampler`` is ``RandomCoordinate`` (elastix's default
#: sampler) instead of ``Random``, whose draws within a mask ignore ``RandomSeed`` (two runs
#: with one seed differed by up to 4 px in their coefficients, itk-elastix 0.25.4), so
#: results would not repeat.
BIRL_PARAMETERS = {
    "FixedInternalImagePixelType": ["float"], "MovingInternalImagePixelType": ["float"],
    "UseDirectionCosines": ["true"],
    "Registration": ["MultiResolutionRegistration"],
    "Interpolator": ["BSplineInterpolator"], "ResampleInterpolator": ["FinalBSplineInterpolator"],
    "Resampler": ["DefaultResampler"],
    "FixedImagePyramid": ["FixedRecursiveImagePyramid"],
    "MovingImagePyramid": ["MovingRecursiveImagePyramid"],
    "Optimizer": ["AdaptiveStochasticGradientDescent"],
    "Metric": ["AdvancedMattesMutualInformation"],
    "HowToCombineTransforms": ["Compose"],
    "NumberOfHistogramBins": ["64"],  # bins
    "ErodeMask": ["false"],
    "NumberOfResolutions": ["6"],  # resolutions
    "MaximumNumberOfIterations": ["999"],  # iterations
    "MaximumStepLength": ["5.0"],
    "NumberOfSpatialSamples": ["4096"],  # samples
    "NewSamplesEveryIteration": ["true"], "ImageSampler": ["RandomCoordinate"],
    "BSplineInterpolationOrder": ["2"], "FinalBSplineInterpolationOrder": ["3"],
    "DefaultPixelValue": ["0"], "WriteResultImage": ["false"],
}
#: BIRL's ``FinalGridSpacingInVoxels`` (px at the last resolution; halved per resolution before).
BIRL_GRID_SPACING = 32.0


def bspline_parameter_maps(seed: int, *, resolutions: int | None = None,
                           bins: int | None = None, iterations: int | None = None,
                           samples: int | None = None, spacing: float | None = None
                           ) -> list[dict[str, list[str]]]:
    """The affine and B-spline parameter maps of ``elastix-bspline`` (:data:`BIRL_PARAMETERS`
    with the overrides that are not None; ``RandomSeed`` from ``seed`` as the affine methods).
    ``FinalGridSpacingInVoxels`` is the spacing in pixels (the images are in pixel space)."""
    common = dict(BIRL_PARAMETERS)
    for key, value in (("NumberOfResolutions", resolutions), ("NumberOfHistogramBins", bins),
                       ("MaximumNumberOfIterations", iterations),
                       ("NumberOfSpatialSamples", samples)):
        if value is not None:
            if int(value) < 1:
                raise ValueError(f"elastix-bspline: {key} must be >= 1, got {value}")
            common[key] = [str(int(value))]
    common["RandomSeed"] = [str(int(seed) % (2**31 - 2) + 1)]
    grid = BIRL_GRID_SPACING if spacing is None else float(spacing)
    if grid <= 0:
        raise ValueError(f"elastix-bspline: spacing must be > 0, got {spacing}")
    return [{**common, "Transform": ["AffineTransform"]},
            {**common, "Transform": ["BSplineTransform"],
             "FinalGridSpacingInVoxels": [repr(grid)]}]


def elastix_bspline_to_mibench(affine_map: dict[str, list[str]],
                               bspline_map: dict[str, list[str]], fixed_geometry: ImageGeometry,
                               moving_geometry: ImageGeometry):
    """elastix's composed result (the affine map, then the B-spline map, ``Compose``) as a
    :class:`mibench.bspline.BSplineTransform`, exactly: elastix's order and grid placement are
    mibench's (:mod:`mibench.bspline`), so the grid is ``GridOrigin``, ``GridSpacing``,
    ``GridSize`` and the coefficients ``TransformParameters`` (x-fastest, one component after
    the other). Images in pixel space (unit spacing, zero origin, identity direction) only."""
    from mibench.bspline import BSplineTransform, ControlGrid

    for geo in (fixed_geometry, moving_geometry):
        if not (np.allclose(geo.spacing, 1) and np.allclose(geo.origin, 0)
                and np.allclose(geo.direction, np.eye(2).ravel())):
            raise ValueError("elastix-bspline converts results in pixel space only")
    n = 2
    if bspline_map.get("Transform", [""])[0] != "BSplineTransform" or \
            bspline_map.get("HowToCombineTransforms", ["Compose"])[0] != "Compose":
        raise ValueError("the second elastix map must be a composed BSplineTransform")
    if int(bspline_map.get("BSplineTransformSplineOrder", ["3"])[0]) != 3:
        raise ValueError("only cubic elastix B-splines are read")
    direction = np.asarray(bspline_map.get("GridDirection", ["1", "0", "0", "1"]), float)
    if not np.allclose(direction, np.eye(n).ravel()):
        raise ValueError("only an identity elastix grid direction maps to mibench's grid")
    grid = ControlGrid(tuple(float(v) for v in bspline_map["GridOrigin"]),
                       tuple(float(v) for v in bspline_map["GridSpacing"]),
                       tuple(int(float(v)) for v in bspline_map["GridSize"]))
    coefficients = np.asarray(bspline_map["TransformParameters"], dtype=np.float64)
    matrix = elastix_affine_to_pixel(affine_map, fixed_geometry, moving_geometry)
    return BSplineTransform(grid, coefficients.reshape(grid.coefficient_shape), matrix)


def run_elastix_bspline(fixed, moving, *, fixed_mask=None, moving_mask=None, seed: int = 0,
                        resolutions: int | None = None, bins: int | None = None,
                        iterations: int | None = None, samples: int | None = None,
                        spacing: float | None = None):
    """Run elastix's affine then B-spline registration (:func:`bspline_parameter_maps`) in 2-D
    pixel space; returns elastix's result ``ParameterObject`` (what transformix reads), the
    fixed and moving ITK images, and the maps it ran with."""
    _require_elastix()
    f_arr, m_arr = grey_arrays(fixed, moving)
    if f_arr.ndim != 2:
        raise ValueError("elastix-bspline registers 2-D images only")
    f_img, m_img = _itk_image(f_arr, None), _itk_image(m_arr, None)
    maps = bspline_parameter_maps(seed, resolutions=resolutions, bins=bins,
                                  iterations=iterations, samples=samples, spacing=spacing)
    result = _run(f_img, m_img, maps, (fixed_mask, None), (moving_mask, None))
    return result, f_img, m_img, maps


def register_elastix_bspline(fixed, moving, *, fixed_mask=None, moving_mask=None,
                             seed: int = 0, fixed_geometry: Geometry | None = None,
                             moving_geometry: Geometry | None = None,
                             resolutions: int | None = None, bins: int | None = None,
                             iterations: int | None = None, samples: int | None = None,
                             spacing: float | None = None) -> RegistrationOutput:
    """elastix affine then B-spline registration with AdvancedMattesMutualInformation, in 2-D
    pixel space, with ANHIR's organisers' parameter files (:data:`BIRL_PARAMETERS`).

    The result is converted exactly (:func:`elastix_bspline_to_mibench`): it maps every fixed
    pixel where transformix's deformation field sends it (to float32 precision; tested).
    The geometries are not used (pixel space).

    Returns
    -------
    RegistrationOutput
        A :class:`mibench.bspline.BSplineTransform` (fixed pixel -> moving pixel) and ``info``
        with the resolved parameters.
    """
    result, f_img, m_img, maps = run_elastix_bspline(
        fixed, moving, fixed_mask=fixed_mask, moving_mask=moving_mask, seed=seed,
        resolutions=resolutions, bins=bins, iterations=iterations, samples=samples,
        spacing=spacing)
    if result.GetNumberOfParameterMaps() != 2:
        raise RuntimeError(f"elastix returned {result.GetNumberOfParameterMaps()} transforms; "
                           "expected the affine and the B-spline")
    rmaps = [{k: list(v) for k, v in result.GetParameterMap(i).items()} for i in range(2)]
    transform = elastix_bspline_to_mibench(rmaps[0], rmaps[1], _geometry(f_img),
                                           _geometry(m_img))
    if not transform.is_valid:
        raise RuntimeError("elastix returned a non-finite transform")
    info = {key: maps[1][key][0] for key in ("NumberOfResolutions", "NumberOfHistogramBins",
                                             "MaximumNumberOfIterations",
                                             "NumberOfSpatialSamples",
                                             "FinalGridSpacingInVoxels")}
    return RegistrationOutput(transform, info={**info, "seed": int(seed)})


#: The ``elastix-bspline`` method's factory.
bspline = register_elastix_bspline
bspline.warm_up = warm_up
