"""Histogram and Parzen-window mutual-information estimators, all on :mod:`.binning`.

``jhmi``, ``nmi``, ``mmi``, ``kde-mi`` and ``softhist-mi`` differ only in the kernels, the bin
layout and the final formula; every one shares the signature of :mod:`.basic`::

    f(fixed, moving, mask=None, **options) -> Tensor (B,)

- ``fixed``, ``moving``: ``(B, C, H, W)`` image batches or ``(B, C, D, H, W)`` volume batches
  (both the same) of the same spatial size. Channels are averaged to grey (each image
  separately), so MI is always between two scalar images. Every voxel is one sample: a volume
  scores exactly as its voxels laid out as one image.
- ``mask``: ``(B, 1, H, W)`` (volumes: ``(B, 1, D, H, W)``) bool (True = use this pixel), or
  None for all pixels.

Each batch item gets its own intensity range and histogram. Values are in nats, higher is better.
Half-precision input is computed in float32, float64 stays float64. Degenerate input never gives
NaN or inf: an empty mask gives 0, a constant image gives MI 0 (the normalised forms: see
:func:`nmi`), and empty bins are handled as 0 log 0 = 0, in values and gradients.

Options shared by the family (see :func:`mibench.estimators.binning.intensity_range`):

``range`` (``"minmax"``, ``"fixed"``, ``"percentile"``), ``lo``/``hi`` (the fixed range, default
[0, 1]), ``p_lo``/``p_hi`` (percentiles, default 1 and 99). The range is detached: gradients do not
see how the extreme pixels move the range, so check gradients with ``range="fixed"``.
"""

from __future__ import annotations

import torch

from mibench.errors import check_choice
from mibench.estimators import binning as bn
from mibench.estimators.binning import Kernel, Layout
from mibench.estimators.options import BSPLINE_KERNELS, NMI_NORMALISATIONS

#: Denominators of the normalised MIs below this count as zero (no information: the value is 0).
_DEN_EPS = 1e-12


def _coords(fixed, moving, mask, layout_x: Layout, layout_y: Layout, range_opts: dict):
    """Samples, per-image ranges and bin coordinates of a pair."""
    x, y, w = bn.prepare_pair(fixed, moving, mask)
    tx = layout_x.coords(x, *bn.intensity_range(x, w, **range_opts))
    ty = layout_y.coords(y, *bn.intensity_range(y, w, **range_opts))
    return tx, ty, w


def _range_opts(range: str, lo: float, hi: float, p_lo: float, p_hi: float) -> dict:
    return {"policy": range, "lo": lo, "hi": hi, "p_lo": p_lo, "p_hi": p_hi}


def _bspline(kernel: str, bins: int) -> tuple[Kernel, Layout]:
    """The named B-spline kernel and its layout.

    The box keeps numpy's layout (equal cells from min to max, as skimage and sklearn bin). The
    smooth B-splines put their first and last centres ``radius - 1`` bins inside the range ends
    (``linear``: centres at ``linspace(lo, hi, bins)``; ``cubic``: one more bin each side), so
    that every sample keeps weight 1 and a gradient, also at the ends of the range.
    """
    check_choice("kernel", kernel, BSPLINE_KERNELS)
    k = bn.KERNELS[kernel]()
    if kernel == "box":
        return k, bn.edges_layout(bins)
    return k, bn.centres_layout(bins, pad=k.radius - 1)


def _bins_pair(bins: int, bins_moving: int) -> tuple[int, int]:
    bins_moving = bins_moving or bins
    if bins < 1 or bins_moving < 1:
        raise ValueError(f"bins must be >= 1, got {bins} and {bins_moving}")
    return bins, bins_moving


def _bspline_joint(fixed, moving, mask, bins, bins_moving, kernel, range_opts):
    bx, by = _bins_pair(bins, bins_moving)
    kx, lx = _bspline(kernel, bx)
    ky, ly = _bspline(kernel, by)
    tx, ty, w = _coords(fixed, moving, mask, lx, ly, range_opts)
    return bn.joint_histogram(tx, ty, w, kx, ky, lx, ly)


