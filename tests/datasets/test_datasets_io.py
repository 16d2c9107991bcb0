"""Shared dataset I/O: paths inside the data directory, images, landmark files, resampling."""

import numpy as np
import pandas as pd
import pytest
from helpers.datasets import blob_image, save, write_landmarks_csv, write_pts

from mibench.datasets.io import (
    check_data_dir,
    common_prefix,
    downscale,
    find_table,
    image_size,
    read_image,
    read_points,
    resolve_inside,
    working_shape,
    write_points_csv,
)
from mibench.errors import UserError


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


def test_resolve_inside_refuses_escapes(tmp_path):
    assert resolve_inside(tmp_path, "a/b/../c.png", "t.csv, row 0") == tmp_path / "a" / "c.png"
    with pytest.raises(UserError, match=r"t.csv, row 3: path '../x.png' escapes"):
        resolve_inside(tmp_path, "../x.png", "t.csv, row 3")
    with pytest.raises(UserError, match="escapes"):
        resolve_inside(tmp_path, "a/../../x.png", "t.csv, row 3")
    with pytest.raises(UserError, match="absolute"):
        resolve_inside(tmp_path, "/etc/passwd", "t.csv, row 3")


def test_read_points_formats_agree(tmp_path):
    pts = np.array([[1.5, 2.0], [10.25, 3.0], [7.0, 8.5]])
    csv = write_landmarks_csv(tmp_path / "a.csv", pts)
    pts_file = write_pts(tmp_path / "a.pts", pts)
    txt = tmp_path / "a.txt"
    np.savetxt(txt, pts)
    for path in (csv, pts_file, txt):
        np.testing.assert_array_equal(read_points(path, 2), pts)
    # The ANHIR reader's own way (pandas, index column) agrees with ours.
    np.testing.assert_array_equal(pd.read_csv(csv, index_col=0)[["X", "Y"]].to_numpy(), pts)
    out = tmp_path / "w" / "b.csv"
    write_points_csv(out, pts)
    assert out.read_text().splitlines()[0] == ",X,Y"
    np.testing.assert_array_equal(pd.read_csv(out, index_col=0)[["X", "Y"]].to_numpy(), pts)
    assert pd.read_csv(out, index_col=0).index.tolist() == [1, 2, 3]


@pytest.mark.parametrize("content, name, message", [
    ("1 2 3\n4 5 6\n", "p.txt", r"line 1: expected 2 numbers per line"),
    ("1 2\n4 x\n", "p.txt", r"line 2: expected numbers"),
    ("", "p.txt", r"no landmarks"),
    (",A,B\n1,2,3\n", "p.csv", r"expected a CSV header with columns X and Y"),
    (",X,Y\n1,2\n", "p.csv", r"line 2: expected 3 comma-separated columns"),
    ("point\n3\n1 2\n3 4\n", "p.pts", r"header says 3 points, the file has 2"),
    ("1 2\n", "p.pts", r"expected a .pts file"),
])
def test_bad_landmark_files_name_the_file_and_problem(tmp_path, content, name, message):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(UserError, match=message) as info:
        read_points(path, 2)
    assert str(info.value).startswith(str(path)) and "\n" not in str(info.value)


def test_missing_landmark_file(tmp_path):
    with pytest.raises(UserError, match="landmark file not found"):
        read_points(tmp_path / "nope.csv")


def test_common_prefix_warns_and_notes():
    notes = []
    f, m = np.zeros((5, 2)), np.ones((3, 2))
    with pytest.warns(UserWarning, match="5 fixed and 3 moving landmarks; using the first 3"):
        f2, m2 = common_prefix(f, m, "pair x", notes)
    assert len(f2) == len(m2) == 3 and "pair x" in notes[0]


def test_images_grey_green_rgb_and_16_bit(tmp_path):
    rgb = blob_image((30, 40), np.array([[10, 12]]), rgb=True)
    path = save(tmp_path / "a.png", rgb)
    assert image_size(path) == (30, 40)
    np.testing.assert_allclose(read_image(path, "rgb"), rgb / 255.0, atol=1e-6)
    np.testing.assert_allclose(read_image(path, "green"), rgb[..., 1] / 255.0, atol=1e-6)
    luma = rgb @ np.array([0.299, 0.587, 0.114])
    np.testing.assert_allclose(read_image(path, "grey"), luma / 255.0, atol=1e-5)
    deep = (np.arange(1200, dtype=np.uint16).reshape(30, 40) * 50)
    path16 = save(tmp_path / "b.png", deep)
    np.testing.assert_allclose(read_image(path16), deep / 65535.0, atol=1e-6)


