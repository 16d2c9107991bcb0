"""Built-in registration methods, registered through the ``mibench_methods`` hook like any plugin.

Factories are given as ``"module:function"`` strings so that listing imports nothing heavy.
"""

from mibench.hookspecs import hookimpl
from mibench.specs import MethodSpec, Param


def _gradient_params() -> tuple[Param, ...]:
    """Options shared by the gradient methods (``mibench.methods.gradient``)."""
    return (
        Param("iterations", 200, "Adam steps (in total for simultaneous, per level for "
              "coarse-to-fine)"),
        Param("levels", 4, "Gaussian pyramid levels (fewer if the coarsest would go below "
              "min_size)"),
        Param("lr", 0.02, "Adam learning rate on the matrix-exponential parameters "
              "(normalised coordinates)"),
        Param("transform", "affine", "transform model", choices=("affine", "perspective")),
        Param("multires", "simultaneous", "all levels every step with one shared transform "
              "(DRMIME), or one level at a time",
              choices=("simultaneous", "coarse-to-fine")),
        Param("min_size", 32, "smallest allowed side (px) of the coarsest pyramid level"),
        Param("schedule", "cosine", "learning-rate schedule (cosine decay to 2% of lr, or "
              "constant)", choices=("cosine", "constant")),
    )


@hookimpl
def mibench_methods():
    return [
        MethodSpec(
            name="identity",
            description="No registration: the identity transform (scores the initial error).",
            factory="mibench.methods.identity:register",
            default=True,
        ),
        MethodSpec(
            name="ncc",
            description="Affine gradient registration maximising NCC (matrix-exponential "
            "transform, Gaussian pyramid, Adam)",
            factory="mibench.methods.gradient:ncc",
            params=_gradient_params(),
            default=True,
        ),
        MethodSpec(
            name="mse",
            description="Affine gradient registration minimising MSE (matrix-exponential "
            "transform, Gaussian pyramid, Adam)",
            factory="mibench.methods.gradient:mse",
            params=_gradient_params(),
            default=True,
        ),
    ]
