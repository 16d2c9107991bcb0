"""The ``identity`` method: returns the identity transform, so its scores are the initial error."""

from mibench.transform import MatrixTransform


def register(fixed, moving, *, fixed_mask=None, moving_mask=None, seed=0):
    """Return the identity (fixed pixel ``(x, y)`` -> the same moving pixel)."""
    return MatrixTransform.identity()
