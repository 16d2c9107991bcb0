"""Built-in similarity measures, registered through the ``mibench_estimators`` hook."""

from mibench.hookspecs import hookimpl
from mibench.specs import EstimatorSpec


@hookimpl
def mibench_estimators():
    return [
        EstimatorSpec(
            name="mse",
            description="Mean squared intensity difference over the masked pixels and channels.",
            factory="mibench.estimators.basic:mse",
            higher_is_better=False,
        ),
        EstimatorSpec(
            name="ncc",
            description="Global normalised cross-correlation (channels centred separately, "
            "pooled); sign kept, constant image gives 0.",
            factory="mibench.estimators.basic:ncc",
            higher_is_better=True,
        ),
    ]
