"""Quantisation of images into K intensity levels (label images), for :mod:`.cmif`.

A label image is an integer tensor ``(B, H, W)`` (of a volume: ``(B, D, H, W)``) with values in
``0 .. K-1`` inside the mask and ``-1`` outside it, so that the mask travels with the labels.
Three quantisers:

``equal``
    ``K`` equal-width cells between the image's minimum and maximum over its mask (numpy's
    histogram binning: the top edge is closed, so the maximum falls into cell ``K-1``, and every
    cell has the same width; no near-empty top cell as ``floor(x (K-1))`` would give). Channels
    are averaged to grey first.
``quantile``
    Thresholds at the ``k/K`` quantiles (``k = 1 .. K-1``) of the grey values over the mask, so the
    levels are about equally populated (ties can leave a level empty).
``kmeans``
    k-means (Lloyd's iterations from a seeded k-means++ start) on the pixel vectors (all channels)
    over the mask, fitted on a random sample of at most ``sample`` pixels and then applied to every
    pixel (nearest centroid); the labels are ordered by the centroid's mean over channels. This is
    the quantiser of the CMIF authors (who use scikit-learn's MiniBatchKMeans); written here in
    torch so that it runs on the images' device.

Every quantiser works per batch item and is deterministic for a given ``seed``.
"""

from __future__ import annotations

import torch

from mibench.errors import check_choice
from mibench.estimators.options import QUANTISERS

#: Lloyd's iterations stop when no centroid moves by more than this share of the data's spread.
_KMEANS_TOL = 1e-5


def quantise(image: torch.Tensor, levels: int, mask: torch.Tensor | None = None, *,
             method: str = "kmeans", seed: int = 0, sample: int = 65536,
             iterations: int = 50) -> torch.Tensor:
    """Quantise every image of a batch into ``levels`` labels.

    Parameters
    ----------
    image : Tensor ``(B, C, H, W)`` or ``(B, C, D, H, W)``
        Float images or volumes (any range).
    levels : int
        Number of levels ``K >= 1``.
    mask : Tensor ``(B, 1, *S)`` or ``(B, *S)`` bool, optional
        True for the pixels (voxels) to quantise, ``S`` the spatial shape of ``image``; None
        for all.
    method : {"kmeans", "equal", "quantile"}
        See the module docstring.
    seed : int
        Seed of the k-means sample and start (unused by the others).
    sample : int
        Most pixels k-means is fitted on (per image).
    iterations : int
        Most Lloyd's iterations.

    Returns
    -------
    Tensor ``(B, H, W)`` (volumes ``(B, D, H, W)``) int64
        Labels ``0 .. levels-1`` inside the mask, ``-1`` outside. An image with an empty mask is
        all ``-1``; a constant image is all ``0``.
    """
    check_choice("quantisation", method, QUANTISERS)
    if levels < 1:
        raise ValueError(f"levels must be >= 1, got {levels}")
    if image.ndim not in (4, 5):
        raise ValueError("expected a (B, C, H, W) image or a (B, C, D, H, W) volume, got shape "
                         f"{tuple(image.shape)}")
    b, c = image.shape[:2]
    spatial = tuple(image.shape[2:])
    x = image.detach()
    x = x.double() if x.dtype == torch.float64 else x.float()
    if mask is None:
        sel = torch.ones((b, *spatial), dtype=torch.bool, device=x.device)
    else:
        sel = mask.reshape(b, *spatial).to(device=x.device, dtype=torch.bool)
    labels = torch.full((b, *spatial), -1, dtype=torch.long, device=x.device)
    for k in range(b):
        if not bool(sel[k].any()):
            continue
        if method == "kmeans":
            feats = x[k].reshape(c, -1).T  # (N, C)
            lab = _kmeans_labels(feats, sel[k].reshape(-1), levels, seed, sample, iterations)
        else:
            grey = x[k].mean(dim=0).reshape(-1)
            vals = grey[sel[k].reshape(-1)]
            if method == "equal":
                lab = _equal_labels(grey, vals, levels)
            else:
                lab = _quantile_labels(grey, vals, levels)
        labels[k] = torch.where(sel[k], lab.reshape(spatial), labels[k])
    return labels


