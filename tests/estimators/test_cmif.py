"""CMIF estimator (``mibench.estimators.cmif``) and the quantisers, against brute-force per-shift
joint histograms, scikit-learn and numpy."""

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import mutual_info_score

import mibench
from mibench.estimators import cmif as C
from mibench.estimators import histogram
from mibench.estimators.quantise import quantise

# --------------------------------------------------------------------------------------------
# Brute-force reference: one joint histogram per shift, straight from the definition


def brute_counts(la, lb, ka, kb, dy, dx):
    """Joint counts of fixed labels ``la`` and moving labels ``lb`` with the moving image's
    top-left pixel on fixed pixel (dx, dy); -1 = outside the mask."""
    hf, wf = la.shape
    hm, wm = lb.shape
    r0, r1 = max(0, -dy), min(hm, hf - dy)
    c0, c1 = max(0, -dx), min(wm, wf - dx)
    if r1 <= r0 or c1 <= c0:
        return np.zeros((ka, kb), dtype=np.int64)
    b = lb[r0:r1, c0:c1]
    a = la[r0 + dy:r1 + dy, c0 + dx:c1 + dx]
    ok = (a >= 0) & (b >= 0)
    return np.bincount(a[ok] * kb + b[ok], minlength=ka * kb).reshape(ka, kb)


def entropies(counts):
    n = counts.sum()
    if n == 0:
        return 0.0, 0.0, 0.0
    p = counts / n

    def h(q):
        q = q[q > 0]
        return float(-(q * np.log(q)).sum())

    return h(p.sum(1)), h(p.sum(0)), h(p.ravel())


def brute_mi(counts):
    ha, hb, hab = entropies(counts)
    return ha + hb - hab


def random_labels(rng, shape, levels, hole=0.0):
    lab = rng.integers(0, levels, shape)
    if hole:
        lab[rng.random(shape) < hole] = -1
    return lab


def assert_equal_brute_force(out, grid, la, lb, ka, kb):
    """Overlap and MI of the maps ``out (B, R, Sy, Sx)`` equal brute force at every shift, for
    fixed labels ``la (B, H, W)`` and moving labels ``lb (B, R, h, w)``."""
    (y0, x0), (sy, sx) = grid.origin, grid.size
    for b, r in np.ndindex(lb.shape[:2]):
        for y, x in np.ndindex(sy, sx):
            counts = brute_counts(la[b], lb[b, r], ka, kb, y0 + y, x0 + x)
            assert out.overlap[b, r, y, x] == counts.sum()
            expected = brute_mi(counts) if counts.sum() > 0 else 0.0
            assert abs(float(out.value[b, r, y, x]) - expected) < 1e-6


def run_labels(la, lb, ka, kb, shifts="full", min_overlap=0.0, precision="float32",
               normalisation="none"):
    LA, LB = torch.as_tensor(la)[None], torch.as_tensor(lb)[None]
    least = C.least_overlap(LA, LB, min_overlap)
    grid = C.shift_grid(la.shape, lb.shape, shifts, least)
    dtype = torch.float64 if precision == "float64" else torch.float32
    side = C.FixedSpectra(LA, ka, grid, lb.shape, dtype)
    out = C.cmif_from_labels(side, LB[:, None], kb, min_overlap=min_overlap,
                             normalisation=normalisation)
    return grid, out


# Random sizes, odd and even, masks on neither / one / both sides, every shift mode.
CASES = [
    # (seed, fixed shape, moving shape, K_A, K_B, fixed hole, moving hole, shifts, min_overlap)
    (0, (17, 24), (9, 12), 4, 3, 0.0, 0.0, "full", 0.0),
    (1, (16, 15), (11, 8), 5, 5, 0.3, 0.0, "full", 0.3),
    (2, (13, 13), (13, 13), 3, 6, 0.0, 0.25, "full", 0.5),
    (3, (20, 9), (7, 14), 6, 2, 0.2, 0.2, "full", 0.0),
    (4, (18, 21), (10, 9), 4, 4, 0.0, 0.0, "centre", 0.0),
    (5, (15, 16), (6, 7), 3, 3, 0.1, 0.4, "centre", 0.2),
    (6, (12, 11), (12, 11), 5, 4, 0.0, 0.0, "zero", 0.0),
    (7, (9, 10), (14, 13), 2, 3, 0.3, 0.0, "full", 0.1),  # moving larger than fixed
    (8, (14, 14), (5, 5), 1, 4, 0.0, 0.0, "full", 0.0),  # one fixed level
    (9, (11, 12), (6, 9), 4, 1, 0.2, 0.0, "full", 0.0),  # one moving level
]


