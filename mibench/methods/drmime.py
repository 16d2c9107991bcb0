"""DRMIME (Nan et al., MIDL 2020): MINE + matrix exponential, simultaneous multi-resolution.

A re-implementation from the description in ``shared/research/drmime.md`` (no code copied):

- **Transform**: ``H = exp(sum_i v_i B_i)`` on normalised coordinates (:mod:`.transform_models`,
  the truncated 10-term Taylor series of the paper), pulling the moving image back onto the
  fixed grid. Two parameter vectors, both zero at the start: ``vL`` (every level) and ``v1``,
  a full-resolution offset: the finest level uses ``vL + v1``, the others ``vL``. For images
  of different sizes ``H`` is composed onto the normalised matrix of the pixel identity, as in
  :mod:`.gradient`.
- **Pyramids**: the images are blurred (``blur``, sigma 1 px) and decomposed into Gaussian
  pyramids (:mod:`.pyramid`; 6 levels at FIRE's working size, fewer so that the coarsest
  keeps ``>= min_size`` px). Each level of each image is min-max normalised to [0, 1] (all
  channels jointly, whole array).
- **Samples**: a fixed set of pixels per level, drawn once: a uniform random ``sample_fraction``
  (10 %) of the fixed mask's pixels (the released notebooks' index bug, which takes the top
  rows, is *not* reproduced), or with ``sampling="edges"`` the dilated Canny edges of the fixed
  level (section 7.2 of the brief). A sample is the fixed pixel's channel vector and the warped
  moving pixel's (input ``2C``); marginal samples shuffle the moving half with a fresh
  permutation at each iteration and level.
- **Loss**: ``-(1/L) sum_s DV_s``, the Donsker-Varadhan bound of *one* statistics network
  (``2C -> 100 -> 100 -> 1``, ReLU) shared by all levels; network and transform maximise it
  jointly with one Adam (``amsgrad=True``, three parameter groups, no schedule).

Volumes (issue 21; the paper is 2-D). What carries over unchanged: the critic sees intensity
pairs only (a voxel's fixed and warped moving values, ``2C`` inputs), so it neither knows nor
cares that the samples come from a volume; the DV bound, the shared critic, the joint Adam, the
two parameter vectors ``vL`` and ``v1``, the presets and the fixed per-level sample sets. What
changes, by choice:

- The transform is the 3-D affine (12 parameters) or rigid (6) exponential, acting in the fixed
  volume's centred, isotropically scaled physical frame (:mod:`.transform_models`; one
  translation unit is half the largest physical extent, 90 mm for a 2 mm head), and it starts
  from the world identity when both geometries are known (:mod:`.initial`).
- Samples: the same uniform ``sample_fraction`` of each level's masked voxels, but at most
  :data:`VOLUME_MAX_SAMPLES` (20,000) per level, drawn once: a 2 mm head at 10 % would put
  110,000 voxels per step through the critic, which costs about 0.5 s per step on one core.
- Levels: the same ``levels``/``min_size`` rule on the shortest side; a 91 x 109 x 91 head gets
  2 levels (91 and 46 voxels across) with the defaults, which suffice on the ``brain`` pairs
  (median TRE 0.4-0.5 mm from 18 mm, about 90 s per pair on one loaded core).
- Edge sampling (Canny) is 2-D only: volumes take ``sampling="random"``.

Deformable DRMIME (issue 22; not in the paper): ``transform="bspline"`` (2-D) runs the affine
registration above unchanged, then optimises a cubic B-spline FFD on it (elastix's order) level
by level, coarsest first, on each level's fixed sample set, with loss ``-DV`` under the *same*
critic, which keeps training (one Adam, coefficients on a cosine decay), plus the bending energy
(choices and reasons: :mod:`.drmime_bspline`). Measured under load (``benchmarks/deformable.py
--threads 1``, 8 synthetic elastic 256 px pairs): median of pair medians 8.5 px affine, 4.5 px
deformable, no folding, about 5 s more per pair; fundus 0.35-0.84 px (affine 1.7-3.6), 2.9 px
where the affine stalled at 8.6; histology, whose affine fails, stays failed (6-21 px).

Departures from the released code, all deliberate:

- Out-of-field pixels. The paper warps with zero padding and keeps pixels that fall outside the
  moving image (value 0) in the samples. Those zeros form a separate cluster in the joint
  distribution that the critic recognises at once, so the bound partly measures the overlap's
  shape rather than the image content. Here a sample counts only when its fixed pixel is in the
  fixed mask *and* its warped position lies inside the moving image and mask (bilinear support
  fully valid); the invalid samples are removed from both DV terms (masked means; in the
  marginal term a pair counts when both of its pixels are valid). The bound is then the MI of
  the overlap. Caveat: shrinking the overlap to a region of strong dependence can raise it;
  ``info["overlap"]`` reports the share kept.
- ``grid_sample`` uses ``align_corners=True``, matching the normalised grid (the released code
  mixes the two conventions, a bias of up to half a pixel).
- ``stable_lme=True`` by default: ``log mean exp`` is computed as ``logsumexp - log n``, which
  has the same value and gradient as the paper's plain formula but cannot overflow (the plain
  one turns into ``inf`` once the critic outputs exceed ~88 on a marginal sample).
  ``stable_lme=False`` gives the literal formula.
- Seeds: every random draw (network initialisation, sample sets, permutations) comes from one
  local generator, so a run is deterministic on CPU (not bit for bit on CUDA, whose
  ``grid_sample`` backward accumulates atomically).
- Presets set learning rates, iterations and the Canny threshold, not the sampling: the ANHIR
  notebooks sampled edges, so ``preset="anhir", sampling="edges"`` reproduces them.

Measured (2 CPU cores, ``preset="fire"``, seed 0, ``synthetic`` 256 px pairs, medium
difficulty): about 10-12 s per pair (4 levels, ~7,000 samples per step). Fundus pairs 0-5:
median landmark errors 10.3, 59.1, 0.29, 0.26, 0.36, 0.28 px (initially 14.3, 24.2, 13.7, 17.2,
22.5, 11.8): pair 0 converges too slowly at the transform learning rate 1e-3 (0.43 px with
seed 1, 0.19 px with 1500 iterations), and pair 1 has a spurious optimum (a histogram MI of the
overlap also ranks it above the truth). Histology pairs fail (6-18 px; their stain channels
share only ~0.1 nat at the truth).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from mibench.errors import check_choice
from mibench.estimators.mine import (
    MovingAverage,
    StatisticsNetwork,
    dv_bounds,
    make_generator,
)
from mibench.methods import pyramid as pyr
from mibench.methods.drmime_bspline import register_drmime_bspline
from mibench.methods.initial import initial_matrix
from mibench.methods.inputs import prepare_images
from mibench.methods.objective import VALID_THRESHOLD
from mibench.methods.options import BSPLINE_DEFAULTS, DRMIME_EXPS, DRMIME_PRESETS, DRMIME_SAMPLINGS
from mibench.methods.transform_models import (
    matrix_exp_transform,
    normalised_to_pixel,
    pixel_to_normalised,
    sample_points,
    taylor_exp_transform,
    transform_model,
    warp_normalised,
)
from mibench.tensors import FiniteWatch
from mibench.transform import MatrixTransform, RegistrationOutput

#: Learning rates, iterations and Canny threshold by preset (:data:`.options.DRMIME_PRESETS`).
PRESETS = DRMIME_PRESETS
#: The two matrix exponentials: DRMIME's truncated series, or the exact one.
EXPS = dict(zip(DRMIME_EXPS, (taylor_exp_transform, matrix_exp_transform), strict=True))
#: Edge sampling: Gaussian blur of the grey level before Canny (sigma of OpenCV's 21x21 kernel),
#: and the side of the square dilation.
EDGE_BLUR_SIGMA = 3.5
EDGE_DILATION = 5
#: Largest number of samples per level (the paper keeps the first 1,000,000 edge pixels).
MAX_SAMPLES = 1_000_000
#: Fewest samples per level (a 10 % sample of a tiny level would be too small for a DV term).
MIN_SAMPLES = 64
#: Largest number of samples per level of a volume when ``max_samples`` is None: 10 % of a 2 mm
#: head would be 110,000 voxels per step through the critic, fifteen times FIRE's working size;
#: 20,000 registers the ``brain`` pairs as well as 30,000 did (0.49 and 0.40 mm against 0.59
#: and 0.45 on two pairs) in two thirds of the time.
VOLUME_MAX_SAMPLES = 20_000


@dataclass
class _Level:
    """One pyramid level, ready for the loop: the fixed samples and the moving image."""

    fixed_values: torch.Tensor  # (N, C) fixed channel vectors of the samples
    points: torch.Tensor  # (N, n + 1) homogeneous normalised coordinates of the samples
    moving: torch.Tensor  # (1, C + 1, [d,] h, w) moving level with its validity as last channel


def resolve_options(preset: str, **overrides: Any) -> dict[str, Any]:
    """The preset's settings with every non-None override applied."""
    check_choice("preset", preset, PRESETS)
    out = dict(PRESETS[preset])
    out.update({k: v for k, v in overrides.items() if v is not None})
    return out