def _equal_labels(grey: torch.Tensor, vals: torch.Tensor, levels: int) -> torch.Tensor:
    lo, hi = vals.min(), vals.max()
    width = hi - lo
    if not bool(width > 0):
        return torch.zeros_like(grey, dtype=torch.long)
    cell = torch.floor((grey.clamp(lo, hi) - lo) / width * levels)
    return cell.clamp(0, levels - 1).long()


def _quantile_labels(grey: torch.Tensor, vals: torch.Tensor, levels: int) -> torch.Tensor:
    if levels == 1 or not bool(vals.max() > vals.min()):
        # One level, or a constant image: all 0 (searchsorted would give K-1).
        return torch.zeros_like(grey, dtype=torch.long)
    q = torch.arange(1, levels, dtype=vals.dtype, device=vals.device) / levels
    # torch.quantile refuses very large inputs; the sort-based form has no such limit.
    ordered = torch.sort(vals).values
    pos = q * (len(ordered) - 1)
    below = pos.floor().long()
    above = pos.ceil().long()
    frac = pos - below
    thresholds = ordered[below] * (1 - frac) + ordered[above] * frac
    return torch.searchsorted(thresholds.contiguous(), grey.contiguous(), right=True)


def _kmeans_labels(feats: torch.Tensor, sel: torch.Tensor, levels: int, seed: int,
                   sample: int, iterations: int) -> torch.Tensor:
    """Nearest-centroid labels ``(N,)`` of every row of ``feats`` after fitting on ``sel``."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    pool = torch.nonzero(sel).squeeze(1)
    if len(pool) > sample:
        pick = torch.randperm(len(pool), generator=gen)[:sample].to(pool.device)
        pool = pool[pick]
    data = feats[pool]
    centroids = _kmeans_plus_plus(data, levels, gen)
    spread = float((data.amax(0) - data.amin(0)).max())
    tol = _KMEANS_TOL * max(spread, 1e-30)
    for _ in range(iterations):
        assign = torch.cdist(data, centroids).argmin(dim=1)
        sums = torch.zeros_like(centroids).index_add_(0, assign, data)
        counts = torch.bincount(assign, minlength=levels).to(data.dtype)[:, None]
        # An empty cluster keeps its centroid (it stays a valid, if unused, level).
        new = torch.where(counts > 0, sums / counts.clamp_min(1), centroids)
        moved = float((new - centroids).abs().max())
        centroids = new
        if moved <= tol:
            break
    order = torch.argsort(centroids.mean(dim=1), stable=True)
    centroids = centroids[order]
    return _nearest(feats, centroids)


def _nearest(feats: torch.Tensor, centroids: torch.Tensor, chunk: int = 1 << 18) -> torch.Tensor:
    out = torch.empty(len(feats), dtype=torch.long, device=feats.device)
    for start in range(0, len(feats), chunk):
        part = feats[start:start + chunk]
        out[start:start + chunk] = torch.cdist(part, centroids).argmin(dim=1)
    return out


def _kmeans_plus_plus(data: torch.Tensor, levels: int, gen: torch.Generator) -> torch.Tensor:
    """k-means++ seeding (Arthur and Vassilvitskii 2007), drawn with ``gen`` on the CPU."""
    n = len(data)
    first = int(torch.randint(n, (1,), generator=gen))
    centroids = [data[first]]
    dist = ((data - data[first]) ** 2).sum(dim=1)
    for _ in range(1, levels):
        total = float(dist.sum())
        if total > 0:
            probs = (dist / total).double().cpu()
            idx = int(torch.multinomial(probs, 1, generator=gen))
        else:
            # Fewer distinct values than levels: the remaining centroids repeat a data point.
            idx = int(torch.randint(n, (1,), generator=gen))
        centroids.append(data[idx])
        dist = torch.minimum(dist, ((data - data[idx]) ** 2).sum(dim=1))
    return torch.stack(centroids)
