"""Provenance: what run.json says produced a run."""

import importlib.metadata as md
import subprocess
from pathlib import Path

import pytest

from mibench.machine import TOOLBOX_PACKAGES, source_commit, versions

ROOT = Path(__file__).resolve().parents[1]


def test_versions_name_the_toolboxes_that_are_installed():
    """SimpleITK's, ITK's and itk-elastix's versions are stated when installed (a toolbox
    method's results depend on them), and only then."""
    got = versions()
    for name in TOOLBOX_PACKAGES:
        try:
            expected = md.version(name)
        except md.PackageNotFoundError:
            assert name not in got
        else:
            assert got[name] == expected
    assert got["torch"] == md.version("torch") and "python" in got


@pytest.mark.skipif(not (ROOT / ".git").exists(), reason="not run from a git checkout")
def test_the_commit_of_a_checkout_is_stated():
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()
    commit = source_commit()
    assert commit is not None and commit.removesuffix("+dirty") == head
    assert versions()["mibench-commit"] == commit
