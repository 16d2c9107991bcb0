"""The one reader of image and landmark files (:mod:`mibench.io`), checked against files written
independently (Pillow, tifffile, numpy, the csv module); and ``mibench estimate`` reading a file
exactly as a dataset run does."""

import csv
import warnings

import numpy as np
import pandas as pd
import pytest
import tifffile
from helpers.datasets import blob_image, invoke, save, write_landmarks_csv, write_pts, write_table

import mibench
from mibench.callables import Estimator
from mibench.io import image_size, read_image, read_mask, read_points, write_points_csv

# ----------------------------------------------------------------------------------- images


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
    with pytest.raises(ValueError, match=r"channels must be one of grey, green, rgb; got 'red'"):
        read_image(path, "red")


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")  # Pillow on the broken TIFF below
def test_truncated_and_unreadable_images(tmp_path):
    for suffix in (".jpg", ".png"):
        noise = np.random.default_rng(0).integers(0, 256, (128, 128), dtype=np.uint8)
        good = save(tmp_path / f"g{suffix}", noise)  # noise: the header is a small part
        cut = tmp_path / f"cut{suffix}"
        cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
        with pytest.raises(ValueError, match=r"cut\.(jpg|png): truncated"):
            image_size(cut)
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"this is not an image")
    with pytest.raises(ValueError, match="junk.jpg: cannot read image"):
        read_image(junk)
    with pytest.raises(ValueError, match="image file not found"):
        image_size(tmp_path / "missing.png")
    bad_tiff = tmp_path / "bad.tif"  # a TIFF signature and nothing readable after it
    bad_tiff.write_bytes(b"II*\x00" + b"\xff" * 60)
    with pytest.raises(ValueError, match=r"bad\.tif: cannot read image: not a readable image "
                                         r"file"):
        read_image(bad_tiff)


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
    with pytest.raises(ValueError, match=r"cut\.jpg: truncated JPEG"):
        image_size(cut)


def test_folders_where_files_are_expected_say_so(tmp_path):
    """A folder is not "not found": the message says what it is."""
    (tmp_path / "imgs").mkdir()
    with pytest.raises(ValueError, match=r"imgs: target image path is a folder, not a file$"):
        image_size(tmp_path / "imgs", "target image")
    with pytest.raises(ValueError, match=r"imgs: image path is a folder, not a file$"):
        read_image(tmp_path / "imgs")
    with pytest.raises(ValueError, match=r"imgs: landmark path is a folder, not a file$"):
        read_points(tmp_path / "imgs")


@pytest.mark.parametrize("planar", ["contig", "separate"])
def test_16_bit_colour_tiff_keeps_every_bit(tmp_path, planar):
    """Pillow reads a 16-bit RGB TIFF as 8-bit (and garbled); tifffile keeps it. Either planar
    layout gives (H, W, 3)."""
    rgb = np.random.default_rng(2).integers(0, 65536, (20, 30, 3), dtype=np.uint16)
    data = rgb if planar == "contig" else np.moveaxis(rgb, -1, 0)
    path = tmp_path / "rgb16.tif"
    tifffile.imwrite(path, data, photometric="rgb", planarconfig=planar)
    assert image_size(path) == (20, 30)
    out = read_image(path, "rgb")
    assert out.shape == (20, 30, 3) and out.dtype == np.float32
    np.testing.assert_array_equal(out, rgb.astype(np.float32) / np.float32(65535))
    np.testing.assert_array_equal(read_image(path, "green"),
                                  rgb[..., 1].astype(np.float32) / np.float32(65535))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_float_tiffs_keep_their_values(tmp_path, dtype):
    rng = np.random.default_rng(3)
    grey = rng.uniform(0, 1, (12, 17)).astype(dtype)
    grey[0, 0], grey[0, 1] = 0.0, 1.0
    tifffile.imwrite(tmp_path / "grey.tif", grey)
    np.testing.assert_array_equal(read_image(tmp_path / "grey.tif"), grey.astype(np.float32))
    rgb = rng.uniform(0, 1, (12, 17, 3)).astype(dtype)
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb")
    assert image_size(tmp_path / "rgb.tif") == (12, 17)
    np.testing.assert_array_equal(read_image(tmp_path / "rgb.tif", "rgb"), rgb.astype(np.float32))
    f = rgb.astype(np.float32)
    luma = 0.299 * f[..., 0] + 0.587 * f[..., 1] + 0.114 * f[..., 2]
    np.testing.assert_allclose(read_image(tmp_path / "rgb.tif", "grey"), luma, rtol=1e-6)


