"""utilities/raster/cog.py: probabilities as uint8 (exact thresholds), COGs written strip by strip and validated
with rio-cogeo, values and georeferencing surviving the copy, failed copies leaving nothing."""
import warnings

import numpy as np
import pytest
import rasterio
from rasterio._err import CPLE_FileIOError
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window
from rio_cogeo.cogeo import cog_validate

from utilities import atomic
from utilities.atomic import WriteError
from utilities.raster import cog
from utilities.raster.cog import cog_dataset, dequantize, quantize, read_scaled

TRANSFORM = rasterio.Affine(0.5, 0, 500000.0, 0, -0.5, 6500000.0)


def test_quantize_keeps_every_threshold_on_the_254_grid_exact():
    rng = np.random.default_rng(0)
    p = rng.random(200_000).astype(np.float32)
    p[:255] = np.arange(255, dtype=np.float32) / np.float32(254)  # the steps themselves
    p[255:510] = np.nextafter(p[:255], np.float32(0))  # just below them
    v = quantize(p)
    assert v.dtype == np.uint8 and v.max() == 254
    for k in range(255):
        np.testing.assert_array_equal(v >= k, p.astype(np.float64) >= k / 254, err_msg=str(k))
    back = dequantize(v, 1 / 254)
    assert ((p - back >= 0) & (p - back < 1 / 254)).all()  # floor: within one step below p


def test_quantize_clips_and_marks_nan_as_nodata():
    np.testing.assert_array_equal(quantize(np.array([np.nan, -0.1, 0.0, 0.5, 1.0, 1.2])), [255, 0, 0, 127, 254, 254])


def test_dequantize_divides_by_the_steps():
    values = np.arange(255)
    np.testing.assert_array_equal(dequantize(values, 1 / 254), values / 254)  # 127 -> 0.5 exactly
    np.testing.assert_allclose(dequantize(values, 0.5, 1.0), values * 0.5 + 1.0)


def write_strips(path, image: np.ndarray, profile: dict, resampling=Resampling.average, rows: int = 100):
    with cog_dataset(path, profile, resampling) as dataset:
        for row in range(0, image.shape[0], rows):
            part = image[row:row + rows]
            dataset.write(part[None], window=Window(0, row, image.shape[1], len(part)))
    return path


@pytest.mark.parametrize("dtype, nodata", [("uint8", 255), ("float32", np.nan)])
def test_cog_written_strip_by_strip_is_valid_and_keeps_values_and_georeferencing(tmp_path, dtype, nodata):
    rng = np.random.default_rng(1)
    image = (rng.random((700, 900)) * (254 if dtype == "uint8" else 1)).astype(dtype)
    image[:5, :7] = nodata
    profile = dict(height=700, width=900, count=1, dtype=dtype, nodata=nodata, crs="EPSG:32633", transform=TRANSFORM)
    path = write_strips(tmp_path / "out.tif", image, profile)
    valid, errors, warnings = cog_validate(str(path))
    assert valid and errors == [] and warnings == []
    with rasterio.open(path) as src:
        assert (src.crs, src.transform, src.dtypes[0]) == (rasterio.crs.CRS.from_epsg(32633), TRANSFORM, dtype)
        assert src.nodata == nodata or (np.isnan(src.nodata) and np.isnan(nodata))
        assert src.block_shapes == [(256, 256)] and src.overviews(1) == [2, 4]
        assert src.tags(ns="IMAGE_STRUCTURE")["PREDICTOR"] == ("2" if dtype == "uint8" else "3")
        np.testing.assert_array_equal(src.read(1), image)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.tif"]  # no temporary file left


def test_scale_and_description_survive_and_read_scaled_applies_them(tmp_path):
    p = np.random.default_rng(2).random((300, 260)).astype(np.float32)
    p[10, 10] = np.nan
    profile = dict(height=300, width=260, count=1, dtype="uint8", nodata=255, crs="EPSG:4326",
                   transform=rasterio.Affine(1e-4, 0, 10.0, 0, -1e-4, 50.0))
    with cog_dataset(tmp_path / "p.tif", profile, Resampling.average) as dataset:
        dataset.scales = (1 / 254,)
        dataset.set_band_description(1, "change probability (value / 254)")
        dataset.write(quantize(p)[None])
    assert cog_validate(str(tmp_path / "p.tif"))[0]
    with rasterio.open(tmp_path / "p.tif") as src:
        assert src.scales == (1 / 254,) and src.offsets == (0.0,)
        assert src.descriptions == ("change probability (value / 254)",)
    values = read_scaled(tmp_path / "p.tif")
    np.testing.assert_array_equal(np.isnan(values), np.isnan(p))
    np.testing.assert_array_equal(values[~np.isnan(p)], quantize(p)[~np.isnan(p)] / 254)


def test_raster_without_georeferencing_stays_without(tmp_path):
    image = np.arange(64 * 48, dtype=np.float32).reshape(64, 48)
    with warnings.catch_warnings():
        warnings.simplefilter("error", NotGeoreferencedWarning)  # it is not warned about either
        path = write_strips(tmp_path / "plain.tif", image, dict(height=64, width=48, count=1, dtype="float32",
                                                                nodata=np.nan))
    with pytest.warns(NotGeoreferencedWarning), rasterio.open(path) as src:
        assert src.crs is None and src.transform.is_identity
        np.testing.assert_array_equal(src.read(1), image)


def test_failed_copy_names_the_output_and_leaves_nothing(tmp_path, monkeypatch):
    """GDAL's COG copy fails (a full disk: GDAL gives no errno, the free space decides); the temporary GeoTIFF
    and the partial COG are removed and the error names the output."""
    def no_space(*args, **kwargs):
        raise CPLE_FileIOError(3, 1, "TIFFAppendToStrip: Write error at scanline 0")

    class NoSpace:
        f_bavail, f_frsize = 0, 4096

    monkeypatch.setattr(cog.rasterio.shutil, "copy", no_space)
    monkeypatch.setattr(atomic.os, "statvfs", lambda path: NoSpace())
    image = np.zeros((40, 40), np.uint8)
    with pytest.raises(WriteError) as err:
        write_strips(tmp_path / "mask.tif", image, dict(height=40, width=40, count=1, dtype="uint8", nodata=255))
    assert err.value.strerror == f"no space left on device writing {tmp_path / 'mask.tif'}"
    assert list(tmp_path.iterdir()) == []


def test_error_while_writing_leaves_nothing(tmp_path):
    profile = dict(height=40, width=40, count=1, dtype="uint8", nodata=255)
    with pytest.raises(RuntimeError, match="stopped"):
        with cog_dataset(tmp_path / "mask.tif", profile, Resampling.nearest):
            raise RuntimeError("stopped")
    assert list(tmp_path.iterdir()) == []
