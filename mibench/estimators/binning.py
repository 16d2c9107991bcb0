"""The shared binning core of the histogram / Parzen mutual-information estimators.

Every estimator of :mod:`mibench.estimators.histogram` is the same pipeline with different
options:

1. :func:`prepare_pair` turns ``(B, C, H, W)`` images or ``(B, C, D, H, W)`` volumes into grey
   samples ``(B, N)`` plus sample weights (the mask), in at least float32: every later step sees
   only samples, so a volume scores exactly as its voxels laid out as one image (on the CPU, a
   single pair with a selective mask keeps only its selected samples, see
   :data:`COMPACT_BELOW`);
2. :func:`intensity_range` picks a per-image intensity range ``[lo, hi]`` (policy ``"minmax"``,
   ``"fixed"`` or ``"percentile"``), detached from the graph;
3. a :class:`Layout` maps an intensity ``x`` to a continuous *bin coordinate*
   ``t = pad + span * (x - lo) / (hi - lo)``, in units of the bin spacing, where bin ``k`` is
   centred at ``t = k`` (``k = 0 .. bins-1``); values are clamped to ``[lo, hi]`` first;
4. a :class:`Kernel` (Parzen window) gives each sample weights on the few consecutive bins its
   compact support touches (``taps`` of them), and :func:`joint_histogram` accumulates the outer
   products of the fixed and moving weights into the ``(B, Bx, By)`` joint histogram with
   ``scatter_add``: time O(N * taps_x * taps_y + B * Bx * By), memory O(N) plus
   O(chunk * (taps_x + taps_y)) plus O(B * Bx * By), never the O(N * bins) weight matrices of a
   dense implementation (except for kernels so wide that those are the smaller, see
   :data:`SPARSE_MAX_ENTRIES`);
5. :func:`entropies` gives H(X), H(Y), H(X,Y) (nats) of the normalised joint, per batch item,
   with 0 log 0 = 0 and finite gradients everywhere.

Contributions of a kernel to bins outside ``0 .. bins-1`` are dropped (the layouts place the data
range far enough inside for the B-splines to keep their partition of unity) or, for the
difference of sigmoids, folded into the end bins (open-ended end bins); the box kernel clamps its
cell, so the top of the range falls into the last bin (numpy's closed last bin).

Gradients flow from the histogram to the bin coordinates through the kernel weights by a custom
autograd function that keeps each sample's taps from the forward pass, O(N taps), or recomputes
them in the backward pass beyond :data:`SAVED_TAPS_MAX_BYTES` (same bits either way); it supports
first derivatives only (no double backward).

Everything after :func:`prepare_pair` sees samples ``(B, N)`` only, so a volume costs what an
image of as many pixels costs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from mibench.errors import check_choice
from mibench.estimators.inputs import check_pair_shapes, compute_dtype
from mibench.estimators.options import BSPLINE_KERNELS, RANGE_POLICIES

#: Truncated kernels (Gaussian, difference of sigmoids) drop about this much weight per sample on
#: each side (relative to a peak of 1). The MI then differs from the untruncated kernel's by
#: ~1e-6 (measured against dense kernels in ``benchmarks/estimators.py``, well within 1e-4).
TRUNCATION_TOL = 1e-6

#: Samples (over the whole batch) processed at a time, on CPU and on other devices: bounds the
#: per-tap temporaries; on CPU small enough for them to stay in cache (measured best at 2^15-2^16
#: for 512 x 512 images on a Xeon, one thread), yet above torch's grain of 2^15 elements so that
#: with two threads the per-chunk elementwise work is split between them (2^16: forward and
#: backward of cubic nmi on 0.9 M voxels 65 -> 54 ms with 2 threads, the same with one), elsewhere
#: large enough to keep the kernel launches few. The B-spline histograms do not depend on it, to
#: the bit (sums run in sample order whatever the chunks); exp and sigmoid (kde-mi, softhist-mi)
#: may differ in the last bit, as they do with the thread count.
CHUNK_SAMPLES = {"cpu": 1 << 16, "other": 1 << 22}

#: The sparse accumulator holds ``taps_x * taps_y`` shifted copies of each padded joint
#: histogram. Above this many entries (256 MB in float32) and when dense weight rows would be
#: smaller, :func:`joint_histogram` builds the histogram densely instead: a very wide kernel (the
#: original soft-histogram code's slope, ``slope=0.2``: 156 taps per sample) needs tens of GB
#: the sparse way.
SPARSE_MAX_ENTRIES = 1 << 26

#: The forward pass of the sparse joint histogram keeps each sample's base cell, tap weights and
#: derivatives for the backward pass (which then skips recomputing them: about a quarter of a
#: forward + backward of the cubic B-spline) when they take at most this many bytes (a million
#: samples of the cubic kernel take 72 MB); beyond, the backward pass recomputes them.
SAVED_TAPS_MAX_BYTES = 1 << 29


def _chunk(device: torch.device, batch: int) -> int:
    """Columns of a ``(batch, N)`` sample array processed at a time."""
    total = CHUNK_SAMPLES["cpu" if device.type == "cpu" else "other"]
    return max(1, total // max(batch, 1))


# --------------------------------------------------------------------------------------------
# Samples and intensity ranges


#: On the CPU, a single image pair whose mask selects fewer than this share of its samples is
#: reduced to the selected samples first (:func:`prepare_pair`); 0 never. The histogram sums and
#: gradients are those of the masked computation (the others only added exact zeros; for exp and
#: sigmoid kernels the last bit may differ). Measured, cubic nmi forward+backward on 0.9 M voxels,
#: one thread: 80 -> 25 ms with a quarter of them selected (a brain mask), 86 -> 46 ms with
#: half, 83 -> 65 ms with 80 %; even at about 95 % (the cost of the selection).
COMPACT_BELOW = 0.9


def _grey(image: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The channel mean ``(B, ...)`` of ``(B, C, ...)``: for one channel the channel itself, a
    view (the same values and gradients as the mean over one channel, without the copy)."""
    image = image.to(dtype)
    return image[:, 0] if image.shape[1] == 1 else image.mean(dim=1)


