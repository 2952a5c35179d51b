"""From a data config to training and validation chip caches (paper Section 8.3: 256x256 chips,
stride 128), one source kind per entry of :data:`SOURCES`."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, List

from utilities.data.chips import build_chip_cache
from utilities.data.datasets import Sample, levircd_samples, pair_samples, whu_samples
from utilities.errors import InputError
from utilities.training.config import DataConfig


def _require(cfg: DataConfig, *names: str) -> None:
    missing = [n for n in names if getattr(cfg, n) in (None, "")]
    if missing:
        raise InputError(f"config: data.kind '{cfg.kind}' needs data.{missing[0]}")


def _levircd(cfg: DataConfig, split: str) -> List[Sample]:
    _require(cfg, "root")
    return levircd_samples(cfg.root, cfg.train_split if split == "train" else cfg.val_split)


def _whu(cfg: DataConfig, split: str) -> List[Sample]:
    _require(cfg, "date1", "date2", "label")
    return whu_samples(cfg.date1, cfg.date2, cfg.label, split, cfg.regions)


def _pair(cfg: DataConfig, split: str) -> List[Sample]:
    if split == "train":
        _require(cfg, "date1", "date2", "label")
        return pair_samples(cfg.date1, cfg.date2, cfg.label)
    _require(cfg, "val_date1", "val_date2", "val_label")
    return pair_samples(cfg.val_date1, cfg.val_date2, cfg.val_label)


SPLITS = ("train", "val")

#: data.kind -> samples of a split ("train" or "val")
SOURCES: Dict[str, Callable[[DataConfig, str], List[Sample]]] = {"levircd": _levircd, "whu": _whu, "pair": _pair}


def split_samples(cfg: DataConfig, split: str) -> List[Sample]:
    """The samples of ``split`` ("train" or "val") for ``cfg.kind``."""
    try:
        source = SOURCES[cfg.kind]
    except KeyError:
        raise InputError(f"config: unknown data.kind '{cfg.kind}' (choose one of {', '.join(sorted(SOURCES))})")
    return source(cfg, split)


def _build(cfg: DataConfig, split: str, samples: List[Sample], default_dir: Path, progress: bool) -> Path:
    folder = (Path(cfg.cache_dir) if cfg.cache_dir else default_dir) / split
    build_chip_cache(samples, folder, size=cfg.chip_size, stride=cfg.stride, bands=cfg.bands, progress=progress)
    return folder


def chip_cache(cfg: DataConfig, split: str, default_dir: Path, progress: bool = True) -> Path:
    """Build (or reuse) the chip cache of ``split``; return its folder."""
    return _build(cfg, split, split_samples(cfg, split), default_dir, progress)


def chip_caches(cfg: DataConfig, default_dir: Path, progress: bool = True) -> Dict[str, Path]:
    """Build (or reuse) the training and validation chip caches; return their folders by split. The
    samples of both splits are found and checked first, so that a bad validation setting stops a run
    before any training chip is cut."""
    samples = {split: split_samples(cfg, split) for split in SPLITS}
    return {split: _build(cfg, split, found, default_dir, progress) for split, found in samples.items()}
