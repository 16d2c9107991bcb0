"""Built-in similarity measures, registered through the ``mibench_estimators`` hook.

Kept light: the factories are ``"module:function"`` strings, so listing imports no torch. Each
estimator also gives a registration method of its name (:mod:`mibench.methods.derived`); its
``Registration`` says which options the method offers and with which defaults. ``mine`` and
``cmif`` opt out (``cmif`` is a written method: CMIF's global search).
"""

from mibench.estimators.options import (
    BSPLINE_KERNELS,
    CMIF_NORMALISATIONS,
    ENTROPY_PASSES,
    MINE_MIN_PIXELS,
    NMI_NORMALISATIONS,
    PRECISIONS,
    QUANTISERS,
    RANGE_POLICIES,
)
from mibench.hookspecs import hookimpl
from mibench.seeds import MAX_SEED
from mibench.specs import EstimatorSpec, Param, Registration

#: ``dims`` of the estimators that score images ``(B, C, H, W)`` and volumes ``(B, C, D, H, W)``
#: alike: they treat every pixel or voxel as one sample, reduced over all spatial axes.
VOLUMES = (2, 3)

_RANGE = (
    Param("range", "minmax", "intensity range per image: minmax (over the mask), fixed (lo, hi) "
          "or percentile (p_lo, p_hi); values outside are clamped; detached from the gradient",
          choices=RANGE_POLICIES),
    # lo < hi and p_lo < p_hi involve two options: the estimators check them.
    Param("lo", 0.0, "lower end of the fixed range"),
    Param("hi", 1.0, "upper end of the fixed range"),
    Param("p_lo", 1.0, "lower percentile (0-100) of the percentile range", ge=0, le=100),
    Param("p_hi", 99.0, "upper percentile (0-100) of the percentile range", ge=0, le=100),
)


def _bins(default: int, least: int = 1) -> tuple[Param, ...]:
    """``bins`` (at least ``least``: what the layout of the kernel needs) and ``bins_moving``
    (0 or a count; a kernel needing more than 1 bin checks a too small one itself)."""
    return (
        Param("bins", default, "histogram bins (of the fixed image)", ge=least),
        Param("bins_moving", 0, "bins of the moving image; 0 = same as bins", ge=0),
    )


#: Registration defaults of the histogram MI methods (the derived methods, issue 18): 32 bins (a
#: differentiable window needs 2, cubic 4: checked by the estimator, as it depends on kernel).
_REGISTRATION_BINS = Param("bins", 32, "histogram bins", ge=2)
#: With box (hard counts) jhmi and nmi have no gradient: their methods then use Powell.
_HAS_GRADIENT = (("kernel", ("linear", "cubic")),)


def _registration_kernel(default: str) -> Param:
    return Param("kernel", default, "Parzen window: linear or cubic (Adam), or box (hard counts, "
                 "no gradient: Powell)", choices=BSPLINE_KERNELS)


_KERNEL = Param("kernel", "box", "Parzen window: box (hard counts, no gradient), linear or cubic "
                "B-spline (differentiable in both images)", choices=BSPLINE_KERNELS)


