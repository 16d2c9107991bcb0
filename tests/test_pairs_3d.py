"""Pairs of volumes: what check_pair accepts, and the one-line errors for the usual slips."""

import dataclasses

import numpy as np
import pytest

from mibench.geometry import Geometry
from mibench.pairs import Pair, check_pair, spatial_ndim

GEOMETRY = Geometry.from_spacing([2.0, 2.0, 2.5], origin=[-20.0, 10.0, 5.0])


def _volume_pair(**changes):
    rng = np.random.default_rng(0)
    vol = rng.random((6, 8, 10))
    points = np.array([[1.0, 2.0, 3.0], [4.5, 6.0, 1.0]])
    pair = Pair("v", vol, vol.copy(), points, points + 0.5,
                fixed_mask=np.ones((6, 8, 10), np.uint8), moving_mask=np.ones((6, 8, 10), bool),
                fixed_geometry=GEOMETRY, moving_geometry=GEOMETRY)
    return dataclasses.replace(pair, **changes)


def test_a_volume_pair_passes_with_geometry_and_3d_landmarks():
    pair = check_pair(_volume_pair(), "v")
    assert pair.ndim == 3 and pair.fixed.dtype == np.float32 and pair.fixed_mask.dtype == bool
    assert pair.native_fixed_shape == (6, 8, 10)
    assert pair.fixed_geometry == GEOMETRY
    # Channels last, as in 2-D; no geometry needed.
    rgb = np.random.default_rng(1).random((6, 8, 10, 3))
    assert check_pair(_volume_pair(fixed=rgb, fixed_geometry=None), "v").ndim == 3
    assert dataclasses.replace(_volume_pair(), native_scale=2.0).native_fixed_shape == (12, 16, 20)


def test_which_arrays_are_volumes():
    assert spatial_ndim(np.zeros((32, 32))) == 2
    assert spatial_ndim(np.zeros((32, 32, 3))) == 2
    assert spatial_ndim(np.zeros((3, 32, 32))) == 2  # a channels-first slip, not a volume
    assert spatial_ndim(np.zeros((6, 32, 32))) == 3
    assert spatial_ndim(np.zeros((6, 32, 32, 1))) == 3
    # A thin volume is a volume when its geometry says so.
    assert spatial_ndim(np.zeros((3, 32, 32)), GEOMETRY) == 3
    thin = np.zeros((3, 8, 10))
    assert check_pair(_volume_pair(fixed=thin, moving=thin, fixed_mask=None, moving_mask=None),
                      "v").ndim == 3


@pytest.mark.parametrize("changes, message", [
    ({"fixed_landmarks": np.zeros((2, 2))},
     r"fixed landmarks have shape \(2, 2\), expected \(K, 3\) \(x, y, z\) rows for a volume"),
    ({"moving_landmarks": np.zeros((3, 2))},
     r"moving landmarks have shape \(3, 2\), expected \(K, 3\) \(x, y, z\) rows"),
    ({"moving": np.zeros((8, 10)), "moving_mask": None, "moving_geometry": None},
     r"fixed image \(6, 8, 10\) is a volume, moving image \(8, 10\) 2-D: both must be 2-D"),
    ({"fixed_mask": np.ones((8, 10), bool)},
     r"fixed mask has shape \(8, 10\), its image \(6, 8, 10\)"),
    ({"fixed_geometry": Geometry.from_spacing([1.0, 1.0])},
     r"fixed geometry is 2-D, its image has shape \(6, 8, 10\)"),
    ({"moving_geometry": np.eye(4)}, r"moving geometry is a ndarray, expected a mibench"),
    ({"moving_geometry": Geometry(GEOMETRY.affine, unit="um")},
     r"fixed geometry is in mm, moving geometry in um"),
    ({"fixed": np.zeros((6, 8, 10, 7))},
     r"fixed image has shape \(6, 8, 10, 7\), expected \(D, H, W\) or \(D, H, W, C<=4\)"),
])
def test_volume_slips_are_named_in_one_line(changes, message):
    with pytest.raises(ValueError, match=message) as info:
        check_pair(_volume_pair(**changes), "v")
    assert "\n" not in str(info.value)


def test_3d_landmarks_on_a_2d_image_say_so():
    img = np.random.default_rng(2).random((32, 32))
    with pytest.raises(ValueError, match=r"fixed landmarks have shape \(4, 3\), expected "
                                         r"\(K, 2\) \(x, y\) rows for a 2-D image$"):
        check_pair(Pair("a", img, img, np.zeros((4, 3)), np.zeros((4, 2))), "a")
