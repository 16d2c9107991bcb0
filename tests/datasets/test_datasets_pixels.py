"""Pixel operations shared by the datasets: working-scale resampling, intensity normalisation."""

import numpy as np
import pytest

from mibench.datasets.pixels import downscale, rescale_percentiles, working_shape


@pytest.mark.parametrize("scale", [0.25, 0.5, 0.3])
def test_downscale_maps_working_pixel_to_native_position_exactly(scale):
    """A linear ramp survives the Gaussian anti-aliasing unchanged, so working pixel (x, y) must
    hold the ramp's value at native (x / s, y / s): a half-pixel convention error would show."""
    h, w = 120, 160
    ys, xs = np.mgrid[:h, :w].astype(np.float64)
    a, b, c = 0.8 / w, 0.1 / h, 0.05
    ramp = (a * xs + b * ys + c).astype(np.float32)
    out = downscale(ramp, scale)
    assert out.shape == working_shape((h, w), scale) == (round(h * scale), round(w * scale))
    wy, wx = np.mgrid[: out.shape[0], : out.shape[1]].astype(np.float64)
    expected = a * wx / scale + b * wy / scale + c
    # Away from the edges, where the blur's edge padding bends the ramp.
    margin = int(np.ceil(4 * (1 / scale - 1) / 2 * scale)) + 2
    inner = (slice(margin, out.shape[0] - margin), slice(margin, out.shape[1] - margin))
    np.testing.assert_allclose(out[inner], expected[inner], atol=1e-5)


def test_downscale_keeps_colour_masks_and_identity():
    img = np.random.default_rng(0).uniform(size=(40, 30, 3)).astype(np.float32)
    assert downscale(img, 1.0) is img
    small = downscale(img, 0.5)
    assert small.shape == (20, 15, 3) and small.dtype == np.float32
    mask = np.zeros((40, 30), bool)
    mask[10:30, 4:20] = True
    # Nearest sampling at native (2x, 2y): exactly the subsampled mask.
    np.testing.assert_array_equal(downscale(mask, 0.5, order=0), mask[::2, ::2])


def test_rescale_percentiles_by_hand():
    """0..99 with the 10th and 90th percentiles (9.9 and 89.1 by linear interpolation) mapped
    to 0 and 1; ``where`` restricts the percentiles, not the output; a constant image is 0."""
    values = np.arange(100, dtype=np.float64).reshape(10, 10)
    out = rescale_percentiles(values, (10, 90))
    assert out.dtype == np.float32 and out.shape == (10, 10)
    np.testing.assert_allclose(out, np.clip((values - 9.9) / (89.1 - 9.9), 0, 1), rtol=1e-6)
    first_half = values < 50  # 0..49: percentiles 4.9 and 44.1
    out = rescale_percentiles(values, (10, 90), where=first_half)
    np.testing.assert_allclose(out, np.clip((values - 4.9) / (44.1 - 4.9), 0, 1), rtol=1e-6)
    assert out[9, 9] == 1.0 and out[0, 0] == 0.0
    np.testing.assert_array_equal(rescale_percentiles(np.full((3, 4), 7.0)), np.zeros((3, 4)))
