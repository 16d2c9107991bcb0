"""Physical geometry: checked against nibabel's and SimpleITK's own point conversions."""

import numpy as np
import pytest
from nibabel.affines import apply_affine

from mibench.geometry import Geometry, voxel_transform, world_transform


def _rotation(angles):
    ax, ay, az = np.radians(angles)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


#: An oblique, anisotropic voxel -> RAS affine, as a tilted clinical acquisition has.
OBLIQUE = np.eye(4)
OBLIQUE[:3, :3] = _rotation([12.0, -7.0, 25.0]) @ np.diag([0.9, 1.2, 3.5])
OBLIQUE[:3, 3] = [-91.0, 120.5, -40.25]

POINTS = np.array([[0, 0, 0], [10, 3, 7], [63.5, 20.25, 11.75], [-2.0, 100.0, 0.5]], float)


def test_voxel_to_world_matches_nibabel_on_an_oblique_affine():
    import nibabel as nib

    image = nib.Nifti1Image(np.zeros((64, 40, 12), np.float32), OBLIQUE)
    geom = Geometry.from_nibabel(image)
    assert geom.ndim == 3 and geom.unit == "mm"
    np.testing.assert_allclose(geom.voxel_to_world(POINTS), apply_affine(OBLIQUE, POINTS),
                               atol=1e-12)
    np.testing.assert_allclose(geom.world_to_voxel(apply_affine(OBLIQUE, POINTS)), POINTS,
                               atol=1e-10)
    np.testing.assert_allclose(geom.spacing, [0.9, 1.2, 3.5], atol=1e-12)
    np.testing.assert_allclose(geom.direction, _rotation([12.0, -7.0, 25.0]), atol=1e-12)
    np.testing.assert_allclose(geom.origin, OBLIQUE[:3, 3])
    np.testing.assert_allclose(Geometry.from_spacing(geom.spacing, geom.origin,
                                                     geom.direction).affine, OBLIQUE, atol=1e-12)


def test_itk_geometry_flips_lps_exactly_once():
    """SimpleITK's TransformContinuousIndexToPhysicalPoint, in LPS, is our world with x and y
    negated; and to_itk gives back what SimpleITK was given."""
    sitk = pytest.importorskip("SimpleITK")

    spacing, origin = (0.9, 1.2, 3.5), (12.5, -30.0, 44.0)
    direction = tuple(_rotation([-20.0, 9.0, 31.0]).ravel())
    image = sitk.Image(8, 8, 8, sitk.sitkFloat32)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(direction)
    geom = Geometry.from_itk(image.GetSpacing(), image.GetOrigin(), image.GetDirection())
    lps = np.array([image.TransformContinuousIndexToPhysicalPoint(tuple(p)) for p in POINTS])
    np.testing.assert_allclose(geom.voxel_to_world(POINTS), lps * [-1, -1, 1], atol=1e-10)
    back = geom.to_itk()
    np.testing.assert_allclose(back[0], spacing, atol=1e-12)
    np.testing.assert_allclose(back[1], origin, atol=1e-12)
    np.testing.assert_allclose(back[2], direction, atol=1e-12)
    # Our RAS+ geometry of a nibabel image, handed to SimpleITK, gives the same points (LPS).
    ras = Geometry(OBLIQUE)
    s, o, d = ras.to_itk()
    image.SetSpacing(s)
    image.SetOrigin(o)
    image.SetDirection(d)
    lps = np.array([image.TransformContinuousIndexToPhysicalPoint(tuple(p)) for p in POINTS])
    np.testing.assert_allclose(lps * [-1, -1, 1], apply_affine(OBLIQUE, POINTS), atol=1e-10)


def test_2d_geometry_from_a_pixel_size():
    geom = Geometry.from_spacing([0.5, 0.25], origin=[10.0, -3.0], unit="um")
    assert geom.ndim == 2 and geom.unit == "um"
    np.testing.assert_allclose(geom.voxel_to_world([[4.0, 8.0]]), [[12.0, -1.0]])
    np.testing.assert_allclose(geom.world_to_voxel([[12.0, -1.0]]), [[4.0, 8.0]])
    # Diagonal of a (H, W) = (40, 30) image: sqrt((30 * 0.5)^2 + (40 * 0.25)^2) um.
    assert geom.diagonal((40, 30)) == pytest.approx(np.hypot(15.0, 10.0))
    sitk = pytest.importorskip("SimpleITK")
    image = sitk.Image(4, 4, sitk.sitkFloat32)
    image.SetSpacing((0.5, 0.25))
    image.SetOrigin((-10.0, 3.0))
    # In 2-D too, ITK's x and y are negated: its identity direction is -I here.
    flipped = Geometry.from_spacing([0.5, 0.25], [10.0, -3.0], -np.eye(2), unit="um")
    assert Geometry.from_itk(image.GetSpacing(), image.GetOrigin(), image.GetDirection(),
                             unit="um") == flipped


