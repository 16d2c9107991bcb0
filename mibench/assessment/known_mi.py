"""Tasks with known mutual information: a pair of samples (or images) and its MI in nats.

A :class:`KnownMITask` draws ``n`` pairs ``(x_i, y_i)`` from a distribution whose MI has a
closed form (:mod:`mibench.assessment.closed_forms`), maps each variable into [0, 1] by a
strictly increasing map (:func:`mibench.assessment.maps.rescale`, so MI is unchanged), and gives
them as two arrays (:meth:`KnownMITask.sample`) or as two ``(1, 1, H, W)`` images that every
estimator can score (:meth:`KnownMITask.as_images`). Everything random comes from
``numpy.random.default_rng(seed)``.

Task names follow the project's variant syntax, ``family[option=value,...]`` with the options
sorted: ``gaussian[rho=0.75]``, ``student-asinh[nu=1,rho=0]``, ``image-channel[error=0.1,
image=camera,labels=4]``. A family is one sweep of a parameter (``student`` sweeps nu and rho
together): the tasks that :func:`~mibench.assessment.scoring.rank_agreement` compares.
:func:`tasks` lists the default set; :data:`SAMPLE_SIZES` and :data:`IMAGE_SIZES` the sample
sizes of issue 19.

Continuous families (i.i.d. pairs; as images, the pairs fill the pixels in sample order):

- ``gaussian``: standard bivariate normal, correlation rho; ``I = -1/2 ln(1 - rho^2)``.
- ``gaussian-<map>``: the same with a strictly increasing ``map`` (``cdf``, ``cube``, ``exp``,
  ``halfcube``, ``asinh``) applied to X and Y each: same MI, other NCC.
- ``student`` and ``student-<map>``: bivariate Student-t (``nu`` dof, scale correlation rho),
  ``I = -1/2 ln(1 - rho^2) + c(nu)`` (:func:`~mibench.assessment.closed_forms.student_t_mi`).
- ``uniform-noise``: ``X ~ U(0, 1)``, ``Y = X + U(-eps, eps)``; ``I = eps - ln(2 eps)`` for
  ``eps <= 1/2``, ``1/(4 eps)`` beyond.

The truth is that of the continuous pair. Min-max rescaling keeps heavy tails, so in a
float32 image the centre of a Student-t (nu = 1) sample is squeezed into few distinct values at
large n: the "long tails" stress of bmi for histogram estimators. An estimator that resolves
finer differences should be given ``as_images(..., dtype=torch.float64)`` or the ``rank``
rescaling (:meth:`KnownMITask.with_rescale`), whose values stay distinct.

Image families (:mod:`mibench.assessment.images`; the truth is that of the image at n pixels,
:meth:`KnownMITask.true_mi`):

- ``image-permutation``: an image in L grey levels and a random permutation of its levels;
  ``I = H(X)`` (a sweep over L).
- ``image-independent``: an image and the shuffled pixels of another; ``I = 0``.
- ``image-channel``: a label image and its relabelling through a symmetric channel;
  ``I`` from the joint table.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from mibench.assessment import images as im
from mibench.assessment.closed_forms import gaussian_mi, student_t_mi, uniform_noise_mi
from mibench.assessment.maps import MONOTONE_MAPS, RESCALINGS, rescale
from mibench.errors import check_choice
from mibench.seeds import is_seed

#: Sample sizes of the continuous tasks: the perfect squares nearest 10^3 .. 10^6 (32^2,
#: 100^2, 316^2, 1000^2), so that every sample is also a square image.
SAMPLE_SIZES = (1_024, 10_000, 99_856, 1_000_000)
#: Sizes of the image tasks: 64^2 .. 1024^2 pixels.
IMAGE_SIZES = tuple(s * s for s in (64, 128, 256, 512, 1024))

#: Correlations of the Gaussian families (issue 19; bmi's normal task is rho = 0.75).
GAUSSIAN_RHOS = (0.5, 0.75, 0.9, 0.99)
#: (nu, rho) of the Student-t families (bmi's 1x1 task is nu = 1, rho = 0).
STUDENT_PARAMS = ((1, 0.0), (1, 0.5), (1, 0.9), (3, 0.0), (3, 0.5), (3, 0.9))
#: Noise half-widths of ``uniform-noise`` (bmi's are 0.1 and 0.75).
NOISE_EPS = (0.1, 0.25, 0.5, 0.75, 1.5)
#: Grey levels of ``image-permutation`` (camera): I = H(X) grows with them, up to ~5 nats.
PERMUTATION_LEVELS = (4, 16, 64, 256)
#: Channel errors of ``image-channel`` (4 labels: I falls from ln 4 to 0 at error 3/4).
CHANNEL_ERRORS = (0.0, 0.1, 0.25, 0.5, 0.75)

Draw = Callable[[int, np.random.Generator], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class KnownMITask:
    """A pair of random variables with known MI, and how to draw samples of it.

    Attributes
    ----------
    name : str
        ``family[option=value,...]``, e.g. ``gaussian[rho=0.75]``.
    family : str
        The tasks compared by rank agreement (:func:`mibench.assessment.scoring.rank_agreement`).
    parameter : float
        The family's swept parameter (rho, eps, the channel error; 0 where none).
    true_mi_nats : float or None
        The MI in nats where it does not depend on n; None for the image tasks whose truth is
        that of the resized image: use :meth:`true_mi` always.
    draw : callable
        ``draw(n, rng) -> (x, y)``: n raw values of X and Y (float64), before rescaling.
    rescale : {"minmax", "rank", "none"}
        How :meth:`sample` maps each variable into [0, 1] (:func:`~.maps.rescale`).
    sizes : tuple of int
        The default sample sizes (values per variable, perfect squares).
    truth_at : callable or None
        ``truth_at(n)``: the MI at n values, where it depends on n.
    """

    name: str
    family: str
    parameter: float
    true_mi_nats: float | None
    draw: Draw = field(repr=False)
    rescale: str = "minmax"
    sizes: tuple[int, ...] = SAMPLE_SIZES
    truth_at: Callable[[int], float] | None = field(default=None, repr=False)

    def true_mi(self, n: int | None = None) -> float:
        """The true MI in nats of the pair as sampled with n values."""
        if self.truth_at is None:
            assert self.true_mi_nats is not None
            return self.true_mi_nats
        if n is None:
            raise ValueError(f"the truth of task {self.name!r} depends on n: pass n")
        return self.truth_at(n)

    def sample(self, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """``n`` values of X and of Y (float64 arrays in [0, 1]) drawn with ``seed``."""
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        if not is_seed(seed):
            raise ValueError(f"seed must be an integer in 0 .. 2^32 - 1, got {seed!r}")
        x, y = self.draw(n, np.random.default_rng(seed))
        return rescale(x, self.rescale), rescale(y, self.rescale)

    def as_images(self, n: int, seed: int,
                  dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`sample` as a fixed and a moving image, ``(1, 1, side, side)`` tensors with
        ``side^2 = n`` (``ValueError`` unless n is a perfect square), values in row-major order.
        """
        side = im.side_of(n)
        x, y = self.sample(n, seed)
        return tuple(torch.from_numpy(v.reshape(1, 1, side, side)).to(dtype) for v in (x, y))

    def with_rescale(self, how: str) -> KnownMITask:
        """The same task with another rescaling (``rank``: uniform marginals)."""
        check_choice("rescale", how, RESCALINGS)
        return replace(self, rescale=how)


