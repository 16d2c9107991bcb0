"""CMIF on volumes (``mibench.estimators.cmif``, *Volumes*): every 3-D shift by 3-D FFT, against
brute-force joint histograms per shift (numpy ``bincount``) and scikit-learn's MI."""

import numpy as np
import pytest
import torch
from sklearn.metrics import mutual_info_score

from mibench.estimators import cmif as C


def brute_counts_3d(la, lb, ka, kb, shift):
    """Joint counts of fixed labels ``la (D, H, W)`` and moving labels ``lb (d, h, w)`` with
    moving voxel (0, 0, 0) on fixed voxel ``shift = (dz, dy, dx)`` (array order); -1 =
    outside the mask."""
    lo = [max(0, -s) for s in shift]
    hi = [min(m, f - s) for m, f, s in zip(lb.shape, la.shape, shift, strict=True)]
    if any(h <= lo_ for lo_, h in zip(lo, hi, strict=True)):
        return np.zeros((ka, kb), dtype=np.int64)
    b = lb[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    a = la[lo[0] + shift[0]:hi[0] + shift[0], lo[1] + shift[1]:hi[1] + shift[1],
           lo[2] + shift[2]:hi[2] + shift[2]]
    ok = (a >= 0) & (b >= 0)
    return np.bincount(a[ok] * kb + b[ok], minlength=ka * kb).reshape(ka, kb)


def brute_mi(counts):
    n = counts.sum()
    if n == 0:
        return 0.0
    p = counts / n

    def h(q):
        q = q[q > 0]
        return float(-(q * np.log(q)).sum())

    return h(p.sum(1)) + h(p.sum(0)) - h(p.ravel())


def run_volume(la, lb, ka, kb, shifts="full", min_overlap=0.0, dtype=torch.float64):
    LA, LB = torch.as_tensor(la), torch.as_tensor(lb)
    least = C.least_overlap(LA[None], LB[None], min_overlap)
    grid = C.shift_grid(la.shape, lb.shape, shifts, least)
    side = C.VolumeSpectra(LA, ka, grid, lb.shape, dtype)
    out, ffts = C.cmif_volume_from_labels(side, LB[None], kb, min_overlap=min_overlap)
    return out, grid, side, ffts


@pytest.mark.parametrize("fixed_hole,moving_hole", [(0.0, 0.0), (0.2, 0.0), (0.0, 0.3),
                                                    (0.2, 0.3)])
def test_every_3d_shift_equals_brute_force(fixed_hole, moving_hole):
    """Overlap and MI at every shift of the full range, with and without masks (which decide
    the levels dropped: both paths of the last row and column)."""
    rng = np.random.default_rng(3)
    ka, kb = 3, 4
    la = rng.integers(0, ka, (6, 7, 5))
    lb = rng.integers(0, kb, (4, 3, 5))
    if fixed_hole:
        la[rng.random(la.shape) < fixed_hole] = -1
    if moving_hole:
        lb[rng.random(lb.shape) < moving_hole] = -1
    out, grid, _, _ = run_volume(la, lb, ka, kb)
    assert out.value.shape == (1, *grid.size)
    assert grid.size == tuple(f + m - 1 for f, m in zip(la.shape, lb.shape, strict=True))
    origin = np.array(grid.origin)
    for idx in np.ndindex(*grid.size):
        counts = brute_counts_3d(la, lb, ka, kb, tuple(origin + idx))
        assert float(out.overlap[(0, *idx)]) == counts.sum()
        assert abs(float(out.value[(0, *idx)]) - brute_mi(counts)) < 1e-9


def test_float32_volume_map_matches_brute_force_and_sklearn():
    """float32 FFTs (the default for small overlaps): counts exact, MI within 1e-6, and the MI
    at a few shifts equals scikit-learn's on the overlapping voxels."""
    rng = np.random.default_rng(5)
    la = rng.integers(0, 5, (9, 8, 10))
    lb = rng.integers(0, 5, (5, 6, 4))
    out, grid, _, _ = run_volume(la, lb, 5, 5, dtype=torch.float32)
    origin = np.array(grid.origin)
    for idx in [(0, 0, 0), (4, 5, 3), tuple(n - 1 for n in grid.size), (7, 2, 9)]:
        shift = tuple(origin + idx)
        counts = brute_counts_3d(la, lb, 5, 5, shift)
        assert float(out.overlap[(0, *idx)]) == counts.sum()
        assert abs(float(out.value[(0, *idx)]) - brute_mi(counts)) < 1e-6
    # Shift (dz, dy, dx) = (2, 1, 3): the moving volume lies inside the fixed one.
    shift = (2, 1, 3)
    a = la[2:7, 1:7, 3:7].ravel()
    expected = mutual_info_score(a, lb.ravel())
    idx = tuple(np.array(shift) - origin)
    assert abs(float(out.value[(0, *idx)]) - expected) < 1e-6


def test_fft_count_is_stated():
    """Without masks one level per side is dropped: K_B - 1 forward and (K_A - 1)(K_B - 1)
    inverse FFTs per moving volume; a masked moving volume K_B and (K_A - 1) K_B."""
    rng = np.random.default_rng(0)
    la = rng.integers(0, 4, (5, 6, 7))
    lb = rng.integers(0, 3, (4, 4, 4))
    _, _, side, ffts = run_volume(la, lb, 4, 3)
    assert side.forward_ffts == 3 and ffts == (2, 6)
    lb[0, 0, 0] = -1
    _, _, _, ffts = run_volume(la, lb, 4, 3)
    assert ffts == (3, 9)


def test_known_translation_is_the_best_shift():
    """A moving volume cut out of the fixed one at a known offset: the map's best shift is that
    offset, exactly, through the public ``cmif_map`` (quantisation, grid, minimum overlap)."""
    gen = torch.Generator().manual_seed(7)
    noise = torch.rand(1, 1, 20, 22, 18, generator=gen)
    smooth = torch.nn.functional.avg_pool3d(noise, 3, stride=1, padding=1,
                                            count_include_pad=False)
    fixed = smooth
    offset = (3, 5, 2)  # (dz, dy, dx)
    moving = fixed[:, :, 3:3 + 12, 5:5 + 13, 2:2 + 11].clone()
    # A different contrast (non-monotonic), so the match is by MI rather than by intensity.
    moving = (moving - moving.mean()).abs()
    out = C.cmif_map(fixed, moving, levels=6, quantisation="quantile", min_overlap=0.5)
    val, dz, dy, dx = out.best()
    assert (int(dz[0]), int(dy[0]), int(dx[0])) == offset
    assert out.value.shape[1:] == tuple(out.valid.shape[1:])
    # The estimator at shift 0 equals the map of shifts="zero" and brute force.
    est = C.cmif(fixed[..., :12, :13, :11], moving, levels=6, quantisation="quantile")
    la = C.quantise_volumes(fixed[..., :12, :13, :11], 6, None, method="quantile", seed=0)[0]
    lb = C.quantise_volumes(moving, 6, None, method="quantile", seed=0)[0]
    expected = brute_mi(brute_counts_3d(la.numpy(), lb.numpy(), 6, 6, (0, 0, 0)))
    assert abs(float(est[0]) - expected) < 1e-6
    # With a mask, in both volumes: the voxels outside it take no part.
    mask = torch.rand(1, 1, 12, 13, 11, generator=gen) < 0.7
    est = C.cmif(fixed[..., :12, :13, :11], moving, mask, levels=6, quantisation="quantile")
    la = C.quantise_volumes(fixed[..., :12, :13, :11], 6, mask, method="quantile", seed=0)[0]
    lb = C.quantise_volumes(moving, 6, mask, method="quantile", seed=0)[0]
    assert bool((la[~mask[0, 0]] == -1).all())
    expected = brute_mi(brute_counts_3d(la.numpy(), lb.numpy(), 6, 6, (0, 0, 0)))
    assert abs(float(est[0]) - expected) < 1e-6


def test_volume_masks_and_mismatched_inputs():
    vol = torch.rand(1, 1, 6, 6, 6, generator=torch.Generator().manual_seed(1))
    mask = torch.ones(1, 1, 6, 6, 6, dtype=torch.bool)
    mask[..., :2] = False
    out = C.cmif_map(vol, vol, mask, mask, levels=3, quantisation="equal", min_overlap=0.9)
    # 90 % of the mask (4 x 6 x 6 voxels) overlaps only at shift 0: a shift by one voxel keeps
    # 3/4 (along x) or 5/6 (along y or z) of it.
    assert int(out.valid.sum()) == 1
    assert float(out.overlap.max()) == 4 * 6 * 6
    _, dz, dy, dx = out.best()
    assert (int(dz[0]), int(dy[0]), int(dx[0])) == (0, 0, 0)
    with pytest.raises(ValueError, match="must both be images or both volumes"):
        C.cmif_map(vol, vol[:, :, 0], levels=3)
