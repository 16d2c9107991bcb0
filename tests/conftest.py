"""Shared fixtures."""

import numpy as np
import pytest
from skimage import data
from skimage.transform import resize
from test_gradient import MARGIN, SIZE


@pytest.fixture(scope="session")
def canvas():
    """camera() at 224 px: the fixed image is its central 128 px, so that the moving image
    can be cut from the same canvas with no black border."""
    big = data.camera().astype(np.float32) / 255
    return resize(big, (SIZE + 2 * MARGIN,) * 2, anti_aliasing=True).astype(np.float32)
