"""Sample lists (utilities/data/datasets.py): LEVIR-CD layouts (fake and real), the WHU spatial split, generic pairs."""
from pathlib import Path

import numpy as np
import pytest

from tests.utilities.fakes import write_geotiff_pair, write_levircd_tree, write_png
from utilities.data.chips import build_chip_cache, read_manifest
from utilities.data.datasets import (
    WHU_DEFAULT_SPLIT,
    levircd_samples,
    pair_samples,
    tile_area_split,
    tile_parts,
    whu_regions,
    whu_samples,
)
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


# ------------------------------------------------------------------ the paper's validation split (Section 8.1)

@pytest.mark.parametrize("height,width", [(1024, 1024), (700, 900)])
def test_tile_parts_cover_the_tile_once_with_a_tenth_for_validation(height, width):
    """The corner, the band above it and the block left of it tile the raster: every pixel once; the corner
    is the bottom-right ~10 % (LEVIR-CD's 1024 x 1024: 324 x 324, 10.01 %)."""
    parts = tile_parts(height, width, 0.1)
    canvas = np.zeros((height, width), np.int64)
    for row, col, rows, cols in parts.values():
        canvas[row:row + rows, col:col + cols] += 1
    assert np.all(canvas == 1)
    row, col, rows, cols = parts["corner"]
    assert (row + rows, col + cols) == (height, width)
    assert rows * cols / (height * width) == pytest.approx(0.1, abs=0.002)
    if height == width == 1024:
        assert parts == {"corner": (700, 700, 324, 324), "top": (0, 0, 700, 1024), "left": (700, 0, 324, 700)}


def _chip_boxes(manifest, size):
    return [(r, c, sample["name"].split("/")[0]) for sample in manifest["samples"] for r, c in sample["origins"]]


def test_tile_area_split_chips_never_straddle_the_sides(tmp_path):
    """Chipped (64-pixel chips at stride 32, 224 x 224 tiles): every validation chip lies in its tile's
    corner, no training chip touches a validation pixel of its tile, and every pixel of each side is in a
    chip of that side; deterministic."""
    size = 64
    tiles = levircd_samples(write_levircd_tree(tmp_path / "levir", splits=None, n=2, size=224))
    sides = {split: tile_area_split(tiles, 0.1, split, size) for split in ("train", "val")}
    assert [s.name for s in sides["val"]] == ["tile_1/corner", "tile_2/corner"]
    assert [s.name for s in sides["train"]] == ["tile_1/top", "tile_1/left", "tile_2/top", "tile_2/left"]
    assert sides["train"] == tile_area_split(tiles, 0.1, "train", size)
    corner = tile_parts(224, 224, 0.1)["corner"]
    covered = {}
    for split, samples in sides.items():
        manifest = read_manifest(build_chip_cache(samples, tmp_path / split, size=size, stride=32,
                                                  progress=False).parent)
        for tile in ("tile_1", "tile_2"):
            covered[split, tile] = np.zeros((224, 224), bool)
        for r, c, tile in _chip_boxes(manifest, size):
            covered[split, tile][r:r + size, c:c + size] = True
    in_corner = np.zeros((224, 224), bool)
    in_corner[corner[0]:, corner[1]:] = True
    for tile in ("tile_1", "tile_2"):
        np.testing.assert_array_equal(covered["val", tile], in_corner)
        np.testing.assert_array_equal(covered["train", tile], ~in_corner)


def test_tile_area_split_refuses_tiles_too_small_and_bad_arguments(tmp_path):
    tiles = levircd_samples(write_levircd_tree(tmp_path / "levir", splits=None, n=1, size=256))
    with pytest.raises(InputError, match=r"^tile .*tile_1\.png is 256x256 \(rows x cols\): with 0\.1 of it for "
                                         r"validation, its parts \(corner 81x81, left 81x175\) cannot hold a "
                                         r"128x128 chip\.$"):
        tile_area_split(tiles, 0.1, "val", 128)
    with pytest.raises(InputError, match=r"^the validation share of each tile must be in \(0, 1\), got 1\.0\.$"):
        tile_area_split(tiles, 1.0, "val")
    with pytest.raises(InputError, match=r"^unknown split 'test' of the tiles: expected one of train, val\.$"):
        tile_area_split(tiles, 0.1, "test")
    windowed = [tiles[0].__class__(**{**tiles[0].__dict__, "window": (0, 0, 8, 8)})]
    with pytest.raises(InputError, match=r"^sample tile_1 \(.*\) is a window, not a whole tile to split\.$"):
        tile_area_split(windowed, 0.1, "val")
