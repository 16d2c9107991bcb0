"""Known transforms for the tests: an affine between two crops of one canvas (the pair the
gradient-method tests register), and matrices with a smooth image for the convention tests."""

import numpy as np
import torch

from mibench.transform import MatrixTransform

SIZE = 128
MARGIN = 48
POINTS = np.array([[25.0, 30.0], [100.0, 20.0], [64.0, 64.0], [30.0, 105.0], [110.0, 100.0]])
FAST = {"iterations": 120, "levels": 3}


def similarity(angle_deg, tx, ty, scale, centre):
    a = np.deg2rad(angle_deg)
    cx, cy = centre
    c = np.array([[1, 0, cx], [0, 1, cy], [0, 0, 1.0]])
    r = np.array([[scale * np.cos(a), -scale * np.sin(a), 0],
                  [scale * np.sin(a), scale * np.cos(a), 0], [0, 0, 1.0]])
    return np.array([[1, 0, tx], [0, 1, ty], [0, 0, 1.0]]) @ c @ r @ np.linalg.inv(c)


def make_pair(canvas, true_t, moving_shape=(SIZE, SIZE)):
    """fixed = centre crop; moving(q) = fixed(T^-1 q), so the fixed -> moving truth is T."""
    shift = np.array([[1, 0, MARGIN], [0, 1, MARGIN], [0, 0, 1.0]])
    fixed = np.ascontiguousarray(canvas[MARGIN:MARGIN + SIZE, MARGIN:MARGIN + SIZE])
    moving = MatrixTransform(shift @ np.linalg.inv(true_t)).warp(canvas, moving_shape)
    return torch.from_numpy(fixed)[None, None], torch.from_numpy(moving)[None, None]


def errors(transform, true_t):
    truth = MatrixTransform(true_t).fixed_to_moving(POINTS)
    return np.linalg.norm(transform.fixed_to_moving(POINTS) - truth, axis=1)


TRUE_T = similarity(5.0, 4.0, -3.0, 1.05, ((SIZE - 1) / 2, (SIZE - 1) / 2))


#: Fixed px -> moving px matrices of the convention tests (warping, normalised coordinates).
AFFINE = np.array([[1.02, 0.05, 3.3], [-0.04, 0.97, -2.1], [0.0, 0.0, 1.0]])
PERSPECTIVE = np.array([[1.02, 0.05, 3.3], [-0.04, 0.97, -2.1], [1e-3, -5e-4, 1.0]])


def smooth_image(shape, seed=0):
    """A random image blurred with sigma 2 px: float32, values about in [0.3, 0.7]."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    return gaussian_filter(rng.random(shape), 2.0).astype(np.float32)


def small_elastic_pair():
    """One monomodal synthetic elastic pair at 128 px (the truth's grid at 32 px, control points
    in +-4 px): what the deformable baselines' tests register."""
    from mibench.datasets import SYNTHETIC
    from mibench.datasets.synthetic import SyntheticDataset

    ds = SyntheticDataset({**SYNTHETIC.defaults(), "transform": "elastic", "pairs": 1,
                           "size": 128, "modality": "none", "elastic_spacing": 32.0,
                           "elastic_amplitude": 4.0})
    return ds.load(ds.pairs()[0].id)


def pair_inputs(pair):
    """A pair's images and masks as a method takes them (CPU tensors, keyword arguments)."""
    from mibench.tensors import image_to_tensor, mask_to_tensor

    return dict(fixed=image_to_tensor(pair.fixed, "cpu"),
                moving=image_to_tensor(pair.moving, "cpu"),
                fixed_mask=mask_to_tensor(pair.fixed_mask, "cpu"),
                moving_mask=mask_to_tensor(pair.moving_mask, "cpu"))