@pytest.mark.parametrize("case", CASES, ids=[f"case{c[0]}" for c in CASES])
def test_counts_and_mi_equal_brute_force_at_every_shift(case):
    seed, fs, ms, ka, kb, fh, mh, shifts, mo = case
    rng = np.random.default_rng(seed)
    la = random_labels(rng, fs, ka, fh)
    lb = random_labels(rng, ms, kb, mh)
    grid, out = run_labels(la, lb, ka, kb, shifts, mo)
    largest = min((la >= 0).sum(), (lb >= 0).sum())
    y0, x0 = grid.origin
    value, overlap, valid = (out.value[0, 0].numpy(), out.overlap[0, 0].numpy(),
                             out.valid[0, 0].numpy())
    assert value.shape == grid.size
    worst = 0.0
    for r in range(grid.size[0]):
        for c in range(grid.size[1]):
            counts = brute_counts(la, lb, ka, kb, y0 + r, x0 + c)
            n = counts.sum()
            assert overlap[r, c] == n
            assert valid[r, c] == (n >= max(1, mo * largest))
            expected = brute_mi(counts) if valid[r, c] else 0.0
            worst = max(worst, abs(float(value[r, c]) - expected))
    assert worst < 1e-6


def test_full_map_contains_every_shift_with_enough_overlap():
    rng = np.random.default_rng(11)
    la, lb = random_labels(rng, (21, 18), 3), random_labels(rng, (13, 16), 3)
    mo = 0.4
    grid, _ = run_labels(la, lb, 3, 3, "full", mo)
    y0, x0 = grid.origin
    least = mo * min(la.size, lb.size)
    for dy in range(-lb.shape[0], la.shape[0] + 1):
        for dx in range(-lb.shape[1], la.shape[1] + 1):
            n = brute_counts(la, lb, 3, 3, dy, dx).sum()
            inside = 0 <= dy - y0 < grid.size[0] and 0 <= dx - x0 < grid.size[1]
            if n >= least:
                assert inside, (dy, dx)


def test_float64_option_and_the_automatic_precision():
    rng = np.random.default_rng(3)
    la, lb = random_labels(rng, (19, 22), 4, 0.2), random_labels(rng, (10, 7), 5)
    _, o32 = run_labels(la, lb, 4, 5)
    _, o64 = run_labels(la, lb, 4, 5, precision="float64")
    assert o64.value.dtype == torch.float64 and o32.value.dtype == torch.float32
    assert torch.equal(o32.overlap.double(), o64.overlap)
    assert torch.allclose(o32.value.double(), o64.value, atol=1e-6)
    assert C._dtypes("auto", C.FLOAT32_MAX_COUNT, torch.float32) == torch.float32
    assert C._dtypes("auto", C.FLOAT32_MAX_COUNT + 1, torch.float32) == torch.float64
    assert C._dtypes("float32", 1e9, torch.float32) == torch.float32
    assert C._dtypes("float32", 10, torch.float64) == torch.float64  # float64 input stays


