"""The registry's side of issue 18: the ``mibench_derived_methods`` hook, and the
``registration`` of an estimator spec checked when its plugin is registered."""

import re
import zlib

import pytest

from mibench.errors import UserError
from mibench.registry import Registry

ESTIMATOR = """
from mibench.specs import Registration


@hookimpl
def mibench_estimators():
    return [EstimatorSpec("tp-est", "d", "x:y", params=(Param("a", 1), Param("b", 2)),
                          registration={registration})]
"""


@pytest.mark.parametrize("registration, message", [
    ("None", r"registration must be a Registration, got None"),
    ('Registration(options="a")', r"registration options must be a tuple of option names"),
    ("Registration(options=('c',))", r"registration names 'c', which is not one of its "
                                      r"options \(a, b\)"),
    ("Registration(defaults=(Param('c', 1),))", r"registration names 'c'"),
    ("Registration(options=('a',), defaults=(Param('b', 3),))",
     r"registration redeclares 'b', which its options do not offer"),
    ("Registration(defaults=('a',))", r"registration defaults must be a tuple of Param"),
    ("Registration(differentiable_when=('a',))", r"registration differentiable_when must be "
                                                 r"a tuple of \(option, values\) pairs"),
])
def test_a_bad_registration_is_refused_in_one_line(write_plugin, registration, message):
    name = write_plugin(f"bad_reg_{zlib.crc32(registration.encode())}",
                        ESTIMATOR.format(registration=registration))
    with pytest.raises(UserError, match=rf"^plugin '{name}': estimator 'tp-est': {message}"):
        Registry([name], entry_points=False)


def test_a_good_registration_is_accepted(write_plugin):
    name = write_plugin("good_reg", ESTIMATOR.format(
        registration="Registration(options=('a',), defaults=(Param('a', 5),), "
                     "differentiable_when=(('a', (5,)),))"))
    method = Registry([name], entry_points=False).get("method", "tp-est")
    assert method.defaults()["a"] == 5 and "b" not in method.defaults()
    assert method.derived_from == "tp-est"


def test_a_plugin_may_derive_methods_too(write_plugin):
    name = write_plugin("more_derived", """
        @hookimpl
        def mibench_derived_methods(estimators):
            return [MethodSpec(f"twice-{e.name}", "d", "x:y") for e in estimators
                    if e.name in ("ncc", "mse")]
        """)
    methods = Registry([name], entry_points=False).specs("method")
    assert {"twice-ncc", "twice-mse"} <= set(methods)
    assert methods["twice-ncc"].plugin == name and methods["ncc"].plugin == "mibench.estimators"


@pytest.mark.parametrize("body, message", [
    ("raise RuntimeError('boom')", r"mibench_derived_methods\(\) raised RuntimeError: boom"),
    ("return None", r"mibench_derived_methods\(\) returned None; expected a list"),
    ("return ['x']", r"returned a str \('x'\) in its list; expected MethodSpec"),
    ("return [MethodSpec('Bad Name', 'd', 'x:y')]", r"method name 'Bad Name' is not valid"),
])
def test_a_broken_deriving_plugin_is_left_out(write_plugin, body, message):
    """Its derived methods are left out and the plugin is listed as broken; the rest works."""
    name = write_plugin(f"bad_derive_{zlib.crc32(body.encode())}", f"""
        @hookimpl
        def mibench_derived_methods(estimators):
            {body}
        """)
    registry = Registry([name], entry_points=False, strict=False)
    assert "nmi" in registry.specs("method")
    assert registry.broken[name]
    assert re.search(message, registry.broken[name])