def test_big_endian_and_compressed_tiffs(tmp_path):
    """A big-endian 16-bit TIFF keeps the 16-bit range (Pillow gives ">u2", which the 16-bit rule
    missed: a dark one was scaled as 8-bit); an LZW float TIFF (a compression tifffile needs the
    optional imagecodecs for) is read exactly through Pillow."""
    from PIL import Image

    dark = (np.arange(120, dtype=np.uint16).reshape(10, 12) % 200)
    tifffile.imwrite(tmp_path / "be16.tif", dark, byteorder=">")
    np.testing.assert_array_equal(read_image(tmp_path / "be16.tif"),
                                  dark.astype(np.float32) / np.float32(65535))
    grey = np.random.default_rng(7).uniform(0, 1, (10, 12)).astype(np.float32)
    tifffile.imwrite(tmp_path / "bef.tif", grey, byteorder=">")
    np.testing.assert_array_equal(read_image(tmp_path / "bef.tif"), grey)
    Image.fromarray(grey, "F").save(tmp_path / "lzw.tif", compression="tiff_lzw")
    assert tifffile.TiffFile(tmp_path / "lzw.tif").pages[0].compression == 5  # LZW
    np.testing.assert_array_equal(read_image(tmp_path / "lzw.tif"), grey)


def test_float_images_outside_the_unit_range_are_refused(tmp_path):
    """A float image is taken as intensities in [0, 1]: one in Hounsfield units or raw counts
    would be clipped to nonsense, and rescaling it would scale the two images of a pair
    differently. A rounding past 1 is clipped."""
    wide = np.linspace(-3.5, 1200.0, 60, dtype=np.float32).reshape(6, 10)
    tifffile.imwrite(tmp_path / "wide.tif", wide)
    with pytest.raises(ValueError, match=r"wide\.tif: float image has values in \[-3\.5, "
                                         r"1200\]; float images must hold intensities in "
                                         r"\[0, 1\]$"):
        read_image(tmp_path / "wide.tif")
    nan = np.zeros((6, 10), np.float32)
    nan[2, 3] = np.nan
    tifffile.imwrite(tmp_path / "nan.tif", nan)
    with pytest.raises(ValueError, match=r"nan\.tif: float image has NaN or infinite pixels"):
        read_image(tmp_path / "nan.tif")
    rounded = np.full((6, 10), 1 + 1e-7, np.float32)
    tifffile.imwrite(tmp_path / "rounded.tif", rounded)
    assert read_image(tmp_path / "rounded.tif").max() == 1.0


def test_masks_from_any_image_file(tmp_path):
    disc = np.hypot(*np.mgrid[-9.5:10.5, -14.5:15.5]) < 8
    for name, pixels in (("m.png", (disc * 255).astype(np.uint8)),
                         ("m16.tif", (disc * 4000).astype(np.uint16)),
                         ("mf.tif", disc.astype(np.float32) * 0.7)):
        if name.endswith(".png"):
            save(tmp_path / name, pixels)
        else:
            tifffile.imwrite(tmp_path / name, pixels)
        np.testing.assert_array_equal(read_mask(tmp_path / name), disc)
    tifffile.imwrite(tmp_path / "empty.tif", np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError, match=r"empty\.tif: mask is empty"):
        read_mask(tmp_path / "empty.tif")