def jhmi(fixed: torch.Tensor, moving: torch.Tensor, mask: torch.Tensor | None = None, *,
         bins: int = 32, bins_moving: int = 0, kernel: str = "box",
         smoothing_variance: float = 0.0, range: str = "minmax", lo: float = 0.0,
         hi: float = 1.0, p_lo: float = 1.0, p_hi: float = 99.0) -> torch.Tensor:
    """Joint-histogram mutual information ``H(X) + H(Y) - H(X,Y)``, in nats.

    Parameters
    ----------
    bins, bins_moving : int
        Bins of the fixed and the moving image (``bins_moving=0``: same as ``bins``).
    kernel : {"box", "linear", "cubic"}
        ``box``: hard counts in ``bins`` equal cells over the range (numpy's binning), the plain
        plug-in estimate, equal to ``sklearn.metrics.mutual_info_score`` of the bin labels; no
        gradient. ``linear`` (2 bins per sample) and ``cubic`` B-spline (4 bins) Parzen windows of
        width one bin spacing per order: differentiable in both images.
    smoothing_variance : float
        Variance, in bins^2, of a Gaussian smoothing of the joint histogram before the entropies
        (ITK ``JointHistogramMutualInformation``'s ``varianceForJointPDFSmoothing``; ITK's default
        is 1.5). 0 disables it.
    range, lo, hi, p_lo, p_hi
        Intensity-range policy (module docstring).

    Returns
    -------
    Tensor ``(B,)``
        MI in nats (0 for an empty mask or a constant image).
    """
    joint = _bspline_joint(fixed, moving, mask, bins, bins_moving, kernel,
                           _range_opts(range, lo, hi, p_lo, p_hi))
    return bn.mutual_information(bn.smooth_joint(joint, smoothing_variance))


def normalised_mi(hx: torch.Tensor, hy: torch.Tensor, hxy: torch.Tensor,
                  normalisation: str = "studholme") -> torch.Tensor:
    """Normalised MI from the entropies (nats); ``normalisation`` is the NMI variant
    (:data:`mibench.estimators.options.NMI_NORMALISATIONS`).

    ``studholme``: ``(H(X) + H(Y)) / H(X,Y)`` in [1, 2]; ``arithmetic``: ``2 I / (H(X) + H(Y))``
    (sklearn's default NMI, symmetric uncertainty) in [0, 1]; ``joint``: ``I / H(X,Y)`` in [0, 1];
    ``geometric``: ``I / sqrt(H(X) H(Y))`` in [0, 1], with ``I = H(X) + H(Y) - H(X,Y)``.
    Where the denominator vanishes (both images constant for ``studholme``/``joint``/
    ``arithmetic``, either image constant for ``geometric``, an empty mask) the value is 0.
    """
    check_choice("normalisation", normalisation, NMI_NORMALISATIONS)
    mi = bn.clip_at_zero(hx + hy - hxy)
    if normalisation == "studholme":
        num, den = hx + hy, hxy
    elif normalisation == "arithmetic":
        num, den = 2 * mi, hx + hy
    elif normalisation == "joint":
        num, den = mi, hxy
    else:  # geometric
        num, den = mi, torch.sqrt((hx * hy).clamp_min(_DEN_EPS**2))
    ok = den > _DEN_EPS
    safe = torch.where(ok, den, torch.ones_like(den))
    if normalisation == "geometric":
        ok = ok & (hx * hy > _DEN_EPS**2)
    return torch.where(ok, num / safe, torch.zeros_like(num))


def nmi(fixed: torch.Tensor, moving: torch.Tensor, mask: torch.Tensor | None = None, *,
        bins: int = 100, bins_moving: int = 0, kernel: str = "box",
        normalisation: str = "studholme", range: str = "minmax", lo: float = 0.0,
        hi: float = 1.0, p_lo: float = 1.0, p_hi: float = 99.0) -> torch.Tensor:
    """Normalised mutual information of the joint histogram.

    With the defaults (box kernel, 100 bins, per-image min-max range, Studholme's
    ``(H(X) + H(Y)) / H(X,Y)``) it equals ``skimage.metrics.normalized_mutual_information``.

    Parameters
    ----------
    bins, bins_moving, kernel, range, lo, hi, p_lo, p_hi
        As :func:`jhmi` (``kernel="linear"`` or ``"cubic"`` makes it differentiable).
    normalisation : {"studholme", "arithmetic", "joint", "geometric"}
        The NMI variant (not the NAED normaliser of the scores), see :func:`normalised_mi`.

    Returns
    -------
    Tensor ``(B,)``
        Studholme's NMI in [1, 2], the others in [0, 1]; 0 where undefined (empty mask, both
        images constant).
    """
    joint = _bspline_joint(fixed, moving, mask, bins, bins_moving, kernel,
                           _range_opts(range, lo, hi, p_lo, p_hi))
    return normalised_mi(*bn.entropies(joint), normalisation)


