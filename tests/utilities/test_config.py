"""Training config: paper defaults, unknown keys named, resolved config round trip."""
import pytest

from utilities.config import Config, load_config, save_config
from utilities.errors import InputError


def test_defaults_are_the_papers(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data:\n  kind: levircd\n  root: /data\n")
    cfg = load_config(path)
    assert cfg.train.batch_size == 3 and cfg.train.lr == 1e-3
    assert cfg.train.depths == [0, 10, 20, 30] and cfg.train.patience == 3
    assert cfg.data.chip_size == 256 and cfg.data.stride == 128
    assert cfg.model.name == "ceecnetv1_d6nf32"


@pytest.mark.parametrize("text, key", [("bogus: 1\n", "bogus"), ("train:\n  batchsize: 4\n", "train.batchsize"),
                                       ("model:\n  args: {}\n  nme: x\n", "model.nme")])
def test_unknown_key_is_named(tmp_path, text, key):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(InputError, match=rf"config .*c.yaml: unknown key '{key}'"):
        load_config(path)


def test_bad_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(InputError, match="is not valid YAML"):
        load_config(bad)
    with pytest.raises(InputError, match="cannot read config .*missing.yaml"):
        load_config(tmp_path / "missing.yaml")


def test_section_must_be_a_mapping(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train: 3\n")
    with pytest.raises(InputError, match="section 'train' must be a mapping"):
        load_config(path)


def test_resolved_config_round_trip(tmp_path):
    cfg = Config()
    cfg.train.batch_size = 7
    cfg.model.args = {"nfilters": 16}
    save_config(cfg, tmp_path / "run" / "config.yaml")
    again = load_config(tmp_path / "run" / "config.yaml")
    assert again == cfg