def test_world_transform_maps_world_points_as_the_voxel_transform_maps_voxels():
    fixed = Geometry(OBLIQUE)
    moving = Geometry.from_spacing([2.0, 2.0, 2.0], origin=[-98.0, -134.0, -72.0])
    t = np.eye(4)
    t[:3, :3] = _rotation([3.0, -4.0, 6.0]) @ np.diag([1.05, 0.97, 1.0])
    t[:3, 3] = [4.0, -2.5, 1.0]
    world = world_transform(t, fixed, moving)
    moving_voxels = POINTS @ t[:3, :3].T + t[:3, 3]
    mapped = apply_affine(world, fixed.voxel_to_world(POINTS))
    np.testing.assert_allclose(mapped, moving.voxel_to_world(moving_voxels), atol=1e-10)
    np.testing.assert_allclose(voxel_transform(world, fixed, moving), t, atol=1e-12)
    from mibench.transform import MatrixTransform

    np.testing.assert_array_equal(world_transform(MatrixTransform(t), fixed, moving), world)


def test_geometry_refuses_what_it_cannot_be():
    with pytest.raises(ValueError, match="3x3 .* or 4x4"):
        Geometry(np.eye(5))
    with pytest.raises(ValueError, match="invertible"):
        Geometry(np.diag([1.0, 0.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="last row"):
        Geometry(np.ones((4, 4)))
    with pytest.raises(ValueError, match=r"expected \(K, 3\)"):
        Geometry(OBLIQUE).voxel_to_world(np.zeros((4, 2)))
    with pytest.raises(ValueError, match="fixed geometry is 3-D, moving geometry 2-D"):
        world_transform(np.eye(4), Geometry(OBLIQUE), Geometry(np.eye(3)))
    with pytest.raises(ValueError, match="must be 4x4"):
        world_transform(np.eye(3), Geometry(OBLIQUE), Geometry(OBLIQUE))
    geom = Geometry(OBLIQUE)
    assert Geometry.from_dict(geom.to_dict()) == geom


def test_a_warp_in_voxels_matches_simpleitk_resampling_in_lps_millimetres():
    """The whole chain: geometries to ITK, the world transform flipped to LPS, and SimpleITK's
    Resample (fixed physical point -> moving physical point) agree with MatrixTransform.warp of
    the voxel transform, for oblique, anisotropic fixed and moving grids that differ."""
    sitk = pytest.importorskip("SimpleITK")
    from scipy import ndimage

    from mibench.geometry import flip_lps
    from mibench.transform import MatrixTransform

    fixed_shape, moving_shape = (10, 14, 18), (12, 16, 20)  # (D, H, W)
    fixed = Geometry.from_spacing([1.5, 1.2, 2.5], [-10.0, 5.0, 20.0],
                                  _rotation([8.0, -5.0, 15.0]))
    moving_linear = _rotation([-6.0, 10.0, -12.0]) @ np.diag([1.3, 1.4, 2.2])
    centre = fixed.voxel_to_world([(np.array(fixed_shape[::-1]) - 1) / 2])[0]
    moving_origin = centre - moving_linear @ ((np.array(moving_shape[::-1]) - 1) / 2)
    moving = Geometry.from_spacing([1.3, 1.4, 2.2], moving_origin,
                                   _rotation([-6.0, 10.0, -12.0]))
    world = np.eye(4)
    world[:3, :3] = _rotation([4.0, 3.0, -7.0])
    world[:3, 3] = centre + [2.0, -1.5, 1.0] - world[:3, :3] @ centre
    rng = np.random.default_rng(0)
    image = ndimage.gaussian_filter(rng.random(moving_shape), 1.5).astype(np.float32)

    voxel = voxel_transform(world, fixed, moving)
    ours = MatrixTransform(voxel).warp(image, fixed_shape)

    def itk_image(array, geometry):
        out = sitk.GetImageFromArray(array)  # numpy (D, H, W) is ITK's (x, y, z) index
        spacing, origin, direction = geometry.to_itk()
        out.SetSpacing(spacing)
        out.SetOrigin(origin)
        out.SetDirection(direction)
        return out

    lps = flip_lps(world)
    transform = sitk.AffineTransform(3)
    transform.SetMatrix(tuple(lps[:3, :3].ravel()))
    transform.SetTranslation(tuple(lps[:3, 3]))
    reference = itk_image(np.zeros(fixed_shape, np.float32), fixed)
    theirs = sitk.GetArrayFromImage(sitk.Resample(itk_image(image, moving), reference,
                                                  transform, sitk.sitkLinear, 0.0))
    zz, yy, xx = np.indices(fixed_shape)
    mapped = MatrixTransform(voxel).fixed_to_moving(
        np.column_stack([xx.ravel(), yy.ravel(), zz.ravel()]).astype(float))
    inner = ((mapped >= 1) & (mapped <= np.array(moving_shape[::-1]) - 2)).all(1)
    inner = inner.reshape(fixed_shape)
    assert inner.mean() > 0.3
    np.testing.assert_allclose(ours[inner], theirs[inner], atol=1e-5)
    np.testing.assert_allclose(flip_lps(lps), world, atol=0)