def mattes_layouts(bins: int) -> tuple[Layout, Layout]:
    """ITK Mattes' bins: the range spans ``bins - 4`` bin widths after 2 padding bins.

    In ITK's coordinate ``u = 2 + (v - min) / D`` with ``D = (max - min) / (bins - 4)``, the
    fixed sample counts 1 in bin ``floor(u)`` clamped to ``[2, bins - 3]`` (a box-car whose bin
    ``k`` covers ``[k, k + 1)``), and the moving sample spreads over bins ``k`` with weight
    ``beta3(k - u)``, the cubic B-spline centred on ``k``. Here both use ``t = k`` at bin
    centres, so the fixed layout is shifted by half a bin.
    """
    if bins < 5:
        raise ValueError(f"Mattes MI needs at least 5 bins, got {bins}")
    span = float(bins - 4)
    return Layout(bins, 1.5, span), Layout(bins, 2.0, span)


def mmi(fixed: torch.Tensor, moving: torch.Tensor, mask: torch.Tensor | None = None, *,
        bins: int = 50, range: str = "minmax", lo: float = 0.0, hi: float = 1.0,
        p_lo: float = 1.0, p_hi: float = 99.0) -> torch.Tensor:
    """Mattes mutual information (ITK's ``MattesMutualInformationImageToImageMetricv4``).

    ITK's formulation, checked against SimpleITK to ~1e-15 relative (float64 input): with
    ``D = (max - min) / (bins - 4)`` per image and ``u = (v - min) / D + 2``,

    - a fixed sample counts 1 in bin ``clamp(floor(u_f), 2, bins - 3)`` (box-car, zero-order
      B-spline);
    - a moving sample adds ``beta3(k - u_m)`` to bins ``k = i - 1 .. i + 2``,
      ``i = clamp(floor(u_m), 2, bins - 3)`` (cubic B-spline Parzen window);
    - the joint ``p`` is normalised to sum 1, the marginals are its row and column sums, and
      ``MI = sum p log(p / (p_fixed p_moving))`` in nats.

    SimpleITK's ``SetMetricAsMattesMutualInformation(bins)`` with ``SetMetricSamplingStrategy(
    NONE)`` returns ``-MI`` from ``MetricEvaluate`` (identity transform, same grid). ITK takes
    each image's min and max over the whole image; here they are taken over the masked pixels
    (the same without a mask), and ``range`` can change the policy. Note that ``bins=5`` leaves
    the fixed image a single bin (MI 0), in ITK too.

    Differentiable in ``moving`` only (the box-car gives the fixed image no gradient), which is
    what registration needs.

    Returns
    -------
    Tensor ``(B,)``
        MI in nats.
    """
    lx, ly = mattes_layouts(bins)
    tx, ty, w = _coords(fixed, moving, mask, lx, ly, _range_opts(range, lo, hi, p_lo, p_hi))
    joint = bn.joint_histogram(tx, ty, w, bn.BoxKernel(), bn.CubicBSplineKernel(), lx, ly)
    return bn.mutual_information(joint)


