"""Training config: paper defaults, unknown keys named, resolved config round trip, fidelity presets."""
from pathlib import Path

import pytest

from utilities.errors import InputError
from utilities.training.config import FIDELITIES, Config, check_config, load_config, save_config


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

CONFIGS = Path(__file__).resolve().parents[3] / "configs"


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
    ("train:\n  final_stage_epochs: 0\n", "train.final_stage_epochs must be >= 1, got 0"),
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


TINY = "model:\n  name: fractalresnet_tiny\n"  # inputs a multiple of 8

BAD_VALUES = [
    ("train:\n  batch_size: three\n", "train.batch_size must be an integer, got 'three'"),
    ("train:\n  batch_size: 0\n", "train.batch_size must be >= 1, got 0"),
    ("train:\n  batch_size: true\n", "train.batch_size must be an integer, got True"),
    ("train:\n  lr: -1\n", "train.lr must be > 0, got -1.0"),
    ("train:\n  lr: '1e-3x'\n", "train.lr must be a finite number, got '1e-3x'"),
    ("train:\n  lr: .nan\n", "train.lr must be a finite number, got nan"),
    ("train:\n  depths: '0,10'\n", "train.depths must be a list of integers, got '0,10'"),
    ("train:\n  depths: [0, -10]\n", "every item of train.depths must be >= 0, got [0, -10]"),
    ("train:\n  depths: []\n", "train.depths needs at least 1 item(s), got []"),
    ("train:\n  loss_axis: [0]\n", "every item of train.loss_axis must be one of 1, 2, 3, got [0]"),
    ("train:\n  max_steps_per_epoch: 0\n", "train.max_steps_per_epoch must be >= 1, got 0"),
    ("data:\n  chip_size: -32\n", "data.chip_size must be >= 1, got -32"),
    ("data:\n  chip_size: 60\n", "data.stride (128) must be <= data.chip_size (60): chips would leave pixels out"),
    ("data:\n  bands: 1\n", "data.bands must be a list of integers, got 1"),
    ("model:\n  args: [1]\n", "model.args must be a mapping, got [1]"),
    ("output:\n  run_dir: 3\n", "output.run_dir must be a string, got 3"),
]

BAD_SETUPS = [
    (TINY + "data:\n  chip_size: 60\n  stride: 30\n",
     "data.chip_size 60 is not a multiple of 8, which fractalresnet_tiny needs (use 56 or 64)"),
    ("data:\n  chip_size: 128\n",
     "data.chip_size 128 is not a multiple of 256, which ceecnetv1_d6nf32 needs (use 256)"),
    ("model:\n  name: ceecnet\n", "unknown model.name 'ceecnet' (registered: {models})"),
    ("model:\n  name: cifar_resnet_tiny\n", "model.name 'cifar_resnet_tiny' is not a change-detection model"),
    (TINY + "  args:\n    nfilter: 8\n", "unknown key 'model.args.nfilter' for fractalresnet_tiny (known: {known})"),
    (TINY + "  args:\n    depth: 1\n", "model.args of fractalresnet_tiny: mantis depth must be >= 2, got 1"),
    ("train:\n  depths: [0, 10]\n  milestones: [3, 5]\n",
     "train: evolving-loss schedule: 2 stages need 1 milestones, got [3, 5]"),
    ("augment:\n  args:\n    p_rotate: 2\n", "augment.args: {augment_error}"),
    ("output:\n  run_dir: {file}/run\n", "output.run_dir {file}/run lies under {file}, which is a file"),
    ("output:\n  run_dir: {file}\n", "output.run_dir {file} is a file"),
]


@pytest.mark.parametrize("text, message", BAD_VALUES, ids=[m.split(" ")[0] + str(i) for i, (_, m) in
                                                          enumerate(BAD_VALUES)])
