"""Assessing the similarity measures themselves: tasks with known mutual information.

The foundation of ``mibench estimators accuracy`` (issue 19); see
``docs/estimator_accuracy.md``.

- :mod:`.known_mi`: :class:`KnownMITask` (``sample(n, seed)``, ``as_images(n, seed)``,
  ``true_mi(n)``) and the default task set :func:`tasks`.
- :mod:`.closed_forms`: the MI in nats of each family; :func:`plugin_bias`.
- :mod:`.maps`: the maps that keep MI (monotone maps, bmi's half-cube, asinh and spiral) and
  the rescalings into [0, 1].
- :mod:`.images`: the image tasks (scikit-image's pictures).
- :mod:`.scoring`: bias, SD, RMSE, ``log2(I_hat / I)`` and the rank-agreement rule.

This package imports only numpy, scipy, torch, :mod:`mibench.errors` and :mod:`mibench.seeds`
(and scikit-image's data lazily): never the run machinery.
"""

from mibench.assessment.closed_forms import (
    gaussian_mi,
    mi_from_table,
    plugin_bias,
    student_t_mi,
    uniform_noise_mi,
)
from mibench.assessment.known_mi import (
    IMAGE_SIZES,
    SAMPLE_SIZES,
    KnownMITask,
    families,
    task_name,
    tasks,
)
from mibench.assessment.scoring import (
    Score,
    bias,
    log2_ratio,
    rank_agreement,
    rmse,
    score,
    sd,
)

__all__ = [
    "IMAGE_SIZES",
    "SAMPLE_SIZES",
    "KnownMITask",
    "Score",
    "bias",
    "families",
    "gaussian_mi",
    "log2_ratio",
    "mi_from_table",
    "plugin_bias",
    "rank_agreement",
    "rmse",
    "score",
    "sd",
    "student_t_mi",
    "task_name",
    "tasks",
    "uniform_noise_mi",
]
