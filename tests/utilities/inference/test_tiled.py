"""Large-raster inference (paper Section 8.5.1) end to end on rasters in the real formats.

The model is a :class:`~utilities.artifacts.model_io.Predictor` around :class:`KnownChange`, a parameter-free block
whose outputs are a known function of its inputs, so that the tiled result can be compared with a direct prediction.
The command-line test trains a real tiny model with train.py for one step.
"""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import yaml
from mxnet import gluon

from tests.utilities.fakes import (
    write_geotiff,
    write_geotiff_pair,
    write_levircd_tree,
    write_masked_rgb,
    write_mismatched_pair,
    write_png,
)
from tests.utilities.tiny_models import NORMALIZATION, save_checkpoint, tiny_network
from utilities.artifacts.checkpoint import CheckpointRecord, Checkpoints
from utilities.artifacts.model_io import EnsembleMean, Predictor, load_predictor
from utilities.data.synthetic import write_geotiff_scene, write_levircd_layout
from utilities.errors import InputError
from utilities.inference import tiled
from utilities.inference.tiled import (
    OUTPUT_FILES,
    QUICKLOOK_FILE,
    WindowForward,
    pair_rows,
    predict_folder,
    predict_rasters,
    tiled_prediction,
)
from utilities.raster.io import raster_info
from utilities.raster.tiling import Tiling

pytestmark = pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")  # PNG, quick-looks

ROOT = Path(__file__).resolve().parents[3]
MISMATCHED = ROOT.parent / "shared" / "data" / "bad_inputs" / "mismatched_size"
MEAN, STD = 100.0, 50.0


