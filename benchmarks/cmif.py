"""Speed of CMIF (``mibench.estimators.cmif``) against brute force and a straightforward FFT CMIF.

Three implementations of the same MI-for-every-shift map, timed in one run:

(a) **brute force**: one joint histogram (``bincount``) per shift, on a small case only;
(b) **straightforward FFT**, written here from scratch in the structure of the public PyTorch
    package (torch_cmif): one-hot level planes; the joint counts of all K^2 level pairs from the
    broadcast product of the K fixed and K moving level spectra, the fixed marginals from the fixed
    levels against the moving mask, the moving marginals from the fixed mask against the moving
    levels, each of the three correlations computing its own forward transforms (6K R2C and
    K^2 + 2K C2R per template and angle); all K^2 count maps held at once; entropies with
    ``where`` masks. Counts are rounded as in (c) so the values can be compared;
(c) **cmif** (``FixedSpectra`` once per fixed image, ``cmif_from_labels`` per batch of angles),
    with the entropy pass of ``--entropy-pass`` (default ``compiled``: the ``torch.compile``
    kernels of ``mibench.estimators.cmif_compiled``; at 256 one fused kernel for all rows, at
    512 the row-by-row kernels, see ``cmif.FUSED_MAX_BYTES``); unless that is ``eager``, (c)
    is also timed with the eager pass in the same rounds (``cmif_eager``), and the run prints
    the first call's time and the compile time within it.

(b) and (c) run on the same shift range and the same FFT grid, so the speed-up is the FFT economy,
the batching and the streamed entropy only. (b) also runs on torch_cmif's own grid (the full
linear correlation's size, ``H + h - h mod 2`` per side: 384^2 and 1024^2 in the cases below, for
the same shifts), i.e. as the public package does; the run prints both speed-ups.

The run also times the *bare FFT count* of (c): as many forward and inverse real FFTs as (c)
performs, standard ``rfft2``/``irfft2`` on the same grid with the same batching, and nothing else;
(c)'s time over it says how close to its FFT floor (c) runs. A second figure, *as called*, times
the transforms exactly as (c) calls them (on the CPU its pruned two-stage forms, cheaper than the
standard ones), i.e. (c) without its products, rounding and entropies. The implementations are
timed in interleaved rounds (one call of each per round), so a slow spell of a shared machine
falls on all of them; the median page faults per call of each are printed too. ``--timing
blocks`` times each implementation's calls back to back instead (its steady state, caches warm
with its own buffers): the interleaved rounds leave every call to start with caches filled by
the others, which costs the small-footprint implementations most.

Cases:

- ``small``: 64^2 image vs 33^2 template, K = 8, template centre on every image pixel: (a), (b),
  (c) and the check that (a) and (c) have the same counts and MI within 1e-6;
- ``256``: 256^2 image vs 129^2 template, K = 8, template centre on every image pixel (the
  torch_cmif README case; FFT grid 320^2): (b), (c), bare;
- ``512``: 512^2 vs 512^2, K = 8, 32 rotation angles, shifts with overlap >= 50 % (FFT grid
  768^2); the moving image is rotated (a masked template: (K-1) K inverse FFTs per angle):
  (b), (c), bare;
- ``accuracy`` (not run by default; minutes): the ``cmif`` method with its defaults on
  ``--pairs`` hard rigid synthetic pairs (rotation up to 30 deg, translation up to 20 %,
  multimodal), the share recovered within 1 px and 1 degree.

Usage::

    .venv/bin/python benchmarks/cmif.py                    # CPU, all cases
    .venv/bin/python benchmarks/cmif.py --threads 1 --cases small,256
    .venv/bin/python benchmarks/cmif.py --device cuda --repeats 5
    .venv/bin/python benchmarks/cmif.py --cases 256 --profile 15   # where (c)'s time goes
    .venv/bin/python benchmarks/cmif.py --cases accuracy --pairs 40 --threads 1
    .venv/bin/python benchmarks/cmif.py --cases 256 --entropy-pass eager   # issue 5's figures
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mibench.estimators import cmif as cm  # noqa: E402
from mibench.estimators import cmif_compiled  # noqa: E402
from mibench.methods.cmif import rotate_labels  # noqa: E402
from mibench.tensors import resolve_device  # noqa: E402

# --------------------------------------------------------------------------------------------
# (a) brute force


def brute_force(la: torch.Tensor, lb: torch.Tensor, ka: int, kb: int, grid: cm.ShiftGrid):
    """MI and overlap per shift from one joint histogram per shift. ``la (H, W)``, ``lb (h, w)``
    labels (-1 outside the mask)."""
    (hf, wf), (hm, wm) = la.shape, lb.shape
    (y0, x0), (sy, sx) = grid.origin, grid.size
    mi = torch.zeros(sy, sx, dtype=torch.float64)
    n_map = torch.zeros(sy, sx, dtype=torch.float64)
    for r in range(sy):
        dy = y0 + r
        r0, r1 = max(0, -dy), min(hm, hf - dy)
        for c in range(sx):
            dx = x0 + c
            c0, c1 = max(0, -dx), min(wm, wf - dx)
            if r1 <= r0 or c1 <= c0:
                continue
            b = lb[r0:r1, c0:c1]
            a = la[r0 + dy:r1 + dy, c0 + dx:c1 + dx]
            ok = (a >= 0) & (b >= 0)
            counts = torch.bincount(a[ok] * kb + b[ok], minlength=ka * kb).double()
            n = counts.sum()
            if n == 0:
                continue
            p = counts.view(ka, kb) / n
            pa, pb = p.sum(1, keepdim=True), p.sum(0, keepdim=True)
            nz = p > 0
            mi[r, c] = (p[nz] * torch.log(p[nz] / (pa * pb)[nz])).sum()
            n_map[r, c] = n
    return mi, n_map


# --------------------------------------------------------------------------------------------
# (b) straightforward FFT CMIF


def _corr(x: torch.Tensor, y: torch.Tensor, grid: cm.ShiftGrid) -> torch.Tensor:
    """Circular cross-correlations ``sum_x X(x + s) Y(x)`` on the grid, each computing its own
    forward transforms; ``x`` is already rolled so that shift ``origin`` sits at index 0."""
    p, q = grid.fft_shape
    fx = torch.fft.rfft2(x, s=(p, q))
    fy = torch.fft.rfft2(y, s=(p, q))
    return torch.fft.irfft2(fx * fy.conj(), s=(p, q))[..., :grid.size[0], :grid.size[1]]


def _plane_stack(labels: torch.Tensor, k: int, grid: cm.ShiftGrid, roll: bool, dtype):
    """One-hot planes ``(..., k, P, Q)`` of labels ``(..., h, w)``, zero padded (and rolled to
    put shift ``origin`` at index 0 for the fixed image)."""
    p, q = grid.fft_shape
    ks = torch.arange(k, device=labels.device).view(-1, 1, 1)
    planes = (labels.unsqueeze(-3) == ks).to(dtype)
    pad = planes.new_zeros(planes.shape[:-2] + (p, q))
    pad[..., :labels.shape[-2], :labels.shape[-1]] = planes
    if roll:
        pad = torch.roll(pad, shifts=(-grid.origin[0], -grid.origin[1]), dims=(-2, -1))
    return pad


def _ent(c: torch.Tensor, n: torch.Tensor, dims) -> torch.Tensor:
    """Entropy (nats) of counts ``c`` over ``n``, 0 log 0 = 0 by where-masks."""
    pr = c / n
    return -torch.where(c > 0, pr * torch.log(torch.where(c > 0, pr, 1)), 0).sum(dims)


def straightforward(la: torch.Tensor, lb: torch.Tensor, k: int, grid: cm.ShiftGrid):
    """MI map ``(R, Sy, Sx)`` for fixed labels ``la (H, W)`` and moving labels ``lb (R, h, w)``,
    one template at a time, K^2 maps materialised."""
    dtype = torch.float32
    out = []
    for r in range(lb.shape[0]):
        a = _plane_stack(la, k, grid, True, dtype)  # (K, P, Q)
        b = _plane_stack(lb[r], k, grid, False, dtype)
        # The masks as one-level label images (0 inside, -1 outside).
        mask_a = _plane_stack(torch.where(la >= 0, 0, -1), 1, grid, True, dtype)
        mask_b = _plane_stack(torch.where(lb[r] >= 0, 0, -1), 1, grid, False, dtype)
        pxy = _corr(a[:, None], b[None, :], grid).round()  # (K, K, Sy, Sx)
        px = _corr(a, mask_b.expand(k, -1, -1), grid).round()  # (K, Sy, Sx)
        py = _corr(mask_a.expand(k, -1, -1), b, grid).round()
        n = px.sum(0)
        safe = n.clamp_min(1)

        mi = _ent(px, safe, 0) + _ent(py, safe, 0) - _ent(pxy, safe, (0, 1))
        out.append(torch.where(n > 0, mi, 0))
    return torch.stack(out)


def package_grid(fixed_shape, moving_shape) -> cm.ShiftGrid:
    """torch_cmif's shifts and FFT grid (``research/cmif.md`` section 3): the template centred
    on every image pixel ("same" output, ``H x W``), on an ``(H + h - h mod 2) x (W + w - w mod
    2)`` grid (the full linear correlation's size, not the smallest that holds the shifts)."""
    (hf, wf), (hm, wm) = fixed_shape, moving_shape
    return cm.ShiftGrid((-(hm // 2), -(wm // 2)), (hf, wf), (hf + hm - hm % 2, wf + wm - wm % 2))


# --------------------------------------------------------------------------------------------
# (c) and its bare FFT count


def run_cmif(side: cm.FixedSpectra, lb: torch.Tensor, k: int, batch: int, min_overlap: float,
             entropy_pass: str = "auto"):
    maps = []
    for start in range(0, lb.shape[0], batch):
        out = cm.cmif_from_labels(side, lb[None, start:start + batch], k,
                                  min_overlap=min_overlap, entropy_pass=entropy_pass)
        maps.append(out.value[0])
    return torch.cat(maps)


def fft_plan(side: cm.FixedSpectra, lb: torch.Tensor, k: int):
    """(forward per template, inverse per template) real FFTs that (c) performs."""
    ja = side.spectra.shape[1]
    jb = k - 1 if bool((lb >= 0).all()) else k
    return jb, ja * jb


def bare_fft(side: cm.FixedSpectra, templates: int, jb: int, batch: int, device, *,
             as_called: bool):
    """The FFT count of (c) on random data, with (c)'s batching (``batch`` templates per call
    of :func:`run_cmif`, split into the chunks and level groups of :func:`cm.fft_batches`):
    per chunk one forward transform of its ``jb`` level planes, then per fixed level one
    inverse per level group; plus the fixed image's ``ja`` forward transforms once.

    ``as_called=False``: the standard transforms (``rfft2`` and ``irfft2`` on the whole grid),
    i.e. the count itself; ``True``: the transforms exactly as (c) calls them (its pruned
    two-stage forms on the CPU), i.e. (c) without the products, the rounding and the entropies.
    """
    grid, ja = side.grid, side.spectra.shape[1]
    (p, q), size, (hm, wm) = grid.fft_shape, grid.size, side.moving_shape
    gen = torch.Generator(device="cpu").manual_seed(0)
    once = torch.rand(ja, p, q, generator=gen).to(device)
    moving = torch.rand(min(batch, templates), jb, hm, wm, generator=gen).to(device)

    def forward(x):
        if as_called:
            return cm._forward_padded(x, (p, q), side.split)
        return torch.fft.rfft2(x, s=(p, q))

    spec = forward(moving)  # in the layout the inverse below expects
    work = cm._Workspace(device)

    def inverse(x):
        if as_called:
            return cm._inverse_crop(x, (p, q), size, side.split, work)
        return torch.fft.irfft2(x, s=(p, q))

    def run():
        torch.fft.rfft2(once)
        for start in range(0, templates, batch):
            m = min(batch, templates - start)
            chunk, group = cm.fft_batches(grid, side.dtype, m, jb, device)
            for c0 in range(0, m, chunk):
                c1 = min(m, c0 + chunk)
                forward(moving[c0:c1])
                for _ in range(ja):
                    for j0 in range(0, jb, group):
                        inverse(spec[c0:c1, j0:j0 + group])
    return run


# --------------------------------------------------------------------------------------------
# Timing


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


#: ``wall``: time.perf_counter; ``cpu``: time.process_time (this process's CPU time: steadier on
#: a shared machine with one thread, meaningless with several threads or on CUDA).
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
CLOCK = CLOCKS["wall"]


def timed(fn, device, repeats: int, warmup: int = 1) -> float:
    """Median time (s, :data:`CLOCK`) of ``repeats`` calls after ``warmup`` calls."""
    return timed_together({"fn": fn}, device, repeats, warmup)[0]["fn"]


def timed_together(fns: dict, device, repeats: int, warmup: int = 1) -> tuple[dict, dict]:
    """Median time (s, :data:`CLOCK`) and median page faults of each function, the calls
    interleaved (one call of each per round, ``repeats`` rounds after ``warmup``) so that a
    slow spell of a shared machine falls on all of them rather than on one.

    Page faults (minor, this process) tell how much of a time is the allocator's: glibc maps
    large allocations afresh and they fault in on first touch; which allocations that hits
    depends on what the process allocated before, so the count is printed with the time."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    _sync(device)
    times = {name: [] for name in fns}
    faults = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            t0 = CLOCK()
            fn()
            _sync(device)
            times[name].append(CLOCK() - t0)
            faults[name].append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
    return ({name: statistics.median(ts) for name, ts in times.items()},
            {name: statistics.median(fs) for name, fs in faults.items()})


def timed_in_blocks(fns: dict, device, repeats: int, warmup: int = 1) -> tuple[dict, dict]:
    """As :func:`timed_together`, but each function's ``repeats`` calls run back to back after
    its own ``warmup`` calls: each implementation in its steady state, its buffers warm in the
    caches, as in a loop over many templates. A slow spell of a shared machine then falls on
    one implementation only; run it more than once."""
    out = [{}, {}]
    for name, fn in fns.items():
        t, f = timed_together({name: fn}, device, repeats, warmup)
        out[0].update(t)
        out[1].update(f)
    return out[0], out[1]


#: ``--timing``: interleaved rounds (the default) or blocks of calls per implementation.
TIMINGS = {"interleaved": timed_together, "blocks": timed_in_blocks}
TIMING = TIMINGS["interleaved"]


def profile_ops(fn, device, calls: int, top: int) -> list[dict]:
    """The ``top`` operators of ``calls`` calls of ``fn`` by self time (torch.profiler; CUDA
    kernel time on a GPU, CPU time otherwise), grouped by input shapes, per call. The profiler
    adds some overhead per operator: read the shares, not the absolute times."""
    from torch.profiler import ProfilerActivity, profile

    fn()
    _sync(device)
    cuda = device.type == "cuda"
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=acts, record_shapes=True) as prof:
        for _ in range(calls):
            fn()
        _sync(device)
    events = prof.key_averages(group_by_input_shape=True)

    def self_us(e):
        return e.self_device_time_total if cuda else e.self_cpu_time_total

    total = sum(self_us(e) for e in events) or 1.0
    rows = sorted(events, key=self_us, reverse=True)[:top]
    return [{"op": e.key, "shapes": str(e.input_shapes)[:80], "calls": e.count / calls,
             "ms_per_call": self_us(e) / 1e3 / calls, "share": self_us(e) / total}
            for e in rows]


def make_labels(shape, k, seed, device):
    """Smooth random labels (a quantised blurred noise field), more like an image than i.i.d."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    noise = torch.rand((1, 1) + tuple(shape), generator=gen)
    smooth = torch.nn.functional.avg_pool2d(noise, 5, stride=1, padding=2,
                                            count_include_pad=False)
    ranks = smooth.flatten().argsort().argsort().view(shape)
    return (ranks * k // ranks.numel()).to(device)


def case_small(args, device):
    k = 8
    la = make_labels((64, 64), k, 1, device)
    lb = la[10:43, 20:53].clone()
    lb[(make_labels((33, 33), 5, 2, device) == 0)] = -1  # a masked template
    grid = cm.shift_grid((64, 64), (33, 33), "centre")
    side = cm.FixedSpectra(la[None], k, grid, (33, 33), torch.float32)
    ref_mi, ref_n = brute_force(la.cpu(), lb.cpu(), k, k, grid)
    out = cm.cmif_from_labels(side, lb[None, None], k, min_overlap=0.0)
    count_ok = bool(torch.equal(out.overlap[0, 0].double().cpu(), ref_n))
    mi_err = float((out.value[0, 0].double().cpu() - ref_mi).abs().max())
    b_err = float((straightforward(la, lb[None], k, grid)[0].double().cpu() - ref_mi).abs().max())
    t_a = timed(lambda: brute_force(la.cpu(), lb.cpu(), k, k, grid), device, 1, warmup=0)
    t_b = timed(lambda: straightforward(la, lb[None], k, grid), device, args.repeats)
    t_c = timed(lambda: cm.cmif_from_labels(side, lb[None, None], k, min_overlap=0.0), device,
                args.repeats)
    return {"case": "small", "desc": "64^2 vs 33^2 (masked), K=8, centre shifts",
            "grid": list(grid.fft_shape), "brute_s": t_a, "straightforward_s": t_b,
            "cmif_s": t_c, "counts_equal_brute": count_ok, "mi_max_err_vs_brute": mi_err,
            "straightforward_max_err_vs_brute": b_err}


def case_large(args, device, name):
    k = args.levels
    if name == "256":
        fixed_shape, moving_shape, angles, shifts, min_overlap = (256, 256), (129, 129), 1, \
            "centre", 0.0
        desc = "256^2 vs 129^2, K=8, centre shifts (one template)"
    else:
        fixed_shape, moving_shape, angles, shifts, min_overlap = (512, 512), (512, 512), \
            args.angles, "full", 0.5
        desc = f"512^2 vs 512^2, K=8, {args.angles} angles, overlap >= 50 %"
    la = make_labels(fixed_shape, k, 3, device)
    lb0 = make_labels(moving_shape, k, 4, device)
    if angles == 1:
        lb = lb0[None]
    else:
        lb = rotate_labels(lb0, torch.linspace(-30, 30, angles))
    least = cm.least_overlap(la[None], lb0[None], min_overlap)
    grid = cm.shift_grid(fixed_shape, moving_shape, shifts, least)

    def prep():
        return cm.FixedSpectra(la[None], k, grid, moving_shape, torch.float32)

    side = prep()
    jb, inv = fft_plan(side, lb, k)
    ja = side.spectra.shape[1]
    compile_s0 = cmif_compiled.compile_seconds()
    t0 = time.perf_counter()
    c_val = run_cmif(side, lb, k, args.angle_batch, min_overlap, args.entropy_pass)
    first_s = time.perf_counter() - t0
    compile_s = cmif_compiled.compile_seconds() - compile_s0
    e_val = run_cmif(side, lb, k, args.angle_batch, min_overlap, "eager")
    diff_pass = float((c_val - e_val).abs().max())
    # (b) on the first angles only: its value must equal (c)'s where (c)'s is valid.
    check = min(2, angles)
    b_val = straightforward(la, lb[:check], k, grid)
    c_chk = cm.cmif_from_labels(side, lb[None, :check], k, min_overlap=min_overlap)
    diff = float(torch.where(c_chk.valid[0], (b_val - c_chk.value[0]).abs(), 0).max())
    # (b) on torch_cmif's own grid: the same shifts here (the template centre on every fixed
    # pixel; at 512 all but the last row and column of (c)'s), 1.4x (256) and 1.8x (512) the
    # grid area.
    pgrid = package_grid(fixed_shape, moving_shape)
    assert pgrid.origin == grid.origin
    sy, sx = pgrid.size
    p_val = straightforward(la, lb[:check], k, pgrid)
    valid = c_chk.valid[0, :, :sy, :sx]
    diff_p = float(torch.where(valid, (p_val - c_chk.value[0, :, :sy, :sx]).abs(), 0).max())
    del c_val, e_val
    passes = {"cmif": args.entropy_pass}
    if args.entropy_pass != "eager":
        passes["cmif_eager"] = "eager"
    t, faults = TIMING({
        **{name: (lambda ep=ep: run_cmif(prep(), lb, k, args.angle_batch, min_overlap, ep))
           for name, ep in passes.items()},
        "straightforward": lambda: straightforward(la, lb, k, grid),
        "package_grid": lambda: straightforward(la, lb, k, pgrid),
        "bare": bare_fft(side, angles, jb, args.angle_batch, device, as_called=False),
        "called": bare_fft(side, angles, jb, args.angle_batch, device, as_called=True),
    }, device, args.repeats)
    ops = (profile_ops(lambda: run_cmif(prep(), lb, k, args.angle_batch, min_overlap,
                                        args.entropy_pass), device,
                       args.repeats, args.profile) if args.profile else None)
    return {"case": name, "desc": desc, "grid": list(grid.fft_shape), "templates": angles,
            "fft_per_template": {"cmif": f"{jb} R2C + {inv} C2R (+{ja} R2C once)",
                                 "straightforward": f"{6 * k} R2C + {k * k + 2 * k} C2R"},
            "package_grid": list(pgrid.fft_shape),
            "straightforward_s": t["straightforward"],
            "straightforward_package_grid_s": t["package_grid"], "cmif_s": t["cmif"],
            **({"cmif_eager_s": t["cmif_eager"]} if "cmif_eager" in t else {}),
            "entropy_pass": args.entropy_pass, "first_call_s": first_s,
            "compile_s": compile_s, "max_abs_diff_pass_vs_eager": diff_pass,
            "bare_fft_s": t["bare"], "bare_fft_as_called_s": t["called"],
            "page_faults_per_call": {name: int(n) for name, n in faults.items()},
            "max_abs_diff_b_vs_c": diff, "max_abs_diff_b_package_grid_vs_c": diff_p,
            **({"cmif_profile": ops} if ops else {})}


def case_accuracy(args, device):
    """``cmif`` (the method, defaults) on hard rigid synthetic pairs: share recovered within
    1 px and 1 degree (angle error, and the error of the image centre's mapping; also the
    largest error over the four corners)."""
    import numpy as np

    import mibench
    from mibench.methods.cmif import rigid_search
    from mibench.tensors import image_to_tensor, mask_to_tensor

    ds = mibench.dataset("synthetic", pairs=args.pairs, size=args.size, transform="rigid",
                         difficulty="hard")
    size = args.size
    pts = np.array([[(size - 1) / 2] * 2, [0, 0], [size - 1, 0], [0, size - 1],
                    [size - 1, size - 1]], dtype=float)
    homog = np.column_stack([pts, np.ones(len(pts))])
    rows, times = [], []
    for info in ds.pairs():
        pair = ds.load(info.id)
        t0 = time.perf_counter()
        res = rigid_search(image_to_tensor(pair.fixed, device),
                           image_to_tensor(pair.moving, device),
                           mask_to_tensor(pair.fixed_mask, device),
                           mask_to_tensor(pair.moving_mask, device),
                           entropy_pass=args.entropy_pass)
        times.append(time.perf_counter() - t0)
        true = np.asarray(pair.meta["true_transform"])
        est = res.matrix
        angle_true = math.degrees(math.atan2(true[1, 0], true[0, 0]))
        angle_err = abs((res.angle - angle_true + 180) % 360 - 180)
        err = np.linalg.norm(homog @ true.T - homog @ est.T, axis=1)
        rows.append((info.id, angle_err, float(err[0]), float(err[1:].max())))
        if args.verbose:
            print(f"  {info.id}: angle error {angle_err:.2f} deg, centre {err[0]:.2f} px, "
                  f"corners max {err[1:].max():.2f} px", flush=True)
    ok_centre = sum(a <= 1 and c <= 1 for _, a, c, _ in rows)
    ok_corners = sum(a <= 1 and m <= 1 for _, a, _, m in rows)
    return {"case": "accuracy", "desc": f"{len(rows)} hard rigid synthetic pairs at {size}^2 "
            "(rotation <= 30 deg, translation <= 20 %, multimodal)",
            "within_1px_1deg_centre": f"{ok_centre}/{len(rows)}",
            "within_1px_1deg_corners": f"{ok_corners}/{len(rows)}",
            "failed": [r[0] for r in rows if not (r[1] <= 1 and r[2] <= 1)],
            "entropy_pass": args.entropy_pass, "first_pair_s": times[0],
            "compile_s": cmif_compiled.compile_seconds(),
            "median_s_per_pair": statistics.median(times)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    ap.add_argument("--cases", default="small,256,512",
                    help="comma list of small, 256, 512 and accuracy (the method on --pairs "
                    "hard rigid synthetic pairs; minutes)")
    ap.add_argument("--pairs", type=int, default=40, help="pairs of the accuracy case")
    ap.add_argument("--size", type=int, default=256, help="image side of the accuracy case")
    ap.add_argument("--verbose", action="store_true", help="one line per accuracy pair")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs (median)")
    ap.add_argument("--angles", type=int, default=32)
    ap.add_argument("--angle-batch", type=int, default=8)
    ap.add_argument("--levels", type=int, default=8)
    ap.add_argument("--entropy-pass", default="compiled", choices=("auto", "compiled", "eager"),
                    help="cmif's entropy pass; unless eager, cmif is also timed eager "
                    "(cmif_eager) in the same rounds")
    ap.add_argument("--clock", default="wall", choices=tuple(CLOCKS),
                    help="wall time, or this process's CPU time (one thread, shared machine)")
    ap.add_argument("--timing", default="interleaved", choices=tuple(TIMINGS),
                    help="interleaved rounds, one call of each implementation per round, or "
                    "blocks: each implementation's calls back to back (its steady state)")
    ap.add_argument("--json", action="store_true", help="print one JSON line per case")
    ap.add_argument("--profile", type=int, default=0, metavar="N",
                    help="also print cmif's N costliest operators (torch.profiler) at 256/512")
    args = ap.parse_args(argv)
    global CLOCK, TIMING
    CLOCK = CLOCKS[args.clock]
    TIMING = TIMINGS[args.timing]
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    print(f"# torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}, "
          f"{platform.processor() or platform.machine()}, clock {args.clock}, "
          f"timing {args.timing}", flush=True)
    for name in args.cases.split(","):
        if name == "small":
            res = case_small(args, device)
        elif name == "accuracy":
            res = case_accuracy(args, device)
        else:
            res = case_large(args, device, name)
        if args.json:
            print(json.dumps(res), flush=True)
            continue
        grid = f", FFT grid {res['grid']}" if "grid" in res else ""
        print(f"\n## {res['case']}: {res['desc']}{grid}")
        for key, value in res.items():
            if key.endswith("_s"):
                print(f"  {key[:-2]:16s} {value * 1e3:10.1f} ms")
            elif key == "cmif_profile":
                print("  cmif's costliest operators (self time per call, share of all):")
                for op in value:
                    print(f"    {op['ms_per_call']:8.2f} ms {op['share']:6.1%} "
                          f"{op['calls']:5.1f}x {op['op']:18s} {op['shapes']}")
            elif key not in ("case", "desc", "grid"):
                print(f"  {key}: {value}")
        if "cmif_s" not in res:
            continue
        print(f"  speed-up of cmif vs straightforward: "
              f"{res['straightforward_s'] / res['cmif_s']:.2f}x")
        if "straightforward_package_grid_s" in res:
            print(f"  speed-up of cmif vs straightforward on the package's grid: "
                  f"{res['straightforward_package_grid_s'] / res['cmif_s']:.2f}x")
        if "bare_fft_s" in res:
            print(f"  cmif / bare FFT count: {res['cmif_s'] / res['bare_fft_s']:.2f} "
                  f"(standard rfft2/irfft2; as called: "
                  f"{res['cmif_s'] / res['bare_fft_as_called_s']:.2f})")
        if "cmif_eager_s" in res:
            print(f"  cmif eager / bare FFT count: "
                  f"{res['cmif_eager_s'] / res['bare_fft_s']:.2f}; speed-up of cmif eager vs "
                  f"straightforward: {res['straightforward_s'] / res['cmif_eager_s']:.2f}x")
        if "brute_s" in res:
            print(f"  speed-up of cmif vs brute force: {res['brute_s'] / res['cmif_s']:.0f}x")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
