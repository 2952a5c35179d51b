"""From the data config to samples (each source kind, the paper's and the official LEVIR-CD validation
split, one-line errors for missing settings) and to the chip datasets, validation standardised as training."""
from pathlib import Path

import numpy as np
import pytest
from mxnet import gluon, nd

from tests.utilities.fakes import write_geotiff_pair, write_levircd_tree
from utilities.artifacts.model_io import Predictor
from utilities.data.datasets import levircd_samples
from utilities.errors import InputError
from utilities.inference.evaluation import evaluate
from utilities.inference.tiled import predict_rasters
from utilities.raster.io import read_image
from utilities.training.config import DataConfig, check_config, load_config
from utilities.training.pipeline import SOURCES, chip_cache, chip_caches, chip_datasets, split_samples

CONFIGS = Path(__file__).resolve().parents[3] / "configs"


def test_levircd_splits(tmp_path):
    write_levircd_tree(tmp_path, splits=("train", "val"), n=2, size=64)
    cfg = DataConfig(kind="levircd", root=str(tmp_path))
    assert len(split_samples(cfg, "train")) == 2 and len(split_samples(cfg, "val")) == 2


def test_levircd_flat_folder_with_null_splits_from_a_config_file(tmp_path):
    """``train_split: null`` / ``val_split: null`` read ``root/{A,B,label}`` (a folder of one's own tiles, like
    the real samples) through the checked config file."""
    write_levircd_tree(tmp_path / "tiles", splits=None, n=3, size=64)
    path = tmp_path / "c.yaml"
    path.write_text(f"data:\n  kind: levircd\n  root: {tmp_path / 'tiles'}\n  train_split: null\n  val_split: null\n"
                    f"output:\n  run_dir: {tmp_path}/run\n")
    cfg = load_config(path)
    check_config(cfg, str(path))
    assert len(split_samples(cfg.data, "train")) == 3 and len(split_samples(cfg.data, "val")) == 3


def test_pair_source_uses_the_val_pair_for_validation(tmp_path):
    train = write_geotiff_pair(tmp_path / "train", 64, 64)
    val = write_geotiff_pair(tmp_path / "val", 32, 32)
    cfg = DataConfig(kind="pair", date1=str(train[0]), date2=str(train[1]), label=str(train[2]),
                     val_date1=str(val[0]), val_date2=str(val[1]), val_label=str(val[2]))
    assert split_samples(cfg, "train")[0].date1 == train[0]
    assert split_samples(cfg, "val")[0].date1 == val[0]


def test_chip_cache_folder_per_split(tmp_path):
    write_levircd_tree(tmp_path / "data", splits=("train", "val"), n=1, size=64)
    cfg = DataConfig(kind="levircd", root=str(tmp_path / "data"), chip_size=32, stride=32)
    folder = chip_cache(cfg, "val", tmp_path / "chips", progress=False)
    assert folder == tmp_path / "chips" / "val" and (folder / "manifest.json").exists()


def test_unknown_kind_names_the_choices():
    choices = ", ".join(sorted(SOURCES))
    with pytest.raises(InputError, match=rf"unknown data.kind 'sentinel' \(choose one of {choices}\)"):
        split_samples(DataConfig(kind="sentinel"), "train")


@pytest.mark.parametrize("kind, missing", [("levircd", "root"), ("whu", "date1"), ("pair", "date1")])
def test_missing_setting_is_named(kind, missing):
    with pytest.raises(InputError, match=rf"data.kind '{kind}' needs data.{missing}"):
        split_samples(DataConfig(kind=kind), "train")


def test_both_splits_are_checked_before_any_chip_is_cut(tmp_path):
    train = write_geotiff_pair(tmp_path / "train", 64, 64)
    cfg = DataConfig(kind="pair", date1=str(train[0]), date2=str(train[1]), label=str(train[2]), chip_size=32,
                     stride=32, val_date1=str(train[0]), val_date2=str(train[1]))
    with pytest.raises(InputError, match=r"^config: data.kind 'pair' needs data.val_label$"):
        chip_caches(cfg, tmp_path / "chips", progress=False)
    assert not (tmp_path / "chips").exists()
    cfg.val_label = str(train[2])
    assert chip_caches(cfg, tmp_path / "chips", progress=False) == {split: tmp_path / "chips" / split
                                                                    for split in ("train", "val")}
    assert all((tmp_path / "chips" / split / "manifest.json").exists() for split in ("train", "val"))


