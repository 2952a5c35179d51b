"""Synthetic change-detection scenes and their writers."""
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import rasterio
from rasterio.enums import Compression

from utilities.data.synthetic import generate_scene, make_layout, render_rows, write_geotiff_scene, write_levircd_layout

ROOT = Path(__file__).resolve().parents[3]


def assert_scenes_equal(a, b):
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def test_shapes_and_dtypes():
    date1, date2, change = generate_scene(100, 140, seed=1)
    assert date1.shape == date2.shape == (100, 140, 3)
    assert change.shape == (100, 140)
    assert date1.dtype == date2.dtype == change.dtype == np.uint8


def test_deterministic_per_seed():
    assert_scenes_equal(generate_scene(128, 96, seed=3), generate_scene(128, 96, seed=3))
    assert not np.array_equal(generate_scene(128, 96, seed=3)[0], generate_scene(128, 96, seed=4)[0])


@pytest.mark.parametrize("seed", range(5))
def test_change_mask_binary_non_empty_and_on_changed_buildings(seed):
    date1, date2, change = generate_scene(256, 256, seed=seed)
    assert set(np.unique(change)) == {0, 1}
    # match the band means/deviations of date 2 to date 1 (a global radiometric normalisation, blind to the mask)
    a, b = (d.reshape(-1, 3).astype(float) for d in (date1, date2))
    b = (b - b.mean(axis=0)) / b.std(axis=0) * a.std(axis=0) + a.mean(axis=0)
    difference = np.abs(a - b).mean(axis=1).reshape(change.shape)
    assert difference[change == 1].mean() > 2.5 * difference[change == 0].mean()


def test_change_mask_is_footprint_union_of_appeared_and_vanished_buildings():
    layout = make_layout(256, 256, seed=7, p_new=0.5, p_demolish=0.5)
    expected = np.zeros((256, 256), np.uint8)
    for (x0, y0, x1, y1), status in zip(layout.rects, layout.status):
        if status:
            expected[max(y0, 0):max(y1, 0), max(x0, 0):max(x1, 0)] = 1
    _, _, change = render_rows(layout, 0, 256)
    np.testing.assert_array_equal(change, expected)
    assert {1, 2} <= set(layout.status)  # both demolished and new buildings


def test_nuisances_change_unchanged_pixels_a_little():
    date1, date2, change = generate_scene(256, 256, seed=2)
    assert np.abs(date1.astype(int) - date2.astype(int))[change == 0].mean() > 1  # illumination, season, noise...
    quiet = generate_scene(256, 256, seed=2, season=0, illumination=0, max_shift=0, noise_std=0)
    still = (quiet[2] == 0) & (quiet[0] == quiet[1]).all(axis=2)
    assert still.mean() > 0.5  # ...and without them most unchanged pixels agree (shadows move with the sun)


@pytest.mark.parametrize("rows", [1, 13, 64])
def test_strip_rendering_does_not_depend_on_strip_height(rows):
    layout = make_layout(100, 90, seed=5)
    whole = render_rows(layout, 0, 100)
    strips = [render_rows(layout, r, min(r + rows, 100)) for r in range(0, 100, rows)]
    assert_scenes_equal(whole, [np.concatenate(parts) for parts in zip(*strips)])


def test_write_levircd_layout(tmp_path):
    root = write_levircd_layout(tmp_path / "levir", {"train": 2, "val": 1, "test": 1}, size=64, seed=0)
    for split, count in (("train", 2), ("val", 1), ("test", 1)):
        for folder in ("A", "B", "label"):
            names = sorted(p.name for p in (root / split / folder).iterdir())
            assert names == [f"{split}_{i}.png" for i in range(1, count + 1)]
        a = cv2.imread(str(root / split / "A" / f"{split}_1.png"), cv2.IMREAD_UNCHANGED)
        b = cv2.imread(str(root / split / "B" / f"{split}_1.png"), cv2.IMREAD_UNCHANGED)
        label = cv2.imread(str(root / split / "label" / f"{split}_1.png"), cv2.IMREAD_UNCHANGED)
        assert a.shape == b.shape == (64, 64, 3) and label.shape == (64, 64)
        assert a.dtype == b.dtype == label.dtype == np.uint8
        assert set(np.unique(label)) <= {0, 255}


def test_write_geotiff_scene_metadata_and_pixels(tmp_path):
    height, width, block = 100, 72, 32  # several strips, the last one partial
    paths = write_geotiff_scene(tmp_path, height, width, seed=3, crs="EPSG:32755", pixel_size=0.3,
                                origin=(300000.0, 5800000.0), block=block)
    assert set(paths) == {"date1", "date2", "label"}
    expected = generate_scene(height, width, seed=3)
    for (name, path), pixels in zip(paths.items(), expected):
        with rasterio.open(path) as src:
            assert src.crs.to_epsg() == 32755
            assert src.transform == rasterio.Affine(0.3, 0.0, 300000.0, 0.0, -0.3, 5800000.0)
            assert (src.height, src.width, src.count) == (height, width, 1 if name == "label" else 3)
            assert src.dtypes[0] == "uint8"
            assert src.profile["tiled"] and src.block_shapes[0] == (block, block)
            assert src.compression == Compression.deflate
            data = src.read()
        np.testing.assert_array_equal(data, pixels.transpose(2, 0, 1) if pixels.ndim == 3 else pixels[None])
    assert set(np.unique(expected[2])) <= {0, 1}


def test_write_geotiff_scene_rejects_bad_block(tmp_path):
    with pytest.raises(ValueError):
        write_geotiff_scene(tmp_path, 64, 64, block=40)


@pytest.mark.parametrize("args,outputs", [
    (["levircd", "{out}", "--n-train", "1", "--n-val", "1", "--n-test", "1", "--size", "32"],
     ["train/A/train_1.png", "val/label/val_1.png", "test/B/test_1.png"]),
    (["geotiff", "{out}", "--size", "48", "--block", "16"], ["date1.tif", "date2.tif", "label.tif"]),
])
def test_cli(tmp_path, args, outputs):
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-m", "utilities.data.synthetic", *(a.format(out=out) for a in args)],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert str(out) in result.stdout
    for name in outputs:
        assert (out / name).is_file()
