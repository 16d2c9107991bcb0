"""The ``identity`` method: returns the identity transform, so its scores are the initial error."""

from mibench.methods.initial import start_matrix
from mibench.transform import MatrixTransform


def register(fixed, moving, *, fixed_mask=None, moving_mask=None, seed=0, fixed_geometry=None,
             moving_geometry=None):
    """Return the transform the registration methods start from
    (:func:`mibench.methods.initial.start_matrix`).

    Parameters
    ----------
    fixed, moving : Tensor ``(1, C, H, W)`` or ``(1, C, D, H, W)``
        Only their number of spatial dimensions is read.
    fixed_geometry, moving_geometry : mibench.geometry.Geometry, optional
        For volumes with both: the world identity (fixed voxel -> world -> moving voxel), a
        4x4 matrix. Otherwise the pixel identity (fixed pixel ``(x, y)`` -> the same moving
        pixel), 3x3 for images, 4x4 for volumes.
    """
    return MatrixTransform(start_matrix(fixed.dim() - 2, fixed_geometry, moving_geometry))
