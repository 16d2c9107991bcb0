"""Options shared by several method specs, declared once (pure Python: listing imports it).

The engine options of the methods derived from estimators (:mod:`.derived`) and the pyramid,
transform and start options that DRMIME shares with them.

The B-spline stage's options (:func:`bspline_params`) came after task keys were recorded: they
are *quiet* (:data:`QUIET_OPTIONS`), left out of a method's resolved options, and so of its task
keys, unless given (the spec's ``quiet``, :class:`mibench.specs.PluginSpec`); the engine takes their
defaults when they are absent.
"""

from __future__ import annotations

from mibench.methods.options import (
    BSPLINE_DEFAULTS,
    GRADIENT_TRANSFORMS,
    INITS,
    MULTIRES,
    SCHEDULES,
    TRANSFORMS,
)
from mibench.specs import Param

INIT = Param("init", "identity", "starting transform: the pixel identity (for volumes with "
             "geometry, the world identity), or CMIF's global rigid search (every rotation and "
             "translation) refined by this method", choices=INITS)
TRANSFORM = Param("transform", "affine", "transform model (2-D: affine 6, perspective 8, rigid 3 "
                  "parameters; 3-D: affine 12, rigid 6)", choices=TRANSFORMS)
GRADIENT_TRANSFORM = Param(
    "transform", "affine", "transform model (2-D: affine 6, perspective 8, rigid 3 parameters; "
    "3-D: affine 12, rigid 6); bspline: the affine registration, then a cubic B-spline "
    "free-form deformation on it (elastix's order), refined level by level (volumes: the "
    "estimator-driven methods, not drmime; spacing in voxels)",
    choices=GRADIENT_TRANSFORMS)


def bspline_params() -> tuple[Param, ...]:
    """The options of the gradient engine's B-spline stage (``transform="bspline"``; quiet: see
    the module docstring)."""
    d = BSPLINE_DEFAULTS
    return (
        Param("grid_spacing", d["grid_spacing"], "B-spline control-point spacing at full "
              "resolution, px (voxels) of the moving image; pyramid level s starts at 2^s "
              "times it and is refined exactly (halved) for the next level "
              "(transform=bspline)", gt=0),
        Param("bending_weight", d["bending_weight"], "weight of the bending-energy penalty "
              "(thin-plate energy per fixed pixel, 1/px^2) added to the loss "
              "(transform=bspline)", ge=0),
        Param("bspline_iterations", d["bspline_iterations"], "Adam steps per pyramid level "
              "of the B-spline stage (transform=bspline; 0: the affine result on a zero field)",
              ge=0),
        Param("bspline_lr", d["bspline_lr"], "Adam learning rate on the B-spline coefficients "
              "at full resolution, px per step; level s uses 2^s times it (transform=bspline)",
              gt=0),
    )


#: Options left out of the resolved options (and task keys) unless given.
QUIET_OPTIONS = tuple(p.name for p in bspline_params())


def min_size(default: int = 32) -> Param:
    """``min_size`` of a method with a Gaussian pyramid."""
    return Param("min_size", default, "smallest allowed side (px, voxels for volumes) of the "
                 "coarsest pyramid level", ge=1)


def levels(default: int) -> Param:
    """``levels`` of a method with a Gaussian pyramid (:mod:`mibench.methods.pyramid`)."""
    return Param("levels", default, "Gaussian pyramid levels (fewer if the coarsest would go "
                 "below min_size)", ge=1)


def gradient_params() -> tuple[Param, ...]:
    """The engine options of a derived method whose estimator may have a gradient
    (:func:`mibench.methods.gradient.register_with_estimator`; the derivative-free engine reads
    the same options when the estimator's options leave it without one)."""
    return (
        Param("iterations", 200, "Adam steps (in total for simultaneous, per level for "
              "coarse-to-fine; 0 = the starting transform); without a gradient: most Powell "
              "iterations per stage", ge=0),
        levels(4),
        Param("lr", 0.02, "Adam learning rate on the matrix-exponential parameters "
              "(normalised coordinates); without a gradient: Powell's initial step", gt=0),
        GRADIENT_TRANSFORM,
        Param("multires", "simultaneous", "all levels every step with one shared transform "
              "(DRMIME), or one level at a time", choices=MULTIRES),
        min_size(32),
        Param("schedule", "cosine", "learning-rate schedule (cosine decay to 2% of lr, or "
              "constant); Adam only", choices=SCHEDULES),
        INIT,
        *bspline_params(),
    )


def derivative_free_params() -> tuple[Param, ...]:
    """The engine options of a derived method whose estimator has no gradient
    (:func:`mibench.methods.derivative_free.register_derivative_free`): the gradient engine's
    names, with Powell's defaults (coarse to fine from 64 px: hard-count measures are too
    noisy on smaller levels)."""
    return (
        Param("iterations", 200, "most Powell iterations (a line search along each direction) "
              "per stage; Powell stops earlier when converged; 0 = the starting transform",
              ge=0),
        levels(4),
        Param("lr", 0.02, "Powell's initial step on the matrix-exponential parameters "
              "(normalised coordinates)", gt=0),
        TRANSFORM,
        Param("multires", "coarse-to-fine", "one level at a time, coarsest first, or the mean "
              "loss of all levels at once", choices=MULTIRES),
        min_size(64),
        INIT,
    )
