"""Audit of the plugin contract from a third-party author's side: mistakes in a spec's fields, in
a ``Param`` declaration, in a ``Requirement`` or in a factory reference are one line naming the
plugin (refused at registration, or a ``UserError`` when the plugin is used), never a traceback
from mibench's own code; the example plugin refuses option values its code cannot use."""

import importlib

import numpy as np
import pytest
from helpers.plugins import SPEC, fake_entry_points, method_plugin, plugin_cli

import mibench
from mibench import Param, Requirement
from mibench.errors import UserError
from mibench.registry import Registry


def spec_plugin(spec: str) -> str:
    return f"""
        from mibench import Param, Requirement

        @hookimpl
        def mibench_methods():
            return [{spec}]
        """


# --------------------------------------------------------------------------- spec fields

BAD_SPECS = {
    # The classic: a missing trailing comma makes params one Param, not a tuple of them.
    "one-param": ('MethodSpec("mine", "d", "x:y", params=(Param("n", 1)))',
                  r"method 'mine': params must be a tuple of Param, got a Param "
                  r"\(write params=\(Param\(\.\.\.\),\)\)"),
    "param-str": ('MethodSpec("mine", "d", "x:y", params=("n",))',
                  r"method 'mine': params must be a tuple of Param, got a str \('n'\) in it"),
    "dup-param": ('MethodSpec("mine", "d", "x:y", params=(Param("n", 1), Param("n", 2)))',
                  r"method 'mine': option 'n' is declared twice"),
    "one-req": ('MethodSpec("mine", "d", "x:y", requires=Requirement(module="numpy"))',
                r"method 'mine': requires must be a tuple of Requirement, got a Requirement"),
    "no-colon": ('MethodSpec("mine", "d", "mymodule")',
                 r"method 'mine': factory 'mymodule' is not valid: give "
                 r"\"package.module:function\" or a callable"),
    "none-factory": ('MethodSpec("mine", "d", None)',
                     r"method 'mine': factory None is not valid"),
    # Flags are bools: the string "False" would read as true.
    "str-default": ('MethodSpec("mine", "d", "x:y", default="False")',
                    r"method 'mine': default must be True or False, got a str \('False'\)"),
    "int-baseline": ('MethodSpec("mine", "d", "x:y", baseline=1)',
                     r"method 'mine': baseline must be True or False, got an int \(1\)"),
    "none-reference": ('MethodSpec("mine", "d", "x:y", preferred_reference=None)',
                       r"method 'mine': preferred_reference must be True or False, got None"),
}


@pytest.mark.parametrize("case", sorted(BAD_SPECS))
def test_spec_field_mistakes_refused_at_registration(case, write_plugin):
    spec, message = BAD_SPECS[case]
    name = write_plugin(f"bad_spec_{case.replace('-', '_')}", spec_plugin(spec))
    with pytest.raises(UserError, match=rf"^plugin '{name}': {message}") as err:
        Registry([name], entry_points=False)
    assert "\n" not in str(err.value)
    # Listing shows it as a broken plugin next to everything else (it used to be a traceback).
    rows = mibench.list_plugins([name])
    assert rows[-1]["kind"] == "plugin" and rows[-1]["name"] == name
    assert not any(r.get("plugin") == name for r in rows)


def test_good_spec_fields_still_accepted(write_plugin):
    name = write_plugin("good_spec_fields", spec_plugin(
        'MethodSpec("mine", "d", "x.y:z.w", params=[Param("n", 1), Param("m", 2.0)], '
        'requires=[Requirement(module="numpy")])'))
    spec = Registry([name], entry_points=False).get("method", "mine")
    assert spec.defaults() == {"n": 1, "m": 2.0} and spec.unavailable_reason() is None


# --------------------------------------------------------------------------- Param declarations

@pytest.mark.parametrize("kwargs, error, message", [
    (dict(default=None, type="int"), TypeError, r"option 'n': type must be a type .*, got 'int'"),
    (dict(default=1, choices=3), TypeError, r"option 'n': choices must be a tuple of values"),
    (dict(default="ab", choices="abc"), TypeError, r"option 'n': choices must be a tuple"),
    (dict(default="a", choices=("b", "c")), ValueError,
     r"option 'n': the default 'a' is not one of its choices \(b, c\)"),
    (dict(default="abc", type=int), TypeError,
     r"option 'n': the default 'abc' is not an int"),
])
def test_bad_param_declarations_rejected(kwargs, error, message):
    with pytest.raises(error, match=message):
        Param("n", **kwargs)


def test_good_param_declarations_still_accepted():
    assert Param("n", None, type=int).check(3) == 3
    assert Param("x", 1, type=float).check(2) == 2.0
    assert Param("mode", "a", choices=("a", "b")).check("b") == "b"
    assert Param("mode", None, choices=("a", "b"), type=str).check("a") == "a"
    assert Param("k", 2, choices=[1, 2, 3]).check(3) == 3


