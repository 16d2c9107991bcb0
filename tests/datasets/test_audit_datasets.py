"""Audit of the dataset readers against independent references (by-hand files and closed forms)."""

import numpy as np
from helpers.datasets import make_nifti

import mibench
from mibench.pairs import check_pair


def test_nifti_fixed_only_voxel_landmarks_are_projected_onto_the_slice(tmp_path):
    """A manifest with fixed voxel landmarks (i j k) and no moving ones: the pair is registered,
    not scored, and its fixed landmarks follow the documented projection, worked out by hand:
    rows with |k - 2| <= 0.5 kept, pixel (x, y) = (j, i). They used to stay (K, 3), so every
    task of the pair failed the pair contract."""
    make_nifti(tmp_path)  # fixed_voxels: (3, 4, 2), (10, 15, 2.2), (12, 6, 4), (16, 20, 1.8)
    (tmp_path / "fixed_only.csv").write_text("fixed,moving,fixed_landmarks\n"
                                             "t1.nii.gz,t2.nii.gz,t1_points.txt\n")
    ds = mibench.dataset("nifti", str(tmp_path), manifest="fixed_only.csv", index=2)
    pair = check_pair(ds.load("000"), "000")
    expected = [[4.0, 3.0], [15.0, 10.0], [20.0, 16.0]]  # rows 0, 1, 3 of fixed_voxels as (j, i)
    np.testing.assert_allclose(pair.fixed_landmarks, expected)
    assert pair.moving_landmarks is None