def test_an_image_over_the_decompression_bomb_limit_is_one_line(tmp_path, monkeypatch):
    """Pillow refuses more than twice MAX_IMAGE_PIXELS (about 179 MP) as a possible
    decompression bomb; every format gets one line naming the file, TIFFs read with tifffile
    included, before anything is decoded. Between one and two times the limit Pillow only
    warns, and a large scan is legitimate: it is read without the alarming warning."""
    from PIL import Image

    zeros = np.zeros((50, 50), np.uint8)
    big = [save(tmp_path / "big.png", zeros), save(tmp_path / "big.jpg", zeros),
           save(tmp_path / "big.tif", zeros)]
    tifffile.imwrite(tmp_path / "big16.tif", np.zeros((50, 50, 3), np.uint16), photometric="rgb")
    big.append(tmp_path / "big16.tif")
    medium = save(tmp_path / "medium.png", np.zeros((40, 40), np.uint8))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # refused above 2000 pixels
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_image(medium).shape == (40, 40)  # 1600 pixels
    for path in big:
        for read in (image_size, read_image):
            with pytest.raises(ValueError) as info:
                read(path)
            assert str(info.value) == (f"{path}: image has 2,500 pixels, over Pillow's "
                                       "decompression-bomb limit of 2,000; use a smaller copy "
                                       "of it (e.g. a lower scale)")
    result = invoke("estimate", "-e", "mse", big[0], medium)
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [f"mibench: error: {big[0]}: image has 2,500 "
                                                  "pixels, over Pillow's decompression-bomb "
                                                  "limit of 2,000; use a smaller copy of it "
                                                  "(e.g. a lower scale)"]
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # the user's way to lift the limit
    assert image_size(big[0]) == (50, 50)


# -------------------------------------------------------------------- the same arrays as a run


def _spy_on_estimators(monkeypatch) -> list:
    """Record the arrays every estimator call receives."""
    seen = []
    call = Estimator.__call__

    def spy(self, fixed, moving, mask=None):
        seen.append((fixed, moving))
        return call(self, fixed, moving, mask)

    monkeypatch.setattr(Estimator, "__call__", spy)
    return seen


@pytest.mark.parametrize("channels", ["grey", "rgb"])
def test_estimate_reads_images_as_a_dataset_run_does(tmp_path, monkeypatch, channels):
    """A colour PNG against a 16-bit grey PNG and against another colour PNG: ``mibench
    estimate`` hands the estimator exactly the arrays a run's dataset loads, and prints the
    value of the estimator on them (it used skimage.io and a channel mean: another grey
    image than a run's luma)."""
    from mibench.callables import open_dataset
    from mibench.registry import Registry

    rng = np.random.default_rng(4)
    save(tmp_path / "colour.png", rng.integers(0, 256, (24, 32, 3), dtype=np.uint8))
    save(tmp_path / "deep.png", rng.integers(0, 65536, (24, 32), dtype=np.uint16))
    save(tmp_path / "colour2.png", rng.integers(0, 256, (24, 32, 3), dtype=np.uint8))
    table = write_table(tmp_path / "pairs.csv", [("colour.png", "deep.png"),
                                                  ("colour.png", "colour2.png")])
    spec = Registry().get("dataset", "cover")
    ds = open_dataset(spec, tmp_path, {"table": str(table), "channels": channels}).dataset
    seen = _spy_on_estimators(monkeypatch)
    for pair_id, moving in (("000", "deep.png"), ("001", "colour2.png")):
        pair = ds.load(pair_id)
        result = invoke("estimate", "-e", "mse", "--channels", channels,
                        tmp_path / "colour.png", tmp_path / moving)
        assert result.exit_code == 0, result.output
        fixed_seen, moving_seen = seen.pop()
        assert fixed_seen.dtype == moving_seen.dtype == np.float32
        np.testing.assert_array_equal(fixed_seen, pair.fixed)
        np.testing.assert_array_equal(moving_seen, pair.moving)
        expected = mibench.estimator("mse")(pair.fixed, pair.moving)
        assert result.stdout.strip() == f"mse {expected:.6g} (lower is more similar)"
    if channels == "grey":  # the default
        result = invoke("estimate", "-e", "mse", tmp_path / "colour.png", tmp_path / "deep.png")
        np.testing.assert_array_equal(seen.pop()[0], ds.load("000").fixed)


# -------------------------------------------------------------------------------- landmarks


