"""Training configuration: YAML in, validated dataclasses out, resolved YAML saved beside the run.

Two schemas, read by the one :func:`load_config`: :class:`Config` (``train.py``, change detection) and
:class:`CifarConfig` (``train_cifar.py``, the CIFAR-10 classifiers of Section 7).

Every key is checked: an unknown key (a typo) stops with a one-line message naming it, so a run never
silently ignores a setting, and every value has the type of its field's annotation and lies in the
range declared in the field's metadata (:class:`Limits`), before any chip is cut. :func:`check_config`
adds what needs the model registry or the file system: the model name, its arguments, the chip size
against the model's input multiple, the run directory. Defaults are the paper's D6nf32 protocol
(Section 8, Appendix D).
"""
from __future__ import annotations

import dataclasses
import math
import numbers
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple, Type, TypeVar, Union

import yaml

from utilities.atomic import atomic_write_text, writable_folder
from utilities.data.augment import POLICIES, ChangeAugmentation
from utilities.data.targets import TARGET_FORMS
from utilities.errors import InputError
from utilities.raster.bands import ALIGN_CHOICES, DEFAULT_RESAMPLING, RESAMPLING
from utilities.training.schedule import EvolvingLossSchedule


@dataclass(frozen=True)
class Limits:
    """The allowed values of a config field beyond its type: of the value itself, or of every item of
    a list. ``low`` is a lower bound (excluded when ``open``), ``choices`` the only values allowed,
    ``min_items`` the shortest list, ``max_items`` the longest."""

    low: Optional[float] = None
    open: bool = False
    choices: Optional[Tuple[Any, ...]] = None
    min_items: int = 0
    max_items: Optional[int] = None

    def problem(self, value: Any) -> Optional[str]:
        """What is wrong with one number, or None."""
        if self.choices is not None and value not in self.choices:
            return f"must be one of {', '.join(map(str, self.choices))}"
        if self.low is not None and (value <= self.low if self.open else value < self.low):
            return f"must be {'>' if self.open else '>='} {self.low:g}"
        return None


