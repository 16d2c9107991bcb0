"""Pixel operations the datasets share: working-scale resampling and intensity normalisation.

Working scale. :func:`downscale` resamples so that working pixel ``(x, y)`` is native pixel
``(x / s, y / s)`` *exactly* (the top-left pixel centres coincide), so that landmarks scale by a
plain factor, ``p_work = s * p_native``, and errors and warped landmarks go back to native pixels
by multiplying with ``1 / s`` (``Pair.native_scale``), with no half-pixel offset. Points are
``(x, y)`` = (column, row), ``(0, 0)`` the centre of the top-left pixel.
"""

from __future__ import annotations

import numpy as np


def working_shape(shape: tuple[int, int], scale: float) -> tuple[int, int]:
    """``(H, W)`` of an image of native ``shape`` at working scale ``scale`` (pixel counts
    rounded, at least 1)."""
    return tuple(max(1, int(round(n * scale))) for n in shape[:2])


def downscale(image: np.ndarray, scale: float, *, order: int = 1) -> np.ndarray:
    """Resample ``image`` to working scale ``scale`` (<= 1) with anti-aliasing.

    Working pixel ``(x, y)`` samples native position ``(x / scale, y / scale)``, so landmarks
    scale by ``scale`` exactly (see the module docstring). A Gaussian of sigma
    ``(1 / scale - 1) / 2`` native pixels (scikit-image's anti-aliasing default) is applied
    first; samples past the last native pixel (at most one working pixel) repeat the edge.

    Parameters
    ----------
    image : ndarray
        ``(H, W)`` or ``(H, W, C)`` float in [0, 1], or a bool ``(H, W)`` mask (pass
        ``order=0`` for masks: nearest sampling, no blur).
    scale : float
        Working pixels per native pixel, in (0, 1].
    order : int
        Spline order of the interpolation (1: bilinear; 0: nearest, no anti-aliasing).

    Returns
    -------
    ndarray
        Shape :func:`working_shape` ``(image.shape, scale)`` (plus channels); float32 in
        [0, 1], or bool for a bool input. ``scale == 1`` returns ``image`` itself.
    """
    from scipy import ndimage

    if not 0 < scale <= 1:
        raise ValueError(f"scale must be in (0, 1], got {scale}")
    if scale == 1:
        return image
    out_shape = working_shape(image.shape, scale)
    step = 1.0 / scale
    is_bool = image.dtype == bool
    src = image.astype(np.float32)
    sigma = (step - 1.0) / 2.0 if order > 0 else 0.0

    def one(channel: np.ndarray) -> np.ndarray:
        if sigma > 0:
            channel = ndimage.gaussian_filter(channel, sigma, mode="nearest")
        return ndimage.affine_transform(channel, [step, step], output_shape=out_shape,
                                        order=order, mode="nearest", prefilter=False)

    if src.ndim == 3:
        out = np.stack([one(src[..., c]) for c in range(src.shape[-1])], axis=-1)
    else:
        out = one(src)
    if is_bool:
        return out > 0.5
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def rescale_percentiles(values: np.ndarray, percentiles: tuple[float, float] = (0.5, 99.5),
                        where: np.ndarray | None = None) -> np.ndarray:
    """Map two percentiles of ``values`` to 0 and 1, clipping outside: float32 in [0, 1].

    Parameters
    ----------
    values : ndarray
        Intensities of any float dtype and shape (the arithmetic is done in that dtype).
    percentiles : (float, float)
        The percentiles (0-100) that become 0 and 1.
    where : ndarray of bool, optional
        Only these values count for the percentiles (a field of view); all are mapped.

    Returns
    -------
    ndarray
        float32, the shape of ``values``; all 0 when the two percentiles are equal (a
        constant image has no contrast to stretch).
    """
    sample = values if where is None else values[where]
    lo, hi = np.percentile(sample, percentiles)
    if not hi > lo:
        return np.zeros(values.shape, np.float32)
    return np.clip((values - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)
