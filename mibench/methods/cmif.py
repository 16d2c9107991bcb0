"""The ``cmif`` method: global rigid alignment by CMIF (Öfverstedt et al. 2022).

The rotation is searched by a sweep, the translation exhaustively: for every angle ``a`` of the
sweep the moving label image is rotated about its centre (nearest neighbour, on its own canvas),
and :mod:`mibench.estimators.cmif` gives the MI for every integer shift at once; the best (angle,
shift) over all angles wins. Then:

0. **Quantisation.** Both images are high-passed (``highpass_sigma``, not in the paper; see
   :func:`rigid_align`) and quantised into ``levels`` equal-population levels.
1. **Sweep.** The sweep over ``[-max_angle, max_angle]`` in steps of ``angle_step`` runs, when
   the images are larger than ``coarse_side``, on copies reduced by an integer factor ``f``
   (area averaging; quantised again), which is about ``f^2`` times cheaper. The ``candidates``
   best local maxima over the angle are kept: a single peak is not reliable on a reduced copy
   (multimodal pairs often have a second peak almost as high at a wrong angle).
2. **Refinement.** At full resolution, for each candidate: 5 angles at half the sweep's spacing
   around it, then ``refine - 1`` rounds that try the best angle's two neighbours at half the
   previous spacing (3 deg, 4 rounds: 1.5, 0.75, 0.38, 0.19 deg). After a reduced sweep, the
   shifts searched are those within ``3 f + 3`` px of the candidate's shift (a smaller FFT
   grid). The candidate with the largest value wins.
3. **Sub-pixel.** Optionally, a parabola through the peak and its two neighbours along each of x,
   y and the angle.

The fixed image's level spectra are computed once per resolution and reused for every angle;
angles are batched (``angle_batch`` at a time, which bounds the memory).

Transform. With ``c = ((w-1)/2, (h-1)/2)`` the moving image's centre, ``R(a)`` the rotation
``[[cos a, -sin a], [sin a, cos a]]`` and ``s = (dx, dy)`` the shift (moving canvas pixel ``q``
on fixed pixel ``q + s``), the result maps fixed pixels to moving pixels as
``T(p) = c + R(a) (p - s - c)`` (the README's *Conventions*), a
:class:`~mibench.transform.MatrixTransform`.

Volumes ``(1, C, D, H, W)`` take :func:`rigid_search_3d`: every 3-D translation at once by 3-D
FFT (:mod:`mibench.estimators.cmif`, *Volumes*) for each rotation of a coarse grid about the x, y
and z axes on a reduced copy, then a local refinement of the best rotations; its docstring and
``info`` state the cost (rotations, FFTs, seconds). The result is a 4x4 voxel transform
``T(p) = c + M (p - s - c)``, ``M = S^-1 R S`` (``S`` the voxel spacing when the geometry is
known).

Use :func:`rigid_align` to initialise another method (``init=cmif``); :func:`register` is the
method factory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from mibench.estimators import cmif as cm
from mibench.estimators.quantise import quantise
from mibench.methods.cmif_common import highpass, parabola_offset, reduce_copy
from mibench.methods.cmif_volumes import rigid_search_3d
from mibench.methods.inputs import prepare_images
from mibench.tensors import image_to_tensor, mask_to_tensor
from mibench.transform import MatrixTransform, RegistrationOutput


@dataclass
class RigidResult:
    """The result of :func:`rigid_search`.

    ``angle`` (degrees) and ``shift`` ``(dx, dy)`` (pixels) parametrise
    ``T(p) = c + R(angle) (p - shift - c)``, ``c`` the moving image's centre; ``value`` is the
    CMIF value at the best integer (angle, shift); ``info`` holds diagnostics.
    """

    angle: float
    shift: tuple[float, float]
    value: float
    centre: tuple[float, float]
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def matrix(self) -> np.ndarray:
        """The 3x3 fixed -> moving pixel matrix."""
        a = math.radians(self.angle)
        rot = np.array([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0],
                        [0.0, 0.0, 1.0]])
        cx, cy = self.centre
        dx, dy = self.shift
        to_centre = np.array([[1.0, 0.0, cx], [0.0, 1.0, cy], [0.0, 0.0, 1.0]])
        back = np.array([[1.0, 0.0, -dx - cx], [0.0, 1.0, -dy - cy], [0.0, 0.0, 1.0]])
        return to_centre @ rot @ back

    @property
    def transform(self) -> MatrixTransform:
        return MatrixTransform(self.matrix)


# --------------------------------------------------------------------------------------------
# Images


def rotate_labels(labels: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Rotate a label image about its centre onto its own canvas, nearest neighbour.

    Parameters
    ----------
    labels : Tensor ``(h, w)`` long
        ``-1`` outside the mask.
    angles : Tensor ``(R,)``
        Degrees; canvas pixel ``q`` takes the label at ``c + R(angle) (q - c)``.

    Returns
    -------
    Tensor ``(R, h, w)`` long
        ``-1`` where the source point falls outside the image or its mask.
    """
    h, w = labels.shape
    dev = labels.device
    rad = torch.deg2rad(angles.to(device=dev, dtype=torch.float64))[:, None, None]
    cos, sin = torch.cos(rad), torch.sin(rad)
    ys = torch.arange(h, device=dev, dtype=torch.float64)[:, None] - (h - 1) / 2
    xs = torch.arange(w, device=dev, dtype=torch.float64)[None, :] - (w - 1) / 2
    mx = torch.round(cos * xs - sin * ys + (w - 1) / 2)
    my = torch.round(sin * xs + cos * ys + (h - 1) / 2)
    inside = (mx >= 0) & (mx <= w - 1) & (my >= 0) & (my <= h - 1)
    idx = (my.clamp(0, h - 1) * w + mx.clamp(0, w - 1)).long()
    out = labels.reshape(-1)[idx]
    return torch.where(inside, out, torch.full_like(out, -1))


