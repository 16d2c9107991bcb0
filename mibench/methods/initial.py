"""Where the local methods start: the identity (of pixels, or of the world for volumes with a
geometry), or a global rigid search by CMIF.

Gradient methods and DRMIME only refine: their similarity has a capture range of a few pixels to
a few tens of pixels around the optimum (for DRMIME on stain-separated histology, under 5 px, see
``docs/performance.md``). ``init="cmif"`` first runs the exhaustive rigid search of
:func:`mibench.methods.cmif.rigid_align` (every rotation on a grid, every translation at once)
and starts the local optimisation from its result: global search, then local refinement.

:func:`start_matrix` is the one definition of "no registration" that the engines, DRMIME and the
``identity`` method share: for volumes whose fixed and moving geometries are both known, the
*world* identity (fixed voxel -> world -> moving voxel, ``inv(A_moving) @ A_fixed``), since two
scans of one head are aligned in the scanner's millimetres, not voxel by voxel; otherwise (every
2-D pair, and volumes without geometry) the pixel identity, as before.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from mibench.errors import check_choice
from mibench.methods.options import INITS


def start_matrix(ndim: int, fixed_geometry: Any = None, moving_geometry: Any = None
                 ) -> np.ndarray:
    """The identity transform ``(ndim + 1, ndim + 1)`` float64, fixed voxel -> moving voxel.

    Parameters
    ----------
    ndim : {2, 3}
        Spatial dimensions of the pair.
    fixed_geometry, moving_geometry : mibench.geometry.Geometry, optional
        Read only for volumes (``ndim == 3``) when both are given: the world identity
        (:func:`mibench.metrics.start_transform`, which also gives the initial errors). A 2-D
        pair, or a volume pair on one grid, starts at the exact pixel identity.
    """
    from mibench.metrics import start_transform  # the one definition, shared with scoring

    if ndim not in (2, 3):
        raise ValueError(f"a pair is 2-D or 3-D, got ndim={ndim!r}")
    start = start_transform(ndim, fixed_geometry, moving_geometry)
    return np.eye(ndim + 1) if start is None else np.array(start.matrix, dtype=np.float64)


def initial_matrix(init: str, fixed: torch.Tensor, moving: torch.Tensor,
                   fixed_mask: torch.Tensor | None = None,
                   moving_mask: torch.Tensor | None = None, *, seed: int = 0,
                   fixed_geometry: Any = None, moving_geometry: Any = None) -> np.ndarray:
    """The starting transform ``(3, 3)`` or ``(4, 4)`` float64, fixed voxel -> moving voxel.

    Parameters
    ----------
    init : {"identity", "cmif"}
        ``"identity"``: :func:`start_matrix` (the pixel identity, or the world identity of a
        volume with geometry). ``"cmif"``: the rigid transform that maximises CMIF's mutual
        information: rotation over the full circle and every translation for images, a
        coarse rotation grid about the three axes and every translation for volumes
        (:func:`mibench.methods.cmif_volumes.rigid_search_3d`).
    fixed, moving : Tensor ``(1, C, H, W)`` or ``(1, C, D, H, W)``
        The images as the method received them (sizes may differ).
    fixed_mask, moving_mask : bool Tensor ``(1, 1, ...)``, optional
        Valid voxels.
    seed : int
        Seed of CMIF's quantiser (only k-means uses it).
    fixed_geometry, moving_geometry : mibench.geometry.Geometry, optional
        For :func:`start_matrix`.
    """
    check_choice("init", init, INITS)
    if init == "identity":
        return start_matrix(fixed.dim() - 2, fixed_geometry, moving_geometry)
    from mibench.methods.cmif import rigid_align
    from mibench.methods.cmif_volumes import rigid_search_3d

    if fixed.dim() == 5:
        # Volumes: CMIF's coarse 3-D rotation grid (+-15 deg) with every translation.
        found = rigid_search_3d(fixed, moving, fixed_mask, moving_mask, seed=seed,
                                fixed_geometry=fixed_geometry, moving_geometry=moving_geometry)
        return np.asarray(found.matrix, dtype=np.float64)
    return np.asarray(rigid_align(fixed, moving, fixed_mask, moving_mask, seed=seed).matrix,
                      dtype=np.float64)
