"""Option declarations (:class:`mibench.specs.Param`): bounds, messages, the plugin prefix, and
the bounds of the built-in methods and estimators (refused before any work is done)."""

import math
import re

import numpy as np
import pytest
import torch

import mibench
from mibench import EstimatorSpec, MethodSpec, Param, hookimpl
from mibench.errors import UserError
from mibench.registry import Registry
from mibench.runner import run_benchmark
from mibench.settings import RunSettings

# --------------------------------------------------------------------------------------------
# Param


@pytest.mark.parametrize("param, good, bad, message", [
    (Param("bins", 32, ge=1), [1, 2, 1000], [0, -3], "option 'bins' must be >= 1, got 0"),
    (Param("lr", 0.1, gt=0), [1e-12, 2.0], [0.0, -1.0], "option 'lr' must be > 0, got 0.0"),
    (Param("p", 50.0, le=100), [100.0, -5.0], [100.5], "option 'p' must be <= 100, got 100.5"),
    (Param("d", 0.5, lt=1), [0.0, 0.999], [1.0, 2.0], "option 'd' must be < 1, got 1.0"),
    (Param("share", 0.5, ge=0, le=1), [0.0, 1.0], [-0.1, 1.1],
     "option 'share' must be in [0, 1], got -0.1"),
    (Param("frac", 0.5, gt=0, le=1), [1e-9, 1.0], [0.0, 1.5],
     "option 'frac' must be in (0, 1], got 0.0"),
    (Param("decay", 0.0, ge=0, lt=1), [0.0, 0.99], [1.0, -0.5],
     "option 'decay' must be in [0, 1), got 1.0"),
])
def test_param_bounds(param, good, bad, message):
    for value in good:
        assert param.check(value) == value
        assert param.parse(str(value)) == value
    for value in bad:
        with pytest.raises(UserError, match=r"must be (>|<|in )"):
            param.check(value)
        with pytest.raises(UserError, match=r"must be (>|<|in )"):
            param.parse(str(value))
    with pytest.raises(UserError) as info:
        param.check(bad[0])
    assert str(info.value) == message
    assert "\n" not in message


@pytest.mark.parametrize("param", [Param("a", 1.0, ge=0), Param("a", 1.0, gt=0),
                                   Param("a", 1.0, le=2), Param("a", 1.0, lt=2),
                                   Param("a", 0.5, ge=0, le=1)])
def test_nan_fails_every_bound(param):
    for value in (math.nan, "nan", "NaN"):
        with pytest.raises(UserError, match=r"option 'a' must be .*, got nan"):
            param.parse(value) if isinstance(value, str) else param.check(value)
    for value in (math.inf, -math.inf, "inf", "-inf"):
        with pytest.raises(UserError, match=r"option 'a' must be .*, got -?inf"):
            param.parse(value) if isinstance(value, str) else param.check(value)


def test_unbounded_float_still_takes_anything():
    p = Param("lo", 0.0)
    assert p.check(-1e9) == -1e9 and math.isnan(p.parse("nan"))


def test_int_and_float_options_with_bounds():
    count = Param("iterations", 10, ge=0)
    assert count.parse("0") == 0 and isinstance(count.parse("0"), int)
    with pytest.raises(UserError, match=r"^option 'iterations' expects an int, got '2.5'$"):
        count.parse("2.5")
    with pytest.raises(UserError, match=r"^option 'iterations' expects an int, got 2.5$"):
        count.check(2.5)
    with pytest.raises(UserError, match="expects an int, got True"):
        count.check(True)  # a bool is not a count (True >= 0 would pass the bound)
    with pytest.raises(UserError, match=r"^option 'iterations' must be >= 0, got -3$"):
        count.parse("-3")
    rate = Param("lr", 0.02, gt=0)
    assert rate.check(1) == 1.0 and isinstance(rate.check(1), float)  # int -> float
    with pytest.raises(UserError, match=r"^option 'lr' must be > 0, got -1.0$"):
        rate.check(-1)
    with pytest.raises(UserError, match=r"^option 'lr' expects a float, got 'x'$"):
        rate.parse("x")


def test_preset_default_none_is_not_checked_but_values_are():
    p = Param("iterations", None, type=int, ge=1)
    assert p.check(None) is None
    assert p.check(5) == 5
    with pytest.raises(UserError, match="must be >= 1, got 0"):
        p.check(0)


def test_bad_declarations_rejected():
    with pytest.raises(ValueError, match="ge or gt"):
        Param("a", 1, ge=0, gt=0)
    with pytest.raises(ValueError, match="le or lt"):
        Param("a", 1, le=2, lt=2)
    with pytest.raises(TypeError, match="int or float"):
        Param("a", "x", ge=0)
    with pytest.raises(TypeError, match="int or float"):
        Param("a", True, ge=0)
    with pytest.raises(ValueError, match="out of its own bounds"):
        Param("a", 0, ge=1)


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


