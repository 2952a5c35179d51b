"""train_cifar.py (paper Section 7) as users run it, on fake CIFAR-10 data: one process, two Horovod ranks,
kill and resume, bad input."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from utilities.artifacts.checkpoint import Checkpoints

ROOT = Path(__file__).resolve().parents[1]
TINY_RUN = {
    "model": "cifar_resnet_tiny",
    "batch_size": 8,
    "epochs": 2,
    "loss": "ft",
    "schedule": {"depths": [0, 3], "milestones": [1]},
    "max_steps_per_epoch": 2,
}


def _run(tmp_path, config, *extra, env=None, launcher=(sys.executable,)):
    config = {"out_dir": str(tmp_path / "run"), **config}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {k: v for k, v in os.environ.items() if k != "SLURM_NTASKS"} | (env or {})
    return subprocess.run([*launcher, str(ROOT / "train_cifar.py"), "-c", str(path), *extra], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


def _history(run_dir):
    return json.loads((run_dir / "history.json").read_text())


def test_fake_run_writes_history_config_and_checkpoints(tmp_path):
    proc = _run(tmp_path, TINY_RUN, "--fake")
    assert proc.returncode == 0, proc.stderr
    run_dir = tmp_path / "run"
    history = _history(run_dir)
    assert [h["epoch"] for h in history] == [1, 2]
    assert [h["depth"] for h in history] == [0, 3]  # milestone after epoch 1: next stage
    assert [h["lr"] for h in history] == pytest.approx([1e-3, 1e-4])
    for h in history:
        assert set(h) == {"epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "depth",
                          "seconds"}
        assert all(math.isfinite(v) for v in h.values())
        assert 0 <= h["val_accuracy"] <= 1 and 0 < h["val_loss"] < 1  # 1 - <FT>^d lies in [0, 1]
    assert (run_dir / "history.csv").read_text().splitlines()[0].startswith("epoch,lr,depth,train_loss")
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["model"] == "cifar_resnet_tiny" and saved["schedule"]["patience"] == 3  # defaults filled in
    assert Path(saved["data_dir"]).name == "cifar-10-batches-py"
    checkpoints = run_dir / "checkpoints"
    latest = Checkpoints(checkpoints.parent).latest()
    assert (latest.epoch, latest.model, latest.schedule["stage"]) == (2, "cifar_resnet_tiny", 1)
    assert (latest.normalization, latest.bands) == (None, None)
    # keep_checkpoints 1 (the default): only the last epoch keeps its parameters, every epoch its record
    assert sorted(p.name for p in checkpoints.glob("epoch_*")) == [
        "epoch_0001.json", "epoch_0002.json", "epoch_0002.params", "epoch_0002.states"]
    assert not list(run_dir.rglob("*.tmp"))


def test_run_dir_option_and_resume(tmp_path):
    """--run-dir replaces out_dir; a run stopped after epoch 1 resumes to the same numbers as a run
    straight through (data order, augmentation, Adam state and schedule all come back)."""
    config = {**TINY_RUN, "epochs": 3, "schedule": {"depths": [0, 3], "milestones": [2]}}
    straight = _run(tmp_path, config, "--fake", "--run-dir", str(tmp_path / "straight"))
    assert straight.returncode == 0, straight.stderr
    assert not (tmp_path / "run").exists()
    first = _run(tmp_path, {**config, "epochs": 1}, "--fake", "--run-dir", str(tmp_path / "resumed"))
    assert first.returncode == 0, first.stderr
    again = _run(tmp_path, {**config, "epochs": 1}, "--fake", "--run-dir", str(tmp_path / "resumed"))
    assert _error_line(again) == (f"error: {tmp_path / 'resumed'} already holds checkpoints: use --resume to "
                                  "continue it or another run_dir")
    resumed = _run(tmp_path, config, "--fake", "--run-dir", str(tmp_path / "resumed"), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from epoch 1: lr 0.001, FT depth 0" in resumed.stdout
    expected, got = _history(tmp_path / "straight"), _history(tmp_path / "resumed")
    assert [h["epoch"] for h in got] == [1, 2, 3] and [h["depth"] for h in got] == [0, 0, 3]
    for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr"):
        assert [h[key] for h in got] == pytest.approx([h[key] for h in expected], rel=1e-5), key


def test_two_horovod_ranks(tmp_path):
    launcher = (str(Path(sys.executable).parent / "horovodrun"), "-np", "2", "-H", "localhost:2", "--gloo",
                sys.executable)
    proc = _run(tmp_path, {**TINY_RUN, "epochs": 1}, "--fake", launcher=launcher)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "2 process(es)" in proc.stdout
    assert len(_history(tmp_path / "run")) == 1


def _error_line(proc):
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


@pytest.mark.parametrize("config, message", [
    ({**TINY_RUN, "learning_rate": 0.1}, "unknown key 'learning_rate' (known: augment, batch_size, betas, "),
    ({**TINY_RUN, "schedule": {"depths": [0], "patince": 2}},
     "unknown key 'schedule.patince' (known: depths, factor, milestones, patience)"),
    ({**TINY_RUN, "batch_size": "eight"}, "batch_size must be an integer, got 'eight'"),
    ({**TINY_RUN, "loss": "mse"}, "loss must be one of ce, ft, got 'mse'"),
    ({**TINY_RUN, "betas": [0.9]}, "betas needs at least 2 item(s), got [0.9]"),
    ({**TINY_RUN, "loss": "ce"}, "schedule.depths > 0 need loss 'ft' (cross entropy has no depth)"),
    ({**TINY_RUN, "schedule": {"depths": [0, 3], "milestones": [1, 2]}}, "schedule: evolving-loss schedule: "),
    ({**TINY_RUN, "model": "cifar_resnet_tin"}, "unknown model 'cifar_resnet_tin' (registered: "),
    ({**TINY_RUN, "model_kwargs": {"widht": 2}}, "unknown key 'model_kwargs.widht' for cifar_resnet_tiny (known: "),
    ({**TINY_RUN, "model": "fractalresnet_tiny"},
     "model 'fractalresnet_tiny' is a change-detection model, not a CIFAR-10 classifier"),
], ids=["key", "schedule-key", "type", "choice", "items", "ce-depth", "milestones", "model", "model-kwargs",
        "change-detection"])
def test_bad_config_is_one_line_before_horovod(tmp_path, config, message):
    line = _error_line(_run(tmp_path, config, "--fake"))
    assert line.startswith(f"error: config {tmp_path / 'config.yaml'}: {message}"), line
    assert not (tmp_path / "run").exists()


def test_missing_data_folder(tmp_path):
    proc = _run(tmp_path, {**TINY_RUN, "data_dir": str(tmp_path / "no_cifar")})
    assert proc.returncode == 2
    assert _error_line(proc) == (f"error: config {tmp_path / 'config.yaml'}: data_dir: CIFAR-10 folder not found: "
                                 f"{tmp_path / 'no_cifar'}")


def test_slurm_task_count_must_match_horovod_size(tmp_path):
    proc = _run(tmp_path, TINY_RUN, "--fake", env={"SLURM_NTASKS": "3"})
    assert proc.returncode == 2
    assert _error_line(proc).startswith("error: SLURM gave 3 tasks but Horovod sees 1 rank(s): launch with ")


@pytest.mark.parametrize("name", ["cifar10_table_a3.yaml", "cifar10_evolving_loss.yaml"])
def test_shipped_configs_are_valid(name):
    from utilities.training.config import CifarConfig, check_config, load_config

    path = ROOT / "configs" / name
    cfg = load_config(path, CifarConfig)
    check_config(cfg, str(path))
    assert cfg.optimizer == "adam" and cfg.betas == [0.9, 0.999]
