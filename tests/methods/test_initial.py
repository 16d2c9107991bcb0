"""``init="cmif"``: the local methods start from CMIF's global rigid search."""

import numpy as np
import pytest
import torch

from mibench.datasets.synthetic import load_dataset
from mibench.methods.cmif import rigid_align
from mibench.methods.drmime import register_drmime
from mibench.methods.initial import initial_matrix
from mibench.metrics import landmark_errors
from mibench.registry import Registry
from mibench.tensors import image_to_tensor


@pytest.fixture(scope="module")
def rigid_pair():
    """A hard rigid synthetic fundus pair at 128 px (rotation and shift beyond a local method's
    capture range)."""
    ds = load_dataset(None, pairs=1, size=128, transform="rigid", difficulty="hard",
                      families="fundus", seed=3)
    return ds.load(ds.pairs()[0].id)


def _tensors(pair):
    return image_to_tensor(pair.fixed), image_to_tensor(pair.moving)


def test_identity_start_is_the_pixel_identity(rigid_pair):
    f, m = _tensors(rigid_pair)
    assert np.array_equal(initial_matrix("identity", f, m), np.eye(3))
    with pytest.raises(ValueError, match="init must be one of"):
        initial_matrix("sift", f, m)


@pytest.mark.parametrize("register", [
    lambda f, m, **kw: Registry(entry_points=False).get("method", "ncc").load()(f, m, **kw),
    lambda f, m, **kw: register_drmime(f, m, **kw),
])
def test_zero_iterations_return_the_cmif_start_exactly(rigid_pair, register):
    f, m = _tensors(rigid_pair)
    start = rigid_align(f, m).matrix
    out = register(f, m, iterations=0, init="cmif")
    assert np.allclose(out.transform.matrix, start, atol=1e-4)
    assert out.info["init"] == "cmif"


def test_cmif_start_brings_a_large_rotation_within_reach(rigid_pair):
    pair = rigid_pair
    f, m = _tensors(pair)
    errors = {}
    for init in ("identity", "cmif"):
        torch.manual_seed(0)
        out = Registry(entry_points=False).get("method", "nmi").load()(
            f, m, iterations=60, init=init)
        errors[init] = np.median(landmark_errors(out.transform, pair.fixed_landmarks,
                                                 pair.moving_landmarks, 1.0))
    initial = np.median(landmark_errors(None, pair.fixed_landmarks, pair.moving_landmarks, 1.0))
    assert errors["cmif"] < 1.0 < initial
    assert errors["cmif"] < errors["identity"]