def test_bounds_text():
    assert Param("a", 1).bounds_text == ""
    assert Param("a", 1, ge=1).bounds_text == ">= 1"
    assert Param("a", 1.0, gt=0).bounds_text == "> 0"
    assert Param("a", 1.0, lt=2).bounds_text == "< 2"
    assert Param("a", 1.0, ge=0, lt=2).bounds_text == "in [0, 2)"


# --------------------------------------------------------------------------------------------
# PluginSpec.resolve names the plugin


def test_resolve_prefixes_option_errors_with_the_plugin():
    spec = MethodSpec("m", "A test method.", "helpers.fakeplugin:raises",
                      params=(Param("transform", "affine", choices=("affine", "perspective")),
                              Param("bins", 8, ge=2), Param("lr", 0.1, gt=0)))
    with pytest.raises(UserError) as info:
        spec.resolve({"transform": "bogus"}, from_text=True)
    assert str(info.value) == ("method 'm': option 'transform' must be one of affine, "
                               "perspective; got 'bogus'")
    with pytest.raises(UserError) as info:
        spec.resolve({"bins": 1})
    assert str(info.value) == "method 'm': option 'bins' must be >= 2, got 1"
    with pytest.raises(UserError) as info:
        spec.resolve({"bins": "many"}, from_text=True)
    assert str(info.value) == "method 'm': option 'bins' expects an int, got 'many'"
    est = EstimatorSpec("e", "A test estimator.", "helpers.fakeplugin:raises",
                        params=(Param("lr", 0.1, gt=0),))
    with pytest.raises(UserError, match=r"^estimator 'e': option 'lr' must be > 0, got nan$"):
        est.resolve({"lr": "nan"}, from_text=True)
    assert est.resolve({"lr": "0.5"}, from_text=True) == {"lr": 0.5}


def test_registered_plugin_options_checked_before_its_factory_runs():
    calls = []

    def factory(*args, **kwargs):
        calls.append(kwargs)
        raise AssertionError("must not be called")

    class Plugin:
        @hookimpl
        def mibench_estimators(self):
            return [EstimatorSpec("spy-est", "Spy.", factory,
                                  params=(Param("sigma", 1.0, gt=0),))]

    reg = Registry(entry_points=False)
    reg.register(Plugin(), name="spy")
    spec = reg.get("estimator", "spy-est")
    with pytest.raises(UserError, match="estimator 'spy-est': option 'sigma' must be > 0"):
        mibench.callables.Estimator(spec, spec.resolve({"sigma": "0"}, from_text=True))
    assert calls == []


# --------------------------------------------------------------------------------------------
# Built-in plugins


def builtin_specs(kind):
    return Registry(entry_points=False).specs(kind).values()


def test_every_builtin_default_within_its_bounds():
    for kind in ("estimator", "method"):
        for spec in builtin_specs(kind):
            assert spec.resolve(spec.defaults()) == spec.defaults(), spec.name


@pytest.mark.parametrize("methods, options, message", [
    ("identity,nmi", {"nmi": {"bins": "0"}}, "method 'nmi': option 'bins' must be >= 2, got 0"),
    ("mmi", {"mmi": {"bins": "1"}}, "method 'mmi': option 'bins' must be >= 5, got 1"),
    ("ncc", {"ncc": {"lr": "-1"}}, "method 'ncc': option 'lr' must be > 0, got -1.0"),
    ("ncc", {"ncc": {"lr": "nan"}}, "method 'ncc': option 'lr' must be > 0, got nan"),
    ("ncc", {"ncc": {"iterations": "-3"}}, "option 'iterations' must be >= 0, got -3"),
    ("ncc", {"ncc": {"levels": "0"}}, "option 'levels' must be >= 1, got 0"),
    ("ncc", {"ncc": {"min_size": "0"}}, "option 'min_size' must be >= 1, got 0"),
    ("ncc", {"ncc": {"transform": "bogus"}}, "method 'ncc': option 'transform' must be one of"),
    ("kde-mi", {"kde-mi": {"sigma": "0"}}, "method 'kde-mi': option 'sigma' must be > 0"),
    ("cmif", {"cmif": {"angle_step": "0"}}, "method 'cmif': option 'angle_step' must be > 0"),
    ("drmime", {"drmime": {"hidden": "0"}}, "method 'drmime': option 'hidden' must be >= 1"),
    ("drmime", {"drmime": {"lr_net": "-0.1"}}, "option 'lr_net' must be > 0, got -0.1"),
    ("drmime", {"drmime": {"sample_fraction": "1.5"}},
     "option 'sample_fraction' must be in (0, 1], got 1.5"),
    ("identity,ncc", {"*": {"lr": "0"}}, "method 'ncc': option 'lr' must be > 0, got 0.0"),
])
def test_run_refuses_out_of_range_method_option_before_any_work(tmp_path, methods, options,
                                                                message):
    out = tmp_path / "run"
    cfg = RunSettings(methods=methods, dataset="toy", plugins=["helpers.fakeplugin"], workers=0,
                    method_options=options, out=str(out))
    with pytest.raises(UserError) as info:
        run_benchmark(cfg, progress=False, log=lambda msg: None)
    assert message in str(info.value) and "\n" not in str(info.value)
    assert not out.exists()  # nothing planned, nothing written


