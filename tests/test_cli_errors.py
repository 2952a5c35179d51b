"""Faults met from the command line: unwritable outputs, damaged checkpoints and rasters, a full disk, Ctrl-C,
temporary files of killed runs, file modes, YAML mistakes. Each ends with one line on stderr (no stack trace),
exit status 2 for bad input, 1 for a failed write, 130 after SIGINT, and leaves no file under a final name
nor any orphan.

The commands run in-process (their ``main(argv)``) where that suffices, so that the tests stay fast; the
SIGINT test runs ``predict.py`` for real.
"""
import errno
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import rasterio.io
from rasterio.errors import RasterioIOError

import evaluate as evaluate_cli
import export as export_cli
import predict as predict_cli
import select_models as select_cli
from tests.utilities.fakes import write_geotiff_pair, write_levircd_tree
from tests.utilities.tiny_models import save_checkpoint, tiny_network
from utilities import atomic
from utilities.atomic import WriteError, atomic_path, atomic_write_text, remove_stale_temporaries
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
    lines = [line for line in capfd.readouterr().err.splitlines() if not re.match(r"predict \S+: \d+/\d+ ", line)]
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
    process = subprocess.Popen([sys.executable, "predict.py", "--model", str(model), "--date1", str(date1),
                                "--date2", str(date2), "--out", str(out), "--window", "32", "--stride", "16"],
                               cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
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

