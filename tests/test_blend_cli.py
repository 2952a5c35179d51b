"""``--blend`` of predict.py and evaluate.py reaches the strip predictor: the command's outputs equal those of
the library called with that blend, and the default is the paper's plain average."""
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio

import evaluate as evaluate_cli
import predict as predict_cli
from tests.utilities.fakes import write_geotiff_pair
from tests.utilities.tiny_models import save_checkpoint, tiny_network
from utilities.artifacts.model_io import load_predictor
from utilities.data.datasets import Sample
from utilities.inference.evaluation import evaluate
from utilities.inference.tiled import OUTPUT_FILES, predict_rasters, tiled_prediction

TILING = dict(window=32, stride=16)


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return save_checkpoint(tmp_path_factory.mktemp("run"), tiny_network(), epoch=1)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    return write_geotiff_pair(tmp_path_factory.mktemp("pair"), 56, 40)


def probability(folder: Path) -> np.ndarray:
    with rasterio.open(folder / OUTPUT_FILES["probability"]) as src:
        return src.read(1)


def test_predict_blend_option_reaches_the_prediction(tmp_path, model, pair):
    date1, date2, _ = pair
    common = ["--model", str(model), "--date1", str(date1), "--date2", str(date2), "--window", "32", "--stride",
              "16", "--no-quicklook", "--probability-dtype", "float32"]
    assert predict_cli.main(common + ["--out", str(tmp_path / "default")]) == 0
    assert predict_cli.main(common + ["--out", str(tmp_path / "taper"), "--blend", "taper"]) == 0
    predictor = load_predictor(model)
    for blend in ("uniform", "taper"):
        predict_rasters(predictor, date1, date2, tmp_path / f"library_{blend}", quicklook=False, progress=False,
                        probability_dtype="float32", blend=blend, **TILING)
    assert probability(tmp_path / "default").tobytes() == probability(tmp_path / "library_uniform").tobytes()
    assert probability(tmp_path / "taper").tobytes() == probability(tmp_path / "library_taper").tobytes()
    assert np.abs(probability(tmp_path / "taper") - probability(tmp_path / "default")).max() > 1e-5


def test_evaluate_blend_option_reaches_the_prediction(tmp_path, model, pair):
    """Scored at the median taper probability, where the two blends' masks differ."""
    date1, date2, label = pair
    predictor = load_predictor(model)
    predict_rasters(predictor, date1, date2, tmp_path / "taper", quicklook=False, progress=False,
                    probability_dtype="float32", blend="taper", **TILING)
    threshold = float(np.median(probability(tmp_path / "taper")))
    assert evaluate_cli.main(["--model", str(model), "--date1", str(date1), "--date2", str(date2), "--label",
                              str(label), "--out", str(tmp_path / "eval"), "--blend", "taper", "--window", "32",
                              "--stride", "16", "--threshold", repr(threshold)]) == 0
    written = json.loads((tmp_path / "eval" / "metrics.json").read_text())["global"]
    counts = {blend: evaluate(predictor, [Sample("pair", date1, date2, label)], threshold=threshold,
                              predict=tiled_prediction(blend=blend, **TILING)).counts.tolist()
              for blend in ("uniform", "taper")}
    assert [written[k] for k in ("tp", "fp", "fn", "tn")] == counts["taper"] != counts["uniform"]
