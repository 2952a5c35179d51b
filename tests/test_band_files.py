"""Band-file dates through the commands: predict.py and evaluate.py read a model trained on band files from
folders of band files (fake OSCD cities written in the data set's layout), refuse a date or band list without
one of its bands in one line; and (slow) train.py trains a tiny model on real OSCD cities from their band files,
then predict.py and evaluate.py map and score a held-out city on its own grid and CRS."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
import yaml

import evaluate as evaluate_cli
import predict as predict_cli
from tests.utilities.data.test_oscd import write_city
from tests.utilities.fakes import write_geotiff
from tests.utilities.tiny_models import tiny_network
from utilities.artifacts.checkpoint import CheckpointRecord, Checkpoints
from utilities.artifacts.model_io import load_predictor
from utilities.inference.tiled import OUTPUT_FILES, predict_rasters
from utilities.raster.io import read_image

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT.parent / "shared" / "data" / "oscd"
BANDS = ["B04", "B03", "B02"]
TILING = ["--window", "32", "--stride", "16", "--no-quicklook", "--probability-dtype", "float32"]


@pytest.fixture(scope="module")
def city(tmp_path_factory):
    root = tmp_path_factory.mktemp("oscd")
    write_city(root, "alpha", 48, 42, np.random.default_rng(1))
    return root


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    record = CheckpointRecord("fractalresnet_tiny", 1, normalization={"mean": [1750.0] * 3, "std": [720.0] * 3,
                                                                      "dtype": "uint16"},
                              band_inputs={"names": BANDS, "reference": None, "resampling": "bilinear", "align": None},
                              metrics={"depth": 0, "val_mcc": 0.5, "val_ft": 0.5})
    return Checkpoints(tmp_path_factory.mktemp("run")).save(record, tiny_network(), None)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MANTIS_CACHE", str(tmp_path / "cache"))


def test_predict_reads_the_models_bands_from_folders(tmp_path, city, model):
    dates = city / "images" / "alpha"
    assert predict_cli.main(["--model", str(model), "--date1", str(dates / "imgs_1"), "--date2",
                             str(dates / "imgs_2"), "--out", str(tmp_path / "out"), *TILING]) == 0
    b02 = next((dates / "imgs_1").glob("*_B02.tif"))
    with rasterio.open(tmp_path / "out" / OUTPUT_FILES["probability"]) as out, rasterio.open(b02) as ref:
        assert (out.crs, out.transform, out.shape) == (ref.crs, ref.transform, ref.shape)
        probability = out.read(1)
    # the same pair stacked by NumPy into GeoTIFFs (the three bands are 10 m: no resampling) predicts the same
    stacked = []
    for date in ("imgs_1", "imgs_2"):
        image = np.concatenate([read_image(next((dates / date).glob(f"*_{b}.tif"))) for b in BANDS])
        with rasterio.open(b02) as ref:
            stacked.append(write_geotiff(tmp_path / f"{date}.tif", image, crs=ref.crs, transform=ref.transform))
    predict_rasters(load_predictor(model), *stacked, tmp_path / "library", window=32, stride=16, quicklook=False,
                    progress=False, probability_dtype="float32")
    with rasterio.open(tmp_path / "library" / OUTPUT_FILES["probability"]) as src:
        assert src.read(1).tobytes() == probability.tobytes()


def test_a_missing_or_extra_band_is_refused_in_one_line(tmp_path, city, model, capsys):
    dates = city / "images" / "alpha"
    common = ["--model", str(model), "--date1", str(dates / "imgs_1"), "--out", str(tmp_path / "out"), *TILING]
    partial = tmp_path / "imgs_2"
    partial.mkdir()
    for path in (dates / "imgs_2").glob("*.tif"):
        if not path.stem.endswith("_B03"):
            os.symlink(path, partial / path.name)
    assert predict_cli.main(common + ["--date2", str(partial)]) == 2
    assert capsys.readouterr().err == (f"error: date folder {partial} has no file for band B03 (expected a name "
                                       f"ending in _B03 or B03, suffix .tif, .tiff, .jp2, .vrt)\n")
    assert predict_cli.main(common + ["--date2", str(dates / "imgs_2"), "--bands", "B04,B03,B02,B08"]) == 2
    assert capsys.readouterr().err == ("error: the band list --bands has band B08, which the model was not trained "
                                       "on (its bands: B04,B03,B02)\n")
    assert predict_cli.main(common + ["--date2", str(dates / "imgs_2"), "--bands", "B04", "B02"]) == 2
    assert capsys.readouterr().err == ("error: the band list --bands lacks band B03, which the model was trained "
                                       "on (its bands: B04,B03,B02)\n")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_evaluate_scores_an_oscd_city(tmp_path, city, model):
    assert evaluate_cli.main(["--model", str(model), "--oscd", str(city), "--cities", "alpha", "--out",
                              str(tmp_path / "eval"), "--window", "32", "--stride", "16"]) == 0
    report = json.loads(next((tmp_path / "eval").glob("*.json")).read_text())
    assert "alpha" in json.dumps(report)


@pytest.mark.slow
@pytest.mark.skipif(not REAL.is_dir(), reason=f"real OSCD cities not present at {REAL}")
def test_tiny_model_trained_on_oscd_band_files_maps_a_held_out_city(tmp_path):
    """Train a tiny FracTAL ResNet on 4 real cities (saclay_e's date 2 aligned onto date 1) for a few epochs, from
    the 13 band files per date; predict and score the held-out aguasclaras. A pipeline check, not an accuracy
    claim: the timings and scores it prints go to BENCHMARKS.md."""
    config = {"data": {"kind": "oscd", "root": str(REAL), "train_cities": ["bercy", "nantes", "saclay_e", "mumbai"],
                       "val_cities": ["paris"], "align": "date1", "chip_size": 64, "stride": 64},
              "model": {"name": "fractalresnet_tiny"}, "augment": {"enabled": False},
              "train": {"batch_size": 8, "lr": 3e-3, "depths": [0], "patience": 1000, "max_epochs": 4},
              "output": {"run_dir": str(tmp_path / "run")}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    env = dict(os.environ, OMP_NUM_THREADS="1", MANTIS_CACHE=str(tmp_path / "cache"))
    start = time.monotonic()
    result = subprocess.run([sys.executable, "train.py", "-c", str(tmp_path / "config.yaml")], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=3000)
    trained = time.monotonic() - start
    assert result.returncode == 0, result.stderr[-3000:]
    record = CheckpointRecord.read(tmp_path / "run" / "checkpoints" / "latest.json")
    assert record.band_inputs == {"names": ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09",
                                            "B10", "B11", "B12"], "reference": None, "resampling": "bilinear",
                                  "align": "date1"}
    city = REAL / "images" / "aguasclaras"
    start = time.monotonic()
    result = subprocess.run([sys.executable, "predict.py", "--model", str(tmp_path / "run"), "--date1",
                             str(city / "imgs_1"), "--date2", str(city / "imgs_2"), "--out", str(tmp_path / "map")],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    predicted = time.monotonic() - start
    assert result.returncode == 0, result.stderr[-3000:]
    b02 = next((city / "imgs_1").glob("*_B02.tif"))
    with rasterio.open(tmp_path / "map" / OUTPUT_FILES["probability"]) as out, rasterio.open(b02) as ref:
        assert (out.crs, out.transform, out.shape) == (ref.crs, ref.transform, ref.shape)
    result = subprocess.run([sys.executable, "evaluate.py", "--model", str(tmp_path / "run"), "--oscd", str(REAL),
                             "--cities", "aguasclaras", "--out", str(tmp_path / "eval")],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    print(f"trained {len(history)} epochs in {trained:.0f} s (last: val F1 {history[-1]['val_f1']:.4f}, "
          f"MCC {history[-1]['val_mcc']:.4f}); predicted aguasclaras in {predicted:.0f} s; {result.stdout.strip()}")
    assert all(np.isfinite(row["train_loss"]) for row in history)


def test_checkpoint_records_band_inputs_and_old_records_stay_readable(tmp_path):
    old = {"model": "fractalresnet_tiny", "epoch": 3, "params": "epoch_0003.params", "bands": [1, 2, 3]}
    assert CheckpointRecord.from_dict(old, "old.json").band_inputs is None
    inputs = {"names": BANDS, "reference": "B02", "resampling": "nearest", "align": "date1"}
    record = CheckpointRecord("fractalresnet_tiny", 3, params="epoch_0003.params", band_inputs=inputs)
    (tmp_path / "new.json").write_text(json.dumps(record.to_dict()))
    assert CheckpointRecord.read(tmp_path / "new.json").band_inputs == inputs


def test_training_chips_of_band_folders_are_the_resampled_stack(tmp_path, city):
    """data.kind pair with data.band_names: the chips cut from the band folders (nearest resampling) are those of
    the bands repeated onto the 10 m grid by NumPy."""
    from utilities.data.chips import ChipDataset, read_manifest
    from utilities.training.config import DataConfig
    from utilities.training.pipeline import chip_cache

    dates = city / "images" / "alpha"
    label = tmp_path / "label.tif"
    with rasterio.open(next((dates / "imgs_1").glob("*_B02.tif"))) as ref:
        write_geotiff(label, np.zeros((1, 48, 42), "uint8"), crs=ref.crs, transform=ref.transform)
    cfg = DataConfig(kind="pair", date1=str(dates / "imgs_1"), date2=str(dates / "imgs_2"), label=str(label),
                     band_names=["B05", "B02", "B01"], resampling="nearest", chip_size=24, stride=12)
    folder = chip_cache(cfg, "train", tmp_path / "chips", progress=False)
    manifest = read_manifest(folder)
    chips = ChipDataset(folder, normalize=False)
    factors = {"B05": 2, "B02": 1, "B01": 6}
    stack = np.stack([np.kron(read_image(next((dates / "imgs_1").glob(f"*_{b}.tif")))[0],
                              np.ones((f, f), dtype="uint16")) for b, f in factors.items()])
    origins = manifest["samples"][0]["origins"]
    assert len(origins) == len(chips) == 9
    for index, (row, col) in enumerate(origins):
        np.testing.assert_array_equal(chips[index][0], stack[:, row:row + 24, col:col + 24])


def test_select_models_reads_an_oscd_city_with_the_runs_bands(tmp_path, city, model):
    import select_models as select_cli

    run_dir = model.parent.parent
    assert select_cli.main([str(run_dir), "--oscd", str(city), "--cities", "alpha", "--out",
                            str(tmp_path / "selection")]) == 0
    assert (tmp_path / "selection" / "selection.json").exists()
