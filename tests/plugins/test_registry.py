"""The plugin registry: built-ins, plugins registered at test time, entry points, availability."""

import importlib
import json
import subprocess
import sys

import pytest
from helpers.plugins import fake_entry_points

import mibench
from mibench import MethodSpec, Param, Requirement, hookimpl
from mibench.errors import UserError
from mibench.registry import Registry


def test_builtins_registered_through_hooks():
    reg = Registry(entry_points=False)
    assert "identity" in reg.specs("method")
    assert "synthetic" in reg.specs("dataset")
    for kind in ("estimator", "method", "dataset"):
        for spec in reg.specs(kind).values():
            assert spec.plugin.startswith("mibench.")
            assert spec.name == spec.name.lower()


def test_plugin_registered_at_test_time():
    class MyPlugin:
        @hookimpl
        def mibench_methods(self):
            return [MethodSpec("mine-test", "A test method.", "helpers.fakeplugin:raises",
                               params=(Param("alpha", 0.5, "a float"),))]

    reg = Registry(entry_points=False)
    reg.register(MyPlugin(), name="my-plugin")
    spec = reg.get("method", "mine-test")
    assert spec.plugin == "my-plugin"
    assert spec.resolve({"alpha": 1}) == {"alpha": 1.0}
    assert spec.resolve({"alpha": "0.25"}, from_text=True) == {"alpha": 0.25}
    with pytest.raises(UserError, match="has no option 'beta'"):
        spec.resolve({"beta": 1})
    with pytest.raises(UserError, match="expects a float"):
        spec.resolve({"alpha": "abc"}, from_text=True)
    reg.unregister("my-plugin")
    with pytest.raises(UserError, match="unknown method"):
        reg.get("method", "mine-test")


def test_duplicate_names_rejected():
    class Dup:
        @hookimpl
        def mibench_methods(self):
            return [MethodSpec("identity", "Clash.", "helpers.fakeplugin:raises")]

    reg = Registry(entry_points=False)
    with pytest.raises(UserError, match="plugin 'dup': method 'identity' is also provided by "
                                        "plugin 'mibench.methods'"):
        reg.register(Dup(), name="dup")
    # Refused whole: the registry is as before.
    assert reg.get("method", "identity").plugin == "mibench.methods"
    assert reg.pm.get_plugin("dup") is None


def test_unknown_name_suggests():
    reg = Registry(entry_points=False)
    with pytest.raises(UserError, match="did you mean identity"):
        reg.get("method", "identiy")


def test_unavailable_plugin_listed_with_reason_and_hint():
    reg = Registry(["helpers.fakeplugin"], entry_points=False)
    spec = reg.get("method", "needs-missing")
    reason = spec.unavailable_reason()
    assert "surely_not_installed_pkg" in reason and "pip install" in reason
    assert "needs-missing" not in reg.available("method")
    with pytest.raises(UserError, match="unavailable: needs the Python package"):
        spec.load()
    rows = mibench.list_plugins(["helpers.fakeplugin"])
    row = next(r for r in rows if r["name"] == "needs-missing")
    assert row["available"] is False and "pip install" in row["reason"]


def test_cuda_requirement():
    import torch

    req = Requirement(cuda=True, hint="run on a machine with a GPU")
    assert (req.missing() is None) == torch.cuda.is_available()


def test_requirement_on_a_submodule_of_a_missing_package():
    """``find_spec("pkg.sub")`` imports ``pkg``; without it the requirement is missing (it was a
    ModuleNotFoundError from ``mibench list``)."""
    assert Requirement(module="no_such_pkg_xyz.sub").missing() == \
        "needs the Python package 'no_such_pkg_xyz.sub'"
    assert Requirement(module="numpy.linalg").missing() is None


def test_entry_point_discovery(monkeypatch):
    fake_entry_points(monkeypatch, ("fake", "helpers.fakeplugin"),
                      ("broken", "no_such_module_xyz"))
    reg = Registry()
    assert reg.get("method", "oracle").plugin == "fake"
    assert "broken" in reg.broken and "no_such_module_xyz" in reg.broken["broken"]


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