def prepare_pair(fixed: torch.Tensor, moving: torch.Tensor, mask: torch.Tensor | None = None):
    """Flatten a pair of images into grey samples and sample weights.

    Parameters
    ----------
    fixed, moving : Tensor ``(B, C, H, W)`` or ``(B, C, D, H, W)``
        Images (or volumes, both the same) of the same spatial size. Channels are averaged to
        grey (each image separately, so channel counts may differ); a batch of 1 is broadcast
        against the other.
    mask : Tensor ``(B, 1, H, W)`` (volumes ``(B, 1, D, H, W)``) bool, optional
        True for the pixels to use; None uses all.

    Returns
    -------
    x, y : Tensor ``(B, N)``
        Grey values of the fixed and moving images, ``N = H * W`` (``D * H * W``), in row-major
        order of the spatial axes, in the promoted dtype (at least float32: half precision is
        computed in float32, float64 stays float64). With a selective mask on the CPU
        (:data:`COMPACT_BELOW`, ``B = 1``), only the selected samples, in the same order.
    w : Tensor ``(B, N)`` or None
        Sample weights, 1.0 for the selected pixels and 0.0 elsewhere (no gradient); None when
        every sample counts 1 (no mask, or only the selected samples were kept).
    """
    check_pair_shapes(fixed, moving)
    dtype = compute_dtype(fixed, moving)
    x, y = _grey(fixed, dtype), _grey(moving, dtype)
    x, y = torch.broadcast_tensors(x, y)
    batch = x.shape[0]
    x = x.reshape(batch, -1)
    y = y.reshape(batch, -1)
    if mask is None:
        return x, y, None
    w = mask.to(device=x.device).reshape(mask.shape[0], -1).to(dtype).expand_as(x)
    if batch == 1 and x.device.type == "cpu" and COMPACT_BELOW > 0:
        keep = w[0] > 0
        count = int(keep.sum())
        if 0 < count < COMPACT_BELOW * x.shape[1]:
            # Only the selected samples: the others add exact zeros to every histogram and
            # receive zero gradients, so the values and gradients are the same, for less work.
            index = keep.nonzero().squeeze(1)
            return x.index_select(1, index), y.index_select(1, index), None
    return x, y, w.detach()


def _masked_quantile(x: torch.Tensor, sel: torch.Tensor, q: float) -> torch.Tensor:
    """Per-row ``q``-quantile (0..1) of the selected values, numpy's linear interpolation.

    Rows with nothing selected give +inf (handled by the caller).
    """
    n = sel.sum(dim=1, keepdim=True)
    xs = torch.where(sel, x, torch.full_like(x, math.inf)).sort(dim=1).values
    last = (n - 1).clamp_min(0)
    pos = q * last.to(x.dtype)
    i0 = pos.floor().long().clamp(max=x.shape[1] - 1)
    i1 = torch.minimum(i0 + 1, last)
    frac = pos - i0.to(x.dtype)
    v0, v1 = xs.gather(1, i0), xs.gather(1, i1)
    # v0 + frac * (v1 - v0) would turn an empty row's inf into NaN; the caller replaces it.
    return torch.where(frac > 0, v0 + frac * (v1 - v0), v0).squeeze(1)


