"""The registration method of every estimator: one rule, applied to each estimator's spec.

Every estimator (built-in, entry-point or ``--plugin``) whose spec keeps ``derive_method=True``
gives a method of the same name, unless a method of that name exists (the written method wins:
the built-in ``cmif`` method is CMIF's global search, not a local optimisation of its value):

- **engine**: the matrix-exponential transform, Gaussian pyramid and loss of
  :mod:`.objective`, maximising the estimator when ``higher_is_better`` and minimising it
  otherwise; optimised by Adam (:mod:`.gradient`) when the estimator has a gradient with the
  options given, else by Powell's method (:mod:`.derivative_free`). An estimator with
  ``differentiable=False`` whose :class:`~mibench.specs.Registration` names
  ``differentiable_when`` (``jhmi``, ``nmi``: a linear or cubic kernel) takes either, by the
  value of its options, with the gradient engine's options; one without always takes Powell,
  with Powell's defaults (:func:`.params.derivative_free_params`).
- **options**: the engine's, then the estimator's that its ``Registration.options`` offers (all
  by default), each declared once, on the estimator; ``Registration.defaults`` redeclares those
  whose registration default differs (a differentiable kernel).
- **factory**: ``functools.partial(register_derived, estimator=<the EstimatorSpec>)``: the
  estimator travels with the method, so the worker needs no look-up, and this module imports
  nothing heavy (``mibench list`` stays fast); the engines are imported at the first call.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any

from mibench.methods.options import BSPLINE_DEFAULTS
from mibench.methods.params import QUIET_OPTIONS, derivative_free_params, gradient_params
from mibench.specs import EstimatorSpec, MethodSpec, Param

#: What every method factory takes besides its options (and ``estimator``, bound here).
METHOD_ARGUMENTS = frozenset({"fixed_mask", "moving_mask", "seed", "estimator",
                              "fixed_geometry", "moving_geometry"})
#: The optimisers in words, for the descriptions.
GRADIENT_TEXT = "Adam on its gradient"
POWELL_TEXT = "Powell's derivative-free method (scipy)"


def has_gradient_path(spec: EstimatorSpec) -> bool:
    """Whether some options of the estimator give it a gradient (so the gradient engine's
    options are the method's)."""
    return spec.differentiable or bool(spec.registration.differentiable_when)


def engine_params(spec: EstimatorSpec) -> tuple[Param, ...]:
    """The engine options of the method derived from ``spec``."""
    return gradient_params() if has_gradient_path(spec) else derivative_free_params()


def offered_params(spec: EstimatorSpec) -> tuple[Param, ...]:
    """The estimator options the derived method offers, with their registration defaults.

    An estimator option named like an engine option (``iterations`` of a trained estimator) or
    like an argument every method takes (``seed``) could not be told apart from it: it is not
    offered, and the estimator keeps its default.
    """
    taken = {p.name for p in engine_params(spec)} | METHOD_ARGUMENTS
    return tuple(p for p in spec.registration_params() if p.name not in taken)


def method_params(spec: EstimatorSpec) -> tuple[Param, ...]:
    """Every option of the derived method: the engine's, then the estimator's it offers."""
    return engine_params(spec) + offered_params(spec)


def _optimiser_text(spec: EstimatorSpec) -> str:
    if spec.differentiable:
        return GRADIENT_TEXT
    when = spec.registration.differentiable_when
    if when:
        values = "; ".join(f"{name} in {', '.join(map(str, allowed))}" for name, allowed in when)
        return f"{GRADIENT_TEXT} when {values}, else {POWELL_TEXT}"
    return POWELL_TEXT


def derived_description(spec: EstimatorSpec) -> str:
    """One line: derived from which estimator, by which optimiser, in which direction."""
    goal = "maximising" if spec.higher_is_better else "minimising"
    return (f"Derived from the estimator {spec.name!r}: affine registration {goal} it "
            f"(matrix-exponential transform, Gaussian pyramid) by {_optimiser_text(spec)}")


def derived_method(spec: EstimatorSpec) -> MethodSpec:
    """The method derived from the estimator ``spec`` (see the module docstring)."""
    params = method_params(spec)
    return MethodSpec(
        name=spec.name,
        description=derived_description(spec),
        factory=functools.partial(register_derived, estimator=spec),
        params=params,
        requires=spec.requires,
        default=spec.registration.default,
        plugin=spec.plugin,
        derived_from=spec.name,
        # The engine's voxel subsets come from a fixed seed and its CMIF start quantises by
        # quantiles: only the estimator can make the result depend on the seed.
        uses_seed=spec.uses_seed,
        # The engine registers images and volumes: the estimator decides.
        dims=spec.dims,
        quiet=tuple(p.name for p in params if p.name in QUIET_OPTIONS),
    )


def derive_methods(estimators: Iterable[EstimatorSpec]) -> list[MethodSpec]:
    """The methods derived from the ``estimators`` that opt in (``derive_method``). The
    registry leaves out those whose name a written method has."""
    return [derived_method(spec) for spec in estimators if spec.derive_method]


def _split(spec: EstimatorSpec, params: dict[str, Any]) -> tuple[dict, dict]:
    """The method's options as (engine options, estimator options). Estimator options the
    method does not offer take the estimator's defaults; offered ones left out (a direct call)
    take the method's registration defaults, as ``mibench run`` would."""
    given = {**{p.name: p.default for p in method_params(spec)}, **params}
    offered = {p.name for p in offered_params(spec)}
    estimator = {**spec.defaults(), **{k: v for k, v in given.items() if k in offered}}
    engine = {k: v for k, v in given.items() if k not in offered}
    return engine, estimator


def register_derived(fixed, moving, *, estimator: EstimatorSpec, fixed_mask=None,
                     moving_mask=None, seed: int = 0, fixed_geometry=None,
                     moving_geometry=None, **params):
    """The factory of every derived method: register with ``estimator``.

    Parameters
    ----------
    fixed, moving : Tensor ``(1, C, H, W)`` or ``(1, C, D, H, W)``
        Float images or volumes on the run's device.
    estimator : EstimatorSpec
        The estimator (bound by ``functools.partial``); its factory is imported here.
    fixed_mask, moving_mask : bool Tensor ``(1, 1, ...)`` or None
        Valid voxels.
    seed : int
        Passed to the engine (both are deterministic; CMIF's start uses it).
    fixed_geometry, moving_geometry : mibench.geometry.Geometry or None
        Passed to the engine: the world-identity start and physical frame of volumes.
    **params
        The method's options (:func:`method_params`); those left out take their defaults.

    Returns
    -------
    RegistrationOutput
        The engine's result (fixed voxel -> moving voxel); ``info["optimiser"]`` says which ran.
    """
    engine, options = _split(estimator, params)
    fn = estimator.load()

    def estimator_fn(f, m, mask):
        return fn(f, m, mask=mask, **options)

    common = dict(estimator_fn=estimator_fn, higher_is_better=estimator.higher_is_better,
                  fixed_mask=fixed_mask, moving_mask=moving_mask, seed=seed,
                  fixed_geometry=fixed_geometry, moving_geometry=moving_geometry, **engine)
    if estimator.differentiable_with(options):
        from mibench.methods.gradient import register_with_estimator

        out = register_with_estimator(fixed, moving, **common)
        out.info.setdefault("optimiser", "adam")
        return out
    from mibench.methods.derivative_free import register_derivative_free

    if common.get("transform") == "bspline":
        raise ValueError(f"transform='bspline' needs a gradient; {estimator.name!r} has none "
                         f"with these options (choose a differentiable kernel)")
    # Powell registers matrices only: the B-spline stage's options do not concern it.
    common = {k: v for k, v in common.items() if k not in BSPLINE_DEFAULTS}
    return register_derivative_free(fixed, moving, **common)
