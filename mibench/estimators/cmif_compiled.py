"""CMIF's per-shift entropy pass as compiled, fused kernels (``torch.compile``, TorchInductor).

The eager pass of :mod:`mibench.estimators.cmif` runs about a dozen elementwise passes over each
row of ``K_B`` count maps (rounding, the column and row sums, ``c log(c / R)`` and its sums) and as
many again to finish (the dropped row and column, the marginals, the entropies). Here the same
arithmetic is written as two plain-torch functions that TorchInductor fuses into one kernel each
(C++ with OpenMP and vectorised ``log`` on the CPU, Triton on CUDA):

- :func:`row_pass`: one row ``i`` of rounded counts ``C_ij`` -> the column sums (updated in
  place), the ``sum_j C_ij log(C_ij / R)`` (summed in float32 over ``j`` and added in place to
  a float64 map) and the row sum;
- :func:`finish_pass`: the dropped row and column, the marginal sums and the three entropies;
- :func:`fused_pass`: both at once for all the rows of a template chunk, when the caller can hold
  all their count maps (:data:`mibench.estimators.cmif.FUSED_MIN_BYTES` to ``FUSED_MAX_BYTES``
  of them, e.g. the 256^2 vs 129^2 case at K = 8). It keeps the running column sums out of
  memory: at that case 7.0 ms against 9.4 ms for the row and finishing kernels (one thread,
  measured under load), the same values bit for bit.

All three are plain torch, correct uncompiled too. The row and finishing kernels do not make
the pass much cheaper on the CPU: Inductor's vectorised ``log`` costs about three times eager
torch's there (``docs/performance.md``), and the pass is mostly memory traffic, which only the
fused kernel reduces. (Replacing ``c log c`` by a table of ``c log c`` for the integer counts
was slower: a gather, not vectorised, 0.96 ms against 0.51 ms eager and 1.10 ms against 0.67 ms
compiled for a row of 7 maps of 256^2; so was a ``log`` from the float's exponent and a
polynomial, 1.79 ms, which Inductor does not vectorise: one thread, under load.)

Compilation
    Each kernel is compiled once per process with dynamic shapes, so one compilation serves
    every grid, template count and level group (a new one only for another dtype or device,
    mask case, a single template or contiguous counts); the fused kernel also once per number
    of rows (``K_A - 1``, or ``K_A`` with a fixed mask), and it takes longer to compile (its
    graph holds every row: 39-52 s cold, under load, against a few seconds for the others).
    Inductor's on-disk caches (FX graph and kernel caches, under ``TORCHINDUCTOR_CACHE_DIR``,
    by default ``/tmp/torchinductor_$USER``) make later processes skip most of the compile
    time.
    :func:`compile_seconds` reports the time spent compiling in this process.

Fallback
    When a compiler is missing or compilation fails for any reason, one warning
    (:class:`CompileFallbackWarning`) is given per process and the caller runs its eager pass
    instead (:func:`kernels` returns ``None`` from then on).
"""

from __future__ import annotations

import shutil
import threading
import time
import warnings

import torch
from torch.fx.experimental import _config as fx_config

from mibench.errors import check_choice
from mibench.estimators.options import ENTROPY_PASSES

#: ``entropy_pass="auto"``: eager until this process has spent this many seconds in eager
#: entropy passes, compiled from then on. On the CPU the compiled pass saves 2-10 % of a call's
#: time (measured at 256^2 and 512^2; about 15 % where the fused kernel runs, at 256^2 vs
#: 129^2, under load) and costs 3-50 s of compilation per process (warm or cold Inductor cache,
#: ``docs/performance.md``), so it pays only in long runs; short ones (and the test suite) stay
#: eager. (On CUDA it is not measured yet, so the same rule holds there.)
AUTO_EAGER_SECONDS = 120.0


class CompileFallbackWarning(RuntimeWarning):
    """The compiled entropy pass is unavailable; the eager pass is used instead."""


def xlogx(c: torch.Tensor, inv_ref: torch.Tensor) -> torch.Tensor:
    """``c log(c / R)`` for counts ``c >= 0`` (``inv_ref = 1 / R``), with ``0 log 0 = 0``: a zero
    count gets a tiny ratio whose finite log is multiplied by 0 (as the eager pass)."""
    return c * torch.log(torch.clamp_min(c * inv_ref, 1e-30))


def row_pass(counts: torch.Tensor, colsum: torch.Tensor, s_ab: torch.Tensor,
             inv_ref: torch.Tensor) -> torch.Tensor:
    """One fixed level's row of the joint counts, consumed in one pass.

    Parameters
    ----------
    counts : Tensor ``(T, J, Sy, Sx)``
        Unrounded correlations of fixed level ``i`` with ``J`` moving levels (any strides).
    colsum : Tensor ``(T, J, Sy, Sx)``
        Running column sums ``sum_i C_ij``; the rounded counts are added in place.
    s_ab : Tensor ``(T, Sy, Sx)`` float64
        Running ``sum_ij C_ij log(C_ij / R)``; this row's terms are added in place.
    inv_ref : Tensor ``(T, 1, 1, 1)``
        ``1 / R`` per template.

    Returns
    -------
    Tensor ``(T, Sy, Sx)``
        The row sum ``sum_j C_ij`` over these ``J`` levels.
    """
    c = torch.round(counts)
    colsum.add_(c)
    # The J terms are summed in float32 (as the eager pass sums K_A terms), the rows in
    # float64: a float64 conversion of every term cost a fifth of the kernel's time.
    s_ab.add_(xlogx(c, inv_ref).sum(1).to(torch.float64))
    return c.sum(1)


