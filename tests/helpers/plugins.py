"""Plugins a test writes: modules in ``tmp_path``, fake entry points, the CLI in a subprocess."""

import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PLUGIN_DIR = ROOT / "examples" / "plugin"
HEADER = ("from mibench import DatasetSpec, EstimatorSpec, MethodSpec, Param, Requirement, "
          "hookimpl\n")
SPEC = 'MethodSpec("mine", "d", "x:y")'


def cli(*args, pythonpath=None, cwd=None):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("PYTHONPATH", None)
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    return subprocess.run([sys.executable, "-m", "mibench.cli", *args], capture_output=True,
                          text=True, env=env, cwd=cwd)


def plugin_cli(*args, pythonpath=None):
    """``python -m mibench.cli ARGS`` in a clean environment, run from ``pythonpath``."""
    return cli(*args, pythonpath=pythonpath, cwd=pythonpath)


def method_plugin(returns: str, signature: str = "") -> str:
    return f"""
        @hookimpl
        def mibench_methods({signature}):
            return {returns}
        """


def fake_entry_points(monkeypatch, *eps):
    real = importlib.metadata.entry_points

    def entry_points(**kw):
        if kw.get("group") == "mibench":
            return [importlib.metadata.EntryPoint(name=n, value=v, group="mibench")
                    for n, v in eps]
        return real(**kw)

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
