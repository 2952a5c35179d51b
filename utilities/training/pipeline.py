"""From a data config to training and validation chip caches (paper Section 8.3: 256x256 chips,
stride 128), one source kind per entry of :data:`SOURCES`, and to the chip datasets that training reads."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from utilities.data.chips import ChipDataset, Transform, build_chip_cache
from utilities.data.datasets import Sample, levircd_samples, pair_samples, tile_area_split, whu_samples
from utilities.data.oscd import SENTINEL2_BANDS, oscd_source
from utilities.errors import InputError
from utilities.raster.bands import band_record, pair_rasters
from utilities.training.config import DataConfig


def _require(cfg: DataConfig, *names: str) -> None:
    missing = [n for n in names if getattr(cfg, n) in (None, "")]
    if missing:
        raise InputError(f"config: data.kind '{cfg.kind}' needs data.{missing[0]}")


def _levircd(cfg: DataConfig, split: str) -> List[Sample]:
    """The official split's folder, or with ``val_area`` the paper's: the tiles of both folders (once when
    they are the same), split by area (:func:`~utilities.data.datasets.tile_area_split`)."""
    _require(cfg, "root")
    if cfg.val_area is None:
        return levircd_samples(cfg.root, cfg.train_split if split == "train" else cfg.val_split)
    if not cfg.val_area < 1:
        raise InputError(f"config: data.val_area must be < 1 (the share of each tile for validation), "
                         f"got {cfg.val_area}")
    tiles = [tile for folder in dict.fromkeys((cfg.train_split, cfg.val_split))
             for tile in levircd_samples(cfg.root, folder)]
    return tile_area_split(tiles, cfg.val_area, split, cfg.chip_size)


def _whu(cfg: DataConfig, split: str) -> List[Sample]:
    _require(cfg, "date1", "date2", "label")
    return whu_samples(cfg.date1, cfg.date2, cfg.label, split, cfg.regions)


def _pair(cfg: DataConfig, split: str) -> List[Sample]:
    """One pair; dates of band files (``band_names``) or to align (``align``) as VRTs (utilities.raster.bands)."""
    keys = ("date1", "date2", "label") if split == "train" else ("val_date1", "val_date2", "val_label")
    _require(cfg, *keys)
    date1, date2, label = (getattr(cfg, key) for key in keys)
    if cfg.band_names is not None or cfg.align is not None:
        date1, date2 = pair_rasters(date1, date2, cfg.band_names, cfg.reference_band, cfg.resampling, cfg.align,
                                    stem=Path(date1).name)
    return pair_samples(date1, date2, label)


def band_inputs(cfg: DataConfig) -> Optional[Dict[str, Any]]:
    """What checkpoints record of dates made of band files (``CheckpointRecord.band_inputs``: names, reference
    band, resampling, alignment), so that inference reads the same bands the same way; None for whole rasters."""
    names = list(SENTINEL2_BANDS) if cfg.kind == "oscd" and cfg.band_names is None else cfg.band_names
    return band_record(names, cfg.reference_band, cfg.resampling, cfg.align)


SPLITS = ("train", "val")

#: data.kind -> samples of a split ("train" or "val")
SOURCES: Dict[str, Callable[[DataConfig, str], List[Sample]]] = {"levircd": _levircd, "whu": _whu, "pair": _pair,
                                                                   "oscd": oscd_source}


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


def chip_datasets(cfg: DataConfig, folders: Dict[str, Path],
                  transform: Optional[Transform] = None) -> Dict[str, ChipDataset]:
    """The training and validation chip datasets of :func:`chip_caches`'s folders (``transform``: the training
    augmentation). Both are standardised with the training chips' per-band mean and std, the statistics that
    checkpoints record and inference (``predict.py``, ``evaluate.py``, ``select_models.py``) uses, so that
    validation (the evolving loss's plateaus, Pareto selection) judges the model on the inputs it will see."""
    train = ChipDataset(folders["train"], transform=transform, targets=cfg.targets)
    return {"train": train, "val": ChipDataset(folders["val"], targets=cfg.targets, normalization=train.normalization)}