@pytest.mark.parametrize("normalisation", ["studholme", "arithmetic", "joint", "geometric"])
def test_normalised_variants_follow_the_estimator_family(normalisation):
    rng = np.random.default_rng(5)
    la, lb = random_labels(rng, (14, 13), 4, 0.1), random_labels(rng, (8, 9), 3)
    grid, out = run_labels(la, lb, 4, 3, normalisation=normalisation, precision="float64")
    y0, x0 = grid.origin
    for r, c in [(0, 0), (3, 5), (grid.size[0] - 1, grid.size[1] - 2), (7, 2)]:
        ha, hb, hab = (torch.tensor([v], dtype=torch.float64)
                       for v in entropies(brute_counts(la, lb, 4, 3, y0 + r, x0 + c)))
        expected = histogram.normalised_mi(ha, hb, hab, normalisation)
        assert float(out.value[0, 0, r, c]) == pytest.approx(float(expected), abs=1e-9)


@pytest.mark.parametrize("split", [True, False], ids=["two-stage", "irfft2"])
def test_fft_economy_counts(monkeypatch, split):
    """Rectangular masks: K_A - 1 forward FFTs once, K_B - 1 forward and (K_A - 1)(K_B - 1)
    inverse per template; a masked moving image: (K_A - 1) K_B inverse. Counted as 2-D
    transforms: rfft2 / irfft2 calls, or the first stage of the two-stage forward (rfft) and
    inverse (ifft)."""
    calls = {"forward": 0, "inverse": 0}
    real = {name: getattr(torch.fft, name) for name in ("rfft2", "irfft2", "rfft", "ifft")}

    def counting(name, kind):
        def wrapped(x, *args, **kwargs):
            calls[kind] += math.prod(x.shape[:-2])
            return real[name](x, *args, **kwargs)
        return wrapped

    monkeypatch.setattr(torch.fft, "rfft2", counting("rfft2", "forward"))
    monkeypatch.setattr(torch.fft, "irfft2", counting("irfft2", "inverse"))
    monkeypatch.setattr(torch.fft, "rfft", counting("rfft", "forward"))
    monkeypatch.setattr(torch.fft, "ifft", counting("ifft", "inverse"))
    rng = np.random.default_rng(0)
    ka, kb, angles = 6, 5, 3
    la = torch.as_tensor(random_labels(rng, (20, 20), ka))[None]
    lb = torch.as_tensor(random_labels(rng, (3, 11, 9), kb))[None]  # 3 "angles"
    grid = C.shift_grid((20, 20), (11, 9), "full")
    side = C.FixedSpectra(la, ka, grid, (11, 9), torch.float32, split=split)
    assert calls == {"forward": ka - 1, "inverse": 0}
    out = C.cmif_from_labels(side, lb, kb)
    assert calls == {"forward": ka - 1 + angles * (kb - 1),
                     "inverse": angles * (ka - 1) * (kb - 1)}
    lb[0, :, 0, 0] = -1  # a masked moving image keeps all of its levels
    calls.update(forward=0, inverse=0)
    masked = C.cmif_from_labels(side, lb, kb)
    assert calls == {"forward": angles * kb, "inverse": angles * (ka - 1) * kb}
    # Both inverse forms give the same maps.
    other = C.FixedSpectra(la, ka, grid, (11, 9), torch.float32, split=not split)
    assert torch.equal(C.cmif_from_labels(other, lb, kb).overlap, masked.overlap)
    assert torch.allclose(C.cmif_from_labels(other, lb, kb).value, masked.value, atol=1e-6)
    assert out.value.shape == (1, angles) + grid.size


def test_batch_and_angles_equal_one_at_a_time():
    rng = np.random.default_rng(8)
    la = torch.as_tensor(random_labels(rng, (2, 16, 17), 4, 0.1))
    lb = torch.as_tensor(random_labels(rng, (2, 3, 9, 8), 3, 0.1))
    grid = C.shift_grid((16, 17), (9, 8), "full")
    side = C.FixedSpectra(la, 4, grid, (9, 8), torch.float32)
    both = C.cmif_from_labels(side, lb, 3, min_overlap=0.3)
    for b in range(2):
        one = C.FixedSpectra(la[b:b + 1], 4, grid, (9, 8), torch.float32)
        for r in range(3):
            single = C.cmif_from_labels(one, lb[b:b + 1, r:r + 1], 3, min_overlap=0.3)
            assert torch.equal(single.overlap[0, 0], both.overlap[b, r])
            assert torch.equal(single.valid[0, 0], both.valid[b, r])
            assert torch.allclose(single.value[0, 0], both.value[b, r], atol=1e-7)