def kde_mi(fixed: torch.Tensor, moving: torch.Tensor, mask: torch.Tensor | None = None, *,
           bins: int = 64, bins_moving: int = 0, sigma: float = 0.5,
           normalise_pixels: bool = True, range: str = "minmax", lo: float = 0.0,
           hi: float = 1.0, p_lo: float = 1.0, p_hi: float = 99.0) -> torch.Tensor:
    """Gaussian-kernel MI (the formulation of connorlee77/pytorch-mutual-information).

    Bin centres at ``linspace(lo, hi, bins)``; each pixel weighs ``exp(-(t - k)^2 / (2 sigma^2))``
    on centre ``k``, with ``sigma`` in bin spacings (truncated at ~5.3 sigma, where the dropped
    weight is below 1e-6). The joint is ``sum_n Wx[n]^T Wy[n]`` normalised per batch item; the
    marginals are the per-image kernel histograms normalised per item. MI in nats.

    Deviations from that code: ``sigma`` is tied to the bin spacing (there: 0.1 intensity
    levels on 0..255, which makes a hard histogram with vanishing gradients), the range is an
    option (there: fixed [0, 1]), natural log instead of log2, no epsilon (0 log 0 = 0 exactly),
    channels averaged to grey (there: only C=1 is correct), and ``normalise_pixels`` (there:
    off) divides each pixel's weights by their sum, so every pixel has mass 1 even at the ends of
    the range; the marginals then equal the joint's row and column sums.

    Parameters
    ----------
    bins, bins_moving : int
        Bins of the fixed and moving image (0: same as ``bins``).
    sigma : float
        Kernel standard deviation in bin spacings.
    normalise_pixels : bool
        Normalise each pixel's kernel weights to sum 1.
    range, lo, hi, p_lo, p_hi
        Intensity-range policy (module docstring).

    Returns
    -------
    Tensor ``(B,)``
        MI in nats; differentiable in both images.
    """
    bx, by = _bins_pair(bins, bins_moving)
    lx, ly = bn.centres_layout(bx), bn.centres_layout(by)
    kernel = bn.GaussianKernel(sigma=sigma, normalise=normalise_pixels)
    tx, ty, w = _coords(fixed, moving, mask, lx, ly, _range_opts(range, lo, hi, p_lo, p_hi))
    joint = bn.joint_histogram(tx, ty, w, kernel, kernel, lx, ly)
    if normalise_pixels:
        return bn.mutual_information(joint)
    hx = bn.entropy(bn.marginal_histogram(tx, w, kernel, lx), (1,))
    hy = bn.entropy(bn.marginal_histogram(ty, w, kernel, ly), (1,))
    return hx + hy - bn.entropy(joint, (1, 2))


def softhist_mi(fixed: torch.Tensor, moving: torch.Tensor, mask: torch.Tensor | None = None,
                *, bins: int = 50, bins_moving: int = 0, slope: float = 5.0,
                range: str = "minmax", lo: float = 0.0, hi: float = 1.0, p_lo: float = 1.0,
                p_hi: float = 99.0) -> torch.Tensor:
    """Soft-histogram MI (the formulation of KrakenLeaf/pytorch_differentiable_mutual_info).

    ``bins`` equal cells over the range (edges ``lo + k D``); a pixel weighs
    ``sig(s (x - e_k)) - sig(s (x - e_{k+1}))`` on cell ``k``, with the slope given per bin
    spacing, ``slope = s D`` (there: ``s = 10`` on [0, 1] with 50 bins, ``s D = 0.2``, which
    smears a pixel over ~20 bins). The joint of each batch item is normalised on its own (there:
    over the whole batch, so items of a batch > 1 got ~(I + ln b) / b); the marginals are its
    row and column sums. The first and last cells are open-ended (there: pixels at the range
    ends counted 1/2 and values beyond faded out), so every pixel has mass 1. Truncated where
    the dropped weight is below 1e-6 (7 bins per pixel at ``slope=5``).

    Parameters
    ----------
    bins, bins_moving : int
        Bins of the fixed and moving image (0: same as ``bins``).
    slope : float
        Sigmoid slope times the bin width (``s D``); larger is closer to hard binning.
    range, lo, hi, p_lo, p_hi
        Intensity-range policy (module docstring).

    Returns
    -------
    Tensor ``(B,)``
        MI in nats; differentiable in both images.
    """
    bx, by = _bins_pair(bins, bins_moving)
    lx, ly = bn.edges_layout(bx), bn.edges_layout(by)
    kernel = bn.SigmoidKernel(slope=slope)
    tx, ty, w = _coords(fixed, moving, mask, lx, ly, _range_opts(range, lo, hi, p_lo, p_hi))
    return bn.mutual_information(bn.joint_histogram(tx, ty, w, kernel, kernel, lx, ly))
