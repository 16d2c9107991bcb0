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
import torch.nn.functional as F

from mibench.errors import check_choice
from mibench.estimators.mine import (
    MovingAverage,
    StatisticsNetwork,
    dv_bound,
    make_generator,
    marginal_pairs,
)
from mibench.methods import pyramid as pyr
from mibench.methods.initial import initial_matrix
from mibench.methods.inputs import prepare_images
from mibench.methods.objective import VALID_THRESHOLD
from mibench.methods.options import DRMIME_EXPS, DRMIME_PRESETS, DRMIME_SAMPLINGS
from mibench.methods.transform_models import (
    matrix_exp_transform,
    n_params,
    normalised_to_pixel,
    pixel_to_normalised,
    taylor_exp_transform,
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


@dataclass
class _Level:
    """One pyramid level, ready for the loop: the fixed samples and the moving image."""

    fixed_values: torch.Tensor  # (N, C) fixed channel vectors of the samples
    points: torch.Tensor  # (N, 3) homogeneous normalised coordinates of the samples
    moving: torch.Tensor  # (1, C + 1, h, w) moving level with its validity as last channel


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
    count = min(pyr.num_levels(tuple(fixed.shape[-2:]), levels, min_size),
                pyr.num_levels(tuple(moving.shape[-2:]), levels, min_size))
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
                    gen: torch.Generator) -> torch.Tensor:
    """The fixed sample set of one level: flat pixel indices, sorted (raster order).

    ``"random"``: a uniform random ``fraction`` of the mask's pixels. ``"edges"``: every pixel
    of the dilated edge map inside the mask (a level with fewer than :data:`MIN_SAMPLES` such
    pixels falls back on random sampling). At least :data:`MIN_SAMPLES` (if the mask has
    them) and at most :data:`MAX_SAMPLES` samples, a random subset beyond that (the released
    code keeps the first million in raster order).
    """
    h, w = level.shape[-2:]
    device = level.device
    allowed = (torch.ones(h * w, dtype=torch.bool, device=device) if mask is None
               else mask.reshape(-1).to(device))
    candidates = torch.nonzero(allowed).reshape(-1)
    if sampling == "edges":
        edges = _edge_map(level, mask, canny_low, canny_high)
        on_edges = torch.nonzero(edges & allowed).reshape(-1)
        if on_edges.numel() >= MIN_SAMPLES:
            candidates = on_edges
            fraction = 1.0
    total = candidates.numel()
    count = min(total, MAX_SAMPLES, max(round(fraction * total), MIN_SAMPLES))
    pick = torch.randperm(total, generator=gen, device=gen.device)[:count].to(device)
    return torch.sort(candidates[pick]).values


