"""The demo pipeline (`make demo`) at toy size: every step runs, and its outputs exist and open."""
import json
import subprocess
import sys
from pathlib import Path

import cv2
import pyogrio
import rasterio
import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_quick_demo_writes_every_output(tmp_path):
    out = tmp_path / "demo"
    result = subprocess.run([sys.executable, "-m", "demo", "--quick", "--seed", "5", "--out", str(out)], cwd=ROOT,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    for step in ("1/6", "2/6", "3/6", "4/6", "5/6", "6/6", "demo finished"):
        assert step in result.stdout
    assert yaml.safe_load((out / "run" / "config.yaml").read_text())["train"]["seed"] == 5
    with rasterio.open(out / "data" / "scene" / "date1.tif") as src:
        crs, transform, shape = src.crs, src.transform, src.shape
    for name in ("change_probability.tif", "change_mask.tif", "boundary.tif", "distance.tif"):
        with rasterio.open(out / "prediction" / name) as src:
            assert (src.crs, src.transform, src.shape) == (crs, transform, shape)
    for png in ("prediction/quicklook.png", "selection/pareto.png", "training_curves.png"):
        assert cv2.imread(str(out / png)) is not None, png
    for gpkg in ("prediction/change_polygons.gpkg", "evaluation/change_probability_tpfpfn.gpkg"):
        assert pyogrio.read_info(out / gpkg)["crs"] == crs.to_string(), gpkg
    assert json.loads((out / "selection" / "ensemble.stac.json").read_text())["properties"]["mlm:input"]
    maps = list((out / "evaluation").glob("*_tpfpfn.png"))
    assert maps and cv2.imread(str(maps[0])) is not None
    metrics = json.loads((out / "evaluation" / "metrics.json").read_text())
    assert "f1" in json.dumps(metrics) and "mcc" in json.dumps(metrics)
    assert (out / "evaluation" / "metrics.md").read_text().count("|") > 10
    ensemble = json.loads((out / "selection" / "ensemble.json").read_text())
    assert ensemble["mode"] == "outputs" and ensemble["members"]
    # the most evolved stage leaves 3 checkpoints, all candidates of the Pareto selection
    selection = json.loads((out / "selection" / "selection.json").read_text())
    assert [c["epoch"] for c in selection["candidates"]] == [2, 3, 4] and selection["front_epochs"]
    # progress comes as log lines (the steps' output is not a terminal), not as bar updates
    log = (out / "demo.log").read_text()
    assert "it/s]" not in log and "epoch 4 train: 2/2 steps (100%)" in log
