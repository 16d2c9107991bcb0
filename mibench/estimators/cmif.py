"""CMIF: mutual information for every integer shift at once, by FFT (Öfverstedt et al. 2022).

Both images are quantised into label images (:mod:`.quantise`): ``K_A`` levels for the fixed
image A, ``K_B`` for the moving image B. With the level indicators ``A_i = [A = i] M_A`` and
``B_j = [B = j] M_B`` (``M`` the masks), the joint count of levels ``(i, j)`` at shift ``s`` is a
cross-correlation,

    ``C_ij(s) = sum_x A_i(x + s) B_j(x)``,

computed for every ``s`` at once as ``irfft(F(A_i) conj F(B_j))`` and **rounded to integers**
(the exact counts; see *Precision*). The MI at ``s`` is the plug-in MI of the table ``C(s)`` over
the overlap of the two masks, in nats.

Shift convention
    Map entry ``s = (dy, dx)`` compares moving pixel ``(x, y)`` with fixed pixel
    ``(x + dx, y + dy)``: the moving image is laid on the fixed image with its top-left pixel on
    fixed pixel ``(dx, dy)``, i.e. the fixed -> moving transform of that shift is
    ``p_moving = p_fixed - (dx, dy)``. A :class:`CMIFMap` holds the map ``value[..., r, c]`` for
    ``dy = y0 + r``, ``dx = x0 + c`` (``origin = (y0, x0)``).

Volumes
    :func:`cmif_map` also takes volumes ``(B, C, D, H, W)`` and gives the MI for every 3-D
    shift ``(dz, dy, dx)`` (moving voxel ``(x, y, z)`` on fixed voxel ``(x + dx, y + dy, z +
    dz)``) by 3-D FFT, with the same level dropping and rounding (section *Volumes* below:
    :class:`VolumeSpectra`, :func:`cmif_volume_from_labels`, which counts its FFTs); the shift
    ranges, the minimum overlap and the precision rule are those of images, with voxels for
    pixels.

Shift ranges (``shifts``)
    ``"full"``: every shift at which the two images overlap, ``dy`` in ``[-(h-1), H-1]``, pruned
    to the shifts that can reach the minimum overlap (below); ``"centre"``: the moving image's
    centre pixel ``(h // 2, w // 2)`` on every fixed pixel (an ``H x W`` map, as template matching
    in "same" mode); ``"zero"``: the single shift 0 (images laid top-left on top-left).

Minimum overlap
    A shift is valid when its overlap (pixels inside both masks) is at least 1 and at least
    ``min_overlap * min(|M_A|, |M_B|)``, the largest overlap possible. Invalid shifts have value 0
    and ``valid`` False.

FFT economy (per template, per angle of :mod:`mibench.methods.cmif`)
    - The marginals and the overlap come from the joint counts (row and column sums), not from
      extra transforms.
    - One level is dropped where a mask allows it: when M_B is the whole moving image,
      ``sum_j B_j = 1`` and the last column is ``C_i,K_B-1 = a_i - sum_j<K_B-1 C_ij`` with ``a_i``
      the count of level i of A under the moving image's rectangle, a box sum (two 1-D window
      sums of prefix sums, :func:`_box_counts`); the same for M_A and the last row. Rectangular
      masks (no masks) thus need ``(K_A - 1) (K_B - 1)`` inverse and ``K_B - 1`` forward real
      FFTs per template (``K_A - 1`` forward once for the fixed image), a masked moving image
      ``(K_A - 1) K_B`` inverse.
    - The fixed image's level spectra are computed once (:class:`FixedSpectra`) and reused for
      every moving image (every angle of a rotation sweep); moving levels and angles are
      transformed in batched calls (see the last point).
    - The entropies are accumulated row by row: only one row of ``K_B`` count maps is held at a
      time, never all ``K_A K_B`` maps; besides it, ``K_B``-map buffers (the column sums, the
      ``c log c`` sums per column, a scratch map) and the ``K_A`` row sums, all reused in place.
      With counts ``c``, ``a``, ``b`` and overlap ``N``, ``H = log(N / R) - sum c log(c / R) /
      N`` for a fixed reference ``R`` of the order of ``N`` (the largest possible overlap), which
      keeps float32 sums accurate.
    - The FFT grid is the smallest that holds the shift range without wrap-around, rounded up to
      a size with factors 2, 3, 5 and 7 only.
    - On the CPU the spectra are stored transposed, and both transforms run as two 1-D stages
      that skip what the map does not need: the forward one transforms only the image's rows
      (not the zero padding), the inverse one keeps only the rows the map keeps
      (:func:`_forward_padded`, :func:`_inverse_crop`; same values as ``rfft2``/``irfft2``,
      about twice as fast with MKL). Templates are processed in chunks, and each inverse call
      takes at most :data:`CPU_FFT_BYTES` of spectra (a template's levels in groups at large
      grids), into work buffers reused from one call to the next: fresh allocations of tens
      of MB are page-faulted in on every use, which cost as much as the FFTs themselves at a
      768^2 grid. On CUDA the plain ``irfft2`` is used, on all templates at once.
    - The entropy pass can run compiled (``entropy_pass``, :mod:`.cmif_compiled`): one fused
      ``torch.compile`` kernel per row of counts and one to finish, instead of about a dozen
      eager passes each, or one kernel for all the rows and the finish when their count maps
      fit in :data:`FUSED_MAX_BYTES` (and are at least :data:`FUSED_MIN_BYTES`); the same
      values within float rounding (the compiled pass sums the ``c log c`` terms in float64
      throughout), with an eager fallback.

Precision
    ``precision="float32"`` computes the FFTs in float32. Rounding recovers the exact counts while
    the FFT error stays below 0.5; the error grows with the largest count (the smaller mask area).
    Measured with torch's CPU FFT (MKL; max abs error of the unrounded correlation of two random
    binary images, template half the image side, centre shifts): 0.005 at a 512^2 image (largest
    count 16.6k), 0.023 at 1024^2 (66k), 0.11 at 2048^2 (263k); the error grows about as fast as
    the count. float32 is therefore used up to ``FLOAT32_MAX_COUNT`` = 2^18 pixels of possible
    overlap (error <= ~0.11, a 4x margin); ``precision="auto"`` (the default) switches to float64
    above it, ``"float64"`` always uses float64. (cuFFT's error was not measured.) The entropy
    sums are taken in float64 in either case (over float32 partial sums of at most ``K_A`` terms
    of the joint one, single terms of the marginal ones); the returned values are in the compute
    dtype.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from mibench.errors import check_choice
from mibench.estimators import cmif_compiled as compiled
from mibench.estimators.histogram import normalised_mi
from mibench.estimators.options import CMIF_NORMALISATIONS, ENTROPY_PASSES, PRECISIONS, QUANTISERS
from mibench.estimators.quantise import quantise

#: Largest possible overlap (pixels) up to which ``precision="auto"`` computes in float32.
FLOAT32_MAX_COUNT = 1 << 18

#: Which shifts a map covers (module docstring).
SHIFTS = ("full", "centre", "zero")


# --------------------------------------------------------------------------------------------
# Shift ranges and FFT grids


@dataclass(frozen=True)
class ShiftGrid:
    """The shifts a map covers and the FFT grid that computes them.

    ``origin = (y0, x0)`` is the shift of map entry ``[0, 0]``; the map is ``size = (Sy, Sx)``;
    ``fft_shape = (P, Q)`` is the FFT grid (``P >= max(y1 + h, H - y0)``, so no wrap-around).
    For volumes every tuple has three entries, in the order ``(z, y, x)`` of the array axes
    ``(D, H, W)``.
    """

    origin: tuple[int, ...]
    size: tuple[int, ...]
    fft_shape: tuple[int, ...]


def fast_size(n: int) -> int:
    """Smallest integer ``>= n`` with no prime factor above 7 (a fast FFT length)."""
    m = max(int(n), 1)
    while True:
        k = m
        for p in (2, 3, 5, 7):
            while k % p == 0:
                k //= p
        if k == 1:
            return m
        m += 1


def _axis_range(big: int, small: int, mode: str, least: int) -> tuple[int, int]:
    """Shift range ``[s0, s1]`` along one axis (``big``: fixed side, ``small``: moving side)."""
    if mode == "zero":
        return 0, 0
    if mode == "centre":
        return -(small // 2), big - 1 - small // 2
    least = min(max(least, 1), min(big, small))
    return least - small, big - least


def shift_grid(fixed_shape: tuple[int, ...], moving_shape: tuple[int, ...],
               shifts: str = "full", least_overlap: float = 1.0,
               window: tuple[int, ...] | None = None) -> ShiftGrid:
    """The :class:`ShiftGrid` for the given image (or volume) sizes.

    Parameters
    ----------
    fixed_shape, moving_shape : (H, W), (h, w) or (D, H, W), (d, h, w)
    shifts : {"full", "centre", "zero"}
        See the module docstring.
    least_overlap : float
        For ``"full"``: the smallest overlap (pixels) a valid shift can have; shifts whose
        boxes cannot overlap that much are left out of the map (and of the FFT grid).
    window : (dy0, dy1, dx0, dx1) or (dz0, dz1, dy0, dy1, dx0, dx1), optional
        Keep only the shifts in these closed ranges as well (a local search: the FFT grid
        shrinks to about ``max(H, h) + |shift|``). An empty intersection is a ValueError.
    """
    check_choice("shifts", shifts, SHIFTS)
    ndim = len(fixed_shape)
    if len(moving_shape) != ndim or (window is not None and len(window) != 2 * ndim):
        raise ValueError(f"shapes {fixed_shape}, {moving_shape} and window {window} disagree "
                         "in dimension")
    common = [min(f, m) for f, m in zip(fixed_shape, moving_shape, strict=True)]
    ranges = []
    for a in range(ndim):
        # Overlap <= (overlapping slices along a) * the largest cross-section across a: a shift
        # needs at least least / cross-section overlapping slices along a.
        cross = math.prod(common[:a] + common[a + 1:])
        least = math.ceil(least_overlap / cross - 1e-9)
        s0, s1 = _axis_range(fixed_shape[a], moving_shape[a], shifts, least)
        if window is not None:
            s0, s1 = max(s0, window[2 * a]), min(s1, window[2 * a + 1])
        ranges.append((s0, s1))
    if any(s1 < s0 for s0, s1 in ranges):
        raise ValueError(f"shift window {window} holds no shift with enough overlap")
    # Circular correlation on P rows holds shifts y0..y1 without aliasing iff no other shift
    # congruent mod P has a non-zero correlation, i.e. P >= y1 + h and P >= H - y0 (and
    # both images must fit on the grid).
    fft = tuple(fast_size(max(s1 + m, f - s0, f, m))
                for (s0, s1), f, m in zip(ranges, fixed_shape, moving_shape, strict=True))
    return ShiftGrid(tuple(s0 for s0, _ in ranges), tuple(s1 - s0 + 1 for s0, s1 in ranges),
                     fft)


# --------------------------------------------------------------------------------------------
# Results


@dataclass
class CMIFMap:
    """MI (or a normalised MI) for every shift of a map.

    Attributes
    ----------
    value : Tensor ``(..., Sy, Sx)`` (volumes: ``(..., Sz, Sy, Sx)``)
        MI in nats (or the normalisation asked for) per shift; 0 where not ``valid``.
    overlap : Tensor, same shape
        Pixels (voxels) inside both masks at each shift (exact integers, in the compute dtype).
    valid : Tensor, same shape, bool
        Shifts whose overlap reaches the minimum overlap.
    origin : (y0, x0) or (z0, y0, x0)
        Shift of entry ``[0, 0]`` (``[0, 0, 0]``; module docstring for the convention).
    """

    value: torch.Tensor
    overlap: torch.Tensor
    valid: torch.Tensor
    origin: tuple[int, ...]

    def shifts(self) -> tuple[torch.Tensor, ...]:
        """``(dy, dx)`` (volumes: ``(dz, dy, dx)``) of every entry, long tensors of the map's
        spatial shape."""
        dev = self.value.device
        axes = [torch.arange(n, device=dev) + o
                for n, o in zip(self.value.shape[-len(self.origin):], self.origin, strict=True)]
        return torch.meshgrid(*axes, indexing="ij")

    def best(self) -> tuple[torch.Tensor, ...]:
        """Largest valid value and its shift, per map: ``value``, ``dy``, ``dx`` (volumes:
        ``value``, ``dz``, ``dy``, ``dx``) of shape ``(...)`` (a map with no valid shift gives
        ``-inf`` at shift ``origin``)."""
        nd = len(self.origin)
        flat = torch.where(self.valid, self.value, torch.full_like(self.value, -math.inf))
        flat = flat.flatten(-nd)
        val, idx = flat.max(dim=-1)
        shift = []
        for n, o in zip(reversed(self.value.shape[-nd:]), reversed(self.origin), strict=True):
            shift.append(idx % n + o)
            idx = idx // n
        return (val, *reversed(shift))


# --------------------------------------------------------------------------------------------
# The fixed image's side: level spectra computed once


def _dtypes(precision: str, largest_count: float, like: torch.dtype) -> torch.dtype:
    check_choice("precision", precision, PRECISIONS)
    if precision == "float64" or like == torch.float64:
        return torch.float64
    if precision == "auto" and largest_count > FLOAT32_MAX_COUNT:
        return torch.float64
    return torch.float32


def _indicators(labels: torch.Tensor, levels: int, dtype: torch.dtype,
                out: torch.Tensor | None = None) -> torch.Tensor:
    """``(..., H, W)`` labels -> ``(..., levels, H, W)`` 0/1 indicators (-1 gives all zeros),
    written into ``out`` (any strides) when given.

    Compared as floats straight into a float output: several times faster on CPU than a
    boolean comparison converted afterwards (labels are small integers, exact in float).
    """
    lab = labels.to(dtype).contiguous().unsqueeze(-3)  # one plane: cheap, and fast reads
    ks = torch.arange(levels, device=labels.device, dtype=dtype).view(-1, 1, 1)
    if out is None:
        out = torch.empty(lab.shape[:-3] + (levels,) + lab.shape[-2:], dtype=dtype,
                          device=labels.device)
    return torch.eq(lab, ks, out=out)


def _window_sums(x: torch.Tensor, start: int, length: int, count: int) -> torch.Tensor:
    """Sums of ``x (..., n)`` (contiguous) over ``[start + k, start + k + length) & [0, n)``
    along the last dim, ``k = 0 .. count-1``, as ``(..., count)``.

    Differences ``C[clamp(start + k + length - 1)] - C[clamp(start + k - 1)]`` of the inclusive
    prefix sums ``C`` (``C[j < 0] = 0``, ``C[j >= n] = C[n-1]``), written piece by piece:
    between the ``k`` where either index crosses 0 or n, each index is a slice of C or one
    clamped value (broadcast), so there is no gather and no padded copy.
    """
    n = x.shape[-1]
    c = x.cumsum(-1)
    out = c.new_empty(c.shape[:-1] + (count,))
    cuts = {0, count}
    for first in (start, start + length):
        cuts.update(min(max(edge + 1 - first, 0), count) for edge in (0, n))
    cuts = sorted(cuts)
    zero = c.new_zeros(c.shape[:-1] + (1,))

    def take(first: int, k0: int, m: int) -> torch.Tensor:
        j = first + k0 - 1  # the indices j .. j+m-1 lie all below 0, all in [0, n) or all >= n
        if j < 0:
            return zero.expand(*c.shape[:-1], m)
        if j >= n:
            return c[..., n - 1:].expand(*c.shape[:-1], m)
        return c[..., j:j + m]

    for k0, k1 in zip(cuts[:-1], cuts[1:], strict=True):
        if k1 > k0:
            torch.sub(take(start + length, k0, k1 - k0), take(start, k0, k1 - k0),
                      out=out[..., k0:k1])
    return out


def _box_counts(labels: torch.Tensor, levels: int, rows: tuple[int, int, int],
                cols: tuple[int, int, int]) -> torch.Tensor:
    """Count of each level of ``labels (..., n_r, n_c)`` in the boxes of rows ``[r0 + y,
    r0 + y + l_r)`` and columns ``[c0 + x, c0 + x + l_c)`` (clipped to the image) for ``y <
    S_y``, ``x < S_x``, with ``rows = (r0, l_r, S_y)``, ``cols = (c0, l_c, S_x)``: ``(...,
    levels, S_y, S_x)``.

    Two 1-D window sums (:func:`_window_sums`), each along a contiguous last dim (a prefix sum
    along any other dim is several times slower on CPU): the indicators are built transposed,
    and the first stage's sums are transposed back in one copy (cheaper than writing them
    transposed). Exact: float32 while the sums stay below 2^24, else float64 (integer cumsums
    are slower on CPU).
    """
    exact = torch.float32 if labels.shape[-1] * labels.shape[-2] < (1 << 24) else torch.float64
    ind = _indicators(labels.transpose(-1, -2), levels, exact)  # (..., K, n_c, n_r)
    strips = _window_sums(ind, *rows).transpose(-1, -2).contiguous()  # (..., K, S_y, n_c)
    del ind
    return _window_sums(strips, *cols)  # (..., K, S_y, S_x)


def _rolled_pieces(n: int, size: int, shift: int) -> list[tuple[int, int, int]]:
    """``(source, target, length)`` pieces that put indices ``0 .. n-1`` at ``(i + shift) mod
    size`` (at most two: ``torch.roll`` of a zero-padded line, without the copies)."""
    first = shift % size
    head = min(n, size - first)
    pieces = [(0, first, head)]
    if head < n:
        pieces.append((head, 0, n - head))
    return pieces


def _forward(x: torch.Tensor, split: bool) -> torch.Tensor:
    """Real 2-D FFT of ``(..., P, Q)``; with ``split`` stored transposed, ``(..., Q/2+1, P)``."""
    spec = torch.fft.rfft2(x)
    return spec.transpose(-1, -2).contiguous() if split else spec


def _forward_padded(x: torch.Tensor, shape: tuple[int, int], split: bool) -> torch.Tensor:
    """Real 2-D FFT of ``x (..., h, w)`` zero padded (bottom, right) to ``shape = (P, Q)``, laid
    out as :func:`_forward`.

    With ``split``, two 1-D stages: the R2C along Q of the ``h`` data rows only (the padding
    rows would transform to zeros), then the C2C along P of those half-spectra, zero padded and
    transposed in one copy; its output is the transposed layout, with no copy after it.
    """
    p, q = shape
    if not split:
        return torch.fft.rfft2(x, s=(p, q))
    rows = torch.fft.rfft(x, n=q, dim=-1)  # (..., h, Q/2+1)
    return torch.fft.fft(rows.transpose(-1, -2), n=p, dim=-1)


def _inverse_crop(spec: torch.Tensor, shape: tuple[int, int], size: tuple[int, int],
                  split: bool, work: _Workspace | None = None) -> torch.Tensor:
    """The leading ``size = (Sy, Sx)`` block of the inverse real FFT on the ``shape = (P, Q)``
    grid.

    With ``split`` (``spec`` transposed, ``(..., Q/2+1, P)``) it runs as two 1-D stages: the
    inverse along P on contiguous data, keeping only the Sy rows the map needs, then the C2R
    along Q of those rows only. Same values as ``irfft2``; on the CPU (MKL) 1.8-2.6x faster at
    grids of 320-800 (measured), from the contiguous first stage and the pruned second one.
    (Fresh outputs, not ``out=`` buffers: MKL's ``out=`` computes elsewhere and copies.) The
    transposing copy between the stages goes into ``work``'s buffer when given: torch's own
    copy there is a fresh allocation, and with two threads 0.65 ms of a row of 7 maps at 256^2
    against 0.48 ms with the reused buffer (measured).
    """
    (p, q), (sy, sx) = shape, size
    if not split:
        return torch.fft.irfft2(spec, s=(p, q))[..., :sy, :sx]
    rows = torch.fft.ifft(spec, dim=-1)[..., :sy].transpose(-1, -2)
    if work is not None:
        rows = work.take("rows_t", rows.shape, rows.dtype).copy_(rows)
    return torch.fft.irfft(rows, n=q, dim=-1)[..., :sx]


class _Workspace:
    """Work buffers reused from one template chunk (and level) to the next.

    ``take(name, shape, dtype)`` returns a tensor of that shape on the same memory as the last
    call with that name when it fits. On the CPU a fresh allocation of tens of MB is mapped
    from the OS and page-faulted in on first touch; reusing a chunk-sized buffer pays that
    once per call instead of once per product. (With it and the small FFT calls of
    :data:`CPU_FFT_BYTES`, 8 angles of the 512^2 benchmark case took 1.6 s instead of 2.7 s,
    the difference all system time.)
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.buffers: dict[str, torch.Tensor] = {}

    def take(self, name: str, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        size = math.prod(shape)
        buf = self.buffers.get(name)
        if buf is None or buf.dtype != dtype or buf.numel() < size:
            buf = self.buffers[name] = torch.empty(size, dtype=dtype, device=self.device)
        return buf[:size].view(shape)


class FixedSpectra:
    """The fixed image's side of CMIF: level spectra on the FFT grid, computed once.

    Parameters
    ----------
    labels : Tensor ``(B, H, W)`` long
        Fixed label image, ``0 .. levels-1`` inside the mask and ``-1`` outside.
    levels : int
        ``K_A``.
    grid : ShiftGrid
        From :func:`shift_grid` for these fixed and the moving images' sizes.
    moving_shape : (h, w)
        Size of the moving images this side will be correlated with.
    dtype : torch.dtype
        float32 or float64 (see *Precision* in the module docstring).
    split : bool, optional
        Transposed spectra and the two-stage pruned inverse (:func:`_inverse_crop`); default:
        on the CPU only.
    """

    def __init__(self, labels: torch.Tensor, levels: int, grid: ShiftGrid,
                 moving_shape: tuple[int, int], dtype: torch.dtype, split: bool | None = None):
        self.levels = levels
        self.moving_shape = tuple(moving_shape)
        self.grid = grid
        self.dtype = dtype
        self.shape = tuple(labels.shape[-2:])
        self.batch = labels.shape[0]
        self.labels = labels
        # Transposed spectra and a pruned two-stage inverse on the CPU (see _inverse_crop).
        self.split = labels.device.type == "cpu" if split is None else split
        inside = labels >= 0
        self.mask_count = inside.flatten(1).sum(1)
        # The last level can be dropped when the mask is the whole image: sum_i A_i = 1.
        self.full = bool(inside.all())
        kept = levels - 1 if self.full else levels
        self.spectra = self._spectra(labels, kept)
        self._box = None

    def box_sums(self) -> torch.Tensor:
        """Counts ``(B, K_A, Sy, Sx)`` of each fixed level under the moving image's rectangle at
        every shift (window sums, :func:`_box_counts`; computed once, then cached)."""
        if self._box is None:
            (y0, x0), (sy, sx) = self.grid.origin, self.grid.size
            h, w = self.moving_shape
            box = _box_counts(self.labels, self.levels, (y0, h, sy), (x0, w, sx))
            self._box = box.to(self.dtype)
        return self._box

    def _spectra(self, labels: torch.Tensor, kept: int) -> torch.Tensor:
        p, q = self.grid.fft_shape
        y0, x0 = self.grid.origin
        h, w = self.shape
        if kept == 0:  # one level over the whole image: nothing to transform
            shape = (q // 2 + 1, p) if self.split else (p, q // 2 + 1)
            return torch.zeros((labels.shape[0], 0) + shape, device=labels.device,
                               dtype=self.dtype.to_complex())
        # The level indicators of A rolled by -origin, which puts shift `origin` at index 0 of
        # the correlation, so the map is the leading (Sy, Sx) block of the inverse FFT (a view,
        # no copy). Written straight into their rolled places on the grid.
        pad = torch.zeros((labels.shape[0], kept, p, q), device=labels.device, dtype=self.dtype)
        for rs, rd, rn in _rolled_pieces(h, p, -y0):
            for cs, cd, cn in _rolled_pieces(w, q, -x0):
                _indicators(labels[:, rs:rs + rn, cs:cs + cn], kept, self.dtype,
                            out=pad[:, :, rd:rd + rn, cd:cd + cn])
        return _forward(pad, self.split)


# --------------------------------------------------------------------------------------------
# The counts and entropies for every shift

#: On the CPU each inverse FFT call takes at most this many bytes of spectra (at least one
#: plane): whole templates when they fit, else groups of one template's levels. Small calls
#: keep every transient allocation of the FFTs well under glibc's mmap threshold, so it is
#: served from the heap instead of being mapped and page-faulted in afresh (at a 768^2 grid,
#: batched calls spent as much time in page faults as in the FFTs). On CUDA, all templates of
#: a fixed image in one batch.
CPU_FFT_BYTES = 4 << 20


#: The compiled pass consumes all rows of a template chunk in one fused kernel
#: (:func:`mibench.estimators.cmif_compiled.fused_pass`) when their inverse FFTs' outputs
#: together take between these many bytes (and each row is one inverse call): below, the
#: kernel's own compilation (one per number of rows) is not worth it; above, holding them all
#: costs more memory than the row-by-row pass saves.
FUSED_MIN_BYTES = 4 << 20
FUSED_MAX_BYTES = 64 << 20


def fft_batches(grid: ShiftGrid, dtype: torch.dtype, templates: int, levels: int,
                device: torch.device) -> tuple[int, int]:
    """``(templates per chunk, moving levels per inverse FFT call)`` (see :data:`CPU_FFT_BYTES`)."""
    if device.type != "cpu":
        return templates, levels
    p, q = grid.fft_shape
    plane = p * (q // 2 + 1) * 2 * dtype.itemsize
    return (max(1, min(templates, CPU_FFT_BYTES // (plane * levels))),
            max(1, min(levels, CPU_FFT_BYTES // plane)))


def _xlogx_into(acc: torch.Tensor, c: torch.Tensor, inv_ref: torch.Tensor,
                work: _Workspace | None = None) -> torch.Tensor:
    """``acc += c log(c / ref)`` for counts ``c >= 0``, with ``0 log 0 = 0``; returns ``acc``.

    Four passes, one temporary (``torch.xlogy`` is several times slower on CPU): a zero count
    gets a tiny ratio whose finite log is then multiplied by 0.
    """
    return acc.addcmul_(_log_ratio(c, inv_ref, work), c)


def _xlogx(c: torch.Tensor, inv_ref: torch.Tensor, work: _Workspace | None = None) -> torch.Tensor:
    """``c log(c / ref)`` for counts ``c >= 0``, with ``0 log 0 = 0`` (see :func:`_xlogx_into`)."""
    return _log_ratio(c, inv_ref, work).mul_(c)


def _log_ratio(c: torch.Tensor, inv_ref: torch.Tensor, work: _Workspace | None) -> torch.Tensor:
    """``log(max(c / ref, 1e-30))``, in a work buffer when ``work`` is given."""
    shape = torch.broadcast_shapes(c.shape, inv_ref.shape)
    out = None if work is None else work.take("log", shape, c.dtype)
    return torch.mul(c, inv_ref, out=out).clamp_min_(1e-30).log_()


def _sum64(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Sum over ``dim`` in float64, one slice at a time (``sum(dtype=float64)`` would first
    make a float64 copy of all of ``x``)."""
    out = torch.zeros_like(x.select(dim, 0), dtype=torch.float64)
    for j in range(x.shape[dim]):
        out += x.select(dim, j)
    return out


def cmif_counts_entropies(fixed: FixedSpectra, labels: torch.Tensor, levels: int,
                          entropy_pass: str = "auto"):
    """Overlap and entropy sums of every shift, for moving label images against ``fixed``.

    Parameters
    ----------
    fixed : FixedSpectra
        ``B`` fixed images.
    labels : Tensor ``(B, R, h, w)`` long
        ``R`` moving label images per fixed image (e.g. ``R`` rotations), ``-1`` outside the mask.
    levels : int
        ``K_B``.
    entropy_pass : {"auto", "compiled", "eager"}
        The per-shift entropy pass compiled (:mod:`.cmif_compiled`; same values within float
        rounding, an eager fallback with one warning) or eager; ``auto``: compiled once the
        process has spent ``AUTO_EAGER_SECONDS`` (120 s) in eager passes.

    Returns
    -------
    n, ha, hb, hab : Tensor ``(B, R, Sy, Sx)``
        Overlap (exact count, compute dtype) and the entropies (nats, float64) of A, B and
        (A, B) over the overlap (0 where the overlap is empty).
    """
    grid, dtype = fixed.grid, fixed.dtype
    b, r, hm, wm = labels.shape
    device = labels.device
    if (hm, wm) != fixed.moving_shape:
        raise ValueError(f"moving labels are {hm}x{wm}; the fixed side was prepared for "
                         f"{fixed.moving_shape[0]}x{fixed.moving_shape[1]}")
    inside = labels >= 0
    moving_full = bool(inside.all())
    largest = torch.minimum(fixed.mask_count[:, None], inside.flatten(2).sum(-1))  # (B, R)
    inv_ref = 1.0 / largest.to(dtype).clamp_min(1)
    shape = (b, r) + grid.size
    n = torch.empty(shape, dtype=dtype, device=device)
    ha, hb, hab = (torch.empty(shape, dtype=torch.float64, device=device) for _ in range(3))
    chunk, group = fft_batches(grid, dtype, r, levels, device)
    work = _Workspace(device)
    kernels = compiled.kernels(device) if compiled.use_compiled(entropy_pass, device) else None
    start = time.perf_counter()
    for bi in range(b):
        for r0 in range(0, r, chunk):
            part = slice(r0, min(r, r0 + chunk))
            args = (fixed, bi, labels[bi, part], levels, moving_full, inv_ref[bi, part], work,
                    group)
            sums = None
            if kernels is not None:
                try:
                    sums = _chunk_entropies_compiled(*args, kernels)
                except Exception as err:  # noqa: BLE001 - any failure falls back, once
                    compiled.fail(device, f"{type(err).__name__}: {err}".splitlines()[0])
                    kernels = None
            if sums is None:
                sums = _chunk_entropies(*args)
            for out, value in zip((n, ha, hb, hab), sums, strict=True):
                out[bi, part] = value
    if kernels is None and entropy_pass == "auto":
        compiled.note_eager(time.perf_counter() - start)
    return n, ha, hb, hab


def _chunk_entropies(fixed: FixedSpectra, bi: int, labels: torch.Tensor, kb: int,
                     moving_full: bool, inv_ref: torch.Tensor, work: _Workspace, group: int):
    """:func:`cmif_counts_entropies` for the moving labels ``(T, h, w)`` of fixed image ``bi``
    (``inv_ref (T,)``: one over each template's reference count), ``group`` moving levels per
    inverse FFT call: ``n, ha, hb, hab`` of shape ``(T, Sy, Sx)``."""
    grid, dtype = fixed.grid, fixed.dtype
    (y0, x0), (sy, sx), (p, q) = grid.origin, grid.size, grid.fft_shape
    t, hm, wm = labels.shape
    ja = fixed.spectra.shape[1]
    jb = kb - 1 if moving_full else kb
    inv_map = inv_ref.view(t, 1, 1)
    inv_lev = inv_ref.view(t, 1, 1, 1)  # broadcast over levels
    # Per moving level j, the float32 sum over i of C_ij log(C_ij / R) (K_A terms, as many as
    # the float32 sum over j it replaces); the sum over j is taken in float64 at the end: the
    # per-shift entropies are differences of sums of up to K_A K_B terms.
    acc = work.take("acc", (t, kb, sy, sx), dtype).zero_()
    colsum = work.take("colsum", (t, kb, sy, sx), dtype).zero_()
    s_a = torch.zeros((t, sy, sx), dtype=torch.float64, device=labels.device)
    # Counts of A's levels under the moving rectangle (needed when B's last level is dropped).
    box_a = fixed.box_sums()[bi] if moving_full else None  # (K_A, Sy, Sx)
    # Per row i, the sum over the kept columns: into the dropped column (moving_full), else
    # the marginal count a_i.
    rowsum = work.take("rowsum", (t, ja, sy, sx) if moving_full else (t, sy, sx), dtype)
    if jb == 0:
        rowsum.zero_()
    if jb > 0 and ja > 0:
        spec_b = _forward_padded(_indicators(labels, jb, dtype), (p, q), fixed.split)
        torch.conj_physical_(spec_b)
        prod = work.take("prod", spec_b.shape, spec_b.dtype)
        for i in range(ja):
            torch.mul(spec_b, fixed.spectra[bi, i], out=prod)
            row_sum = rowsum[:, i] if moving_full else rowsum
            for j0 in range(0, jb, group):
                j1 = min(jb, j0 + group)
                # The rounded counts, in place in the inverse's output (a view, no copy).
                counts = _inverse_crop(prod[:, j0:j1], (p, q), (sy, sx), fixed.split,
                                       work).round_()
                colsum[:, j0:j1] += counts
                _xlogx_into(acc[:, j0:j1], counts, inv_lev, work)
                part = counts[:, 0] if j1 - j0 == 1 else counts.sum(1)
                if j0 == 0:
                    row_sum.copy_(part)
                else:
                    row_sum += part
                del counts  # free the inverse's output before the next one is allocated
            if not moving_full:
                s_a += _xlogx(rowsum, inv_map)
        del spec_b
    if moving_full and ja > 0:
        # The dropped column: C_i,K_B-1 = a_i - sum_j<K_B-1 C_ij, every row at once.
        last_col = torch.sub(box_a[None, :ja], rowsum, out=rowsum)
        torch.sum(last_col, 1, out=colsum[:, jb])
        acc[:, jb] += _xlogx(last_col, inv_lev, work).sum(1)
    if moving_full:
        # a_i is the box count of A_i under the moving rectangle: every level at once (and the
        # same for every template, all of the moving image's size).
        s_a = _sum64(_xlogx(box_a[None], inv_lev[:1]), 1).expand(t, -1, -1)
    if fixed.full:
        # The dropped row: C_{K_A-1, j} = b_j - sum_i<K_A-1 C_ij, b_j the count of B_j over the
        # fixed image (window sums of B_j, its image flipped so the windows advance with s).
        h, w = fixed.shape
        col = _box_counts(labels.flip(-2, -1), kb, (y0 + hm - h, h, sy),
                          (x0 + wm - w, w, sx)).to(dtype)
        last = torch.sub(col, colsum, out=colsum)
        _xlogx_into(acc, last, inv_lev, work)
        if not moving_full:
            s_a += _xlogx(last.sum(1), inv_map)
        colsum = col
    n = colsum.sum(1)
    s_ab = _sum64(acc, 1)
    s_b = _sum64(_xlogx(colsum, inv_lev, work), 1)
    return (n, *compiled.entropies(n, s_a, s_b, s_ab, inv_map))


def _chunk_entropies_compiled(fixed: FixedSpectra, bi: int, labels: torch.Tensor, kb: int,
                              moving_full: bool, inv_ref: torch.Tensor, work: _Workspace,
                              group: int, kernels: compiled.Kernels):
    """:func:`_chunk_entropies` with the compiled kernels of :mod:`.cmif_compiled` consuming
    each row of counts in one pass and finishing in another; None where there is no FFT to
    do (one level on a side without a mask: the eager pass handles it)."""
    grid, dtype = fixed.grid, fixed.dtype
    (sy, sx), (p, q) = grid.size, grid.fft_shape
    t = labels.shape[0]
    ja = fixed.spectra.shape[1]
    jb = kb - 1 if moving_full else kb
    if ja == 0 or jb == 0:
        return None
    inv_map = inv_ref.view(t, 1, 1)
    inv_lev = inv_ref.view(t, 1, 1, 1)
    spec_b = _forward_padded(_indicators(labels, jb, dtype), (p, q), fixed.split)
    torch.conj_physical_(spec_b)
    prod = work.take("prod", spec_b.shape, spec_b.dtype)
    if group >= jb and FUSED_MIN_BYTES <= ja * t * jb * sy * q * dtype.itemsize <= FUSED_MAX_BYTES:
        # All rows held at once (one inverse call each), consumed by one fused kernel.
        parts = []
        for i in range(ja):
            torch.mul(spec_b, fixed.spectra[bi, i], out=prod)
            parts.append(_inverse_crop(prod, (p, q), (sy, sx), fixed.split, work))
        del spec_b
        box_a, col = _dropped_level_counts(fixed, bi, labels, kb, moving_full)
        return kernels.fused(parts, box_a, col, inv_map)
    # The transformed columns only, so that the row kernel sees one stride pattern.
    colsum = work.take("colsum", (t, jb, sy, sx), dtype).zero_()
    s_ab = work.take("s_ab", (t, sy, sx), torch.float64).zero_()
    rows = work.take("rows", (t, ja, sy, sx), dtype)
    for i in range(ja):
        torch.mul(spec_b, fixed.spectra[bi, i], out=prod)
        for j0 in range(0, jb, group):
            j1 = min(jb, j0 + group)
            counts = _inverse_crop(prod[:, j0:j1], (p, q), (sy, sx), fixed.split, work)
            part = kernels.row(counts, colsum[:, j0:j1], s_ab, inv_lev)
            if j0 == 0:
                rows[:, i].copy_(part)
            else:
                rows[:, i] += part
            del counts, part
    del spec_b
    box_a, col = _dropped_level_counts(fixed, bi, labels, kb, moving_full)
    return kernels.finish(s_ab, colsum, rows, box_a, col, inv_map)


def _dropped_level_counts(fixed: FixedSpectra, bi: int, labels: torch.Tensor, kb: int,
                          moving_full: bool):
    """The box counts the dropped levels need (None where no level is dropped): the fixed
    levels under the moving rectangle ``(K_A, Sy, Sx)``, the moving levels over the fixed image
    ``(T, K_B, Sy, Sx)``."""
    grid = fixed.grid
    box_a = fixed.box_sums()[bi] if moving_full else None
    col = None
    if fixed.full:
        (y0, x0), (sy, sx) = grid.origin, grid.size
        (h, w), (hm, wm) = fixed.shape, labels.shape[-2:]
        col = _box_counts(labels.flip(-2, -1), kb, (y0 + hm - h, h, sy),
                          (x0 + wm - w, w, sx)).to(fixed.dtype)
    return box_a, col


def _normalised(n, ha, hb, hab, normalisation: str) -> torch.Tensor:
    """The map's value from its entropies: the MI in nats (``"none"``), or an NMI variant."""
    check_choice("normalisation", normalisation, CMIF_NORMALISATIONS)
    if normalisation == "none":
        # Plug-in MI is >= 0; rounding of the entropy sums must not push it below.
        return (ha + hb - hab).clamp_min(0)
    return normalised_mi(ha, hb, hab, normalisation)


def cmif_from_labels(fixed: FixedSpectra, labels: torch.Tensor, levels: int, *,
                     min_overlap: float = 0.5, normalisation: str = "none",
                     entropy_pass: str = "auto") -> CMIFMap:
    """MI map of moving label images against a prepared fixed side.

    Parameters
    ----------
    fixed : FixedSpectra
        ``B`` fixed label images on their FFT grid.
    labels : Tensor ``(B, R, h, w)`` long
        Moving label images (``-1`` outside the mask); ``R`` per fixed image.
    levels : int
        ``K_B``.
    min_overlap : float
        Share of ``min(|M_A|, |M_B|)`` a shift's overlap must reach to be valid.
    normalisation : {"none", "studholme", "arithmetic", "joint", "geometric"}
        ``none``: MI in nats; the others are the NMI variants of
        :func:`mibench.estimators.histogram.normalised_mi`.
    entropy_pass : {"auto", "compiled", "eager"}
        See :func:`cmif_counts_entropies`.

    Returns
    -------
    CMIFMap
        ``value``, ``overlap``, ``valid`` of shape ``(B, R, Sy, Sx)``.
    """
    n, ha, hb, hab = cmif_counts_entropies(fixed, labels, levels, entropy_pass)
    moving_count = (labels >= 0).flatten(2).sum(-1)
    largest = torch.minimum(fixed.mask_count[:, None], moving_count).to(n.dtype)
    least = (min_overlap * largest).clamp_min(1)[..., None, None]
    valid = n >= least
    value = _normalised(n, ha, hb, hab, normalisation).to(n.dtype)
    value = torch.where(valid, value, torch.zeros_like(value))
    return CMIFMap(value, n, valid, fixed.grid.origin)


def _check_options(levels: int, levels_moving: int, quantisation: str, min_overlap: float):
    if levels < 1 or levels_moving < 0:
        raise ValueError(f"levels must be >= 1 (levels_moving >= 0), got {levels}, "
                         f"{levels_moving}")
    check_choice("quantisation", quantisation, QUANTISERS)
    if not 0.0 <= min_overlap <= 1.0:
        raise ValueError(f"min_overlap must lie in [0, 1], got {min_overlap}")


def least_overlap(fixed_labels: torch.Tensor, moving_labels: torch.Tensor,
                  min_overlap: float) -> float:
    """The smallest overlap (pixels) any valid shift can have over a batch: sizes the grid."""
    fa = (fixed_labels >= 0).flatten(1).sum(1).min()
    mb = (moving_labels >= 0).flatten(1).sum(1).min()
    return max(1.0, min_overlap * float(torch.minimum(fa, mb)))


def cmif_map(fixed: torch.Tensor, moving: torch.Tensor, fixed_mask: torch.Tensor | None = None,
             moving_mask: torch.Tensor | None = None, *, levels: int = 8,
             levels_moving: int = 0, quantisation: str = "kmeans", shifts: str = "full",
             min_overlap: float = 0.5, normalisation: str = "none", precision: str = "auto",
             entropy_pass: str = "auto", seed: int = 0) -> CMIFMap:
    """MI of two images for every integer shift of the moving image (CMIF).

    Parameters
    ----------
    fixed : Tensor ``(B, C, H, W)`` or ``(B, C, D, H, W)``
    moving : Tensor ``(B, C', h, w)`` or ``(B, C', d, h, w)``
        Float images, or volumes (every 3-D shift, by 3-D FFT: the *Volumes* section of this
        module); sizes, and channel counts, may differ. A batch of 1 is broadcast.
    fixed_mask, moving_mask : Tensor ``(B, 1, H, W)``, ``(B, 1, h, w)`` bool, optional
        True for the pixels (voxels: ``(B, 1, D, H, W)``) to use.
    levels, levels_moving : int
        ``K_A`` and ``K_B`` (``levels_moving=0``: same as ``levels``).
    quantisation : {"kmeans", "equal", "quantile"}
        See :mod:`mibench.estimators.quantise`.
    shifts : {"full", "centre", "zero"}
        Which shifts the map covers (module docstring).
    min_overlap : float
        Share of ``min(|M_A|, |M_B|)`` the overlap of a valid shift must reach.
    normalisation : {"none", "studholme", "arithmetic", "joint", "geometric"}
        ``none``: MI in nats; else the NMI variant (as the ``nmi`` estimator).
    precision : {"auto", "float32", "float64"}
        FFT precision (module docstring); float64 input always computes in float64.
    entropy_pass : {"auto", "compiled", "eager"}
        The per-shift entropy pass compiled by ``torch.compile`` or eager (same values within
        float rounding; see :func:`cmif_counts_entropies`). Volumes always take the eager pass.
    seed : int
        Seed of the k-means quantiser.

    Returns
    -------
    CMIFMap
        ``value``, ``overlap``, ``valid`` of shape ``(B, Sy, Sx)``; ``origin`` gives the shift of
        entry ``[0, 0]``: entry ``[r, c]`` lays the moving image's top-left pixel on fixed pixel
        ``(x0 + c, y0 + r)``. For volumes ``(B, Sz, Sy, Sx)``, entry ``[k, r, c]`` lays moving
        voxel ``(0, 0, 0)`` on fixed voxel ``(x0 + c, y0 + r, z0 + k)``.
    """
    levels_moving = levels_moving or levels
    _check_options(levels, levels_moving, quantisation, min_overlap)
    if fixed.ndim == 5 or moving.ndim == 5:
        check_choice("entropy_pass", entropy_pass, ENTROPY_PASSES)
        if fixed.ndim != moving.ndim:
            raise ValueError(f"fixed {tuple(fixed.shape)} and moving {tuple(moving.shape)} "
                             "must both be images or both volumes")
        return _cmif_map_volumes(fixed, moving, fixed_mask, moving_mask, levels=levels,
                                 levels_moving=levels_moving, quantisation=quantisation,
                                 shifts=shifts, min_overlap=min_overlap,
                                 normalisation=normalisation, precision=precision, seed=seed)
    b = max(fixed.shape[0], moving.shape[0])
    fixed_labels = quantise(fixed, levels, fixed_mask, method=quantisation, seed=seed)
    moving_labels = quantise(moving, levels_moving, moving_mask, method=quantisation, seed=seed)
    fixed_labels = fixed_labels.expand(b, -1, -1)
    moving_labels = moving_labels.expand(b, -1, -1)
    least = least_overlap(fixed_labels, moving_labels, min_overlap)
    grid = shift_grid(tuple(fixed_labels.shape[-2:]), tuple(moving_labels.shape[-2:]), shifts,
                      least)
    largest = float(torch.minimum((fixed_labels >= 0).flatten(1).sum(1),
                                  (moving_labels >= 0).flatten(1).sum(1)).max())
    like = torch.promote_types(fixed.dtype, moving.dtype)
    dtype = _dtypes(precision, largest, like)
    side = FixedSpectra(fixed_labels, levels, grid, tuple(moving_labels.shape[-2:]), dtype)
    out = cmif_from_labels(side, moving_labels[:, None], levels_moving, min_overlap=min_overlap,
                           normalisation=normalisation, entropy_pass=entropy_pass)
    return CMIFMap(out.value[:, 0], out.overlap[:, 0], out.valid[:, 0], out.origin)


def cmif(fixed: torch.Tensor, moving: torch.Tensor, mask: torch.Tensor | None = None, *,
         levels: int = 8, levels_moving: int = 0, quantisation: str = "kmeans",
         normalisation: str = "none", precision: str = "auto", entropy_pass: str = "auto",
         seed: int = 0) -> torch.Tensor:
    """The ``cmif`` estimator: the CMIF value at shift 0 (the pair as given), ``(B,)``.

    This is the plug-in MI (or normalised MI) of the quantised images over ``mask``, i.e. one
    entry of the map of :func:`cmif_map` (``shifts="zero"``, no minimum overlap). For the map over
    all shifts (and its maximum), call :func:`cmif_map`.

    Parameters
    ----------
    fixed, moving : Tensor ``(B, C, H, W)`` or ``(B, C, D, H, W)``
    mask : Tensor ``(B, 1, H, W)`` or ``(B, 1, D, H, W)`` bool, optional
        Pixels (voxels) to use, in both images.
    levels, levels_moving, quantisation, normalisation, precision, entropy_pass, seed
        As :func:`cmif_map`.
    """
    out = cmif_map(fixed, moving, mask, mask, levels=levels, levels_moving=levels_moving,
                   quantisation=quantisation, shifts="zero", min_overlap=0.0,
                   normalisation=normalisation, precision=precision,
                   entropy_pass=entropy_pass, seed=seed)
    return out.value.flatten(1)[:, 0]


# --------------------------------------------------------------------------------------------
# Volumes: every 3-D translation by 3-D FFT
#
# The same counts and entropies as for images, with ``rfftn``/``irfftn`` over the three spatial
# axes ``(D, H, W)``: a map entry ``s = (dz, dy, dx)`` compares moving voxel ``(x, y, z)`` with
# fixed voxel ``(x + dx, y + dy, z + dz)``. A level is dropped where a mask allows it, as for
# images (the box counts become 3-D window sums, :func:`_box_counts_nd`), so a pair of volumes
# without masks needs ``(K_A - 1)`` forward FFTs once for the fixed volume, and ``K_B - 1``
# forward and ``(K_A - 1)(K_B - 1)`` inverse FFTs per moving volume (a masked moving volume,
# e.g. a rotated one: ``K_B`` forward and ``(K_A - 1) K_B`` inverse). There is no pruned
# two-stage transform and no compiled entropy pass here: every transform is a plain
# ``rfftn``/``irfftn`` on the grid of :func:`shift_grid`, and the entropies are summed eagerly,
# one fixed level (a row of ``K_B`` count maps) at a time.


def _box_counts_nd(labels: torch.Tensor, levels: int,
                   ranges: list[tuple[int, int, int]]) -> torch.Tensor:
    """Count of each level of ``labels (..., n_1, .., n_d)`` in the boxes ``[s_a + k, s_a + k
    + l_a)`` (clipped to the array) along every spatial axis ``a``, ``k < S_a``, with
    ``ranges[a] = (s_a, l_a, S_a)``: ``(..., levels, S_1, .., S_d)``.

    One 1-D window sum (:func:`_window_sums`) per axis, the axis moved last and made contiguous
    first. Exact: float32 while the counts stay below 2^24, else float64.
    """
    nd = len(ranges)
    exact = torch.float32 if math.prod(labels.shape[-nd:]) < (1 << 24) else torch.float64
    out = _indicators_nd(labels, levels, exact)
    for a, (start, length, count) in enumerate(ranges):
        dim = out.ndim - nd + a
        moved = out.movedim(dim, -1).contiguous()
        out = _window_sums(moved, start, length, count).movedim(-1, dim)
    return out.contiguous()


def _indicators_nd(labels: torch.Tensor, levels: int, dtype: torch.dtype) -> torch.Tensor:
    """``(..., *spatial)`` labels -> ``(..., levels, *spatial)`` 0/1 indicators of the 3-D
    labels (``-1`` gives all zeros)."""
    lab = labels.to(dtype).unsqueeze(-4)
    ks = torch.arange(levels, device=labels.device, dtype=dtype).view(-1, 1, 1, 1)
    return torch.eq(lab, ks).to(dtype)


class VolumeSpectra:
    """The fixed volume's side of CMIF: level spectra on the 3-D FFT grid, computed once.

    Parameters
    ----------
    labels : Tensor ``(D, H, W)`` long
        Fixed label volume, ``0 .. levels-1`` inside the mask and ``-1`` outside.
    levels : int
        ``K_A``.
    grid : ShiftGrid
        From :func:`shift_grid` for the fixed and the moving volumes' sizes (3-tuples).
    moving_shape : (d, h, w)
        Size of the moving volumes this side will be correlated with.
    dtype : torch.dtype
        float32 or float64 (see *Precision* in the module docstring).

    Attributes
    ----------
    forward_ffts : int
        Real 3-D FFTs this side took (one per kept level).
    """

    def __init__(self, labels: torch.Tensor, levels: int, grid: ShiftGrid,
                 moving_shape: tuple[int, int, int], dtype: torch.dtype):
        if labels.ndim != 3 or len(grid.fft_shape) != 3:
            raise ValueError(f"expected a (D, H, W) label volume and a 3-D grid, got "
                             f"{tuple(labels.shape)} and {grid.fft_shape}")
        self.levels = levels
        self.moving_shape = tuple(moving_shape)
        self.grid = grid
        self.dtype = dtype
        self.shape = tuple(labels.shape)
        self.labels = labels
        inside = labels >= 0
        self.mask_count = int(inside.sum())
        # The last level can be dropped when the mask is the whole volume: sum_i A_i = 1.
        self.full = bool(inside.all())
        kept = levels - 1 if self.full else levels
        # The indicators rolled by -origin put shift `origin` at index 0 of the correlation, so
        # the map is the leading block of the inverse FFT.
        pad = torch.zeros((kept,) + tuple(grid.fft_shape), device=labels.device, dtype=dtype)
        d, h, w = self.shape
        pad[:, :d, :h, :w] = _indicators_nd(labels, kept, dtype)
        pad = torch.roll(pad, tuple(-o for o in grid.origin), dims=(1, 2, 3))
        self.spectra = torch.fft.rfftn(pad, dim=(1, 2, 3))  # (kept, P, Q, S/2+1)
        self.forward_ffts = kept
        self._box = None

    def box_sums(self) -> torch.Tensor:
        """Counts ``(K_A, Sz, Sy, Sx)`` of each fixed level under the moving volume's box at
        every shift (computed once, then cached)."""
        if self._box is None:
            ranges = [(o, m, n) for o, m, n in zip(self.grid.origin, self.moving_shape,
                                                   self.grid.size, strict=True)]
            self._box = _box_counts_nd(self.labels, self.levels, ranges).to(self.dtype)
        return self._box


def cmif_volume_counts_entropies(fixed: VolumeSpectra, labels: torch.Tensor, levels: int):
    """Overlap and entropies of every 3-D shift, for one moving label volume against ``fixed``.

    Parameters
    ----------
    fixed : VolumeSpectra
    labels : Tensor ``(d, h, w)`` long
        Moving labels, ``-1`` outside the mask.
    levels : int
        ``K_B``.

    Returns
    -------
    n, ha, hb, hab : Tensor ``(Sz, Sy, Sx)``
        Overlap (exact count, compute dtype) and the entropies (nats, float64) of A, B and
        (A, B) over the overlap (0 where the overlap is empty).
    ffts : (int, int)
        The forward and inverse real 3-D FFTs this call took.
    """
    grid, dtype = fixed.grid, fixed.dtype
    if tuple(labels.shape) != fixed.moving_shape:
        raise ValueError(f"moving labels are {tuple(labels.shape)}; the fixed side was prepared "
                         f"for {fixed.moving_shape}")
    size, fft_shape = grid.size, grid.fft_shape
    inside = labels >= 0
    moving_full = bool(inside.all())
    ref = max(1, min(fixed.mask_count, int(inside.sum())))
    inv_ref = torch.tensor(1.0 / ref, dtype=dtype, device=labels.device)
    ja = fixed.spectra.shape[0]
    jb = levels - 1 if moving_full else levels
    crop = tuple(slice(0, n) for n in size)
    # Column sums over the rows computed (all K_B columns; the dropped one filled below).
    colsum = torch.zeros((levels,) + size, dtype=dtype, device=labels.device)
    s_ab = torch.zeros(size, dtype=torch.float64, device=labels.device)
    s_a = torch.zeros(size, dtype=torch.float64, device=labels.device)
    box_a = fixed.box_sums() if moving_full else None
    forward = inverse = 0
    spec_b = None
    if jb > 0 and ja > 0:
        spec_b = torch.fft.rfftn(_indicators_nd(labels, jb, dtype), s=fft_shape, dim=(1, 2, 3))
        torch.conj_physical_(spec_b)
        forward = jb
    for i in range(ja):
        if spec_b is not None:
            counts = torch.fft.irfftn(spec_b * fixed.spectra[i], s=fft_shape,
                                      dim=(1, 2, 3))[(slice(None),) + crop].round_()
            inverse += jb
            colsum[:jb] += counts
            # Float32 (compute dtype) sum over the K_B terms of a row, float64 over the rows.
            s_ab += _xlogx(counts, inv_ref).sum(0)
            row = counts.sum(0)
            del counts
        else:
            row = torch.zeros(size, dtype=dtype, device=labels.device)
        if moving_full:
            # The dropped column: C_i,K_B-1 = a_i - sum_j<K_B-1 C_ij.
            last = box_a[i] - row
            colsum[jb] += last
            s_ab += _xlogx(last, inv_ref)
        else:
            s_a += _xlogx(row, inv_ref)
    if moving_full:
        # a_i is the box count of A_i under the moving volume's box, every level at once.
        s_a = _sum64(_xlogx(box_a, inv_ref), 0)
    if fixed.full:
        # The dropped row: C_K_A-1,j = b_j - sum_i<K_A-1 C_ij, b_j the count of B_j over the
        # fixed volume (window sums of B_j, the volume flipped so the windows advance with s).
        ranges = [(o + m - f, f, n) for o, m, f, n in zip(grid.origin, labels.shape,
                                                          fixed.shape, size, strict=True)]
        col = _box_counts_nd(labels.flip(0, 1, 2), levels, ranges).to(dtype)
        last = col - colsum
        s_ab += _sum64(_xlogx(last, inv_ref), 0)
        if not moving_full:
            s_a += _xlogx(last.sum(0), inv_ref)
        colsum = col
    n = colsum.sum(0)
    s_b = _sum64(_xlogx(colsum, inv_ref), 0)
    return (n, *compiled.entropies(n, s_a, s_b, s_ab, inv_ref)), (forward, inverse)


def cmif_volume_from_labels(fixed: VolumeSpectra, labels: torch.Tensor, levels: int, *,
                            min_overlap: float = 0.5, normalisation: str = "none"
                            ) -> tuple[CMIFMap, tuple[int, int]]:
    """MI maps of moving label volumes against a prepared fixed side.

    Parameters
    ----------
    fixed : VolumeSpectra
    labels : Tensor ``(R, d, h, w)`` long
        ``R`` moving label volumes (e.g. rotations of one), ``-1`` outside the mask.
    levels : int
        ``K_B``.
    min_overlap, normalisation
        As :func:`cmif_from_labels`.

    Returns
    -------
    CMIFMap
        ``value``, ``overlap``, ``valid`` of shape ``(R, Sz, Sy, Sx)``.
    ffts : (int, int)
        Forward and inverse real 3-D FFTs of the ``R`` volumes (the fixed side's not included).
    """
    check_choice("normalisation", normalisation, CMIF_NORMALISATIONS)
    values, overlaps, valids = [], [], []
    forward = inverse = 0
    for lab in labels:
        (n, ha, hb, hab), (f, i) = cmif_volume_counts_entropies(fixed, lab, levels)
        forward, inverse = forward + f, inverse + i
        largest = max(1, min(fixed.mask_count, int((lab >= 0).sum())))
        valid = n >= max(1.0, min_overlap * largest)
        value = _normalised(n, ha, hb, hab, normalisation).to(n.dtype)
        values.append(torch.where(valid, value, torch.zeros_like(value)))
        overlaps.append(n)
        valids.append(valid)
    out = CMIFMap(torch.stack(values), torch.stack(overlaps), torch.stack(valids),
                  fixed.grid.origin)
    return out, (forward, inverse)


def quantise_volumes(volume: torch.Tensor, levels: int, mask: torch.Tensor | None, *,
                     method: str, seed: int) -> torch.Tensor:
    """Quantise volumes ``(B, C, D, H, W)`` (mask ``(B, 1, D, H, W)``) into labels ``(B, D, H,
    W)`` with :func:`mibench.estimators.quantise.quantise`: every quantiser works voxel by
    voxel, so the volume is passed as a ``(B, C, D H, W)`` image."""
    b, c, d, h, w = volume.shape
    flat_mask = None if mask is None else mask.reshape(b, 1, d * h, w)
    labels = quantise(volume.reshape(b, c, d * h, w), levels, flat_mask, method=method,
                      seed=seed)
    return labels.view(b, d, h, w)


def _cmif_map_volumes(fixed, moving, fixed_mask, moving_mask, *, levels, levels_moving,
                      quantisation, shifts, min_overlap, normalisation, precision,
                      seed) -> CMIFMap:
    """:func:`cmif_map` for volumes ``(B, C, D, H, W)``."""
    b = max(fixed.shape[0], moving.shape[0])
    la = quantise_volumes(fixed, levels, fixed_mask, method=quantisation,
                          seed=seed).expand(b, -1, -1, -1)
    lb = quantise_volumes(moving, levels_moving, moving_mask, method=quantisation,
                          seed=seed).expand(b, -1, -1, -1)
    least = least_overlap(la, lb, min_overlap)
    grid = shift_grid(tuple(la.shape[-3:]), tuple(lb.shape[-3:]), shifts, least)
    largest = float(torch.minimum((la >= 0).flatten(1).sum(1),
                                  (lb >= 0).flatten(1).sum(1)).max())
    dtype = _dtypes(precision, largest, torch.promote_types(fixed.dtype, moving.dtype))
    maps = [cmif_volume_from_labels(VolumeSpectra(la[k], levels, grid, tuple(lb.shape[-3:]),
                                                  dtype), lb[k][None], levels_moving,
                                    min_overlap=min_overlap, normalisation=normalisation)[0]
            for k in range(b)]
    return CMIFMap(torch.cat([m.value for m in maps]), torch.cat([m.overlap for m in maps]),
                   torch.cat([m.valid for m in maps]), grid.origin)
