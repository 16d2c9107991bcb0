"""Speed and peak memory of the sparse binning core against dense N x B Parzen estimators.

For each Parzen / KDE / soft-histogram estimator of :mod:`mibench.estimators.histogram`, time
forward + backward (gradients w.r.t. both images) on one 512 x 512 pair at 64 bins, and measure
its peak memory, against a dense reference of the *same* kernel written here from scratch in the
seeds' formulation (per-pixel weights ``W_x``, ``W_y`` of shape N x B, joint ``W_x^T W_y``).

Each (estimator, implementation) runs in a fresh subprocess, so that peak memory is its own:

- CPU: the process's resident-set high-water mark (``VmHWM``) is reset to the current RSS
  (``echo 5 > /proc/self/clear_refs``) once the inputs are built and a small warm-up has run;
  peak = ``VmHWM`` after one forward + backward minus ``VmRSS`` before it. glibc's mmap threshold
  is pinned (``MALLOC_MMAP_THRESHOLD_``) so freed large blocks go back to the OS and RSS tracks
  live memory.
- CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``, minus the memory
  allocated before the run.

Usage::

    .venv/bin/python benchmarks/estimators.py                 # CPU, 512 x 512, 64 bins
    .venv/bin/python benchmarks/estimators.py --device cuda
    .venv/bin/python benchmarks/estimators.py --size 256 --repeats 3 --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mibench.estimators import binning as bn  # noqa: E402
from mibench.estimators import histogram  # noqa: E402
from mibench.tensors import resolve_device  # noqa: E402

# --------------------------------------------------------------------------------------------
# Dense references (N x B weights), independent of mibench.estimators.binning


def _grey_flat(img: torch.Tensor) -> torch.Tensor:
    return img.mean(dim=1).flatten(1)


def _minmax_coords(x: torch.Tensor, pad: float, span: float) -> torch.Tensor:
    """Bin coordinate (bin k centred at k) with the detached per-image min-max range."""
    lo = x.detach().amin(dim=1, keepdim=True)
    hi = x.detach().amax(dim=1, keepdim=True)
    width = torch.where(hi > lo, hi - lo, torch.ones_like(hi))
    return pad + (x - lo) / width * span


def _centres(bins: int, like: torch.Tensor) -> torch.Tensor:
    return torch.arange(bins, dtype=like.dtype, device=like.device)


def dense_linear(t: torch.Tensor, bins: int) -> torch.Tensor:
    """Triangle kernel on every bin: ``W[n, k] = max(0, 1 - |t_n - k|)``."""
    return (1 - (t[..., None] - _centres(bins, t)).abs()).clamp_min(0)


def dense_cubic(t: torch.Tensor, bins: int) -> torch.Tensor:
    """Cubic B-spline on every bin, piecewise as MONAI / ITK write it."""
    a = (t[..., None] - _centres(bins, t)).abs()
    inner = (4 - 6 * a**2 + 3 * a**3) / 6
    outer = (2 - a).clamp_min(0) ** 3 / 6
    return torch.where(a < 1, inner, outer)


def dense_box(t: torch.Tensor, bins: int, first: int, last: int) -> torch.Tensor:
    """One-hot of the cell ``floor(t + 1/2)`` clamped to ``[first, last]``."""
    idx = torch.floor(t + 0.5).clamp(first, last)
    return (idx[..., None] == _centres(bins, t)).to(t.dtype)


def dense_gaussian(t: torch.Tensor, bins: int, sigma: float) -> torch.Tensor:
    """Gaussian at every centre, normalised per pixel over the bins (untruncated)."""
    w = torch.exp(-0.5 * ((t[..., None] - _centres(bins, t)) / sigma) ** 2)
    return w / w.sum(dim=-1, keepdim=True)


def dense_sigmoid(t: torch.Tensor, bins: int, slope: float) -> torch.Tensor:
    """Difference of sigmoids at every bin, the first bin open below and the last open above."""
    u = t[..., None] - _centres(bins, t)
    lower = torch.sigmoid(slope * (u + 0.5))
    upper = torch.sigmoid(slope * (u - 0.5))
    lower = torch.cat([torch.ones_like(lower[..., :1]), lower[..., 1:]], dim=-1)
    upper = torch.cat([upper[..., :-1], torch.zeros_like(upper[..., -1:])], dim=-1)
    return lower - upper


def _dense_entropies(wx: torch.Tensor, wy: torch.Tensor):
    joint = wx.transpose(1, 2) @ wy  # (B, Bx, By): the seeds' W_x^T W_y
    p = joint / joint.sum(dim=(1, 2), keepdim=True)

    def h(q, dims):
        return -(q * q.clamp_min(1e-30).log()).sum(dim=dims)

    return h(p.sum(2), (1,)), h(p.sum(1), (1,)), h(p, (1, 2))


def _dense_mi(wx, wy):
    hx, hy, hxy = _dense_entropies(wx, wy)
    return hx + hy - hxy


def ref_jhmi_linear(f, m, bins):
    x, y = _grey_flat(f), _grey_flat(m)
    wx = dense_linear(_minmax_coords(x, 0.0, bins - 1), bins)
    wy = dense_linear(_minmax_coords(y, 0.0, bins - 1), bins)
    return _dense_mi(wx, wy)


def ref_nmi_cubic(f, m, bins):
    x, y = _grey_flat(f), _grey_flat(m)
    wx = dense_cubic(_minmax_coords(x, 1.0, bins - 3), bins)
    wy = dense_cubic(_minmax_coords(y, 1.0, bins - 3), bins)
    hx, hy, hxy = _dense_entropies(wx, wy)
    return (hx + hy) / hxy


def ref_mmi(f, m, bins):
    x, y = _grey_flat(f), _grey_flat(m)
    wx = dense_box(_minmax_coords(x, 1.5, bins - 4), bins, 2, bins - 3)
    wy = dense_cubic(_minmax_coords(y, 2.0, bins - 4), bins)
    return _dense_mi(wx, wy)


def ref_kde(f, m, bins, sigma=0.5):
    x, y = _grey_flat(f), _grey_flat(m)
    wx = dense_gaussian(_minmax_coords(x, 0.0, bins - 1), bins, sigma)
    wy = dense_gaussian(_minmax_coords(y, 0.0, bins - 1), bins, sigma)
    return _dense_mi(wx, wy)


def ref_softhist(f, m, bins, slope=5.0):
    x, y = _grey_flat(f), _grey_flat(m)
    wx = dense_sigmoid(_minmax_coords(x, -0.5, bins), bins, slope)
    wy = dense_sigmoid(_minmax_coords(y, -0.5, bins), bins, slope)
    return _dense_mi(wx, wy)


# --------------------------------------------------------------------------------------------
# Sparse taps with plain autograd (no custom autograd.Function): what the Function saves


def autograd_joint(tx, ty, kx, ky, lx, ly):
    """The sparse joint histogram of :mod:`mibench.estimators.binning` with autograd through
    the kernel formulas and out-of-place ``scatter_add`` (no chunking: autograd keeps every
    tap tensor alive until the backward pass anyway)."""
    batch = tx.shape[0]
    mx, my = kx.taps, ky.taps
    rows, cols = lx.bins + 2 * mx, ly.bins + 2 * my
    bx, wx, _ = kx.weights(tx, lx)
    by, wy, _ = ky.weights(ty, ly)
    offset = torch.arange(batch, device=tx.device)[:, None] * (rows * cols) + (mx * cols + my)
    flat = (bx * cols + by + offset).reshape(-1)
    padded = tx.new_zeros(batch, rows + mx, cols + my)
    for a in range(mx):
        for c in range(my):
            acc = tx.new_zeros(batch * rows * cols)
            acc = acc.scatter_add(0, flat, (wx[a] * wy[c]).reshape(-1))
            padded = padded + torch.nn.functional.pad(
                acc.view(batch, rows, cols), (c, my - c, a, mx - a))
    joint = padded[:, :rows, :cols]
    for dim, m, bins, fold in ((1, mx, lx.bins, kx.fold), (2, my, ly.bins, ky.fold)):
        inner = joint.narrow(dim, m, bins)
        if fold:
            below = joint.narrow(dim, 0, m + 1).sum(dim=dim, keepdim=True)
            above = joint.narrow(dim, m + bins - 1, m + 1).sum(dim=dim, keepdim=True)
            inner = torch.cat([below, inner.narrow(dim, 1, bins - 2), above], dim=dim)
        joint = inner
    return joint


def _autograd_case(kx, lx, ky, ly, final):
    def fn(f, m, bins):
        x, y = _grey_flat(f), _grey_flat(m)
        tx = lx.coords(x, *bn.intensity_range(x, None))
        ty = ly.coords(y, *bn.intensity_range(y, None))
        return final(autograd_joint(tx, ty, kx, ky, lx, ly))
    return fn


def autograd_variant(case: str, bins: int):
    """The sparse estimator of ``case`` with autograd in place of the custom Function."""
    mi = bn.mutual_information
    if case == "jhmi (linear)":
        lay = bn.centres_layout(bins)
        return _autograd_case(bn.LinearKernel(), lay, bn.LinearKernel(), lay, mi)
    if case == "nmi (cubic)":
        lay = bn.centres_layout(bins, 1.0)
        return _autograd_case(bn.CubicBSplineKernel(), lay, bn.CubicBSplineKernel(), lay,
                              lambda j: histogram.normalised_mi(*bn.entropies(j)))
    if case == "mmi":
        lx, ly = histogram.mattes_layouts(bins)
        return _autograd_case(bn.BoxKernel(), lx, bn.CubicBSplineKernel(), ly, mi)
    if case == "kde-mi":
        lay, k = bn.centres_layout(bins), bn.GaussianKernel(0.5)
        return _autograd_case(k, lay, k, lay, mi)
    lay, k = bn.edges_layout(bins), bn.SigmoidKernel(5.0)
    return _autograd_case(k, lay, k, lay, mi)


#: name -> (sparse estimator and options, dense reference)
CASES = {
    "jhmi (linear)": (histogram.jhmi, {"kernel": "linear"}, ref_jhmi_linear),
    "nmi (cubic)": (histogram.nmi, {"kernel": "cubic"}, ref_nmi_cubic),
    "mmi": (histogram.mmi, {}, ref_mmi),
    "kde-mi": (histogram.kde_mi, {"sigma": 0.5}, ref_kde),
    "softhist-mi": (histogram.softhist_mi, {"slope": 5.0}, ref_softhist),
}


# --------------------------------------------------------------------------------------------
# Worker: one (case, implementation) in its own process


def make_pair(size: int, device: str):
    """camera() at ``size`` and a multimodal partner: a non-monotone intensity map of it,
    shifted by (3, 2) px, plus noise. Seeded."""
    from skimage import data
    from skimage.transform import resize

    img = data.camera().astype(np.float32) / 255
    if img.shape != (size, size):
        img = resize(img, (size, size), anti_aliasing=True).astype(np.float32)
    rng = np.random.default_rng(0)
    moved = np.roll(img, (3, 2), axis=(0, 1))
    moving = np.sin(3.0 * moved) ** 2 + 0.05 * rng.standard_normal(img.shape).astype(np.float32)
    f = torch.from_numpy(img)[None, None].to(device)
    m = torch.from_numpy(moving.astype(np.float32))[None, None].to(device)
    return f, m


def _status(key: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{key} not in /proc/self/status")


def _sync(device: str):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _step(fn, f, m):
    a = f.clone().requires_grad_(True)
    b = m.clone().requires_grad_(True)
    value = fn(a, b)
    value.sum().backward()
    return value.detach()


def worker(case: str, impl: str, what: str, size: int, bins: int, repeats: int,
           device: str) -> dict:
    """One measurement: ``what="memory"`` (peak of one forward + backward, and its value) or
    ``"time"`` (median of ``repeats`` after two warm-up runs)."""
    est, opts, ref = CASES[case]
    if impl == "sparse":
        def fn(a, b):
            return est(a, b, bins=bins, **opts)
    elif impl == "autograd":
        variant = autograd_variant(case, bins)

        def fn(a, b):
            return variant(a, b, bins)
    else:
        def fn(a, b):
            return ref(a, b, bins)
    f, m = make_pair(size, device)
    _step(fn, f[..., :64, :64], m[..., :64, :64])  # load kernels, start thread pools
    _sync(device)
    if what == "time":
        for _ in range(2):
            _step(fn, f, m)
        times = []
        for _ in range(repeats):
            _sync(device)
            t0 = time.perf_counter()
            _step(fn, f, m)
            _sync(device)
            times.append(time.perf_counter() - t0)
        return {"time_s": statistics.median(times)}
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        value = _step(fn, f, m)
        _sync(device)
        peak = torch.cuda.max_memory_allocated() - before
    else:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        before = _status("VmRSS")
        value = _step(fn, f, m)
        peak = _status("VmHWM") - before
    return {"value": float(value.reshape(-1)[0]), "peak_bytes": int(peak)}


# --------------------------------------------------------------------------------------------
# Driver


def run_case(case, impl, args) -> dict:
    """Memory and value, then time, each in a fresh process (the memory run pins glibc's mmap
    threshold, whose page faults would slow the timed runs)."""
    out = _run_worker(case, impl, "memory", args, {"MALLOC_MMAP_THRESHOLD_": "131072"})
    out.update(_run_worker(case, impl, "time", args, {}))
    return out


def _run_worker(case, impl, what, args, extra_env) -> dict:
    env = dict(os.environ, **extra_env)
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    cmd = [sys.executable, __file__, "--worker", case, impl, what, "--size", str(args.size),
           "--bins", str(args.bins), "--repeats", str(args.repeats), "--device", args.device]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{case} / {impl} / {what} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def machine() -> str:
    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(line.split(":", 1)[1].strip() for line in fh
                       if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    text = f"CPU: {cpu} ({os.cpu_count()} logical cores); torch {torch.__version__}"
    if torch.cuda.is_available():
        text += f"; GPU: {torch.cuda.get_device_name()}"
    return text


def mib(n: int) -> str:
    return f"{n / 2**20:.1f}"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=512, help="image side in pixels")
    p.add_argument("--bins", type=int, default=64)
    p.add_argument("--repeats", type=int, default=5, help="timed runs (median) after warm-up")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--cases", default="all", help="comma-separated subset of: " +
                   ", ".join(CASES))
    p.add_argument("--autograd", action="store_true",
                   help="also time the sparse taps with plain autograd instead of the custom "
                   "autograd.Function")
    p.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.device = str(resolve_device(args.device))  # "auto" -> cuda when there is one
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker:
        print(json.dumps(worker(*args.worker, args.size, args.bins, args.repeats, args.device)))
        return
    cases = list(CASES) if args.cases == "all" else [c.strip() for c in args.cases.split(",")]
    print(machine())
    print(f"device {args.device}, {args.size}x{args.size}, {args.bins} bins, threads "
          f"{args.threads or torch.get_num_threads()}, median of {args.repeats}; "
          "forward + backward w.r.t. both images\n")
    head = ("| estimator | sparse ms | dense ms | speed-up | sparse MiB | dense MiB | "
            "memory ratio | abs diff |")
    print(head)
    print("|" + "---|" * 8)
    extra = {}
    for case in cases:
        s = run_case(case, "sparse", args)
        d = run_case(case, "dense", args)
        print(f"| {case} | {s['time_s'] * 1e3:.1f} | {d['time_s'] * 1e3:.1f} | "
              f"{d['time_s'] / s['time_s']:.1f}x | {mib(s['peak_bytes'])} | "
              f"{mib(d['peak_bytes'])} | {d['peak_bytes'] / max(s['peak_bytes'], 1):.1f}x | "
              f"{abs(s['value'] - d['value']):.1e} |", flush=True)
        if args.autograd:
            extra[case] = (s, run_case(case, "autograd", args))
    if extra:
        print("\nSparse taps, custom autograd.Function vs plain autograd through scatter_add:\n")
        print("| estimator | Function ms | autograd ms | Function MiB | autograd MiB | abs diff |")
        print("|" + "---|" * 6)
        for case, (s, a) in extra.items():
            print(f"| {case} | {s['time_s'] * 1e3:.1f} | {a['time_s'] * 1e3:.1f} | "
                  f"{mib(s['peak_bytes'])} | {mib(a['peak_bytes'])} | "
                  f"{abs(s['value'] - a['value']):.1e} |")


if __name__ == "__main__":
    main()
