"""Methods declare the dimensionalities they register; volumes get their geometry."""

import numpy as np
import pytest
import torch

from mibench.callables import Method
from mibench.errors import UserError
from mibench.geometry import Geometry
from mibench.specs import MethodSpec
from mibench.tensors import image_to_tensor, mask_to_tensor
from mibench.transform import MatrixTransform

SEEN = {}


def _volume_method(fixed, moving, *, fixed_mask=None, moving_mask=None, seed=0,
                   fixed_geometry=None, moving_geometry=None):
    SEEN.update(fixed=tuple(fixed.shape), mask=None if fixed_mask is None else
                tuple(fixed_mask.shape), fixed_geometry=fixed_geometry,
                moving_geometry=moving_geometry)
    return MatrixTransform(np.eye(fixed.ndim - 1))


def _image_method(fixed, moving, *, fixed_mask=None, moving_mask=None, seed=0):
    return MatrixTransform(np.eye(3))


def _volumes():
    rng = np.random.default_rng(0)
    return rng.random((6, 7, 8)).astype(np.float32), rng.random((6, 7, 8)).astype(np.float32)


def test_a_volume_method_gets_the_geometry_and_5d_tensors():
    fixed, moving = _volumes()
    geo = Geometry.from_spacing((1.0, 1.5, 3.0))
    method = Method(MethodSpec(name="vol", description="test", factory=_volume_method,
                               dims=(2, 3)))
    out = method(fixed, moving, fixed_mask=fixed > 0.1, fixed_geometry=geo, moving_geometry=geo)
    assert SEEN["fixed"] == (1, 1, 6, 7, 8) and SEEN["mask"] == (1, 1, 6, 7, 8)
    assert SEEN["fixed_geometry"] is geo and SEEN["moving_geometry"] is geo
    assert out.transform.matrix.shape == (4, 4)
    # A 2-D image through the same method: no geometry, 4-D tensors.
    method(fixed[0], moving[0])
    assert SEEN["fixed"] == (1, 1, 7, 8) and SEEN["fixed_geometry"] is None


def test_a_2d_method_is_refused_volumes_with_one_line():
    fixed, moving = _volumes()
    method = Method(MethodSpec(name="flat", description="test", factory=_image_method))
    with pytest.raises(UserError, match="'flat' does not register 3-D volumes"):
        method(fixed, moving, ndim=3)
    # Without ndim a 3-D array is an (H, W, C) image, as before volumes existed.
    assert method(fixed, moving).transform.matrix.shape == (3, 3)


def test_arrays_become_channel_first_volumes():
    vol = np.arange(2 * 3 * 4 * 2, dtype=np.float32).reshape(2, 3, 4, 2)
    t = image_to_tensor(vol, ndim=3)
    assert t.shape == (1, 2, 2, 3, 4)
    assert torch.equal(t[0, 1], torch.from_numpy(vol[..., 1]))
    assert image_to_tensor(vol[..., 0], ndim=3).shape == (1, 1, 2, 3, 4)
    assert mask_to_tensor(vol[..., 0] > 3, ndim=3).dtype == torch.bool
    with pytest.raises(ValueError, match=r"\(D, H, W\) or \(D, H, W, C\)"):
        image_to_tensor(vol[0, 0], ndim=3)


class _VolumePlugin:
    """A dataset of volumes and two methods, one of which registers images only."""

    @staticmethod
    def _dataset(data_dir, **params):
        from mibench.pairs import PairInfo

        class _Volumes:
            def pairs(self):
                return [PairInfo("v0", {})]

        return _Volumes()

    from mibench import hookimpl as _hookimpl

    @_hookimpl
    def mibench_datasets(self):
        from mibench.specs import DatasetSpec
        return [DatasetSpec(name="vols", description="test", factory=self._dataset,
                            needs_data_dir=False, dims=(3,))]

    @_hookimpl
    def mibench_methods(self):
        return [MethodSpec(name="vol3", description="test", factory=_volume_method, dims=(2, 3)),
                MethodSpec(name="flat2", description="test", factory=_image_method)]


def _registry():
    from mibench.registry import Registry
    registry = Registry(entry_points=False)
    registry.register(_VolumePlugin(), "vols-plugin")
    return registry


def test_all_on_volumes_leaves_out_the_2d_methods_and_says_why():
    from mibench.plan import plan_run
    from mibench.settings import RunSettings

    plan = plan_run(_registry(), RunSettings(dataset="vols", methods="all"))
    names = {t.method for t in plan.tasks}
    assert "vol3" in names and "flat2" not in names
    assert "does not register 3-D volumes" in plan.skipped_methods["flat2"]


def test_a_2d_method_named_for_volumes_is_refused_before_the_run():
    from mibench.plan import plan_run
    from mibench.settings import RunSettings

    with pytest.raises(UserError, match=r"method 'flat2' does not register 3-D volumes"):
        plan_run(_registry(), RunSettings(dataset="vols", methods="vol3,flat2"))
