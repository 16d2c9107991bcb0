"""The named choices and presets of the methods' options, declared once.

The method specs (:mod:`mibench.methods`) offer them as ``Param`` choices (and print the presets
in their help), and the algorithms check them and read the presets, from the same constants.
Pure Python: listing the plugins imports this module, never torch or a toolbox.
"""

from __future__ import annotations

import re
from typing import Any

#: Transform models and their number of parameters in 2-D and in 3-D
#: (:mod:`mibench.methods.transform_models`; perspective is 2-D only).
TRANSFORM_PARAMS = {"affine": 6, "perspective": 8, "rigid": 3}
TRANSFORM_PARAMS_3D = {"affine": 12, "rigid": 6}
TRANSFORMS = tuple(TRANSFORM_PARAMS)
#: The gradient engine's transforms: the matrix models, and ``"bspline"``: the affine model
#: first, then a cubic B-spline free-form deformation on it (:mod:`mibench.bspline`).
GRADIENT_TRANSFORMS = TRANSFORMS + ("bspline",)
#: Defaults of the gradient engine's B-spline stage (``transform="bspline"``): control-point
#: spacing at full resolution (px), bending-energy weight, Adam steps per pyramid level and
#: Adam learning rate on the coefficients at full resolution (px per step). The spacing is the
#: final one of ``elastix-bspline``'s parameter file (32 px); at 16 px MI found more freedom
#: than the synthetic elastic pairs need and folded (up to 5 % of a pair's pixels;
#: docs/performance.md, "Deformable registration").
BSPLINE_DEFAULTS: dict[str, Any] = {"grid_spacing": 32.0, "bending_weight": 1.0,
                                    "bspline_iterations": 100, "bspline_lr": 0.25}
#: Defaults of ``sitk-bspline``'s deformable stage (as SimpleITK's
#: ``ImageRegistrationMethodBSpline1`` example: L-BFGS-B on one mesh): control-point spacing
#: (fixed px), image pyramid levels, L-BFGS-B iterations per level, share of pixels sampled.
SITK_BSPLINE_DEFAULTS: dict[str, Any] = {"spacing": 32.0, "bspline_levels": 3,
                                         "bspline_iterations": 100, "bspline_sampling": 0.2}
#: Where the local methods start (:mod:`mibench.methods.initial`).
INITS = ("identity", "cmif")
#: Multi-resolution schemes and learning-rate schedules of the gradient methods.
MULTIRES = ("simultaneous", "coarse-to-fine")
SCHEDULES = ("cosine", "constant")

#: DRMIME's presets: learning rates and iterations of the released notebooks (affine;
#: drmime.md section 1), and the Canny high threshold each dataset's edge sampling used (0-255
#: grey levels).
DRMIME_PRESETS: dict[str, dict[str, Any]] = {
    "fire": {"iterations": 500, "lr_net": 1e-2, "lr_transform": 1e-3, "lr_offset": 1e-5,
             "canny_high": 10.0},
    "anhir": {"iterations": 500, "lr_net": 1e-3, "lr_transform": 5e-3, "lr_offset": 1e-4,
              "canny_high": 30.0},
}
#: DRMIME's fixed-pixel samples: uniform random, or the dilated Canny edges.
DRMIME_SAMPLINGS = ("random", "edges")
#: DRMIME's matrix exponentials: the paper's truncated series, or torch's exact one.
DRMIME_EXPS = ("taylor", "matrix_exp")

#: Presets of the SimpleITK and elastix baselines.
TOOLBOX_PRESETS = ("practical", "paper")
#: The SimpleITK metrics by method suffix (``sitk-mmi``, ...), in words.
SITK_METRICS = {"mmi": "Mattes MI", "jhmi": "joint-histogram MI", "ncc": "correlation",
                "mse": "mean squares"}
#: The SimpleITK metrics that bin intensities (and take a ``bins`` option).
SITK_BINNED_METRICS = ("mmi", "jhmi")
#: The elastix metrics by method suffix (``elastix-ami``, ...), as elastix names them.
ELASTIX_METRICS = {"ami": "AdvancedMattesMutualInformation",
                   "nmi": "NormalizedMutualInformation"}


def _short(value: Any) -> str:
    """A preset value as the help text writes it: ``500``, ``1e-2``, ``5e-3``, ``10``."""
    if isinstance(value, float) and not value.is_integer():
        return re.sub(r"e-0*", "e-", f"{value:.0e}")
    return str(int(value))


def drmime_presets_text() -> str:
    """``fire (500, 1e-2, 1e-3, 1e-5, 10), anhir (...)``: each preset's iterations, three
    learning rates and Canny threshold, in the order of its keys."""
    return ", ".join(f"{name} ({', '.join(map(_short, values.values()))})"
                     for name, values in DRMIME_PRESETS.items())