@pytest.mark.parametrize("split", [True, False], ids=["two-stage", "irfft2"])
@pytest.mark.parametrize("window", [(3, 9, 2, 8), (-6, -1, 4, 10), (-30, 30, -30, 30)])
def test_shift_windows_and_batches_equal_brute_force(window, split):
    """Local shift windows (a positive origin wraps the fixed levels round the FFT grid), with
    and without masks, two fixed images with two moving images each: brute-force counts and MI
    at every shift of the map."""
    rng = np.random.default_rng(11)
    for hole_a, hole_b in ((0.0, 0.0), (0.2, 0.0), (0.0, 0.3)):
        la = random_labels(rng, (2, 16, 14), 4, hole_a)
        lb = random_labels(rng, (2, 2, 9, 11), 3, hole_b)
        grid = C.shift_grid((16, 14), (9, 11), "full", 1.0, window)
        side = C.FixedSpectra(torch.as_tensor(la), 4, grid, (9, 11), torch.float32, split=split)
        out = C.cmif_from_labels(side, torch.as_tensor(lb), 3, min_overlap=0.0)
        assert_equal_brute_force(out, grid, la, lb, 4, 3)


@pytest.mark.parametrize("planes", [1, 2], ids=["one-level-per-call", "two-levels-per-call"])
def test_cpu_template_chunks_and_level_groups_equal_brute_force(monkeypatch, planes):
    """A CPU FFT budget of one or two spectrum planes: one template per chunk and one or two
    moving levels per inverse call (with a shorter last group), with and without masks."""
    rng = np.random.default_rng(12)
    grid = C.shift_grid((13, 12), (8, 9), "full")
    p, q = grid.fft_shape
    monkeypatch.setattr(C, "CPU_FFT_BYTES", planes * p * (q // 2 + 1) * 8)
    assert C.fft_batches(grid, torch.float32, 3, 5, torch.device("cpu")) == (1, planes)
    for hole_a, hole_b in ((0.0, 0.0), (0.2, 0.0), (0.0, 0.3)):
        la = random_labels(rng, (2, 13, 12), 4, hole_a)
        lb = random_labels(rng, (2, 3, 8, 9), 5, hole_b)
        side = C.FixedSpectra(torch.as_tensor(la), 4, grid, (8, 9), torch.float32)
        out = C.cmif_from_labels(side, torch.as_tensor(lb), 5, min_overlap=0.0)
        assert_equal_brute_force(out, grid, la, lb, 4, 5)


def test_box_counts_equal_brute_force():
    """Level counts in clipped boxes (windows starting before, inside and after the image,
    longer than it, empty): numpy per box."""
    rng = np.random.default_rng(12)
    lab = random_labels(rng, (2, 7, 9), 3, 0.2)
    for rows, cols in (((-3, 4, 12), (2, 5, 10)), ((-12, 20, 5), (-1, 1, 12)),
                       ((5, 3, 4), (-15, 30, 3)), ((-9, 2, 3), (9, 4, 2))):
        got = C._box_counts(torch.as_tensor(lab), 3, rows, cols)
        assert got.shape == (2, 3, rows[2], cols[2])
        for y, x in np.ndindex(rows[2], cols[2]):
            r0, r1 = np.clip([rows[0] + y, rows[0] + y + rows[1]], 0, 7)
            c0, c1 = np.clip([cols[0] + x, cols[0] + x + cols[1]], 0, 9)
            box = lab[:, r0:r1, c0:c1]
            expected = np.stack([(box == k).sum((1, 2)) for k in range(3)], 1)
            assert np.array_equal(got[:, :, y, x].numpy(), expected)


def test_shift_convention_recovers_a_crop():
    """The moving image is the fixed image's crop at rows 5.., columns 9..: the best shift is
    (dy, dx) = (5, 9) with MI = H(moving labels)."""
    rng = np.random.default_rng(2)
    fixed = torch.rand(1, 1, 40, 48, generator=torch.Generator().manual_seed(0))
    moving = fixed[..., 5:5 + 17, 9:9 + 22]
    out = C.cmif_map(fixed, moving, levels=5, quantisation="equal", min_overlap=0.3)
    val, dy, dx = out.best()
    assert (int(dy), int(dx)) == (5, 9)
    lab = quantise(moving, 5, method="equal")[0].numpy()
    fixed_lab = quantise(fixed, 5, method="equal")[0].numpy()
    crop = fixed_lab[5:22, 9:31]
    assert float(val) == pytest.approx(mutual_info_score(crop.ravel(), lab.ravel()), abs=1e-6)
    del rng


def test_centre_mode_is_an_image_sized_map():
    fixed = torch.rand(2, 1, 30, 25)
    moving = fixed[:1, :, 4:4 + 10, 6:6 + 9]  # centre pixel (5, 4) of the crop = fixed (10, 9)
    out = C.cmif_map(fixed, moving, levels=4, quantisation="equal", shifts="centre",
                     min_overlap=0.0)
    assert out.value.shape == (2, 30, 25)
    assert out.origin == (-5, -4)
    _, dy, dx = out.best()
    assert (int(dy[0]), int(dx[0])) == (4, 6)


def test_estimator_is_registered_and_equals_sklearn_at_zero_shift():
    rng = np.random.default_rng(4)
    a = rng.random((33, 28)).astype(np.float32)
    b = (np.sin(6 * a) ** 2 + 0.1 * rng.random((33, 28))).astype(np.float32)
    est = mibench.estimator("cmif", levels=6, quantisation="equal")
    value = est(a, b)
    la = quantise(torch.from_numpy(a)[None, None], 6, method="equal")[0].numpy()
    lb = quantise(torch.from_numpy(b)[None, None], 6, method="equal")[0].numpy()
    assert value == pytest.approx(mutual_info_score(la.ravel(), lb.ravel()), abs=1e-6)
    mask = np.zeros((33, 28), bool)
    mask[3:30, 2:20] = True
    masked = est(a, b, mask)
    la_m = quantise(torch.from_numpy(a)[None, None], 6, torch.from_numpy(mask),
                    method="equal")[0].numpy()
    lb_m = quantise(torch.from_numpy(b)[None, None], 6, torch.from_numpy(mask),
                    method="equal")[0].numpy()
    assert masked == pytest.approx(mutual_info_score(la_m[mask], lb_m[mask]), abs=1e-6)


def test_degenerate_inputs_give_no_nan():
    const = torch.full((1, 1, 12, 12), 0.3)
    noise = torch.rand(1, 1, 12, 12)
    for q in ("equal", "quantile", "kmeans"):
        out = C.cmif_map(const, noise, levels=4, quantisation=q)
        assert torch.isfinite(out.value).all()
        assert float(out.value.max()) < 1e-6  # a constant image carries no information
    empty = torch.zeros(1, 1, 12, 12, dtype=torch.bool)
    out = C.cmif_map(noise, noise, empty, None, levels=4)
    assert not out.valid.any() and torch.isfinite(out.value).all()
    assert float(out.best()[0]) == -math.inf
    for norm in ("studholme", "geometric"):
        assert torch.isfinite(C.cmif_map(const, const, levels=3, normalisation=norm).value).all()


def test_bad_options_raise():
    x = torch.rand(1, 1, 8, 8)
    with pytest.raises(ValueError):
        C.cmif_map(x, x, levels=0)
    with pytest.raises(ValueError):
        C.cmif_map(x, x, quantisation="otsu")
    with pytest.raises(ValueError):
        C.cmif_map(x, x, shifts="valid")
    with pytest.raises(ValueError):
        C.cmif_map(x, x, min_overlap=1.5)
    with pytest.raises(ValueError):
        C.cmif_map(x, x, normalisation="max")


def test_fast_size():
    for n in (1, 7, 11, 97, 320, 1021):
        m = C.fast_size(n)
        assert m >= n
        k = m
        for p in (2, 3, 5, 7):
            while k % p == 0:
                k //= p
        assert k == 1
        assert all(C.fast_size(j) == m for j in range(n, m + 1))


# --------------------------------------------------------------------------------------------
# Quantisers


def test_equal_quantiser_is_numpy_histogram_binning():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 1, 20, 30))
    labels = quantise(torch.from_numpy(x), 7, method="equal")
    for b in range(2):
        edges = np.histogram_bin_edges(x[b, 0], bins=7)
        expected = np.clip(np.searchsorted(edges, x[b, 0], side="right") - 1, 0, 6)
        assert np.array_equal(labels[b].numpy(), expected)
        # no near-empty top level: every level holds a fair share of a uniform image
    u = torch.linspace(0, 1, 8000).reshape(1, 1, 80, 100)
    counts = torch.bincount(quantise(u, 8, method="equal").ravel())
    assert counts.min() >= 999


