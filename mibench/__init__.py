"""mibench: a benchmark harness for mutual-information similarity measures and image registration.

Public API (mirrors the ``mibench`` command line):

- :func:`estimator`, :func:`method`, :func:`dataset` get a plugin by name with its options;
- :func:`run` runs a benchmark and returns a pandas DataFrame;
- :func:`list_plugins` lists every plugin and whether it can run here;
- :data:`hookimpl` and the spec classes are what a plugin needs (see :mod:`mibench.hookspecs`).
"""

from mibench.api import dataset, estimator, list_plugins, method, run
from mibench.errors import UserError
from mibench.hookspecs import hookimpl
from mibench.pairs import Pair, PairInfo
from mibench.specs import (
    DatasetSpec,
    EstimatorSpec,
    MethodSpec,
    Param,
    Registration,
    Requirement,
)
from mibench.transform import MatrixTransform, RegistrationOutput, Transform

__version__ = "0.1.0"

__all__ = [
    "DatasetSpec", "EstimatorSpec", "MatrixTransform", "MethodSpec", "Pair", "PairInfo", "Param",
    "Registration", "RegistrationOutput", "Requirement", "Transform", "UserError", "dataset",
    "estimator", "hookimpl", "list_plugins", "method", "run",
]