def _minmax(x: torch.Tensor) -> torch.Tensor:
    """Min-max normalisation to [0, 1] over the whole array, all channels jointly (the paper's
    ``cv2.NORM_MINMAX``); a constant array becomes 0. A range below 1e-6 counts as constant:
    the blur leaves rounding noise on a constant image, which must not be stretched to [0, 1]."""
    lo, hi = x.amin(), x.amax()
    span = hi - lo
    return torch.where(span > 1e-6, (x - lo) / span.clamp_min(1e-6), torch.zeros_like(x))


def _pyramids(fixed, moving, fixed_mask, moving_mask, levels, min_size, blur):
    """Pyramids of both (pre-blurred) images, the fixed masks and the moving validity images.

    The levels keep the input's intensity scale (edge thresholds refer to it); the moving
    levels are already min-max normalised.
    """
    count = min(pyr.num_levels(tuple(fixed.shape[2:]), levels, min_size),
                pyr.num_levels(tuple(moving.shape[2:]), levels, min_size))
    fixed_levels = pyr.gaussian_pyramid(pyr.gaussian_blur(fixed, blur), levels, n=count)
    moving_levels = [_minmax(x) for x in
                     pyr.gaussian_pyramid(pyr.gaussian_blur(moving, blur), levels, n=count)]
    fixed_masks = pyr.mask_pyramid(fixed_mask, count)
    if moving_mask is None:
        valid = [torch.ones_like(m[:, :1]) for m in moving_levels]
    else:
        valid = [m.float() for m in pyr.mask_pyramid(moving_mask, count)]
    return fixed_levels, fixed_masks, moving_levels, valid