def test_levircd_paper_split_pools_both_folders_and_carves_each_tile(tmp_path):
    """``val_area``: validation is the bottom-right corner of every tile of the train and val folders,
    training the rest of the same tiles; a flat folder (both splits null) is read once."""
    root = write_levircd_tree(tmp_path / "levir", splits=("train", "val"), n=2, size=224)
    cfg = DataConfig(kind="levircd", root=str(root), val_area=0.1, chip_size=64, stride=32)
    tiles = ["train_1", "train_2", "val_1", "val_2"]
    assert [s.name for s in split_samples(cfg, "val")] == [f"{t}/corner" for t in tiles]
    assert [s.name for s in split_samples(cfg, "train")] == [f"{t}/{p}" for t in tiles for p in ("top", "left")]
    assert {s.window for s in split_samples(cfg, "val")} == {(153, 153, 71, 71)}
    flat = write_levircd_tree(tmp_path / "flat", splits=None, n=2, size=224)
    cfg = DataConfig(kind="levircd", root=str(flat), train_split=None, val_split=None, val_area=0.1, chip_size=64)
    assert [s.name for s in split_samples(cfg, "val")] == ["tile_1/corner", "tile_2/corner"]
    cfg.val_area = 1.0
    with pytest.raises(InputError, match=r"^config: data.val_area must be < 1 \(the share of each tile for "
                                         r"validation\), got 1.0$"):
        split_samples(cfg, "val")


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("levircd_*.yaml")), ids=lambda p: p.name)
def test_levircd_presets_use_the_papers_split(path):
    """Both fidelities' LEVIR-CD presets carve ~10 % of every train and val tile for validation (Section 8.1)."""
    cfg = load_config(path)
    assert cfg.data.val_area == 0.1 and (cfg.data.train_split, cfg.data.val_split) == ("train", "val")


class _Recorder(gluon.Block):
    """Stands in for a network: keeps the dates it is given, answers 0.5 everywhere."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, date1, date2):
        self.seen.append((date1.asnumpy(), date2.asnumpy()))
        half = nd.full((date1.shape[0], 2, *date1.shape[2:]), 0.5)
        return half, half, half


def test_validation_standardised_with_the_training_statistics(tmp_path):
    """A validation chip reaches the network as the same tensor in training's validation loop, in
    select_models.py's evaluation (:func:`evaluate`) and in predict.py (:func:`predict_rasters`): the raw
    chip standardised with the training chips' per-band mean and std (what checkpoints record), not with
    the validation chips' own."""
    root = write_levircd_tree(tmp_path / "levir", splits=("train", "val"), n=2, size=64, seed=5)
    cfg = DataConfig(kind="levircd", root=str(root), chip_size=64, stride=64, targets="paper")
    datasets = chip_datasets(cfg, chip_caches(cfg, tmp_path / "chips", progress=False))
    train, val = datasets["train"], datasets["val"]
    assert train.normalization == {key: train.manifest[key] for key in ("mean", "std", "dtype")}
    assert val.normalization == train.normalization and val.manifest["mean"] != train.manifest["mean"]
    sample = levircd_samples(root, "val")[0]
    mean, std = (np.asarray(train.manifest[key], np.float32)[:, None, None] for key in ("mean", "std"))
    expected = [(read_image(path).astype(np.float32) - mean) / std for path in (sample.date1, sample.date2)]
    loop = next(iter(gluon.data.DataLoader(val, batch_size=1)))
    for date, want in zip(loop[:2], expected):
        np.testing.assert_array_equal(date.asnumpy()[0], want)

    recorder = _Recorder()
    predictor = Predictor([recorder], **train.normalization)
    evaluate(predictor, [sample])
    predict_rasters(predictor, sample.date1, sample.date2, tmp_path / "out", window=64, stride=64, batch_size=1,
                    quicklook=False, progress=False)
    assert len(recorder.seen) == 2
    for seen in recorder.seen:
        for date, want in zip(seen, expected):
            np.testing.assert_array_equal(date[0], want)