def test_quantile_quantiser_balances_levels_and_respects_the_mask():
    rng = np.random.default_rng(1)
    x = torch.from_numpy(rng.exponential(size=(1, 1, 40, 50)))
    mask = torch.from_numpy(rng.random((1, 1, 40, 50)) < 0.7)
    labels = quantise(x, 5, mask, method="quantile")[0]
    assert (labels[~mask[0, 0]] == -1).all()
    counts = torch.bincount(labels[mask[0, 0]])
    assert len(counts) == 5
    assert counts.min() >= counts.sum() / 5 - 2 and counts.max() <= counts.sum() / 5 + 2


def test_kmeans_quantiser_finds_separated_colour_clusters():
    gen = torch.Generator().manual_seed(0)
    truth = torch.randint(0, 3, (30, 40), generator=gen)
    colours = torch.tensor([[0.9, 0.1, 0.1], [0.1, 0.8, 0.2], [0.2, 0.2, 0.9]])
    image = colours[truth].permute(2, 0, 1)[None] + 0.02 * torch.randn(1, 3, 30, 40,
                                                                     generator=gen)
    labels = quantise(image, 3, method="kmeans", seed=1)[0]
    # The same partition up to the label order (ordered by centroid mean).
    assert mutual_info_score(truth.ravel(), labels.ravel()) == pytest.approx(
        mutual_info_score(truth.ravel(), truth.ravel()))
    again = quantise(image, 3, method="kmeans", seed=1)[0]
    assert torch.equal(labels, again)


