"""Built-in registration methods, registered through the ``mibench_methods`` hook like any plugin.

Factories are given as ``"module:function"`` strings so that listing imports nothing heavy. The
methods of the estimators (``ncc``, ``mse``, ``nmi``, ... and every third-party estimator) are
not written here: ``mibench_derived_methods`` derives them by one rule (:mod:`.derived`).
"""

import dataclasses
from typing import Any

# The estimators' hook is called, not imported by name: this module's hooks are its names.
from mibench import estimators as _estimators
from mibench.estimators.options import QUANTISERS
from mibench.hookspecs import hookimpl
from mibench.methods.derived import derive_methods
from mibench.methods.options import (
    DRMIME_EXPS,
    DRMIME_PRESETS,
    DRMIME_SAMPLINGS,
    ELASTIX_METRICS,
    SITK_BINNED_METRICS,
    SITK_BSPLINE_DEFAULTS,
    SITK_METRICS,
    TOOLBOX_PRESETS,
    drmime_presets_text,
)
from mibench.methods.params import (
    GRADIENT_TRANSFORM,
    INIT,
    QUIET_OPTIONS,
    TRANSFORM,
    bspline_params,
    levels,
    min_size,
)
from mibench.specs import MethodSpec, Param, Requirement


def cmif_uses_seed(params: dict[str, Any]) -> bool:
    """CMIF draws at random only to quantise by k-means (its seed); quantiles and equal-width
    cells are deterministic."""
    return params.get("quantisation") == "kmeans"


def _estimator_option(estimator: str, name: str, **changes: Any) -> Param:
    """Option ``name`` as the estimator ``estimator`` declares it (with ``changes``, e.g.
    another default): a gradient method passes it on to the estimator unchanged."""
    spec = next(s for s in _estimators.mibench_estimators() if s.name == estimator)
    return dataclasses.replace(spec.param(name), **changes)


def _drmime_params(with_transform: bool = True) -> tuple[Param, ...]:
    """Options of ``mibench.methods.drmime`` (``transform`` only for the affine ``drmime``)."""
    transform = (TRANSFORM,) if with_transform else ()
    return (
        Param("preset", "fire", "defaults of iterations, the three learning rates and "
              f"canny_high: {drmime_presets_text()}", choices=tuple(DRMIME_PRESETS)),
        *transform,
        Param("iterations", None, "Adam steps (default: from the preset)", type=int, ge=0),
        Param("lr_net", None, "learning rate of the statistics network (default: preset)",
              type=float, gt=0),
        Param("lr_transform", None, "learning rate of the transform parameters vL, shared by "
              "all levels (default: preset)", type=float, gt=0),
        Param("lr_offset", None, "learning rate of the full-resolution offset v1 (default: "
              "preset; 0 = no offset)", type=float, ge=0),
        levels(6),
        min_size(),
        Param("blur", 1.0, "Gaussian pre-blur sigma (px) before the pyramid; 0 = none", ge=0),
        Param("sampling", "random", "fixed pixel samples per level: a uniform random "
              "sample_fraction of the (masked) pixels, or the dilated Canny edges",
              choices=DRMIME_SAMPLINGS),
        Param("sample_fraction", 0.1, "share of each level's pixels sampled (random sampling)",
              gt=0, le=1),
        Param("canny_low", 0.0, "Canny low threshold, 0-255 grey levels (edge sampling)", ge=0),
        Param("canny_high", None, "Canny high threshold, 0-255 grey levels (default: preset)",
              type=float, ge=0),
        Param("hidden", 100, "width of the statistics network's two hidden layers", ge=1),
        Param("ema", 0.0, "decay of MINE's moving-average bias correction (e.g. 0.99); "
              "0 = none, as the paper", ge=0, lt=1),
        Param("stable_lme", True, "numerically stable log-mean-exp (same value and gradient as "
              "the paper's plain formula, without overflow)"),
        Param("exp", "taylor", "matrix exponential: the paper's truncated series (10 terms) or "
              "torch.linalg.matrix_exp", choices=DRMIME_EXPS),
        INIT,
    )


_SITK = Requirement(module="SimpleITK", hint='pip install "mibench[sitk]"')
_ELASTIX = Requirement(module="itk", hint='pip install "mibench[elastix]"')
_TOOLBOX_PRESET = Param("preset", "practical", "defaults of the other options: practical (fast, "
                        "tuned on the synthetic pairs) or paper (DRMIME's baseline settings, "
                        "research/drmime.md section 6)", choices=TOOLBOX_PRESETS)


