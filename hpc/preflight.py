"""Check a training config before hpc/launch.sh starts Horovod, and print the run directory it names.

    python hpc/preflight.py CONFIG                     # train.py config: prints output.run_dir
    python hpc/preflight.py --cifar CONFIG             # train_cifar.py config: prints out_dir

Runs in a second, without MXNet or Horovod, so that a job with a bad input stops at once with one
line ``error: ...`` on stderr (exit status 2) instead of after N ranks have started: a missing or
invalid config (unknown keys, types and ranges, via ``utilities.training.config.load_config`` with the
training script's schema, ``Config`` or ``CifarConfig``, whose defaults fill the keys left out) or a
data path of the config that does not exist. What the data *contain* (matching dates, labels) is left
to the training script, which stops with its own one-line ``error:`` message.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: utilities/

from utilities.errors import InputError  # noqa: E402
from utilities.training.config import CifarConfig, load_config  # noqa: E402

#: data fields of utilities.training.config.DataConfig that name files or folders which must exist
DATA_PATHS = ("root", "date1", "date2", "label", "val_date1", "val_date2", "val_label")


def _missing(path: str) -> str:
    where = "" if Path(path).is_absolute() else f" (relative to {Path.cwd()})"
    return f"{path} does not exist{where}"


def check_train_config(path: str) -> str:
    """Validate a train.py config and its data paths; return its output.run_dir."""
    cfg = load_config(path)
    data = cfg.data
    for name in DATA_PATHS:
        value = getattr(data, name)
        if value not in (None, "") and not Path(value).exists():
            raise InputError(f"config {path}: data.{name} {_missing(value)}")
    if data.kind == "levircd" and data.root:
        for key in ("train_split", "val_split"):
            split = getattr(data, key)
            if split and not (Path(data.root) / split).is_dir():
                raise InputError(f"config {path}: data.{key} '{split}': {_missing(str(Path(data.root) / split))}")
    return cfg.output.run_dir


def check_cifar_config(path: str, check_data: bool) -> str:
    """Validate a train_cifar.py config and (with ``check_data``) its data_dir; return its out_dir."""
    cfg = load_config(path, CifarConfig)
    if check_data and not Path(cfg.data_dir).exists():
        raise InputError(f"config {path}: data_dir {_missing(cfg.data_dir)}")
    return cfg.out_dir


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("--cifar", action="store_true", help="a train_cifar.py config")
    parser.add_argument("--no-data-check", action="store_true", help="with --cifar: do not check data_dir (--fake)")
    args = parser.parse_args(argv)
    if not Path(args.config).is_file():
        raise InputError(f"config {_missing(args.config)}")
    run_dir = (check_cifar_config(args.config, check_data=not args.no_data_check) if args.cifar
               else check_train_config(args.config))
    print(run_dir)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
