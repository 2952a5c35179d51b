"""Chipping (utilities/data/chips.py): sliding windows, the memory-mapped chip cache and ChipDataset."""
import json
import logging
import os
import pickle

import mxnet as mx
import numpy as np
import pytest
import rasterio

from tests.utilities.fakes import (
    GAP_NODATA,
    fake_image,
    fill_window,
    write_geotiff_pair,
    write_levircd_tree,
    write_masked_rgb,
    write_pair_with_gaps,
    write_png,
)
from utilities.data import chips
from utilities.data.chips import MANIFEST, ChipDataset, build_chip_cache, chip_windows
from utilities.data.datasets import levircd_samples, pair_samples, whu_samples
from utilities.data.targets import make_targets
from utilities.errors import InputError
from utilities.raster.io import read_image, read_label

SIZE, STRIDE = 32, 16  # chips of the fake 64 x 64 tiles: 3 x 3 per tile


def _covered(windows, height, width, size):
    covered = np.zeros((height, width), dtype=int)
    for r, c in windows:
        covered[r:r + size, c:c + size] += 1
    return covered


def test_levircd_tile_gives_7_by_7_windows():
    windows = chip_windows(1024, 1024, 256, 128)
    assert len(windows) == 49
    assert sorted({r for r, _ in windows}) == list(range(0, 769, 128)) == sorted({c for _, c in windows})


def test_last_windows_are_aligned_to_the_border():
    windows = chip_windows(300, 260, 256, 128)
    assert windows == [(0, 0), (0, 4), (44, 0), (44, 4)]
    assert _covered(windows, 300, 260, 256).min() >= 1
    assert chip_windows(256, 256) == [(0, 0)]


def test_windows_cover_and_stay_inside():
    windows = chip_windows(101, 77, 20, 15)
    assert all(0 <= r <= 101 - 20 and 0 <= c <= 77 - 20 for r, c in windows)
    assert _covered(windows, 101, 77, 20).min() >= 1


def test_raster_smaller_than_a_chip():
    with pytest.raises(InputError) as error:
        chip_windows(200, 300, 256, 128, name="a.png")
    assert str(error.value) == "a.png is 200x300 (rows x cols), smaller than the 256x256 chip size."
    with pytest.raises(InputError, match="1 <= stride <= size, got size 32 and stride 33"):
        chip_windows(64, 64, 32, 33)


@pytest.fixture
def levir(tmp_path):
    return levircd_samples(write_levircd_tree(tmp_path / "levir", splits=("train",), n=2, size=64), "train")


def _manifest(cache):
    return json.loads((cache / MANIFEST).read_text())


def test_cache_holds_the_source_pixels_at_the_recorded_origins(tmp_path, levir):
    cache = tmp_path / "cache"
    assert build_chip_cache(levir, cache, SIZE, STRIDE, progress=False) == cache / MANIFEST
    manifest = _manifest(cache)
    date1, date2, label = (np.load(cache / f"{a}.npy", mmap_mode="r") for a in ("date1", "date2", "label"))
    assert manifest["n"] == 2 * 9 == len(date1) == len(date2) == len(label)
    assert date1.shape == (18, 3, SIZE, SIZE) and date1.dtype == np.uint8 and label.dtype == np.uint8
    assert manifest["has_label"] and manifest["size"] == SIZE and manifest["stride"] == STRIDE
    for sample, record in zip(levir, manifest["samples"]):
        assert record["name"] == sample.name and record["count"] == len(record["origins"]) == 9
        assert record["date1"]["path"] == str(sample.date1.resolve())
        images = read_image(sample.date1), read_image(sample.date2), read_label(sample.label)
        for k, (r, c) in enumerate(record["origins"], start=record["first"]):
            np.testing.assert_array_equal(date1[k], images[0][:, r:r + SIZE, c:c + SIZE])
            np.testing.assert_array_equal(date2[k], images[1][:, r:r + SIZE, c:c + SIZE])
            np.testing.assert_array_equal(label[k], images[2][r:r + SIZE, c:c + SIZE])
    # statistics over the chips, both dates pooled
    pooled = np.concatenate([date1, date2]).astype(np.float64)
    np.testing.assert_allclose(manifest["mean"], pooled.mean(axis=(0, 2, 3)))
    np.testing.assert_allclose(manifest["std"], pooled.std(axis=(0, 2, 3)))
    assert not list(tmp_path.glob(".cache.*"))  # no temporary folder left


