"""Where the local methods start: the pixel identity, or a global rigid search by CMIF.

Gradient methods and DRMIME only refine: their similarity has a capture range of a few pixels to
a few tens of pixels around the optimum (for DRMIME on stain-separated histology, under 5 px, see
``docs/performance.md``). ``init="cmif"`` first runs the exhaustive rigid search of
:func:`mibench.methods.cmif.rigid_align` (every rotation on a grid, every translation at once)
and starts the local optimisation from its result: global search, then local refinement.
"""

from __future__ import annotations

import numpy as np
import torch

from mibench.errors import check_choice
from mibench.methods.options import INITS


def initial_matrix(init: str, fixed: torch.Tensor, moving: torch.Tensor,
                   fixed_mask: torch.Tensor | None = None,
                   moving_mask: torch.Tensor | None = None, *, seed: int = 0) -> np.ndarray:
    """The starting transform ``(3, 3)`` float64, fixed px -> moving px.

    Parameters
    ----------
    init : {"identity", "cmif"}
        ``"identity"``: the pixel identity. ``"cmif"``: the rigid transform (rotation over the
        full circle, translation) that maximises CMIF's mutual information.
    fixed, moving : Tensor ``(1, C, H, W)``
        The images as the method received them (sizes may differ).
    fixed_mask, moving_mask : bool Tensor ``(1, 1, H, W)``, optional
        Valid pixels.
    seed : int
        Seed of CMIF's quantiser (only k-means uses it).
    """
    check_choice("init", init, INITS)
    if init == "identity":
        return np.eye(3)
    from mibench.methods.cmif import rigid_align

    return np.asarray(rigid_align(fixed, moving, fixed_mask, moving_mask, seed=seed).matrix,
                      dtype=np.float64)