def _edge_map(level: torch.Tensor, mask: torch.Tensor | None, low: float, high: float
              ) -> torch.Tensor:
    """Dilated Canny edges ``(h * w,)`` bool of a ``(1, C, h, w)`` level with values in [0, 1].

    As the released code: grey level (channel mean) on the 0-255 scale, Gaussian blur (sigma
    3.5, the sigma of OpenCV's 21x21 kernel; done by ``skimage.feature.canny`` itself),
    hysteresis thresholds ``low``/``high`` on the Sobel gradient magnitude (0-255 units), one
    dilation by a 5x5 square. Unlike the released code, Canny runs inside the fixed mask only
    (``canny(mask=...)``), so the mask's own border is not taken for an edge; and the blur is
    skimage's float Gaussian, not a uint8 one.
    """
    from scipy import ndimage
    from skimage.feature import canny

    grey = level[0].mean(dim=0).detach().to("cpu", torch.float64).numpy() * 255.0
    inside = None if mask is None else mask[0, 0].detach().to("cpu").numpy().astype(bool)
    edges = canny(grey, sigma=EDGE_BLUR_SIGMA, low_threshold=low, high_threshold=high,
                  mask=inside)
    edges = ndimage.binary_dilation(edges, structure=np.ones((EDGE_DILATION,) * 2, bool))
    return torch.from_numpy(edges.reshape(-1)).to(level.device)