def task_name(family: str, **options) -> str:
    """``family[key=value,...]`` with the options sorted and floats written shortest
    (``gaussian[rho=0.75]``)."""
    text = ",".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                    for k, v in sorted(options.items()))
    return f"{family}[{text}]"


@dataclass(frozen=True)
class Bound:
    """``func`` with its first arguments bound, compared by value (unlike
    :func:`functools.partial`): tasks stay equal after pickling (worker processes)."""

    func: Callable
    args: tuple

    def __call__(self, *more):
        return self.func(*self.args, *more)


def bind(func: Callable, *args) -> Bound:
    """``func`` with its first arguments ``args`` bound (a :class:`Bound`)."""
    return Bound(func, args)


# Draws: module-level functions, bound by value, so that tasks pickle and compare.

def _correlated_normal(rho: float, n: int, rng: np.random.Generator):
    z = rng.standard_normal((2, n))
    return z[0], rho * z[0] + math.sqrt(1 - rho * rho) * z[1]


def _apply(name: str | None, x: np.ndarray, y: np.ndarray):
    if name is None:
        return x, y
    f = MONOTONE_MAPS[name]
    return f(x), f(y)


def draw_gaussian(rho: float, map_name: str | None, n: int, rng: np.random.Generator):
    """Bivariate standard normal with correlation rho, then ``map_name`` on each variable."""
    return _apply(map_name, *_correlated_normal(rho, n, rng))


def draw_student(nu: float, rho: float, map_name: str | None, n: int,
                 rng: np.random.Generator):
    """Bivariate Student-t: a correlated normal pair divided by one ``sqrt(chi2_nu / nu)``
    per pair (the shared scale is what makes the pair dependent at rho = 0)."""
    x, y = _correlated_normal(rho, n, rng)
    scale = np.sqrt(rng.chisquare(nu, n) / nu)
    return _apply(map_name, x / scale, y / scale)


