"""drmime[transform=bspline]: DRMIME's affine result, then a B-spline FFD with the same critic."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers.registration import pair_inputs, small_elastic_pair

import mibench
from mibench.bspline import BSplineTransform, ControlGrid
from mibench.deformation import folding_fraction, jacobian_determinant
from mibench.methods.drmime import _prepare_levels, drmime, register_drmime
from mibench.methods.drmime_bspline import _LevelWarp
from mibench.methods.transform_models import pixel_to_normalised, sample_points
from mibench.metrics import landmark_errors

#: Short runs: 150 affine steps (about 1 px on this monomodal 128 px pair), 50 per B-spline level.
FAST = dict(iterations=150, bspline_iterations=50)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One torch thread: on a shared, loaded machine two threads contend and run far slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def elastic_pair():
    return small_elastic_pair()


@pytest.fixture(scope="module")
def results(elastic_pair):
    args = pair_inputs(elastic_pair)
    affine = register_drmime(seed=0, **args, iterations=FAST["iterations"])
    deformable = drmime(seed=0, transform="bspline", grid_spacing=16.0, **args, **FAST)
    return affine, deformable


def test_bspline_beats_affine_without_folding(elastic_pair, results):
    pair = elastic_pair
    affine, deformable = results
    t = deformable.transform
    assert isinstance(t, BSplineTransform) and t.is_valid
    before = np.median(landmark_errors(affine.transform, pair.fixed_landmarks,
                                       pair.moving_landmarks))
    after = np.median(landmark_errors(t, pair.fixed_landmarks, pair.moving_landmarks))
    assert after < 0.6 * before, (before, after)
    det = jacobian_determinant(t, np.asarray(pair.fixed).shape[:2])
    assert folding_fraction(det, pair.fixed_mask) == 0.0
    info = deformable.info
    assert info["transform"] == "bspline" and info["grid_spacing"] == 16.0
    assert info["affine_loss"] == affine.info["final_loss"]
    assert info["bspline_iterations"] == FAST["bspline_iterations"] * info["levels"]
    assert info["bending_energy"] == pytest.approx(t.bending_energy())


def test_zero_iterations_is_the_affine_result(elastic_pair, results):
    affine, _ = results
    out = drmime(seed=0, transform="bspline", **pair_inputs(elastic_pair),
                                  **{**FAST, "bspline_iterations": 0})
    t = out.transform
    assert isinstance(t, BSplineTransform)
    assert not np.any(t.coefficients)
    np.testing.assert_array_equal(t.affine.matrix, affine.transform.matrix)
    assert out.info["bspline_iterations"] == 0
    pts = np.asarray(elastic_pair.fixed_landmarks, dtype=np.float64)
    np.testing.assert_allclose(t.fixed_to_moving(pts), affine.transform.fixed_to_moving(pts),
                               atol=1e-9)


def test_same_seed_same_coefficients(elastic_pair):
    args = pair_inputs(elastic_pair)
    runs = [drmime(seed=3, transform="bspline", iterations=50, bspline_iterations=20, **args)
            for _ in range(2)]
    np.testing.assert_array_equal(runs[0].transform.coefficients,
                                  runs[1].transform.coefficients)
    assert np.any(runs[0].transform.coefficients)


def test_level_warp_matches_the_matrix_warp():
    """At a zero field the stage reads the moving level where DRMIME's matrix warp does
    (an independent path: pixel matrix -> normalised matrix -> sample_points), and a constant
    coefficient shifts every sample by that many moving pixels."""
    gen = torch.Generator().manual_seed(0)
    fixed = torch.rand(1, 1, 48, 64, generator=gen)
    moving = torch.rand(1, 1, 40, 56, generator=gen)
    levels = _prepare_levels(fixed, moving, None, None, levels=2, min_size=16, blur=1.0,
                             sampling="random", fraction=0.2, canny_low=0.0, canny_high=10.0,
                             gen=gen)
    matrix = np.array([[0.9, 0.1, 2.0], [-0.05, 0.8, 3.5], [0.0, 0.0, 1.0]])
    h = torch.as_tensor(pixel_to_normalised(matrix, (48, 64), (40, 56)), dtype=torch.float32)
    grid = ControlGrid((-40.0, -40.0), (16.0, 16.0), (12, 12))
    for level in levels:
        warp = _LevelWarp(level, grid, matrix, (48, 64), (40, 56))
        zero = torch.zeros(grid.coefficient_shape)
        expected = sample_points(level.moving, h, level.points)
        torch.testing.assert_close(warp(zero), expected, atol=1e-5, rtol=0)
        shift = zero.clone()
        shift[0] += 1.5  # u_x = 1.5 px everywhere (the partition of unity)
        moved = matrix.copy()
        moved[0] += [0.0, 0.0, 1.5]
        h_moved = torch.as_tensor(pixel_to_normalised(moved, (48, 64), (40, 56)),
                                  dtype=torch.float32)
        torch.testing.assert_close(warp(shift), sample_points(level.moving, h_moved,
                                                              level.points),
                                   atol=1e-5, rtol=0)


def test_spec_accepts_bspline_and_rejects_volumes(elastic_pair):
    method = mibench.method("drmime", device="cpu", transform="bspline", iterations=20,
                            bspline_iterations=2, levels=2)
    out = method(elastic_pair.fixed, elastic_pair.moving, fixed_mask=elastic_pair.fixed_mask,
                 moving_mask=elastic_pair.moving_mask)
    assert isinstance(out.transform, BSplineTransform)
    assert out.info["bspline_iterations"] == 4 and out.info["levels"] == 2
    # Quiet options: absent from the resolved options (task keys) unless given.
    assert "grid_spacing" not in mibench.method("drmime", device="cpu").params
    volume = torch.rand(1, 1, 16, 16, 16, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="2-D"):
        method(volume, volume)
    with pytest.raises(ValueError, match="2-D"):
        drmime(volume, volume, transform="bspline", iterations=1)
    # The matrix transforms ignore the B-spline options.
    x = torch.rand(1, 1, 64, 64, generator=torch.Generator().manual_seed(1))
    plain = drmime(x, x.roll(2, -1), iterations=5)
    other = drmime(x, x.roll(2, -1), iterations=5, grid_spacing=8.0, bspline_iterations=3)
    np.testing.assert_array_equal(plain.transform.matrix, other.transform.matrix)
