"""The OSCD reader (utilities/data/oscd.py) on fake OSCD trees written in the data set's layout (13 single-band
GeoTIFFs per date at 10/20/60 m in EPSG:4326, labels without georeferencing coded 1/2, one city whose date 2 is on
another grid), and on the real cities in ../shared/data/oscd when present."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from affine import Affine

from tests.utilities.fakes import write_geotiff
from utilities.data.oscd import SENTINEL2_BANDS, oscd_cities, oscd_city, oscd_samples, split_cities
from utilities.errors import InputError
from utilities.raster.io import raster_info, read_image, read_label
from utilities.training.config import DataConfig
from utilities.training.pipeline import band_inputs, split_samples

REAL = Path(__file__).resolve().parents[4] / "shared" / "data" / "oscd"
#: band -> its pixel side as a multiple of the 10 m bands'
FACTORS = {"B01": 6, "B09": 6, "B10": 6, "B05": 2, "B06": 2, "B07": 2, "B8A": 2, "B11": 2, "B12": 2,
           "B02": 1, "B03": 1, "B04": 1, "B08": 1}
PIXEL = 0.0001  # degrees


def write_city(root: Path, city: str, rows: int, cols: int, rng: np.random.Generator, date2_scale: float = 1.0,
               coding=(1, 2)) -> np.ndarray:
    """A fake OSCD city of ``rows x cols`` 10 m pixels (multiples of 6); date 2 on a grid ``date2_scale`` times
    coarser when not 1. Returns the 0/1 change mask."""
    origin = (2.2, 48.7)
    for date, scale, product in ((1, 1.0, "S2A_OPER_MSI_L1C_TL_SGS__20160315T201048_A003809_T31UDP"),
                                 (2, date2_scale, "T31UDQ_20170829T105019")):
        for band, factor in FACTORS.items():
            side = PIXEL * factor * scale
            size = (round(rows * PIXEL / side), round(cols * PIXEL / side))
            image = rng.integers(500, 3000, size=(1, *size)).astype("uint16")
            write_geotiff(root / "images" / city / f"imgs_{date}" / f"{product}_{band}.tif", image, crs="EPSG:4326",
                          transform=Affine(side, 0, origin[0], 0, -side, origin[1]))
    (root / "images" / city / "dates.txt").write_text("date_1: 20160315\ndate_2: 20170829\n")
    change = (rng.random((rows, cols)) < 0.05).astype("uint8")
    coded = np.where(change == 1, coding[1], coding[0]).astype("uint8")[None]
    write_geotiff(root / "train_labels" / city / "cm" / f"{city}-cm.tif", coded, crs=None, transform=None)
    return change


@pytest.fixture
def oscd(tmp_path, monkeypatch):
    monkeypatch.setenv("MANTIS_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    root = tmp_path / "oscd"
    masks = {"alpha": write_city(root, "alpha", 36, 48, rng), "beta": write_city(root, "beta", 42, 30, rng),
             "gamma": write_city(root, "gamma", 36, 36, rng, date2_scale=1.2, coding=(0, 1))}
    (root / "train.txt").write_text("alpha,beta,gamma")
    return root, masks


def test_a_city_becomes_13_bands_on_the_10m_grid_with_its_label(oscd):
    root, masks = oscd
    sample = oscd_city(root, "alpha")
    info = raster_info(sample.date1)
    assert (info.height, info.width, info.count, info.dtype) == (36, 48, 13, "uint16")
    assert info.crs.to_epsg() == 4326 and info.transform == Affine(PIXEL, 0, 2.2, 0, -PIXEL, 48.7)
    assert raster_info(sample.label).transform == info.transform
    np.testing.assert_array_equal(read_label(sample.label), masks["alpha"])
    b02 = read_image(next((root / "images" / "alpha" / "imgs_1").glob("*_B02.tif")))
    np.testing.assert_array_equal(read_image(sample.date1, bands=[SENTINEL2_BANDS.index("B02") + 1]), b02)


def test_bands_chosen_and_ordered(oscd):
    root, _ = oscd
    sample = oscd_city(root, "beta", bands=["B08", "B04", "B03", "B02"], resampling="nearest")
    info = raster_info(sample.date2)
    assert (info.count, info.height, info.width) == (4, 42, 30)
    b08 = read_image(next((root / "images" / "beta" / "imgs_2").glob("*_B08.tif")))
    np.testing.assert_array_equal(read_image(sample.date2, bands=[1]), b08)


def test_a_city_on_two_grids_is_refused_unless_date2_is_aligned(oscd):
    root, masks = oscd
    with pytest.raises(InputError, match=r"^the dates are not on the same grid: .*gamma/imgs_1 is 36x36 \(rows x "
                                         r"cols\) .*gamma/imgs_2 is 30x30 .*: align date 2 onto date 1 "):
        oscd_city(root, "gamma")
    sample = oscd_city(root, "gamma", align="date1")
    assert raster_info(sample.date2).transform == raster_info(sample.date1).transform
    assert read_image(sample.date2).shape == (13, 36, 36)
    np.testing.assert_array_equal(read_label(sample.label), masks["gamma"])  # a 0/1 label is read as it is


def test_one_line_errors(oscd, tmp_path):
    root, _ = oscd
    with pytest.raises(InputError, match=r"^OSCD city delta not found: no folder .*images/delta$"):
        oscd_city(root, "delta")
    next((root / "images" / "beta" / "imgs_2").glob("*_B8A.tif")).unlink()
    with pytest.raises(InputError, match=r"^date folder .*beta/imgs_2 has no file for band B8A "):
        oscd_city(root, "beta")
    label = root / "train_labels" / "alpha" / "cm" / "alpha-cm.tif"
    write_geotiff(label, np.full((1, 36, 48), 3, "uint8"), crs=None, transform=None)
    with pytest.raises(InputError, match=r"^OSCD label .*alpha-cm\.tif holds values \[3\]: expected 1/2 "):
        oscd_city(root, "alpha")
    write_geotiff(label, np.ones((1, 35, 48), "uint8"), crs=None, transform=None)
    with pytest.raises(InputError, match=r"^label .*alpha-cm\.tif is 35x48 \(rows x cols\) but its date .* is 36x48$"):
        oscd_city(root, "alpha")
    label.unlink()
    assert oscd_city(root, "alpha", labelled=False).label is None
    with pytest.raises(InputError, match=r"^OSCD city alpha has no label .*train_labels/alpha/cm/alpha-cm\.tif$"):
        oscd_city(root, "alpha")
    with pytest.raises(InputError, match=r"^OSCD folder .* has no images/ folder"):
        oscd_cities(tmp_path / "nothing")


def test_city_split(oscd):
    root, _ = oscd
    assert oscd_cities(root) == ["alpha", "beta", "gamma"]
    assert split_cities(root, "train", None, ["beta"]) == ["alpha", "gamma"]
    assert split_cities(root, "val", None, ["beta"]) == ["beta"]
    with pytest.raises(InputError, match=r"^config: data.kind 'oscd' needs data.val_cities "):
        split_cities(root, "train", None, None)
    with pytest.raises(InputError, match=r"^config: OSCD city beta is in both data.train_cities and "
                                         r"data.val_cities$"):
        split_cities(root, "train", ["alpha", "beta"], ["beta"])


def test_training_config_of_kind_oscd(oscd):
    root, _ = oscd
    cfg = DataConfig(kind="oscd", root=str(root), val_cities=["beta"], align="date1",
                     band_names=["B02", "B03", "B04", "B08", "B11"])
    train, val = split_samples(cfg, "train"), split_samples(cfg, "val")
    assert [s.name for s in train] == ["alpha", "gamma"] and [s.name for s in val] == ["beta"]
    assert raster_info(train[0].date1).count == 5
    assert band_inputs(cfg) == {"names": ["B02", "B03", "B04", "B08", "B11"], "reference": None,
                                "resampling": "bilinear", "align": "date1"}
    assert band_inputs(DataConfig(kind="oscd"))["names"] == list(SENTINEL2_BANDS)
    assert band_inputs(DataConfig(kind="pair")) is None


@pytest.mark.skipif(not REAL.is_dir(), reason=f"real OSCD cities not present at {REAL}")
def test_real_oscd_cities(tmp_path, monkeypatch):
    """The README's measured facts: grids of the 10 m bands, paris 0.29 % and mumbai 2.56 % change, saclay_e's
    date 2 on another grid."""
    monkeypatch.setenv("MANTIS_CACHE", str(tmp_path / "cache"))
    sizes = {"aguasclaras": (525, 471), "bercy": (360, 395), "nantes": (582, 522), "paris": (390, 408),
             "mumbai": (557, 858)}
    samples = oscd_samples(REAL, list(sizes))
    for sample, (width, height) in zip(samples, sizes.values()):
        info = raster_info(sample.date1)
        assert (info.width, info.height, info.count, info.crs.to_epsg()) == (width, height, 13, 4326)
    fractions = {s.name: read_label(s.label).mean() for s in samples}
    assert round(fractions["paris"] * 100, 2) == 0.29 and round(fractions["mumbai"] * 100, 2) == 2.56
    with pytest.raises(InputError, match=r"^the dates are not on the same grid: .*saclay_e/imgs_1 is 639x688 "):
        oscd_city(REAL, "saclay_e")
    saclay = oscd_city(REAL, "saclay_e", align="date1")
    assert read_image(saclay.date2, window=(600, 650, 39, 38)).shape == (13, 39, 38)