# --------------------------------------------------------------------------------------------
# The sweep


@dataclass
class _Labels:
    """Quantised fixed and moving images of one resolution."""

    fixed: torch.Tensor  # (1, H, W)
    moving: torch.Tensor  # (h, w)
    levels: int
    levels_moving: int
    least: float  # smallest valid overlap, px (sizes the grid)
    dtype: torch.dtype


def _quantise_pair(fixed, moving, fixed_mask, moving_mask, levels, levels_moving, quantisation,
                   min_overlap, precision, seed) -> _Labels:
    la = quantise(fixed, levels, fixed_mask, method=quantisation, seed=seed)
    lb = quantise(moving, levels_moving, moving_mask, method=quantisation, seed=seed)
    # The grid is pruned for the unrotated moving mask; rotation only shrinks the mask, so the
    # shifts that reach the minimum overlap only because of a smaller rotated mask may be left
    # out (they lie at the edge of the range, with little overlap).
    least = cm.least_overlap(la, lb, min_overlap)
    largest = float(min((la >= 0).sum(), (lb >= 0).sum()))
    dtype = cm._dtypes(precision, largest, torch.float32)
    return _Labels(la, lb[0], levels, levels_moving, least, dtype)


def _side(labels: _Labels, window=None) -> cm.FixedSpectra:
    shape = tuple(labels.moving.shape)
    grid = cm.shift_grid(tuple(labels.fixed.shape[-2:]), shape, "full", labels.least, window)
    return cm.FixedSpectra(labels.fixed, labels.levels, grid, shape, labels.dtype)


def _evaluate(side: cm.FixedSpectra, labels: _Labels, angles: list[float], *,
              min_overlap: float, normalisation: str, angle_batch: int, entropy_pass: str,
              keep_maps=False):
    """``(value, dy, dx)`` of the best shift for every angle (and, with ``keep_maps``, each
    angle's ``(value map, valid map, origin)``)."""
    results, maps = [], []
    for start in range(0, len(angles), angle_batch):
        chunk = torch.tensor(angles[start:start + angle_batch], dtype=torch.float64)
        rotated = rotate_labels(labels.moving, chunk)[None]  # (1, R, h, w)
        out = cm.cmif_from_labels(side, rotated, labels.levels_moving,
                                  min_overlap=min_overlap, normalisation=normalisation,
                                  entropy_pass=entropy_pass)
        val, dy, dx = out.best()
        for k in range(len(chunk)):
            results.append((float(val[0, k]), int(dy[0, k]), int(dx[0, k])))
            if keep_maps:
                maps.append((out.value[0, k], out.valid[0, k], out.origin))
    return results, maps


