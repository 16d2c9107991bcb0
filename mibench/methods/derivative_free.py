"""Derivative-free registration with any estimator: Powell's method on the gradient engine's model.

The engine for estimators without a gradient (hard-count histograms, MINE, third-party measures
with ``differentiable=False``): the same matrix-exponential transform, Gaussian pyramid, starting
transform and loss as :mod:`.gradient` (:mod:`.objective`), optimised by
``scipy.optimize.minimize(method="Powell")`` (conjugate directions, Brent line searches): only
values of the estimator are needed. It takes the gradient engine's options, with these meanings:

- ``iterations``: most Powell iterations (one line search along each direction) per stage;
  Powell usually stops earlier, when an iteration improves the loss by a relative ``FTOL``;
- ``lr``: the length of the initial search directions (normalised units, 1 = half the image):
  the first trial step of each line search;
- ``multires``: ``"simultaneous"`` minimises the mean loss of all levels, ``"coarse-to-fine"``
  one level at a time, coarsest first, each from the previous result;
- ``schedule``: Adam's learning-rate schedule, unused here (accepted so that one method takes
  either engine).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from mibench.errors import check_choice
from mibench.methods.inputs import prepare_images
from mibench.methods.objective import PyramidObjective, finish, pyramid_objective
from mibench.methods.options import MULTIRES, SCHEDULES
from mibench.transform import RegistrationOutput

#: Powell's stopping rules: relative loss change per iteration (scipy's default) and the
#: relative tolerance of each line search, in units of the direction's length.
FTOL = 1e-4
XTOL = 1e-4


def _stage_function(objective: PyramidObjective, stage: list[int]
                    ) -> Callable[[np.ndarray], float]:
    """``v (float64 array) -> mean loss of the stage's levels``, evaluated in float32 as the
    gradient engine does; a non-finite loss becomes +inf (the search moves away from it)."""
    h0 = objective.h0

    def loss(v: np.ndarray) -> float:
        with torch.no_grad():
            vt = torch.as_tensor(v, dtype=torch.float32, device=h0.device)
            value = float(objective.stage_loss(objective.model.compose(h0, vt), stage))
        return value if np.isfinite(value) else float("inf")

    return loss


def register_derivative_free(
    fixed: torch.Tensor,
    moving: torch.Tensor,
    *,
    estimator_fn: Callable[..., torch.Tensor],
    higher_is_better: bool,
    fixed_mask: torch.Tensor | None = None,
    moving_mask: torch.Tensor | None = None,
    seed: int = 0,
    transform: str = "affine",
    levels: int = 4,
    iterations: int = 200,
    lr: float = 0.02,
    multires: str = "simultaneous",
    min_size: int = 32,
    schedule: str = "cosine",
    init: str = "identity",
    samples: int | None = None,
    fixed_geometry: Any = None,
    moving_geometry: Any = None,
) -> RegistrationOutput:
    """Register ``moving`` to ``fixed`` by Powell's method on ``estimator_fn``.

    Parameters are those of :func:`mibench.methods.gradient.register_with_estimator`, read as
    the module docstring says; ``estimator_fn`` need not be differentiable. Images or volumes.
    With ``samples`` (volumes by default) one voxel subset per level is drawn once and kept for
    the whole search: Powell's line searches need a deterministic function.

    Returns
    -------
    RegistrationOutput
        ``MatrixTransform`` (fixed voxel -> moving voxel) and ``info`` with ``final_loss``,
        ``overlap``, ``iterations`` (Powell iterations run, all stages), ``evaluations`` (of
        the loss), ``levels``, ``transform``, ``multires``, ``init``, ``seed`` and
        ``optimiser`` (``"powell"``).

    Raises
    ------
    RuntimeError
        If the loss of the result, or the result, is not finite.
    """
    from scipy.optimize import minimize

    check_choice("multires", multires, MULTIRES)
    check_choice("schedule", schedule, SCHEDULES)
    fixed, moving = prepare_images(fixed, moving)
    objective = pyramid_objective(fixed, moving, fixed_mask, moving_mask,
                                  estimator_fn=estimator_fn, higher_is_better=higher_is_better,
                                  levels=levels, min_size=min_size, init=init, seed=seed,
                                  transform=transform, samples=samples,
                                  fixed_geometry=fixed_geometry,
                                  moving_geometry=moving_geometry)
    objective.freeze_samples()
    n = objective.model.n_params
    stages = objective.stages(multires)
    v = np.zeros(n)
    sweeps = evaluations = 0
    for stage in stages if iterations > 0 else ():
        result = minimize(_stage_function(objective, stage), v, method="Powell",
                          options={"maxiter": iterations, "ftol": FTOL, "xtol": XTOL,
                                   "direc": lr * np.eye(n)})
        v = np.asarray(result.x, dtype=np.float64)
        sweeps += int(result.nit)
        evaluations += int(result.nfev)
    with torch.no_grad():
        h = objective.model.compose(
            objective.h0.double(),
            torch.as_tensor(v, dtype=torch.float64, device=objective.h0.device))
    return finish(objective, h, stages[-1], {
        "iterations": sweeps, "evaluations": evaluations, "levels": objective.count,
        "transform": transform, "multires": multires, "init": init, "seed": int(seed),
        "optimiser": "powell"})
