"""Training config: paper defaults, unknown keys named, resolved config round trip, fidelity presets."""
from pathlib import Path

import pytest

from utilities.config import FIDELITIES, Config, load_config, save_config
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


# ----------------------------------------------------------------------------- fidelity

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _load(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text("data:\n  kind: levircd\n  root: /data\n" + text)
    return load_config(path)


def test_fidelity_paper_is_the_default(tmp_path):
    cfg = _load(tmp_path, "")
    assert cfg.fidelity == "paper"
    assert (cfg.train.loss_axis, cfg.augment.policy, cfg.data.targets, cfg.model.args) == ([2, 3], "paper", "paper", {})
    assert cfg.train.patience == 3 and cfg.train.final_stage_epochs == 20


def test_fidelity_authors_fills_the_keys_left_out(tmp_path):
    cfg = _load(tmp_path, "fidelity: authors\nmodel:\n  args: {nfilters: 16}\n")
    assert cfg.train.loss_axis == [1, 2, 3]
    assert (cfg.augment.policy, cfg.data.targets) == ("authors", "authors")
    assert cfg.model.args == {"fidelity": "authors", "nfilters": 16}
    assert FIDELITIES["authors"].loss_axis == (1, 2, 3)


def test_keys_set_in_the_file_win_over_the_fidelity(tmp_path):
    cfg = _load(tmp_path, "fidelity: authors\naugment:\n  policy: paper\ntrain:\n  loss_axis: [2, 3]\n"
                          "model:\n  args: {fidelity: paper}\n")
    assert (cfg.augment.policy, cfg.train.loss_axis, cfg.data.targets) == ("paper", [2, 3], "authors")
    assert cfg.model.args == {"fidelity": "paper"}
    cfg = _load(tmp_path, "augment:\n  policy: authors\n")
    assert (cfg.fidelity, cfg.augment.policy, cfg.data.targets) == ("paper", "authors", "paper")


@pytest.mark.parametrize("text, message", [
    ("fidelity: author\n", "fidelity must be one of paper, authors, got 'author'"),
    ("augment:\n  policy: mine\n", "augment.policy must be one of paper, authors, got 'mine'"),
])
def test_bad_fidelity_keys_are_named(tmp_path, text, message):
    with pytest.raises(InputError, match=rf"config .*c.yaml: {message}$"):
        _load(tmp_path, text)


def test_resolved_authors_config_round_trip(tmp_path):
    cfg = _load(tmp_path, "fidelity: authors\n")
    save_config(cfg, tmp_path / "run" / "config.yaml")
    again = load_config(tmp_path / "run" / "config.yaml")
    assert again == cfg and again.model.args == {"fidelity": "authors"}


def test_authors_presets_are_the_paper_configs_with_fidelity_authors(tmp_path):
    """Every shipped D6nf32 config has its `_authors` twin: the same run but for the fidelity (and the
    run directory), so the one key is the only way the two differ."""
    papers = sorted(CONFIGS.glob("*_d6nf32.yaml"))
    assert len(papers) == 6
    for paper in papers:
        a, b = load_config(paper), load_config(paper.with_name(paper.stem + "_authors.yaml"))
        assert (a.fidelity, b.fidelity) == ("paper", "authors")
        assert b.output.run_dir == a.output.run_dir + "_authors"
        twin = tmp_path / paper.name
        twin.write_text(paper.read_text().replace("fidelity: paper", "fidelity: authors")
                        .replace(f"run_dir: {a.output.run_dir}", f"run_dir: {b.output.run_dir}"))
        assert load_config(twin) == b