def test_second_build_reuses_and_changed_inputs_rebuild(tmp_path, levir, caplog):
    cache = tmp_path / "cache"
    build_chip_cache(levir, cache, SIZE, STRIDE, progress=False)
    stamp = (cache / MANIFEST).stat().st_mtime_ns
    with caplog.at_level(logging.INFO, logger="utilities.data.chips"):
        build_chip_cache(levir, cache, SIZE, STRIDE, progress=False)
    assert "is up to date: reusing it" in caplog.text
    assert (cache / MANIFEST).stat().st_mtime_ns == stamp

    new = fake_image(64, 64, 3, "uint8", np.random.default_rng(99))
    write_png(levir[1].date2, new)
    os.utime(levir[1].date2, ns=(stamp + 10**9, stamp + 10**9))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="utilities.data.chips"):
        build_chip_cache(levir, cache, SIZE, STRIDE, progress=False)
    assert "building chip cache" in caplog.text
    record = _manifest(cache)["samples"][1]
    r, c = record["origins"][-1]
    np.testing.assert_array_equal(np.load(cache / "date2.npy")[record["first"] + 8], new[:, r:r + SIZE, c:c + SIZE])

    build_chip_cache(levir, cache, SIZE, 32, progress=False)  # a new stride rebuilds too
    assert _manifest(cache)["n"] == 2 * 4


def test_failed_build_leaves_the_old_cache_and_no_temporary_folder(tmp_path, levir):
    cache = tmp_path / "cache"
    build_chip_cache(levir, cache, SIZE, STRIDE, progress=False)
    before = (cache / MANIFEST).read_text()
    d1, d2, label = write_geotiff_pair(tmp_path / "whu", 64, 64)
    data = d2.read_bytes()
    d2.write_bytes(data[: len(data) // 2])  # the header survives, the pixels do not
    broken = pair_samples(d1, d2, label)
    with pytest.raises(InputError, match="cannot read raster"):
        build_chip_cache(broken, cache, SIZE, STRIDE, progress=False)
    assert (cache / MANIFEST).read_text() == before
    with pytest.raises(InputError, match="cannot read raster"):
        build_chip_cache(broken, tmp_path / "fresh", SIZE, STRIDE, progress=False)
    assert not (tmp_path / "fresh").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "levir", "whu"]


def test_refuses_to_replace_a_folder_that_is_not_a_cache(tmp_path, levir):
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "precious.txt").write_text("keep me")
    with pytest.raises(InputError, match="results exists and is not a chip cache: refusing to replace it"):
        build_chip_cache(levir, tmp_path / "results", SIZE, STRIDE, progress=False)
    assert (tmp_path / "results" / "precious.txt").exists()


def test_mixed_samples_are_refused(tmp_path, levir):
    d1, d2, _ = write_geotiff_pair(tmp_path / "pair", 64, 64, bands=4, with_label=True)
    with pytest.raises(InputError, match=r"sample 2011 .* 4 bands, with label\) does not match sample train_1"):
        build_chip_cache(levir + pair_samples(d1, d2, tmp_path / "pair" / "label.tif"), tmp_path / "c", SIZE, STRIDE,
                         progress=False)