def test_bad_param_in_a_plugin_is_one_line(write_plugin):
    name = write_plugin("bad_param_choices", spec_plugin(
        'MethodSpec("mine", "d", "x:y", params=(Param("n", 1, choices=3),))'))
    with pytest.raises(UserError, match=rf"^plugin '{name}': mibench_methods\(\) raised "
                                        r"TypeError: option 'n': choices must be"):
        Registry([name], entry_points=False)


# --------------------------------------------------------------------------- requirements

def test_requirement_on_a_submodule_of_a_missing_package():
    """``find_spec("pkg.sub")`` imports ``pkg``; without it the requirement is missing (it was a
    ModuleNotFoundError from ``mibench list``)."""
    assert Requirement(module="no_such_pkg_xyz.sub").missing() == \
        "needs the Python package 'no_such_pkg_xyz.sub'"
    assert Requirement(module="numpy.linalg").missing() is None


# --------------------------------------------------------------------------- factories

def test_factory_that_cannot_be_loaded_is_a_user_error(write_plugin, tmp_path):
    name = write_plugin("bad_factories", """
        @hookimpl
        def mibench_estimators():
            return [EstimatorSpec("bf-est", "d", f"{__name__}:not_here")]

        @hookimpl
        def mibench_methods():
            return [MethodSpec("bf-method", "d", "no_such_module_xyz.core:register")]

        @hookimpl
        def mibench_datasets():
            return [DatasetSpec("bf-ds", "d", "no_such_module_xyz.data:load",
                                needs_data_dir=False)]
        """)
    a = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    with pytest.raises(UserError, match=rf"^estimator 'bf-est' \(plugin '{name}'\): cannot "
                                        rf"load its factory '{name}:not_here': AttributeError"):
        mibench.estimator("bf-est", plugins=[name])(a, a)
    with pytest.raises(UserError, match=r"^method 'bf-method' \(plugin .*\): cannot load its "
                                        r"factory .*ModuleNotFoundError: No module named"):
        mibench.method("bf-method", plugins=[name])
    with pytest.raises(UserError, match=r"^dataset 'bf-ds' \(plugin .*\): cannot load"):
        mibench.dataset("bf-ds", plugins=[name])
    out = plugin_cli("run", "--plugin", name, "-d", "bf-ds", "-m", "identity", "--workers", "0",
              "--out", str(tmp_path / "run"), pythonpath=tmp_path)
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip().splitlines() == [
        f"mibench: error: dataset 'bf-ds' (plugin '{name}'): cannot load its factory "
        "'no_such_module_xyz.data:load': ModuleNotFoundError: No module named "
        "'no_such_module_xyz'"]


# --------------------------------------------------------------------------- entry points

def test_two_entry_points_of_one_module_do_not_break_mibench(write_plugin, monkeypatch):
    """Two entry points naming one module (one package declaring it twice, or pointing at a
    module that is already registered) made pluggy raise from every mibench command."""
    name = write_plugin("ep_twice", """
        @hookimpl
        def mibench_methods():
            return [MethodSpec("meth-twice", "d", "x:y")]
        """)
    fake_entry_points(monkeypatch, ("one", name), ("two", name), ("three", "mibench.methods"))
    reg = Registry([name])
    assert reg.get("method", "meth-twice").plugin == "one" and not reg.broken
    assert reg.register(importlib.import_module(name)) == name


def test_two_packages_with_the_same_entry_point_name_both_load(write_plugin, monkeypatch):
    """Each package picks its entry-point name; the second one of a name was dropped without a
    word (not listed, not broken)."""
    first = write_plugin("ep_same_a", """
        @hookimpl
        def mibench_methods():
            return [MethodSpec("meth-a", "d", "x:y")]
        """)
    second = write_plugin("ep_same_b", """
        @hookimpl
        def mibench_methods():
            return [MethodSpec("meth-b", "d", "x:y")]
        """)
    fake_entry_points(monkeypatch, ("plugin", first), ("plugin", second))
    reg = Registry()
    assert reg.get("method", "meth-a").plugin == "plugin"
    assert reg.get("method", "meth-b").plugin == second
    assert not reg.broken


def test_a_plugin_name_already_taken_is_one_line(write_plugin):
    name = write_plugin("taken_name", method_plugin(f"[{SPEC}]"))
    reg = Registry(entry_points=False)
    with pytest.raises(UserError, match=r"^plugin 'mibench.methods': the name is already taken "
                                        r"by another plugin$"):
        reg.register(importlib.import_module(name), name="mibench.methods")
