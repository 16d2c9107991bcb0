"""A plugin author's mistakes are one line naming the plugin, never a traceback, and one broken
plugin does not break ``mibench list``: hooks returning the wrong thing, raising or taking
arguments; misspelt or unmarked hooks; mistakes in a spec's fields or a ``Param`` declaration;
invalid or clashing names; factories that cannot be loaded; estimators breaking their return
contract; plugins that failed to load behind an unknown name; and the error policy's boundary
(a plugin's ``ValueError`` becomes one ``UserError`` line). Test plugins are modules written to
``tmp_path``."""

import importlib
import json

import numpy as np
import pytest
import torch
from helpers.plugins import ROOT, SPEC, fake_entry_points, method_plugin, plugin_cli

import mibench
from mibench.errors import UserError
from mibench.registry import Registry

# --------------------------------------------------------------------------- hooks (item 1, 3)

BAD_HOOKS = {
    "single": (method_plugin(SPEC),
               r"mibench_methods\(\) returned a MethodSpec; expected a list of MethodSpec "
               r"\(return \[spec\]\)"),
    "wrongkind": ("""
        @hookimpl
        def mibench_estimators():
            return [MethodSpec("mine", "d", "x:y")]
        """, r"mibench_estimators\(\) returned a MethodSpec in its list; expected "
             r"EstimatorSpec; a MethodSpec goes in mibench_methods\(\)"),
    "dict": (method_plugin('{"name": "x", "factory": "x:y"}'),
             r"mibench_methods\(\) returned a dict; expected a list of MethodSpec"),
    "strings": (method_plugin('["x:y"]'),
                r"mibench_methods\(\) returned a str \('x:y'\) in its list; expected MethodSpec"),
    "none": (method_plugin("None"),
             r"mibench_methods\(\) returned None; expected a list of MethodSpec "
             r"\(return \[\] to provide none\)"),
    "raises": ("""
        @hookimpl
        def mibench_methods():
            raise RuntimeError("boom in hook")
        """, r"mibench_methods\(\) raised RuntimeError: boom in hook"),
    "extraarg": (method_plugin(f"[{SPEC}]", "config"),
                 r"invalid hook implementation: .*mibench_methods\(config\).*"
                 r"mibench hooks take no arguments"),
    "typo": ("""
        @hookimpl
        def mibench_method():
            return []
        """, r"unknown hook mibench_method \(did you mean mibench_methods\?\)"),
    "nomarker": ("""
        def mibench_methods():
            return []
        """, r"mibench_methods is not marked with @mibench.hookimpl"),
}


@pytest.mark.parametrize("case", sorted(BAD_HOOKS))
def test_bad_hook_is_one_line_naming_plugin_and_hook(case, write_plugin):
    body, message = BAD_HOOKS[case]
    name = write_plugin(f"bad_hook_{case}", body)
    with pytest.raises(UserError, match=rf"^plugin '{name}': {message}") as err:
        Registry([name], entry_points=False)
    assert "\n" not in str(err.value)


def test_unmarked_helpers_and_optional_hooks_are_fine(write_plugin):
    name = write_plugin("fine_helpers", f"""
        import pluggy
        optional = pluggy.HookimplMarker("mibench")(optionalhook=True)

        def mibench_helper():  # not hook-like: a helper of the plugin's own
            return 1

        @optional
        def mibench_future_hook():  # a hook of a later mibench: optional, so not an error
            return []

        @hookimpl
        def mibench_methods():
            return [{SPEC}]
        """)
    assert Registry([name], entry_points=False).get("method", "mine").plugin == name


# --------------------------------------------------------------------------- spec fields and
# Param declarations

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
    name = write_plugin(f"bad_spec_{case.replace('-', '_')}", method_plugin(f"[{spec}]"))
    with pytest.raises(UserError, match=rf"^plugin '{name}': {message}") as err:
        Registry([name], entry_points=False)
    assert "\n" not in str(err.value)
    # Listing shows it as a broken plugin next to everything else (it used to be a traceback).
    rows = mibench.list_plugins([name])
    assert rows[-1]["kind"] == "plugin" and rows[-1]["name"] == name
    assert not any(r.get("plugin") == name for r in rows)