def fused_pass(rows: list[torch.Tensor], box_a: torch.Tensor | None, col: torch.Tensor | None,
               inv_ref: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Every row of the joint counts at once, and the finish: :func:`row_pass` for each row and
    :func:`finish_pass`, traced as one graph.

    Parameters
    ----------
    rows : list of Tensor ``(T, J_B, Sy, Sx)``
        The unrounded correlations of each transformed fixed level with the ``J_B`` transformed
        moving levels (any strides), all of a template chunk's rows.
    box_a, col, inv_ref
        As :func:`finish_pass`.

    Returns
    -------
    n, ha, hb, hab
        As :func:`finish_pass`, with the same arithmetic (the same values).

    Fusing the rows saves the running column sums' round trip through memory per row (read and
    written ``J_A`` times by :func:`row_pass`) and the finishing kernel's reread of them; the
    price is that all the rows' count maps are held at once (the caller decides when they fit)
    and one compilation per number of rows.
    """
    inv_lev = inv_ref[:, None]
    s_ab = colsum = None
    sums = []
    for counts in rows:
        c = torch.round(counts)
        colsum = c if colsum is None else colsum + c
        terms = xlogx(c, inv_lev).sum(1).to(torch.float64)
        s_ab = terms if s_ab is None else s_ab + terms
        sums.append(c.sum(1))
    return finish_pass(s_ab, colsum, torch.stack(sums, 1), box_a, col, inv_ref)


def _sum64(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.float64).sum(1)


def finish_pass(s_ab: torch.Tensor, colsum: torch.Tensor, rows: torch.Tensor,
                box_a: torch.Tensor | None, col: torch.Tensor | None,
                inv_ref: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The dropped levels, the marginals and the entropies of every shift.

    Parameters
    ----------
    s_ab : Tensor ``(T, Sy, Sx)`` float64
        ``sum C_ij log(C_ij / R)`` over the rows and columns computed by FFT.
    colsum : Tensor ``(T, J_B, Sy, Sx)``
        Column sums over those rows, for the ``J_B`` moving levels transformed (``K_B - 1``
        with ``box_a``, else ``K_B``).
    rows : Tensor ``(T, J_A, Sy, Sx)``
        Row sums over the columns computed by FFT (``J_A`` fixed levels transformed).
    box_a : Tensor ``(K_A, Sy, Sx)`` or None
        When the moving image has no mask: the count of each fixed level under its rectangle;
        the last column is then ``a_i - sum_j C_ij``.
    col : Tensor ``(T, K_B, Sy, Sx)`` or None
        When the fixed image has no mask: the count of each moving level over the fixed image;
        the last row is then ``b_j - sum_i C_ij``.
    inv_ref : Tensor ``(T, 1, 1)``
        ``1 / R`` per template.

    Returns
    -------
    n, ha, hb, hab : Tensor ``(T, Sy, Sx)``
        Overlap (compute dtype) and the entropies of A, B and (A, B) in nats (float64; 0 where
        the overlap is empty).
    """
    inv_lev = inv_ref[:, None]
    if box_a is not None:
        ja = rows.shape[1]
        last_col = box_a[None, :ja] - rows
        colsum = torch.cat([colsum, last_col.sum(1, keepdim=True)], 1)
        s_ab = s_ab + _sum64(xlogx(last_col, inv_lev))
        # a_i is the box count itself, for every template alike.
        s_a = _sum64(xlogx(box_a[None], inv_lev))
    else:
        s_a = _sum64(xlogx(rows, inv_lev))
    if col is not None:
        last = col - colsum
        s_ab = s_ab + _sum64(xlogx(last, inv_lev))
        if box_a is None:
            s_a = s_a + xlogx(last.sum(1), inv_ref).to(torch.float64)
        colsum = col
    n = colsum.sum(1)
    s_b = _sum64(xlogx(colsum, inv_lev))
    return (n, *entropies(n, s_a, s_b, s_ab, inv_ref))


