"""Training repeats bit for bit: the same config, seed and number of ranks give byte-identical checkpoints.

Each run is a fresh ``train.py`` process (one rank, or two under ``horovodrun --gloo``) on the project's synthetic
LEVIR-CD scenes, 32x32 chips, augmentation on; the two runs' ``.params`` and ``.states`` of every epoch are
compared by SHA-256. ``benchmarks/determinism.py`` runs the same comparison many times, under load, and traces
a run operator by operator to find where two runs part.
"""
import os
import subprocess
import sys
from pathlib import Path

import yaml

from utilities.artifacts.checkpoint import file_digest

ROOT = Path(__file__).resolve().parents[1]
HOROVODRUN = Path(sys.executable).parent / "horovodrun"


def write_config(folder: Path, scenes: Path, epochs: int) -> Path:
    config = {
        "data": {"kind": "levircd", "root": str(scenes), "chip_size": 32, "stride": 32},
        "model": {"name": "fractalresnet_tiny"},
        "train": {"batch_size": 2, "depths": [0, 1], "patience": 3, "max_epochs": epochs},
    }
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def train(config: Path, run_dir: Path, ranks: int) -> dict:
    """One fresh training; the SHA-256 of its checkpoints' parameter and optimiser-state files, by name."""
    command = [sys.executable, "train.py", "-c", str(config), "--run-dir", str(run_dir)]
    if ranks > 1:
        command = [str(HOROVODRUN), "-np", str(ranks), "-H", f"localhost:{ranks}", "--gloo", *command]
    result = subprocess.run(command, cwd=ROOT, env=dict(os.environ, PYTHONFAULTHANDLER="1"), capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    files = [*(run_dir / "checkpoints").glob("epoch_*.params"), *(run_dir / "checkpoints").glob("epoch_*.states")]
    return {f.name: file_digest(f) for f in sorted(files)}


def assert_runs_identical(tmp_path: Path, scenes: Path, ranks: int, epochs: int) -> None:
    config = write_config(tmp_path, scenes, epochs)
    first, second = (train(config, tmp_path / name, ranks) for name in ("a", "b"))
    expected = {f"epoch_{e:04d}.{kind}" for e in range(1, epochs + 1) for kind in ("params", "states")}
    assert set(first) == expected
    assert first == second


def test_two_single_process_runs_give_identical_checkpoints(tmp_path, scenes):
    assert_runs_identical(tmp_path, scenes, ranks=1, epochs=2)


def test_two_runs_of_two_ranks_give_identical_checkpoints(tmp_path, scenes):
    assert_runs_identical(tmp_path, scenes, ranks=2, epochs=2)
