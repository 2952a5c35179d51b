"""Dates made of band files (utilities/raster/bands.py): bands of three resolutions stacked onto the finest
grid by VRT, read window by window; checked against independent NumPy resampling (nearest: pixel repetition),
against rasterio's own resampled read (bilinear), and for the one-line errors."""
from __future__ import annotations

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.enums import Resampling

from tests.utilities.fakes import write_geotiff
from utilities.errors import InputError
from utilities.raster.bands import (
    check_band_names,
    date_raster,
    find_bands,
    label_on_grid,
    pair_rasters,
    reference_band,
    split_band_list,
)
from utilities.raster.io import check_pair, raster_info, read_image, read_label

#: pixel side in metres of the finest grid and the band files' sizes: 10 m, 20 m and 60 m bands of one extent
FINE = 10.0
SIZES = {"B02": (60, 48, 10.0), "B05": (30, 24, 20.0), "B01": (10, 8, 60.0)}  # rows, cols, metres


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MANTIS_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def _write_date(folder, rng, prefix="T31UDQ_20170829", sizes=SIZES, origin=(500000.0, 4500000.0), dtype="uint16"):
    """Single-band GeoTIFFs ``<prefix>_<band>.tif`` of one extent at their resolutions; returns the arrays."""
    arrays = {}
    for band, (rows, cols, side) in sizes.items():
        image = rng.integers(0, 4000, size=(1, rows, cols)).astype(dtype)
        write_geotiff(folder / f"{prefix}_{band}.tif", image, transform=Affine(side, 0, origin[0], 0, -side, origin[1]))
        arrays[band] = image[0]
    return arrays


def test_folder_stacks_the_named_bands_on_the_finest_grid(tmp_path, rng):
    arrays = _write_date(tmp_path / "date", rng)
    path = date_raster(tmp_path / "date", ["B01", "B02", "B05"], resampling="nearest")
    info = raster_info(path)
    assert (info.height, info.width, info.count, info.dtype) == (60, 48, 3, "uint16")
    assert info.transform == Affine(FINE, 0, 500000.0, 0, -FINE, 4500000.0) and info.crs.to_epsg() == 32633
    stacked = read_image(path)
    np.testing.assert_array_equal(stacked[0], np.repeat(np.repeat(arrays["B01"], 6, 0), 6, 1))
    np.testing.assert_array_equal(stacked[1], arrays["B02"])
    np.testing.assert_array_equal(stacked[2], np.repeat(np.repeat(arrays["B05"], 2, 0), 2, 1))
    with rasterio.open(path) as src:
        assert src.descriptions == ("B01", "B02", "B05")


def test_bilinear_is_rasterios_resampled_read_and_windows_match_the_whole(tmp_path, rng):
    _write_date(tmp_path / "date", rng)
    path = date_raster(tmp_path / "date", ["B02", "B05", "B01"])
    whole = read_image(path)
    for band, plane in zip(("B02", "B05", "B01"), whole):
        with rasterio.open(next((tmp_path / "date").glob(f"*_{band}.tif"))) as src:
            expected = src.read(1, out_shape=(60, 48), resampling=Resampling.bilinear)
        np.testing.assert_array_equal(plane, expected)
    for window in ((0, 0, 17, 23), (13, 7, 40, 41), (59, 47, 1, 1)):
        row, col, rows, cols = window
        np.testing.assert_array_equal(read_image(path, window=window), whole[:, row:row + rows, col:col + cols])


def test_reference_band_default_finest_and_chosen(tmp_path, rng):
    _write_date(tmp_path / "date", rng)
    bands = find_bands(tmp_path / "date", ["B01", "B05", "B02"])
    assert reference_band(bands).name == "B02"
    path = date_raster(tmp_path / "date", ["B01", "B05", "B02"], reference="B05", resampling="average")
    info = raster_info(path)
    assert (info.height, info.width) == (30, 24) and info.transform.a == 20.0
    with rasterio.open(next((tmp_path / "date").glob("*_B02.tif"))) as src:
        expected = src.read(1).reshape(30, 2, 24, 2).mean(axis=(1, 3))
    np.testing.assert_allclose(read_image(path)[2], expected, atol=1)  # GDAL rounds the mean to uint16