def test_good_spec_fields_still_accepted(write_plugin):
    name = write_plugin("good_spec_fields", method_plugin(
        '[MethodSpec("mine", "d", "x.y:z.w", params=[Param("n", 1), Param("m", 2.0)], '
        'requires=[Requirement(module="numpy")])]'))
    spec = Registry([name], entry_points=False).get("method", "mine")
    assert spec.defaults() == {"n": 1, "m": 2.0} and spec.unavailable_reason() is None


def test_bad_param_in_a_plugin_is_one_line(write_plugin):
    name = write_plugin("bad_param_choices", method_plugin(
        '[MethodSpec("mine", "d", "x:y", params=(Param("n", 1, choices=3),))]'))
    with pytest.raises(UserError, match=rf"^plugin '{name}': mibench_methods\(\) raised "
                                        r"TypeError: option 'n': choices must be"):
        Registry([name], entry_points=False)


# --------------------------------------------------------------------------- names (item 2)

@pytest.mark.parametrize("spec_name, message", [
    ("identity", r"method 'identity' is also provided by plugin 'mibench.methods'"),
    # ncc is derived from the estimator of mibench.estimators: still not a name to take.
    ("ncc", r"method 'ncc' is also provided by plugin 'mibench.estimators'"),
    ("NCC", r"method 'NCC' is also provided by plugin 'mibench.estimators' .*case-insensitively"),
    ("MyMethod", r"method name 'MyMethod' is not valid: use lower-case .* \(e.g. 'mymethod'\)"),
    ("my method,x", r"method name 'my method,x' is not valid.* \(e.g. 'my-method-x'\)"),
    ("-lead", r"method name '-lead' is not valid"),
    ("", r"method name '' is not valid"),
    ("all", r"method name 'all' is reserved"),
    ("default", r"method name 'default' is reserved"),
])
def test_bad_or_clashing_name_refused_at_registration(spec_name, message, write_plugin):
    name = write_plugin(f"bad_name_{spec_name.encode().hex()}",
                        method_plugin(f'[MethodSpec({spec_name!r}, "d", "x:y")]'))
    with pytest.raises(UserError, match=rf"^plugin '{name}': {message}"):
        Registry([name], entry_points=False)


def test_valid_names_and_kinds_are_separate(write_plugin):
    # An estimator may share a method's name (ncc is both); the same name twice in one kind
    # and one plugin may not.
    ok = write_plugin("names_ok", """
        @hookimpl
        def mibench_estimators():
            return [EstimatorSpec("identity", "d", "x:y")]

        @hookimpl
        def mibench_methods():
            return [MethodSpec("my_method.v2", "d", "x:y"), MethodSpec("2d-shift", "d", "x:y")]
        """)
    reg = Registry([ok], entry_points=False)
    assert {"my_method.v2", "2d-shift"} <= set(reg.specs("method"))
    twice = write_plugin("names_twice", method_plugin(f"[{SPEC}, {SPEC}]"))
    with pytest.raises(UserError, match="method 'mine' is provided twice"):
        Registry([twice], entry_points=False)


def test_clash_between_two_plugins_names_both(write_plugin):
    first = write_plugin("clash_first", method_plugin(f"[{SPEC}]"))
    second = write_plugin("clash_second", method_plugin('[MethodSpec("Mine", "d", "x:y")]'))
    with pytest.raises(UserError, match=f"plugin '{second}': method 'Mine' is also provided by "
                                        f"plugin '{first}'"):
        Registry([first, second], entry_points=False)


