"""The named choices and limits of the estimators' options, declared once.

The specs (:mod:`mibench.estimators`, :mod:`mibench.methods`) offer them as ``Param`` choices and
bounds, and the algorithms check them when called directly, from the same constants. Pure
Python: listing the plugins imports this module, never torch.

In the estimators, ``normalisation`` is the **NMI variant** (how the mutual information is
divided by the entropies); it has nothing to do with the NAED normaliser of the scores
(``naed_norm``, :mod:`mibench.metrics`).
"""

#: NMI variants (``normalisation`` of ``nmi``), with ``I = H(X) + H(Y) - H(X,Y)``:
#: ``studholme`` ``(H(X) + H(Y)) / H(X,Y)`` in [1, 2]; ``arithmetic`` ``2 I / (H(X) + H(Y))``,
#: ``joint`` ``I / H(X,Y)`` and ``geometric`` ``I / sqrt(H(X) H(Y))``, in [0, 1]. The first is the
#: default (scikit-image's).
NMI_NORMALISATIONS = ("studholme", "arithmetic", "joint", "geometric")
#: ``normalisation`` of ``cmif``: ``none`` (the MI in nats) or an NMI variant.
CMIF_NORMALISATIONS = ("none", *NMI_NORMALISATIONS)

#: Intensity-range policies of the histogram estimators
#: (:func:`mibench.estimators.binning.intensity_range`).
RANGE_POLICIES = ("minmax", "fixed", "percentile")
#: Parzen windows of ``jhmi``/``nmi``, B-splines of order 0, 1 and 3 (``box`` gives hard counts
#: and no gradient); the keys of :data:`mibench.estimators.binning.KERNELS`.
BSPLINE_KERNELS = ("box", "linear", "cubic")
#: The differentiable ones: what the gradient methods may use.
SMOOTH_KERNELS = BSPLINE_KERNELS[1:]

#: Quantisers of CMIF (:mod:`mibench.estimators.quantise`).
QUANTISERS = ("kmeans", "equal", "quantile")
#: FFT precisions of CMIF (``auto``: float32 while its counts stay exact).
PRECISIONS = ("auto", "float32", "float64")
#: How CMIF's per-shift entropy pass runs: ``compiled`` (``torch.compile``, with an eager
#: fallback), ``eager``, or ``auto`` (compiled where the maps are large enough to repay it).
ENTROPY_PASSES = ("auto", "compiled", "eager")

#: Smallest number of usable pixels for which ``mine`` trains a network; fewer give 0. Its
#: ``sample`` option takes at least twice this (half the pixels train, half evaluate).
MINE_MIN_PIXELS = 8
