"""Sample lists (utilities/data/datasets.py): LEVIR-CD layouts (fake and real), the WHU spatial split, generic pairs."""
from pathlib import Path

import numpy as np
import pytest

from tests.utilities.fakes import write_geotiff_pair, write_levircd_tree, write_png
from utilities.data.datasets import WHU_DEFAULT_SPLIT, levircd_samples, pair_samples, whu_regions, whu_samples
from utilities.errors import InputError

SHARED = Path(__file__).resolve().parents[3] / ".." / "shared" / "data"
LEVIRCD_SAMPLES = SHARED / "levircd_samples"


def test_levircd_official_layout(tmp_path):
    root = write_levircd_tree(tmp_path / "LEVIR-CD", n=3, size=32)
    for split in ("train", "val", "test"):
        samples = levircd_samples(root, split)
        assert [s.name for s in samples] == [f"{split}_{i}" for i in (1, 2, 3)]
        s = samples[0]
        assert (s.date1, s.date2, s.label) == tuple(root / split / f / f"{split}_1.png" for f in ("A", "B", "label"))
        assert s.window is None


def test_levircd_flat_layout_and_unknown_split(tmp_path):
    root = write_levircd_tree(tmp_path, splits=None, n=2, size=16)
    assert [s.name for s in levircd_samples(root)] == ["tile_1", "tile_2"]
    with pytest.raises(InputError, match=r"unknown LEVIR-CD split 'training': expected one of train, val, test"):
        levircd_samples(root, "training")


@pytest.mark.skipif(not LEVIRCD_SAMPLES.is_dir(), reason="shared data (../shared/data) is absent: not in a fresh clone")
def test_levircd_real_samples():
    samples = levircd_samples(LEVIRCD_SAMPLES)
    expected = sorted(p.stem for p in (LEVIRCD_SAMPLES / "A").glob("*.png"))
    assert len(samples) == 8 and [s.name for s in samples] == expected
    assert "train_386_0512_0768" in expected


@pytest.mark.parametrize("folder", ["B", "label"])
def test_levircd_missing_partner_is_named(tmp_path, folder):
    root = write_levircd_tree(tmp_path, splits=("train",), n=2, size=16)
    (root / "train" / folder / "train_2.png").unlink()
    with pytest.raises(InputError, match=rf"LEVIR-CD tile train_2.png has no partner .*train/{folder}/train_2.png\.$"):
        levircd_samples(root, "train")


def test_levircd_extra_file_without_partner_in_a(tmp_path):
    root = write_levircd_tree(tmp_path, splits=None, n=1, size=16)
    write_png(root / "B" / "stray.png", np.zeros((16, 16), np.uint8))
    with pytest.raises(InputError, match=r"tile stray.png has no partner .*/A/stray.png"):
        levircd_samples(root)


def test_levircd_missing_and_empty_folders(tmp_path):
    with pytest.raises(InputError, match=r"LEVIR-CD folder not found: .*/test/A\.$"):
        levircd_samples(tmp_path, "test")
    for sub in ("A", "B", "label"):
        (tmp_path / sub).mkdir()
    with pytest.raises(InputError, match=r"no .png images in the LEVIR-CD folder .*/A\.$"):
        levircd_samples(tmp_path)


def test_levircd_pairs_are_validated(tmp_path):
    root = write_levircd_tree(tmp_path, splits=None, n=1, size=16)
    write_png(root / "label" / "tile_1.png", np.zeros((15, 16), np.uint8))
    with pytest.raises(InputError, match=r"date image and label differ in size"):
        levircd_samples(root)


def _pixels(window):
    row, col, rows, cols = window
    return {(r, c) for r in range(row, row + rows) for c in range(col, col + cols)}


def test_whu_default_split_is_disjoint_and_covers_the_raster(tmp_path):
    d1, d2, label = write_geotiff_pair(tmp_path, 101, 37)
    by_split = {split: whu_samples(d1, d2, label, split) for split in ("train", "val", "test")}
    covered = [_pixels(s.window) for samples in by_split.values() for s in samples]
    assert sum(len(c) for c in covered) == 101 * 37 == len(set().union(*covered))
    assert [s.window for s in by_split["train"]] == [(0, 0, 64, 37)]  # round(0.63 * 101) = 64
    assert [s.window for s in by_split["val"]] == [(64, 0, 7, 37)]
    assert [s.window for s in by_split["test"]] == [(71, 0, 30, 37)]
    assert by_split["test"][0].name == "test" and by_split["test"][0].date1 == d1
    assert set(WHU_DEFAULT_SPLIT) == {"train", "val", "test"}


def test_whu_custom_regions_in_pixels_and_fractions(tmp_path):
    d1, d2, label = write_geotiff_pair(tmp_path, 40, 40)
    config = {
        "west": {"split": "train", "fraction": [0.0, 0.0, 1.0, 0.5]},
        "north_east": {"split": "val", "pixels": [0, 20, 10, 20]},
        "south_east": {"split": "test", "pixels": [10, 20, 30, 20]},
    }
    assert [(s.name, s.window) for s in whu_samples(d1, d2, label, "train", config)] == [("west", (0, 0, 40, 20))]
    regions = whu_regions(40, 40, config)
    assert sum(len(_pixels(r["window"])) for r in regions.values()) == 40 * 40


@pytest.mark.parametrize("config, message", [
    ({"a": {"split": "train", "pixels": [0, 0, 30, 40]}, "b": {"split": "test", "pixels": [20, 0, 20, 40]}},
     r"WHU split regions 'a' \(train\) and 'b' \(test\) overlap\."),
    ({"a": {"split": "train", "pixels": [0, 0, 50, 40]}}, r"region 'a' = \(0, 0, 50, 40\) .* leaves the 40x40"),
    ({"a": {"split": "holdout", "pixels": [0, 0, 5, 5]}}, r"region 'a' has split 'holdout'"),
    ({"a": {"split": "train", "pixels": [0, 0, 5]}}, r"region 'a' needs exactly one of 'fraction' or 'pixels'"),
    ({"a": {"split": "test", "pixels": [0, 0, 5, 5]}}, r"no region for split 'train'"),
])
def test_whu_bad_split_configs(tmp_path, config, message):
    d1, d2, label = write_geotiff_pair(tmp_path, 40, 40)
    with pytest.raises(InputError, match=message):
        whu_samples(d1, d2, label, "train", config)


def test_whu_rasters_are_validated(tmp_path):
    d1, _, label = write_geotiff_pair(tmp_path / "a", 40, 40)
    _, d2, _ = write_geotiff_pair(tmp_path / "b", 40, 40, crs="EPSG:4326")
    with pytest.raises(InputError, match="date images differ in CRS"):
        whu_samples(d1, d2, label, "train")


def test_pair_samples(tmp_path):
    d1, d2, label = write_geotiff_pair(tmp_path, 20, 30)
    [sample] = pair_samples(d1, d2, label)
    assert (sample.name, sample.date1, sample.date2, sample.label, sample.window) == ("2011", d1, d2, label, None)
    assert pair_samples(d1, d2)[0].label is None
    _, other, _ = write_geotiff_pair(tmp_path / "small", 20, 29)
    with pytest.raises(InputError, match=r"date images differ in size: .* is 20x30 \(rows x cols\) but .* is 20x29"):
        pair_samples(d1, other)