def test_a_plugin_name_already_taken_is_one_line(write_plugin):
    name = write_plugin("taken_name", method_plugin(f"[{SPEC}]"))
    reg = Registry(entry_points=False)
    with pytest.raises(UserError, match=r"^plugin 'mibench.methods': the name is already taken "
                                        r"by another plugin$"):
        reg.register(importlib.import_module(name), name="mibench.methods")


# --------------------------------------------------------------------------- broken plugins in
# mibench list, entry points and unknown names (items 1, 2, 4)

def test_broken_entry_point_plugins_left_out_with_reason(write_plugin, monkeypatch):
    good = write_plugin("ep_good", method_plugin(f"[{SPEC}]"))
    raising = write_plugin("ep_raising", BAD_HOOKS["raises"][0])
    clashing = write_plugin("ep_clashing", method_plugin('[MethodSpec("identity", "d", "x:y")]'))
    fake_entry_points(monkeypatch, ("good", good), ("raising", raising),
                      ("clashing", clashing), ("bi", "no_such_module_xyz"))
    reg = Registry()
    assert reg.get("method", "mine").plugin == "good"
    assert reg.get("method", "identity").plugin == "mibench.methods"
    assert set(reg.broken) == {"raising", "clashing", "bi"}
    assert "boom in hook" in reg.broken["raising"]
    assert "also provided by plugin 'mibench.methods'" in reg.broken["clashing"]
    # A name the broken plugin may have provided: the error says which plugins failed.
    with pytest.raises(UserError, match=r"unknown method 'bi'; available: .*; plugins that "
                                        r"failed to load: .*bi \(failed to import "
                                        r"no_such_module_xyz: No module named"):
        reg.get("method", "bi")


def test_cli_list_shows_a_broken_plugin_and_everything_else(write_plugin, tmp_path):
    name = write_plugin("cli_broken", method_plugin(f"{SPEC}"))
    clash = write_plugin("cli_clash", method_plugin('[MethodSpec("NCC", "d", "x:y")]'))
    out = plugin_cli("list", "--json", "--plugin", f"{name},{clash}", pythonpath=tmp_path)
    assert out.returncode == 0, out.stderr
    rows = {(r["kind"], r["name"]): r for r in json.loads(out.stdout)}
    assert ("method", "identity") in rows and ("method", "mine") not in rows
    assert "returned a MethodSpec" in rows[("plugin", name)]["reason"]
    assert rows[("plugin", clash)]["available"] is False
    text = plugin_cli("list", "--plugin", name, pythonpath=tmp_path)
    assert text.returncode == 0 and f"{name}" in text.stdout and "[unavailable: " in text.stdout
    # Running with it is refused in one line, exit status 2.
    run = plugin_cli("run", "-m", "identity", "--plugin", name, "--workers", "0",
                     pythonpath=tmp_path)
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == [
        f"mibench: error: plugin '{name}': mibench_methods() returned a MethodSpec; expected a "
        "list of MethodSpec (return [spec])"]


def test_unimportable_plugin_module_is_one_line(write_plugin, tmp_path):
    name = write_plugin("syntax_error", "def broken(:\n")
    with pytest.raises(UserError, match=rf"^cannot import plugin module '{name}': SyntaxError"):
        Registry([name], entry_points=False)
    rows = mibench.list_plugins([name])
    assert {"kind": "plugin", "name": name}.items() <= rows[-1].items()


# --------------------------------------------------------------------------- order, --plugin a,b
# (item 8)

def test_specs_in_registration_order(write_plugin):
    name = write_plugin("order_last", method_plugin('[MethodSpec("aaa-first-alphabetically", '
                                                    '"d", "x:y")]'))
    reg = Registry([name], entry_points=False)
    methods = list(reg.specs("method"))
    assert methods[0] == "identity" and methods[-1] == "aaa-first-alphabetically"
    rows = [r for r in mibench.list_plugins([name]) if r["kind"] == "method"]
    assert rows[0]["plugin"] == "mibench.methods" and rows[-1]["plugin"] == name


