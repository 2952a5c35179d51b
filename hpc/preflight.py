"""Check a training config before hpc/launch.sh starts Horovod, and print the run directory it names.

    python hpc/preflight.py CONFIG                     # train.py config: prints output.run_dir
    python hpc/preflight.py --cifar CONFIG             # train_cifar.py config: prints out_dir
    python hpc/preflight.py --cifar CONFIG --job-config OUT --out-dir DIR
                                                       # also writes a copy of CONFIG with out_dir=DIR

Runs in a second, without MXNet or Horovod, so that a job with a bad input stops at once with one
line ``error: ...`` on stderr (exit status 2) instead of after N ranks have started: a missing or
invalid config (unknown keys included, via ``utilities.config.load_config``) or a data path of the
config that does not exist. What the data *contain* (matching dates, labels) is left to train.py,
which stops with its own one-line ``error:`` message.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: utilities/

from utilities.config import load_config  # noqa: E402
from utilities.errors import InputError  # noqa: E402

#: data fields of utilities.config.DataConfig that name files or folders which must exist
DATA_PATHS = ("root", "date1", "date2", "label", "val_date1", "val_date2", "val_label")
#: train_cifar.py's defaults for the keys read here (its DEFAULTS; importing it would run it)
CIFAR_DEFAULTS = {"data_dir": "data/cifar10", "out_dir": "runs/cifar10"}


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


def check_cifar_config(path: str, check_data: bool) -> dict:
    """Validate a train_cifar.py config (a mapping with an existing data_dir); return it with defaults."""
    try:
        values = yaml.safe_load(Path(path).read_text()) or {}
    except OSError as err:
        raise InputError(f"cannot read config {path}: {err.strerror}") from None
    except yaml.YAMLError as err:
        raise InputError(f"config {path} is not valid YAML: {str(err).splitlines()[0]}") from None
    if not isinstance(values, dict):
        raise InputError(f"config {path} must be a mapping, got {type(values).__name__}")
    values = {**CIFAR_DEFAULTS, **values}
    if check_data and not Path(values["data_dir"]).exists():
        raise InputError(f"config {path}: data_dir {_missing(values['data_dir'])}")
    return values


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("--cifar", action="store_true", help="a train_cifar.py config")
    parser.add_argument("--no-data-check", action="store_true", help="do not check the data paths (--fake)")
    parser.add_argument("--job-config", help="with --cifar: write a copy of the config here, out_dir replaced")
    parser.add_argument("--out-dir", help="with --job-config: the out_dir of the copy")
    args = parser.parse_args(argv)
    if not Path(args.config).is_file():
        raise InputError(f"config {_missing(args.config)}")
    if not args.cifar:
        print(check_train_config(args.config))
        return 0
    values = check_cifar_config(args.config, check_data=not args.no_data_check)
    if args.job_config:
        values["out_dir"] = args.out_dir
        Path(args.job_config).parent.mkdir(parents=True, exist_ok=True)
        Path(args.job_config).write_text(yaml.safe_dump(values, sort_keys=False))
    print(values["out_dir"])
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