def test_a_list_of_files_names_its_bands_from_the_file_names(tmp_path, rng):
    _write_date(tmp_path / "date", rng)
    files = sorted((tmp_path / "date").glob("*.tif"))  # B01, B02, B05
    assert [b.name for b in find_bands(files)] == ["B01", "B02", "B05"]
    assert [b.name for b in find_bands(files, ["B05", "B01", "B02"])] == ["B05", "B01", "B02"]
    with pytest.raises(InputError, match=r"^band file .*_B05\.tif is band B05, which the band list B01,B02 does not "
                                         r"name$"):
        find_bands(files, ["B01", "B02"])


def test_a_multiband_raster_is_read_by_band_descriptions_or_in_order(tmp_path, rng):
    image = rng.integers(0, 255, size=(3, 16, 16)).astype("uint8")
    plain = write_geotiff(tmp_path / "plain.tif", image)
    assert date_raster(plain) == plain  # a raster alone is used as it is
    np.testing.assert_array_equal(read_image(date_raster(plain, ["R", "G", "B"])), image)
    with pytest.raises(InputError, match=r"^raster .*plain\.tif has 3 band\(s\) without names but the band list names "
                                         r"2 \(R,G\)$"):
        date_raster(plain, ["R", "G"])
    named = tmp_path / "named.tif"
    with rasterio.open(plain) as src, rasterio.open(named, "w", **src.profile) as dst:
        dst.write(image)
        dst.descriptions = ("B04", "B03", "B02")
    np.testing.assert_array_equal(read_image(date_raster(named, ["B02", "B04"])), image[[2, 0]])
    with pytest.raises(InputError, match=r"^raster .*named\.tif has no band B08: its bands are B04, B03, B02$"):
        date_raster(named, ["B02", "B08"])


def test_one_line_errors_of_folders(tmp_path, rng):
    _write_date(tmp_path / "date", rng)
    with pytest.raises(InputError, match=r"^date folder .*date has no file for band B04 \(expected a name ending in "
                                         r"_B04 or B04, suffix \.tif, \.tiff, \.jp2, \.vrt\)$"):
        date_raster(tmp_path / "date", ["B02", "B04"])
    with pytest.raises(InputError, match=r"^date .*date is a folder of band files: give the band list"):
        date_raster(tmp_path / "date")
    write_geotiff(tmp_path / "date" / "other_B02.tif", np.zeros((1, 60, 48), "uint16"))
    with pytest.raises(InputError, match=r"^date folder .*date has 2 files for band B02: "):
        date_raster(tmp_path / "date", ["B02"])
    with pytest.raises(InputError, match=r"^band B02 is listed twice in the band list B02,B02$"):
        split_band_list(["B02,B02"])
    with pytest.raises(InputError, match=r"^unknown resampling 'sinc': choose one of nearest, bilinear, "):
        date_raster(tmp_path / "date", ["B05"], resampling="sinc")


def test_a_band_that_does_not_cover_the_reference_extent_is_refused(tmp_path, rng):
    sizes = {"B02": (60, 48, 10.0), "B05": (20, 24, 20.0)}  # B05 covers the top 40 rows only
    _write_date(tmp_path / "date", rng, sizes=sizes)
    with pytest.raises(InputError, match=r"^band B05 \(.*_B05\.tif\) does not cover the reference band's extent: it "
                                         r"spans columns 0\.0 to 48\.0 and rows 0\.0 to 40\.0 of its 48x60 grid$"):
        date_raster(tmp_path / "date", ["B02", "B05"])