def test_quantile_of_a_constant_image_is_all_zero():
    # The documented result (quantise's Returns): a constant image is all 0, as for the others.
    img = torch.full((1, 1, 8, 9), 0.3)
    mask = torch.ones(1, 1, 8, 9, dtype=torch.bool)
    mask[..., :2, :] = False
    img2 = img.clone()
    img2[~mask] = 0.9  # constant inside the mask only
    for method in ("equal", "quantile", "kmeans"):
        assert torch.equal(quantise(img, 4, method=method), torch.zeros(1, 8, 9, dtype=torch.long))
        lab = quantise(img2, 4, mask, method=method)
        assert (lab[mask[:, 0]] == 0).all() and (lab[~mask[:, 0]] == -1).all()


def test_quantisers_with_few_values_and_ties():
    vals = torch.tensor([0.0, 0.2, 0.2, 0.5, 1.0]).repeat(40)
    img = vals[torch.randperm(200, generator=torch.Generator().manual_seed(0))]
    img = img.reshape(1, 1, 10, 20)
    for method in ("equal", "quantile", "kmeans"):
        for k in (2, 3, 4, 8):
            lab = quantise(img, k, method=method).flatten()
            # Equal values share a label; labels are in range and grow with the value.
            for v in vals.unique():
                assert lab[img.flatten() == v].unique().numel() == 1
            assert 0 <= int(lab.min()) and int(lab.max()) < k
            order = torch.argsort(img.flatten())
            assert (lab[order].diff() >= 0).all()
