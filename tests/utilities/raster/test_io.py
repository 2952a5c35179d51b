"""Reading and validating rasters (utilities/raster/io.py) on real files: fake PNG/GeoTIFF and the shared bad pair."""
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import rasterio
from affine import Affine

from tests.utilities.fakes import (
    DEFAULT_TRANSFORM,
    fake_image,
    write_geotiff,
    write_geotiff_pair,
    write_mismatched_pair,
    write_png,
)
from utilities.errors import InputError
from utilities.raster.io import (
    check_pair,
    nodata_mask,
    raster_info,
    read_image,
    read_label,
    read_sample,
    valid_mask,
)

SHARED = Path(__file__).resolve().parents[3] / ".." / "shared" / "data"
MISMATCHED = SHARED / "bad_inputs" / "mismatched_size"


@pytest.fixture
def rgba(tmp_path):
    image = fake_image(12, 10, 4, "uint8", np.random.default_rng(0))
    return write_png(tmp_path / "rgba.png", image), image


def test_png_round_trip_keeps_all_bands_in_rgb_order(rgba):
    path, image = rgba
    out = read_image(path)
    assert out.dtype == np.uint8 and out.shape == (4, 12, 10)
    np.testing.assert_array_equal(out, image)


def test_png_band_selection_and_window(rgba):
    path, image = rgba
    np.testing.assert_array_equal(read_image(path, bands=[3, 1]), image[[2, 0]])
    np.testing.assert_array_equal(read_image(path, window=(2, 3, 5, 4)), image[:, 2:7, 3:7])


def test_single_band_and_16_bit_png(tmp_path):
    image = fake_image(6, 7, 1, "uint16", np.random.default_rng(1))
    out = read_image(write_png(tmp_path / "grey16.png", image[0]))
    assert out.dtype == np.uint16
    np.testing.assert_array_equal(out, image)


def test_geotiff_round_trip_and_band_selection(tmp_path):
    d1, _, _ = write_geotiff_pair(tmp_path, 9, 11, bands=4, dtype="uint16", with_label=False)
    full = read_image(d1)
    assert full.shape == (4, 9, 11) and full.dtype == np.uint16
    np.testing.assert_array_equal(read_image(d1, bands=[4, 2]), full[[3, 1]])
    np.testing.assert_array_equal(read_image(d1, bands=[2], window=(1, 2, 3, 4)), full[1:2, 1:4, 2:6])


def test_band_out_of_range_names_file_and_band_count(tmp_path, rgba):
    d1, _, _ = write_geotiff_pair(tmp_path, 5, 5, bands=3, with_label=False)
    with pytest.raises(InputError, match=rf"cannot select band 4 of {re.escape(str(d1))}: it has 3 band\(s\)"):
        read_image(d1, bands=[1, 4])
    with pytest.raises(InputError, match=r"cannot select band 0 of .*rgba.png: it has 4 band\(s\)"):
        read_image(rgba[0], bands=[0])


def test_window_outside_raster(rgba):
    with pytest.raises(InputError, match=r"does not lie inside .*rgba.png, which is 12x10 \(rows x cols\)"):
        read_image(rgba[0], window=(10, 0, 5, 5))


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_corrupt_file_names_the_file(tmp_path, suffix):
    path = tmp_path / f"garbage{suffix}"
    path.write_bytes(b"this is not an image" * 20)
    with pytest.raises(InputError, match=rf"cannot read (image|raster) {re.escape(str(path))}"):
        read_image(path)
    with pytest.raises(InputError, match=rf"cannot read (image|raster) {re.escape(str(path))}"):
        raster_info(path)


def test_truncated_geotiff(tmp_path):
    d1, _, _ = write_geotiff_pair(tmp_path, 64, 64, with_label=False)
    data = d1.read_bytes()
    d1.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=rf"cannot read raster {re.escape(str(d1))}"):
        read_image(d1)


def test_missing_file_and_unsupported_suffix(tmp_path):
    with pytest.raises(InputError, match=rf"^file not found: {re.escape(str(tmp_path / 'nope.png'))}\.$"):
        read_image(tmp_path / "nope.png")
    (tmp_path / "x.gif").write_bytes(b"GIF89a")
    with pytest.raises(InputError, match=r"unsupported image format of .*x.gif: expected one of .tif, .tiff, .vrt, "
                                         r"\.png"):
        read_image(tmp_path / "x.gif")


def test_float_raster_keeps_nan(tmp_path):
    image = np.ones((1, 4, 4), dtype=np.float32)
    image[0, 1, 2] = np.nan
    out = read_image(write_geotiff(tmp_path / "f.tif", image))
    assert np.isnan(out[0, 1, 2]) and np.isnan(out).sum() == 1


