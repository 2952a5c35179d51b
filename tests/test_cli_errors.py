"""Faults met from the command line: unwritable outputs, damaged checkpoints and rasters, a full disk, Ctrl-C,
temporary files of killed runs, file modes, YAML mistakes. Each ends with one line on stderr (no stack trace),
exit status 2 for bad input, 1 for a failed write, 130 after SIGINT, and leaves no file under a final name
nor any orphan.

The commands run in-process (their ``main(argv)``) where that suffices, so that the tests stay fast; the
SIGINT test runs ``predict.py`` for real.
"""
import errno
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.io
from rasterio.errors import RasterioIOError

import evaluate as evaluate_cli
import export as export_cli
import predict as predict_cli
import select_models as select_cli
from tests.utilities.fakes import write_geotiff, write_geotiff_pair, write_levircd_tree, write_png
from tests.utilities.tiny_models import NORMALIZATION, save_checkpoint, tiny_network
from tests.utilities.tmpfs import small_tmpfs
from utilities import atomic
from utilities.artifacts.checkpoint import CheckpointRecord, Checkpoints
from utilities.artifacts.model_io import load_predictor
from utilities.atomic import WriteError, atomic_files, atomic_path, atomic_write_text, remove_stale_temporaries
from utilities.errors import InputError
from utilities.training.config import load_config

pytestmark = pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    """A tiny checkpoint (random parameters) with the record train.py writes."""
    return save_checkpoint(tmp_path_factory.mktemp("run"), tiny_network(), epoch=1)


@pytest.fixture
def pair(tmp_path):
    date1, date2, label = write_geotiff_pair(tmp_path / "pair", 32, 32)
    return date1, date2, label


def one_error_line(capfd) -> str:
    """The only line the command printed on stderr (file descriptor 2: C libraries included), besides the
    progress log's lines."""
    lines = [line for line in capfd.readouterr().err.splitlines()
             if not re.match(r"(predict \S+|evaluate): \d+/\d+ ", line)]
    assert len(lines) == 1, lines
    assert "Traceback" not in lines[0]
    return lines[0]


def files_under(folder: Path) -> list:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


# ---------------------------------------------------------------------------------------------- unwritable outputs


def unwritable(tmp_path: Path) -> dict:
    """--out values that cannot be written: a file, a folder under a file, a folder under /proc."""
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    return {"a file": blocker, "under a file": blocker / "out", "under /proc": Path("/proc/mantis_out")}


@pytest.mark.parametrize("case", ["a file", "under a file", "under /proc"])
def test_unwritable_out_is_one_line_before_any_work(tmp_path, model, pair, capfd, case):
    out = unwritable(tmp_path)[case]
    date1, date2, label = pair
    before = files_under(tmp_path)
    commands = {
        "predict": lambda: predict_cli.main(["--model", str(model), "--date1", str(date1), "--date2", str(date2),
                                             "--out", str(out)]),
        "evaluate": lambda: evaluate_cli.main(["--model", str(model), "--date1", str(date1), "--date2", str(date2),
                                               "--label", str(label), "--out", str(out)]),
        "select_models": lambda: select_cli.main([str(model.parent.parent), "--out", str(out)]),
    }
    for name, command in commands.items():
        assert command() == 2, name
        assert one_error_line(capfd).startswith(f"error: cannot write to --out {out}: "), name
    assert export_cli.main(["--model", str(model), "--out", str(out / "model.onnx")]) == 2
    assert one_error_line(capfd).startswith(f"error: cannot write to the folder of --out {out}: ")
    assert files_under(tmp_path) == before


def test_unwritable_messages_say_why(tmp_path):
    for case, out in unwritable(tmp_path).items():
        with pytest.raises(InputError) as err:
            atomic.writable_folder(out, "--out")
        reason = str(err.value).split(": ", 1)[1]
        expected = {"a file": "it is a file, not a folder",
                    "under a file": f"it lies under the file {tmp_path / 'a_file'}, not a folder",
                    "under /proc": "no file can be created in /proc"}[case]
        assert reason.startswith(expected), (case, reason)


# -------------------------------------------------------------------------------------------- damaged checkpoints


