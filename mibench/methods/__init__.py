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


def _mi_method(name: str, what: str, *estimator_params: Param, default: bool = False
               ) -> MethodSpec:
    """A gradient method driven by one of the MI estimators (same engine as ``ncc``/``mse``)."""
    return MethodSpec(
        name=name,
        description=f"Affine gradient registration maximising {what} (same transform model, "
        "pyramid and optimiser as ncc/mse)",
        factory=f"mibench.methods.gradient:{name.replace('-', '_')}",
        params=_gradient_params() + estimator_params,
        default=default,
    )


_BINS32 = Param("bins", 32, "histogram bins")
_SMOOTH_KERNEL = Param("kernel", "cubic", "Parzen window (box gives no gradient, so only the "
                       "differentiable ones)", choices=("linear", "cubic"))


def _drmime_params(with_transform: bool = True) -> tuple[Param, ...]:
    """Options of ``mibench.methods.drmime`` (``transform`` only for the affine ``drmime``)."""
    transform = (Param("transform", "affine", "transform model",
                       choices=("affine", "perspective")),) if with_transform else ()
    return (
        Param("preset", "fire", "defaults of iterations, the three learning rates and "
              "canny_high: fire (500, 1e-2, 1e-3, 1e-5, 10), anhir (500, 1e-3, 5e-3, 1e-4, 30)",
              choices=("fire", "anhir")),
        *transform,
        Param("iterations", None, "Adam steps (default: from the preset)", type=int),
        Param("lr_net", None, "learning rate of the statistics network (default: preset)",
              type=float),
        Param("lr_transform", None, "learning rate of the transform parameters vL, shared by "
              "all levels (default: preset)", type=float),
        Param("lr_offset", None, "learning rate of the full-resolution offset v1 (default: "
              "preset)", type=float),
        Param("levels", 6, "Gaussian pyramid levels (fewer if the coarsest would go below "
              "min_size)"),
        Param("min_size", 32, "smallest allowed side (px) of the coarsest pyramid level"),
        Param("blur", 1.0, "Gaussian pre-blur sigma (px) before the pyramid"),
        Param("sampling", "random", "fixed pixel samples per level: a uniform random "
              "sample_fraction of the (masked) pixels, or the dilated Canny edges",
              choices=("random", "edges")),
        Param("sample_fraction", 0.1, "share of each level's pixels sampled (random sampling)"),
        Param("canny_low", 0.0, "Canny low threshold, 0-255 grey levels (edge sampling)"),
        Param("canny_high", None, "Canny high threshold, 0-255 grey levels (default: preset)",
              type=float),
        Param("hidden", 100, "width of the statistics network's two hidden layers"),
        Param("ema", 0.0, "decay of MINE's moving-average bias correction (e.g. 0.99); "
              "0 = none, as the paper"),
        Param("stable_lme", True, "numerically stable log-mean-exp (same value and gradient as "
              "the paper's plain formula, without overflow)"),
        Param("exp", "taylor", "matrix exponential: the paper's truncated series (10 terms) or "
              "torch.linalg.matrix_exp", choices=("taylor", "matrix_exp")),
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
        _mi_method("nmi", "Studholme's normalised MI (cubic B-spline Parzen histogram)",
                   _BINS32, _SMOOTH_KERNEL,
                   Param("normalisation", "studholme", "NMI normalisation",
                         choices=("studholme", "arithmetic", "joint", "geometric")),
                   default=True),
        _mi_method("mmi", "Mattes MI (ITK formulation)", Param("bins", 50, "histogram bins")),
        _mi_method("jhmi", "joint-histogram MI (linear Parzen histogram, Gaussian-smoothed "
                   "joint histogram as ITK)", _BINS32,
                   Param("kernel", "linear", "Parzen window", choices=("linear", "cubic")),
                   Param("smoothing_variance", 1.5, "variance (bins^2) of the joint "
                         "histogram's Gaussian smoothing")),
        _mi_method("kde-mi", "Gaussian-kernel MI", _BINS32,
                   Param("sigma", 0.5, "kernel standard deviation in bin spacings")),
        _mi_method("softhist-mi", "soft-histogram (difference of sigmoids) MI", _BINS32,
                   Param("slope", 5.0, "sigmoid slope times the bin width")),
        MethodSpec(
            name="drmime",
            description="DRMIME (Nan et al. 2020): MINE statistics network shared by all "
            "levels, matrix-exponential affine transform, simultaneous multi-resolution, "
            "joint Adam",
            factory="mibench.methods.drmime:drmime",
            params=_drmime_params(),
            default=True,
        ),
        MethodSpec(
            name="drmime-perspective",
            description="DRMIME with the 8-parameter perspective (sl(3)) transform",
            factory="mibench.methods.drmime:drmime_perspective",
            params=_drmime_params(with_transform=False),
        ),
    ]