@pytest.mark.parametrize("change", [1, 255])
def test_label_accepts_0_1_and_0_255(tmp_path, change):
    mask = np.zeros((5, 6), dtype=np.uint8)
    mask[1:3, 2:5] = change
    out = read_label(write_png(tmp_path / "label.png", mask))
    assert out.dtype == np.uint8 and out.shape == (5, 6)
    np.testing.assert_array_equal(out, (mask > 0).astype(np.uint8))


def test_label_of_three_identical_bands_and_geotiff(tmp_path):
    mask = np.zeros((5, 6), dtype=np.uint8)
    mask[2:, :3] = 255
    np.testing.assert_array_equal(read_label(write_png(tmp_path / "rgb.png", np.stack([mask] * 3))), mask // 255)
    np.testing.assert_array_equal(read_label(write_geotiff(tmp_path / "l.tif", mask[None])), mask // 255)


def test_non_binary_label_message(tmp_path):
    mask = np.zeros((4, 4), dtype=np.uint8)
    mask[0, 0], mask[1, 1] = 17, 255
    path = write_png(tmp_path / "x.png", mask)
    with pytest.raises(InputError) as error:
        read_label(path)
    assert str(error.value) == f"label {path} is not binary: values [0, 17, 255]; expected 0/1 or 0/255."


def test_label_with_different_bands(tmp_path):
    bands = np.zeros((3, 4, 4), dtype=np.uint8)
    bands[1] = 1
    path = write_png(tmp_path / "rgb.png", bands)
    with pytest.raises(InputError, match=r"label .*rgb.png has 3 bands that differ"):
        read_label(path)


def test_raster_info_png_and_geotiff(tmp_path, rgba):
    info = raster_info(rgba[0])
    assert (info.height, info.width, info.count, info.dtype) == (12, 10, 4, "uint8")
    assert info.crs is None and info.transform is None and info.nodata is None
    d1, _, _ = write_geotiff_pair(tmp_path, 7, 8, bands=2, dtype="float32", nodata=-9999.0, with_label=False)
    info = raster_info(d1)
    assert (info.height, info.width, info.count, info.dtype, info.nodata) == (7, 8, 2, "float32", -9999.0)
    assert info.crs.to_string() == "EPSG:32633" and info.transform == DEFAULT_TRANSFORM
    plain = raster_info(write_geotiff(tmp_path / "plain.tif", np.zeros((1, 3, 3), np.uint8), crs=None, transform=None))
    assert plain.crs is None and plain.transform is None


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_raster_info_counts_the_bands_read_image_returns(tmp_path):
    """Header-only info agrees with the decoded image for every PNG colour type and JPEG."""
    rng = np.random.default_rng(2)
    paths = [write_png(tmp_path / f"{n}.png", fake_image(5, 6, n, "uint8", rng)) for n in (1, 3, 4)]
    for name, colormap in (("grey_alpha", None), ("palette", {0: (255, 0, 0, 255), 1: (0, 0, 255, 128)})):
        count = 2 if colormap is None else 1
        with rasterio.open(tmp_path / f"{name}.png", "w", driver="PNG", width=6, height=5, count=count,
                           dtype="uint8") as dst:
            dst.write(rng.integers(0, 2, (count, 5, 6), dtype=np.uint8))
            if colormap is not None:
                dst.write_colormap(1, colormap)
        paths.append(tmp_path / f"{name}.png")
    jpeg = tmp_path / "photo.jpg"
    cv2.imwrite(str(jpeg), fake_image(5, 6, 3, "uint8", rng).transpose(1, 2, 0))
    for path in [*paths, jpeg]:
        info, image = raster_info(path), read_image(path)
        assert (info.count, info.height, info.width, info.dtype) == (*image.shape, image.dtype.name), path.name


def test_check_pair_accepts_a_good_pair(tmp_path):
    d1, d2, label = write_geotiff_pair(tmp_path, 10, 12)
    info = check_pair(d1, d2, label)
    assert (info.height, info.width, info.count) == (10, 12, 3)


def _message(function, *args):
    """The message of the InputError that ``function(*args)`` raises."""
    with pytest.raises(InputError) as error:
        function(*args)
    return str(error.value)


@pytest.mark.skipif(not MISMATCHED.is_dir(), reason="shared data (../shared/data) is absent: not in a fresh clone")
def test_check_pair_refuses_the_real_mismatched_pair():
    a, b = MISMATCHED / "A.png", MISMATCHED / "B.png"
    assert _message(check_pair, a, b) == f"date images differ in size: {a} is 384x768 (rows x cols) but {b} is 383x768."


def test_check_pair_refuses_a_generated_mismatched_rgba_pair(tmp_path):
    """The real pair's defect, generated: runs in a bare clone too."""
    a, b = write_mismatched_pair(tmp_path)
    assert raster_info(a).count == raster_info(b).count == 4
    assert _message(check_pair, a, b) == f"date images differ in size: {a} is 384x768 (rows x cols) but {b} is 383x768."


def test_check_pair_size_mismatch(tmp_path):
    rng = np.random.default_rng(0)
    a = write_png(tmp_path / "A.png", fake_image(8, 8, 3, "uint8", rng))
    b = write_png(tmp_path / "B.png", fake_image(8, 7, 3, "uint8", rng))
    assert _message(check_pair, a, b) == f"date images differ in size: {a} is 8x8 (rows x cols) but {b} is 8x7."
    label = write_png(tmp_path / "label.png", np.zeros((7, 8), np.uint8))
    assert (_message(check_pair, a, a, label)
            == f"date image and label differ in size: {a} is 8x8 (rows x cols) but {label} is 7x8.")


def test_check_pair_band_count_mismatch(tmp_path):
    d1, _, _ = write_geotiff_pair(tmp_path / "rgb", 6, 6, bands=3, with_label=False)
    _, d2, _ = write_geotiff_pair(tmp_path / "rgbn", 6, 6, bands=4, with_label=False)
    assert _message(check_pair, d1, d2) == f"date images differ in band count: {d1} has 3 bands but {d2} has 4."


def test_check_pair_crs_mismatch(tmp_path):
    d1, _, _ = write_geotiff_pair(tmp_path / "utm", 6, 6, with_label=False)
    _, d2, _ = write_geotiff_pair(tmp_path / "other", 6, 6, crs="EPSG:32634", with_label=False)
    assert _message(check_pair, d1, d2) == f"date images differ in CRS: {d1} has EPSG:32633 but {d2} has EPSG:32634."
    _, d3, _ = write_geotiff_pair(tmp_path / "none", 6, 6, crs=None, transform=None, with_label=False)
    assert _message(check_pair, d1, d3) == f"date images differ in CRS: {d1} has EPSG:32633 but {d3} has no CRS."


def test_check_pair_transform_mismatch_and_tolerance(tmp_path):
    d1, _, label = write_geotiff_pair(tmp_path / "a", 6, 6)
    shift = Affine(0.3, 0.0, 500000.3, 0.0, -0.3, 4500000.0)
    _, shifted, _ = write_geotiff_pair(tmp_path / "b", 6, 6, transform=shift)
    assert _message(check_pair, d1, shifted) == (
        f"date images are not on the same pixel grid: {d1} has geotransform (0.3, 0, 500000, 0, -0.3, 4500000) "
        f"but {shifted} has geotransform (0.3, 0, 500000.3, 0, -0.3, 4500000).")
    nudge = Affine(0.3, 0.0, 500000.0 + 1e-4, 0.0, -0.3, 4500000.0)
    _, nudged, _ = write_geotiff_pair(tmp_path / "c", 6, 6, transform=nudge)
    check_pair(d1, nudged, label)  # 1/3000 of a pixel: the same grid


def test_nodata_mask_is_outside_the_valid_mask_or_not_finite():
    image = np.zeros((2, 3, 4), dtype=np.float32)
    image[0, 0, 0] = np.nan
    image[1, 2, 3] = -9999  # a value: only the valid mask says which pixels have none
    expected = np.zeros((3, 4), dtype=bool)
    expected[0, 0] = True
    np.testing.assert_array_equal(nodata_mask(image), expected)
    valid = np.ones((3, 4), dtype=bool)
    valid[1, 2] = False
    expected[1, 2] = True
    np.testing.assert_array_equal(nodata_mask(image, valid), expected)
    integer = np.zeros((1, 2, 2), dtype=np.uint8)
    np.testing.assert_array_equal(nodata_mask(integer, [[True, False], [True, True]]), [[False, True], [False, False]])


def _rgb_with_zeros(rng) -> np.ndarray:
    """uint8 RGB with pixels where one, two or all three bands are 0."""
    image = rng.integers(1, 256, (3, 6, 7), dtype=np.uint8)
    image[1, 0, 0] = 0  # one band: a dark red pixel, not missing
    image[1:, 1, 1] = 0  # two bands
    image[:, 2, 3] = image[:, 5, 6] = 0  # all bands: missing
    return image


def test_valid_mask_follows_gdal_nodata_per_band_not_any_band(tmp_path):
    """Declared nodata 0 on uint8 RGB: a pixel is missing only where every band is 0 (GDAL's dataset mask)."""
    image = _rgb_with_zeros(np.random.default_rng(3))
    path = write_geotiff(tmp_path / "rgb.tif", image, nodata=0)
    expected = (image != 0).any(axis=0)
    np.testing.assert_array_equal(valid_mask(path), expected)
    np.testing.assert_array_equal(valid_mask(path, window=(1, 2, 4, 5)), expected[1:5, 2:7])
    assert raster_info(path).mask == "nodata 0"
    assert raster_info(write_geotiff(tmp_path / "plain.tif", image)).mask is None
    np.testing.assert_array_equal(valid_mask(tmp_path / "plain.tif"), np.ones((6, 7), bool))


def test_valid_mask_uses_the_mask_band_or_alpha_band_when_the_file_has_one(tmp_path):
    image = _rgb_with_zeros(np.random.default_rng(4))
    mask = np.full((6, 7), 255, np.uint8)
    mask[4, 1:3] = 0
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True):
        with rasterio.open(tmp_path / "masked.tif", "w", driver="GTiff", height=6, width=7, count=3, dtype="uint8",
                           crs="EPSG:32633", transform=DEFAULT_TRANSFORM, nodata=0) as dst:
            dst.write(image)
            dst.write_mask(mask)
    assert raster_info(tmp_path / "masked.tif").mask == "a mask band"
    np.testing.assert_array_equal(valid_mask(tmp_path / "masked.tif"), mask > 0)  # not the zeros: the mask
    alpha = np.concatenate([image, mask[None]])
    with rasterio.open(tmp_path / "alpha.tif", "w", driver="GTiff", height=6, width=7, count=4, dtype="uint8",
                       crs="EPSG:32633", transform=DEFAULT_TRANSFORM, photometric="RGB", alpha="YES") as dst:
        dst.write(alpha)
    assert raster_info(tmp_path / "alpha.tif").mask == "an alpha band"
    np.testing.assert_array_equal(valid_mask(tmp_path / "alpha.tif"), mask > 0)


def test_valid_mask_of_float_nodata_and_png(tmp_path):
    image = np.ones((2, 3, 4), np.float32)
    image[:, 0, 0] = -9999
    image[1, 2, 2] = -9999  # one band only: the pixel has data
    path = write_geotiff(tmp_path / "f.tif", image, nodata=-9999)
    assert raster_info(path).mask == "nodata -9999"
    expected = np.ones((3, 4), bool)
    expected[0, 0] = False
    np.testing.assert_array_equal(valid_mask(path), expected)
    png = write_png(tmp_path / "a.png", np.zeros((3, 5, 6), np.uint8))
    np.testing.assert_array_equal(valid_mask(png), np.ones((5, 6), bool))
    np.testing.assert_array_equal(valid_mask(png, window=(1, 1, 2, 3)), np.ones((2, 3), bool))


def test_read_sample_takes_every_step_th_pixel_and_its_validity(tmp_path):
    image = np.arange(3 * 37 * 101, dtype=np.uint16).reshape(3, 37, 101)
    image[:, 0, 0] = 0
    image[:, 10, 20] = 0
    tif = write_geotiff(tmp_path / "a.tif", image, nodata=0)
    sample, valid = read_sample(tif, bands=[3, 1], max_side=20)  # step ceil(101 / 20) = 6
    np.testing.assert_array_equal(sample, image[[2, 0], ::6, ::6])
    np.testing.assert_array_equal(valid, (image[:, ::6, ::6] != 0).any(axis=0))
    assert not valid[0, 0] and valid.sum() == valid.size - 1
    png = write_png(tmp_path / "a.png", image[:, :, :50].astype(np.uint8))
    sample, valid = read_sample(png, max_side=10)  # step 5
    np.testing.assert_array_equal(sample, image[:, ::5, :50:5].astype(np.uint8))
    assert valid.shape == (8, 10) and valid.all()


def test_nodata_mask_infinite_values_are_nodata():
    image = np.ones((2, 2, 3), dtype=np.float32)
    image[0, 0, 1], image[1, 1, 2] = np.inf, -np.inf
    np.testing.assert_array_equal(nodata_mask(image), [[False, True, False], [False, False, True]])


def test_corrupt_png_message_keeps_libpngs_reason_and_stderr_stays_clean(tmp_path, capfd):
    path = write_png(tmp_path / "cut.png", np.zeros((3, 32, 32), np.uint8))
    path.write_bytes(path.read_bytes()[:60])  # the header and part of the first chunk
    with pytest.raises(InputError) as err:
        read_image(path)
    assert str(err.value).startswith(f"cannot read image {path}: the file is empty, corrupt or not a PNG image (")
    assert capfd.readouterr().err == ""  # libpng printed nothing of its own
