"""``docs/plugins.md`` stays in step with the plugin contract: every hook, every spec and data
field, the entry-point group, and code examples that parse and import what exists."""

import ast
import dataclasses
import inspect
import re
from pathlib import Path

import pytest

import mibench
from mibench import hookspecs, pairs, specs, transform
from mibench.registry import ENTRY_POINT_GROUP

DOC = (Path(__file__).resolve().parents[2] / "docs" / "plugins.md").read_text()
#: Inline code spans of the prose and tables (fenced blocks removed first: their triple
#: backticks would pair up wrongly).
CODE_NAMES = set(re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", DOC, flags=re.S)))


def hook_names():
    return [name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
            if hasattr(fn, f"{hookspecs.PROJECT}_spec")]


def test_every_hook_documented():
    names = hook_names()
    assert len(names) >= 3
    for name in names:
        assert f"`{name}()`" in DOC, name


@pytest.mark.parametrize("cls", [specs.Param, specs.Requirement, specs.PluginSpec,
                                 specs.EstimatorSpec, specs.MethodSpec, specs.DatasetSpec,
                                 pairs.Pair, pairs.PairInfo,
                                 transform.RegistrationOutput])
def test_every_field_documented(cls):
    assert f"`{cls.__name__}`" in DOC or f"`{cls.__name__}(" in DOC
    for field in dataclasses.fields(cls):
        # A field is documented as `name` on its own or inside a multi-name cell.
        assert any(field.name in re.split(r"[`,\s()=]+", n) for n in CODE_NAMES), \
            f"{cls.__name__}.{field.name}"


def test_entry_point_group():
    assert f"[project.entry-points.{ENTRY_POINT_GROUP}]" in DOC


def test_python_examples_parse_and_import_what_exists():
    blocks = re.findall(r"```python\n(.*?)```", DOC, flags=re.S)
    assert blocks
    for block in blocks:
        tree = ast.parse(block)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "mibench":
                for alias in node.names:
                    assert hasattr(mibench, alias.name), alias.name


def test_exported_names_listed_exist():
    listed = re.search(r"Everything a plugin imports is exported by `mibench`:(.*?)\n\n",
                       DOC, flags=re.S).group(1)
    names = re.findall(r"`(\w+)`", listed)
    assert names and set(names) <= set(mibench.__all__)


def test_docs_example_matches_the_example_plugin(monkeypatch):
    """The guide's snippets of the example plugin declare the options as the example does
    (same defaults, bounds and choices), and its factory outlines take them as the real
    factories do (keyword-only, no defaults of their own)."""
    import importlib

    from helpers.plugins import PLUGIN_DIR

    from mibench.registry import Registry

    monkeypatch.syspath_prepend(str(PLUGIN_DIR))
    registry = Registry(["mibench_example.plugin"], entry_points=False)
    kinds = {"EstimatorSpec": "estimator", "MethodSpec": "method", "DatasetSpec": "dataset"}
    n_specs = n_factories = 0
    for block in re.findall(r"```python\n(.*?)```", DOC, flags=re.S):
        tree = ast.parse(block)
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") in kinds:
                kw = {k.arg: k.value for k in node.keywords}
                spec = registry.get(kinds[node.func.id], ast.literal_eval(kw["name"]))
                for call in ast.walk(kw["params"]):
                    if isinstance(call, ast.Call) and call.func.id == "Param":
                        doc = eval(compile(ast.Expression(call), "docs", "eval"),
                                   {"Param": specs.Param})
                        real = spec.param(doc.name)
                        assert (doc.default, doc.ge, doc.gt, doc.le, doc.lt, doc.choices) == \
                            (real.default, real.ge, real.gt, real.le, real.lt, real.choices), doc
                n_specs += 1
        header = re.match(r"# (mibench_example/\w+)\.py", block)
        for node in tree.body:
            if header and isinstance(node, ast.FunctionDef):
                module = importlib.import_module(header.group(1).replace("/", "."))
                real = inspect.signature(getattr(module, node.name)).parameters
                kwonly = node.args.kwonlyargs
                for arg, default in zip(kwonly, node.args.kw_defaults, strict=True):
                    got = real[arg.arg]
                    assert (default is None) == (got.default is inspect.Parameter.empty), arg.arg
                    assert got.kind is inspect.Parameter.KEYWORD_ONLY
                n_factories += 1
    assert n_specs == 3 and n_factories >= 2