def test_windowed_samples_read_in_strips(tmp_path, monkeypatch):
    d1, d2, label = write_geotiff_pair(tmp_path / "whu", 110, 70, bands=2, dtype="uint16")
    samples = whu_samples(d1, d2, label, "train")  # rows 0..68
    monkeypatch.setattr(chips, "MAX_STRIP_PIXELS", 40 * 70)  # force several strips per sample
    build_chip_cache(samples, tmp_path / "cache", SIZE, STRIDE, bands=[2], progress=False)
    manifest = _manifest(tmp_path / "cache")
    [record] = manifest["samples"]
    assert record["window"] == [0, 0, 69, 70] and manifest["bands"] == [2] and manifest["channels"] == 1
    assert len(record["origins"]) == len(chip_windows(69, 70, SIZE, STRIDE))
    image, mask = read_image(d2, bands=[2]), read_label(label)
    date2, labels = np.load(tmp_path / "cache" / "date2.npy"), np.load(tmp_path / "cache" / "label.npy")
    assert date2.dtype == np.uint16
    for k, (r, c) in enumerate(record["origins"]):
        np.testing.assert_array_equal(date2[k], image[:, r:r + SIZE, c:c + SIZE])
        np.testing.assert_array_equal(labels[k], mask[r:r + SIZE, c:c + SIZE])
    test = whu_samples(d1, d2, label, "test")  # rows 77..109: origins are raster coordinates
    build_chip_cache(test, tmp_path / "test", SIZE, STRIDE, progress=False)
    assert _manifest(tmp_path / "test")["samples"][0]["origins"][0] == [77, 0]


def test_unlabelled_samples(tmp_path):
    d1, d2, _ = write_geotiff_pair(tmp_path, 40, 40, with_label=False)
    cache = tmp_path / "cache"
    build_chip_cache(pair_samples(d1, d2), cache, SIZE, STRIDE, progress=False)
    assert not _manifest(cache)["has_label"] and not (cache / "label.npy").exists()
    item = ChipDataset(cache)[0]
    assert len(item) == 2 and item[0].shape == (3, SIZE, SIZE)


@pytest.fixture
def cache(tmp_path, levir):
    build_chip_cache(levir, tmp_path / "cache", SIZE, STRIDE, progress=False)
    return tmp_path / "cache"


def test_dataset_items(cache):
    dataset = ChipDataset(cache)
    assert len(dataset) == 18
    date1, date2, segm, bound, dist = dataset[5]
    assert date1.shape == date2.shape == (3, SIZE, SIZE)
    assert segm.shape == bound.shape == dist.shape == (2, SIZE, SIZE)
    assert all(a.dtype == np.float32 and a.flags.c_contiguous for a in dataset[5])
    label = np.load(cache / "label.npy")[5]
    for a, b in zip((segm, bound, dist), make_targets(label)):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_dataset_normalisation(cache):
    manifest = _manifest(cache)
    items = [ChipDataset(cache)[i] for i in range(18)]
    dates = np.concatenate([np.stack([item[0] for item in items]), np.stack([item[1] for item in items])])
    np.testing.assert_allclose(dates.mean(axis=(0, 2, 3)), 0, atol=1e-4)
    np.testing.assert_allclose(dates.std(axis=(0, 2, 3)), 1, atol=1e-4)
    raw = ChipDataset(cache, normalize=False)[3][0]
    np.testing.assert_array_equal(raw, np.load(cache / "date1.npy")[3])
    np.testing.assert_allclose(items[3][0], (raw - np.array(manifest["mean"])[:, None, None])
                               / np.array(manifest["std"])[:, None, None], rtol=1e-5, atol=1e-5)


def test_transform_acts_on_images_and_label_before_the_targets(cache):
    seen = []

    def flip(img1, img2, mask):
        seen.append((img1.shape, img1.dtype, mask.shape, mask.dtype, img1.flags.writeable))
        return img1[:, ::-1], img2[:, ::-1], mask[:, ::-1]

    plain, flipped = ChipDataset(cache)[4], ChipDataset(cache, transform=flip)[4]
    assert seen == [((SIZE, SIZE, 3), np.uint8, (SIZE, SIZE), np.uint8, True)]
    for a, b in zip(plain, flipped):
        np.testing.assert_allclose(a[:, :, ::-1], b, atol=1e-6)
    assert np.load(cache / "label.npy")[4].any()  # the flip is visible in the targets