def draw_uniform_noise(eps: float, n: int, rng: np.random.Generator):
    """``X ~ U(0, 1)`` and ``Y = X + U(-eps, eps)``."""
    x = rng.random(n)
    return x, x + rng.uniform(-eps, eps, n)


def gaussian_task(rho: float, map_name: str | None = None) -> KnownMITask:
    """``gaussian[rho=...]`` or, with a map of :data:`~.maps.MONOTONE_MAPS`,
    ``gaussian-<map>[rho=...]``."""
    family = "gaussian" if map_name is None else f"gaussian-{map_name}"
    return KnownMITask(task_name(family, rho=float(rho)), family, rho, gaussian_mi(rho),
                       bind(draw_gaussian, rho, map_name))


def student_task(nu: float, rho: float, map_name: str | None = None) -> KnownMITask:
    """``student[nu=...,rho=...]`` or ``student-<map>[...]``; the parameter is rho."""
    family = "student" if map_name is None else f"student-{map_name}"
    return KnownMITask(task_name(family, nu=nu, rho=float(rho)), family, rho,
                       student_t_mi(nu, rho), bind(draw_student, nu, rho, map_name))


def uniform_noise_task(eps: float) -> KnownMITask:
    """``uniform-noise[eps=...]``."""
    return KnownMITask(task_name("uniform-noise", eps=float(eps)), "uniform-noise", eps,
                       uniform_noise_mi(eps), bind(draw_uniform_noise, eps))


def permutation_task(levels: int = 256, image: str = "camera") -> KnownMITask:
    """``image-permutation[image=...,levels=...]``: the image in ``levels`` grey levels and a
    permutation of its levels; the parameter is ``levels`` (more levels, more entropy)."""
    return KnownMITask(task_name("image-permutation", image=image, levels=levels),
                       "image-permutation", float(levels), None,
                       bind(im.draw_permutation, image, levels), rescale="none",
                       sizes=IMAGE_SIZES, truth_at=bind(im.level_entropy, image, levels))


def independent_task(fixed: str = "camera", moving: str = "retina") -> KnownMITask:
    """``image-independent[fixed=...,moving=...]``: I = 0."""
    return KnownMITask(task_name("image-independent", fixed=fixed, moving=moving),
                       "image-independent", 0.0, 0.0, bind(im.draw_independent, fixed, moving),
                       rescale="none", sizes=IMAGE_SIZES)


def channel_task(error: float, labels: int = 4, image: str = "camera") -> KnownMITask:
    """``image-channel[error=...,image=...,labels=...]``: a label image through a symmetric
    channel; the truth is exact at every n (the label frequencies are those at n pixels)."""
    return KnownMITask(task_name("image-channel", error=float(error), image=image, labels=labels),
                       "image-channel", error, None,
                       bind(im.draw_channel, image, labels, error), rescale="none",
                       sizes=IMAGE_SIZES, truth_at=bind(im.channel_mi, labels, error))


def _default_tasks() -> list[KnownMITask]:
    out = [gaussian_task(r) for r in GAUSSIAN_RHOS]
    out += [gaussian_task(r, m) for m in MONOTONE_MAPS for r in GAUSSIAN_RHOS]
    out += [student_task(nu, r, m) for m in (None, "asinh", "halfcube")
            for nu, r in STUDENT_PARAMS]
    out += [uniform_noise_task(e) for e in NOISE_EPS]
    out += [permutation_task(levels) for levels in PERMUTATION_LEVELS]
    out += [independent_task("camera", "retina"), independent_task("camera",
                                                                    "immunohistochemistry")]
    out += [channel_task(e) for e in CHANNEL_ERRORS]
    return out


def tasks(*families: str, rescale: str = "minmax") -> dict[str, KnownMITask]:
    """The default tasks by name, in a fixed order; only ``families`` if any are given.

    ``rescale`` applies to the continuous tasks (the image tasks keep their aligned levels).
    """
    check_choice("rescale", rescale, RESCALINGS)
    out = {}
    for t in _default_tasks():
        if families and t.family not in families:
            continue
        out[t.name] = t if t.rescale == "none" else t.with_rescale(rescale)
    if families and (unknown := set(families) - {t.family for t in out.values()}):
        raise ValueError(f"unknown task families: {', '.join(sorted(unknown))}")
    return out


def families() -> tuple[str, ...]:
    """The families of the default tasks, in order."""
    return tuple(dict.fromkeys(t.family for t in _default_tasks()))