def limited(default: Any = dataclasses.MISSING, **limits: Any) -> Any:
    """A dataclass field with :class:`Limits` (``default`` may be a callable for a mutable default)."""
    metadata = {"limits": Limits(**limits)}
    if callable(default):
        return field(default_factory=default, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class DataConfig:
    """Where the chips come from.

    ``kind``: ``levircd`` (``root`` in the official layout, splits ``train_split``/``val_split``; a split
    of ``null`` reads ``root/{A,B,label}`` directly; with ``val_area``, the paper's split of Section 8.1:
    the bottom-right ``val_area`` of every tile of both folders for validation, the rest for training,
    ``utilities.data.datasets.tile_area_split``; None: the folders as they are),
    ``whu`` (``date1``/``date2``/``label`` rasters split spatially into ``regions``), ``pair`` (one
    pair of rasters for training, ``val_date1``/``val_date2``/``val_label`` for validation; with ``band_names`` a
    date may be a folder of band files) or ``oscd`` (``root`` in the OSCD layout, split by city:
    ``val_cities`` for validation, ``train_cities`` or the other cities of ``train.txt`` for training;
    ``utilities.data.oscd``).
    """

    kind: str = "levircd"
    root: Optional[str] = None
    train_split: Optional[str] = "train"
    val_split: Optional[str] = "val"
    val_area: Optional[float] = limited(None, low=0, open=True)  # levircd: fraction of each tile for validation
    date1: Optional[str] = None
    date2: Optional[str] = None
    label: Optional[str] = None
    val_date1: Optional[str] = None
    val_date2: Optional[str] = None
    val_label: Optional[str] = None
    regions: Optional[Dict[str, Any]] = None
    bands: Optional[List[int]] = limited(None, low=1, min_items=1)
    # dates of band files (utilities.raster.bands): the bands by name, in order; the band whose grid the date
    # takes (None: the finest); how other bands are resampled onto it; "date1": date 2 resampled onto date 1's grid
    band_names: Optional[List[str]] = limited(None, min_items=1)
    reference_band: Optional[str] = None
    resampling: str = limited(DEFAULT_RESAMPLING, choices=tuple(RESAMPLING))
    align: Optional[str] = limited(None, choices=ALIGN_CHOICES)
    train_cities: Optional[List[str]] = limited(None, min_items=1)  # oscd: default the listed cities not in val
    val_cities: Optional[List[str]] = limited(None, min_items=1)  # oscd: the cities held out for validation
    chip_size: int = limited(256, low=1)
    stride: int = limited(128, low=1)
    cache_dir: Optional[str] = None
    num_workers: int = limited(0, low=0)
    targets: Optional[str] = limited(None, choices=tuple(TARGET_FORMS))  # boundary/distance form; None: fidelity's


@dataclass
class ModelConfig:
    """A registered model name and overrides of its arguments (``mantis.get_model``)."""

    name: str = "ceecnetv1_d6nf32"
    args: Dict[str, Any] = field(default_factory=dict)
    hybridize: bool = True


@dataclass
class AugmentConfig:
    """The training augmentation (paper Section 8.3; ``utilities.data.augment``): its policy (None: the
    fidelity's) and overrides of the policy's probabilities and ranges."""

    enabled: bool = True
    policy: Optional[str] = limited(None, choices=tuple(POLICIES))
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

    ``global_batch``: chips per optimiser update over all ranks (the paper's presets: 192, 3 chips on each
    of its 64 GPUs); each rank takes an equal share in passes of at most ``batch_size`` chips and sums their
    gradients (utilities/training/accumulate.py), so the update does not depend on the ranks or
    ``batch_size``. None: one pass of ``batch_size`` per rank. An epoch is ``floor(chips / global_batch)``
    updates, and ``max_steps_per_epoch`` counts updates.
    """

    batch_size: int = limited(3, low=1)
    global_batch: Optional[int] = limited(None, low=1)
    lr: float = limited(1e-3, low=0, open=True)
    depths: List[int] = limited(lambda: [0, 10, 20, 30], low=0, min_items=1)
    lr_factor: float = limited(10.0, low=0, open=True)
    patience: int = limited(3, low=0)
    # move on at these epochs instead of on plateaus (Section 7.2)
    milestones: Optional[List[int]] = limited(None, low=1)
    max_epochs: int = limited(1000, low=1)
    max_steps_per_epoch: Optional[int] = limited(None, low=1)
    max_val_steps: Optional[int] = limited(None, low=1)
    final_stage_epochs: Optional[int] = limited(20, low=1)
    loss_axis: Optional[List[int]] = limited(None, choices=(1, 2, 3), min_items=1)
    seed: int = limited(0, low=0)
    # seconds without a completed training step or validation batch before a rank ends the job
    # (utilities/training/watchdog.py; a D6nf32 step takes about a minute on a CPU); 0: no watchdog
    stall_timeout_s: float = limited(1800.0, low=0)
    # lower peak memory for some time per step (utilities/training/memory.py; BENCHMARKS.md measures both)
    memory_saving: bool = False


@dataclass
class OutputConfig:
    """Where the run writes checkpoints, history and its resolved config."""

    run_dir: str = "runs/default"
    keep_checkpoints: Optional[int] = limited(None, low=1)


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

    fidelity: str = limited("paper", choices=tuple(FIDELITIES))
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

    def check_values(self, source: str) -> None:
        """What the fields' types and limits cannot say alone: chips that leave no pixel out."""
        if self.data.stride > self.data.chip_size:
            raise InputError(f"config {source}: data.stride ({self.data.stride}) must be <= data.chip_size "
                             f"({self.data.chip_size}): chips would leave pixels out")


#: train_cifar.py's losses: softmax cross entropy, or 1 - <FT>^d of the softmax against one-hot labels
CIFAR_LOSSES = ("ce", "ft")
#: train_cifar.py's optimisers
CIFAR_OPTIMIZERS = ("adam",)


@dataclass
class CifarScheduleConfig:
    """The evolving-loss schedule of a CIFAR-10 run (Section 7.2;
    :class:`~utilities.training.schedule.EvolvingLossSchedule`): the FT depth of each stage, the learning-rate divisor
    between stages, and when a stage ends: after ``patience`` epochs without a lower validation loss, or at the epochs
    ``milestones`` (``[]``: never)."""

    depths: List[int] = limited(lambda: [0], low=0, min_items=1)
    factor: float = limited(10.0, low=0, open=True)
    patience: int = limited(3, low=0)
    milestones: Optional[List[int]] = limited(None, low=1)


@dataclass
class CifarConfig:
    """A CIFAR-10 classifier run of Table A.3 (paper Section 7; ``train_cifar.py``).

    ``model``: a registered classifier (``mantis.cifar``), ``model_kwargs`` overrides of its arguments;
    ``data_dir``: the CIFAR-10 python version (or its parent folder); ``batch_size`` per Horovod rank;
    ``betas``: Adam's (Appendix D); ``augment``: random horizontal flip and 4-pixel pad-and-crop;
    ``out_dir``: the run directory (checkpoints, history, resolved config), of which the newest
    ``keep_checkpoints`` keep their parameters; ``max_steps_per_epoch`` caps training and validation
    steps, for quick runs.
    """

    model: str = "cifar_fractalresnet"
    model_kwargs: Dict[str, Any] = field(default_factory=dict)
    data_dir: str = "data/cifar10"
    batch_size: int = limited(64, low=1)
    epochs: int = limited(300, low=1)
    lr: float = limited(1e-3, low=0, open=True)
    optimizer: str = limited("adam", choices=CIFAR_OPTIMIZERS)
    betas: List[float] = limited(lambda: [0.9, 0.999], low=0, min_items=2, max_items=2)
    loss: str = limited("ce", choices=CIFAR_LOSSES)
    augment: bool = True
    schedule: CifarScheduleConfig = field(default_factory=CifarScheduleConfig)
    out_dir: str = "runs/cifar10"
    keep_checkpoints: Optional[int] = limited(1, low=1)
    seed: int = limited(0, low=0)
    max_steps_per_epoch: Optional[int] = limited(None, low=1)

    def check_values(self, source: str) -> None:
        """What the fields' types and limits cannot say alone: depths need the FT loss."""
        if self.loss == "ce" and any(self.schedule.depths):
            raise InputError(f"config {source}: schedule.depths > 0 need loss 'ft' (cross entropy has no depth)")


AnyConfig = TypeVar("AnyConfig", Config, CifarConfig)


def _float(value: Any) -> float:
    """A finite number; strings too, since YAML 1.1 reads ``1e-3`` (no dot) as a string."""
    number = float(value) if isinstance(value, (numbers.Real, str)) and not isinstance(value, bool) else math.nan
    if not math.isfinite(number):
        raise ValueError(value)
    return number


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(value)
    return int(value)


def _instance(kind: type):
    def convert(value: Any) -> Any:
        if not isinstance(value, kind):
            raise ValueError(value)
        return value
    return convert


class _Scalar(NamedTuple):
    one: str  # what a value must be, in words
    many: str  # what the items of a list must be
    convert: Callable[[Any], Any]  # the value as the type; ValueError when it is not one


_SCALARS = {int: _Scalar("an integer", "integers", _int), float: _Scalar("a finite number", "finite numbers", _float),
            str: _Scalar("a string", "strings", _instance(str)), bool: _Scalar("true or false", "true or false",
                                                                              _instance(bool))}


def _convert(value: Any, hint: Any, key: str, source: str) -> Any:
    """``value`` as the annotation ``hint`` (Optional, List and Dict of the scalars), or an InputError."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Union and type(None) in args:
        if value is None:
            return None
        [hint] = [a for a in args if a is not type(None)]
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if origin is dict:
        if not isinstance(value, dict):
            raise InputError(f"config {source}: {key} must be a mapping, got {value!r}")
        return value
    scalar = _SCALARS[args[0] if origin is list else hint]
    try:
        if origin is list:
            if not isinstance(value, list):
                raise ValueError(value)
            return [scalar.convert(v) for v in value]
        return scalar.convert(value)
    except ValueError:
        words = f"a list of {scalar.many}" if origin is list else scalar.one
        raise InputError(f"config {source}: {key} must be {words}, got {value!r}") from None


def _check_limits(value: Any, limits: Optional[Limits], key: str, source: str) -> None:
    if limits is None or value is None:
        return
    items = value if isinstance(value, list) else [value]
    if isinstance(value, list) and len(value) < limits.min_items:
        raise InputError(f"config {source}: {key} needs at least {limits.min_items} item(s), got {value!r}")
    if isinstance(value, list) and limits.max_items is not None and len(value) > limits.max_items:
        raise InputError(f"config {source}: {key} takes at most {limits.max_items} item(s), got {value!r}")
    for item in items:
        problem = limits.problem(item)
        if problem:
            what = "every item of " if isinstance(value, list) else ""
            raise InputError(f"config {source}: {what}{key} {problem}, got {value!r}")


def _build(cls, values: Dict[str, Any], where: str, source: str):
    if not isinstance(values, dict):
        raise InputError(f"config {source}: section '{where}' must be a mapping, got {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        prefix = f"{where}." if where else ""
        raise InputError(f"config {source}: unknown key '{prefix}{unknown[0]}' (known: {', '.join(sorted(fields))})")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in values.items():
        key = f"{where}.{name}" if where else name
        if dataclasses.is_dataclass(hints[name]):
            kwargs[name] = _build(hints[name], value or {}, key, source)
        else:
            kwargs[name] = _convert(value, hints[name], key, source)
            _check_limits(kwargs[name], fields[name].metadata.get("limits"), key, source)
    return cls(**kwargs)


def _yaml_problem(err: yaml.YAMLError) -> str:
    """PyYAML's reason and where (1-based line and column), in one line."""
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return " ".join(f"{problem}{where}".split())


def load_config(path: Union[str, Path], schema: Type[AnyConfig] = Config) -> AnyConfig:
    """Read and validate a YAML config of ``schema`` (:class:`Config` or :class:`CifarConfig`); raise
    :class:`InputError` naming the file and the problem."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise InputError(f"cannot read config {path}: {err.strerror}") from None
    try:
        values = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise InputError(f"config {path} is not valid YAML: {_yaml_problem(err)}") from None
    config = _build(schema, values, "", str(path))
    config.check_values(str(path))
    return config


def _check_run_dir(run_dir: Path, key: str, source: str) -> None:
    """``run_dir`` (the config's ``key``) is a folder or can be made one, and files can be created in it: no
    file where a folder must be, no read-only file system or folder without write permission."""
    for folder in (run_dir, *run_dir.parents):
        if folder.exists():
            if not folder.is_dir():
                where = "is a file" if folder == run_dir else f"lies under {folder}, which is a file"
                raise InputError(f"config {source}: {key} {run_dir} {where}")
            break
    try:
        writable_folder(run_dir, key)
    except InputError as err:
        raise InputError(f"config {source}: {err}") from None


def _registered_model(name: str, args: Dict[str, Any], keys: Tuple[str, str], source: str) -> Any:
    """The registered model ``name`` built with ``args``; ``keys``: the config keys of the name and the
    arguments, for the messages."""
    from mantis.registry import get_model, list_models, model_parameters  # MXNet: not needed by load_config

    name_key, args_key = keys
    if name.lower() not in list_models():
        raise InputError(f"config {source}: unknown {name_key} '{name}' (registered: {', '.join(list_models())})")
    known = model_parameters(name)
    unknown = sorted(set(args) - set(known))
    if unknown:
        raise InputError(f"config {source}: unknown key '{args_key}.{unknown[0]}' for {name} "
                         f"(known: {', '.join(sorted(known))})")
    try:
        return get_model(name, **args)
    except (TypeError, ValueError) as err:
        raise InputError(f"config {source}: {args_key} of {name}: {err}") from None


def _check_schedule(section: str, source: str, lr: float, depths: List[int], factor: float, **kwargs: Any) -> None:
    try:
        EvolvingLossSchedule.from_depths(lr, depths, factor=factor, **kwargs)
    except ValueError as err:
        raise InputError(f"config {source}: {section}: {err}") from None


def _check_model(config: Config, source: str) -> None:
    """A registered change-detection model, arguments its constructor takes, chips it can read."""
    model = config.model
    net = _registered_model(model.name, model.args, ("model.name", "model.args"), source)
    multiple = getattr(net, "size_multiple", None)
    if multiple is None:
        raise InputError(f"config {source}: model.name '{model.name}' is not a change-detection model")
    if config.data.chip_size % multiple:
        lower = config.data.chip_size - config.data.chip_size % multiple
        use = f"{lower} or {lower + multiple}" if lower else f"{multiple}"
        raise InputError(f"config {source}: data.chip_size {config.data.chip_size} is not a multiple of {multiple}, "
                         f"which {model.name} needs (use {use})")


def _check_levir(config: Config, source: str) -> None:
    _check_run_dir(Path(config.output.run_dir), "output.run_dir", source)
    train = config.train
    _check_schedule("train", source, train.lr, train.depths, train.lr_factor, patience=train.patience,
                    milestones=train.milestones, final_stage_epochs=train.final_stage_epochs)
    try:
        ChangeAugmentation(config.augment.policy, **config.augment.args)
    except (TypeError, ValueError) as err:
        raise InputError(f"config {source}: augment.args: {err}") from None
    _check_model(config, source)


def _check_cifar(config: CifarConfig, source: str) -> None:
    _check_run_dir(Path(config.out_dir), "out_dir", source)
    schedule = config.schedule
    _check_schedule("schedule", source, config.lr, schedule.depths, schedule.factor, patience=schedule.patience,
                    milestones=schedule.milestones)
    net = _registered_model(config.model, config.model_kwargs, ("model", "model_kwargs"), source)
    if getattr(net, "size_multiple", None) is not None:
        raise InputError(f"config {source}: model '{config.model}' is a change-detection model, not a CIFAR-10 "
                         "classifier")


#: the checks of :func:`check_config` per schema
_CHECKS: Dict[type, Callable[[Any, str], None]] = {Config: _check_levir, CifarConfig: _check_cifar}


def check_config(config: Union[Config, CifarConfig], source: str) -> None:
    """What :func:`load_config` cannot check alone, before any data are read: the model (registered, its
    arguments; for :class:`Config` the chip size a multiple of its ``size_multiple``), the evolving-loss
    schedule, the augmentation arguments (:class:`Config`) and a run directory that can be created.
    ``source``: the config file, for the messages.

    Raises
    ------
    InputError
        One line naming the config key and the problem.
    """
    _CHECKS[type(config)](config, source)


def config_to_dict(config: Union[Config, CifarConfig]) -> Dict[str, Any]:
    return dataclasses.asdict(config)


#: per schema, the keys whose values a resumed run may change: where the files are, how long the run goes
#: on, how it is watched, its memory and speed. Any other key changes what the run computes or trains on
#: (the loss, the chips, the schedule, the model, the augmentation, the steps per epoch), and a resumed run
#: would go on with other mathematics or data than its checkpoints (e.g. a validation loss of another
#: definition from one epoch to the next): :func:`resume_changes` refuses it.
RESUMABLE_KEYS: Dict[type, Tuple[str, ...]] = {
    Config: ("data.root", "data.date1", "data.date2", "data.label", "data.val_date1", "data.val_date2",
             "data.val_label", "data.cache_dir", "data.num_workers", "model.hybridize", "train.max_epochs",
             "train.stall_timeout_s", "train.memory_saving", "output.run_dir", "output.keep_checkpoints"),
    CifarConfig: ("data_dir", "out_dir", "epochs", "keep_checkpoints"),
}
#: keys a resumed run may change in some runs only: ``train.batch_size`` (chips per pass) where a global batch
#: fixes every update whatever the passes
RESUMABLE_WHEN: Dict[str, Callable[[Any], bool]] = {
    "train.batch_size": lambda config: config.train.global_batch is not None,
}
_ABSENT = object()


def _values(config: Any, prefix: str = "") -> Dict[str, Any]:
    """The values of a config by dotted key (``train.loss_axis``); a mapping-valued key (``model.args``) is one."""
    values: Dict[str, Any] = {}
    for item in dataclasses.fields(config):
        value = getattr(config, item.name)
        if dataclasses.is_dataclass(value):
            values.update(_values(value, f"{prefix}{item.name}."))
        else:
            values[f"{prefix}{item.name}"] = value
    return values


def _saved_value(saved: Dict[str, Any], key: str) -> Any:
    for name in key.split("."):
        if not isinstance(saved, dict) or name not in saved:
            return _ABSENT
        saved = saved[name]
    return saved


def _changed(items: List[Tuple[str, Any, Any]]) -> str:
    return ", ".join(f"{key} {before!r} -> {now!r}" for key, before, now in items)


def resume_changes(config: Union[Config, CifarConfig], saved: Dict[str, Any], source: str,
                   checkpoint: Union[str, Path]) -> List[str]:
    """The keys of ``config`` whose values differ from ``saved``, the resolved config recorded in the
    ``checkpoint`` a run resumes from, as ``"key before -> now"``; only :data:`RESUMABLE_KEYS` (and
    :data:`RESUMABLE_WHEN` where it says so) may differ.
    Keys that ``saved`` lacks (written before they existed) are not compared.

    Raises
    ------
    InputError
        Any other key differs: one line listing every such key with both values.
    """
    changed = [(key, before, now) for key, now in _values(config).items()
               if (before := _saved_value(saved, key)) is not _ABSENT and before != now]
    refused = [item for item in changed if item[0] not in RESUMABLE_KEYS[type(config)]
               and not (item[0] in RESUMABLE_WHEN and RESUMABLE_WHEN[item[0]](config))]
    if refused:
        raise InputError(f"config {source}: --resume would change {_changed(refused)} from the run's checkpoint "
                         f"{checkpoint}, which changes what the run computes or trains on: set them back, or start "
                         "a new run in another run_dir")
    return [_changed([item]) for item in changed]


def save_config(config: Union[Config, CifarConfig], path: Union[str, Path]) -> None:
    """Write the resolved config (defaults filled in) as YAML, atomically."""
    atomic_write_text(path, yaml.safe_dump(config_to_dict(config), sort_keys=False))