def _top_peaks(values: list[float], count: int, circular: bool) -> list[int]:
    """Indices of the ``count`` largest finite local maxima of ``values``, largest first."""
    n = len(values)

    def neighbour(i):
        if circular:
            return values[(i - 1) % n], values[(i + 1) % n]
        return (values[i - 1] if i > 0 else -math.inf), (values[i + 1] if i < n - 1 else -math.inf)

    peaks = [i for i in range(n) if math.isfinite(values[i])
             and all(values[i] >= v for v in neighbour(i))]
    peaks.sort(key=lambda i: -values[i])
    # Plateaus give adjacent equal maxima: keep one of each.
    kept: list[int] = []
    for i in peaks:
        if all(min(abs(i - j), n - abs(i - j) if circular else n) > 1 for j in kept):
            kept.append(i)
    return kept[:count]


def _subpixel_shift(best_map, dy: int, dx: int) -> tuple[float, float]:
    value, valid, (y0, x0) = best_map
    r, c = dy - y0, dx - x0
    sy, sx = value.shape
    oy = ox = 0.0
    if 0 < r < sy - 1 and bool(valid[r - 1, c]) and bool(valid[r + 1, c]):
        oy = parabola_offset(float(value[r - 1, c]), float(value[r, c]), float(value[r + 1, c]))
    if 0 < c < sx - 1 and bool(valid[r, c - 1]) and bool(valid[r, c + 1]):
        ox = parabola_offset(float(value[r, c - 1]), float(value[r, c]), float(value[r, c + 1]))
    return dy + oy, dx + ox


def _fine_shift(coarse: tuple[int, int], angle: float, factor: int, coarse_shape, fine_shape
                ) -> tuple[float, float]:
    """Full-resolution shift ``(dx, dy)`` of a coarse ``(dy, dx)`` at ``angle``.

    Coarse pixel ``u`` is fine pixel ``g(u) = f u + (f - 1) / 2``; conjugating the coarse
    transform ``cc + R (p - s_c - cc)`` by ``g`` gives ``fc + R (p - s - fc)`` with
    ``s = f s_c + d - R^-1 d``, ``d = f cc + (f - 1) / 2 - fc`` (``cc``, ``fc`` the coarse and
    fine canvas centres; ``d = 0`` when ``f`` divides the moving image's sides).
    """
    (hc, wc), (hm, wm) = coarse_shape, fine_shape
    d = (factor * np.array([(wc - 1) / 2, (hc - 1) / 2]) + (factor - 1) / 2
         - np.array([(wm - 1) / 2, (hm - 1) / 2]))
    a = math.radians(angle)
    inv = np.array([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]])
    s = factor * np.array([coarse[1], coarse[0]], dtype=np.float64) + d - inv @ d
    return float(s[0]), float(s[1])


