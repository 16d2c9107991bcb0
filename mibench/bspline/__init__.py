"""Cubic B-spline free-form deformation (FFD) composed on a matrix transform.

Convention (elastix's, with its default ``HowToCombineTransforms`` = ``"Compose"``): the matrix
part ``A`` is applied first and the B-spline displacement ``u`` second, at the point ``A`` gives,

    p_moving = A(p) + u(A(p)),        u(q) = sum_k c_k  beta((q - o) / h - k),

for a fixed-image point ``p`` ``(x, y[, z])`` in pixels (voxels), ``beta`` the tensor product of
centred cubic B-splines and ``c_k`` the coefficient (a displacement in pixels of the moving
image) of control point ``k``, which sits at ``o + k h`` (``o`` the grid origin, ``h`` the
spacing, both in pixels of the space ``A`` maps into). elastix places its grid over the bounding
box of the fixed image *after* the initial transform when it composes them
(``elxBSplineTransform.hxx``, ``PreComputeGridInformation``: "Take into account the initial
transform, if composition is used"), centred on it, with ``mesh + 3`` control points per axis
(``ComputeBSplineGrid``); :meth:`BSplineTransform.over` does the same.

Coefficients outside the grid are zero, so ``u`` is a C2 field on the whole plane that fades to
zero within two spacings of the grid; ITK instead returns a zero displacement wherever a point's
4^n support is not entirely inside the grid. The two agree inside the *domain* (the grid less one
spacing at each end, :attr:`ControlGrid.domain`), which :meth:`BSplineTransform.over` makes cover
the fixed image, and which :func:`to_sitk` exports as ITK's transform domain.

Arrays. A :class:`ControlGrid` lists origin, spacing and number of control points in ``(x, y[,
z])`` order; coefficients are an array ``(n, *shape[::-1])`` = ``(2, ny, nx)`` or ``(3, nz, ny,
nx)``: component first (``u_x, u_y[, u_z]``), then the control points in array order, like a
``(C, H, W)`` image.

Operations. :meth:`BSplineTransform.fixed_to_moving` is exact; :meth:`~BSplineTransform.
moving_to_fixed` solves ``q + u(q) = m`` by Newton's method to a residual of
:data:`INVERSE_TOLERANCE` px (NaN where it does not converge); :meth:`~BSplineTransform.warp`
pulls back with ``grid_sample`` on any device. :class:`DenseField` is the differentiable dense
field for an optimiser (separable matrix products, or one ``grid_sample`` of the coefficients);
:func:`bending_energy` is the thin-plate energy in closed form; :func:`refine_coefficients`
halves the spacing exactly (B-spline subdivision), :func:`crop_coefficients` drops the control
points that do not reach a box, :meth:`~BSplineTransform.resampled` moves to
any other grid by least squares. Storage: :meth:`~BSplineTransform.save` / ``load`` (``.npz``
beside the record, which references it by name) or coefficients embedded in the record when
few (:meth:`~BSplineTransform.to_dict`). :func:`to_sitk` exports to SimpleITK and
:func:`from_sitk` reads that form back; :meth:`~BSplineTransform.fit` approximates any other
mapping by least squares.

Volumes work through the same code (generic in the dimension); the ITK export is in voxel units
(mibench's coordinates taken as ITK physical points), not LPS millimetres.
"""

from mibench.bspline.ffd import (
    EMBED_LIMIT,
    INVERSE_ITERATIONS,
    INVERSE_TOLERANCE,
    BSplineTransform,
    fit_coefficients,
    fixed_box,
    from_sitk,
    to_sitk,
)
from mibench.bspline.field import (
    DenseField,
    FieldSampler,
    axis_matrix,
    displacement_field,
    field_at,
    field_on_grid,
    fixed_grid_points,
)
from mibench.bspline.grid import (
    ControlGrid,
    bending_energy,
    crop_coefficients,
    cubic_bspline,
    cubic_weights,
    evaluate,
    local_support,
    refine_coefficients,
)

__all__ = [
    "BSplineTransform",
    "ControlGrid",
    "DenseField",
    "EMBED_LIMIT",
    "FieldSampler",
    "INVERSE_ITERATIONS",
    "INVERSE_TOLERANCE",
    "axis_matrix",
    "bending_energy",
    "crop_coefficients",
    "cubic_bspline",
    "cubic_weights",
    "displacement_field",
    "evaluate",
    "field_at",
    "field_on_grid",
    "fit_coefficients",
    "fixed_box",
    "fixed_grid_points",
    "from_sitk",
    "local_support",
    "refine_coefficients",
    "to_sitk",
]
