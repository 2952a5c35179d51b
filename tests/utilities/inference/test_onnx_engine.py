"""utilities/inference/onnx_engine.py and engines.py: tiled inference with an exported model in ONNX Runtime agrees
with MXNet within 1e-5 (single models and an output ensemble, the same windows, padding, averaging and nodata);
the fixed batch of the graph; the export cache; the choice of engine and its errors."""
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio

from tests.utilities.fakes import fill_window, write_geotiff_pair
from tests.utilities.tiny_models import NORMALIZATION, save_checkpoint, tiny_network
from utilities.artifacts.export import export_onnx
from utilities.artifacts.model_io import load_predictor
from utilities.errors import InputError
from utilities.inference import onnx_engine
from utilities.inference.engines import DEFAULT_ENGINE, load_engine, resolve_engine
from utilities.inference.onnx_engine import OnnxPredictor, load_onnx_predictor, providers
from utilities.inference.tiled import predict_rasters

pytestmark = pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")

WINDOW, STRIDE, BATCH = 32, 16, 3
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A checkpoint of each tiny family, and an output ensemble of two fractalresnet_tiny checkpoints.

    Seeds whose random networks are well conditioned: some random tiny networks amplify float rounding
    (fractalresnet_tiny with seed 5: MXNet's own two GroupNorm forms differ by 2.4e-5 on standard-normal
    inputs, ONNX Runtime from either by 1.2-1.4e-4), which says nothing about the engines."""
    root = tmp_path_factory.mktemp("models")
    specs = {}
    for name in ("fractalresnet_tiny", "ceecnetv1_tiny"):
        specs[name] = save_checkpoint(root / name, tiny_network(name, seed=0), epoch=1, name=name)
    members = [str(save_checkpoint(root / "ensemble", tiny_network(seed=s), epoch=s)) for s in (1, 2)]
    specs["ensemble"] = root / "ensemble.json"
    specs["ensemble"].write_text(json.dumps({"members": members, "mode": "outputs"}))
    return specs


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MANTIS_ONNX_CACHE", str(tmp_path / "onnx-cache"))
    return tmp_path / "onnx-cache"


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """A uint8 pair (90 x 75: windows past both borders) with nodata pixels in both dates."""
    folder = tmp_path_factory.mktemp("scene")
    date1, date2, _ = write_geotiff_pair(folder, 90, 75, nodata=0, with_label=False, seed=3)
    fill_window(date1, (10, 60, 6, 6), 0)
    fill_window(date2, (70, 3, 4, 9), 0)
    return date1, date2


def read(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(1)


@pytest.mark.parametrize("model", ["fractalresnet_tiny", "ceecnetv1_tiny", "ensemble"])
def test_onnx_engine_agrees_with_mxnet_on_a_tiled_scene(models, scene, tmp_path, model):
    outputs = {}
    for engine in ("mxnet", "onnx"):
        predictor = load_engine(models[model], engine, WINDOW, BATCH)
        outputs[engine] = {name: read(path) for name, path in predict_rasters(
            predictor, *scene, tmp_path / engine, window=WINDOW, stride=STRIDE, batch_size=BATCH, progress=False,
            probability_dtype="float32", quicklook=False).items()}
    mxnet, onnx = outputs["mxnet"], outputs["onnx"]
    for name in ("probability", "boundary", "distance"):
        assert np.array_equal(np.isnan(mxnet[name]), np.isnan(onnx[name])), name  # the same nodata pixels
        difference = np.nanmax(np.abs(mxnet[name] - onnx[name]))
        print(f"{model} {name}: max |onnx - mxnet| {difference:.2e}")
        assert difference <= TOLERANCE, name
    assert np.isnan(mxnet["probability"]).sum() == 6 * 6 + 4 * 9
    decided = np.abs(np.nan_to_num(mxnet["probability"], nan=1) - 0.5) > TOLERANCE  # not on the threshold
    np.testing.assert_array_equal(mxnet["mask"][decided], onnx["mask"][decided])


def test_any_number_of_windows_runs_in_the_graphs_fixed_batch(models, tmp_path):
    """The graph takes exactly BATCH windows: 1, BATCH and 2 BATCH + 1 windows give MXNet's outputs, the last
    chunk filled up with zeros whose outputs are dropped."""
    path = export_onnx(models["fractalresnet_tiny"], tmp_path / "model.onnx", size=WINDOW, batch=BATCH).model_file
    onnx = OnnxPredictor(path)
    mxnet = load_predictor(models["fractalresnet_tiny"])
    assert (onnx.batch, onnx.size, onnx.channels) == (BATCH, WINDOW, 3)
    assert onnx.mean.ravel().tolist() == NORMALIZATION["mean"] and onnx.providers[-1] == "CPUExecutionProvider"
    rng = np.random.default_rng(0)
    for n in (1, BATCH, 2 * BATCH + 1):
        dates = [rng.uniform(0, 255, (n, 3, WINDOW, WINDOW)).astype(np.float32) for _ in range(2)]
        dates[0][0, :, :4, :4] = np.nan  # no data: the band's mean in both engines
        for got, expected in zip(onnx(*dates), mxnet(*dates)):
            assert got.shape == expected.shape == (n, 2, WINDOW, WINDOW)
            assert np.abs(got - expected).max() <= TOLERANCE


def test_a_model_is_exported_once_into_the_cache(models, cache, monkeypatch):
    first = load_onnx_predictor(models["ensemble"], WINDOW, BATCH)
    assert first.path.parent == cache and first.path.name.endswith(f"_{WINDOW}_b{BATCH}.onnx")
    assert first.path.with_suffix(".json").exists()

    def no_export(*args, **kwargs):
        raise AssertionError("exported again")

    monkeypatch.setattr(onnx_engine, "export_onnx", no_export)
    assert load_onnx_predictor(models["ensemble"], WINDOW, BATCH).path == first.path
    with pytest.raises(AssertionError, match="exported again"):  # another batch size is another graph
        load_onnx_predictor(models["ensemble"], WINDOW, BATCH + 1)


def test_window_other_than_the_graphs_is_one_line(models, tmp_path):
    path = export_onnx(models["fractalresnet_tiny"], tmp_path / "model.onnx", size=WINDOW, batch=1).model_file
    with pytest.raises(InputError) as err:
        load_onnx_predictor(path, 64, BATCH)
    assert str(err.value) == (f"ONNX model {path} takes windows of {WINDOW} pixels, not 64: predict with --window "
                              f"{WINDOW}, or export the model with --size 64")


def test_onnx_file_without_its_normalization_is_one_line(models, tmp_path):
    path = Path(export_onnx(models["fractalresnet_tiny"], tmp_path / "model.onnx", size=WINDOW).model_file)
    path.with_suffix(".json").unlink()
    with pytest.raises(InputError, match=rf"^ONNX model {path} needs the normalization {path.with_suffix('.json')} "
                                         r"that export.py writes beside it \(FileNotFoundError: "):
        OnnxPredictor(path)
    path.write_bytes(b"not a model")
    path.with_suffix(".json").write_text(json.dumps(NORMALIZATION))
    with pytest.raises(InputError, match=rf"^ONNX model {path} cannot be loaded by ONNX Runtime: "):
        OnnxPredictor(path)


def test_engine_choice():
    assert resolve_engine("model.onnx") == "onnx"
    assert resolve_engine("runs/levir") == DEFAULT_ENGINE
    assert resolve_engine("runs/levir", "onnx") == "onnx"
    with pytest.raises(InputError, match=r"^model.onnx is an ONNX file, which runs with --engine onnx; "):
        resolve_engine("model.onnx", "mxnet")
    with pytest.raises(InputError, match=r"^unknown engine 'tvm': choose one of mxnet, onnx$"):
        resolve_engine("runs/levir", "tvm")


def test_gpu_providers_come_first_when_onnx_runtime_has_them():
    assert providers(["CPUExecutionProvider", "CUDAExecutionProvider", "AzureExecutionProvider"]) == [
        "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert providers(["CPUExecutionProvider", "TensorrtExecutionProvider", "CUDAExecutionProvider"]) == [
        "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]


def test_predict_cli_runs_the_onnx_engine(models, scene, tmp_path, cache):
    """predict.py --engine onnx with a checkpoint: exported into the cache, outputs within 1e-5 of --engine mxnet."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[3]
    env = dict(os.environ, MANTIS_ONNX_CACHE=str(cache))
    common = ["--model", str(models["fractalresnet_tiny"]), "--date1", str(scene[0]), "--date2", str(scene[1]),
              "--window", str(WINDOW), "--stride", str(STRIDE), "--batch-size", str(BATCH), "--no-quicklook",
              "--probability-dtype", "float32"]
    for engine in ("mxnet", "onnx"):
        command = [sys.executable, "predict.py", *common, "--engine", engine, "--out", str(tmp_path / engine)]
        result = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr
    assert len(list(cache.glob("*.onnx"))) == 1
    mxnet, onnx = (read(tmp_path / engine / "change_probability.tif") for engine in ("mxnet", "onnx"))
    assert np.nanmax(np.abs(mxnet - onnx)) <= TOLERANCE
