"""utilities/inference/manifest.py and predict.py --manifest: reading CSV/YAML manifests of pairs, their errors as one
line, the tasks and SLURM array lists, and the command predicting, reporting and skipping a region's tasks."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import yaml

from tests.utilities.fakes import write_geotiff, write_geotiff_pair
from tests.utilities.tiny_models import save_checkpoint, tiny_network
from utilities.errors import InputError
from utilities.inference.manifest import array_spec, plan_tasks, read_manifest
from utilities.inference.tiled import OUTPUT_FILES

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def region(tmp_path_factory):
    """Two georeferenced pairs (40 x 50 and 100 x 30 pixels), the second with a label, in a folder."""
    folder = tmp_path_factory.mktemp("region")
    write_geotiff_pair(folder / "a", 40, 50, with_label=False, seed=1)
    write_geotiff_pair(folder / "b", 100, 30, seed=2)
    return folder


def write_csv(folder: Path, text: str) -> Path:
    path = folder / "region.csv"
    path.write_text(text)
    return path


CSV = "date1,date2,label,out\na/2011.tif,a/2016.tif,,out/a\nb/2011.tif,b/2016.tif,b/label.tif,out/b\n"


def test_csv_and_yaml_manifests_give_the_same_pairs(region):
    csv_pairs = read_manifest(write_csv(region, CSV))
    (region / "region.yaml").write_text(yaml.safe_dump({"pairs": [
        {"date1": "a/2011.tif", "date2": "a/2016.tif", "out": "out/a"},
        {"date1": str(region / "b/2011.tif"), "date2": "b/2016.tif", "label": "b/label.tif", "out": "out/b"}]}))
    assert read_manifest(region / "region.yaml") == csv_pairs
    a, b = csv_pairs
    assert (a.number, a.date1, a.out, a.height, a.label) == (1, region / "a/2011.tif", region / "out/a", 40, None)
    assert (b.number, b.date2, b.height, b.label) == (2, region / "b/2016.tif", 100, region / "b/label.tif")


def test_tasks_are_pairs_or_blocks_in_manifest_order(region):
    pairs = read_manifest(write_csv(region, CSV))
    assert [(t.index, t.pair.number, t.block.rows) for t in plan_tasks(pairs)] == [(0, 1, (0, 40)), (1, 2, (0, 100))]
    tasks = plan_tasks(pairs, 40)
    assert [(t.index, t.pair.number, t.block.rows) for t in tasks] == [
        (0, 1, (0, 40)), (1, 2, (0, 33)), (2, 2, (33, 66)), (3, 2, (66, 100))]
    assert tasks[2].describe() == "pair 2 (2011.tif -> 2016.tif), block 2/3 (rows 33-65 of 100)"


def test_array_spec_joins_runs():
    assert array_spec([7, 0, 1, 2, 5, 8, 2]) == "0-2,5,7-8"
    assert array_spec([3]) == "3" and array_spec([]) == ""


@pytest.mark.parametrize("text, message", [
    ("date1,date2,out\na/2011.tif,a/2016.tif\n", ", pair 1 (line 2): no out"),
    ("date1,date2,out,when\na/2011.tif,a/2016.tif,o,x\n", ": the header must name the columns date1, date2, out and "
                                                          "optionally label; it has date1, date2, out, when"),
    ("date1,date2,out\na/2011.tif,a/2016.tif,o,extra\n", ", pair 1 (line 2): more values than the header's columns"),
    ("date1,date2,out\na/2011.tif,a/2016.tif,o\na/2011.tif,nope.tif,p\n", ", pair 2 (line 3): "),
    ("date1,date2,out\na/2011.tif,a/2016.tif,o\nb/2011.tif,b/2016.tif,./o\n",
     ", pair 2 (line 3): its out {folder}/o is also the out of pair 1 (line 2)"),
    ("date1,date2,out\n", " lists no pairs"),
], ids=["missing", "header", "extra", "file", "same-out", "empty"])
def test_bad_csv_manifest_is_one_line(region, text, message):
    path = write_csv(region, text)
    with pytest.raises(InputError) as err:
        read_manifest(path)
    assert str(err.value).startswith(f"manifest {path}{message.format(folder=region)}"), str(err.value)
    assert "\n" not in str(err.value)


def test_dates_off_each_others_grid_are_refused_naming_the_pair(region):
    write_geotiff(region / "shifted.tif", np.zeros((3, 40, 50), np.uint8), crs="EPSG:32634")
    path = write_csv(region, "date1,date2,out\na/2011.tif,shifted.tif,o\n")
    with pytest.raises(InputError, match=rf"^manifest {path}, pair 1 \(line 2\): .*CRS"):
        read_manifest(path)


def test_yaml_that_is_not_a_list_of_pairs_is_one_line(region):
    path = region / "bad.yaml"
    path.write_text("date1: a.tif\n")
    with pytest.raises(InputError, match=rf"^manifest {path}: expected a list of pairs"):
        read_manifest(path)
    path.write_text("- {date1: a/2011.tif, date2: a/2016.tif, out: o, colour: red}\n")
    with pytest.raises(InputError, match=rf"^manifest {path}, pair 1: unknown field\(s\) colour \(known: "):
        read_manifest(path)


# ------------------------------------------------------------------------------------------------ predict.py


def predict(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "predict.py"), *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)


def test_predict_runs_a_manifests_tasks_reports_them_and_skips_complete_ones(region, tmp_path):
    model = save_checkpoint(tmp_path / "run", tiny_network(), epoch=1)
    manifest = write_csv(region, CSV)
    common = ["--model", model, "--manifest", manifest, "--window", 32, "--stride", 16, "--block-rows", 40]
    status = predict(*common, "--pending")
    assert status.returncode == 0, status.stderr
    assert status.stdout == "0-3\n"
    first = predict(*common, "--task", 2)  # a block of pair 2: predicted, not joined
    assert first.returncode == 0, first.stderr
    assert "task 2: predicted block 2/3 into" in first.stdout and "2 block(s) of" in first.stdout
    assert predict(*common, "--pending").stdout == "0-1,3\n"
    rest = predict(*common)  # every task in turn: task 2 is skipped, pair 2 joined by task 3
    assert rest.returncode == 0, rest.stderr
    assert "task 2: block 2/3 was done already" in rest.stdout
    assert f"task 3: predicted block 3/3 into {region / 'out/b/blocks/block_0002.tif'}; joined the 3 blocks" \
        in rest.stdout
    assert predict(*common, "--pending").stdout == "\n"
    listing = predict(*common, "--status").stdout.splitlines()
    assert listing[-1] == "4 of 4 task(s) done" and listing[0] == "task 0: pair 1 (2011.tif -> 2016.tif): done"
    whole = predict("--model", model, "--date1", region / "b/2011.tif", "--date2", region / "b/2016.tif",
                    "--out", tmp_path / "whole", "--window", 32, "--stride", 16)
    assert whole.returncode == 0, whole.stderr
    for name in OUTPUT_FILES.values():
        with rasterio.open(region / "out/b" / name) as joined, rasterio.open(tmp_path / "whole" / name) as single:
            assert joined.read().tobytes() == single.read().tobytes(), name
    again = predict(*common)
    assert again.stdout.count("is complete: skipped") == 4


def test_bad_manifest_and_task_are_one_line_with_exit_2(region, tmp_path):
    model = save_checkpoint(tmp_path / "run", tiny_network(), epoch=1)
    missing = predict("--model", model, "--manifest", region / "nope.csv")
    assert (missing.returncode, missing.stderr.splitlines()) == (
        2, [f"error: manifest {region / 'nope.csv'} cannot be read: No such file or directory"])
    manifest = write_csv(region, CSV)
    task = predict("--model", model, "--manifest", manifest, "--task", 2)
    assert (task.returncode, task.stderr.splitlines()) == (
        2, [f"error: --task 2 is not a task of {manifest}, which has 2 (0-1)"])