def test_plugin_list_split_on_commas(write_plugin):
    a = write_plugin("split_a", method_plugin('[MethodSpec("from-a", "d", "x:y")]'))
    b = write_plugin("split_b", method_plugin('[MethodSpec("from-b", "d", "x:y")]'))
    for plugins in ([f"{a}, {b}"], [a, b], f"{a},{b}"):
        reg = Registry(plugins, entry_points=False)
        assert reg.extra_plugins == (a, b)
        assert {"from-a", "from-b"} <= set(reg.specs("method"))
    assert Registry(a, entry_points=False).extra_plugins == (a,)  # not its characters


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


# --------------------------------------------------------------------------- estimator results
# (item 5)

ESTIMATORS = """
import torch

def scalar(fixed, moving, mask=None):
    return ((fixed - moving) ** 2).mean()

def python_float(fixed, moving, mask=None):
    return 0.5

def per_pixel(fixed, moving, mask=None):
    return (fixed - moving)[:, 0]

def wrong_batch(fixed, moving, mask=None):
    return torch.zeros(fixed.shape[0] + 1)

def elsewhere(fixed, moving, mask=None):
    return torch.zeros(fixed.shape[0], device="meta")

def good(fixed, moving, mask=None):
    return ((fixed - moving) ** 2).mean((1, 2, 3))

@hookimpl
def mibench_estimators():
    return [EstimatorSpec(n.replace("_", "-"), "d", f"{__name__}:{n}")
            for n in ("scalar", "python_float", "per_pixel", "wrong_batch", "elsewhere", "good")]
"""


@pytest.mark.parametrize("name, problem", [
    ("scalar", r"returned a tensor of shape \(\)"),
    ("python-float", r"returned a float 0.5"),
    ("per-pixel", r"returned a tensor of shape \(2, 16, 16\)"),
    ("wrong-batch", r"returned a tensor of shape \(3,\)"),
    ("elsewhere", r"returned a tensor on meta for inputs on cpu"),
])
def test_estimator_result_checked(name, problem, write_plugin):
    module = write_plugin("estimator_results", ESTIMATORS)
    est = mibench.estimator(name, plugins=[module])
    fixed, moving = torch.rand(2, 1, 16, 16), torch.rand(2, 1, 16, 16)
    with pytest.raises(UserError, match=rf"^estimator '{name}' \(plugin '{module}'\) {problem}; "
                                        r"expected a tensor of shape \(B,\) = \(2,\)"):
        est(fixed, moving)
    with pytest.raises(UserError, match=rf"^estimator '{name}'"):
        est(fixed[0, 0].numpy(), moving[0, 0].numpy())


def test_good_estimator_passes_the_check(write_plugin):
    module = write_plugin("estimator_results", ESTIMATORS)
    est = mibench.estimator("good", plugins=[module])
    fixed, moving = torch.rand(2, 1, 16, 16), torch.rand(2, 1, 16, 16)
    assert est(fixed, moving).shape == (2,)
    assert isinstance(est(fixed[0, 0].numpy(), moving[0, 0].numpy()), float)


def test_cli_estimate_with_a_float_estimator_is_one_line(write_plugin, tmp_path):
    import numpy as np
    from skimage.io import imsave

    module = write_plugin("estimator_results", ESTIMATORS)
    img = (np.random.default_rng(0).random((16, 16)) * 255).astype(np.uint8)
    imsave(tmp_path / "a.png", img, check_contrast=False)
    out = plugin_cli("estimate", "--plugin", module, "-e", "python-float", "a.png", "a.png",
              pythonpath=tmp_path)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        f"mibench: error: estimator 'python-float' (plugin '{module}') returned a float 0.5; "
        "expected a tensor of shape (B,) = (1,), one value per batch item, on the inputs' device"]


# --------------------------------------------------------------------------- docs (items 6, 7)