class KnownChange(gluon.HybridBlock):
    """The (segmentation, boundary, distance) contract of the mantis models, each ``(B, 2, H, W)`` = (1 - p, p):
    p = sigmoid of the ``kernel`` x ``kernel`` mean (zero padded) of band 1 of date 2 - date 1, sigmoid of
    band 2 of date 1 + date 2, sigmoid of twice band 3 of date 2. ``kernel`` 1 is pixelwise."""

    size_multiple = 8

    def __init__(self, kernel: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.kernel = kernel

    def hybrid_forward(self, F, date1, date2):
        def band(x, i):
            return F.slice_axis(x, axis=1, begin=i, end=i + 1)

        def two_classes(p):
            return F.concat(1 - p, p, dim=1)

        change = band(date2 - date1, 0)
        if self.kernel > 1:
            k = self.kernel
            change = F.Pooling(change, kernel=(k, k), pad=(k // 2, k // 2), stride=(1, 1), pool_type="avg")
        return (two_classes(F.sigmoid(change)), two_classes(F.sigmoid(band(date1 + date2, 1))),
                two_classes(F.sigmoid(2 * band(date2, 2))))


def known_predictor(kernel: int = 1, channels: int = 3) -> Predictor:
    return Predictor([KnownChange(kernel)], [MEAN] * channels, [STD] * channels)


def direct(predictor, date1: np.ndarray, date2: np.ndarray) -> np.ndarray:
    """Class-1 (segmentation, boundary, distance) of the whole raster in one forward pass, ``(3, H, W)``."""
    return np.stack([o[0, 1] for o in predictor(date1[None], date2[None])])


def read_outputs(paths) -> dict:
    result = {}
    for name in OUTPUT_FILES:
        with rasterio.open(paths[name]) as src:
            result[name] = src.read(1)
    return result


def pair(folder: Path, height: int, width: int, seed: int = 0, **kwargs):
    """A georeferenced uint8 pair and its pixels ``(C, H, W)``."""
    date1, date2, _ = write_geotiff_pair(folder, height, width, with_label=False, seed=seed, **kwargs)
    with rasterio.open(date1) as a, rasterio.open(date2) as b:
        return date1, date2, a.read(), b.read()


def predict(predictor, date1, date2, out_dir, **kwargs):
    """:func:`predict_rasters` with float32 maps (compared at 1e-5 here; the uint8 form is tested in test_cog.py)."""
    return predict_rasters(predictor, date1, date2, out_dir, progress=False,
                           **{"probability_dtype": "float32", **kwargs})


# ------------------------------------------------------------------------------------------------------ stitching


def test_tiled_prediction_equals_the_direct_prediction_inside_and_at_the_borders(tmp_path):
    """Pixelwise model: every window predicts the full raster's value at each pixel, so the average over the
    16 windows covering each pixel (also the border ones, seen through the reflect padding) equals it."""
    predictor = known_predictor()
    date1, date2, image1, image2 = pair(tmp_path, 200, 300)
    paths = predict(predictor, date1, date2, tmp_path / "out", window=64, stride=16)
    out = read_outputs(paths)
    expected = direct(predictor, image1, image2)
    for name, maps in zip(("probability", "boundary", "distance"), expected):
        np.testing.assert_allclose(out[name], maps, atol=1e-5, err_msg=name)
    np.testing.assert_array_equal(out["mask"], expected[0] >= 0.5)
    assert 0.2 < out["mask"].mean() < 0.8


def test_tiled_prediction_averages_reflect_padded_windows(tmp_path):
    """3 x 3 model (whose windows disagree near their edges): the result is the average over the windows of the
    reflect-padded raster, computed here directly with numpy's padding."""
    predictor = known_predictor(kernel=3)
    date1, date2, image1, image2 = pair(tmp_path, 40, 56)
    out = read_outputs(predict(predictor, date1, date2, tmp_path / "out", window=16, stride=8, batch_size=3))
    t = Tiling(40, 56, 16, 8)
    pads = ((0, 0), (t.pad, t.padded_height - t.pad - 40), (t.pad, t.padded_width - t.pad - 56))
    padded1, padded2 = (np.pad(image, pads, mode="reflect") for image in (image1, image2))
    total = np.zeros((3, t.padded_height, t.padded_width))
    count = np.zeros((t.padded_height, t.padded_width))
    for r in t.row_origins:
        for c in t.col_origins:
            window = np.s_[:, r:r + 16, c:c + 16]
            total[window] += direct(predictor, padded1[window], padded2[window])
            count[window[1:]] += 1
    expected = (total / count)[:, t.pad:t.pad + 40, t.pad:t.pad + 56]
    for name, maps in zip(("probability", "boundary", "distance"), expected):
        np.testing.assert_allclose(out[name], maps, atol=1e-5, err_msg=name)


def test_png_pair_gives_outputs_without_georeferencing(tmp_path):
    predictor = known_predictor()
    rng = np.random.default_rng(3)
    images = [rng.integers(0, 256, (3, 24, 40), dtype=np.uint8) for _ in range(2)]
    date1, date2 = (write_png(tmp_path / f"{name}.png", image) for name, image in zip("AB", images))
    paths = predict(predictor, date1, date2, tmp_path / "out", window=16, stride=8)
    with rasterio.open(paths["probability"]) as src:
        assert src.crs is None and src.transform.is_identity and (src.height, src.width) == (24, 40)
        np.testing.assert_allclose(src.read(1), direct(predictor, *images)[0], atol=1e-5)


def test_raster_smaller_than_a_window_is_predicted_through_reflection(tmp_path):
    """A 5 x 7 raster (and a single row) in a 64 x 64 window: reflect padding folded as often as needed."""
    predictor = known_predictor()
    for height, width in ((5, 7), (1, 12)):
        date1, date2, image1, image2 = pair(tmp_path / f"{height}", height, width)
        out = read_outputs(predict(predictor, date1, date2, tmp_path / f"out{height}", window=64, stride=16))
        assert out["probability"].shape == (height, width)
        np.testing.assert_allclose(out["probability"], direct(predictor, image1, image2)[0], atol=1e-5)


# ------------------------------------------------------------------------------------------------ files and nodata


def test_outputs_have_the_inputs_grid_and_the_documented_format(tmp_path):
    date1, date2, _, _ = pair(tmp_path, 70, 90)
    paths = predict(known_predictor(), date1, date2, tmp_path / "out", window=32, stride=16)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted([*OUTPUT_FILES.values(), QUICKLOOK_FILE])
    for name, path in paths.items():
        assert path == tmp_path / "out" / {**OUTPUT_FILES, "quicklook": QUICKLOOK_FILE}[name]
    with rasterio.open(date1) as src:
        crs, transform = src.crs, src.transform
    for name in OUTPUT_FILES:
        with rasterio.open(paths[name]) as src:
            assert src.crs == crs and src.transform == transform and (src.height, src.width) == (70, 90)
            assert src.block_shapes == [(256, 256)] and src.compression.value == "DEFLATE"
            if name == "mask":
                assert src.dtypes[0] == "uint8" and src.nodata == 255
                assert set(np.unique(src.read(1))) <= {0, 1}
            else:
                assert src.dtypes[0] == "float32" and np.isnan(src.nodata)
    with rasterio.open(paths["quicklook"]) as src:
        # date 1 / date 2 / change, one above the other (the scene is wider than tall), 4-pixel gaps
        assert (src.count, src.height, src.width) == (3, 3 * 70 + 2 * 4, 90)


def test_nodata_in_either_date_is_nodata_in_every_output(tmp_path):
    rng = np.random.default_rng(5)
    image1, image2 = (rng.uniform(0, 200, (3, 48, 64)).astype(np.float32) for _ in range(2))
    image1[:, 10:14, 20:30] = np.nan
    image2[:, 30:40, 0:5] = -9999  # the declared nodata value, in every band
    date1 = write_geotiff(tmp_path / "a.tif", image1, nodata=-9999)
    date2 = write_geotiff(tmp_path / "b.tif", image2, nodata=-9999)
    out = read_outputs(predict(known_predictor(kernel=3), date1, date2, tmp_path / "out", window=16, stride=8))
    nodata = np.zeros((48, 64), bool)
    nodata[10:14, 20:30] = nodata[30:40, 0:5] = True
    for name in ("probability", "boundary", "distance"):
        np.testing.assert_array_equal(np.isnan(out[name]), nodata, err_msg=name)
        # the filled pixels do not spread NaN to their valid neighbours
        assert ((out[name][~nodata] >= 0) & (out[name][~nodata] <= 1)).all()
    np.testing.assert_array_equal(out["mask"] == 255, nodata)
    assert set(np.unique(out["mask"][~nodata])) <= {0, 1}


@pytest.mark.parametrize("value", [np.inf, -np.inf])
def test_infinite_pixels_are_nodata_like_nan_and_spare_their_valid_neighbours(tmp_path, value):
    """An infinite pixel is nodata in every output, and the valid pixels of the windows it shares get what they
    get when it is replaced by the neutral fill (the training mean) up front."""
    rng = np.random.default_rng(7)
    image1, image2 = (rng.uniform(0, 200, (3, 40, 48)).astype(np.float32) for _ in range(2))
    nodata = np.zeros((40, 48), bool)
    nodata[:, :24] = True  # the left half of date 2, in one band
    filled = image2.copy()
    image2[0][nodata], filled[0][nodata] = value, MEAN
    date1 = write_geotiff(tmp_path / "a.tif", image1)
    outputs = {}
    for name, image in (("inf", image2), ("filled", filled)):
        date2 = write_geotiff(tmp_path / f"{name}.tif", image)
        paths = predict(known_predictor(kernel=3), date1, date2, tmp_path / name, window=16, stride=8)
        outputs[name] = read_outputs(paths)
    np.testing.assert_array_equal(outputs["inf"]["mask"] == 255, nodata)
    for name in ("probability", "boundary", "distance"):
        np.testing.assert_array_equal(np.isnan(outputs["inf"][name]), nodata, err_msg=name)
        np.testing.assert_allclose(outputs["inf"][name][~nodata], outputs["filled"][name][~nodata], atol=1e-6)
    assert 0 < outputs["inf"]["mask"][~nodata].mean() < 1  # the valid half keeps its detections


def test_large_raster_is_read_in_strips_of_a_window(tmp_path, monkeypatch):
    """Bounded memory: the rasters are read in spans of at most a window of rows, each row about once."""
    spans, read_image = [], tiled.read_image

    def recording_read(path, bands=None, window=None):
        spans.append(window)
        return read_image(path, bands, window)

    monkeypatch.setattr(tiled, "read_image", recording_read)
    height, window, stride = 1000, 32, 16
    date1, date2, _, _ = pair(tmp_path, height, 24)
    predict(known_predictor(), date1, date2, tmp_path / "out", window=window, stride=stride)
    reads = [w for w in spans if w[2:] != (1, 1)]  # without the one-pixel checks up front
    assert all(rows <= window and cols == 24 for _, _, rows, cols in reads)
    pad = window - stride
    assert sum(rows for _, _, rows, _ in reads) <= 2 * (height + 2 * pad + stride)  # two dates, each row ~once


def test_quicklook_shows_both_dates_and_the_change_in_magenta_at_most_2048_pixels(tmp_path):
    height, width = 2100, 20
    image1 = np.full((3, height, width), 100, np.uint8)
    image2 = image1.copy()
    image2[0, :, :10] = 200  # change (band 1 of date 2 - date 1 > 0) in the left half only
    image2[0, :, 10:] = 50
    date1, date2 = (write_geotiff(tmp_path / f"{n}.tif", image) for n, image in (("a", image1), ("b", image2)))
    paths = predict(known_predictor(), date1, date2, tmp_path / "out", window=16, stride=16)
    with rasterio.open(paths["quicklook"]) as src:
        look = src.read()[:, 100:]  # below the panels' titles
    # halved (the long side 2100 > 2048): date 1 | date 2 | change, 10 columns each, 4-pixel gaps
    assert look.shape == (3, 1050 - 100, 3 * 10 + 2 * 4)

    def colours(pixels):
        return np.unique(pixels.reshape(3, -1), axis=1).T.tolist()

    assert colours(look[:, :, 0:10]) == [[100, 100, 100]]  # date 1
    assert colours(look[:, :, 14:19]) == [[200, 100, 100]] and colours(look[:, :, 19:24]) == [[50, 100, 100]]
    assert colours(look[:, :, 28:33]) == [[255, 0, 255]]  # change: magenta
    assert colours(look[:, :, 33:38]) == [[83, 83, 83]]  # no change: date 2 in grey


def test_levircd_folder_gets_one_output_set_per_sample(tmp_path):
    root = write_levircd_tree(tmp_path / "levir", splits=None, n=2, size=32)
    outputs = predict_folder(known_predictor(), root, tmp_path / "out", window=16, stride=8, quicklook=False,
                             progress=False)
    assert sorted(outputs) == ["tile_1", "tile_2"]
    for name, paths in outputs.items():
        assert sorted(paths) == sorted(OUTPUT_FILES)
        assert all(path.parent == tmp_path / "out" / name and path.exists() for path in paths.values())


class FailingPredictor(Predictor):
    """Fails on its third batch, like a run killed in the middle."""

    calls = 0

    def __call__(self, date1, date2):
        self.calls += 1
        if self.calls == 3:
            raise RuntimeError("out of memory")
        return super().__call__(date1, date2)


def test_failed_run_leaves_no_output_file(tmp_path):
    date1, date2, _, _ = pair(tmp_path, 64, 64)
    predictor = FailingPredictor([KnownChange()], [MEAN] * 3, [STD] * 3)
    with pytest.raises(RuntimeError, match="out of memory"):
        predict(predictor, date1, date2, tmp_path / "out", window=16, stride=8)
    assert list((tmp_path / "out").iterdir()) == []  # neither final names nor temporary files


# ----------------------------------------------------------------------------------------------------- bad inputs


def refused(predictor, date1, date2, tmp_path, **kwargs) -> str:
    with pytest.raises(InputError) as err:
        predict(predictor, date1, date2, tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()
    return str(err.value)


def test_mismatched_sizes_are_refused_naming_both_files(tmp_path):
    a, b = (MISMATCHED / "A.png", MISMATCHED / "B.png") if MISMATCHED.is_dir() else write_mismatched_pair(tmp_path)
    assert refused(known_predictor(channels=4), a, b, tmp_path) == (
        f"date images differ in size: {a} is 384x768 (rows x cols) but {b} is 383x768.")


def test_different_crs_is_refused(tmp_path):
    image = np.zeros((3, 16, 16), np.uint8)
    a = write_geotiff(tmp_path / "a.tif", image, crs="EPSG:32633")
    b = write_geotiff(tmp_path / "b.tif", image, crs="EPSG:32634")
    assert refused(known_predictor(), a, b, tmp_path) == (
        f"date images differ in CRS: {a} has EPSG:32633 but {b} has EPSG:32634.")


def test_different_band_counts_are_refused(tmp_path):
    a = write_geotiff(tmp_path / "a.tif", np.zeros((3, 16, 16), np.uint8))
    b = write_geotiff(tmp_path / "b.tif", np.zeros((4, 16, 16), np.uint8))
    assert refused(known_predictor(), a, b, tmp_path) == (
        f"date images differ in band count: {a} has 3 bands but {b} has 4.")


def test_band_count_other_than_the_models_is_refused(tmp_path):
    a, b, _, _ = pair(tmp_path, 16, 16, bands=4)
    assert refused(known_predictor(), a, b, tmp_path) == (
        f"the model takes 3 band(s) but 4 would be read from {a} (bands [1, 2, 3, 4] of its 4): choose 3 with "
        f"--bands.")
    assert refused(known_predictor(), a, b, tmp_path, bands=[1, 2, 5]) == (
        f"cannot select band 5 of {a}: it has 4 band(s) and band indices are 1-based.")
    paths = predict(known_predictor(), a, b, tmp_path / "out", window=16, stride=8, bands=[4, 2, 1])
    assert paths["probability"].exists()


def test_corrupt_file_is_refused(tmp_path):
    a, b, _, _ = pair(tmp_path, 16, 16)
    a.write_bytes(b"II*\x00 this is not a TIFF")
    message = refused(known_predictor(), a, b, tmp_path)
    assert message.startswith(f"cannot read raster {a}: ") and "\n" not in message


def test_window_that_the_model_cannot_take_is_refused(tmp_path):
    a, b, _, _ = pair(tmp_path, 16, 16)
    assert refused(known_predictor(), a, b, tmp_path, window=60, stride=20) == (
        "window 60 is not a multiple of 8, which the model needs (its input sides must be multiples of 8): "
        "use 56 or 64.")


def test_missing_model_is_refused(tmp_path):
    with pytest.raises(InputError) as err:
        load_predictor(tmp_path / "epoch_0001.params")
    assert str(err.value) == f"checkpoint {tmp_path / 'epoch_0001.params'} does not exist"


# ------------------------------------------------------------------------------------------------------------ CLI


def run(*args):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A fractalresnet_tiny checkpoint from one training step of train.py on 32 x 32 chips."""
    folder = tmp_path_factory.mktemp("train")
    write_levircd_layout(folder / "levir", n_per_split={"train": 1, "val": 1}, size=32, seed=0)
    config = {
        "data": {"kind": "levircd", "root": str(folder / "levir"), "chip_size": 32, "stride": 32},
        "model": {"name": "fractalresnet_tiny"},
        "train": {"batch_size": 1, "depths": [0], "max_epochs": 1, "max_steps_per_epoch": 1, "max_val_steps": 1},
        "output": {"run_dir": str(folder / "run")},
    }
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    result = run("train.py", "-c", folder / "config.yaml")
    assert result.returncode == 0, result.stderr[-2000:]
    return folder / "run"


def test_cli_predicts_a_georeferenced_pair(tmp_path, trained_run):
    scene = write_geotiff_scene(tmp_path / "scene", 48, 40, seed=1, crs="EPSG:32633")
    out = tmp_path / "out"
    result = run("predict.py", "--model", trained_run, "--date1", scene["date1"], "--date2", scene["date2"],
                 "--out", out, "--window", 32, "--stride", 16)
    assert result.returncode == 0, result.stderr[-2000:]
    for file_name in (*OUTPUT_FILES.values(), QUICKLOOK_FILE):
        assert f"wrote {out / file_name}" in result.stdout
    for file_name in OUTPUT_FILES.values():
        with rasterio.open(out / file_name) as src:
            assert src.crs == "EPSG:32633" and (src.height, src.width) == (48, 40)
            assert src.transform == rasterio.Affine(0.5, 0, 500000.0, 0, -0.5, 6500000.0)
    with rasterio.open(out / "change_probability.tif") as src:  # predict.py's default: uint8, p = v / 254
        assert src.dtypes[0] == "uint8" and src.scales == (1 / 254,) and src.nodata == 255
        assert (src.read(1) <= 254).all()


def test_cli_predicts_a_levircd_folder_without_georeferencing(tmp_path, trained_run):
    root = write_levircd_tree(tmp_path / "levir", splits=("test",), n=1, size=32)
    out = tmp_path / "out"
    result = run("predict.py", "--model", trained_run, "--levircd", root, "--split", "test", "--out", out,
                 "--window", 32, "--stride", 16, "--no-quicklook")
    assert result.returncode == 0, result.stderr[-2000:]
    assert sorted(p.name for p in (out / "test_1").iterdir()) == sorted(OUTPUT_FILES.values())
    assert result.stdout.endswith("note: the inputs have no CRS (PNG/JPEG or a TIFF without one), and neither have "
                                  "the outputs\n")


def test_cli_bad_input_is_one_line_on_stderr_with_exit_2(tmp_path):
    a, b, _, _ = pair(tmp_path, 16, 16)
    missing = tmp_path / "no_run"
    result = run("predict.py", "--model", missing, "--date1", a, "--date2", b, "--out", tmp_path / "out")
    assert result.returncode == 2
    assert result.stderr == f"error: checkpoint {missing} does not exist\n"
    assert not (tmp_path / "out").exists()


def test_tiled_strips_equal_the_streamed_rasters(tmp_path):
    """evaluate.py's tiled prediction gives, strip by strip, what predict.py writes (same windows, same average)."""
    a, b, _, _ = pair(tmp_path, 70, 90)
    predictor = known_predictor(kernel=3)
    written = predict(predictor, a, b, tmp_path / "out", window=32, stride=8, quicklook=False)
    forward = WindowForward(predictor)
    strips = list(tiled_prediction(32, 8, batch_size=3)(forward, pair_rows(a, b, [1, 2, 3], (0, 0, 70, 90)), 70, 90))
    assert [s.row for s in strips] == list(range(0, 70, 8))  # stride rows at a time
    heads = forward.heads(np.concatenate([s.outputs for s in strips], axis=1))
    assert [h.shape for h in heads] == [(2, 70, 90)] * 3
    for name, computed in zip(("probability", "boundary", "distance"), heads):
        with rasterio.open(written[name]) as src:
            np.testing.assert_allclose(computed[1], src.read(1), atol=1e-6)


# ------------------------------------------------------------------------------------------------------ predictor

def test_ensemble_outputs_are_the_numpy_mean_of_its_members():
    """One Predictor of several networks runs them as one averaging block (hybridized); each of its outputs
    is the NumPy mean of the members' outputs, each member run on its own."""
    rng = np.random.default_rng(1)
    date1, date2 = (rng.uniform(0, 255, (2, 3, 8, 16)).astype(np.float32) for _ in range(2))
    members = [KnownChange(kernel) for kernel in (1, 3, 5)]
    ensemble = Predictor(members, [MEAN] * 3, [STD] * 3)
    assert isinstance(ensemble.network, EnsembleMean) and ensemble.members == 3
    each = [Predictor([m], [MEAN] * 3, [STD] * 3)(date1, date2) for m in members]
    for k, output in enumerate(ensemble(date1, date2)):
        np.testing.assert_allclose(output, np.mean([e[k] for e in each], axis=0), rtol=1e-6, atol=1e-7)
    assert not np.allclose(each[0][0], each[2][0])  # the members do differ


def test_predictor_gives_pixels_without_data_the_bands_mean():
    rng = np.random.default_rng(2)
    date1, date2 = (rng.uniform(0, 255, (1, 3, 8, 8)).astype(np.float32) for _ in range(2))
    predictor = known_predictor()
    missing, filled = date1.copy(), date1.copy()
    missing[0, :, 2, 3], filled[0, :, 2, 3] = np.nan, MEAN
    for got, expected in zip(predictor(missing, date2), predictor(filled, date2)):
        np.testing.assert_array_equal(got, expected)
        assert np.isfinite(got).all()


# -------------------------------------------------------------------------------------- sizes the quick-look met


def probabilities(paths) -> np.ma.MaskedArray:
    """The change probability as its file means it (GDAL's scale applied), masked where it has no data."""
    with rasterio.open(paths["probability"]) as src:
        return src.read(1, masked=True).astype(np.float64) * src.scales[0] + src.offsets[0]


@pytest.mark.parametrize("height, width", [(6, 2053), (3, 2050), (2053, 5), (40, 1), (1, 1)])
def test_widths_the_quicklook_factor_does_not_divide_are_predicted_whole(tmp_path, height, width):
    """Sizes that ended predict with an OpenCV error (the quick-look's area resize of its nine channels when the
    factor does not divide the width; the title drawn on a 1 x 1 figure): all five files, the quick-look the
    block means of the dates."""
    image1 = np.full((3, height, width), 100, np.uint8)
    image2 = image1.copy()
    image2[0] = 200  # change everywhere
    date1, date2 = (write_geotiff(tmp_path / f"{n}.tif", image) for n, image in (("a", image1), ("b", image2)))
    paths = predict(known_predictor(), date1, date2, tmp_path / "out", window=8, stride=8)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted([*OUTPUT_FILES.values(), QUICKLOOK_FILE])
    assert (read_outputs(paths)["mask"] == 1).all() and (probabilities(paths) > 0.5).all()
    with rasterio.open(paths["quicklook"]) as src:
        look = src.read()
    factor = tiled._Quicklook(raster_info(date1), known_predictor()).factor
    rows, cols = -(-height // factor), -(-width // factor)
    stacked = width > height
    assert look.shape == ((3, 3 * rows + 8, cols) if stacked else (3, rows, 3 * cols + 8))
    change = look[:, 2 * (rows + 4):] if stacked else look[:, :, 2 * (cols + 4):]
    below_title = change[:, 26:] if rows > 26 else change  # a title (none on panels this small) spans <= 26 rows
    assert below_title.size and (below_title == np.array([255, 0, 255])[:, None, None]).all()  # magenta


def test_one_pixel_png_pair_is_predicted_with_its_quicklook(tmp_path):
    a = write_png(tmp_path / "a.png", np.full((3, 1, 1), 100, np.uint8))
    b = write_png(tmp_path / "b.png", np.array([200, 100, 100], np.uint8)[:, None, None])
    paths = predict(known_predictor(), a, b, tmp_path / "out", window=8, stride=8)
    np.testing.assert_allclose(probabilities(paths), [[1 / (1 + np.exp(-2.0))]], atol=1 / 254)  # sigmoid(100 / 50)
    with rasterio.open(paths["quicklook"]) as src:
        look = src.read()
    assert look.shape == (3, 1, 3 + 2 * 4)
    assert look[:, 0, 0].tolist() == [100] * 3 and look[:, 0, 5].tolist() == [200, 100, 100]
    assert look[:, 0, -1].tolist() == [255, 0, 255]


# ------------------------------------------------------------------------------------- GDAL's meaning of nodata


def test_nodata_0_on_uint8_rgb_misses_only_pixels_zero_in_every_band(tmp_path):
    """A pixel with one band at the declared nodata value holds data (its value goes to the model as it is);
    one with every band at it, or 0 in the file's mask band, is nodata in every output."""
    rng = np.random.default_rng(8)
    image1, image2 = (rng.integers(1, 256, (3, 24, 40), dtype=np.uint8) for _ in range(2))
    image1[1, 3, 4] = image2[0, 5, 6] = image2[1:, 7, 8] = 0  # one or two bands at 0: values
    image2[:, 10:12, 20:25] = 0  # every band: no data
    mask = np.full((24, 40), 255, np.uint8)
    mask[15:17, 30:33] = 0  # date 1's mask band
    date1 = write_masked_rgb(tmp_path / "a.tif", image1, nodata=0, mask=mask)
    date2 = write_masked_rgb(tmp_path / "b.tif", image2, nodata=0)
    paths = predict(known_predictor(), date1, date2, tmp_path / "out", window=8, stride=8)
    nodata = np.zeros((24, 40), bool)
    nodata[10:12, 20:25] = nodata[15:17, 30:33] = True
    np.testing.assert_array_equal(read_outputs(paths)["mask"] == tiled.MASK_NODATA, nodata)
    probability = probabilities(paths)
    np.testing.assert_array_equal(probability.mask, nodata)
    change = (image2[0].astype(np.float64) - image1[0]) / STD  # the model's pixelwise change on the file values
    expected = 1 / (1 + np.exp(-change))
    np.testing.assert_allclose(probability[~nodata], expected[~nodata], atol=1 / 254)


# ------------------------------------------------------------------------------- inputs unlike the training data


def test_dates_of_another_dtype_or_value_range_are_refused_in_one_line(tmp_path):
    image = np.random.default_rng(9).integers(0, 256, (3, 16, 16), dtype=np.uint8)
    a8, b8 = write_geotiff(tmp_path / "a8.tif", image), write_geotiff(tmp_path / "b8.tif", image[::-1].copy())
    a16 = write_geotiff(tmp_path / "a16.tif", image.astype(np.uint16) * 257)  # the same scene, 16-bit
    b16 = write_geotiff(tmp_path / "b16.tif", image[::-1].astype(np.uint16) * 257)
    trained = Predictor([KnownChange()], [MEAN] * 3, [STD] * 3, dtype="uint8")
    means = image.reshape(3, -1).astype(np.float64).mean(axis=1) * 257
    assert refused(trained, a16, b16, tmp_path, window=8, stride=8) == (
        f"date 1 {a16} is unlike the images the model was trained on: uint16 where the model was trained on uint8; "
        f"band means [{', '.join(f'{m:.4g}' for m in means)}] against the training's [100, 100, 100] (std [50, 50, "
        f"50]): convert it as the training images were, or pass --force-inputs to predict anyway.")
    unknown = known_predictor()  # a checkpoint without the training data type: the means alone
    assert refused(unknown, a16, b16, tmp_path, window=8, stride=8) == (
        f"date 1 {a16} is unlike the images the model was trained on: band means "
        f"[{', '.join(f'{m:.4g}' for m in means)}] against the training's [100, 100, 100] (std [50, 50, 50]): "
        f"convert it as the training images were, or pass --force-inputs to predict anyway.")
    a16_values, b16_values = (write_geotiff(tmp_path / f"{n}_values.tif", x.astype(np.uint16))  # 16-bit, 8-bit values
                              for n, x in (("a", image), ("b", image[::-1].copy())))
    assert refused(trained, a16_values, b16_values, tmp_path, window=8, stride=8) == (
        f"date 1 {a16_values} is unlike the images the model was trained on: uint16 where the model was trained "
        f"on uint8: convert it as the training images were, or pass --force-inputs to predict anyway.")
    assert predict(trained, a8, b8, tmp_path / "alike", window=8, stride=8)["probability"].exists()
    assert predict(unknown, a16_values, b16_values, tmp_path / "unknown", window=8, stride=8)["probability"].exists()


def test_forced_unlike_inputs_are_predicted_with_a_warning(tmp_path, caplog):
    image = np.random.default_rng(10).integers(0, 256, (3, 16, 16), dtype=np.uint16) * 257
    a, b = write_geotiff(tmp_path / "a.tif", image), write_geotiff(tmp_path / "b.tif", image)
    trained = Predictor([KnownChange()], [MEAN] * 3, [STD] * 3, dtype="uint8")
    with caplog.at_level("WARNING", logger="utilities.inference.input_check"):
        paths = predict(trained, a, b, tmp_path / "out", window=8, stride=8, force_inputs=True)
    assert paths["probability"].exists()
    assert [r.getMessage().split(": ")[0] for r in caplog.records] == [
        f"date 1 {a} is unlike the images the model was trained on", f"date 2 {b} is unlike the images the model "
                                                                     f"was trained on"]
    assert all(r.getMessage().endswith("(predicting anyway, as forced)") for r in caplog.records)


def test_float_inputs_within_the_training_range_pass(tmp_path):
    """Float32 and float64 are one kind; NaN and nodata pixels stay out of the means."""
    rng = np.random.default_rng(11)
    image = rng.uniform(0, 200, (3, 20, 20))
    image[:, :5] = -9999  # nodata: would pull the means 2500 below the training's
    a = write_geotiff(tmp_path / "a.tif", image.astype(np.float64), nodata=-9999)
    b = write_geotiff(tmp_path / "b.tif", image.astype(np.float64), nodata=-9999)
    trained = Predictor([KnownChange()], [MEAN] * 3, [STD] * 3, dtype="float32")
    assert predict(trained, a, b, tmp_path / "out", window=8, stride=8)["probability"].exists()


def test_band_means_a_few_stds_away_warn_and_many_are_refused(tmp_path, caplog):
    """Another season, or a model trained on a few tiles of narrow spread: a band mean 6 training std away is
    predicted with a one-line warning; 25 std away (a scaling error's kind of distance) is refused."""
    trained = Predictor([KnownChange()], [MEAN] * 3, [5.0] * 3, dtype="uint8")
    image = np.full((3, 16, 16), MEAN, np.uint8)
    image[2] = MEAN + 6 * 5
    a, b = write_geotiff(tmp_path / "a.tif", image), write_geotiff(tmp_path / "b.tif", image)
    with caplog.at_level("WARNING", logger="utilities.inference.input_check"):
        assert predict(trained, a, b, tmp_path / "warned", window=8, stride=8)["probability"].exists()
    assert [r.getMessage() for r in caplog.records] == [
        f"date {i} {d} is unlike the images the model was trained on: band means [100, 100, 130] against the "
        f"training's [100, 100, 100] (std [5, 5, 5])" for i, d in ((1, a), (2, b))]
    image[2] = MEAN + 25 * 5
    far = write_geotiff(tmp_path / "far.tif", image)
    assert refused(trained, a, far, tmp_path, window=8, stride=8) == (
        f"date 2 {far} is unlike the images the model was trained on: band means [100, 100, 225] against the "
        f"training's [100, 100, 100] (std [5, 5, 5]): convert it as the training images were, or pass "
        f"--force-inputs to predict anyway.")


def test_predictor_reads_the_training_dtype_from_the_checkpoint(tmp_path):
    """Records written before the data type was kept load with ``dtype`` None (checked on the means alone)."""
    old = save_checkpoint(tmp_path / "old", tiny_network(), epoch=1)
    record = CheckpointRecord("fractalresnet_tiny", 1, normalization={**NORMALIZATION, "dtype": "uint16"})
    new = Checkpoints(tmp_path / "new").save(record, tiny_network(), None)
    assert load_predictor(old).dtype is None and load_predictor(new).dtype == "uint16"
    ensemble = tmp_path / "ensemble.json"
    ensemble.write_text(f'{{"members": ["{new}"], "mode": "outputs"}}')
    assert load_predictor(ensemble).dtype == "uint16"