def rigid_search(fixed: torch.Tensor, moving: torch.Tensor,
                 fixed_mask: torch.Tensor | None = None,
                 moving_mask: torch.Tensor | None = None, *, levels: int = 8,
                 levels_moving: int = 0, quantisation: str = "quantile",
                 max_angle: float = 180.0, angle_step: float = 3.0, candidates: int = 3,
                 refine: int = 4, coarse_side: int = 128, min_overlap: float = 0.5,
                 normalisation: str = "none", subpixel: bool = True, angle_batch: int = 8,
                 highpass_sigma: float = 2.0, precision: str = "auto",
                 entropy_pass: str = "auto", seed: int = 0) -> RigidResult:
    """Global rigid search by CMIF (module docstring); see :func:`rigid_align` for the options.

    Returns
    -------
    RigidResult
    """
    levels_moving = levels_moving or levels
    cm._check_options(levels, levels_moving, quantisation, min_overlap)
    if (angle_step <= 0 or max_angle < 0 or refine < 0 or angle_batch < 1 or coarse_side < 8
            or candidates < 1):
        raise ValueError("need angle_step > 0, max_angle >= 0, refine >= 0, angle_batch >= 1, "
                         "coarse_side >= 8, candidates >= 1")
    fixed, moving = prepare_images(fixed, moving)
    if fixed.shape[0] != 1 or moving.shape[0] != 1:
        raise ValueError("rigid alignment takes one pair: (1, C, H, W) images")
    (hf, wf), (hm, wm) = fixed.shape[-2:], moving.shape[-2:]
    factor = max(1, math.ceil(max(hf, wf, hm, wm) / coarse_side))
    opts = {"min_overlap": min_overlap, "normalisation": normalisation,
            "angle_batch": angle_batch, "entropy_pass": entropy_pass}
    prep = (levels, levels_moving, quantisation, min_overlap, precision, seed)

    circular = max_angle >= 180
    if circular:
        count = max(1, round(360 / angle_step))
        sweep = [-180 + k * 360 / count for k in range(count)]
    else:
        count = max(1, math.ceil(2 * max_angle / angle_step))
        sweep = [-max_angle + k * 2 * max_angle / count for k in range(count + 1)]
    spacing = sweep[1] - sweep[0] if len(sweep) > 1 else angle_step
    full = _quantise_pair(highpass(fixed, fixed_mask, highpass_sigma),
                          highpass(moving, moving_mask, highpass_sigma),
                          fixed_mask, moving_mask, *prep)

    # 1. The sweep (reduced copies when the images are large) and its best peaks.
    starts = []  # (angle, window or None)
    if factor > 1:
        fs, fm = reduce_copy(fixed, fixed_mask, factor)
        ms, mm = reduce_copy(moving, moving_mask, factor)
        # The high-pass acts at each resolution with sigma in that resolution's pixels: pooling
        # a full-resolution high-pass would keep little of it.
        coarse = _quantise_pair(highpass(fs, fm, highpass_sigma),
                                highpass(ms, mm, highpass_sigma), fm, mm, *prep)
        results, _ = _evaluate(_side(coarse), coarse, sweep, **opts)
        radius = 3 * factor + 3
        for k in _top_peaks([r[0] for r in results], candidates, circular):
            cx, cy = _fine_shift(results[k][1:], sweep[k], factor, ms.shape[-2:], (hm, wm))
            starts.append((sweep[k], (math.floor(cy) - radius, math.ceil(cy) + radius,
                                      math.floor(cx) - radius, math.ceil(cx) + radius)))
        sides = {}
    else:
        whole = _side(full)
        results, _ = _evaluate(whole, full, sweep, **opts)
        starts = [(sweep[k], None) for k in _top_peaks([r[0] for r in results], candidates,
                                                       circular)]
        sides = {None: whole}
    evaluated = len(sweep)
    if not starts:
        raise RuntimeError("cmif: no shift reaches the minimum overlap at any angle")

    # 2. Refinement of each peak at full resolution: halve the angle spacing each round.
    best = None
    for angle0, window in starts:
        side = sides.get(window) or _side(full, window)
        cache: dict[float, tuple] = {}

        def run(angles, side=side, cache=cache):
            todo = [a for a in angles if a not in cache]
            if todo:
                res, mps = _evaluate(side, full, todo, **opts, keep_maps=True)
                cache.update(zip(todo, zip(res, mps, strict=True), strict=True))
            # Ties (nearest-neighbour rotation makes the value flat over small angle steps)
            # go to the middle of the list, the current angle: max() alone would take the
            # first, drifting every round towards negative angles.
            mid = (len(angles) - 1) / 2
            return angles[max(range(len(angles)),
                              key=lambda k: (cache[angles[k]][0][0], -abs(k - mid)))]

        step = spacing / 2
        angle = run([angle0 + j * step for j in range(-2, 3)]) if refine else run([angle0])
        for _ in range(refine - 1):
            step /= 2
            angle = run([angle - step, angle, angle + step])
        if subpixel and refine:
            # Both neighbours of the final angle, for the parabola (at most one more angle).
            angle = run([angle - step, angle, angle + step])
        evaluated += len(cache)
        (value, dy, dx), vmap = cache[angle]
        if best is None or value > best[0]:
            left = cache.get(angle - step, ((-math.inf,),))[0][0]
            right = cache.get(angle + step, ((-math.inf,),))[0][0]
            best = (value, angle, dy, dx, vmap, (left, right, step), window)

    value, angle, dy, dx, vmap, (left, right, step), window = best
    if not math.isfinite(value):
        raise RuntimeError("cmif: no shift reaches the minimum overlap at full resolution")
    sdy, sdx = float(dy), float(dx)
    if subpixel:
        sdy, sdx = _subpixel_shift(vmap, dy, dx)
        if refine:
            angle += step * parabola_offset(left, value, right)
    info = {"value": value, "angle_deg": angle, "shift_px": [sdx, sdy],
            "angles_evaluated": evaluated, "coarse_factor": factor,
            "levels": [levels, levels_moving], "candidates": [a for a, _ in starts]}
    return RigidResult(angle, (sdx, sdy), value, ((wm - 1) / 2, (hm - 1) / 2), info)