@hookimpl
def mibench_estimators():
    return [
        EstimatorSpec(
            name="mse",
            dims=VOLUMES,
            description="Mean squared intensity difference over the masked pixels and channels.",
            factory="mibench.estimators.basic:mse",
            higher_is_better=False,
            registration=Registration(default=True),
            uses_seed=False,
        ),
        EstimatorSpec(
            name="ncc",
            dims=VOLUMES,
            description="Global normalised cross-correlation (channels centred separately, "
            "pooled); sign kept, constant image gives 0.",
            factory="mibench.estimators.basic:ncc",
            higher_is_better=True,
            registration=Registration(default=True),
            uses_seed=False,
        ),
        EstimatorSpec(
            name="jhmi",
            dims=VOLUMES,
            description="Joint-histogram MI in nats (channels averaged to grey). Default: hard "
            "counts, the plug-in estimate (= sklearn mutual_info_score of the bin labels), no "
            "gradient; kernel=linear or cubic makes it differentiable; optional Gaussian "
            "smoothing of the joint histogram as ITK's JointHistogramMutualInformation.",
            factory="mibench.estimators.histogram:jhmi",
            params=_bins(32) + (
                _KERNEL,
                Param("smoothing_variance", 0.0, "variance (bins^2) of the Gaussian smoothing "
                      "of the joint histogram (ITK's varianceForJointPDFSmoothing, 1.5 there); "
                      "0 = none", ge=0),
            ) + _RANGE,
            higher_is_better=True,
            differentiable=False,
            # ITK's JointHistogramMutualInformation smooths with variance 1.5.
            registration=Registration(
                options=("bins", "kernel", "smoothing_variance"),
                defaults=(_REGISTRATION_BINS, _registration_kernel("linear"),
                          Param("smoothing_variance", 1.5, "variance (bins^2) of the Gaussian "
                                "smoothing of the joint histogram (ITK's "
                                "varianceForJointPDFSmoothing); 0 = none", ge=0)),
                differentiable_when=_HAS_GRADIENT),
            uses_seed=False,
        ),
        EstimatorSpec(
            name="nmi",
            dims=VOLUMES,
            description="Normalised MI of the joint histogram (channels averaged to grey). "
            "Defaults (box, 100 bins, per-image min-max, Studholme) equal skimage's "
            "normalized_mutual_information; no gradient unless kernel=linear or cubic.",
            factory="mibench.estimators.histogram:nmi",
            params=_bins(100) + (
                _KERNEL,
                Param("normalisation", "studholme", "NMI variant: studholme "
                      "(H(X)+H(Y))/H(X,Y) in [1, 2]; arithmetic 2I/(H(X)+H(Y)), joint "
                      "I/H(X,Y), geometric I/sqrt(H(X)H(Y)), in [0, 1]; 0 where undefined",
                      choices=NMI_NORMALISATIONS),
            ) + _RANGE,
            higher_is_better=True,
            differentiable=False,
            registration=Registration(
                options=("bins", "kernel", "normalisation"),
                defaults=(_REGISTRATION_BINS, _registration_kernel("cubic")),
                differentiable_when=_HAS_GRADIENT, default=True),
            uses_seed=False,
        ),
        EstimatorSpec(
            name="mmi",
            dims=VOLUMES,
            description="Mattes MI in nats (ITK formulation: box-car for the fixed image, cubic "
            "B-spline for the moving image, 2 padding bins each side); equals -MetricEvaluate "
            "of SimpleITK's Mattes metric with all pixels sampled. Differentiable in the "
            "moving image only.",
            factory="mibench.estimators.histogram:mmi",
            params=(Param("bins", 50, "histogram bins, 2 of them padding at each end (>= 5)",
                          ge=5),)
            + _RANGE,
            higher_is_better=True,
            differentiable=True,
            registration=Registration(options=("bins",)),
            uses_seed=False,
        ),
        EstimatorSpec(
            name="kde-mi",
            dims=VOLUMES,
            description="Gaussian-kernel MI in nats (connorlee77 formulation: Gaussian weights at "
            "bin centres linspace(lo, hi, bins), per-item normalisation) with sigma in bin "
            "spacings; differentiable in both images.",
            factory="mibench.estimators.histogram:kde_mi",
            # Bin centres from lo to hi: at least 2 of them.
            params=_bins(64, least=2) + (
                Param("sigma", 0.5, "kernel standard deviation in bin spacings", gt=0),
                Param("normalise_pixels", True, "divide each pixel's kernel weights by their "
                      "sum (mass 1 per pixel; off = the original formulation)"),
            ) + _RANGE,
            higher_is_better=True,
            differentiable=True,
            registration=Registration(options=("bins", "sigma"), defaults=(_REGISTRATION_BINS,)),
            uses_seed=False,
        ),
        EstimatorSpec(
            name="softhist-mi",
            dims=VOLUMES,
            description="Soft-histogram MI in nats (KrakenLeaf formulation: difference of "
            "sigmoids per bin) with the slope per bin spacing, open-ended end bins and a "
            "histogram per batch item; differentiable in both images.",
            factory="mibench.estimators.histogram:softhist_mi",
            params=_bins(50) + (
                Param("slope", 5.0, "sigmoid slope times the bin width (larger = harder "
                      "binning)", gt=0),
            ) + _RANGE,
            higher_is_better=True,
            differentiable=True,
            registration=Registration(options=("bins", "slope"), defaults=(_REGISTRATION_BINS,)),
            uses_seed=False,
        ),
        EstimatorSpec(
            name="mine",
            dims=VOLUMES,
            description="MINE (Belghazi et al. 2018): Donsker-Varadhan lower bound of a "
            "statistics network (2C -> 100 -> 100 -> 1, ReLU) trained per image pair on "
            "corresponding pixels; evaluated on held-out pixels, nats. Not differentiable; "
            "seconds per pair.",
            factory="mibench.estimators.mine:mine",
            params=(
                Param("iterations", 300, "Adam steps of the statistics network", ge=0),
                Param("lr", 1e-3, "Adam learning rate", gt=0),
                Param("hidden", 100, "width of the two hidden layers", ge=1),
                Param("batch", 2048, "pixel pairs per training step", ge=1),
                Param("sample", 65536, "most pixels used (half to train, half to evaluate)",
                      ge=2 * MINE_MIN_PIXELS),
                Param("ema", 0.0, "decay of MINE's moving-average gradient correction "
                      "(0 = none)", ge=0, lt=1),
                Param("seed", 0, "seed of the local random generator", ge=0, le=MAX_SEED),
            ),
            higher_is_better=True,
            differentiable=False,
            # Trained per evaluation (seconds): Powell's thousands of evaluations would take
            # hours per pair. DRMIME is the registration method built on MINE.
            derive_method=False,
        ),
        EstimatorSpec(
            name="cmif",
            description="CMIF (Öfverstedt et al. 2022): plug-in MI in nats of the images "
            "quantised into K levels, computed by FFT for every integer shift at once; the "
            "estimator returns the value at shift 0 (the pair as given), "
            "mibench.estimators.cmif.cmif_map the whole map. Not differentiable.",
            factory="mibench.estimators.cmif:cmif",
            dims=VOLUMES,
            params=(
                Param("levels", 8, "quantisation levels of the fixed image", ge=1),
                Param("levels_moving", 0, "levels of the moving image; 0 = same as levels",
                      ge=0),
                Param("quantisation", "kmeans", "k-means on the pixel vectors (seeded), "
                      "equal-width cells over min..max, or equal-population quantiles",
                      choices=QUANTISERS),
                Param("normalisation", "none", "none = MI in nats; or the NMI variant of nmi",
                      choices=CMIF_NORMALISATIONS),
                Param("precision", "auto", "FFT precision: auto = float32 while the counts "
                      "stay exact (<= 2^18 pixels of overlap), else float64",
                      choices=PRECISIONS),
                Param("entropy_pass", "auto", "per-shift entropy pass compiled by "
                      "torch.compile (eager fallback, one warning), eager, or auto = compiled "
                      "after 120 s of eager passes in the process; same values",
                      choices=ENTROPY_PASSES),
                Param("seed", 0, "seed of the k-means quantiser", ge=0, le=MAX_SEED),
            ),
            higher_is_better=True,
            differentiable=False,
            # The cmif method is CMIF's global search over every shift: a local optimisation of
            # the value at shift 0 would throw that away.
            derive_method=False,
        ),
    ]