def test_bad_values_are_named_with_the_key(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(InputError) as error:
        load_config(path)
    assert str(error.value) == f"config {path}: {message}"


@pytest.mark.parametrize("text, message", BAD_SETUPS, ids=[m.split(" ")[0] + str(i) for i, (_, m) in
                                                          enumerate(BAD_SETUPS)])
def test_model_schedule_augmentation_and_run_dir_are_checked(tmp_path, text, message):
    from mantis import list_models
    from mantis.registry import model_parameters
    from utilities.data.augment import ChangeAugmentation

    (tmp_path / "afile").write_text("not a folder")
    path = tmp_path / "c.yaml"
    path.write_text(text.format(file=tmp_path / "afile"))
    with pytest.raises(InputError) as error:
        check_config(load_config(path), str(path))
    with pytest.raises(ValueError) as augment_error:
        ChangeAugmentation(p_rotate=2)
    assert str(error.value) == f"config {path}: " + message.format(
        file=tmp_path / "afile", models=", ".join(list_models()), augment_error=augment_error.value,
        known=", ".join(sorted(model_parameters("fractalresnet_tiny"))))


def test_good_values_pass_and_yaml_1_1_exponents_are_numbers(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(TINY + "data:\n  chip_size: 64\n  stride: 32\n  bands: [1, 3]\ntrain:\n  lr: 1e-4\n  "
                    f"milestones: [5, 9, 12]\noutput:\n  run_dir: {tmp_path}/new/run\n")
    cfg = load_config(path)
    assert cfg.train.lr == 1e-4 and isinstance(cfg.train.lr, float) and cfg.data.bands == [1, 3]
    check_config(cfg, str(path))
    assert not (tmp_path / "new").exists()  # checked, not created


@pytest.mark.parametrize("key", ["output.run_dir", "out_dir"])
def test_a_run_dir_where_no_file_can_be_created_is_bad_input(tmp_path, key):
    """/proc takes no new files (as a read-only file system or a folder without write permission would not):
    one line naming the key, exit status 2, instead of a failed write (1) once the run has started."""
    from utilities.training.config import CifarConfig

    path = tmp_path / "c.yaml"
    if key == "out_dir":
        path.write_text("model: cifar_resnet_tiny\nout_dir: /proc/mantis_run\n")
        config = load_config(path, CifarConfig)
    else:
        path.write_text(TINY + "output:\n  run_dir: /proc/mantis_run\n")
        config = load_config(path)
    with pytest.raises(InputError) as error:
        check_config(config, str(path))
    assert str(error.value).startswith(
        f"config {path}: cannot write to {key} /proc/mantis_run: no file can be created in /proc (")


# ------------------------------------------------------------------------------------------- resume


def test_resume_allows_paths_length_and_watching_and_names_what_changed(tmp_path):
    from utilities.training.config import config_to_dict, resume_changes

    started = config_to_dict(Config())
    now = Config()
    now.train.max_epochs, now.train.stall_timeout_s, now.output.run_dir = 40, 600.0, "/scratch/run"
    assert resume_changes(now, started, "c.yaml", "run/checkpoints/latest.json") == [
        "train.max_epochs 1000 -> 40", "train.stall_timeout_s 1800.0 -> 600.0",
        "output.run_dir 'runs/default' -> '/scratch/run'"]
    assert resume_changes(Config(), started, "c.yaml", "ckpt") == []


def test_resume_refuses_changes_of_the_mathematics_or_the_data_in_one_line():
    from utilities.training.config import config_to_dict, resume_changes

    started = config_to_dict(Config())
    now = Config(fidelity="authors")  # loss axes (1, 2, 3), the authors' augmentation, targets and network
    now.data.chip_size, now.train.max_epochs = 512, 40
    with pytest.raises(InputError) as error:
        resume_changes(now, started, "c.yaml", "run/checkpoints/latest.json")
    assert str(error.value) == (
        "config c.yaml: --resume would change fidelity 'paper' -> 'authors', data.chip_size 256 -> 512, "
        "data.targets 'paper' -> 'authors', model.args {} -> {'fidelity': 'authors'}, augment.policy 'paper' -> "
        "'authors', train.loss_axis [2, 3] -> [1, 2, 3] from the run's checkpoint run/checkpoints/latest.json, "
        "which changes what the run computes or trains on: set them back, or start a new run in another run_dir")


def test_resume_compares_only_the_keys_the_checkpoint_recorded():
    """A checkpoint of an earlier mantis lacks the keys added since: they are not compared."""
    from utilities.training.config import CifarConfig, config_to_dict, resume_changes

    started = config_to_dict(Config())
    del started["train"]["memory_saving"], started["augment"]
    now = Config()
    now.train.memory_saving, now.augment.enabled = True, False
    assert resume_changes(now, started, "c.yaml", "ckpt") == []
    cifar = config_to_dict(CifarConfig())
    now = CifarConfig(epochs=5, loss="ft")
    with pytest.raises(InputError, match=r"--resume would change loss 'ce' -> 'ft' from"):
        resume_changes(now, cifar, "c.yaml", "ckpt")


def test_resume_allows_another_pass_size_only_where_a_global_batch_fixes_the_updates():
    from utilities.training.config import config_to_dict, resume_changes

    for global_batch in (None, 6):
        started = Config()
        started.train.global_batch = global_batch
        now = Config()
        now.train.global_batch, now.train.batch_size = global_batch, 1
        if global_batch is None:  # then batch_size chips per rank make each update
            with pytest.raises(InputError, match=r"--resume would change train.batch_size 3 -> 1 from"):
                resume_changes(now, config_to_dict(started), "c.yaml", "ckpt")
        else:
            assert resume_changes(now, config_to_dict(started), "c.yaml", "ckpt") == ["train.batch_size 3 -> 1"]
