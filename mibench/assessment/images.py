"""Image tasks with known MI, built from the images shipped with scikit-image.

The pixels of a task are its population: the pair ``(X_i, Y_i)`` at a pixel ``i`` drawn
uniformly. An image is resized to ``side x side`` (``n = side^2`` values) by nearest-neighbour
sampling, which keeps its 8-bit grey levels (no new level is interpolated), so the truth is exact
for the image the estimator sees. Values are ``level / (L - 1)`` for L levels (``label / (K -
1)`` for labels): levels stay aligned with L bins over [0, 1] (level ``k`` falls in bin ``k``).

``skimage.data`` is imported lazily, only by :func:`grey_image`: scikit-image is a dependency
of mibench and its images need no download (``camera``, ``retina``, ``immunohistochemistry``).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from mibench.assessment.closed_forms import entropy, mi_from_table, symmetric_channel
from mibench.errors import check_choice

#: Images usable by the image tasks (all offline in scikit-image).
IMAGES = ("camera", "retina", "immunohistochemistry")
#: Luma weights of ``skimage.color.rgb2gray`` (ITU-R BT.709).
_LUMA = np.array([0.2125, 0.7154, 0.0721])


@lru_cache(maxsize=len(IMAGES))
def grey_image(name: str) -> np.ndarray:
    """The named scikit-image picture as 8-bit grey levels (read-only ``uint8``, ``(H, W)``)."""
    check_choice("image", name, IMAGES)
    from skimage import data

    img = getattr(data, name)()
    if img.ndim == 3:
        img = np.rint(img[..., :3] @ _LUMA).clip(0, 255).astype(np.uint8)
    img.setflags(write=False)
    return img


def side_of(n: int) -> int:
    """``sqrt(n)`` for a perfect square ``n`` (the image tasks' sizes), else ``ValueError``."""
    side = math.isqrt(n) if n > 0 else 0
    if side < 1 or side * side != n:
        raise ValueError(f"image tasks need n = side^2 values, got n = {n}")
    return side


def resized_levels(name: str, n: int) -> np.ndarray:
    """The grey levels of image ``name`` at ``side x side = n`` pixels (nearest neighbour:
    pixel centres map to source pixels, so levels are kept), row-major, ``uint8`` of length n."""
    img = grey_image(name)
    side = side_of(n)
    rows = ((np.arange(side) + 0.5) * img.shape[0] / side).astype(np.intp)
    cols = ((np.arange(side) + 0.5) * img.shape[1] / side).astype(np.intp)
    return img[np.ix_(rows, cols)].ravel()


def quantised_levels(name: str, n: int, levels: int = 256) -> np.ndarray:
    """:func:`resized_levels` merged into ``levels`` equal ranges of 0..255 (``k * levels //
    256``): labels 0 .. levels-1, so fewer levels give a smaller entropy."""
    if not 2 <= levels <= 256:
        raise ValueError(f"levels must be in 2 .. 256, got {levels}")
    return resized_levels(name, n).astype(np.intp) * levels // 256


def level_entropy(name: str, levels: int, n: int) -> float:
    """``H(X)`` in nats of the ``levels`` grey levels of image ``name`` at n pixels: the MI of
    the image and any one-to-one relabelling of its levels (:func:`draw_permutation`)."""
    return entropy(np.bincount(quantised_levels(name, n, levels), minlength=levels) / n)


def draw_permutation(image: str, levels: int, n: int, rng: np.random.Generator):
    """The image in ``levels`` grey levels and the same image with its levels passed through a
    random permutation (a look-up table drawn from ``rng``); values ``level / (levels - 1)``.
    ``I = H(X)``, and the plug-in MI with bins aligned to the levels equals it exactly (the
    joint histogram is a permuted diagonal)."""
    q = quantised_levels(image, n, levels)
    lut = rng.permutation(levels)
    return q / (levels - 1), lut[q] / (levels - 1)


def draw_independent(fixed: str, moving: str, n: int, rng: np.random.Generator):
    """Image ``fixed`` and the pixels of image ``moving`` shuffled by a random permutation:
    the pixel pair is independent, ``I = 0`` (to O(1/n): the shuffle draws without
    replacement). The plug-in MI of it measures the estimator's bias alone."""
    x = resized_levels(fixed, n)
    y = rng.permutation(resized_levels(moving, n))
    return x / 255.0, y / 255.0


def balanced_labels(image: str, labels: int, n: int) -> np.ndarray:
    """A label image: the pixels of ``image`` sorted by grey level (ties by position) and cut
    into ``labels`` runs of equal size (sizes differ by at most 1 when labels does not divide n)."""
    levels = resized_levels(image, n)
    out = np.empty(n, dtype=np.intp)
    out[np.argsort(levels, kind="stable")] = (np.arange(n) * labels) // n
    return out


def label_frequencies(labels: int, n: int) -> np.ndarray:
    """The exact frequencies of the labels of :func:`balanced_labels` at n pixels."""
    return np.bincount((np.arange(n) * labels) // n, minlength=labels) / n


def channel_mi(labels: int, error: float, n: int) -> float:
    """MI in nats of :func:`draw_channel`'s pair: from the joint table ``p(l) C[l, m]``."""
    joint = label_frequencies(labels, n)[:, None] * symmetric_channel(labels, error)
    return mi_from_table(joint)


def draw_channel(image: str, labels: int, error: float, n: int, rng: np.random.Generator):
    """A label image and its noisy relabelling through :func:`symmetric_channel`: each pixel's
    label is replaced, with probability ``error``, by one of the other labels at random.
    Values ``label / (labels - 1)``."""
    lab = balanced_labels(image, labels, n)
    flip = rng.random(n) < error
    # Adding 1..K-1 modulo K gives each other label with probability 1/(K-1).
    other = (lab + rng.integers(1, labels, size=n)) % labels
    noisy = np.where(flip, other, lab)
    return lab / (labels - 1), noisy / (labels - 1)