def test_dates_on_different_grids_are_refused_unless_aligned(tmp_path, rng):
    _write_date(tmp_path / "d1", rng)
    # date 2: the same extent on a 12 m grid (50 x 40) for the finest bands
    coarse = {"B02": (50, 40, 12.0), "B05": (25, 20, 24.0), "B01": (10, 8, 60.0)}
    second = _write_date(tmp_path / "d2", rng, sizes=coarse)
    names = ["B02", "B05"]
    with pytest.raises(InputError, match=r"^the dates are not on the same grid: .*d1 is 60x48 \(rows x cols\) with "
                                         r".*d2 is 50x40 with .*: align date 2 onto date 1 \(--align date1, "
                                         r"data.align: date1\)$"):
        pair_rasters(tmp_path / "d1", tmp_path / "d2", names)
    date1, date2 = pair_rasters(tmp_path / "d1", tmp_path / "d2", names, align="date1", resampling="nearest")
    assert check_pair(date1, date2).count == 2
    aligned = read_image(date2)
    # nearest: a 10 m pixel centred at (c + 0.5) * 10 m takes the 12 m pixel holding that point
    rows = ((np.arange(60) + 0.5) * 10 // 12).astype(int)
    cols = ((np.arange(48) + 0.5) * 10 // 12).astype(int)
    np.testing.assert_array_equal(aligned[0], second["B02"][np.ix_(rows, cols)])
    np.testing.assert_array_equal(read_image(date2, window=(5, 6, 20, 30)), aligned[:, 5:25, 6:36])


def test_plain_rasters_on_different_grids_still_fail_in_check_pair(tmp_path, rng):
    one = write_geotiff(tmp_path / "a.tif", rng.integers(0, 9, (2, 8, 8)).astype("uint8"))
    two = write_geotiff(tmp_path / "b.tif", rng.integers(0, 9, (2, 9, 8)).astype("uint8"))
    assert pair_rasters(one, two) == (one, two)
    with pytest.raises(InputError, match=r"^date images differ in size: "):
        check_pair(*pair_rasters(one, two))


def test_label_without_georeferencing_takes_the_dates_grid_and_coding(tmp_path, rng):
    _write_date(tmp_path / "date", rng)
    date = date_raster(tmp_path / "date", ["B02"])
    coded = rng.integers(1, 3, size=(1, 60, 48)).astype("uint8")
    raw = write_geotiff(tmp_path / "cm.tif", coded, crs=None, transform=None)
    label = label_on_grid(raw, date, {1: 0, 2: 1})
    check_pair(date, date, label)
    np.testing.assert_array_equal(read_label(label), (coded[0] == 2).astype("uint8"))
    small = write_geotiff(tmp_path / "small.tif", coded[:, :59], crs=None, transform=None)
    with pytest.raises(InputError, match=r"^label .*small\.tif is 59x48 \(rows x cols\) but its date .* is 60x48$"):
        label_on_grid(small, date)


def test_vrts_are_reused_and_renamed_when_a_source_changes(tmp_path, rng):
    _write_date(tmp_path / "date", rng)
    first = date_raster(tmp_path / "date", ["B02", "B05"])
    assert date_raster(tmp_path / "date", ["B02", "B05"]) == first
    assert first.parent == tmp_path / "cache" / "dates"
    source = next((tmp_path / "date").glob("*_B05.tif"))
    write_geotiff(source, np.ones((1, 30, 24), "uint16"), transform=Affine(20, 0, 500000.0, 0, -20, 4500000.0))
    second = date_raster(tmp_path / "date", ["B02", "B05"])
    assert second != first
    np.testing.assert_array_equal(read_image(second)[1], 1)


def test_band_lists_against_the_models():
    trained = ["B02", "B03", "B04"]
    check_band_names(trained, ["B02", "B03", "B04"], "date x")
    with pytest.raises(InputError, match=r"^date x lacks band B04, which the model was trained on \(its bands: "
                                         r"B02,B03,B04\)$"):
        check_band_names(trained, ["B02", "B03"], "date x")
    with pytest.raises(InputError, match=r"^date x has band B08, which the model was not trained on"):
        check_band_names(trained, ["B02", "B03", "B04", "B08"], "date x")
    with pytest.raises(InputError, match=r"^date x lists the bands as B03,B02,B04, the model takes them as "
                                         r"B02,B03,B04$"):
        check_band_names(trained, ["B03", "B02", "B04"], "date x")
    assert split_band_list(["1", "3"]) == ([1, 3], None)
    assert split_band_list(["B02,B03", "B8A"]) == (None, ["B02", "B03", "B8A"])
    assert split_band_list(None) == (None, None)


def test_an_aligned_date_given_by_a_relative_path_reads_from_anywhere(tmp_path, rng, monkeypatch):
    one = write_geotiff(tmp_path / "a.tif", rng.integers(0, 9, (1, 12, 12)).astype("uint8"))
    write_geotiff(tmp_path / "b.tif", rng.integers(0, 9, (1, 6, 6)).astype("uint8"),
                  transform=Affine(0.6, 0, 500000.0, 0, -0.6, 4500000.0))
    monkeypatch.chdir(tmp_path)
    _, aligned = pair_rasters(one, "b.tif", align="date1", resampling="nearest")
    monkeypatch.chdir(tmp_path / "cache")
    np.testing.assert_array_equal(read_image(aligned)[0], np.kron(read_image(tmp_path / "b.tif")[0],
                                                                  np.ones((2, 2), "uint8")))
