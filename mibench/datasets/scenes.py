"""The scenes the ``synthetic`` dataset renders its pairs from, and their sampling.

Both ship with scikit-image, so no download is needed:

``fundus``
    ``skimage.data.retina()`` (1411 x 1411 RGB). The fixed channel is the green one (where the
    vessels have most contrast), normalised to [0, 1] inside the circular field of view (FOV) by
    its 1 and 99.5 percentiles, and 0 outside; the moving channel is the same (the modality
    change is applied after sampling, in :mod:`mibench.datasets.synthetic`).
``histology``
    ``skimage.data.immunohistochemistry()`` (512 x 512 RGB), separated with
    ``skimage.color.rgb2hed``. The fixed channel is the haematoxylin (nuclei) one, as a
    haematoxylin-only stain would show it; the moving channel is a DAB stain with a haematoxylin
    counterstain, ``DAB + 0.4 * haematoxylin`` optical density (what an IHC slide shows); each
    rescaled to [0, 1] by its 0.5 and 99.5 percentiles. (The eosin channel of this image is
    empty. DAB alone shares too little with haematoxylin to localise anything: its MI with the
    fixed image falls only from 0.075 to 0.048 nats over a 16 px shift, against 0.15 to 0.10
    over 2 px for the counterstained rendering.)

A scene is sampled at source points ``(x, y)`` (column, row; ``(0, 0)`` the centre of the
top-left source pixel) by :func:`sample`, bilinearly after a Gaussian anti-aliasing blur;
:func:`level` gives the scene reduced by powers of two, so that small outputs are cheap.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from mibench.datasets.pixels import rescale_percentiles

FAMILIES = ("fundus", "histology")


@dataclass(frozen=True)
class Source:
    """A source scene: the fixed and moving channels, both float32 ``(H, W)`` in [0, 1].

    ``fov`` is the circular field of view ``(cx, cy, r)`` in source pixels, or None when the
    whole image is valid. ``fixed_background`` / ``moving_background`` fill pixels that map
    outside the source.
    """

    fixed: np.ndarray
    moving: np.ndarray
    fov: tuple[float, float, float] | None
    fixed_background: float
    moving_background: float


def border_median(channel: np.ndarray) -> float:
    """The median of the outermost pixels of ``(H, W)`` ``channel`` (each counted once)."""
    return float(np.median(np.concatenate(
        [channel[0], channel[-1], channel[1:-1, 0], channel[1:-1, -1]])))


@functools.cache
def source(family: str) -> Source:
    """Decode and prepare a family's source image (cached: the retina JPEG takes ~0.6 s)."""
    from skimage import color, data

    if family == "fundus":
        rgb = data.retina()
        # The FOV is a disc on a black background; its bounding box gives centre and radius.
        # Shrinking the radius by 1.5 % drops the dark vignetted rim (and the small notch).
        rows, cols = np.nonzero(rgb[..., 0] > 20)
        cx, cy = (cols.min() + cols.max()) / 2, (rows.min() + rows.max()) / 2
        radius = 0.985 * min(cols.max() - cols.min(), rows.max() - rows.min()) / 2
        ys, xs = np.mgrid[: rgb.shape[0], : rgb.shape[1]]
        inside = (xs - cx) ** 2 + (ys - cy) ** 2 <= radius**2
        green = rescale_percentiles(rgb[..., 1].astype(np.float32), (1.0, 99.5), inside)
        green[~inside] = 0.0
        return Source(green, green, (float(cx), float(cy), float(radius)), 0.0, 0.0)
    if family == "histology":
        hed = color.rgb2hed(data.immunohistochemistry())
        haematoxylin = rescale_percentiles(hed[..., 0])
        ihc = rescale_percentiles(hed[..., 2] + 0.4 * hed[..., 0])
        return Source(haematoxylin, ihc, None,
                      border_median(haematoxylin), border_median(ihc))
    raise ValueError(f"unknown family {family!r}")


@functools.cache
def level(family: str, times: int) -> Source:
    """The source reduced ``times`` times by 2 (Gaussian sigma 1, keep every other pixel).

    Pixel ``(x, y)`` of level ``l = times`` is pixel ``(2^l x, 2^l y)`` of the source, so
    coordinates scale exactly by ``2^-l``. Sampling a small output from the 1411-pixel retina
    is then cheap (the anti-aliasing blur is applied where it is small) with the same result for
    both images.
    """
    from scipy import ndimage

    if times == 0:
        return source(family)
    up = level(family, times - 1)

    def reduce(channel: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(ndimage.gaussian_filter(channel, 1.0)[::2, ::2])

    fixed = reduce(up.fixed)
    moving = fixed if up.moving is up.fixed else reduce(up.moving)
    fov = None if up.fov is None else tuple(v / 2 for v in up.fov)
    return Source(fixed, moving, fov, up.fixed_background, up.moving_background)


def source_shape(family: str) -> tuple[int, int]:
    """``(H, W)`` of a family's source image, in pixels."""
    # Known without decoding, so that planning (and pairs()) stays cheap.
    return {"fundus": (1411, 1411), "histology": (512, 512)}[family]


def sample(channel: np.ndarray, xy: np.ndarray, sigma: float, background: float
            ) -> tuple[np.ndarray, np.ndarray]:
    """Sample the smoothed ``channel`` at source points ``xy`` ``(N, 2)`` (x, y), bilinearly.

    Only the bounding box of the points (plus the Gaussian's reach) is smoothed, which equals
    smoothing the whole source there but costs far less for small crops.

    Returns
    -------
    values : ndarray (N,), float32
        ``background`` where a point lies outside the source.
    inside : ndarray (N,), bool
        Whether the point lies inside the source (between the outer pixel centres).
    """
    from scipy import ndimage

    height, width = channel.shape
    finite = np.isfinite(xy[:, 0])  # points behind the camera have both coordinates NaN
    inside = finite.copy()
    inside[finite] = ((xy[finite, 0] >= 0) & (xy[finite, 0] <= width - 1)
                      & (xy[finite, 1] >= 0) & (xy[finite, 1] <= height - 1))
    values = np.full(len(xy), background, dtype=np.float32)
    if not inside.any():
        return values, inside
    pts = xy[inside]
    reach = int(4.0 * sigma + 0.5) + 2
    c0 = max(int(np.floor(pts[:, 0].min())) - reach, 0)
    c1 = min(int(np.ceil(pts[:, 0].max())) + reach + 1, width)
    r0 = max(int(np.floor(pts[:, 1].min())) - reach, 0)
    r1 = min(int(np.ceil(pts[:, 1].max())) + reach + 1, height)
    window = channel[r0:r1, c0:c1]
    if sigma > 0:
        window = ndimage.gaussian_filter(window, sigma, mode="reflect", truncate=4.0)
    values[inside] = ndimage.map_coordinates(
        window, [pts[:, 1] - r0, pts[:, 0] - c0], order=1, mode="nearest")
    return values, inside


def in_fov(xy: np.ndarray, fov: tuple[float, float, float] | None) -> np.ndarray:
    if fov is None:
        return np.isfinite(xy[:, 0])
    cx, cy, r = fov
    with np.errstate(invalid="ignore"):
        return (xy[:, 0] - cx) ** 2 + (xy[:, 1] - cy) ** 2 <= r**2
