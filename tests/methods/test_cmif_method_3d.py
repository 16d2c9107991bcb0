"""The ``cmif`` method on volumes (``mibench.methods.cmif``, 3-D search): rotation of label volumes,
the coarse-to-fine shift conversion, and recovery of known rigid transforms of small volumes
warped by ``MatrixTransform.warp`` (trilinear ``grid_sample``) and by scipy's ``affine_transform``
(an independent reference of the convention)."""

import numpy as np
import pytest
import torch
from scipy import ndimage

from mibench.geometry import Geometry
from mibench.methods import cmif as C
from mibench.methods import cmif_volumes as M
from mibench.registry import Registry
from mibench.transform import MatrixTransform


def _volume(shape, seed):
    """Smooth random structure in [0, 1], ``(1, 1, D, H, W)``."""
    vol = torch.rand((1, 1) + tuple(shape), generator=torch.Generator().manual_seed(seed))
    for _ in range(3):
        vol = torch.nn.functional.avg_pool3d(vol, 5, stride=1, padding=2,
                                             count_include_pad=False)
    return (vol - vol.min()) / (vol.max() - vol.min())


def _result(angles, shift, shape, spacing=(1.0, 1.0, 1.0)):
    centre = tuple((n - 1) / 2 for n in shape[::-1])
    return M.RigidResult3D(tuple(angles), tuple(shift), 0.0, centre, spacing)


def _point_errors(est, true, shape):
    """Distances (voxels) between where the two 4x4 matrices send the corners and the centre."""
    corners = np.array([[x, y, z, 1.0] for x in (0, shape[2] - 1) for y in (0, shape[1] - 1)
                        for z in (0, shape[0] - 1)] + [[(shape[2] - 1) / 2, (shape[1] - 1) / 2,
                                                        (shape[0] - 1) / 2, 1.0]])
    return np.linalg.norm((corners @ est.T - corners @ true.T)[:, :3], axis=1)


def test_rotation_matrix_axes_and_order():
    # +90 deg about z sends x to y; about x sends y to z; about y sends z to x.
    np.testing.assert_allclose(M.rotation_matrix((0, 0, 90)) @ [1, 0, 0], [0, 1, 0], atol=1e-12)
    np.testing.assert_allclose(M.rotation_matrix((90, 0, 0)) @ [0, 1, 0], [0, 0, 1], atol=1e-12)
    np.testing.assert_allclose(M.rotation_matrix((0, 90, 0)) @ [0, 0, 1], [1, 0, 0], atol=1e-12)
    r = M.rotation_matrix((10, -20, 30))
    np.testing.assert_allclose(r, M.rotation_matrix((0, 0, 30)) @ M.rotation_matrix((0, -20, 0))
                               @ M.rotation_matrix((10, 0, 0)), atol=1e-12)
    np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)


def test_rotate_labels_3d_matches_numpy_and_scipy():
    lab = torch.arange(5 * 6 * 7).reshape(5, 6, 7)
    assert torch.equal(M.rotate_labels_3d(lab, np.eye(3)), lab)
    # 180 deg about z (x -> -x, y -> -y about the centre): both in-plane axes flipped.
    out = M.rotate_labels_3d(lab, M.rotation_matrix((0, 0, 180)))
    assert torch.equal(out, lab.flip(1, 2))
    # An oblique rotation: scipy's nearest-neighbour map_coordinates at c + R (q - c).
    lab = torch.arange(9 * 8 * 7).reshape(9, 8, 7)
    rot = M.rotation_matrix((12.0, -7.0, 25.0))
    out = M.rotate_labels_3d(lab, rot).numpy()
    c = np.array([3.0, 3.5, 4.0])  # (x, y, z)
    z, y, x = np.meshgrid(*(np.arange(n) for n in (9, 8, 7)), indexing="ij")
    src = (np.stack([x, y, z], -1) - c) @ rot.T + c
    inside = ((src > -0.5) & (src < np.array([7, 8, 9]) - 0.5)).all(-1)
    ref = ndimage.map_coordinates(lab.numpy(), [src[..., 2], src[..., 1], src[..., 0]],
                                  order=0, mode="nearest")
    # Ties at exactly .5 may round differently; there are none at these angles.
    assert np.array_equal(out[inside], ref[inside])
    assert (out[~inside] == -1).all()


