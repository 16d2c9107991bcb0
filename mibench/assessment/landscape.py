"""A similarity measure's landscape around a gold standard: the protocol of Škerl, Likar and
Pernuš (IEEE TMI 25(6):779-791, 2006).

The protocol judges a similarity measure (SM) apart from any optimiser: sample it along ``N``
random lines through the gold standard in a normalised parameter space
(:mod:`mibench.assessment.parameter_space`: :class:`ParameterSpace`, :func:`sample_lines`),
evaluate it at every point (:mod:`mibench.assessment.pose_evaluation`: :func:`evaluate`), then
compute five properties of the profiles (this module). The definitions are reconstructed from
memory of the paper, not copied; ``docs/estimator_landscape.md`` states them and where they may
differ.

The property functions are pure functions of ``values`` ``(N lines, P points)`` and
``positions`` ``(P,)``, the signed distance of each point from the gold standard along its line
(normalised px, strictly increasing; evenly spaced where a property says so). They take
``higher_is_better`` (True for MI and NCC, False for MSE) and treat a lower-is-better measure as
its negative, so "maximum" below is the paper's "minimum" of a cost. Values must be finite.

Imports numpy only (the names re-exported below come from the sibling modules).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mibench.assessment.parameter_space import (
    PARAMETERS,
    UNITS,
    Lines,
    ParameterSpace,
    axis_points,
    sample_lines,
)
from mibench.assessment.pose_evaluation import (
    Profiles,
    evaluate,
    profiles,
    sampling_grids,
    warp_batch,
)

__all__ = [
    "PARAMETERS",
    "UNITS",
    "LandscapeProperties",
    "Lines",
    "ParameterSpace",
    "Profiles",
    "accuracy",
    "axis_points",
    "capture_range",
    "distinctiveness",
    "evaluate",
    "number_of_maxima",
    "optimum_indices",
    "profiles",
    "properties",
    "risk_of_nonconvergence",
    "sample_lines",
    "sampling_grids",
    "warp_batch",
]


def _prepare(values, positions, higher_is_better: bool) -> tuple[np.ndarray, np.ndarray]:
    """Values as ``(N, P)`` float64 with higher = better, and checked positions ``(P,)``."""
    v = np.asarray(values, dtype=np.float64)
    x = np.asarray(positions, dtype=np.float64)
    if v.ndim == 1:
        v = v[None]
    if v.ndim != 2 or x.ndim != 1 or v.shape[1] != x.size or x.size < 3:
        raise ValueError(f"values must be (N, P) and positions (P,) with P >= 3, got "
                         f"{v.shape} and {x.shape}")
    if not np.isfinite(v).all():
        raise ValueError("values must be finite (a NaN pose has no place in a profile)")
    if not (np.diff(x) > 0).all():
        raise ValueError("positions must be strictly increasing")
    return (v if higher_is_better else -v), x


def _step(x: np.ndarray) -> float:
    steps = np.diff(x)
    if not np.allclose(steps, steps[0], rtol=1e-6, atol=0.0):
        raise ValueError("this property needs evenly spaced positions")
    return float(steps[0])


def optimum_indices(values, positions, *, higher_is_better: bool = True) -> np.ndarray:
    """Index of each line's global optimum, ``(N,)`` int.

    Ties (equal best values) go to the point nearest the gold standard (``positions == 0``),
    then to the lower index, so a flat profile is not credited with an error.
    """
    v, x = _prepare(values, positions, higher_is_better)
    best = v == v.max(axis=1, keepdims=True)
    dist = np.where(best, np.abs(x)[None, :], np.inf)
    return np.argmin(dist, axis=1)


def _maxima_runs(v: np.ndarray) -> list[tuple[int, int]]:
    """Local maxima of one profile as index runs ``[start, stop)``.

    A run of equal values is one maximum when both neighbours of the run are lower; runs that
    touch either end are not maxima (the line is cut there, what lies beyond is unknown).
    """
    change = np.flatnonzero(np.diff(v) != 0) + 1
    starts = np.concatenate([[0], change])
    stops = np.concatenate([change, [v.size]])
    runs = []
    for a, b in zip(starts, stops, strict=True):
        if a > 0 and b < v.size and v[a - 1] < v[a] and v[b] < v[a]:
            runs.append((int(a), int(b)))
    return runs


def _false_maxima(v: np.ndarray, x: np.ndarray, opt: int) -> list[tuple[float, int]]:
    """``(distance, side)`` of every local maximum other than the one holding ``opt``: the
    distance (normalised px) from ``x[opt]`` to its nearest point, the side -1 or +1."""
    return [(float(np.abs(x[a:b] - x[opt]).min()), 1 if a > opt else -1)
            for a, b in _maxima_runs(v) if not a <= opt < b]


def accuracy(values, positions, *, higher_is_better: bool = True) -> float:
    """ACC: RMS distance between the gold standard and each line's global optimum.

    ``ACC = sqrt(1/N sum_n x_{n,opt}^2)`` with ``x_{n,opt}`` the position (normalised px) of
    line ``n``'s best value (:func:`optimum_indices`). Resolution is the sampling step.

    Notes
    -----
    Recalled with confidence (RMS over lines of the optimum's distance from the gold standard).
    Whether the paper refines the optimum between samples is not recalled; here it does not.
    """
    v, x = _prepare(values, positions, higher_is_better)
    opt = optimum_indices(v, x)
    return float(np.sqrt(np.mean(x[opt] ** 2)))


def distinctiveness(values, positions, r, *, higher_is_better: bool = True):
    """DO(r): mean fall of the measure at distance ``r`` from each line's optimum, per unit
    distance.

    ``DO(r) = 1/N sum_n mean_{s = -1, +1} (SM(x_opt) - SM(x_opt + s r)) / r``, the mean over the
    sides sampled on that line (a line whose optimum lies within ``r`` of an end uses the other
    side only). Units: measure units per normalised px; larger is a sharper optimum. For a cone
    ``-a |x|`` it is ``a`` at every ``r``; for a bowl ``-a x^2`` it is ``a r``.

    Parameters
    ----------
    r : float or array_like
        Distances, each a positive multiple of the (even) sampling step.

    Returns
    -------
    float or ndarray shaped like ``r`` (NaN where no line has a point at distance ``r``)

    Notes
    -----
    Recalled as "the mean change of the SM per unit distance at distance ``r`` around the
    optimum". Uncertain: whether it is centred on each line's optimum (here) or on the gold
    standard, and whether the two sides are averaged (here) or summed (a factor 2).
    """
    v, x = _prepare(values, positions, higher_is_better)
    step = _step(x)
    rr = np.asarray(r, dtype=np.float64)
    k = np.rint(rr / step).astype(int)
    if (k < 1).any() or not np.allclose(k * step, rr, rtol=1e-6, atol=1e-9 * step):
        raise ValueError(f"r must be positive multiples of the sampling step {step}")
    opt = optimum_indices(v, x)
    rows = np.arange(v.shape[0])
    best = v[rows, opt]
    out = np.empty(k.shape)
    for idx, kk in np.ndenumerate(k):
        falls = np.zeros(v.shape[0])
        sides = np.zeros(v.shape[0])
        for j in (opt - kk, opt + kk):
            ok = (j >= 0) & (j < v.shape[1])
            falls[ok] += best[ok] - v[rows[ok], j[ok]]
            sides[ok] += 1
        used = sides > 0
        out[idx] = (np.mean(falls[used] / sides[used]) / (kk * step) if used.any()
                    else np.nan)
    return float(out) if out.ndim == 0 else out


def capture_range(values, positions, *, higher_is_better: bool = True, to: str = "optimum",
                  reduce: str | None = "min"):
    """CR: distance from each line's optimum to the nearest false optimum, then over lines.

    Per line ``n``, on each side of the global optimum ``x_{n,opt}``:

    - ``to="optimum"`` (the paper as recalled): the distance to the nearest other local maximum
      (local *minimum* of the cost in the paper's wording);
    - ``to="basin"``: the distance to where the measure stops falling monotonically away from
      the optimum (the nearest local minimum: the edge of the basin a hill-climber started on
      this line would climb out of).

    A side with no such point contributes its distance to the end of the line (a lower bound:
    the capture range is censored at the sampled radius). ``CR_n`` is the smaller side.

    Parameters
    ----------
    to : {"optimum", "basin"}
    reduce : {"min", "mean", "median"} or None
        Over lines; ``"min"`` (default) is the conservative choice, None returns ``(N,)``.

    Returns
    -------
    float (normalised px), or ndarray ``(N,)`` when ``reduce`` is None

    Notes
    -----
    Recalled as "the distance from the global optimum to the closest local optimum" per line,
    aggregated conservatively. Uncertain: the aggregate (the minimum over lines here; a
    percentile is possible), and whether the paper's boundary is the false optimum itself
    (``"optimum"``) or the edge of the basin (``"basin"``). The censoring at the line's end is
    this module's choice.
    """
    if to not in ("optimum", "basin"):
        raise ValueError(f"to must be 'optimum' or 'basin', got {to!r}")
    if reduce not in ("min", "mean", "median", None):
        raise ValueError(f"reduce must be 'min', 'mean', 'median' or None, got {reduce!r}")
    v, x = _prepare(values, positions, higher_is_better)
    opt = optimum_indices(v, x)
    cr = np.empty(v.shape[0])
    for n in range(v.shape[0]):
        o = opt[n]
        sides = []
        for direction in (-1, 1):
            end = 0 if direction < 0 else x.size - 1
            reach = abs(x[end] - x[o])
            if to == "basin":
                i = o
                while i != end and v[n, i + direction] <= v[n, i]:
                    i += direction
                sides.append(abs(x[i] - x[o]) if i != end else reach)
            else:
                mine = [dist for dist, side in _false_maxima(v[n], x, o) if side == direction]
                sides.append(min(mine) if mine else reach)
        cr[n] = min(sides)
    if reduce is None:
        return cr
    return float({"min": np.min, "mean": np.mean, "median": np.median}[reduce](cr))


def number_of_maxima(values, positions, r=None, *, higher_is_better: bool = True):
    """NOM(r): mean number per line of local maxima other than the global one within ``r``.

    A local maximum is a sample (or a run of equal samples) higher than both neighbours; the
    line's ends never count. ``r`` (normalised px, scalar or array) bounds the distance from the
    line's optimum to the maximum's nearest point; None counts the whole line.

    Returns
    -------
    float or ndarray shaped like ``r``

    Notes
    -----
    Recalled as the number of local minima of the cost along the lines, averaged over lines,
    possibly as a function of ``r``. Uncertain: whether ``r`` is measured from the gold
    standard or from each line's optimum (here), and whether the paper averages or sums over
    lines (here: averages).
    """
    v, x = _prepare(values, positions, higher_is_better)
    opt = optimum_indices(v, x)
    dists = [np.array([d for d, _ in _false_maxima(v[n], x, opt[n])])
             for n in range(v.shape[0])]
    if r is None:
        return float(np.mean([d.size for d in dists]))
    rr = np.asarray(r, dtype=np.float64)
    tol = 1e-9 * max(float(np.ptp(x)), 1.0)
    out = np.array([np.mean([(d <= q + tol).sum() for d in dists]) for q in rr.ravel()])
    return float(out[0]) if rr.ndim == 0 else out.reshape(rr.shape)


def risk_of_nonconvergence(values, positions, r=None, *, higher_is_better: bool = True):
    """RON(r): the measure's rise *away* from each line's optimum per unit distance, averaged.

    Walking outwards from ``x_{n,opt}`` a well-behaved measure only falls. Each step between
    neighbouring samples whose outer point lies within ``r`` of the optimum adds
    ``max(0, SM(outer) - SM(inner))``; the sum is divided by the length walked (``2 r`` when
    both sides are sampled that far) and averaged over lines. Units: measure units per
    normalised px, as DO; 0 for a profile monotone on both sides. ``r`` None walks to both ends.

    Returns
    -------
    float or ndarray shaped like ``r``

    Notes
    -----
    Recalled as "the average of the positive (wrong-way) gradients" within ``r`` of the optimum,
    normalised by ``2 r``. Uncertain: whether the paper sums gradients or SM increments (the
    same here: a rise over a step is the gradient times the step) and whether the
    normalisation is ``2 r`` for every line (here: the length actually sampled, which differs
    only for lines whose optimum lies within ``r`` of an end).
    """
    v, x = _prepare(values, positions, higher_is_better)
    opt = optimum_indices(v, x)
    n_lines = v.shape[0]
    inner = np.arange(x.size - 1)  # step i joins samples i and i + 1
    lengths = np.diff(x)
    rr = np.asarray(np.inf if r is None else r, dtype=np.float64)
    tol = 1e-9 * max(float(np.ptp(x)), 1.0)
    out = np.empty(rr.size)
    for q_i, q in enumerate(rr.ravel()):
        per_line = np.empty(n_lines)
        for n in range(n_lines):
            o = opt[n]
            left = inner < o  # left of the optimum the outer sample of a step is i
            rise = np.maximum(0.0, np.where(left, -1.0, 1.0) * np.diff(v[n]))
            outer = np.where(left, inner, inner + 1)
            within = np.abs(x[outer] - x[o]) <= q + tol
            walked = lengths[within].sum()
            per_line[n] = rise[within].sum() / walked if walked > 0 else 0.0
        out[q_i] = per_line.mean()
    return float(out[0]) if rr.ndim == 0 else out.reshape(rr.shape)


@dataclass(frozen=True)
class LandscapeProperties:
    """The five properties of one measure's landscape (see the functions of the same names).

    Distances in normalised px; ``do`` and ``ron`` in measure units per normalised px (for the
    measure turned higher-is-better).
    """

    acc: float
    do_radii: np.ndarray
    do: np.ndarray
    cr: float
    nom: float
    ron: float


def properties(values, positions, *, higher_is_better: bool = True,
               do_radii=None) -> LandscapeProperties:
    """ACC, DO(r), CR (``to="optimum"``, min over lines), NOM and RON (whole lines).

    ``do_radii`` defaults to every multiple of the step up to half the line.
    """
    v, x = _prepare(values, positions, higher_is_better)
    if do_radii is None:
        step = _step(x)
        do_radii = step * np.arange(1, (x.size - 1) // 2 + 1)
    do_radii = np.atleast_1d(np.asarray(do_radii, dtype=np.float64))
    return LandscapeProperties(
        acc=accuracy(v, x),
        do_radii=do_radii,
        do=np.atleast_1d(distinctiveness(v, x, do_radii)),
        cr=capture_range(v, x),
        nom=number_of_maxima(v, x),
        ron=risk_of_nonconvergence(v, x),
    )