def _points(indices: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Homogeneous normalised coordinates ``(N, 3)`` (align_corners=True) of flat indices."""
    h, w = shape
    rows = torch.div(indices, w, rounding_mode="floor").float()
    cols = (indices % w).float()
    u = 2.0 * cols / max(w - 1, 1) - 1.0
    v = 2.0 * rows / max(h - 1, 1) - 1.0
    return torch.stack([u, v, torch.ones_like(u)], dim=1)


def _warp_points(moving: torch.Tensor, h: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Bilinear samples ``(N, C')`` of ``moving`` ``(1, C', hm, wm)`` at ``H @ points``.

    Points mapped behind the camera (perspective, ``w' <= 0``) read the zero padding.
    """
    mapped = points @ h.T
    z = mapped[:, 2:]
    behind = z <= 1e-8
    xy = mapped[:, :2] / torch.where(behind, torch.ones_like(z), z)
    xy = torch.where(behind, torch.full_like(xy, -2.0), xy)
    out = F.grid_sample(moving, xy.view(1, 1, -1, 2), mode="bilinear", padding_mode="zeros",
                        align_corners=True)
    return out[0, :, 0].T


def _prepare_levels(fixed, moving, fixed_mask, moving_mask, *, levels, min_size, blur,
                    sampling, fraction, canny_low, canny_high, gen) -> list[_Level]:
    fixed_levels, fixed_masks, moving_levels, valid = _pyramids(
        fixed, moving, fixed_mask, moving_mask, levels, min_size, blur)
    out = []
    for f, fm, m, v in zip(fixed_levels, fixed_masks, moving_levels, valid, strict=True):
        idx = _sample_indices(f, fm, sampling=sampling, fraction=fraction,
                              canny_low=canny_low, canny_high=canny_high, gen=gen)
        out.append(_Level(fixed_values=_minmax(f)[0].flatten(1).T[idx],
                          points=_points(idx, tuple(f.shape[-2:])),
                          moving=torch.cat([m, v], dim=1)))
    return out


def _level_bounds(net, levels: list[_Level], matrices: list[torch.Tensor], gen, *,
                  stable: bool, averages: list[MovingAverage] | None) -> torch.Tensor:
    """The DV bound of every level ``(L,)``; one critic pass over all levels' samples."""
    inputs, valids, perms = [], [], []
    for level, h in zip(levels, matrices, strict=True):
        warped = _warp_points(level.moving, h, level.points)
        y, valid = warped[:, :-1], warped[:, -1] >= VALID_THRESHOLD
        marginal, perm = marginal_pairs(level.fixed_values, y, gen)
        inputs += [torch.cat([level.fixed_values, y], dim=1), marginal]
        valids.append(valid)
        perms.append(perm)
    outputs = net(torch.cat(inputs)).split([x.shape[0] for x in inputs])
    bounds = []
    for s, (valid, perm) in enumerate(zip(valids, perms, strict=True)):
        bounds.append(dv_bound(outputs[2 * s], outputs[2 * s + 1], stable=stable,
                               ema=None if averages is None else averages[s],
                               joint_mask=valid, marginal_mask=valid & valid[perm]))
    return torch.stack(bounds)


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
) -> RegistrationOutput:
    """Register ``moving`` to ``fixed`` with DRMIME.

    Parameters
    ----------
    fixed, moving : Tensor ``(1, C, H, W)``
        Float images in [0, 1] on the run's device; sizes may differ. Both RGB (``C = 3``, the
        critic sees 6 inputs) or both grey; if the channel counts differ both become grey.
    fixed_mask, moving_mask : bool Tensor ``(1, 1, H, W)``, optional
        Valid pixels: samples are drawn inside the fixed mask, and a sample is used only while
        its warped position is inside the moving image and mask (see the module notes).
    seed : int
        Seeds the local generator of every random draw (deterministic on CPU).
    preset : {"fire", "anhir"}
        Defaults of ``iterations``, ``lr_net``, ``lr_transform``, ``lr_offset`` and
        ``canny_high``: FIRE 500 / 1e-2 / 1e-3 / 1e-5 / 10, ANHIR 500 / 1e-3 / 5e-3 / 1e-4 / 30
        (the released affine notebooks).
    transform : {"affine", "perspective"}
        6 or 8 parameters of the matrix-exponential model.
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
        the 0-255 scale). Each level keeps at least :data:`MIN_SAMPLES` samples.
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
        Starting transform: the pixel identity (the paper), or CMIF's global rigid search
        (:mod:`mibench.methods.initial`), onto which the exponential is composed.

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
    n = n_params(transform)
    device = fixed.device
    fixed, moving = prepare_images(fixed, moving)
    fixed_shape, moving_shape = tuple(fixed.shape[-2:]), tuple(moving.shape[-2:])
    if fixed_mask is not None:
        fixed_mask = fixed_mask.to(device)
    if moving_mask is not None:
        moving_mask = moving_mask.to(device)
    gen = make_generator(device, seed)

    with torch.no_grad():
        data = _prepare_levels(fixed, moving, fixed_mask, moving_mask, levels=levels,
                               min_size=min_size, blur=blur, sampling=sampling,
                               fraction=sample_fraction, canny_low=canny_low,
                               canny_high=opts["canny_high"], gen=gen)
    net = StatisticsNetwork(2 * fixed.shape[1], hidden, generator=gen, device=device)
    v_levels = torch.zeros(n, device=device, requires_grad=True)
    v_offset = torch.zeros(n, device=device, requires_grad=True)
    opt = torch.optim.Adam([
        {"params": net.parameters(), "lr": opts["lr_net"]},
        {"params": [v_levels], "lr": opts["lr_transform"]},
        {"params": [v_offset], "lr": opts["lr_offset"]},
    ], amsgrad=True)
    averages = [MovingAverage(ema) for _ in data] if ema > 0 else None
    # Start at the pixel identity (== the normalised identity for same-size images) or at the
    # global search's result.
    start = initial_matrix(init, fixed, moving, fixed_mask, moving_mask, seed=seed)
    h0_64 = torch.as_tensor(pixel_to_normalised(start, fixed_shape, moving_shape),
                            dtype=torch.float64, device=device)
    h0 = h0_64.float()

    check_choice("exp", exp, EXPS)
    expm = EXPS[exp]

    def matrices() -> list[torch.Tensor]:
        coarse = h0 @ expm(v_levels, transform)
        fine = h0 @ expm(v_levels + v_offset, transform)
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
        h = h0_64 @ expm((v_levels + v_offset).double(), transform)
        overlap = _overlap(fixed_mask, moving.shape, moving_mask, h.float(), fixed_shape)
    matrix = normalised_to_pixel(h, fixed_shape, moving_shape)
    if not np.isfinite(matrix).all():
        raise RuntimeError("the recovered transform is not finite")
    info: dict[str, Any] = {
        "final_loss": float(-bounds.mean()),
        "mi_levels": [float(b) for b in bounds],
        "overlap": overlap,
        "samples": [int(d.points.shape[0]) for d in data],
        "iterations": int(opts["iterations"]),
        "levels": len(data),
        "transform": transform,
        "preset": preset,
        "lr_net": float(opts["lr_net"]),
        "lr_transform": float(opts["lr_transform"]),
        "lr_offset": float(opts["lr_offset"]),
        "sampling": sampling,
        "exp": exp,
        "init": init,
        "seed": int(seed),
    }
    return RegistrationOutput(MatrixTransform(matrix), info=info)


def _overlap(fixed_mask, moving_shape, moving_mask, h, fixed_shape) -> float:
    """Share of the fixed mask's pixels that ``h`` maps inside the valid moving image."""
    device = h.device
    valid = (torch.ones((1, 1) + tuple(moving_shape[-2:]), device=device)
             if moving_mask is None else moving_mask.float())
    inside = warp_normalised(valid, h, fixed_shape) >= VALID_THRESHOLD
    if fixed_mask is not None:
        inside = inside & fixed_mask.bool()
        return float(inside.sum()) / max(float(fixed_mask.sum()), 1.0)
    return float(inside.float().mean())


def drmime(fixed, moving, *, fixed_mask=None, moving_mask=None, seed=0, **options):
    """The ``drmime`` method (affine by default); options as :func:`register_drmime`."""
    return register_drmime(fixed, moving, fixed_mask=fixed_mask, moving_mask=moving_mask,
                           seed=seed, **options)


def drmime_perspective(fixed, moving, *, fixed_mask=None, moving_mask=None, seed=0, **options):
    """The ``drmime-perspective`` method: :func:`register_drmime` with 8 parameters."""
    if options.pop("transform", "perspective") != "perspective":
        raise ValueError("drmime-perspective always uses transform='perspective'")
    return register_drmime(fixed, moving, fixed_mask=fixed_mask, moving_mask=moving_mask,
                           seed=seed, transform="perspective", **options)
