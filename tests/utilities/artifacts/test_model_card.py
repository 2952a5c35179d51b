"""utilities/artifacts/model_card.py: the STAC MLM item beside a checkpoint record (written by training), an ensemble
file and an ONNX file, read back and checked against the checkpoint it describes; the ONNX file's metadata."""
import dataclasses
import datetime
import hashlib
import json
from pathlib import Path

import mxnet as mx
import numpy as np
import onnx
import pytest

from tests.utilities.tiny_models import NORMALIZATION, tiny_network
from utilities.artifacts.checkpoint import CheckpointRecord, Checkpoints
from utilities.artifacts.export import OUTPUT_NAMES, export_onnx
from utilities.artifacts.model_card import MLM_SCHEMA, card_path, count_parameters, write_spec_card
from utilities.artifacts.model_io import load_predictor
from utilities.training.step import end_epoch

BANDS = [3, 2, 1]


def checkpoint(run_dir: Path, epoch: int = 1, seed: int = 0):
    """A tiny checkpoint and its card; returns (params path, network)."""
    net = tiny_network(seed=seed)
    params = Checkpoints(run_dir).save(record(epoch), net, None)
    write_spec_card(params)
    return params, net


def record(epoch: int) -> CheckpointRecord:
    return CheckpointRecord("fractalresnet_tiny", epoch, normalization=NORMALIZATION, bands=BANDS,
                            metrics={"depth": 10, "val_mcc": 0.5, "val_ft": 0.5},
                            config={"fidelity": "paper", "data": {"chip_size": 32}})


def read(path: Path) -> dict:
    return json.loads(path.read_text())


def check_item(card: dict) -> dict:
    """The STAC item's required fields and the MLM extension's; returns its properties."""
    assert card["type"] == "Feature" and card["stac_version"] == "1.0.0" and MLM_SCHEMA in card["stac_extensions"]
    assert card["geometry"] is None and card["links"] == [] and card["id"] == card["properties"]["mlm:name"]
    properties = card["properties"]
    datetime.datetime.fromisoformat(properties["datetime"].replace("Z", "+00:00"))
    for key in ("mlm:name", "mlm:architecture", "mlm:tasks", "mlm:input", "mlm:output"):
        assert properties[key], key
    assert [a for a in card["assets"].values() if "mlm:model" in a["roles"]]
    return properties


def test_card_beside_a_checkpoint_record_matches_it(tmp_path):
    params, net = checkpoint(tmp_path / "run")
    record_path = params.with_suffix(".json")
    record = CheckpointRecord.read(record_path)
    card = read(tmp_path / "run" / "checkpoints" / "epoch_0001.stac.json")
    properties = check_item(card)
    assert properties["mlm:name"] == "fractalresnet_tiny-epoch_0001"
    assert properties["mlm:architecture"] == "FracTAL ResNet"
    assert (properties["mlm:framework"], properties["mlm:framework_version"]) == ("MXNet", mx.__version__)
    parameters = sum(p.data().size for p in net.collect_params().values())
    assert properties["mlm:total_parameters"] == parameters == count_parameters(params)
    assert [i["name"] for i in properties["mlm:input"]] == ["date1", "date2"]
    for given in properties["mlm:input"]:
        assert given["bands"] == ["band_3", "band_2", "band_1"]  # the record's bands, in order
        assert given["input"] == {"shape": [-1, 3, -1, -1], "dim_order": ["batch", "channel", "height", "width"],
                                  "data_type": "float32"}
        assert [s["type"] for s in given["value_scaling"]] == ["z-score"] * 3
        assert [s["mean"] for s in given["value_scaling"]] == record.normalization["mean"]
        assert [s["stddev"] for s in given["value_scaling"]] == record.normalization["std"]
    assert [o["name"] for o in properties["mlm:output"]] == list(OUTPUT_NAMES)
    for output in properties["mlm:output"]:
        assert output["result"]["shape"] == [-1, 2, -1, -1]
        assert [c["name"] for c in output["classification:classes"]] == ["no-change", "change"]
    hyper = properties["mlm:hyperparameters"]
    assert hyper["fidelity"] == "paper" and hyper["epochs"] == [1] and hyper["ft_depth"] == 10
    assert hyper["size_multiple"] == net.size_multiple and hyper["training_chip_size"] == 32
    model, weights = card["assets"]["model"], card["assets"]["weights"]
    assert model["href"] == record_path.name and "mlm:model" in model["roles"]
    weights_file = record_path.parent / weights["href"]
    assert weights_file == params
    assert weights["file:checksum"] == "1220" + hashlib.sha256(params.read_bytes()).hexdigest()
    assert weights["file:checksum"] == "1220" + record.params_sha256
    # the card's model asset runs as it says: its normalisation is the predictor's
    predictor = load_predictor(record_path.parent / model["href"])
    scaling = properties["mlm:input"][0]["value_scaling"]
    np.testing.assert_array_equal(predictor.mean.ravel(), [s["mean"] for s in scaling])
    assert predictor.bands == BANDS