def test_plugin_docs_cite_only_what_is_in_the_repository():
    doc = (ROOT / "docs" / "plugins.md").read_text()
    assert "CONTRACTS.md" not in doc  # it lives outside the repository
    for path in ("mibench/pairs.py", "mibench/transform.py"):
        assert f"`{path}`" in doc and (ROOT / path).is_file()
    for name in ("mibench/registry.py", "mibench/hookspecs.py", "mibench/callables.py",
                 "mibench/api.py"):
        assert "CONTRACTS.md" not in (ROOT / name).read_text(), name


def test_docs_state_defaults_guard_and_user_error():
    doc = (ROOT / "docs" / "plugins.md").read_text()
    for field, default in (("needs_data_dir", "True"), ("higher_is_better", "True"),
                           ("differentiable", "True"), ("default", "False")):
        assert f"| `{field}` | {default} |" in doc, field
    assert 'if __name__ == "__main__":' in doc
    # The error policy (mibench/errors.py): plugins raise ValueError, mibench turns it into a
    # UserError naming the plugin; contract breaches are UserErrors too.
    assert "## Errors" in doc and "**Raise `ValueError` for bad input or options**" in doc
    assert "raise `mibench.UserError`" not in doc and "as_user_error(spec)`" in doc
    assert "`UserError` naming it and its plugin" in doc
    readme = (ROOT / "README.md").read_text()
    api = readme.split("## Python API", 1)[1].split("\n## ", 1)[0]
    assert 'if __name__ == "__main__":' in api and "workers=0" in api


def test_dataset_factory_user_error_is_one_line(write_plugin, tmp_path):
    name = write_plugin("ds_condition", """
        from mibench import UserError

        def load(data_dir, lo=0.0, hi=1.0):
            raise UserError(f"dataset 'ds-cond': option lo must be < hi, got lo={lo}, hi={hi}")

        @hookimpl
        def mibench_datasets():
            return [DatasetSpec("ds-cond", "d", f"{__name__}:load", needs_data_dir=False)]
        """)
    out = plugin_cli("run", "--plugin", name, "-d", "ds-cond", "-m", "identity", "--workers", "0",
              pythonpath=tmp_path)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "mibench: error: dataset 'ds-cond': option lo must be < hi, got lo=0.0, hi=1.0"]


# --------------------------------------------------------------------------- the error policy
# (mibench/errors.py): a plugin's ValueError becomes one UserError line at one boundary

def test_a_plugins_value_error_becomes_one_user_error_line_at_the_boundary():
    from mibench import DatasetSpec
    from mibench.errors import as_user_error, plugin_error

    spec = DatasetSpec("ds", "d", "x:y", plugin="mypkg")
    with pytest.raises(UserError, match=r"^dataset 'ds': size must be even; got 3$") as info:
        with as_user_error(spec):
            raise ValueError("size must be even\n   got 3\n")
    assert isinstance(info.value.__cause__, ValueError)  # kept for a debugger
    assert str(plugin_error(spec, ValueError("bad"))) == "dataset 'ds': bad"
    own = UserError("dataset 'ds': data/x.csv: no such file")
    with pytest.raises(UserError) as info:
        with as_user_error(spec):
            raise own
    assert info.value is own  # a plugin's own UserError passes unchanged
    with pytest.raises(KeyError):  # anything else is the plugin's bug: not relabelled
        with as_user_error(spec):
            raise KeyError("x")


def test_open_dataset_reports_the_factorys_value_error_in_one_line(write_plugin):
    from mibench.callables import open_dataset

    name = write_plugin("ds_value_error", """
        def load(data_dir, lo=0.0, hi=1.0):
            raise ValueError(f"lo must be < hi, got lo={lo}, hi={hi}")

        @hookimpl
        def mibench_datasets():
            return [DatasetSpec("ds-value", "d", f"{__name__}:load", needs_data_dir=False)]
        """)
    spec = Registry([name], entry_points=False).get("dataset", "ds-value")
    with pytest.raises(UserError, match=r"^dataset 'ds-value': lo must be < hi, got lo=0.0, "
                                        r"hi=1.0$"):
        open_dataset(spec)