def entropies(n: torch.Tensor, s_a: torch.Tensor, s_b: torch.Tensor, s_ab: torch.Tensor,
              inv_ref: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``H(A), H(B), H(A, B)`` in nats (float64) from the overlap ``n`` and the sums
    ``s = sum c log(c / ref)`` of the marginal and joint counts (``inv_ref`` = 1 / ref per
    template): ``H = log(n / ref) - s / n``; 0 where the overlap is empty. Shared by the compiled
    and the eager pass."""
    n64 = n.to(torch.float64)
    log_n = torch.log(n64.clamp_min(1) * inv_ref.to(torch.float64))
    inv_n = 1.0 / n64.clamp_min(1)
    empty = n < 1
    zero = torch.zeros_like(n64)
    return (torch.where(empty, zero, log_n - s_a * inv_n),
            torch.where(empty, zero, log_n - s_b * inv_n),
            torch.where(empty, zero, log_n - s_ab * inv_n))


# --------------------------------------------------------------------------------------------
# Compilation, once per process, and the fallback


class Kernels:
    """The compiled :func:`row_pass`, :func:`finish_pass` and :func:`fused_pass` (``row``,
    ``finish``, ``fused``)."""

    def __init__(self):
        options = {"fullgraph": True, "dynamic": True}
        self.row = _timed(torch.compile(row_pass, **options))
        self.finish = _timed(torch.compile(finish_pass, **options))
        self.fused = _timed(torch.compile(fused_pass, **options))


#: The kernels (one set serves every device) and, per device type, why they failed there.
_STATE = {"kernels": None, "failed": {}, "compile_s": 0.0, "first_calls": set(),
          "eager_s": 0.0}
_LOCK = threading.Lock()


def _signature(a: torch.Tensor | None):
    """What of an argument makes Dynamo compile anew (dynamic shapes still specialise on
    dims of size 1 and on contiguity)."""
    if a is None:
        return None
    if isinstance(a, list | tuple):
        return tuple(_signature(x) for x in a)
    return a.dtype, a.device.type, tuple(n == 1 for n in a.shape), a.is_contiguous()


def _timed(fn):
    """``fn`` with the time of its first call per argument signature (the compile) added to
    :func:`compile_seconds`."""

    def call(*args):
        key = (fn, tuple(_signature(a) for a in args))
        if key in _STATE["first_calls"]:
            return fn(*args)
        t0 = time.perf_counter()
        # Without "duck sizing": sizes that happen to be equal in the first call (8 templates
        # and 8 levels) would be traced as one symbol, and recompiled when they differ.
        with fx_config.patch(use_duck_shape=False):
            out = fn(*args)
        _STATE["compile_s"] += time.perf_counter() - t0
        _STATE["first_calls"].add(key)
        return out

    return call


def compile_seconds() -> float:
    """Seconds this process spent in the kernels' first calls (compilation, or loading them from
    Inductor's cache), over every signature compiled so far."""
    return _STATE["compile_s"]


def compiler_missing(device: torch.device) -> str | None:
    """Why the kernels cannot compile on ``device``, or None when they may."""
    if device.type == "cpu":
        try:
            from torch._inductor import cpp_builder

            name = cpp_builder.get_cpp_compiler()
        except Exception as err:  # noqa: BLE001 - any failure means no usable compiler
            return f"no C++ compiler for TorchInductor ({err})"
        if shutil.which(name) is None:
            return f"the C++ compiler {name!r} is not on the PATH"
        return None
    if device.type == "cuda":
        try:
            import triton  # noqa: F401
        except ImportError:
            return "Triton is not installed"
        return None
    return f"no compiled kernels for device type {device.type!r}"


def use_compiled(entropy_pass: str, device: torch.device) -> bool:
    """Whether a call on ``device`` should take the compiled pass: ``"compiled"`` always,
    ``"eager"`` never, ``"auto"`` once :data:`AUTO_EAGER_SECONDS` of eager passes have been
    spent in this process (:func:`note_eager`)."""
    check_choice("entropy_pass", entropy_pass, ENTROPY_PASSES)
    if entropy_pass == "auto":
        return _STATE["eager_s"] >= AUTO_EAGER_SECONDS
    return entropy_pass == "compiled"


def note_eager(seconds: float) -> None:
    """Count ``seconds`` spent in an eager entropy pass towards ``auto``'s switch."""
    _STATE["eager_s"] += seconds


def kernels(device: torch.device) -> Kernels | None:
    """The compiled kernels, or None (after one :class:`CompileFallbackWarning` per process)
    when they are unavailable on ``device``."""
    with _LOCK:
        if device.type in _STATE["failed"]:
            return None
        reason = compiler_missing(device)
        if reason is not None:
            fail(device, reason)
            return None
        if _STATE["kernels"] is None:
            _STATE["kernels"] = Kernels()
        return _STATE["kernels"]


def fail(device: torch.device, reason: str) -> None:
    """Give up on the compiled kernels on ``device``'s type for this process, with one
    warning."""
    if device.type not in _STATE["failed"]:
        _STATE["failed"][device.type] = reason
        warnings.warn(f"cmif: compiled entropy pass unavailable on {device.type}, using the "
                      f"eager pass ({reason})", CompileFallbackWarning, stacklevel=3)


def reset() -> None:
    """Forget the kernels and any failure (tests)."""
    with _LOCK:
        _STATE.update(kernels=None, failed={}, compile_s=0.0, first_calls=set(), eager_s=0.0)
