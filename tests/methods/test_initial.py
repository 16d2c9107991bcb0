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


def test_cmif_start_of_a_volume_is_the_3d_search():
    """``init="cmif"`` on volumes runs CMIF's 3-D search (rotation grid, every shift): a
    rotated and shifted copy of a smooth random volume starts within a voxel of the truth."""
    from scipy.spatial.transform import Rotation

    from mibench.transform import MatrixTransform

    vol = torch.rand((1, 1, 28, 30, 26), generator=torch.Generator().manual_seed(3))
    for _ in range(3):
        vol = torch.nn.functional.avg_pool3d(vol, 5, stride=1, padding=2, count_include_pad=False)
    vol = (vol - vol.min()) / (vol.max() - vol.min())
    centre = (np.array([26, 30, 28]) - 1) / 2
    true = np.eye(4)
    true[:3, :3] = Rotation.from_euler("z", 7.5, degrees=True).as_matrix()
    true[:3, 3] = centre - true[:3, :3] @ centre + [2.0, -1.0, 1.0]
    moving = MatrixTransform(np.linalg.inv(true)).warp(vol, (28, 30, 26))
    found = initial_matrix("cmif", vol, (moving - 0.5).abs())
    corners = np.array([[x, y, z] for x in (5, 20) for y in (5, 24) for z in (5, 22)], float)
    err = MatrixTransform(found).fixed_to_moving(corners) - \
        MatrixTransform(true).fixed_to_moving(corners)
    assert found.shape == (4, 4) and np.abs(err).max() < 1.0