def test_truncated_and_unreadable_images(tmp_path):
    for suffix in (".jpg", ".png"):
        noise = np.random.default_rng(0).integers(0, 256, (128, 128), dtype=np.uint8)
        good = save(tmp_path / f"g{suffix}", noise)  # noise: the header is a small part
        cut = tmp_path / f"cut{suffix}"
        cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
        with pytest.raises(UserError, match=r"cut\.(jpg|png): truncated"):
            image_size(cut)
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"this is not an image")
    with pytest.raises(UserError, match="junk.jpg: cannot read image"):
        read_image(junk)
    with pytest.raises(UserError, match="image file not found"):
        image_size(tmp_path / "missing.png")


def test_dark_16_bit_image_keeps_the_16_bit_range(tmp_path):
    # Every value fits in 8 bits, but the file is 16-bit: scaling it as 8-bit would make it
    # 257 times brighter than a brighter 16-bit image of the same pair.
    dark = (np.arange(1200, dtype=np.uint16).reshape(30, 40) % 200)
    path = save(tmp_path / "dark.png", dark)
    np.testing.assert_allclose(read_image(path), dark / 65535.0, atol=1e-7)
    tif = save(tmp_path / "dark.tif", dark)
    np.testing.assert_allclose(read_image(tif), dark / 65535.0, atol=1e-7)


def test_jpeg_with_data_after_the_image_is_complete(tmp_path):
    noise = np.random.default_rng(1).integers(0, 256, (64, 64), dtype=np.uint8)
    good = save(tmp_path / "g.jpg", noise)
    trailer = tmp_path / "trailer.jpg"  # as some cameras write: data after the end marker
    trailer.write_bytes(good.read_bytes() + bytes(range(256)) * 4)
    assert image_size(trailer) == (64, 64)
    np.testing.assert_array_equal(read_image(trailer), read_image(good))
    cut = tmp_path / "cut.jpg"  # cut short, with the same trailer-sized tail of junk
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2] + bytes(range(256)))
    with pytest.raises(UserError, match=r"cut\.jpg: truncated JPEG"):
        image_size(cut)


def test_list_shows_each_dataset_layout_and_source():
    from helpers.datasets import invoke

    result = invoke("list")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    for name, layout, source in (
        ("fire", "Ground Truth/control_points_<C><NN>_1_2.txt", "projects.ics.forth.gr"),
        ("anhir", "<tissue>_<k>/scale-<P>pc/<name>.jpg|png", "anhir.grand-challenge.org"),
        ("cover", "'Target image', 'Source image'", "your own data"),
        ("nifti", "a CSV manifest", "your own data"),
    ):
        start = next(i for i, line in enumerate(lines) if line.split()[:1] == [name])
        block = "\n".join(lines[start + 1: start + 4])
        assert "layout:" in block and layout in block, block
        assert "get it:" in block and source in block, block


def test_folders_where_files_are_expected_say_so(tmp_path):
    """A folder is not "not found": the message says what it is."""
    (tmp_path / "imgs").mkdir()
    with pytest.raises(UserError, match=r"imgs: target image path is a folder, not a file$"):
        image_size(tmp_path / "imgs", "target image")
    with pytest.raises(UserError, match=r"imgs: image path is a folder, not a file$"):
        read_image(tmp_path / "imgs")
    with pytest.raises(UserError, match=r"imgs: landmark path is a folder, not a file$"):
        read_points(tmp_path / "imgs")
    with pytest.raises(UserError, match=r"imgs: cover table path is a folder, not a file "
                                        r"\(-o table=PATH\)"):
        find_table(tmp_path, "imgs")


def test_check_data_dir(tmp_path):
    assert check_data_dir(tmp_path, "cover") == tmp_path
    (tmp_path / "file.csv").write_text("x\n")
    with pytest.raises(UserError, match=r"file\.csv: data directory is a file, not a "
                                        r"directory"):
        check_data_dir(tmp_path / "file.csv", "cover")
    with pytest.raises(UserError, match=r"nowhere: data directory does not exist"):
        check_data_dir(tmp_path / "nowhere", "cover")


def test_table_of_the_same_name_in_two_places_is_refused(tmp_path, monkeypatch):
    """ANHIR's default table name in the data folder and a stray copy where the command runs:
    neither is taken silently; the same file reached both ways is fine."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "dataset_medium.csv").write_text("a\n")
    monkeypatch.chdir(tmp_path)
    assert find_table(data, "dataset_medium.csv") == (data / "dataset_medium.csv").resolve()
    monkeypatch.chdir(data)
    assert find_table(data, "dataset_medium.csv") == (data / "dataset_medium.csv").resolve()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "dataset_medium.csv").write_text("b\n")
    monkeypatch.chdir(elsewhere)
    with pytest.raises(UserError, match=r"dataset_medium\.csv: two cover tables of that name, "
                                        r".*elsewhere.* and .*data.*absolute path"):
        find_table(data, "dataset_medium.csv")
    assert find_table(data, str(elsewhere / "dataset_medium.csv")).parent == elsewhere
