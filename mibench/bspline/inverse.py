"""Inverting the B-spline displacement: solve ``q + u(q) = m`` for ``q``.

Used by :meth:`mibench.bspline.BSplineTransform.moving_to_fixed`; conventions:
:mod:`mibench.bspline`.
"""

from __future__ import annotations

import numpy as np

from mibench.bspline.grid import ControlGrid, evaluate


def newton_solve(coefficients: np.ndarray, grid: ControlGrid, m: np.ndarray, q: np.ndarray,
                 tolerance: float, iterations: int, damped: bool = False) -> np.ndarray:
    """Solve ``q + u(q) = m`` in place from the start ``q`` ``(K, n)``; returns which points
    converged (``|q + u(q) - m| <= tolerance``). ``damped`` halves a step (up to 10 times)
    until it lowers the residual; a point whose step cannot is given up, as is one with a
    singular Jacobian."""
    n = grid.ndim
    done = np.zeros(len(m), dtype=bool)
    alive = np.isfinite(m).all(axis=1) & np.isfinite(q).all(axis=1)
    for _ in range(iterations + 1):
        todo = alive & ~done
        if not todo.any():
            break
        u, du = evaluate(coefficients, grid, q[todo], jacobian=True)
        r = q[todo] + u - m[todo]
        norm = np.linalg.norm(r, axis=1)
        conv = norm <= tolerance
        idx = np.flatnonzero(todo)
        done[idx[conv]] = True
        step_idx, r, norm, jac = idx[~conv], r[~conv], norm[~conv], np.eye(n) + du[~conv]
        det = np.linalg.det(jac)
        good = np.isfinite(det) & (np.abs(det) > 1e-12)
        alive[step_idx[~good]] = False
        if not good.any():
            continue
        step_idx, r, norm = step_idx[good], r[good], norm[good]
        step = np.linalg.solve(jac[good], r[..., None])[..., 0]
        if not damped:
            q[step_idx] -= step
            continue
        scale = np.ones(len(step_idx))
        pending = np.ones(len(step_idx), dtype=bool)
        for _halving in range(11):
            trial = q[step_idx[pending]] - scale[pending, None] * step[pending]
            rt = trial + evaluate(coefficients, grid, trial) - m[step_idx[pending]]
            better = np.linalg.norm(rt, axis=1) < norm[pending]
            which = np.flatnonzero(pending)
            q[step_idx[which[better]]] = trial[better]
            pending[which[better]] = False
            scale[pending] /= 2
            if not pending.any():
                break
        alive[step_idx[pending]] = False
    return done


def lattice_start(coefficients: np.ndarray, grid: ControlGrid, m: np.ndarray) -> np.ndarray:
    """For each point of ``m`` ``(K, n)``, the lattice point ``q`` (over the grid, a quarter
    spacing apart) whose ``q + u(q)`` lies nearest: a start for Newton far from ``q = m``."""
    from scipy.spatial import cKDTree

    o, h = np.asarray(grid.origin), np.asarray(grid.spacing)
    high = o + (np.asarray(grid.shape) - 1) * h
    step = h.min() / 4
    axes = [np.arange(lo, hi + step / 2, step) for lo, hi in zip(o, high, strict=True)]
    lattice = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, len(o))
    images = lattice + evaluate(coefficients, grid, lattice)
    _, nearest = cKDTree(images).query(m)
    return lattice[nearest].copy()