def test_dataset_pickles_and_batches(cache):
    dataset = ChipDataset(cache)
    first = dataset[0]
    clone = pickle.loads(pickle.dumps(dataset))
    assert clone._arrays is None
    for a, b in zip(first, clone[0]):
        np.testing.assert_array_equal(a, b)
    batch = next(iter(mx.gluon.data.DataLoader(dataset, batch_size=4)))
    assert [tuple(x.shape) for x in batch] == [(4, 3, SIZE, SIZE)] * 2 + [(4, 2, SIZE, SIZE)] * 3


def test_missing_cache(tmp_path):
    with pytest.raises(InputError, match=r"no chip cache in .*nothing: .*manifest.json is missing"):
        ChipDataset(tmp_path / "nothing")


def test_chips_with_nan_inf_or_nodata_pixels_are_skipped(tmp_path, caplog):
    """NaN, +-inf (in any band) and the declared nodata value (in every band) in either date: those chips are
    left out and counted, the cache and its statistics hold finite values only, and the kept chips are the
    source pixels."""
    d1, d2, label = write_pair_with_gaps(tmp_path / "pair")
    images = [rasterio.open(p).read() for p in (d1, d2)]
    bad = np.zeros((96, 96), dtype=bool)
    for image in images:
        bad |= (~np.isfinite(image)).any(axis=0) | (image == GAP_NODATA).all(axis=0)
    windows = chip_windows(96, 96, SIZE, STRIDE)
    expected = [[r, c] for r, c in windows if not bad[r:r + SIZE, c:c + SIZE].any()]
    assert len(windows) - len(expected) == 4 + 2 + 4 + 1  # the chips the NaN, +inf, -inf and nodata gaps touch

    cache = tmp_path / "cache"
    with caplog.at_level(logging.INFO, logger="utilities.data.chips"):
        build_chip_cache(pair_samples(d1, d2, label), cache, SIZE, STRIDE, progress=False)
    assert f"{len(expected)} chips, 11 skipped for NaN, infinite or nodata pixels" in caplog.text
    manifest = _manifest(cache)
    [record] = manifest["samples"]
    assert manifest["n"] == record["count"] == len(expected) == 14
    assert manifest["skipped"] == record["skipped"] == 11 and record["origins"] == expected
    date1, date2 = (np.load(cache / f"{a}.npy") for a in ("date1", "date2"))
    assert date1.shape == (14, 3, SIZE, SIZE) and len(np.load(cache / "label.npy")) == 14
    assert np.isfinite(date1).all() and np.isfinite(date2).all() and (date1 != GAP_NODATA).all()
    for k, (r, c) in enumerate(expected):
        np.testing.assert_array_equal(date1[k], images[0][:, r:r + SIZE, c:c + SIZE])
        np.testing.assert_array_equal(date2[k], images[1][:, r:r + SIZE, c:c + SIZE])
    pooled = np.concatenate([date1, date2]).astype(np.float64)
    np.testing.assert_allclose(manifest["mean"], pooled.mean(axis=(0, 2, 3)))
    np.testing.assert_allclose(manifest["std"], pooled.std(axis=(0, 2, 3)))
    dataset = ChipDataset(cache)
    assert dataset.skipped == 11 and all(np.isfinite(a).all() for i in range(len(dataset)) for a in dataset[i])
    assert dataset.describe(3) == f"chip 3 (sample 2011, row {expected[3][0]}, col {expected[3][1]}, in {d1.resolve()})"
    assert sorted(p.name for p in cache.iterdir()) == ["date1.npy", "date2.npy", "label.npy", "manifest.json"]


