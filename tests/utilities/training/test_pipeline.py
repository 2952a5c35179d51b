"""From the data config to samples: each source kind, and one-line errors for missing settings."""
import pytest

from tests.utilities.fakes import write_geotiff_pair, write_levircd_tree
from utilities.errors import InputError
from utilities.training.config import DataConfig, check_config, load_config
from utilities.training.pipeline import SOURCES, chip_cache, chip_caches, split_samples


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