def intensity_range(x: torch.Tensor, w: torch.Tensor | None, policy: str = "minmax", *,
                    lo: float = 0.0, hi: float = 1.0, p_lo: float = 1.0, p_hi: float = 99.0):
    """Per-image intensity range ``[lo, hi]`` of the selected samples, detached.

    Parameters
    ----------
    x : Tensor ``(B, N)``
        Intensities.
    w : Tensor ``(B, N)`` or None
        Sample weights; samples with weight 0 are ignored (None: all samples count).
    policy : {"minmax", "fixed", "percentile"}
        ``"minmax"``: the minimum and maximum of each image over its selected pixels;
        ``"fixed"``: the given ``lo`` and ``hi`` for every image; ``"percentile"``: the ``p_lo``
        and ``p_hi`` percentiles (0..100, numpy's linear interpolation) of each image over its
        selected pixels. Values outside the range are clamped onto it by :meth:`Layout.coords`.
    lo, hi : float
        The range for ``"fixed"`` (``hi > lo``).
    p_lo, p_hi : float
        Percentiles for ``"percentile"`` (``0 <= p_lo < p_hi <= 100``).

    Returns
    -------
    lo, hi : Tensor ``(B,)``
        The range per image, no gradient. An image with no selected pixel gets ``[0, 0]``; a
        constant image gets ``lo == hi`` (:meth:`Layout.coords` maps it to one bin).
    """
    check_choice("range", policy, RANGE_POLICIES)
    with torch.no_grad():
        if policy == "fixed":
            if not hi > lo:
                raise ValueError(f"range 'fixed' needs hi > lo, got lo={lo}, hi={hi}")
            return (torch.full(x.shape[:1], float(lo), dtype=x.dtype, device=x.device),
                    torch.full(x.shape[:1], float(hi), dtype=x.dtype, device=x.device))
        if policy == "minmax" and w is None:
            return x.amin(dim=1), x.amax(dim=1)
        if policy == "minmax":
            # u = -max where selected (w > 0), >= +max elsewhere: max(x, u) is x on the selected
            # samples and above every finite value elsewhere (min(x, -u) below), so the plain
            # reductions give the masked extremes. Elementwise arithmetic: a third of the time
            # of torch.where on a bool mask (the registration engines call this every step).
            big = torch.finfo(x.dtype).max
            u = (1 - 2 * torch.sign(w)) * big
            vlo = torch.maximum(x, u).amin(dim=1)
            vhi = torch.minimum(x, -u).amax(dim=1)
            empty = ~(w.amax(dim=1) > 0)
        else:  # percentile
            if not 0.0 <= p_lo < p_hi <= 100.0:
                raise ValueError(f"percentiles need 0 <= p_lo < p_hi <= 100, got {p_lo}, {p_hi}")
            sel = torch.ones_like(x, dtype=torch.bool) if w is None else w > 0
            vlo = _masked_quantile(x, sel, p_lo / 100.0)
            vhi = _masked_quantile(x, sel, p_hi / 100.0)
            empty = ~sel.any(dim=1)
        zero = torch.zeros_like(vlo)
        return torch.where(empty, zero, vlo), torch.where(empty, zero, vhi)


# --------------------------------------------------------------------------------------------
# Layouts: intensity -> bin coordinate