# --------------------------------------------------------------------------------------------
# The method: images here, volumes by mibench.methods.cmif_volumes


def rigid_align(fixed: Any, moving: Any, fixed_mask: Any = None, moving_mask: Any = None, *,
                device: Any = None, levels: int = 8, levels_moving: int = 0,
                quantisation: str = "quantile", max_angle: float = 180.0,
                angle_step: float = 3.0, candidates: int = 3, refine: int = 4,
                coarse_side: int = 128,
                min_overlap: float = 0.5, normalisation: str = "none", subpixel: bool = True,
                angle_batch: int = 8, highpass_sigma: float = 2.0, precision: str = "auto",
                entropy_pass: str = "auto", seed: int = 0) -> MatrixTransform:
    """Global rigid alignment by CMIF: the fixed -> moving pixel transform.

    Parameters
    ----------
    fixed, moving : Tensor ``(1, C, H, W)`` or ndarray ``(H, W[, C])``
        Sizes may differ; when the channel counts differ both images are averaged to grey.
    fixed_mask, moving_mask : bool Tensor ``(1, 1, H, W)`` / ndarray ``(H, W)``, optional
        Valid pixels.
    device : str or torch.device, optional
        Where to compute (default: the fixed tensor's device, the CPU for arrays).
    levels, levels_moving : int
        Quantisation levels ``K_A``, ``K_B`` (``levels_moving=0``: same).
    quantisation : {"quantile", "kmeans", "equal"}
        See :mod:`mibench.estimators.quantise`.
    max_angle : float
        The sweep covers ``[-max_angle, max_angle]`` degrees (180: the full circle).
    angle_step : float
        Spacing of the sweep (degrees).
    candidates : int
        How many of the sweep's best local maxima (over the angle) are refined.
    refine : int
        Refinement rounds at full resolution: the first evaluates 5 angles at half the sweep's
        spacing around a candidate, each further round the best angle's two neighbours at half
        the previous spacing (3 deg sweep, 4 rounds: 0.19 deg).
    coarse_side : int
        The sweep runs on images reduced by the smallest integer factor that brings the longest
        side to at most this (no reduction for smaller images).
    min_overlap : float
        Share of ``min(|M_A|, |M_B|)`` (the rotated moving mask) a shift's overlap must reach.
    normalisation : {"none", "studholme", "arithmetic", "joint", "geometric"}
        What is maximised: MI (nats) or a normalised MI.
    subpixel : bool
        Parabolic refinement of the peak in x, y and the angle.
    angle_batch : int
        Angles computed together (memory grows with it).
    highpass_sigma : float
        Before quantising, subtract from each image its Gaussian blur of this sigma (px of the
        resolution searched, over the mask; 0 = off). Not in the paper: low-frequency content
        (illumination, bias fields, tissue density) gives multimodal pairs spurious MI maxima
        at wrong angles and large shifts; without it 4 of the first 26 hard rigid synthetic
        pairs failed (1 with the high-pass applied before the reduction instead of after).
    precision : {"auto", "float32", "float64"}
        FFT precision (:mod:`mibench.estimators.cmif`).
    entropy_pass : {"auto", "compiled", "eager"}
        The per-shift entropy pass compiled by ``torch.compile`` (an eager fallback with one
        warning where it cannot compile) or eager; the same values within float rounding
        (:func:`mibench.estimators.cmif.cmif_counts_entropies`).
    seed : int
        Seed of the k-means quantiser.

    Returns
    -------
    MatrixTransform
        ``T(p) = c + R(angle) (p - shift - c)``, fixed px -> moving px.
    """
    return rigid_search(
        *_inputs(fixed, moving, fixed_mask, moving_mask, device), levels=levels,
        levels_moving=levels_moving, quantisation=quantisation, max_angle=max_angle,
        angle_step=angle_step, candidates=candidates, refine=refine, coarse_side=coarse_side,
        min_overlap=min_overlap,
        normalisation=normalisation, subpixel=subpixel, angle_batch=angle_batch,
        highpass_sigma=highpass_sigma, precision=precision, entropy_pass=entropy_pass,
        seed=seed).transform


