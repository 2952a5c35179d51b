"""train.py where runs get lost on shared clusters: two trainings in one run directory, a resume with a changed
config, SIGTERM (scancel, the time limit), a full disk, runs refused for their data or their run directory. Each
ends with one line and its exit status, and leaves the run's checkpoints as the last complete epoch left them.

Data and helpers: those of tests/test_train.py (synthetic LEVIR-CD scenes chipped at 32x32, a tiny model).
"""
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.test_train import ROOT, history, horovodrun, messages, run, write_config
from tests.utilities.tmpfs import small_tmpfs
from tests.utilities.training.test_run_lock import holder, refusal
from utilities.artifacts.checkpoint import Checkpoints, file_digest

ENV = dict(os.environ, OMP_NUM_THREADS="1")


def train(*args, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "train.py", *map(str, args)], cwd=ROOT, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def wait_for_checkpoint(run_dir: Path, process: subprocess.Popen) -> None:
    deadline = time.time() + 240
    while not (run_dir / "checkpoints" / "latest.json").exists():  # written last: the checkpoint is complete
        assert process.poll() is None and time.time() < deadline, "training ended or stalled before epoch 1"
        time.sleep(0.05)


def assert_checkpoints_intact(run_dir: Path) -> int:
    """The newest checkpoint is complete (its files have the recorded SHA-256), no temporary or orphan file is
    left; returns its epoch."""
    checkpoints = Checkpoints(run_dir)
    latest = checkpoints.latest()
    for name, digest in ((latest.params, latest.params_sha256), (latest.states, latest.states_sha256)):
        assert file_digest(checkpoints.dir / name) == digest
    names = sorted(p.name for p in checkpoints.dir.iterdir())
    epochs = sorted({name.split(".")[0] for name in names if name.startswith("epoch_")})
    # the record and its two files; its model card (written after them) may be missing when the run was stopped
    # between the two
    cards = [name for name in names if name.endswith(".stac.json")]
    assert {card.split(".")[0] for card in cards} <= set(epochs)
    assert sorted(set(names) - set(cards)) == sorted([f"{e}.{s}" for e in epochs for s in ("json", "params", "states")]
                                                     + ["latest.json"])
    return latest.epoch


# ------------------------------------------------------------------------------------- one training per run dir


def test_two_trainings_started_together_in_one_run_dir_one_is_refused_naming_the_other(tmp_path, scenes):
    cfg = write_config(tmp_path, {"root": str(scenes)})
    first, second = train("-c", cfg), train("-c", cfg)
    results = [process.communicate(timeout=300) for process in (first, second)]
    assert sorted((first.returncode, second.returncode)) == [0, 2], results
    winner, loser = (first, second) if first.returncode == 0 else (second, first)
    [line] = [line for line in results[[first, second].index(loser)][1].splitlines() if line.strip()]
    assert re.fullmatch("error: " + refusal(tmp_path / "run", winner.pid), line), line
    assert [r["epoch"] for r in history(tmp_path / "run")] == [1, 2, 3]


#: train.py whose run waits after its epoch 1 checkpoint until the file FLAG exists (it says so in FLAG.waiting)
WAITING_AFTER_EPOCH_1 = """
import sys, time
from pathlib import Path
sys.path.insert(0, {root!r})
import train
from utilities.training.distributed import run_rank

end_epoch = train.end_epoch


def end_epoch_then_wait(checkpoints, record, *args, **kwargs):
    end_epoch(checkpoints, record, *args, **kwargs)
    if record.epoch == 1:
        Path({flag!r} + ".waiting").touch()
        while not Path({flag!r}).exists():
            time.sleep(0.05)


train.end_epoch = end_epoch_then_wait
sys.exit(run_rank(train.main, train.FAILURES))
"""


