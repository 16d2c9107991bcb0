"""The example third-party plugin (``examples/plugin``): its estimator against a brute-force
reference, its options declared once (bounds refused before any work), and the installed package
found through its entry point by ``mibench list`` and ``mibench run`` (installed into a temporary
directory, so the shared environment is untouched)."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from helpers.plugins import PLUGIN_DIR, cli  # noqa: E402

from mibench.callables import open_dataset
from mibench.errors import UserError
from mibench.registry import Registry

NAMES = {("estimator", "example-cr"), ("method", "example-shift"), ("dataset", "example-shapes")}


@pytest.fixture
def example(monkeypatch):
    monkeypatch.syspath_prepend(str(PLUGIN_DIR))
    import mibench_example.dataset
    import mibench_example.estimator
    import mibench_example.method

    return mibench_example


@pytest.fixture
def example_registry(monkeypatch):
    monkeypatch.syspath_prepend(str(PLUGIN_DIR))
    return Registry(["mibench_example.plugin"], entry_points=False)


def options(kind, name, **given):
    """What mibench passes the example's factory: its spec's defaults with ``given``, checked
    (the factories declare no defaults of their own)."""
    return Registry(["mibench_example.plugin"], entry_points=False).get(kind, name).resolve(given)


def brute_force_cr(f, m, mask, bins):
    f, m = f[mask], m[mask]
    edges = np.linspace(f.min(), f.max(), bins + 1)
    idx = np.clip(np.searchsorted(edges, f, side="right") - 1, 0, bins - 1)
    within = sum(((m[idx == b] - m[idx == b].mean()) ** 2).sum() for b in np.unique(idx))
    return 1 - within / ((m - m.mean()) ** 2).sum()


def test_correlation_ratio_against_brute_force(example):
    rng = np.random.default_rng(0)
    f = rng.random((2, 1, 20, 24))
    m = np.sin(4 * f) + 0.3 * rng.standard_normal(f.shape)
    mask = rng.random((2, 1, 20, 24)) > 0.2
    got = example.estimator.correlation_ratio(torch.tensor(f), torch.tensor(m),
                                              torch.tensor(mask), **options(
                                                  "estimator", "example-cr", bins=8))
    want = [brute_force_cr(f[i, 0], m[i, 0], mask[i, 0], 8) for i in range(2)]
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-4)
    const = example.estimator.correlation_ratio(torch.tensor(f), torch.zeros_like(torch.tensor(f)),
                                                **options("estimator", "example-cr"))
    assert torch.equal(const, torch.zeros(2, dtype=const.dtype))


def test_shift_recovers_the_dataset_translation(example):
    ds = example.dataset.load(None, **options("dataset", "example-shapes", pairs=2, size=64))
    for info in ds.pairs():
        pair = ds.load(info.id)
        out = example.method.register(torch.from_numpy(pair.fixed)[None, None],
                                      torch.from_numpy(pair.moving)[None, None],
                                      **options("method", "example-shift"))
        np.testing.assert_allclose(out.transform.matrix, pair.meta["true_transform"], atol=0.3)
        # The landmarks are consistent with the stated truth.
        t = np.array(pair.meta["true_transform"])
        np.testing.assert_allclose(pair.moving_landmarks, pair.fixed_landmarks + t[:2, 2])


@pytest.mark.parametrize("kind, name, options, message", [
    ("dataset", "example-shapes", {"seed": -1}, r"option 'seed' must be >= 0, got -1"),
    ("dataset", "example-shapes", {"max_shift": float("nan")}, r"option 'max_shift' must be"),
    ("dataset", "example-shapes", {"pairs": 0}, r"option 'pairs' must be >= 1, got 0"),
    ("dataset", "example-shapes", {"size": 8}, r"option 'size' must be >= 16, got 8"),
    ("estimator", "example-cr", {"bins": 0}, r"option 'bins' must be >= 1, got 0"),
])
def test_example_plugin_declares_the_bounds_its_code_needs(example_registry, kind, name,
                                                           options, message):
    """A negative seed failed every task with numpy's "expected non-negative integer"; the
    guide says to declare bounds so that a bad value is refused before any work is done."""
    with pytest.raises(UserError, match=rf"^{kind} '{name}': {message}"):
        example_registry.get(kind, name).resolve(options)


def test_example_plugin_declares_each_option_once(example_registry):
    """The factories take their options without defaults (the spec's are the only ones) and
    check only a condition between two options, with a ValueError that mibench reports in one
    line naming the dataset."""
    import inspect

    for kind, name in NAMES:
        spec = example_registry.get(kind, name)
        signature = inspect.signature(spec.load()).parameters
        for option in spec.params:
            assert signature[option.name].default is inspect.Parameter.empty, (name, option)
    shapes = example_registry.get("dataset", "example-shapes")
    with pytest.raises(UserError, match=r"^dataset 'example-shapes': max_shift must be < 21.9 "
                                        r"for size 64 .*got 30.0$"):
        open_dataset(shapes, options={"size": 64, "max_shift": 30.0})
    assert len(open_dataset(shapes, options={"size": 64, "max_shift": 21.8}).dataset.pairs()) == 4


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """``pip install --no-deps --target`` of a copy of the example (no build files in the repo)."""
    root = tmp_path_factory.mktemp("plugin")
    source = shutil.copytree(PLUGIN_DIR, root / "src",
                             ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    target = root / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                    "--no-build-isolation", "--no-index", "--target", str(target), str(source)],
                   check=True, capture_output=True)
    return target


def listed(**kw):
    out = cli("list", "--json", **kw)
    assert out.returncode == 0, out.stderr
    return {(r["kind"], r["name"]): r for r in json.loads(out.stdout)}


def test_plugins_listed_only_once_installed(installed):
    assert not NAMES & set(listed())
    rows = listed(pythonpath=installed)
    assert NAMES <= set(rows)
    assert all(rows[k]["available"] and rows[k]["plugin"] == "example" for k in NAMES)


def test_the_installed_estimator_is_also_a_method(installed, tmp_path):
    """Issue 18: the example's estimator registers images with no code of its own."""
    rows = listed(pythonpath=installed)
    method = rows[("method", "example-cr")]
    assert method["plugin"] == "example" and method["available"]
    assert method["description"].startswith("Derived from the estimator 'example-cr'")
    assert "Adam" in method["description"] and "bins" in method["options"]
    out_dir = tmp_path / "run"
    out = cli("run", "--methods", "example-cr", "--limit", "2", "-O", "iterations=60",
              "--workers", "0", "--out", str(out_dir), "--quiet", pythonpath=installed)
    assert out.returncode == 0, out.stderr
    assert (out_dir / "report.html").is_file()
    results = pd.read_csv(out_dir / "results.csv")
    assert list(results["method"]) == ["example-cr"] * 2
    assert (results["status"] == "ok").all(), results["error"]


def test_run_with_the_installed_plugin(installed, tmp_path):
    out_dir = tmp_path / "run"
    out = cli("run", "--dataset", "example-shapes", "--methods", "identity,example-shift",
              "-o", "pairs=2", "-o", "size=64", "--workers", "0", "--out", str(out_dir),
              "--quiet", pythonpath=installed)
    assert out.returncode == 0, out.stderr
    assert (out_dir / "report.html").is_file()
    results = pd.read_csv(out_dir / "results.csv")
    naed = results.groupby("method")["naed"].mean()
    assert naed["example-shift"] < 0.01 < naed["identity"]
    # The estimator through the command line, on two images written by numpy.
    from skimage.io import imsave

    rng = np.random.default_rng(1)
    a = (rng.random((32, 32)) * 255).astype(np.uint8)
    imsave(tmp_path / "a.png", a, check_contrast=False)
    imsave(tmp_path / "b.png", 255 - a, check_contrast=False)
    est = cli("estimate", "--estimator", "example-cr", str(tmp_path / "a.png"),
              str(tmp_path / "b.png"), pythonpath=installed)
    assert est.returncode == 0, est.stderr
    name, value, direction = est.stdout.split(maxsplit=2)
    assert name == "example-cr" and float(value) > 0.99
    assert direction.strip() == "(higher is more similar)"


def test_the_example_estimator_is_benchmarked_by_all_three_estimator_commands(installed,
                                                                             tmp_path):
    """Issue 19: an estimator from a plugin takes part in accuracy, landscape and cost with no
    extra code (small settings: the point is that it appears in each report)."""
    commands = {
        "accuracy": ["--families", "gaussian", "--sizes", "256"],
        "landscape": ["-o", "size=64", "-o", "pairs=1", "--limit", "1", "--lines", "2",
                      "--points", "2", "--radius", "4"],
        "cost": ["--sides", "16,32", "--repeats", "1"],
    }
    for command, extra in commands.items():
        out_dir = tmp_path / command
        out = cli("estimators", command, "-e", "example-cr,ncc", *extra, "--workers", "0",
                  "-q", "--out", str(out_dir), pythonpath=installed)
        assert out.returncode == 0, (command, out.stderr)
        summary = pd.read_csv(out_dir / "summary.csv")
        assert {"example-cr", "ncc"} <= set(summary["estimator"]), command
        assert "example-cr" in (out_dir / "report.html").read_text(), command