def test_listing_imports_nothing_heavy():
    code = ("import sys, mibench; rows = mibench.list_plugins(); "
            "heavy = [m for m in ('torch', 'SimpleITK', 'skimage', 'pandas') if m in sys.modules]; "
            "print(len(rows), heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    n, heavy = out.stdout.split(" ", 1)
    assert int(n) > 2 and heavy.strip() == "[]"


def test_cli_list_json():
    out = subprocess.run([sys.executable, "-m", "mibench.cli", "list", "--json"],
                         capture_output=True, text=True, check=True)
    rows = json.loads(out.stdout)
    kinds = {r["kind"] for r in rows}
    assert {"method", "dataset"} <= kinds
    assert all("available" in r for r in rows)


def test_a_method_output_that_is_not_a_transform_is_named():
    """``RegistrationOutput(np.eye(3))`` (a matrix, not a transform) fails with a message that
    says what to return, not an AttributeError deep in the scoring."""
    import numpy as np

    from mibench.callables import Method
    from mibench.transform import RegistrationOutput

    def bare_matrix(fixed, moving, *, fixed_mask=None, moving_mask=None, seed=0):
        return RegistrationOutput(np.eye(3))

    spec = MethodSpec("bare", "returns a matrix", bare_matrix)
    img = np.random.default_rng(0).random((8, 8)).astype(np.float32)
    with pytest.raises(UserError, match=r"^method 'bare' returned a RegistrationOutput whose "
                                        r"transform is of type ndarray; expected a Transform"):
        Method(spec)(img, img)
    # Registered, the method's plugin is named too, as for an estimator's value.
    reg = Registry(entry_points=False)
    reg.register(type("Bare", (), {"mibench_methods": hookimpl(lambda self: [spec])})(),
                 name="bare-plugin")
    with pytest.raises(UserError, match=r"^method 'bare' \(plugin 'bare-plugin'\) returned "
                                        r"a RegistrationOutput"):
        Method(reg.get("method", "bare"))(img, img)
    with pytest.raises(UserError, match=r"returned NoneType; expected a Transform"):
        Method(MethodSpec("none", "returns None", lambda *a, **k: None))(img, img)


def test_constant_images_fail_methods_that_read_them_but_not_the_identity():
    """A constant image (or an empty mask) has nothing to align: a method would follow rounding
    noise to an arbitrary pose, so the task fails with that reason; identity still runs."""
    import numpy as np

    flat = np.full((16, 16), 0.5, np.float32)
    img = np.random.default_rng(1).random((16, 16)).astype(np.float32)
    assert mibench.method("identity", device="cpu")(flat, flat).transform.is_valid
    ncc = mibench.method("ncc", device="cpu", iterations=2)
    with pytest.raises(ValueError, match=r"the moving image is constant \(0\.5\)"):
        ncc(img, flat)
    with pytest.raises(ValueError, match="the fixed image is constant inside its mask"):
        mask = np.zeros((16, 16), bool)
        mask[:4, :4] = True
        ncc(np.where(mask, 0.25, img).astype(np.float32), img, fixed_mask=mask)
    with pytest.raises(ValueError, match="the moving mask selects no pixel"):
        ncc(img, img, moving_mask=np.zeros((16, 16), bool))
    assert ncc(img, img).transform.is_valid


@pytest.mark.parametrize("seed", [-1, 2**32, 1.5, True, "3"])
def test_method_call_refuses_seeds_outside_32_bits(seed):
    """The API refuses what ``mibench run --seed`` refuses: torch, NumPy and the toolboxes take
    32-bit seeds, and some would wrap a larger one onto another seed silently."""
    import numpy as np

    img = np.random.default_rng(2).random((16, 16)).astype(np.float32)
    identity = mibench.method("identity", device="cpu")
    with pytest.raises(ValueError, match=r"seed must be an integer in 0 \.\. 4294967295"):
        identity(img, img, seed=seed)
    assert identity(img, img, seed=np.int64(2**32 - 1)).transform.is_valid


@pytest.mark.parametrize("spec, message", [
    ('EstimatorSpec("e", "d", "x:y", higher_is_better="no")',
     r"estimator 'e': higher_is_better must be True or False, got a str \('no'\)"),
    ('EstimatorSpec("e", "d", "x:y", differentiable=0)',
     r"estimator 'e': differentiable must be True or False, got an int \(0\)"),
    ('DatasetSpec("d", "d", "x:y", needs_data_dir="False")',
     r"dataset 'd': needs_data_dir must be True or False"),
    ('MethodSpec("m", "d", "x:y", needs_content=None)',
     r"method 'm': needs_content must be True or False, got None"),
    ('MethodSpec("m", "d", "x:y", uses_seed="yes")',
     r"method 'm': uses_seed must be True, False or a function of the options, got a str"),
    ('EstimatorSpec("e", "d", "x:y", uses_seed=1)',
     r"estimator 'e': uses_seed must be True or False, got an int \(1\)"),
    ('DatasetSpec("d", "d", "x:y", protocol="FIRE")',
     r"dataset 'd': protocol must be one of '', 'fire', 'anhir', got a str \('FIRE'\)"),
])
def test_flags_of_every_kind_must_be_bools(write_plugin, spec, message):
    hook = {"E": "mibench_estimators", "D": "mibench_datasets", "M": "mibench_methods"}[spec[0]]
    name = write_plugin(f"bad_flag_{abs(hash(spec))}", f"""
        @hookimpl
        def {hook}():
            return [{spec}]
        """)
    with pytest.raises(UserError, match=rf"^plugin '{name}': {message}"):
        Registry([name], entry_points=False)


def test_builtin_method_roles():
    methods = Registry(entry_points=False).specs("method")
    assert [n for n, s in methods.items() if s.preferred_reference] == ["drmime"]
    assert [n for n, s in methods.items() if s.baseline] == ["identity"]


def test_builtin_seed_options_take_every_32_bit_seed():
    from mibench.seeds import MAX_SEED

    reg = Registry(entry_points=False)
    seeds = [s.param("seed") for kind in ("estimator", "method")
             for s in reg.specs(kind).values() if "seed" in s.defaults()]
    assert seeds and all((p.ge, p.le) == (0, MAX_SEED) for p in seeds)


def test_list_shows_what_each_method_is_for_in_the_report():
    """``mibench list --json`` says which method the report prefers as its reference and which
    one is the no-registration baseline (the flags on MethodSpec), so a user can see why."""
    rows = {r["name"]: r for r in mibench.list_plugins() if r["kind"] == "method"}
    assert rows["drmime"]["preferred_reference"] and not rows["drmime"]["baseline"]
    assert rows["identity"]["baseline"] and not rows["identity"]["preferred_reference"]
    assert not any(r["preferred_reference"] or r["baseline"] for name, r in rows.items()
                   if name not in ("drmime", "identity"))
