"""Built-in datasets, registered through the ``mibench_datasets`` hook."""

from mibench.hookspecs import hookimpl
from mibench.specs import DatasetSpec


@hookimpl
def mibench_datasets():
    return []