def _inputs(fixed, moving, fixed_mask, moving_mask, device):
    if device is None:
        device = fixed.device if isinstance(fixed, torch.Tensor) else "cpu"
    return (image_to_tensor(fixed, device), image_to_tensor(moving, device),
            mask_to_tensor(fixed_mask, device), mask_to_tensor(moving_mask, device))


#: Options of the ``cmif`` method that only one of the two searches takes: the 2-D sweep's
#: angles and reduction, and the 3-D search's (whose scales differ: a 3 degree sweep over the full
#: circle is 120 angles in 2-D, 1.7 million rotations in 3-D).
IMAGE_ONLY = ("max_angle", "angle_step", "coarse_side", "angle_batch")
VOLUME_ONLY = ("max_angle_3d", "angle_step_3d", "coarse_side_3d", "fine_side_3d")


def register(fixed: torch.Tensor, moving: torch.Tensor, *, fixed_mask=None, moving_mask=None,
             seed: int = 0, fixed_geometry=None, moving_geometry=None,
             **options: Any) -> RegistrationOutput:
    """Factory of the ``cmif`` method: :func:`rigid_search` with the spec's options for images
    ``(1, C, H, W)``, :func:`rigid_search_3d` for volumes ``(1, C, D, H, W)`` (a 4x4
    transform; the geometry, when given, makes the rotations physical).

    Options of the other search (:data:`IMAGE_ONLY`, :data:`VOLUME_ONLY`) are ignored.
    ``info`` records the CMIF value, the rotation (2-D: the angle in degrees about the moving
    image's centre; 3-D: the angles about x, y, z), the shift (px or voxels), the rotations
    evaluated, the reduction factors, the levels ``[K_A, K_B]`` and the candidates; for volumes
    also the cost: the forward and inverse real 3-D FFTs, the FFT grids and the seconds of each
    stage (``stages``).
    """
    if fixed.ndim == 5:
        kept = {k: v for k, v in options.items() if k not in IMAGE_ONLY}
        kept.pop("entropy_pass", None)
        result = rigid_search_3d(fixed, moving, fixed_mask, moving_mask,
                                 fixed_geometry=fixed_geometry,
                                 moving_geometry=moving_geometry, seed=seed, **kept)
    else:
        kept = {k: v for k, v in options.items() if k not in VOLUME_ONLY}
        result = rigid_search(fixed, moving, fixed_mask, moving_mask, seed=seed, **kept)
    return RegistrationOutput(result.transform, result.info)