def _sample_indices(level: torch.Tensor, mask: torch.Tensor | None, *, sampling: str,
                    fraction: float, canny_low: float, canny_high: float,
                    gen: torch.Generator, max_samples: int = MAX_SAMPLES) -> torch.Tensor:
    """The fixed sample set of one level: flat voxel indices, sorted (raster order).

    ``"random"``: a uniform random ``fraction`` of the mask's pixels. ``"edges"``: every pixel
    of the dilated edge map inside the mask (a level with fewer than :data:`MIN_SAMPLES` such
    pixels falls back on random sampling; 2-D only). At least :data:`MIN_SAMPLES` (if the mask
    has them) and at most ``max_samples`` samples, a random subset beyond that (the released
    code keeps the first million in raster order).
    """
    device = level.device
    allowed = (torch.ones(level[0, 0].numel(), dtype=torch.bool, device=device) if mask is None
               else mask.reshape(-1).to(device))
    candidates = torch.nonzero(allowed).reshape(-1)
    if sampling == "edges":
        edges = _edge_map(level, mask, canny_low, canny_high)
        on_edges = torch.nonzero(edges & allowed).reshape(-1)
        if on_edges.numel() >= MIN_SAMPLES:
            candidates = on_edges
            fraction = 1.0
    total = candidates.numel()
    count = min(total, max_samples, max(round(fraction * total), MIN_SAMPLES))
    pick = torch.randperm(total, generator=gen, device=gen.device)[:count].to(device)
    return torch.sort(candidates[pick]).values