@pytest.mark.parametrize("damage", ["truncated", "empty", "byte-flipped"])
def test_damaged_checkpoint_is_one_line_in_predict_and_export(tmp_path, model, pair, capfd, damage):
    params = tmp_path / "checkpoints" / model.name
    params.parent.mkdir()
    for suffix in (".params", ".json"):
        params.with_suffix(suffix).write_bytes(model.with_suffix(suffix).read_bytes())
    data = params.read_bytes()
    params.write_bytes({"truncated": data[: len(data) // 2], "empty": b"",
                        "byte-flipped": data[:-100] + bytes([data[-100] ^ 1]) + data[-99:]}[damage])
    out = tmp_path / "out"
    assert predict_cli.main(["--model", str(params), "--date1", str(pair[0]), "--date2", str(pair[1]),
                             "--out", str(out)]) == 2
    line = one_error_line(capfd)
    assert line.startswith(f"error: checkpoint {params} cannot be read: ")
    assert export_cli.main(["--model", str(params), "--out", str(out / "model.onnx")]) == 2
    assert one_error_line(capfd) == line
    assert not out.exists()


# ------------------------------------------------------------------------------------------------- damaged rasters


def test_truncated_geotiff_is_refused_before_any_output(tmp_path, model, capfd):
    date1, date2, _ = write_geotiff_pair(tmp_path, 300, 300, with_label=False)
    data = date2.read_bytes()
    date2.write_bytes(data[: len(data) * 3 // 4])  # the header and the first rows are intact
    out = tmp_path / "out"
    assert predict_cli.main(["--model", str(model), "--date1", str(date1), "--date2", str(date2),
                             "--out", str(out)]) == 2
    assert one_error_line(capfd).startswith(f"error: cannot read raster {date2}: ")
    assert not out.exists()


def test_corrupt_png_gives_our_line_only(tmp_path, model, capfd):
    """libpng's own message is kept off stderr: the one line names the file (and keeps libpng's reason)."""
    root = write_levircd_tree(tmp_path / "levir", splits=None, n=1, size=32)
    date2 = root / "B" / "tile_1.png"
    data = date2.read_bytes()
    date2.write_bytes(data[: len(data) // 2])
    assert predict_cli.main(["--model", str(model), "--levircd", str(root), "--out", str(tmp_path / "out")]) == 2
    line = one_error_line(capfd)
    assert line.startswith(f"error: cannot read image {date2}: the file is empty, corrupt or not a PNG image (")


def test_levircd_prediction_needs_no_label_folder(tmp_path, model, capfd):
    root = write_levircd_tree(tmp_path / "levir", splits=None, n=1, size=32)
    for path in (root / "label").iterdir():
        path.unlink()
    (root / "label").rmdir()
    out = tmp_path / "out"
    assert predict_cli.main(["--model", str(model), "--levircd", str(root), "--out", str(out), "--window", "32",
                             "--stride", "16", "--no-quicklook"]) == 0, capfd.readouterr().err
    assert sorted(p.name for p in (out / "tile_1").iterdir()) == [
        "boundary.tif", "change_mask.tif", "change_probability.tif", "distance.tif"]


# ----------------------------------------------------------------------------------------------------- full disk


def test_full_disk_in_predict_names_the_file_and_leaves_nothing(tmp_path, model, pair, monkeypatch, capfd):
    """GDAL reports a full disk as "TIFFAppendToStrip: Write error" without errno: the free space decides."""
    def write_error(*args, **kwargs):
        raise RasterioIOError("TIFFAppendToStrip: Write error at scanline 0")

    class NoSpace:
        f_bavail, f_frsize = 0, 4096

    monkeypatch.setattr(rasterio.io.DatasetWriter, "write", write_error)
    monkeypatch.setattr(atomic.os, "statvfs", lambda path: NoSpace())
    out = tmp_path / "out"
    assert predict_cli.main(["--model", str(model), "--date1", str(pair[0]), "--date2", str(pair[1]), "--out",
                             str(out), "--window", "32", "--stride", "16"]) == 1
    assert one_error_line(capfd) == f"error: no space left on device writing {out / 'change_probability.tif'}"
    assert files_under(out) == []


def test_enospc_from_the_kernel_is_named(tmp_path):
    """/dev/full fails every write with ENOSPC, like a full file system."""
    if not os.path.exists("/dev/full"):
        pytest.skip("/dev/full is not available")
    target = tmp_path / "history.json"
    with pytest.raises(WriteError) as err:
        with atomic_path(target) as tmp, open("/dev/full", "w") as full:
            Path(tmp).write_text("{}")
            full.write("x" * 65536)
            full.flush()
    assert err.value.errno == errno.ENOSPC and err.value.strerror == f"no space left on device writing {target}"
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------- temporary files and modes


def test_temporaries_of_dead_processes_are_removed_at_the_next_write(tmp_path):
    target = tmp_path / "change_mask.tif"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    stale = tmp_path / f".change_mask.tif.{atomic._HOST}-{dead_pid}.0123abcd.tmp.tif"
    live = tmp_path / f".change_mask.tif.{atomic._HOST}-{os.getpid()}.4567cdef.tmp.tif"  # a write in progress
    other_host = tmp_path / f".change_mask.tif.elsewhere-{dead_pid}.89abcdef.tmp.tif"  # shared file systems
    for path in (stale, live, other_host):
        path.write_bytes(b"partial")
    atomic_write_text(target, "done")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([target.name, live.name, other_host.name])
    assert remove_stale_temporaries(target) == 0


def test_files_are_created_with_the_users_umask(tmp_path, model):
    old = os.umask(0o027)
    try:
        atomic_write_text(tmp_path / "a.json", "{}")
        params = save_checkpoint(tmp_path / "run", tiny_network(), epoch=1)
    finally:
        os.umask(old)
    for path in (tmp_path / "a.json", params, params.with_suffix(".json")):
        assert path.stat().st_mode & 0o777 == 0o640, path


# ---------------------------------------------------------------------------------------------------------- SIGINT


def test_ctrl_c_prints_interrupted_exits_130_and_leaves_no_file(tmp_path, model):
    date1, date2, _ = write_geotiff_pair(tmp_path, 2048, 256, with_label=False)
    out = tmp_path / "out"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    # SIGINT's default disposition in the child: a test run started in the background by a shell inherits it
    # ignored, and Python then installs no KeyboardInterrupt handler (the prediction would just finish)
    process = subprocess.Popen([sys.executable, "predict.py", "--model", str(model), "--date1", str(date1),
                                "--date2", str(date2), "--out", str(out), "--window", "32", "--stride", "16"],
                               cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 240
    while not list(out.glob(".*.tmp*")) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)  # until the outputs are open: prediction has started
    assert process.poll() is None, process.communicate()
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr[-2000:]
    assert stderr.splitlines()[-1] == "interrupted" and "Traceback" not in stderr
    assert files_under(out) == []


# ------------------------------------------------------------------------------------------------------------ YAML


def test_yaml_error_keeps_line_and_column(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("train:\n  lr: 0.001\n batch_size: 3\n")
    with pytest.raises(InputError) as err:
        load_config(path)
    assert str(err.value) == (f"config {path} is not valid YAML: expected <block end>, but found "
                              f"'<block mapping start>' at line 3, column 2")



# ------------------------------------------------------------------------------- rasters predict.py once refused


@pytest.mark.parametrize("height, width", [(1, 1), (5, 2053)])
def test_tiny_and_odd_width_rasters_are_predicted_with_exit_0(tmp_path, model, capfd, height, width):
    """A 1 x 1 PNG pair and a width the quick-look's shrink factor does not divide used to end with exit 1 and
    an OpenCV traceback, after (1 x 1) or before (2053) the GeoTIFFs."""
    rng = np.random.default_rng(height)
    paths = [write_png(tmp_path / f"{n}.png", rng.integers(0, 256, (3, height, width), dtype=np.uint8))
             for n in ("a", "b")]
    out = tmp_path / "out"
    status = predict_cli.main(["--model", str(model), "--date1", str(paths[0]), "--date2", str(paths[1]), "--out",
                               str(out), "--window", "64", "--stride", "64"])
    err = capfd.readouterr().err
    assert status == 0 and "Traceback" not in err and "error" not in err, err
    assert files_under(out) == sorted(["change_probability.tif", "change_mask.tif", "boundary.tif", "distance.tif",
                                       "quicklook.png"])


@pytest.fixture(scope="module")
def uint8_model(tmp_path_factory) -> Path:
    """A tiny checkpoint whose record says its training images were uint8."""
    record = CheckpointRecord("fractalresnet_tiny", 1, normalization={**NORMALIZATION, "dtype": "uint8"})
    return Checkpoints(tmp_path_factory.mktemp("run8")).save(record, tiny_network(), None)


def test_uint16_dates_for_a_uint8_model_are_refused_unless_forced(tmp_path, uint8_model, capfd):
    date1, date2, _ = write_geotiff_pair(tmp_path / "pair", 32, 32, dtype="uint16", with_label=False)
    out = tmp_path / "out"
    args = ["--model", str(uint8_model), "--date1", str(date1), "--date2", str(date2), "--out", str(out), "--window",
            "32", "--stride", "32"]
    assert predict_cli.main(args) == 2
    line = one_error_line(capfd)
    assert line.startswith(f"error: date 1 {date1} is unlike the images the model was trained on: uint16 where the "
                           f"model was trained on uint8; band means [")
    assert line.endswith(": convert it as the training images were, or pass --force-inputs to predict anyway.")
    assert files_under(out) == []
    forced = subprocess.run([sys.executable, "predict.py", *args, "--force-inputs"], cwd=ROOT, capture_output=True,
                            text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert forced.returncode == 0, forced.stderr[-2000:]
    lines = [line for line in forced.stderr.splitlines() if not re.match(r"predict \S+: ", line)]
    assert [line.split(": ")[:2] for line in lines] == [
        ["warning", f"date {i} {d} is unlike the images the model was trained on"] for i, d in ((1, date1), (2, date2))]
    assert all(line.endswith("(predicting anyway, as forced)") for line in lines)
    assert "change_probability.tif" in files_under(out)
    assert load_predictor(uint8_model).dtype == "uint8"


def test_evaluate_refuses_uint16_dates_for_a_uint8_model_unless_forced(tmp_path, uint8_model, capfd):
    """evaluate.py --model checks its dates as predict.py does, before any map is written."""
    date1, date2, label = write_geotiff_pair(tmp_path / "pair", 32, 32, dtype="uint16")
    out = tmp_path / "eval"
    args = ["--model", str(uint8_model), "--date1", str(date1), "--date2", str(date2), "--label", str(label),
            "--out", str(out), "--window", "32", "--stride", "32"]
    assert evaluate_cli.main(args) == 2
    line = one_error_line(capfd)
    assert line.startswith(f"error: date 1 {date1} is unlike the images the model was trained on: uint16 where the "
                           f"model was trained on uint8; band means [")
    assert files_under(out) == []
    assert evaluate_cli.main([*args, "--force-inputs"]) == 0
    assert "metrics.json" in files_under(out)


def test_evaluate_counts_pixels_with_a_band_at_the_nodata_value(tmp_path, model):
    """evaluate.py reads nodata as training and predict.py do: with nodata 0 declared on uint8 RGB, a pixel is
    left out of the counts where every band of a date is 0 (not where one is)."""
    date1, date2, label = write_geotiff_pair(tmp_path / "pair", 32, 32, nodata=0)
    images = []
    for path, zeros in ((date1, (slice(0, 2), slice(0, 32))), (date2, (slice(10, 12), slice(3, 9)))):
        with rasterio.open(path, "r+") as dst:
            image = dst.read()
            image[(slice(None), *zeros)] = 0  # no data
            image[1, 20:25, 20:25] = 0  # a dark band: data
            dst.write(image)
        images.append(image)
    out = tmp_path / "eval"
    assert evaluate_cli.main(["--model", str(model), "--date1", str(date1), "--date2", str(date2), "--label",
                              str(label), "--out", str(out), "--window", "32", "--stride", "16"]) == 0
    counted = json.loads((out / "metrics.json").read_text())["global"]
    valid = (images[0] != 0).any(axis=0) & (images[1] != 0).any(axis=0)
    assert sum(counted[k] for k in ("tp", "fp", "fn", "tn")) == valid.sum() == 32 * 32 - 64 - 12


# ------------------------------------------------------------------------- a nearly full disk, outputs as a set


@pytest.fixture(scope="module")
def noisy_prediction(tmp_path_factory):
    """A georeferenced 512 x 512 change probability of noise and its label (TP/FP/FN maps that compress
    poorly), and the size in KiB pages of each file evaluate.py writes for them on a disk with room."""
    folder = tmp_path_factory.mktemp("noisy")
    rng = np.random.default_rng(0)
    prediction = write_geotiff(folder / "prob.tif", rng.random((1, 512, 512), dtype=np.float32))
    label = write_geotiff(folder / "label.tif", (rng.random((1, 512, 512)) < 0.5).astype(np.uint8) * np.uint8(255))
    out = folder / "eval"
    assert evaluate_cli.main(["--prediction", str(prediction), "--label", str(label), "--out", str(out)]) == 0
    kib = {p.name: -(-p.stat().st_size // 4096) * 4 for p in out.iterdir()}
    assert sorted(kib) == ["metrics.json", "metrics.md", "prob_tpfpfn.png", "prob_tpfpfn.tif"]
    return prediction, label, kib


@pytest.mark.parametrize("failing", ["prob_tpfpfn.tif", "prob_tpfpfn.png", "metrics.md"])
def test_full_disk_in_evaluate_names_the_file_and_leaves_nothing(tmp_path, noisy_prediction, capfd, failing):
    """On a disk too small for the GeoTIFF map, for the PNG map after it, or for the metrics after both: one
    line naming that file, exit status 1, and no output (nor temporary file) left behind. (GDAL reports the
    first two as "Failed to read directory" or "libpng: Write Error", or not at all when it closes a GeoTIFF.)"""
    prediction, label, kib = noisy_prediction
    size = {"prob_tpfpfn.tif": kib["prob_tpfpfn.tif"] // 2,
            "prob_tpfpfn.png": kib["prob_tpfpfn.tif"] + kib["prob_tpfpfn.png"] // 2,
            "metrics.md": kib["prob_tpfpfn.tif"] + kib["prob_tpfpfn.png"]}[failing]
    with small_tmpfs(tmp_path / "disk", f"{size}k") as disk:
        out = disk / "eval"
        assert evaluate_cli.main(["--prediction", str(prediction), "--label", str(label), "--out", str(out)]) == 1
        assert one_error_line(capfd) == f"error: no space left on device writing {out / failing}"
        assert files_under(out) == []


def test_full_disk_in_select_models_leaves_no_selection(tmp_path, capfd):
    """Room for selection.json and the ensembles but not for pareto.png: none of them appears."""
    run = tmp_path / "run"
    for epoch in (1, 2):
        save_checkpoint(run, tiny_network(seed=epoch), epoch, metrics={"depth": 0, "val_mcc": 0.5, "val_ft": 0.5})
    with small_tmpfs(tmp_path / "disk", "16k") as disk:
        out = disk / "selection"
        assert select_cli.main([str(run), "--out", str(out)]) == 1
        assert one_error_line(capfd) == f"error: no space left on device writing {out / 'pareto.png'}"
        assert files_under(out) == []


def test_a_file_set_appears_all_at_once_or_not_at_all(tmp_path, monkeypatch):
    """A failure or Ctrl-C in the middle: none of the set's files appears and an older file stays as it was;
    complete: they take their names in the order they were written, those marked last after the others."""
    (tmp_path / "b.json").write_text("old")
    with pytest.raises(WriteError) as err, atomic_files() as files:
        files.write_text(tmp_path / "a.json", "new a")
        assert files.staged(tmp_path / "a.json").read_text() == "new a" and not (tmp_path / "a.json").exists()
        with files.path(tmp_path / "c.png") as tmp:
            assert tmp.endswith(".png")  # the extension some writers need
            raise OSError(errno.ENOSPC, "No space left on device")
    assert err.value.strerror == f"no space left on device writing {tmp_path / 'c.png'}"
    with pytest.raises(KeyboardInterrupt), atomic_files() as files:
        files.write_text(tmp_path / "b.json", "new b")
        raise KeyboardInterrupt
    assert files_under(tmp_path) == ["b.json"] and (tmp_path / "b.json").read_text() == "old"

    renamed, replace = [], os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: (renamed.append(Path(dst).name), replace(src, dst)))
    with atomic_files() as files:
        files.write_text(tmp_path / "b.json", "new b", last=True)
        files.write_text(tmp_path / "a.json", "new a")
        with atomic_files(within=files) as joined:  # a writer that joins its caller's set
            joined.write_text(tmp_path / "c.txt", "new c")
        assert [p for p in files_under(tmp_path) if not p.startswith(".")] == ["b.json"]  # the old one
    assert renamed == ["a.json", "c.txt", "b.json"]
    assert {p: (tmp_path / p).read_text() for p in files_under(tmp_path)} == {
        "a.json": "new a", "b.json": "new b", "c.txt": "new c"}