def test_read_points_formats_agree(tmp_path):
    pts = np.array([[1.5, 2.0], [10.25, 3.0], [7.0, 8.5]])
    csv_file = write_landmarks_csv(tmp_path / "a.csv", pts)
    pts_file = write_pts(tmp_path / "a.pts", pts)
    txt = tmp_path / "a.txt"
    np.savetxt(txt, pts)
    for path in (csv_file, pts_file, txt):
        np.testing.assert_array_equal(read_points(path, 2), pts)
    # The ANHIR reader's own way (pandas, index column) agrees with ours.
    np.testing.assert_array_equal(pd.read_csv(csv_file, index_col=0)[["X", "Y"]].to_numpy(), pts)
    out = tmp_path / "w" / "b.csv"
    write_points_csv(out, pts)
    assert out.read_text().splitlines()[0] == ",X,Y"
    np.testing.assert_array_equal(pd.read_csv(out, index_col=0)[["X", "Y"]].to_numpy(), pts)
    assert pd.read_csv(out, index_col=0).index.tolist() == [1, 2, 3]


def test_written_points_read_back_exactly(tmp_path):
    pts = np.random.default_rng(5).uniform(-1e3, 1e4, (50, 2))
    write_points_csv(tmp_path / "p.csv", pts)
    np.testing.assert_array_equal(read_points(tmp_path / "p.csv", 2), pts)


def test_quoted_csv_fields(tmp_path):
    """Spreadsheets quote every field, and a text column may hold a comma: the csv module's
    rules, not a split on commas."""
    pts = np.random.default_rng(6).uniform(0, 500, (7, 2))
    quoted = tmp_path / "quoted.csv"
    with open(quoted, "w", newline="") as fh:
        writer = csv.writer(fh, quoting=csv.QUOTE_ALL)
        writer.writerow(["", "X", "Y"])
        writer.writerows([i, repr(x), repr(y)] for i, (x, y) in enumerate(pts.tolist()))
    assert quoted.read_text().splitlines()[1].startswith('"0","')
    np.testing.assert_array_equal(read_points(quoted, 2), pts)
    other = tmp_path / "other.csv"  # other column order, a note with a comma in quotes
    with open(other, "w", newline="") as fh:
        writer = csv.writer(fh, quoting=csv.QUOTE_MINIMAL)
        writer.writerow(["id", "note", "y", "x"])
        writer.writerows([i, f"point {i}, checked", repr(y), repr(x)]
                         for i, (x, y) in enumerate(pts.tolist()))
    np.testing.assert_array_equal(read_points(other, 2), pts)


def test_headerless_csv_files(tmp_path):
    """Without a header a .csv is plain numbers; exponents (1e-3 has a letter) and quoted numbers
    are numbers, not a header."""
    plain = tmp_path / "plain.csv"
    plain.write_text("1.5e2,3\n4,5E-1\n")
    np.testing.assert_array_equal(read_points(plain, 2), [[150.0, 3.0], [4.0, 0.5]])
    quoted = tmp_path / "quoted.csv"
    quoted.write_text('"1.25","2"\n"3","4.5"\n')
    np.testing.assert_array_equal(read_points(quoted, 2), [[1.25, 2.0], [3.0, 4.5]])
    spaced = tmp_path / "spaced.csv"
    spaced.write_text("1 2\n3 4\n")
    np.testing.assert_array_equal(read_points(spaced, 2), [[1.0, 2.0], [3.0, 4.0]])


@pytest.mark.parametrize("content, name, message", [
    ("1 2 3\n4 5 6\n", "p.txt", r"line 1: expected 2 numbers per line"),
    ("1 2\n4 x\n", "p.txt", r"line 2: expected numbers"),
    ("", "p.txt", r"no landmarks"),
    (",A,B\n1,2,3\n", "p.csv", r"expected a CSV header with columns X and Y"),
    (",X,Y\n1,2\n", "p.csv", r"line 2: expected 3 comma-separated columns"),
    ('"X","Y"\n"1","two"\n', "p.csv", r"line 2: expected numbers in columns X, Y"),
    ("X,Y\n1,inf\n", "p.csv", r"landmark coordinates must be finite numbers"),
    ("point\n3\n1 2\n3 4\n", "p.pts", r"header says 3 points, the file has 2"),
    ("1 2\n", "p.pts", r"expected a .pts file"),
])
def test_bad_landmark_files_name_the_file_and_problem(tmp_path, content, name, message):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(ValueError, match=message) as info:
        read_points(path, 2)
    assert str(info.value).startswith(str(path)) and "\n" not in str(info.value)


def test_missing_landmark_file(tmp_path):
    with pytest.raises(ValueError, match="landmark file not found"):
        read_points(tmp_path / "nope.csv")
