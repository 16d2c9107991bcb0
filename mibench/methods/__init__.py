"""Built-in registration methods, registered through the ``mibench_methods`` hook like any plugin.

Factories are given as ``"module:function"`` strings so that listing imports nothing heavy.
"""

from mibench.hookspecs import hookimpl
from mibench.specs import MethodSpec


@hookimpl
def mibench_methods():
    return [
        MethodSpec(
            name="identity",
            description="No registration: the identity transform (scores the initial error).",
            factory="mibench.methods.identity:register",
            default=True,
        ),
    ]
