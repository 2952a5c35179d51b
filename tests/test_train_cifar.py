"""Command-line smoke tests of train_cifar.py (paper Section 7) on fake CIFAR-10 data."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

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


def _history(tmp_path):
    return json.loads((tmp_path / "run" / "history.json").read_text())


def test_fake_run_writes_history_config_and_model(tmp_path):
    proc = _run(tmp_path, TINY_RUN, "--fake")
    assert proc.returncode == 0, proc.stderr
    history = _history(tmp_path)
    assert [h["epoch"] for h in history] == [1, 2]
    assert [h["depth"] for h in history] == [0, 3]  # milestone after epoch 1: next stage
    assert [h["lr"] for h in history] == pytest.approx([1e-3, 1e-4])
    for h in history:
        assert set(h) == {"epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "depth"}
        assert all(math.isfinite(v) for v in h.values())
        assert 0 <= h["val_accuracy"] <= 1 and 0 < h["val_loss"] < 1  # 1 - <FT>^d lies in [0, 1]
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["model"] == "cifar_resnet_tiny" and saved["schedule"]["patience"] == 3  # defaults filled in
    assert Path(saved["data_dir"]).name == "cifar-10-batches-py"
    assert (tmp_path / "run" / "model.params").is_file()
    assert not list((tmp_path / "run").glob("*.tmp"))


def test_two_horovod_ranks(tmp_path):
    launcher = (str(Path(sys.executable).parent / "horovodrun"), "-np", "2", "-H", "localhost:2", "--gloo",
                sys.executable)
    proc = _run(tmp_path, {**TINY_RUN, "epochs": 1}, "--fake", launcher=launcher)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "2 process(es)" in proc.stdout
    assert len(_history(tmp_path)) == 1


def _error_line(proc):
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


@pytest.mark.parametrize("config, key", [
    ({**TINY_RUN, "learning_rate": 0.1}, "'learning_rate'"),
    ({**TINY_RUN, "schedule": {"depths": [0], "patince": 2}}, "'schedule.patince'"),
])
def test_unknown_config_key(tmp_path, config, key):
    assert f"unknown config key {key}" in _error_line(_run(tmp_path, config, "--fake"))


def test_cross_entropy_with_depth_is_refused(tmp_path):
    line = _error_line(_run(tmp_path, {**TINY_RUN, "loss": "ce"}, "--fake"))
    assert "schedule.depths > 0 need loss 'ft'" in line


def test_missing_data_folder(tmp_path):
    line = _error_line(_run(tmp_path, {**TINY_RUN, "data_dir": str(tmp_path / "no_cifar")}))
    assert line.endswith(f"CIFAR-10 folder not found: {tmp_path / 'no_cifar'}")


def test_slurm_task_count_must_match_horovod_size(tmp_path):
    line = _error_line(_run(tmp_path, TINY_RUN, "--fake", env={"SLURM_NTASKS": "3"}))
    assert "SLURM_NTASKS=3 but Horovod runs 1 processes" in line
