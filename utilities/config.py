"""Training configuration: YAML in, validated dataclasses out, resolved YAML saved beside the run.

Every key is checked: an unknown key (a typo) stops with a one-line message naming it, so a run never
silently ignores a setting. Defaults are the paper's D6nf32 protocol (Section 8, Appendix D).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import yaml

from .atomic import atomic_write_text
from .augment import POLICIES
from .errors import InputError
from .targets import TARGET_FORMS


@dataclass
class DataConfig:
    """Where the chips come from.

    ``kind``: ``levircd`` (``root`` in the official layout, splits ``train_split``/``val_split``),
    ``whu`` (``date1``/``date2``/``label`` rasters split spatially into ``regions``) or ``pair`` (one
    pair of rasters for training, ``val_date1``/``val_date2``/``val_label`` for validation).
    """

    kind: str = "levircd"
    root: Optional[str] = None
    train_split: str = "train"
    val_split: str = "val"
    date1: Optional[str] = None
    date2: Optional[str] = None
    label: Optional[str] = None
    val_date1: Optional[str] = None
    val_date2: Optional[str] = None
    val_label: Optional[str] = None
    regions: Optional[Dict[str, Any]] = None
    bands: Optional[List[int]] = None
    chip_size: int = 256
    stride: int = 128
    cache_dir: Optional[str] = None
    num_workers: int = 0
    targets: Optional[str] = None  # boundary/distance form (utilities.targets); None: the fidelity's


@dataclass
class ModelConfig:
    """A registered model name and overrides of its arguments (``mantis.get_model``)."""

    name: str = "ceecnetv1_d6nf32"
    args: Dict[str, Any] = field(default_factory=dict)
    hybridize: bool = True


@dataclass
class AugmentConfig:
    """The training augmentation (paper Section 8.3; ``utilities.augment``): its policy (None: the
    fidelity's) and overrides of the policy's probabilities and ranges."""

    enabled: bool = True
    policy: Optional[str] = None
    args: Dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainConfig:
    """Optimisation and the evolving-loss schedule (paper Section 4, Appendix D).

    The paper gives no patience ("whenever the validation loss stopped decreasing") and no end of
    training. ``patience`` 3: a plateau is three epochs without a lower validation loss, which one noisy
    epoch does not trigger while a stage still ends soon after it stops improving. ``final_stage_epochs``
    20: the last, most evolved stage, whose checkpoints Pareto selection (Section 8.5.2) chooses from,
    runs 20 epochs (the paper's Fig. 13 shows a long final stage; its first epochs follow the last depth
    increase, when MCC drops before it recovers); None ends the last stage like the others (plateau) or
    with ``max_epochs`` (milestones). An ``output.keep_checkpoints`` below it leaves fewer candidates.
    ``loss_axis`` None: the fidelity's.
    """

    batch_size: int = 3
    lr: float = 1e-3
    depths: List[int] = field(default_factory=lambda: [0, 10, 20, 30])
    lr_factor: float = 10.0
    patience: int = 3
    milestones: Optional[List[int]] = None  # move on at these epochs instead of on plateaus (Section 7.2)
    max_epochs: int = 1000
    max_steps_per_epoch: Optional[int] = None
    max_val_steps: Optional[int] = None
    final_stage_epochs: Optional[int] = 20
    loss_axis: Optional[List[int]] = None
    seed: int = 0


@dataclass
class OutputConfig:
    """Where the run writes checkpoints, history and its resolved config."""

    run_dir: str = "runs/default"
    keep_checkpoints: Optional[int] = None


@dataclass(frozen=True)
class Fidelity:
    """What a fidelity sets where the config leaves it out (None)."""

    loss_axis: Tuple[int, ...]  # train.loss_axis
    augment_policy: str  # augment.policy
    targets: str  # data.targets
    model_args: Dict[str, Any]  # added under model.args (the registry's default network is the paper's)


#: ``paper``: the paper where it is explicit; ``authors``: the choices of the authors' public code
FIDELITIES: Dict[str, Fidelity] = {
    "paper": Fidelity(loss_axis=(2, 3), augment_policy="paper", targets="paper", model_args={}),
    "authors": Fidelity(loss_axis=(1, 2, 3), augment_policy="authors", targets="authors",
                        model_args={"fidelity": "authors"}),
}


@dataclass
class Config:
    """The whole configuration; ``fidelity`` fills the keys left out with its choices (:data:`FIDELITIES`)."""

    fidelity: str = "paper"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    output: OutputConfig = field(default_factory=OutputConfig)

    def __post_init__(self) -> None:
        if self.fidelity not in FIDELITIES:
            raise ValueError(f"fidelity must be one of {', '.join(FIDELITIES)}, got {self.fidelity!r}")
        preset = FIDELITIES[self.fidelity]
        if self.train.loss_axis is None:
            self.train.loss_axis = list(preset.loss_axis)
        if self.augment.policy is None:
            self.augment.policy = preset.augment_policy
        if self.data.targets is None:
            self.data.targets = preset.targets
        self.model.args = {**preset.model_args, **self.model.args}


def _build(cls, values: Dict[str, Any], where: str, source: str):
    if not isinstance(values, dict):
        raise InputError(f"config {source}: section '{where}' must be a mapping, got {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        prefix = f"{where}." if where else ""
        raise InputError(f"config {source}: unknown key '{prefix}{unknown[0]}' (known: {', '.join(sorted(fields))})")
    kwargs = {}
    for name, value in values.items():
        default = fields[name].default_factory() if fields[name].default_factory is not dataclasses.MISSING \
            else fields[name].default
        if dataclasses.is_dataclass(default):
            kwargs[name] = _build(type(default), value or {}, f"{where}.{name}" if where else name, source)
        else:
            kwargs[name] = value
    return cls(**kwargs)


def load_config(path: Union[str, Path]) -> Config:
    """Read and validate a YAML config; raise :class:`InputError` naming the file and the problem."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise InputError(f"cannot read config {path}: {err.strerror}") from None
    try:
        values = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise InputError(f"config {path} is not valid YAML: {str(err).splitlines()[0]}") from None
    if isinstance(values, dict):
        for section, key, table in ((values, "fidelity", FIDELITIES), (values.get("augment"), "policy", POLICIES),
                                    (values.get("data"), "targets", TARGET_FORMS)):
            value = section.get(key) if isinstance(section, dict) else None
            if value is not None and value not in table:
                where = key if section is values else f"{'augment' if key == 'policy' else 'data'}.{key}"
                raise InputError(f"config {path}: {where} must be one of {', '.join(table)}, got {value!r}")
    return _build(Config, values, "", str(path))


def config_to_dict(config: Config) -> Dict[str, Any]:
    return dataclasses.asdict(config)


def save_config(config: Config, path: Union[str, Path]) -> None:
    """Write the resolved config (defaults filled in) as YAML, atomically."""
    atomic_write_text(path, yaml.safe_dump(config_to_dict(config), sort_keys=False))