def test_no_chip_with_data_everywhere_is_an_input_error(tmp_path):
    d1, d2, label = write_geotiff_pair(tmp_path / "pair", 64, 64, dtype="float32")
    fill_window(d2, (30, 30, 4, 4), float("nan"))  # in every 32 x 32 chip at stride 16
    with pytest.raises(InputError) as error:
        build_chip_cache(pair_samples(d1, d2, label), tmp_path / "cache", SIZE, STRIDE, progress=False)
    assert str(error.value) == (f"every chip of sample 2011 (9 chips) has pixels without data, in date 2 {d2} "
                                f"(NaN or infinite values): no data to chip.")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pair"]


def _dark_rgb(rng, height=64, width=64) -> np.ndarray:
    """uint8 RGB whose pixels have, about 1 % of them, one band at 0 (dark reds, greens, blues: real pixels)."""
    image = rng.integers(1, 256, (3, height, width), dtype=np.uint8)
    rows, cols = np.nonzero(rng.random((height, width)) < 0.01)
    image[rng.integers(0, 3, len(rows)), rows, cols] = 0
    return image


def test_declared_nodata_misses_only_the_pixels_at_it_in_every_band(tmp_path):
    """GDAL's meaning: nodata 0 on uint8 RGB makes a pixel missing where all three bands are 0, not where one is
    (dark pixels of real imagery); the chips of an all-zero area of date 2 are skipped, every other one kept."""
    rng = np.random.default_rng(11)
    image1, image2 = _dark_rgb(rng), _dark_rgb(rng)
    image2[:, 40:43, 5:8] = 0  # no data in date 2
    d1 = write_masked_rgb(tmp_path / "a.tif", image1, nodata=0)
    d2 = write_masked_rgb(tmp_path / "b.tif", image2, nodata=0)
    assert (image1 == 0).any(axis=0).mean() > 0.005  # pixels with a zero band: the old rule dropped every chip
    missing = (image2 == 0).all(axis=0)
    windows = chip_windows(64, 64, SIZE, STRIDE)
    expected = [[r, c] for r, c in windows if not missing[r:r + SIZE, c:c + SIZE].any()]
    assert len(expected) == 7
    build_chip_cache(pair_samples(d1, d2), tmp_path / "cache", SIZE, STRIDE, progress=False)
    [record] = _manifest(tmp_path / "cache")["samples"]
    assert record["origins"] == expected and record["skipped"] == 2
    date1 = np.load(tmp_path / "cache" / "date1.npy")
    for k, (r, c) in enumerate(expected):
        np.testing.assert_array_equal(date1[k], image1[:, r:r + SIZE, c:c + SIZE])  # the zeros kept as values


@pytest.mark.parametrize("declared_by", ["nodata", "mask band"])
def test_error_names_the_date_whose_pixels_have_no_data(tmp_path, declared_by):
    rng = np.random.default_rng(12)
    image1, image2 = _dark_rgb(rng), _dark_rgb(rng)
    if declared_by == "nodata":  # date 2 declares nodata 0 and is 0 in a block that every chip holds
        image2[:, 30:34, 30:34] = 0
        d1 = write_masked_rgb(tmp_path / "a.tif", image1, nodata=0)
        d2 = write_masked_rgb(tmp_path / "b.tif", image2, nodata=0)
        named = f"date 2 {d2} (nodata 0)"
    else:  # date 1 has a mask band, 0 in that block; date 2 declares nodata 0 but holds no such pixel
        mask = np.full((64, 64), 255, np.uint8)
        mask[30:34, 30:34] = 0
        d1 = write_masked_rgb(tmp_path / "a.tif", image1, mask=mask)
        d2 = write_masked_rgb(tmp_path / "b.tif", image2, nodata=0)
        named = f"date 1 {d1} (a mask band)"
    with pytest.raises(InputError) as error:
        build_chip_cache(pair_samples(d1, d2), tmp_path / "cache", SIZE, STRIDE, progress=False)
    assert str(error.value) == f"every chip of sample a (9 chips) has pixels without data, in {named}: no data to chip."