def _points(indices: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Homogeneous normalised coordinates ``(N, n + 1)`` (align_corners=True) of flat indices of
    an ``(h, w)`` or ``(d, h, w)`` level."""
    coords, rest = [], indices
    for size in shape[::-1]:  # x, y[, z]: the last axis runs fastest
        coords.append(2.0 * (rest % size).float() / max(size - 1, 1) - 1.0)
        rest = torch.div(rest, size, rounding_mode="floor")
    return torch.stack([*coords, torch.ones_like(coords[0])], dim=1)


def _prepare_levels(fixed, moving, fixed_mask, moving_mask, *, levels, min_size, blur,
                    sampling, fraction, canny_low, canny_high, gen,
                    max_samples: int = MAX_SAMPLES) -> list[_Level]:
    fixed_levels, fixed_masks, moving_levels, valid = _pyramids(
        fixed, moving, fixed_mask, moving_mask, levels, min_size, blur)
    out = []
    for f, fm, m, v in zip(fixed_levels, fixed_masks, moving_levels, valid, strict=True):
        idx = _sample_indices(f, fm, sampling=sampling, fraction=fraction,
                              canny_low=canny_low, canny_high=canny_high, gen=gen,
                              max_samples=max_samples)
        out.append(_Level(fixed_values=_minmax(f)[0].flatten(1).T[idx],
                          points=_points(idx, tuple(f.shape[2:])),
                          moving=torch.cat([m, v], dim=1)))
    return out


def _level_bounds(net, levels: list[_Level], matrices: list[torch.Tensor], gen, *,
                  stable: bool, averages: list[MovingAverage] | None) -> torch.Tensor:
    """The DV bound of every level ``(L,)``; one critic pass over all levels' samples."""
    sets = []
    for level, h in zip(levels, matrices, strict=True):
        warped = sample_points(level.moving, h, level.points)
        sets.append((level.fixed_values, warped[:, :-1], warped[:, -1] >= VALID_THRESHOLD))
    return dv_bounds(net, sets, gen, stable=stable, emas=averages)


def register_drmime(
    fixed: torch.Tensor,
    moving: torch.Tensor,
    *,
    fixed_mask: torch.Tensor | None = None,
    moving_mask: torch.Tensor | None = None,
    seed: int = 0,
    preset: str = "fire",
    transform: str = "affine",
    iterations: int | None = None,
    lr_net: float | None = None,
    lr_transform: float | None = None,
    lr_offset: float | None = None,
    levels: int = 6,
    min_size: int = 32,
    blur: float = 1.0,
    sampling: str = "random",
    sample_fraction: float = 0.1,
    canny_low: float = 0.0,
    canny_high: float | None = None,
    hidden: int = 100,
    ema: float = 0.0,
    stable_lme: bool = True,
    exp: str = "taylor",
    init: str = "identity",
    max_samples: int | None = None,
    fixed_geometry: Any = None,
    moving_geometry: Any = None,
    keep: dict[str, Any] | None = None,
) -> RegistrationOutput:
    """Register ``moving`` to ``fixed`` with DRMIME.

    Parameters
    ----------
    fixed, moving : Tensor ``(1, C, H, W)`` or ``(1, C, D, H, W)``
        Float images or volumes in [0, 1] on the run's device; sizes may differ. Both RGB
        (``C = 3``, the critic sees 6 inputs) or both grey; if the channel counts differ both
        become grey.
    fixed_mask, moving_mask : bool Tensor ``(1, 1, H, W)`` / ``(1, 1, D, H, W)``, optional
        Valid pixels: samples are drawn inside the fixed mask, and a sample is used only while
        its warped position is inside the moving image and mask (see the module notes).
    seed : int
        Seeds the local generator of every random draw (deterministic on CPU).
    preset : {"fire", "anhir"}
        Defaults of ``iterations``, ``lr_net``, ``lr_transform``, ``lr_offset`` and
        ``canny_high``: FIRE 500 / 1e-2 / 1e-3 / 1e-5 / 10, ANHIR 500 / 1e-3 / 5e-3 / 1e-4 / 30
        (the released affine notebooks).
    transform : {"affine", "perspective", "rigid"}
        The matrix-exponential model (:mod:`.transform_models`): 2-D 6, 8 or 3 parameters,
        3-D affine 12 or rigid 6.
    iterations : int, optional
        Adam steps (each one over all levels).
    lr_net, lr_transform, lr_offset : float, optional
        Adam learning rates of the network, of ``vL`` and of the full-resolution offset ``v1``
        (normalised units: 1 translation unit = half the image).
    levels, min_size : int
        Pyramid depth, reduced so the coarsest level keeps ``>= min_size`` px (a 256 px image
        gets 4 levels: 256, 128, 64, 32).
    blur : float
        Gaussian pre-blur of both images (px of the full resolution), before the pyramid.
    sampling : {"random", "edges"}
        Uniform random ``sample_fraction`` of each level's (masked) pixels, or all pixels of
        the dilated Canny edges of the fixed level (thresholds ``canny_low``, ``canny_high`` on
        the 0-255 scale; images only). Each level keeps at least :data:`MIN_SAMPLES` samples.
    hidden : int
        Width of the statistics network (100).
    ema : float
        Decay of MINE's moving-average bias correction (e.g. 0.99); 0 = none (the paper).
    stable_lme : bool
        Stable log-mean-exp (same function as the paper's, no overflow).
    exp : {"taylor", "matrix_exp"}
        The matrix exponential: the paper's truncated series (identity plus 9 terms) or
        ``torch.linalg.matrix_exp`` (exact; they differ once ``||C||`` is no longer small).
    init : {"identity", "cmif"}
        Starting transform: the pixel identity (the paper; the world identity for volumes with
        both geometries), or CMIF's global rigid search (:mod:`mibench.methods.initial`), onto
        which the exponential is composed.
    max_samples : int, optional
        Most samples per level: None gives :data:`MAX_SAMPLES` for images and
        :data:`VOLUME_MAX_SAMPLES` for volumes.
    fixed_geometry, moving_geometry : mibench.geometry.Geometry, optional
        The start (world identity) and the physical frame of ``rigid`` and of every 3-D
        model; 2-D affine and perspective ignore them.
    keep : dict, optional
        Receives the trained state (``net``, ``levels``, ``generator``, ``averages``,
        ``lr_net``), from which the deformable stage (:mod:`.drmime_bspline`) goes on.

    Returns
    -------
    RegistrationOutput
        ``MatrixTransform`` (fixed px -> moving px, ``H(vL + v1)`` converted with
        :func:`normalised_to_pixel`) and ``info``: ``final_loss`` (the loss of the returned
        transform under the trained critic), ``mi_levels`` (its per-level DV bounds, finest
        first, nats; measured on the sample sets the critic was trained on, so optimistic),
        ``overlap`` (share of the fixed mask mapped inside the valid moving image, full
        resolution), ``samples`` (per level), ``iterations``, ``levels``, ``transform``,
        ``preset``, ``lr_net``, ``lr_transform``, ``lr_offset``, ``sampling``, ``seed``.

    Raises
    ------
    RuntimeError
        If the loss or the result becomes NaN or infinite.
    """
    opts = resolve_options(preset, iterations=iterations, lr_net=lr_net,
                           lr_transform=lr_transform, lr_offset=lr_offset,
                           canny_high=canny_high)
    check_choice("sampling", sampling, DRMIME_SAMPLINGS)
    if not 0.0 < sample_fraction <= 1.0:
        raise ValueError(f"sample_fraction must be in (0, 1], got {sample_fraction!r}")
    if opts["iterations"] < 0:
        raise ValueError(f"iterations must be >= 0, got {opts['iterations']!r}")
    device = fixed.device
    fixed, moving = prepare_images(fixed, moving)
    ndim = fixed.dim() - 2
    fixed_shape, moving_shape = tuple(fixed.shape[2:]), tuple(moving.shape[2:])
    model = transform_model(transform, fixed_shape, fixed_geometry)
    n = model.n_params
    if ndim == 3 and sampling == "edges":
        raise ValueError("sampling='edges' (Canny) is 2-D only; volumes take 'random'")
    if max_samples is None:
        max_samples = MAX_SAMPLES if ndim == 2 else VOLUME_MAX_SAMPLES
    if fixed_mask is not None:
        fixed_mask = fixed_mask.to(device)
    if moving_mask is not None:
        moving_mask = moving_mask.to(device)
    gen = make_generator(device, seed)

    with torch.no_grad():
        data = _prepare_levels(fixed, moving, fixed_mask, moving_mask, levels=levels,
                               min_size=min_size, blur=blur, sampling=sampling,
                               fraction=sample_fraction, canny_low=canny_low,
                               canny_high=opts["canny_high"], gen=gen,
                               max_samples=max_samples)
    net = StatisticsNetwork(2 * fixed.shape[1], hidden, generator=gen, device=device)
    v_levels = torch.zeros(n, device=device, requires_grad=True)
    v_offset = torch.zeros(n, device=device, requires_grad=True)
    opt = torch.optim.Adam([
        {"params": net.parameters(), "lr": opts["lr_net"]},
        {"params": [v_levels], "lr": opts["lr_transform"]},
        {"params": [v_offset], "lr": opts["lr_offset"]},
    ], amsgrad=True)
    averages = [MovingAverage(ema) for _ in data] if ema > 0 else None
    # Start at the pixel identity (== the normalised identity for same-size images; the world
    # identity of volumes with geometry) or at the global search's result.
    geometries = (None, None) if model.frame is None else (fixed_geometry, moving_geometry)
    start = initial_matrix(init, fixed, moving, fixed_mask, moving_mask, seed=seed,
                           fixed_geometry=geometries[0], moving_geometry=geometries[1])
    h0_64 = torch.as_tensor(pixel_to_normalised(start, fixed_shape, moving_shape),
                            dtype=torch.float64, device=device)
    h0 = h0_64.float()

    check_choice("exp", exp, EXPS)
    expm = EXPS[exp]

    def matrices() -> list[torch.Tensor]:
        coarse = model.compose(h0, v_levels, expm)
        fine = model.compose(h0, v_levels + v_offset, expm)
        return [fine] + [coarse] * (len(data) - 1)

    watch = FiniteWatch(device)
    for step in range(opts["iterations"]):
        opt.zero_grad(set_to_none=True)
        loss = -_level_bounds(net, data, matrices(), gen, stable=stable_lme,
                              averages=averages).mean()
        watch.update(loss, step)
        loss.backward()
        opt.step()
    watch.check(opts["iterations"] - 1)

    with torch.no_grad():
        # The bounds of the returned transform under the trained critic (one more marginal
        # shuffle; the moving averages are left alone).
        bounds = _level_bounds(net, data, matrices(), gen, stable=stable_lme, averages=None)
        if not torch.isfinite(bounds).all():
            raise RuntimeError(f"loss became {-bounds.mean().item()} at the end")
        h = model.compose(h0_64, (v_levels + v_offset).double(), expm)
        overlap = _overlap(fixed_mask, moving.shape, moving_mask, h.float(), fixed_shape)
    matrix = normalised_to_pixel(h, fixed_shape, moving_shape)
    if not np.isfinite(matrix).all():
        raise RuntimeError("the recovered transform is not finite")
    info: dict[str, Any] = {
        "final_loss": float(-bounds.mean()), "mi_levels": [float(b) for b in bounds],
        "overlap": overlap, "samples": [int(d.points.shape[0]) for d in data],
        "iterations": int(opts["iterations"]), "levels": len(data), "transform": transform,
        "preset": preset, "lr_net": float(opts["lr_net"]),
        "lr_transform": float(opts["lr_transform"]), "lr_offset": float(opts["lr_offset"]),
        "sampling": sampling, "exp": exp, "init": init, "seed": int(seed),
    }
    if keep is not None:
        keep.update(net=net, levels=data, generator=gen, averages=averages, lr_net=opts["lr_net"])
    return RegistrationOutput(MatrixTransform(matrix), info=info)


def _overlap(fixed_mask, moving_shape, moving_mask, h, fixed_shape) -> float:
    """Share of the fixed mask's voxels that ``h`` maps inside the valid moving image."""
    device = h.device
    valid = (torch.ones((1, 1) + tuple(moving_shape[2:]), device=device)
             if moving_mask is None else moving_mask.float())
    inside = warp_normalised(valid, h, fixed_shape) >= VALID_THRESHOLD
    if fixed_mask is not None:
        inside = inside & fixed_mask.bool()
        return float(inside.sum()) / max(float(fixed_mask.sum()), 1.0)
    return float(inside.float().mean())


def drmime(fixed, moving, *, fixed_mask=None, moving_mask=None, seed=0, **options):
    """The ``drmime`` method (affine by default); options as :func:`register_drmime`, or with
    ``transform="bspline"`` :func:`.drmime_bspline.register_drmime_bspline`'s (the matrix
    transforms ignore the B-spline options, as :mod:`.gradient` does)."""
    if options.get("transform") == "bspline":
        return register_drmime_bspline(register_drmime, fixed, moving, fixed_mask=fixed_mask,
                                       moving_mask=moving_mask, seed=seed, **options)
    options = {k: v for k, v in options.items() if k not in BSPLINE_DEFAULTS}
    return register_drmime(fixed, moving, fixed_mask=fixed_mask, moving_mask=moving_mask,
                           seed=seed, **options)


def drmime_perspective(fixed, moving, *, fixed_mask=None, moving_mask=None, seed=0, **options):
    """The ``drmime-perspective`` method: :func:`register_drmime` with 8 parameters."""
    if options.pop("transform", "perspective") != "perspective":
        raise ValueError("drmime-perspective always uses transform='perspective'")
    return register_drmime(fixed, moving, fixed_mask=fixed_mask, moving_mask=moving_mask,
                           seed=seed, transform="perspective", **options)
