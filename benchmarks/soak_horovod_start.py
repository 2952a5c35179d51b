"""Soak the 2-rank start-up: N consecutive ``horovodrun --gloo`` starts of train.py, counting failures.

    python benchmarks/soak_horovod_start.py                       # 50 starts, 2 ranks, fractalresnet_tiny
    python benchmarks/soak_horovod_start.py --starts 20 --load 2  # under load: 2 busy processes alongside
    make soak

Every start is a fresh run of ``train.py`` on tiny synthetic LEVIR-CD scenes (utilities/data/synthetic.py) up to the
first completed training step, then one validation batch, a checkpoint and the exit (``max_epochs 1``,
``max_steps_per_epoch 1``, ``max_val_steps 1``): the start-up path (imports, ``hvd.init``, chip caches, model
initialisation, the shape-inferring forward, the parameter broadcast) plus the first step and a clean end.
Each start runs with ``PYTHONFAULTHANDLER=1`` and ``horovodrun --output-filename``, so that a failure keeps every
rank's whole stdout/stderr (with the Python stacks of a crashing rank) under
``OUT/failures/start_NNN/rank.K/``, next to ``horovodrun.txt`` (horovodrun's own output) and ``status.txt``
(exit status, seconds). Successful starts leave nothing behind. Prints one line per start and a summary (the
numbers BENCHMARKS.md records); exits 1 when any start failed.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import List, Optional

import yaml

ROOT = Path(__file__).resolve().parents[1]
HOROVODRUN = Path(sys.executable).parent / "horovodrun"
sys.path.insert(0, str(ROOT))

from soak import busy_processes, run_job  # noqa: E402

from utilities.data.synthetic import write_levircd_layout  # noqa: E402  (after the path insert)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=50, help="consecutive starts")
    parser.add_argument("--ranks", type=int, default=2, help="ranks per start (all on localhost)")
    parser.add_argument("--model", default="fractalresnet_tiny", help="registered mantis model")
    parser.add_argument("--load", type=int, default=0, help="busy-looping processes run alongside (CPU load)")
    parser.add_argument("--timeout", type=float, default=300, help="seconds before a start counts as hung")
    parser.add_argument("--out", help="folder for data and failure logs (default: a new temporary folder)")
    return parser.parse_args(argv)


def write_config(folder: Path, data_root: Path, model: str) -> Path:
    config = {
        "data": {"kind": "levircd", "root": str(data_root), "chip_size": 32, "stride": 32},
        "model": {"name": model},
        "train": {"batch_size": 2, "depths": [0], "max_epochs": 1, "max_steps_per_epoch": 1, "max_val_steps": 1},
        "output": {"run_dir": str(folder / "run")},
    }
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def start(index: int, out: Path, data_root: Path, args: argparse.Namespace) -> dict:
    """One ``horovodrun`` start; its folder is kept under ``out/failures`` if it failed, else removed."""
    folder = out / f"start_{index:03d}"
    folder.mkdir(parents=True)
    config = write_config(folder, data_root, args.model)
    command = [str(HOROVODRUN), "-np", str(args.ranks), "-H", f"localhost:{args.ranks}", "--gloo",
               "--output-filename", str(folder / "logs"), sys.executable, "train.py", "-c", str(config)]
    status, output, seconds = run_job(command, dict(os.environ, PYTHONFAULTHANDLER="1"), args.timeout, cwd=str(ROOT))
    record = dict(start=index, status=status, seconds=seconds)
    if status == 0:
        shutil.rmtree(folder)
        return record
    (folder / "horovodrun.txt").write_text(output)
    (folder / "status.txt").write_text(json.dumps(record) + "\n")
    kept = out / "failures" / folder.name
    kept.parent.mkdir(exist_ok=True)
    folder.rename(kept)
    record["kept"] = str(kept)
    return record


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="mantis-soak-"))
    out.mkdir(parents=True, exist_ok=True)
    data_root = out / "levir"
    if not data_root.exists():
        write_levircd_layout(data_root, n_per_split={"train": 2, "val": 1}, size=64, seed=0)
    print(f"# {datetime.datetime.now().isoformat(timespec='seconds')}: {args.starts} starts of {args.ranks} ranks "
          f"({args.model}), {args.load} busy process(es) alongside, {os.cpu_count()} cores; output {out}", flush=True)
    records = []
    with busy_processes(args.load):
        for index in range(1, args.starts + 1):
            records.append(start(index, out, data_root, args))
            print(json.dumps(records[-1]), flush=True)
    failed = [r for r in records if r["status"] != 0]
    seconds = sorted(r["seconds"] for r in records)
    print(f"{len(failed)} failure(s) in {len(records)} starts (statuses {[r['status'] for r in failed]}); "
          f"median {seconds[len(seconds) // 2]:.1f} s per start; failures kept under {out / 'failures'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