def test_a_resume_while_the_run_still_trains_is_refused(tmp_path, scenes):
    cfg = write_config(tmp_path, {"root": str(scenes)})
    flag = tmp_path / "go_on"
    script = tmp_path / "waiting_train.py"
    script.write_text(WAITING_AFTER_EPOCH_1.format(root=str(ROOT), flag=str(flag)))
    first = subprocess.Popen([sys.executable, str(script), "-c", str(cfg)], cwd=ROOT, env=ENV,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while not Path(f"{flag}.waiting").exists():
        assert first.poll() is None and time.time() < deadline, first.communicate()
        time.sleep(0.05)
    resumed = run([sys.executable, "train.py", "-c", str(cfg), "--resume"])
    flag.touch()
    out, err = first.communicate(timeout=300)
    assert resumed.returncode == 2
    [line] = messages(resumed)
    assert re.fullmatch("error: " + refusal(tmp_path / "run", first.pid), line), line
    assert first.returncode == 0, err[-2000:]
    assert [r["epoch"] for r in history(tmp_path / "run")] == [1, 2, 3]  # every epoch once, by the first run


def test_a_run_dir_held_by_another_training_stops_every_horovod_rank_with_one_line(tmp_path, scenes):
    cfg = write_config(tmp_path, {"root": str(scenes)})
    other = holder(tmp_path / "run")
    try:
        assert other.stdout.readline() == "locked\n"
        result = horovodrun(tmp_path / "logs", "train.py", "-c", cfg)
    finally:
        other.kill()
        other.wait()
    assert result.returncode != 0
    for rank in (0, 1):
        lines = (tmp_path / "logs" / f"rank.{rank}" / "stderr").read_text().splitlines()
        assert len(lines) == 1 and re.fullmatch(rf"\[{rank}\]<stderr>:error: " + refusal(tmp_path / "run", other.pid),
                                                lines[0]), lines
    assert not (tmp_path / "run" / "checkpoints").exists()


# --------------------------------------------------------------------------------------- resume with changes


def test_resume_refuses_another_loss_chip_size_or_schedule_and_allows_a_longer_run(tmp_path, scenes):
    data, run_dir = {"root": str(scenes)}, tmp_path / "run"
    output = {"run_dir": str(run_dir)}
    cfg = write_config(tmp_path, data, train={"max_epochs": 1})
    assert run([sys.executable, "train.py", "-c", str(cfg)]).returncode == 0
    checkpoint = run_dir / "checkpoints" / "latest.json"
    for name, changed, expected in [
        ("loss", dict(data={**data, "chip_size": 64}, train={"max_epochs": 1, "loss_axis": [1, 2, 3]}),
         "data.chip_size 32 -> 64, train.loss_axis [2, 3] -> [1, 2, 3]"),
        ("depths", dict(data=data, train={"max_epochs": 1, "depths": [0, 2]}), "train.depths [0, 1] -> [0, 2]"),
    ]:
        path = write_config(tmp_path / name, changed["data"], train=changed["train"], output=output)
        result = run([sys.executable, "train.py", "-c", str(path), "--resume"])
        assert result.returncode == 2, result.stderr[-2000:]
        assert result.stderr.splitlines() == [
            f"error: config {path}: --resume would change {expected} from the run's checkpoint {checkpoint}, which "
            "changes what the run computes or trains on: set them back, or start a new run in another run_dir"]
    longer = write_config(tmp_path / "longer", data, train={"max_epochs": 2, "stall_timeout_s": 600}, output=output)
    result = run([sys.executable, "train.py", "-c", str(longer), "--resume"])
    assert result.returncode == 0, result.stderr[-2000:]
    assert "resuming with changed settings: train.max_epochs 1 -> 2, train.stall_timeout_s 1800.0 -> 600.0" \
        in result.stdout.splitlines()
    assert [r["epoch"] for r in history(run_dir)] == [1, 2]
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["train"]["max_epochs"] == 2


# ---------------------------------------------------------------------------------------------------- SIGTERM


def test_sigterm_is_one_line_and_status_143_and_the_run_resumes(tmp_path, scenes):
    cfg = write_config(tmp_path, {"root": str(scenes)}, train={"max_epochs": 50})
    process = train("-c", cfg)
    wait_for_checkpoint(tmp_path / "run", process)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr[-2000:]
    assert [line for line in stderr.splitlines() if not line.startswith("chipping into")] == ["terminated"]
    epoch = assert_checkpoints_intact(tmp_path / "run")
    resumed = run([sys.executable, "train.py", "-c", str(write_config(tmp_path, {"root": str(scenes)},
                                                                      train={"max_epochs": epoch + 1})), "--resume"])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert [r["epoch"] for r in history(tmp_path / "run")] == list(range(1, epoch + 2))


def test_sigterm_to_horovodrun_ends_every_rank_with_one_line(tmp_path, scenes):
    """horovodrun forwards SIGTERM to its ranks (SIGKILL 5 s later): each says ``terminated`` and exits 143;
    horovodrun reports their status (and raises its own RuntimeError, as for any rank that exits non-zero)."""
    cfg = write_config(tmp_path, {"root": str(scenes)}, train={"max_epochs": 50})
    logs = tmp_path / "logs"
    command = [str(Path(sys.executable).parent / "horovodrun"), "-np", "2", "-H", "localhost:2", "--gloo",
               "--output-filename", str(logs), sys.executable, "train.py", "-c", str(cfg)]
    process = subprocess.Popen(command, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_checkpoint(tmp_path / "run", process)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=120)
    report = f"{stdout}\n{stderr}"
    for rank in (0, 1):
        lines = [line.split(">:", 1)[1] for line in (logs / f"rank.{rank}" / "stderr").read_text().splitlines()]
        assert [line for line in lines if not line.startswith("chipping into")] == ["terminated"], report
        assert f"Process {rank} exit with status code 143." in stdout, report
    assert_checkpoints_intact(tmp_path / "run")


# ------------------------------------------------------------------------------------------------- full disk


def test_a_full_disk_names_the_checkpoint_and_leaves_no_part_of_it(tmp_path, scenes):
    """A run directory on a small real file system (tmpfs, chips elsewhere): the parameters of epoch 1 do not fit."""
    with small_tmpfs(tmp_path / "disk", "128k") as disk:
        cfg = write_config(tmp_path, {"root": str(scenes), "cache_dir": str(tmp_path / "chips")},
                           output={"run_dir": str(disk / "run")})
        result = run([sys.executable, "train.py", "-c", str(cfg)])
        assert result.returncode == 1, result.stderr[-2000:]
        assert messages(result) == [
            f"error: no space left on device writing {disk / 'run' / 'checkpoints' / 'epoch_0001.params'}"]
        assert sorted(p.name for p in (disk / "run").rglob("*")) == ["config.yaml"]


# ---------------------------------------------------------------------------- refused runs leave nothing behind


@pytest.mark.parametrize("case", ["unknown kind", "empty config", "missing root", "band 9 of 3"])
def test_a_run_refused_for_its_data_leaves_no_run_dir(tmp_path, scenes, case):
    run_dir = tmp_path / "run"
    if case == "empty config":
        cfg = tmp_path / "empty.yaml"
        cfg.write_text("")
    else:
        data = {"unknown kind": {"kind": "levir", "root": str(scenes)},
                "missing root": {"root": str(tmp_path / "no_data")},
                "band 9 of 3": {"root": str(scenes), "bands": [1, 2, 9]}}[case]
        cfg = write_config(tmp_path, data)
    result = run([sys.executable, "train.py", "-c", str(cfg), "--run-dir", str(run_dir)])
    assert result.returncode == 2, result.stderr[-2000:]
    [line] = messages(result)
    assert line.startswith("error: ") and {"unknown kind": "data.kind 'levir'", "empty config": "data.root",
                                            "missing root": str(tmp_path / "no_data"), "band 9 of 3": "band 9"}[case] \
        in line, line
    assert not run_dir.exists()


def test_a_run_dir_where_no_file_can_be_created_is_bad_input(tmp_path, scenes):
    cfg = write_config(tmp_path, {"root": str(scenes)}, output={"run_dir": "/proc/mantis_run"})
    result = run([sys.executable, "train.py", "-c", str(cfg)])
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert line.startswith(f"error: config {cfg}: cannot write to output.run_dir /proc/mantis_run: no file can be "
                           "created in /proc (")