def _toolbox_methods() -> list[MethodSpec]:
    """The SimpleITK and elastix baselines (:mod:`.sitk`, :mod:`.elastix`)."""
    sitk_params = (
        _TOOLBOX_PRESET,
        Param("iterations", None, "most optimizer iterations per pyramid level (paper 5000, "
              "practical 200)", type=int, ge=1),
        Param("learning_rate", None, "paper: plain gradient-descent rate (per metric); "
              "practical: first regular-step step, px (1.0)", type=float, gt=0),
        Param("sampling", None, "share of each level's pixels sampled at random (0.5)",
              type=float, gt=0, le=1),
        Param("levels", None, "pyramid levels, shrink 2^(levels-1)..1 (paper 1, practical 3)",
              type=int, ge=1),
    )
    # ITK's Mattes and joint-histogram metrics silently raise fewer bins to 5.
    bins = Param("bins", None, "histogram bins (paper 100, practical 32; >= 5)", type=int,
                 ge=5)
    specs = [
        MethodSpec(
            name=f"sitk-{metric}",
            description=f"SimpleITK affine registration, {what} metric (ImageRegistrationMethod, "
            "multi-resolution, seeded random sampling, one thread)",
            factory=f"mibench.methods.sitk:{metric}",
            params=sitk_params + ((bins,) if metric in SITK_BINNED_METRICS else ()),
            requires=(_SITK,),
            dims=(2, 3),
        )
        for metric, what in SITK_METRICS.items()
    ]
    specs.append(MethodSpec(
        name="sitk-bspline",
        description="SimpleITK affine (as sitk-mmi), then a cubic B-spline with Mattes MI "
        "(L-BFGS-B over an image pyramid, seeded random sampling, one thread); returns a "
        "B-spline transform",
        factory="mibench.methods.sitk_bspline:bspline",
        params=sitk_params + (
            bins,
            Param("spacing", SITK_BSPLINE_DEFAULTS["spacing"],
                  "B-spline control-point spacing (fixed px)", gt=0),
            Param("bspline_levels", SITK_BSPLINE_DEFAULTS["bspline_levels"],
                  "image pyramid levels of the B-spline stage", ge=1),
            Param("bspline_iterations", SITK_BSPLINE_DEFAULTS["bspline_iterations"],
                  "L-BFGS-B iterations per B-spline level", ge=1),
            Param("bspline_sampling", SITK_BSPLINE_DEFAULTS["bspline_sampling"],
                  "share of each level's pixels the B-spline stage samples at random", gt=0,
                  le=1),
        ),
        requires=(_SITK,),
        dims=(2,),
    ))
    elastix_params = (
        _TOOLBOX_PRESET,
        Param("resolutions", None, "pyramid levels (paper 4, practical 3)", type=int, ge=1),
        Param("bins", None, "histogram bins (paper 64, practical 32)", type=int, ge=1),
        Param("iterations", None, "iterations per resolution (paper 5000, practical 250)",
              type=int, ge=1),
        Param("samples", None, "random samples per iteration (2048)", type=int, ge=1),
    )
    for metric, what in ELASTIX_METRICS.items():
        specs.append(MethodSpec(
            name=f"elastix-{metric}",
            description=f"elastix affine registration with {what} (default affine parameter "
            "map, adaptive stochastic gradient descent, seeded, one thread)",
            factory=f"mibench.methods.elastix:{metric}",
            params=elastix_params,
            requires=(_ELASTIX,),
            dims=(2, 3),
        ))
    specs.append(MethodSpec(
        name="elastix-bspline",
        description="elastix affine then B-spline with AdvancedMattesMutualInformation, the "
        "parameter files of ANHIR's organisers (BIRL configs/elastix_*.txt, with the "
        "RandomCoordinate sampler so that a seed repeats); returns a B-spline transform",
        factory="mibench.methods.elastix:bspline",
        params=(
            Param("resolutions", None, "pyramid levels (BIRL: 6)", type=int, ge=1),
            Param("bins", None, "histogram bins (BIRL: 64)", type=int, ge=1),
            Param("iterations", None, "iterations per resolution (BIRL: 999)", type=int, ge=1),
            Param("samples", None, "random samples per iteration (BIRL: 4096)", type=int, ge=1),
            Param("spacing", None, "final control-point spacing, px (BIRL: 32)", type=float,
                  gt=0),
        ),
        requires=(_ELASTIX,),
        dims=(2,),
    ))
    return specs