@dataclass(frozen=True)
class Layout:
    """Where the intensity range ``[lo, hi]`` sits among ``bins`` bins.

    The bin coordinate is ``t = pad + span * (x - lo) / (hi - lo)``, in bin spacings, with bin
    ``k`` centred at ``t = k``; the data occupy ``t`` in ``[pad, pad + span]``. A constant image
    (``hi == lo``) maps to ``t = pad``.

    Examples: numpy's ``histogram`` (``bins`` equal bins whose edges are ``lo`` and ``hi``) is
    ``pad=-0.5, span=bins``; centres at ``linspace(lo, hi, bins)`` is ``pad=0, span=bins-1``;
    ITK Mattes' 2 padding bins are ``pad=2, span=bins-4`` (``pad=1.5`` for its box-car, whose bin
    ``k`` covers ``[k, k+1)`` in ITK's coordinate).
    """

    bins: int
    pad: float
    span: float

    def __post_init__(self):
        # The data must stay within half a bin of the bins: the sparse accumulation pads each
        # side by as many bins as a kernel has taps, no more.
        if self.bins < 1 or not self.span > 0 or self.pad < -0.5 \
                or self.pad + self.span > self.bins - 0.5:
            raise ValueError(
                f"invalid layout: bins={self.bins}, pad={self.pad}, span={self.span}")

    def coords(self, x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
        """Bin coordinates ``(B, N)`` of intensities ``x`` ``(B, N)`` for ranges ``(B,)``.

        Differentiable in ``x`` (slope ``span / (hi - lo)`` inside the range, 0 where clamped).
        """
        lo, hi = lo[:, None], hi[:, None]
        # Halves (exact in binary floating point, the ratio unchanged): a range near the
        # float maximum, e.g. -3e38 .. 3e38 in float32, would overflow to inf and give NaN.
        width = hi * 0.5 - lo * 0.5
        # A constant image has hi == lo: any finite width maps it to t = pad.
        width = torch.where(width > 0, width, torch.ones_like(width))
        xc = torch.clamp(x, lo, hi)
        return self.pad + torch.add(lo * -0.5, xc, alpha=0.5) / width * self.span  # one pass

    def box_index_range(self) -> tuple[int, int]:
        """First and last bin a box kernel may use: those whose half-open cells meet the data.

        The top of the data range lands on a cell edge for the usual layouts; it is folded into
        the cell below, as numpy and ITK do.
        """
        first = math.floor(self.pad + 0.5)
        last = math.ceil(self.pad + self.span + 0.5) - 1
        return max(first, 0), min(max(last, first), self.bins - 1)


def edges_layout(bins: int) -> Layout:
    """numpy's layout: ``bins`` equal cells from ``lo`` to ``hi`` (centres ``lo + (k+1/2)D``)."""
    return Layout(bins, -0.5, float(bins))


def centres_layout(bins: int, pad: float = 0.0) -> Layout:
    """Centres from ``lo`` to ``hi`` with ``pad`` extra centres beyond each end.

    ``pad=0`` puts the first and last centres on ``lo`` and ``hi`` (``linspace``); a B-spline of
    support radius ``r`` needs ``pad = r - 1`` to keep its whole mass inside the bins.
    """
    span = bins - 1 - 2 * pad
    if not span > 0:
        raise ValueError(f"{bins} bins are too few for {pad} padding bins on each side")
    return Layout(bins, float(pad), float(span))


# --------------------------------------------------------------------------------------------
# Kernels (Parzen windows) with compact support, in bin units


def _taps(t: torch.Tensor, radius: float, taps: int):
    """First touched bin and offsets ``u = t - k`` of the ``taps`` bins ``k`` a sample touches.

    Returns ``base`` ``(B, n)`` int64 and ``u`` ``(taps, B, n)`` (taps first, so that each tap is
    a contiguous slice).
    """
    base_f = torch.floor(t - (radius - 1))
    offsets = torch.arange(taps, dtype=t.dtype, device=t.device).view(-1, 1, 1)
    return base_f.long(), (t - base_f) - offsets


@dataclass(frozen=True)
class Kernel:
    """A Parzen window in bin units, evaluated only on the bins its support touches.

    Subclasses give ``radius``, the half-width of the support in bins (a sample touches the
    ``taps = ceil(2 radius)`` consecutive bins within it), and :meth:`weights`. ``fold`` says what
    becomes of weight on bins beyond the ends: dropped (False) or added to the first / last bin
    (True: open-ended end bins).
    """

    @property
    def radius(self) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def taps(self) -> int:
        return max(1, math.ceil(2 * self.radius - 1e-9))

    @property
    def differentiable(self) -> bool:
        return True

    @property
    def fold(self) -> bool:
        return False

    def weights(self, t: torch.Tensor, layout: Layout, grad: bool = False):
        """The bins touched by each sample and their weights.

        Parameters
        ----------
        t : Tensor ``(B, n)``
            Bin coordinates, within ``[layout.pad, layout.pad + layout.span]``.
        layout : Layout
            The bins.
        grad : bool
            Also return the derivatives of the weights with respect to ``t``.

        Returns
        -------
        base : Tensor ``(B, n)`` int64
            First bin touched; the sample touches bins ``base + a``, ``a = 0 .. taps-1``, which
            may lie beyond ``0 .. bins-1`` (see ``fold``).
        w, dw : Tensor ``(taps, B, n)``
            Weights and their derivatives in ``t`` (``dw`` is None unless ``grad``).
        """
        raise NotImplementedError  # pragma: no cover - abstract


@dataclass(frozen=True)
class BoxKernel(Kernel):
    """Hard binning: each sample counts 1 in its cell (no gradient).

    Cell ``k`` is ``[k - 1/2, k + 1/2)`` in bin coordinates; cells are clamped to
    :meth:`Layout.box_index_range`, so the top of the range falls into the last cell.
    """

    @property
    def radius(self) -> float:
        return 0.5

    @property
    def differentiable(self) -> bool:
        return False

    def weights(self, t, layout, grad=False):
        first, last = layout.box_index_range()
        base = torch.floor(t + 0.5).clamp(first, last).long()
        w = torch.ones((1,) + t.shape, dtype=t.dtype, device=t.device)
        return base, w, (torch.zeros_like(w) if grad else None)


@dataclass(frozen=True)
class LinearKernel(Kernel):
    """Triangle (first-order B-spline) ``max(0, 1 - |u|)``: 2 bins, a partition of unity."""

    @property
    def radius(self) -> float:
        return 1.0

    def weights(self, t, layout, grad=False):
        # u = (frac, frac - 1) with frac in [0, 1): weights (1 - frac, frac).
        base_f = torch.floor(t)
        frac = t - base_f
        w = torch.stack([1 - frac, frac])
        dw = None
        if grad:
            one = torch.ones_like(frac)
            dw = torch.stack([-one, one])
        return base_f.long(), w, dw


@dataclass(frozen=True)
class CubicBSplineKernel(Kernel):
    """Cubic B-spline: 4 bins, a C2 partition of unity.

    ``(4 - 6u^2 + 3|u|^3) / 6`` for ``|u| < 1``, ``(2 - |u|)^3 / 6`` for ``1 <= |u| < 2``.
    """

    @property
    def radius(self) -> float:
        return 2.0

    def weights(self, t, layout, grad=False):
        # Bins floor(t) - 1 .. floor(t) + 2 at offsets u = f + 1, f, f - 1, f - 2, f in [0, 1):
        # the four cubic pieces in closed form, no branches.
        base_f = torch.floor(t)
        f = t - base_f
        g = 1 - f
        f2, g2 = f * f, g * g
        if torch.is_grad_enabled() and t.requires_grad:
            # Differentiated by autograd (the dense path): no in-place writes.
            w = torch.stack([g2 * g / 6, (3 * f2 * f - 6 * f2 + 4) / 6,
                             (3 * g2 * g - 6 * g2 + 4) / 6, f2 * f / 6])
            dw = None
            if grad:
                dw = torch.stack([-0.5 * g2, 1.5 * f2 - 2 * f, 2 * g - 1.5 * g2, 0.5 * f2])
            return base_f.long() - 1, w, dw
        # The same weights written into the stacked outputs in place (no torch.stack copies),
        # each by the same operations in the same order: the same bits.
        w = t.new_empty((4,) + t.shape)
        torch.mul(g2, g, out=w[0]).div_(6)
        for out, (sq, lin) in zip((w[1], w[2]), ((f2, f), (g2, g)), strict=True):
            torch.mul(sq, 3, out=out).mul_(lin).sub_(sq * 6).add_(4).div_(6)
        torch.mul(f2, f, out=w[3]).div_(6)
        dw = None
        if grad:
            dw = t.new_empty((4,) + t.shape)
            torch.mul(g2, -0.5, out=dw[0])
            torch.mul(f2, 1.5, out=dw[1]).sub_(f * 2)
            torch.mul(g, 2, out=dw[2]).sub_(g2 * 1.5)
            torch.mul(f2, 0.5, out=dw[3])
        return base_f.long() - 1, w, dw


@dataclass(frozen=True)
class GaussianKernel(Kernel):
    """Gaussian ``exp(-u^2 / (2 sigma^2))`` (``sigma`` in bins), truncated where the dropped
    weight is below :data:`TRUNCATION_TOL`; weight beyond the end bins is dropped.

    With ``normalise=True`` each sample's weights are divided by their sum over the bins
    ``0 .. bins-1`` (so every sample has mass 1, also near the ends of the range); otherwise the
    weights are the raw Gaussian values at the bin centres (connorlee77's formulation).
    """

    sigma: float = 0.5
    normalise: bool = True

    def __post_init__(self):
        if not self.sigma > 0:
            raise ValueError(f"sigma must be > 0, got {self.sigma}")

    @property
    def radius(self) -> float:
        # Dropped weight per side ~ exp(-r^2 / (2 sigma^2)), relative to a peak of 1.
        r2 = 2 * self.sigma**2 * math.log(1 / TRUNCATION_TOL)
        if self.normalise:
            # Relative to the sample's mass, which may be as small as the weight of the nearest
            # centre, exp(-(1/2)^2 / (2 sigma^2)) half a bin away: a narrow kernel (sigma below
            # ~0.2 bins) would otherwise drop the nearest centre or the runner-up.
            r2 += 0.25
        return math.sqrt(r2)

    def weights(self, t, layout, grad=False):
        base, u = _taps(t, self.radius, self.taps)
        us = u * (1 / self.sigma)
        w = torch.exp(us * us * -0.5)
        dw = us * w * (-1 / self.sigma) if grad else None
        if self.normalise:
            # Only the bins that exist count towards a sample's mass.
            j = torch.arange(self.taps, device=t.device).view(-1, 1, 1)
            valid = ((j >= -base) & (j < layout.bins - base)).to(t.dtype)
            w = w * valid
            # Tiny floor: a sigma far below a bin could underflow every weight of a sample.
            total = w.sum(dim=0).clamp_min(torch.finfo(w.dtype).tiny)
            w = w / total
            if dw is not None:
                dw = (dw * valid - w * (dw * valid).sum(dim=0)) / total
        return base, w, dw


@dataclass(frozen=True)
class SigmoidKernel(Kernel):
    """Soft binning by a difference of sigmoids: bin ``k`` (edges ``k -+ 1/2``) weighs
    ``sig(slope (u + 1/2)) - sig(slope (u - 1/2))`` with ``slope`` per bin spacing.

    The first bin is open below and the last open above (``fold``: the weight of the bins beyond
    the ends is added to them, which telescopes to replacing their outer sigmoid by 1 and 0), so
    every sample has mass 1 and samples at the ends of the range count fully. Truncated where
    the dropped weight is below :data:`TRUNCATION_TOL`.
    """

    slope: float = 5.0

    def __post_init__(self):
        if not self.slope > 0:
            raise ValueError(f"slope must be > 0, got {self.slope}")

    @property
    def radius(self) -> float:
        # Tail beyond r: sum_j exp(-slope (r + j - 1/2)) = exp(-slope (r - 1/2)) / (1 - e^-slope).
        s = self.slope
        return 0.5 + math.log(1 / (TRUNCATION_TOL * (1 - math.exp(-s)))) / s

    @property
    def fold(self) -> bool:
        return True

    def weights(self, t, layout, grad=False):
        # Adjacent bins share an edge: taps + 1 sigmoids give all the weights. The sigmoid of
        # edge j is at slope * (u_j + 1/2) = slope * frac + slope * (1/2 - j).
        base_f = torch.floor(t - (self.radius - 1))
        j = torch.arange(self.taps + 1, dtype=t.dtype, device=t.device).view(-1, 1, 1)
        edge = torch.sigmoid((t - base_f) * self.slope + self.slope * (0.5 - j))
        w = edge[:-1] - edge[1:]
        dw = None
        if grad:
            d_edge = (edge - edge * edge) * self.slope
            dw = d_edge[:-1] - d_edge[1:]
        return base_f.long(), w, dw


#: The B-spline Parzen windows by name (orders 0, 1 and 3), as the estimators' ``kernel`` option.
KERNELS = dict(zip(BSPLINE_KERNELS, (BoxKernel, LinearKernel, CubicBSplineKernel), strict=True))


# --------------------------------------------------------------------------------------------
# Sparse joint histogram


def _pad_axis(h: torch.Tensor, dim: int, n: int, fold: bool) -> torch.Tensor:
    """Extend ``dim`` by ``n`` on each side: zeros, or copies of the end (the adjoint of a fold)."""
    if fold:
        first = h.narrow(dim, 0, 1)
        last = h.narrow(dim, h.shape[dim] - 1, 1)
        reps = [-1] * h.ndim
        reps[dim] = n
        return torch.cat([first.expand(reps), h, last.expand(reps)], dim=dim)
    shape = list(h.shape)
    shape[dim] = n
    zeros = h.new_zeros(shape)
    return torch.cat([zeros, h, zeros], dim=dim)


def _crop_axis(h: torch.Tensor, dim: int, n: int, bins: int, fold: bool) -> torch.Tensor:
    """Undo :func:`_pad_axis` on a histogram: drop the ``n`` outer bins each side, or fold them
    into the end bins."""
    inner = h.narrow(dim, n, bins)
    if not fold:
        return inner
    below = h.narrow(dim, 0, n + 1).sum(dim=dim, keepdim=True)
    above = h.narrow(dim, n + bins - 1, n + 1).sum(dim=dim, keepdim=True)
    if bins == 1:
        return below + above - inner
    middle = inner.narrow(dim, 1, bins - 2)
    return torch.cat([below, middle, above], dim=dim)


def _flat_base(bx, by, mx, my, rows, cols):
    """Index of each sample's first touched cell in the flattened ``(B, rows, cols)`` grid whose
    row ``r`` is bin ``r - mx`` of the fixed image (and column ``c`` bin ``c - my``)."""
    batch = bx.shape[0]
    offset = torch.arange(batch, device=bx.device)[:, None] * (rows * cols) + (mx * cols + my)
    return (bx * cols + by + offset).reshape(-1)


class _SavedTaps:
    """What the forward pass of :class:`_SparseJoint` keeps for the backward pass, chunk by
    chunk (references to what the forward pass computed, no copies): the base cells and, for
    each image that gets a gradient, the other image's tap weights (the fixed image's scaled
    by the sample weights, as in the histogram) and its own weight derivatives."""

    def __init__(self):
        self.chunks: list[tuple] = []

    @staticmethod
    def nbytes(tx: torch.Tensor, kx: Kernel, ky: Kernel, want_x: bool, want_y: bool) -> int:
        per_value = (kx.taps + ky.taps) * (int(want_x) + int(want_y))
        return tx.numel() * (8 + tx.element_size() * per_value)

    def store(self, flat, wx, wy, dwx, dwy) -> None:
        self.chunks.append((flat, wx, wy, dwx, dwy))


class _SparseJoint(torch.autograd.Function):
    """Joint histogram ``J[b, i, j] = sum_n s[b,n] Kx(tx[b,n] - i) Ky(ty[b,n] - j)``.

    Forward: for every pair of taps ``(a, c)``, the products of the tap weights are added at each
    sample's *base* cell with a 1-D ``index_add`` (the same index for all pairs) into its own
    accumulator, which is then shifted by ``(a, c)``; bins beyond the ends are dropped or folded
    per kernel. Backward: the incoming gradient is gathered at the same cells and the kernel
    derivatives applied. When a gradient is wanted (``keep``) and they fit in
    :data:`SAVED_TAPS_MAX_BYTES`, the forward pass keeps the base cells, tap weights and
    derivatives the backward pass needs (:class:`_SavedTaps`, O(N taps)); otherwise the backward
    pass recomputes them from ``tx``, ``ty`` and ``s``. Both give the same bits.
    """

    @staticmethod
    def forward(ctx, tx, ty, s, kx, ky, lx, ly, keep):
        ctx.save_for_backward(tx, ty, s)
        ctx.setup = (kx, ky, lx, ly)
        want_x = keep and ctx.needs_input_grad[0] and kx.differentiable
        want_y = keep and ctx.needs_input_grad[1] and ky.differentiable
        saved = None
        if (want_x or want_y) and \
                _SavedTaps.nbytes(tx, kx, ky, want_x, want_y) <= SAVED_TAPS_MAX_BYTES:
            saved = _SavedTaps()
        ctx.saved_taps = saved
        batch, n = tx.shape
        mx, my = kx.taps, ky.taps
        rows, cols = lx.bins + 2 * mx, ly.bins + 2 * my
        acc = tx.new_zeros(mx, my, batch * rows * cols)
        step = _chunk(tx.device, batch)
        for c0 in range(0, n, step):
            sl = slice(c0, c0 + step)
            bx, wx, dwx = kx.weights(tx[:, sl], lx, grad=saved is not None and want_x)
            by, wy, dwy = ky.weights(ty[:, sl], ly, grad=saved is not None and want_y)
            if s is not None:
                wx = wx * s[:, sl]
            flat = _flat_base(bx, by, mx, my, rows, cols)
            if saved is not None:
                saved.store(flat, wx, wy, dwx, dwy)
            flat = flat.expand(my, -1)
            wy = wy.reshape(my, -1)
            for a, wxa in enumerate(wx.reshape(mx, -1).unbind(0)):
                # One scatter per fixed tap, the moving taps as rows (same index broadcast):
                # scatter_add_ beats index_add_ ~2x on CPU.
                acc[a].scatter_add_(1, flat, wy * wxa)
        acc = acc.view(mx, my, batch, rows, cols)
        padded = tx.new_zeros(batch, rows + mx, cols + my)
        for a in range(mx):
            for c in range(my):
                padded[:, a:a + rows, c:c + cols] += acc[a, c]
        padded = padded[:, :rows, :cols]
        joint = _crop_axis(padded, 1, mx, lx.bins, kx.fold)
        return _crop_axis(joint, 2, my, ly.bins, ky.fold).contiguous()

    @staticmethod
    def backward(ctx, grad_joint):
        tx, ty, s = ctx.saved_tensors
        kx, ky, lx, ly = ctx.setup
        saved, ctx.saved_taps = ctx.saved_taps, None
        want_x = ctx.needs_input_grad[0] and kx.differentiable
        want_y = ctx.needs_input_grad[1] and ky.differentiable
        gx = torch.zeros_like(tx) if ctx.needs_input_grad[0] else None
        gy = torch.zeros_like(ty) if ctx.needs_input_grad[1] else None
        if not (want_x or want_y):
            return gx, gy, None, None, None, None, None, None
        batch, n = tx.shape
        mx, my = kx.taps, ky.taps
        rows, cols = lx.bins + 2 * mx, ly.bins + 2 * my
        padded = _pad_axis(_pad_axis(grad_joint, 1, mx, kx.fold), 2, my, ky.fold)
        padded = torch.nn.functional.pad(padded, (0, my, 0, mx))
        # shifted[a][c][base cell] = dL/dJ at the cell of taps (a, c).
        shifted = [[padded[:, a:a + rows, c:c + cols].reshape(-1) for c in range(my)]
                   for a in range(mx)]
        step = _chunk(tx.device, batch)
        for i, c0 in enumerate(range(0, n, step)):
            sl = slice(c0, c0 + step)
            if saved is not None:
                flat, wx, wy, dwx, dwy = saved.chunks[i]
                shape = wx.shape[1:] if wx is not None else wy.shape[1:]
            else:
                bx, wx, dwx = kx.weights(tx[:, sl], lx, grad=want_x)
                by, wy, dwy = ky.weights(ty[:, sl], ly, grad=want_y)
                if s is not None:
                    wx = wx * s[:, sl]
                flat = _flat_base(bx, by, mx, my, rows, cols)
                shape = bx.shape
            gwx = torch.zeros((mx,) + shape, dtype=tx.dtype, device=tx.device) \
                if want_x else None
            gwy = torch.zeros((my,) + shape, dtype=ty.dtype, device=ty.device) \
                if want_y else None
            wxs = wx.unbind(0) if want_y else None
            wys = wy.unbind(0) if want_x else None
            gwxs = gwx.unbind(0) if want_x else None
            gwys = gwy.unbind(0) if want_y else None
            for a in range(mx):
                for c in range(my):
                    g = shifted[a][c].index_select(0, flat).view(shape)
                    if want_x:
                        gwxs[a].addcmul_(g, wys[c])
                    if want_y:
                        gwys[c].addcmul_(g, wxs[a])
            if want_x:
                gx[:, sl] = (gwx * dwx).sum(dim=0) * (1 if s is None else s[:, sl])
            if want_y:
                gy[:, sl] = (gwy * dwy).sum(dim=0)
        return gx, gy, None, None, None, None, None, None


def _dense_rows(t: torch.Tensor, kernel: Kernel, layout: Layout, size: int) -> torch.Tensor:
    """Each sample's weights on every bin of the padded axis (bin ``k`` at index ``k + taps``),
    ``(B, n, size)``; differentiable in ``t`` by plain autograd."""
    base, w, _ = kernel.weights(t, layout)
    taps = torch.arange(kernel.taps, device=t.device).view(-1, 1, 1)
    index = (base[None] + kernel.taps + taps).permute(1, 2, 0)
    rows = t.new_zeros(t.shape + (size,))
    return rows.scatter_add(2, index, w.permute(1, 2, 0))


def _dense_joint(tx, ty, s, kx, ky, lx, ly) -> torch.Tensor:
    """:class:`_SparseJoint`'s histogram from dense weight rows and one batched matrix product:
    memory O(B N (Bx + By + taps)) instead of O(taps_x taps_y B Bx By), for very wide kernels."""
    mx, my = kx.taps, ky.taps
    wx = _dense_rows(tx, kx, lx, lx.bins + 2 * mx)
    if s is not None:
        wx = wx * s[..., None]
    wy = _dense_rows(ty, ky, ly, ly.bins + 2 * my)
    padded = torch.bmm(wx.transpose(1, 2), wy)
    joint = _crop_axis(padded, 1, mx, lx.bins, kx.fold)
    return _crop_axis(joint, 2, my, ly.bins, ky.fold).contiguous()


def uses_dense(n: int, kernel_x: Kernel, kernel_y: Kernel, layout_x: Layout,
               layout_y: Layout) -> bool:
    """Whether :func:`joint_histogram` builds the histogram densely (see
    :data:`SPARSE_MAX_ENTRIES`) for ``n`` samples per batch item."""
    mx, my = kernel_x.taps, kernel_y.taps
    rows, cols = layout_x.bins + 2 * mx, layout_y.bins + 2 * my
    sparse = mx * my * rows * cols
    return sparse > SPARSE_MAX_ENTRIES and sparse > n * (rows + cols + mx + my)


def joint_histogram(tx: torch.Tensor, ty: torch.Tensor, s: torch.Tensor, kernel_x: Kernel,
                    kernel_y: Kernel, layout_x: Layout, layout_y: Layout) -> torch.Tensor:
    """Parzen joint histogram of bin coordinates, per batch item.

    Parameters
    ----------
    tx, ty : Tensor ``(B, N)``
        Bin coordinates of the fixed and moving samples (see :meth:`Layout.coords`).
    s : Tensor ``(B, N)`` or None
        Sample weights (the mask), not differentiated; None: all 1.
    kernel_x, kernel_y : Kernel
        Parzen windows of the two images.
    layout_x, layout_y : Layout
        Their bins.

    Returns
    -------
    Tensor ``(B, Bx, By)``
        ``J[b, i, j] = sum_n s[b, n] Kx(tx[b, n] - i) Ky(ty[b, n] - j)``, unnormalised (hard
        counts for box kernels), differentiable in ``tx`` and ``ty``.
    """
    if s is not None:
        s = s.detach()
    if uses_dense(tx.shape[1], kernel_x, kernel_y, layout_x, layout_y):
        return _dense_joint(tx, ty, s, kernel_x, kernel_y, layout_x, layout_y)
    # Keep the taps for a backward pass only when one can follow (no_grad: Powell's evaluations).
    keep = torch.is_grad_enabled() and (tx.requires_grad or ty.requires_grad)
    return _SparseJoint.apply(tx, ty, s, kernel_x, kernel_y, layout_x, layout_y, keep)


def marginal_histogram(t: torch.Tensor, s: torch.Tensor | None, kernel: Kernel,
                       layout: Layout) -> torch.Tensor:
    """Parzen histogram ``(B, bins)`` of one image (the joint against a single constant bin)."""
    one = Layout(1, -0.5, 1.0)
    joint = joint_histogram(t, torch.zeros_like(t), s, kernel, BoxKernel(), layout, one)
    return joint[..., 0]


def smooth_joint(joint: torch.Tensor, variance: float) -> torch.Tensor:
    """Separable Gaussian smoothing of a ``(B, Bx, By)`` histogram; ``variance`` in bins^2.

    The sampled Gaussian is truncated at 4 sigma and normalised; borders are replicated (ITK's
    ``DiscreteGaussianImageFilter`` default boundary). ``variance <= 0`` returns ``joint``.
    """
    if variance <= 0:
        return joint
    sigma = math.sqrt(variance)
    radius = max(1, math.ceil(4 * sigma))
    u = torch.arange(-radius, radius + 1, dtype=joint.dtype, device=joint.device)
    g = torch.exp(-0.5 * (u / sigma) ** 2)
    g = g / g.sum()
    out = joint[:, None]
    pad = torch.nn.functional.pad
    out = pad(out, (0, 0, radius, radius), mode="replicate")
    out = torch.nn.functional.conv2d(out, g.view(1, 1, -1, 1))
    out = pad(out, (radius, radius, 0, 0), mode="replicate")
    out = torch.nn.functional.conv2d(out, g.view(1, 1, 1, -1))
    return out[:, 0]


# --------------------------------------------------------------------------------------------
# Entropies


def _neg_plogp(p: torch.Tensor) -> torch.Tensor:
    """``-p log p`` with 0 log 0 = 0: the log's argument is floored at the smallest normal
    number, so values and gradients stay finite at empty bins (``torch.where`` alone would
    still back-propagate NaN from the masked branch)."""
    return -p * torch.log(p.clamp_min(torch.finfo(p.dtype).tiny))


def normalise(hist: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """Divide by the total over ``dims`` per batch item; an all-zero histogram stays zero.

    An empty histogram is divided by 1, not by a tiny floor: ``1 / tiny`` times the entropy's
    ``-log(tiny)`` overflows float32 in the backward pass and gave NaN gradients (an empty mask
    with a fixed intensity range)."""
    total = hist.sum(dim=dims, keepdim=True)
    return hist / torch.where(total > 0, total, torch.ones_like(total))


def entropy(hist: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """Entropy in nats of the histogram ``hist`` normalised over ``dims``, per batch item."""
    return _neg_plogp(normalise(hist, dims)).sum(dim=dims)


def entropies(joint: torch.Tensor):
    """H(X), H(Y), H(X,Y) in nats of a ``(B, Bx, By)`` joint histogram (normalised per item).

    The marginals are the joint's row and column sums. An empty histogram gives zeros.
    """
    p = normalise(joint, (1, 2))
    hx = _neg_plogp(p.sum(dim=2)).sum(dim=1)
    hy = _neg_plogp(p.sum(dim=1)).sum(dim=1)
    hxy = _neg_plogp(p).sum(dim=(1, 2))
    return hx, hy, hxy


def mutual_information(joint: torch.Tensor) -> torch.Tensor:
    """Plug-in MI in nats, ``H(X) + H(Y) - H(X,Y)``, of a ``(B, Bx, By)`` joint histogram.

    Never negative: the MI of a joint distribution with its own marginals is >= 0, and the
    rounding of the three entropies (about -1e-7 for a product joint, one time in four) is
    clipped to 0, as ``sklearn.metrics.mutual_info_score`` does (see :func:`clip_at_zero`)."""
    hx, hy, hxy = entropies(joint)
    return clip_at_zero(hx + hy - hxy)


def clip_at_zero(x: torch.Tensor) -> torch.Tensor:
    """``max(x, 0)`` in value, with the gradient of ``x``: an optimiser at a pose whose MI
    rounds below 0 still gets the direction that increases it."""
    return x + (x.clamp_min(0) - x).detach()
