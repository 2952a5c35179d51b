"""utilities/artifacts/band_inputs.py: the band-file inputs of checkpoints, run directories and ensembles, and
the dates a model reads."""
import json
from pathlib import Path

import numpy as np
import pytest
from affine import Affine

from tests.utilities.fakes import write_geotiff
from tests.utilities.tiny_models import save_checkpoint, tiny_network
from utilities.artifacts.band_inputs import model_band_inputs, model_dates
from utilities.artifacts.checkpoint import CheckpointRecord, Checkpoints
from utilities.errors import InputError
from utilities.raster.io import read_image

INPUTS = {"names": ["B04", "B02"], "reference": None, "resampling": "nearest", "align": None}


@pytest.fixture(scope="module")
def net():
    return tiny_network()


def test_band_inputs_of_checkpoints_runs_and_ensembles(tmp_path, net):
    params = Checkpoints(tmp_path / "run").save(CheckpointRecord("fractalresnet_tiny", 1, band_inputs=INPUTS), net,
                                                None)
    assert model_band_inputs(params) == model_band_inputs(params.with_suffix(".json")) == INPUTS
    assert model_band_inputs(tmp_path / "run") == INPUTS
    ensemble = tmp_path / "ensemble.json"
    ensemble.write_text(json.dumps({"members": [str(params.relative_to(tmp_path))], "mode": "outputs"}))
    assert model_band_inputs(ensemble) == INPUTS
    assert model_band_inputs(save_checkpoint(tmp_path / "old", net, 1)) is None  # whole rasters
    assert model_band_inputs(tmp_path / "model.onnx") is None


def test_dates_read_as_the_model_needs(tmp_path, net, monkeypatch):
    monkeypatch.setenv("MANTIS_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    for date in ("d1", "d2"):
        write_geotiff(tmp_path / date / "x_B02.tif", rng.integers(0, 9, (1, 8, 8)).astype("uint16"))
        write_geotiff(tmp_path / date / "x_B04.tif", rng.integers(0, 9, (1, 4, 4)).astype("uint16"),
                      transform=Affine(0.6, 0, 500000.0, 0, -0.6, 4500000.0))
    params = Checkpoints(tmp_path / "run").save(CheckpointRecord("fractalresnet_tiny", 1, band_inputs=INPUTS), net,
                                                None)
    date1, _ = model_dates(params, tmp_path / "d1", tmp_path / "d2")
    b04 = read_image(tmp_path / "d1" / "x_B04.tif")[0]
    np.testing.assert_array_equal(read_image(date1)[0], np.kron(b04, np.ones((2, 2), "uint16")))  # nearest, B04 first
    with pytest.raises(InputError, match=r"^the band list --bands lists the bands as B02,B04, the model takes them "
                                         r"as B04,B02$"):
        model_dates(params, tmp_path / "d1", tmp_path / "d2", ["B02", "B04"])
    plain = save_checkpoint(tmp_path / "old", net, 1)
    assert model_dates(plain, "a.tif", "b.tif") == (Path("a.tif"), Path("b.tif"))  # whole rasters, as given