@hookimpl
def mibench_methods():
    return [
        MethodSpec(
            name="identity",
            description="No registration: the identity transform (scores the initial error).",
            factory="mibench.methods.identity:register",
            default=True,
            needs_content=False,
            baseline=True,
            uses_seed=False,
            dims=(2, 3),
        ),
        MethodSpec(
            name="drmime",
            description="DRMIME (Nan et al. 2020): MINE statistics network shared by all "
            "levels, matrix-exponential affine transform, simultaneous multi-resolution, "
            "joint Adam",
            factory="mibench.methods.drmime:drmime",
            # transform=bspline (2-D): a B-spline FFD on the affine result, trained with the
            # same critic (mibench.methods.drmime_bspline); its options are quiet.
            params=(*(GRADIENT_TRANSFORM if p.name == "transform" else p
                      for p in _drmime_params()), *bspline_params()),
            quiet=QUIET_OPTIONS,
            default=True,
            preferred_reference=True,
            dims=(2, 3),
        ),
        MethodSpec(
            name="drmime-perspective",
            description="DRMIME with the 8-parameter perspective (sl(3)) transform",
            factory="mibench.methods.drmime:drmime_perspective",
            params=_drmime_params(with_transform=False),
        ),
        *_toolbox_methods(),
        MethodSpec(
            name="cmif",
            description="Global rigid alignment by CMIF (Öfverstedt et al. 2022): MI for every "
            "integer shift at once by FFT, for every angle of a rotation sweep (on a reduced "
            "copy), refined around the best angle at full resolution, sub-pixel peak",
            factory="mibench.methods.cmif:register",
            uses_seed=cmif_uses_seed,
            dims=(2, 3),
            params=(
                _estimator_option("cmif", "levels"),
                _estimator_option("cmif", "levels_moving"),
                Param("quantisation", "quantile", "equal-population quantiles, k-means on the "
                      "pixel vectors (the authors' choice) or equal-width cells",
                      choices=QUANTISERS),
                Param("max_angle", 180.0, "sweep over [-max_angle, max_angle] degrees "
                      "(180 = the full circle)", ge=0),
                Param("angle_step", 3.0, "spacing of the sweep (degrees)", gt=0),
                Param("candidates", 3, "best local maxima of the sweep refined at full "
                      "resolution", ge=1),
                Param("refine", 4, "refinement rounds per candidate (each halves the angle "
                      "spacing)", ge=0),
                Param("coarse_side", 128, "the sweep runs on copies reduced by an integer "
                      "factor to at most this side (px)", ge=8),
                Param("min_overlap", 0.5, "smallest overlap of a valid shift, as a share of "
                      "the smaller mask", ge=0, le=1),
                _estimator_option("cmif", "normalisation"),
                Param("subpixel", True, "parabolic peak refinement in x, y and the angle"),
                Param("angle_batch", 8, "angles computed together (memory grows with it)",
                      ge=1),
                Param("highpass_sigma", 2.0, "subtract a Gaussian blur of this sigma (px, "
                      "within the mask) before quantising; 0 = off (the paper)", ge=0),
                _estimator_option("cmif", "precision"),
                _estimator_option("cmif", "entropy_pass"),
                Param("max_angle_3d", 15.0, "volumes: the coarse rotation grid spans "
                      "[-max_angle_3d, max_angle_3d] degrees about each of x, y, z", ge=0),
                Param("angle_step_3d", 7.5, "volumes: spacing of the coarse rotation grid "
                      "(degrees); (2n+1)^3 rotations", gt=0),
                Param("coarse_side_3d", 32, "volumes: the coarse search runs on copies reduced "
                      "to at most this side (voxels)", ge=4),
                Param("fine_side_3d", 64, "volumes: the refinement runs on copies reduced to "
                      "at most this side (voxels); 0 = full resolution", ge=0),
            ),
        ),
    ]


@hookimpl
def mibench_derived_methods(estimators):
    return derive_methods(estimators)