def test_shift_to_finer_is_the_conjugated_coarse_transform():
    rng = np.random.default_rng(0)
    for f_c, f_f, fine in ((2, 1, (20, 24, 22)), (3, 1, (31, 20, 25)), (4, 2, (40, 33, 29))):
        coarse_shape = tuple(n * f_f // f_c for n in fine)
        fine_shape = tuple(n for n in fine)
        angles = tuple(float(a) for a in rng.uniform(-20, 20, 3))
        shift = tuple(int(v) for v in rng.integers(-4, 5, 3))  # (dz, dy, dx)
        coarse = _result(angles, shift[::-1], coarse_shape).matrix
        k, e = f_c / f_f, (f_c - f_f) / (2 * f_f)
        g = np.diag([k, k, k, 1.0])
        g[:3, 3] = e
        expected = g @ coarse @ np.linalg.inv(g)
        linear = M.rotation_matrix(angles)
        s = M._shift_to_finer(shift, linear, (f_c, f_f), coarse_shape, fine_shape)
        np.testing.assert_allclose(_result(angles, s, fine_shape).matrix, expected, atol=1e-9)


def test_recovers_a_known_translation_exactly():
    fixed = _volume((20, 24, 22), 1)
    true = _result((0, 0, 0), (3.0, -2.0, 1.0), (20, 24, 22)).matrix  # p_moving = p - (3, -2, 1)
    moving = MatrixTransform(np.linalg.inv(true)).warp(fixed, (20, 24, 22))
    mask = MatrixTransform(np.linalg.inv(true)).warp(torch.ones_like(fixed), (20, 24, 22)) > 0.5
    moving = (moving - 0.4).abs()  # a non-monotonic contrast
    # The translation alone: the one rotation 0, every shift on a reduced copy, then a window
    # of shifts at full resolution.
    res = M.rigid_search_3d(fixed, moving, None, mask, levels=6, max_angle_3d=0.0, refine=0,
                            coarse_side_3d=12, fine_side_3d=0, subpixel=False)
    assert res.angles == (0.0, 0.0, 0.0)
    np.testing.assert_array_equal(res.matrix, true)
    stages = res.info["stages"]
    assert stages["coarse"]["rotations"] == 1 and stages["refine"]["rotations"] == 1
    # A masked moving volume: K_B forward and (K_A - 1) K_B inverse FFTs per rotation (the
    # fixed volume has no mask), plus K_A - 1 forward per fixed side (one per stage).
    assert stages["refine"]["inverse_ffts"] == 5 * 6
    assert stages["refine"]["forward_ffts"] == 6 + 5
    # With the default sub-pixel step the shift stays within a tenth of a voxel.
    res = M.rigid_search_3d(fixed, moving, None, mask, levels=6, max_angle_3d=0.0, refine=0,
                            coarse_side_3d=12, fine_side_3d=0)
    assert _point_errors(res.matrix, true, (20, 24, 22)).max() < 0.1


def test_recovers_a_rotation_and_translation_warped_by_scipy():
    """The moving volume from scipy's affine_transform (the fixed volume sampled at T^-1 q,
    linear interpolation), rotated about two axes and shifted by fractions of a voxel."""
    shape = (26, 28, 24)
    fixed = _volume(shape, 2)
    true = _result((7.5, 0.0, -7.5), (2.4, -1.3, 1.6), shape).matrix
    inv = np.linalg.inv(true)
    # scipy works on array indices (z, y, x): permute the (x, y, z) matrix.
    perm = np.eye(4)[[2, 1, 0, 3]]
    inv_zyx = perm @ inv @ perm
    moving = ndimage.affine_transform(fixed[0, 0].numpy().astype(np.float64), inv_zyx[:3, :3],
                                      inv_zyx[:3, 3], order=1, cval=0.0)
    mask = ndimage.affine_transform(np.ones(shape), inv_zyx[:3, :3], inv_zyx[:3, 3], order=1,
                                    cval=0.0) > 0.999
    moving = torch.as_tensor(np.abs(moving - 0.5), dtype=torch.float32)[None, None]
    res = M.rigid_search_3d(fixed, moving, None, torch.as_tensor(mask)[None, None], levels=6,
                            max_angle_3d=7.5, angle_step_3d=7.5, coarse_side_3d=13,
                            fine_side_3d=0, refine=2, candidates=2)
    assert res.angles[0] == pytest.approx(7.5, abs=2.0)
    assert res.angles[2] == pytest.approx(-7.5, abs=2.0)
    assert _point_errors(res.matrix, true, shape).max() < 1.5


def test_register_takes_the_spec_options_and_the_geometry():
    """The method's factory with the spec's resolved options (the 2-D sweep's are ignored for
    volumes): a 4x4 transform, its cost in info; physical rotations with anisotropic voxels."""
    shape = (12, 22, 20)
    fixed = _volume(shape, 3)
    spacing = (1.0, 1.0, 2.0)  # (x, y, z) mm
    true_result = _result((0.0, 0.0, 7.5), (1.0, 2.0, 0.0), shape, spacing)
    true = true_result.matrix
    # The voxel-space linear part of a physical rotation about z is a rotation (x, y alike).
    np.testing.assert_allclose(true[:3, :3], M.rotation_matrix((0, 0, 7.5)), atol=1e-12)
    moving = MatrixTransform(np.linalg.inv(true)).warp(fixed, shape)
    mask = MatrixTransform(np.linalg.inv(true)).warp(torch.ones_like(fixed), shape) > 0.999
    geometry = Geometry.from_spacing(spacing)
    options = Registry().get("method", "cmif").defaults()
    options.update(levels=6, refine=2, candidates=2, max_angle_3d=7.5, angle_step_3d=7.5,
                   coarse_side_3d=11, fine_side_3d=0)
    out = C.register(fixed, moving, fixed_mask=None, moving_mask=mask, seed=0,
                     fixed_geometry=geometry, moving_geometry=geometry, **options)
    assert out.transform.matrix.shape == (4, 4)
    assert out.info["spacing"] == list(spacing)
    assert {"rotations_evaluated", "forward_ffts", "inverse_ffts", "stages"} <= set(out.info)
    assert _point_errors(out.transform.matrix, true, shape).max() < 1.5
    # A rotation about x mixes y and z: in voxels it is S^-1 R S, not a rotation.
    lin = _result((10.0, 0, 0), (0, 0, 0), shape, spacing).linear
    np.testing.assert_allclose(lin, np.diag([1, 1, 0.5]) @ M.rotation_matrix((10, 0, 0))
                               @ np.diag(spacing), atol=1e-12)


def test_volume_options_and_geometries_are_checked():
    x = torch.rand(1, 1, 8, 8, 8)
    with pytest.raises(ValueError):
        M.rigid_search_3d(x, x, angle_step_3d=0)
    with pytest.raises(ValueError, match="one pair"):
        M.rigid_search_3d(x[:, :, 0], x[:, :, 0])
    with pytest.raises(ValueError, match="same voxel spacing"):
        M.rigid_search_3d(x, x, fixed_geometry=Geometry.from_spacing((1, 1, 1)),
                          moving_geometry=Geometry.from_spacing((1, 1, 2)))
