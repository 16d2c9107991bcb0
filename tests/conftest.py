"""Shared fixtures."""

import sys
import textwrap

import numpy as np
import pytest
from helpers.plugins import HEADER
from helpers.registration import MARGIN, SIZE
from skimage import data
from skimage.transform import resize


@pytest.fixture(scope="session")
def canvas():
    """camera() at 224 px: the fixed image is its central 128 px, so that the moving image
    can be cut from the same canvas with no black border."""
    big = data.camera().astype(np.float32) / 255
    return resize(big, (SIZE + 2 * MARGIN,) * 2, anti_aliasing=True).astype(np.float32)


@pytest.fixture
def write_plugin(tmp_path, monkeypatch):
    """``write_plugin(name, body)`` writes module ``name`` to tmp_path (importable) and returns
    its name; modules imported by the test are forgotten afterwards."""
    monkeypatch.syspath_prepend(str(tmp_path))
    written = []

    def write(name: str, body: str) -> str:
        (tmp_path / f"{name}.py").write_text(HEADER + textwrap.dedent(body))
        written.append(name)
        return name

    yield write
    for name in written:
        sys.modules.pop(name, None)
