"""Built-in similarity measures, registered through the ``mibench_estimators`` hook."""

from mibench.hookspecs import hookimpl
from mibench.specs import EstimatorSpec


@hookimpl
def mibench_estimators():
    return []
