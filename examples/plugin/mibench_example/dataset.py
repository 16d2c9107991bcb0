"""The ``example-shapes`` dataset: procedural ellipses under a known translation.

Pair ``k`` draws from ``numpy.random.default_rng([seed, k])``: ``shapes`` ellipses (centre,
semi-axes, angle, grey level) on a dark background, and a translation ``d`` with each component
uniform in ``[-max_shift, max_shift]``. The scene is continuous (each ellipse has a smooth
edge), so the moving image is exact: ``moving(q) = g(scene(q - d))`` with ``g`` the identity or
the inversion ``1 - v``. The fixed -> moving transform is ``p -> p + d``; the landmarks are the
ellipse centres ``c`` (fixed) and ``c + d`` (moving).
"""

from __future__ import annotations

import numpy as np

from mibench import MatrixTransform, Pair, PairInfo

#: Share of the image side kept clear of shape centres at each border (besides the shift).
BORDER = 0.15


class ShapesDataset:
    """See the module docstring; options as the ``example-shapes`` spec (which declares their
    bounds: mibench has checked each value before this runs)."""

    def __init__(self, pairs: int, size: int, shapes: int, max_shift: float, invert: bool,
                 seed: int):
        # A condition between two options is not a bound: checked here, a ValueError.
        if 2 * (max_shift + BORDER * size) >= size - 1:
            raise ValueError(f"max_shift must be < {(1 - 2 * BORDER) * size / 2 - 0.5:g} for "
                             f"size {size} (the shifted shapes must stay inside the image), got "
                             f"{max_shift}")
        self.n, self.size, self.shapes = pairs, size, shapes
        self.max_shift, self.invert, self.seed = max_shift, invert, seed

    def pairs(self) -> list[PairInfo]:
        return [PairInfo(f"shapes-{k:03d}", {"invert": self.invert}) for k in range(self.n)]

    def _scene(self, rng: np.random.Generator):
        s = self.size
        margin = self.max_shift + BORDER * s
        return [(rng.uniform(margin, s - 1 - margin, size=2), rng.uniform(0.05, 0.15, size=2) * s,
                 rng.uniform(0, np.pi), rng.uniform(0.3, 1.0)) for _ in range(self.shapes)]

    def _render(self, scene, shift: np.ndarray) -> np.ndarray:
        ys, xs = np.mgrid[0:self.size, 0:self.size].astype(np.float64)
        image = np.full((self.size, self.size), 0.1)
        for centre, axes, angle, level in scene:
            x, y = xs - shift[0] - centre[0], ys - shift[1] - centre[1]
            u = (np.cos(angle) * x + np.sin(angle) * y) / axes[0]
            v = (-np.sin(angle) * x + np.cos(angle) * y) / axes[1]
            # Signed distance-like value, smoothed over about a pixel at the edge.
            inside = 1 / (1 + np.exp((np.sqrt(u * u + v * v) - 1) * min(axes) / 0.5))
            image = image * (1 - inside) + level * inside
        return image

    def load(self, pair_id: str) -> Pair:
        k = int(pair_id.rsplit("-", 1)[1])
        rng = np.random.default_rng([self.seed, k])
        scene = self._scene(rng)
        shift = rng.uniform(-self.max_shift, self.max_shift, size=2)
        fixed = self._render(scene, np.zeros(2))
        moving = self._render(scene, shift)
        if self.invert:
            moving = 1 - moving
        centres = np.array([c for c, *_ in scene])
        truth = MatrixTransform([[1, 0, shift[0]], [0, 1, shift[1]], [0, 0, 1]])
        return Pair(pair_id, fixed.astype(np.float32), moving.astype(np.float32),
                    centres, truth.fixed_to_moving(centres),
                    meta={"invert": self.invert, "true_transform": truth.matrix.tolist()})


def load(data_dir, *, pairs, size, shapes, max_shift, invert, seed):
    """Factory of the ``example-shapes`` dataset (``data_dir`` is unused); the options as the
    spec in :mod:`mibench_example.plugin` declares them."""
    return ShapesDataset(pairs, size, shapes, max_shift, invert, seed)