@pytest.mark.parametrize("mode", ["outputs", "parameters"])
def test_ensemble_card_lists_its_members(tmp_path, mode):
    first, _ = checkpoint(tmp_path / "run", epoch=1, seed=0)
    second, _ = checkpoint(tmp_path / "run", epoch=2, seed=1)
    ensemble = tmp_path / "selection" / "ensemble.json"
    ensemble.parent.mkdir()
    ensemble.write_text(json.dumps({"members": [f"../run/checkpoints/{p.name}" for p in (first, second)],
                                    "mode": mode}))
    card = read(write_spec_card(ensemble))
    assert card_path(ensemble) == ensemble.with_name("ensemble.stac.json")
    properties = check_item(card)
    single = count_parameters(first)
    assert properties["mlm:total_parameters"] == (2 * single if mode == "outputs" else single)
    assert properties["mlm:hyperparameters"]["ensemble"] == {"members": 2, "mode": mode}
    assert properties["mlm:hyperparameters"]["epochs"] == [1, 2]
    assert card["assets"]["model"]["href"] == "ensemble.json"
    assert [(ensemble.parent / card["assets"][f"weights_{i}"]["href"]).resolve() for i in (0, 1)] == [
        first.resolve(), second.resolve()]


def test_onnx_export_writes_a_card_and_the_same_facts_into_the_files_metadata(tmp_path):
    params, net = checkpoint(tmp_path / "run")
    out = tmp_path / "model.onnx"
    report = export_onnx(tmp_path / "run", out, size=32)
    assert report.card_file == str(tmp_path / "model.stac.json")
    card = read(tmp_path / "model.stac.json")
    properties = check_item(card)
    assert (properties["mlm:framework"], properties["mlm:framework_version"]) == ("ONNX", onnx.__version__)
    assert properties["mlm:input"][0]["input"]["shape"] == [1, 3, 32, 32]
    assert properties["mlm:output"][0]["result"]["shape"] == [1, 2, 32, 32]
    assert properties["mlm:hyperparameters"]["opset"] == report.opset
    assert card["assets"]["model"]["href"] == "model.onnx" and card["assets"]["normalization"]["href"] == "model.json"
    metadata = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert json.loads(metadata["stac_mlm_item"]) == card
    assert json.loads(metadata["bands"]) == ["band_3", "band_2", "band_1"]
    assert json.loads(metadata["mean"]) == NORMALIZATION["mean"] and json.loads(metadata["std"]) == NORMALIZATION["std"]
    assert json.loads(metadata["input_shape"]) == [1, 3, 32, 32] and metadata["inputs"] == "date1,date2"
    assert list(json.loads(metadata["outputs"])) == list(OUTPUT_NAMES)
    assert metadata["fidelity"] == "paper" and metadata["framework"].startswith("ONNX ")
    assert metadata["framework"].endswith(f"trained with MXNet {mx.__version__}")


def test_training_writes_the_card_beside_each_record_and_records_ignore_cards(tmp_path):
    """end_epoch (train.py's writes after an epoch) leaves epoch_NNNN.stac.json beside epoch_NNNN.json, which
    Checkpoints.records() does not take for a record."""
    checkpoints = Checkpoints(tmp_path / "run")
    for epoch in (1, 2):
        net = tiny_network(seed=epoch)
        end_epoch(checkpoints, record(epoch), net, None, [{"epoch": epoch, "loss": 0.5}], None)
        card = read(checkpoints.dir / f"epoch_{epoch:04d}.stac.json")
        params = checkpoints.dir / f"epoch_{epoch:04d}.params"
        assert card["properties"]["mlm:total_parameters"] == count_parameters(params)
        assert card["assets"]["model"]["href"] == f"epoch_{epoch:04d}.json"
    assert [r.epoch for r in checkpoints.records()] == [1, 2]


def test_pruned_checkpoints_lose_their_cards_with_their_parameters(tmp_path):
    checkpoints = Checkpoints(tmp_path / "run")
    for epoch in (1, 2, 3):
        end_epoch(checkpoints, record(epoch), tiny_network(seed=epoch), None, [{"epoch": epoch, "loss": 0.5}], 2)
    assert sorted(p.name for p in checkpoints.dir.glob("*.stac.json")) == ["epoch_0002.stac.json",
                                                                          "epoch_0003.stac.json"]
    assert [r.epoch for r in checkpoints.records()] == [1, 2, 3]  # the records stay, for the history


def test_card_of_a_model_trained_on_band_files_names_its_bands(tmp_path):
    band_inputs = {"names": ["B04", "B03", "B02"], "reference": None, "resampling": "bilinear", "align": "date1"}
    params = Checkpoints(tmp_path / "run").save(dataclasses.replace(record(1), bands=None, band_inputs=band_inputs),
                                                tiny_network(), None)
    write_spec_card(params)
    for given in check_item(read(card_path(params)))["mlm:input"]:
        assert given["bands"] == ["B04", "B03", "B02"]
        where = "the bands B04, B03, B02 in this order, on the grid of the finest band (bilinear resampling"
        assert where in given["description"]