@pytest.mark.parametrize("name, options, message", [
    ("nmi", {"bins": "0"}, "estimator 'nmi': option 'bins' must be >= 1, got 0"),
    ("nmi", {"bins_moving": "-1"}, "option 'bins_moving' must be >= 0, got -1"),
    ("mmi", {"bins": "1"}, "estimator 'mmi': option 'bins' must be >= 5, got 1"),
    ("kde-mi", {"sigma": "0"}, "estimator 'kde-mi': option 'sigma' must be > 0, got 0.0"),
    ("kde-mi", {"bins": "1"}, "estimator 'kde-mi': option 'bins' must be >= 2, got 1"),
    ("cmif", {"levels": "0"}, "estimator 'cmif': option 'levels' must be >= 1, got 0"),
    ("softhist-mi", {"slope": "-1"}, "option 'slope' must be > 0, got -1.0"),
    ("mine", {"batch": "0"}, "estimator 'mine': option 'batch' must be >= 1, got 0"),
    ("mine", {"lr": "-1"}, "estimator 'mine': option 'lr' must be > 0, got -1.0"),
    ("mine", {"ema": "1"}, "option 'ema' must be in [0, 1), got 1.0"),
    ("jhmi", {"range": "percentile", "p_lo": "200"},
     "estimator 'jhmi': option 'p_lo' must be in [0, 100], got 200.0"),
    ("jhmi", {"smoothing_variance": "-1"}, "option 'smoothing_variance' must be >= 0"),
])
def test_estimator_refuses_out_of_range_option_before_any_work(tmp_path, name, options,
                                                              message):
    # The command line: ``mibench estimate`` resolves the options before it reads the images
    # (which do not exist here), so the option is what it complains about, in one line.
    from click.testing import CliRunner

    from mibench.cli import cli

    args = ["estimate", "--estimator", name]
    for key, value in options.items():
        args += ["-o", f"{key}={value}"]
    res = CliRunner().invoke(cli, [*args, str(tmp_path / "A.png"), str(tmp_path / "B.png")])
    assert res.exit_code == 2, res.output
    assert message in res.output and "Traceback" not in res.output
    # The Python API: the same check, before the estimator is ever called.
    with pytest.raises(UserError, match=re.escape(message)):
        mibench.estimator(name, **{k: _typed(name, k, v) for k, v in options.items()})


def _typed(name: str, key: str, text: str):
    """``text`` converted to the option's type, unchecked (as a Python caller would pass it)."""
    spec = Registry(entry_points=False).get("estimator", name)
    return spec.param(key).value_type(text)


# The bounds agree with the algorithms' own checks: the bound itself runs, one step beyond it
# is refused by the algorithm too (were the option not checked first).


def _pair():
    g = torch.Generator().manual_seed(0)
    f = torch.rand(1, 1, 24, 24, generator=g)
    return f, (f + 0.1 * torch.rand(1, 1, 24, 24, generator=g)).clamp(0, 1)


@pytest.mark.parametrize("name, key, below, extra", [
    ("nmi", "bins", 0, {}),
    ("jhmi", "bins", 0, {}),
    ("softhist-mi", "bins", 0, {}),
    ("mmi", "bins", 4, {}),
    ("kde-mi", "bins", 1, {}),
    ("cmif", "levels", 0, {}),
    ("mine", "sample", 15, {"iterations": 2, "batch": 8}),
])
def test_estimator_lower_bounds_agree_with_the_algorithms(name, key, below, extra):
    spec = Registry(entry_points=False).get("estimator", name)
    bound = spec.param(key).ge
    assert bound == below + 1
    fn = spec.load()
    f, m = _pair()
    opts = {**spec.defaults(), **extra}
    value = fn(f, m, **{**opts, key: bound})
    assert torch.isfinite(value).all()
    with pytest.raises(ValueError):
        fn(f, m, **{**opts, key: below})


def test_mine_sample_bound_is_twice_min_pixels():
    from mibench.estimators import mine

    spec = Registry(entry_points=False).get("estimator", "mine")
    assert spec.param("sample").ge == 2 * mine.MIN_PIXELS


def test_method_bins_bound_agrees_with_the_estimators():
    # The MI methods only offer differentiable kernels; linear needs 2 bins (cubic 4, checked by
    # the estimator as it depends on the kernel); Mattes needs 5.
    from mibench.estimators import histogram

    f, m = _pair()
    histogram.jhmi(f, m, bins=2, kernel="linear")
    with pytest.raises(ValueError):
        histogram.jhmi(f, m, bins=1, kernel="linear")
    methods = Registry(entry_points=False).specs("method")
    for name in ("nmi", "jhmi", "kde-mi", "softhist-mi"):
        assert methods[name].param("bins").ge == 2, name
    assert methods["mmi"].param("bins").ge == 5
    assert np.isfinite(float(histogram.mmi(f, m, bins=5)))
