"""Model cards: a STAC item with the Machine Learning Model (MLM) extension beside every trained model file.

The card of a checkpoint record ``epoch_NNNN.json``, an ensemble file ``ensemble.json`` or an ONNX file
``model.onnx`` is ``epoch_NNNN.stac.json``, ``ensemble.stac.json``, ``model.stac.json`` (:func:`card_path`):
a STAC 1.0 item (no geometry: the model is not tied to a place) whose properties follow the MLM extension
v1.4 (``mlm:name``, ``mlm:architecture``, ``mlm:tasks``, ``mlm:framework``, ``mlm:input``, ``mlm:output``, ...):

- inputs ``date1`` and ``date2`` (date 1 the earlier image): the raster bands read, in their order (1-based
  indices of the files; the files' own bands when the record names none; the band names, reference band and
  resampling of a model trained on band files), standardised per band with the
  training chips' mean and standard deviation (``value_scaling`` of type ``z-score``), shape
  ``(batch, bands, height, width)`` with height and width multiples of the model's ``size_multiple``
  (any size, -1, for the MXNet model; the exported size for ONNX);
- outputs ``segmentation`` (softmax over no change / change), ``boundary`` (the probability of lying on each
  class's boundary) and ``distance`` (each class's normalised distance transform), ``(batch, 2, height, width)``;
- the framework (MXNet 1.9.1, or ONNX for the exported file), the parameter count, and in
  ``mlm:hyperparameters`` mantis's own settings: fidelity (``paper`` / ``authors``), model and arguments,
  epoch, FT depth, training chip size, the inference windows predict.py uses by default, ensemble members.

The stac-model package is not used: its releases need pip >= 25 and pydantic, which the pinned environment does
not hold; the item is plain JSON written here.
"""
from __future__ import annotations

import datetime
import json
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import nn  # noqa: F401  (sets MXNet's OpenMP threads first)

import mxnet as mx

from mantis import get_model
from utilities.artifacts.checkpoint import CheckpointRecord
from utilities.artifacts.model_io import checkpoint_record, ensemble_spec
from utilities.atomic import atomic_write_text
from utilities.errors import InputError

PathLike = Union[str, os.PathLike]

CARD_SUFFIX = ".stac.json"
MLM_SCHEMA = "https://stac-extensions.github.io/mlm/v1.4.0/schema.json"
CLASSIFICATION_SCHEMA = "https://stac-extensions.github.io/classification/v2.0.0/schema.json"
FILE_SCHEMA = "https://stac-extensions.github.io/file/v2.1.0/schema.json"
#: the architecture of each registered model family (its name's prefix)
ARCHITECTURES = {"ceecnetv1": "CEECNet V1", "ceecnetv2": "CEECNet V2", "fractalresnet": "FracTAL ResNet"}
#: predict.py's defaults (paper Section 8.5.1), recorded for the inference the card describes
INFERENCE = {"window": 256, "stride": 64, "threshold": 0.5, "batch_size": 4}
CLASSES = [{"value": 0, "name": "no-change", "description": "no change between the dates", "color_hint": "000000"},
           {"value": 1, "name": "change", "description": "change between the dates", "color_hint": "FF00FF"}]
_OUTPUTS = {
    "segmentation": ("semantic-segmentation", "per-class probabilities (softmax over the classes): class 1 is "
                     "change; predict.py's change_probability.tif and change_mask.tif come from it"),
    "boundary": ("semantic-segmentation", "per-class probability that a pixel lies on the boundary of that "
                 "class's regions (the multitask head, paper Section 6.3); predict.py's boundary.tif is class 1"),
    "distance": ("regression", "per-class distance transform of the class's regions, normalised to [0, 1] "
                 "(the multitask head, paper Section 6.3); predict.py's distance.tif is class 1"),
}


def card_path(path: PathLike) -> Path:
    """The card beside a model file: ``<stem>.stac.json``."""
    path = Path(path)
    return path.with_name(path.name.split(".")[0] + CARD_SUFFIX)


def spec_members(spec: PathLike) -> Tuple[List[Tuple[CheckpointRecord, Path]], Optional[str]]:
    """``([(record, params file)], ensemble mode or None)`` of a model spec (checkpoint, run directory or
    ensemble file, as :func:`~utilities.artifacts.model_io.load_predictor` takes)."""
    spec = Path(spec)
    content = ensemble_spec(spec)
    if content is not None:
        members = [Path(m) if Path(m).is_absolute() else spec.parent / m for m in content["members"]]
        return [checkpoint_record(m) for m in members], content.get("mode", "outputs")
    return [checkpoint_record(spec)], None


def count_parameters(params: PathLike) -> int:
    """The number of values in a Gluon parameters file."""
    return int(sum(array.size for array in mx.nd.load(str(params)).values()))


def _architecture(model: str) -> str:
    return next((name for prefix, name in ARCHITECTURES.items() if model.startswith(prefix)), model)


def _fidelity(record: CheckpointRecord) -> str:
    return record.model_args.get("fidelity") or record.config.get("fidelity") or "paper"


def _inputs(record: CheckpointRecord, shape: List[int]) -> List[Dict[str, Any]]:
    norm = record.normalization or {}
    mean, std = norm.get("mean", []), norm.get("std", [])
    inputs = record.band_inputs
    if inputs:  # dates of band files (utilities.raster.bands): the bands by name
        names = list(inputs["names"])
        where = (f"the bands {', '.join(names)} in this order, on the grid of {inputs.get('reference') or 'the finest'}"
                 f" band ({inputs.get('resampling') or 'bilinear'} resampling of the others)")
    else:
        bands = record.bands or list(range(1, len(mean) + 1))
        names = [f"band_{b}" for b in bands]
        where = "the raster's bands " + ", ".join(map(str, bands)) + " (1-based) in this order"
    scaling = [{"type": "z-score", "mean": float(m), "stddev": float(s)} for m, s in zip(mean, std)]
    return [{"name": name, "bands": names,
             "input": {"shape": shape, "dim_order": ["batch", "channel", "height", "width"], "data_type": "float32"},
             "value_scaling": scaling, "resize_type": None,
             "description": f"{when}: {where}, each standardised as (value - mean) / stddev; pixels without "
                            f"data are given the band's mean (0 once standardised) and masked out of the outputs"}
            for name, when in (("date1", "the earlier image"), ("date2", "the later image"))]


def _outputs(shape: List[int]) -> List[Dict[str, Any]]:
    return [{"name": name, "tasks": [task], "description": description,
             "result": {"shape": shape, "dim_order": ["batch", "class", "height", "width"], "data_type": "float32"},
             "classification:classes": CLASSES, "post_processing_function": None}
            for name, (task, description) in _OUTPUTS.items()]


def model_card(members: Sequence[Tuple[CheckpointRecord, Path]], mode: Optional[str], item_id: str,
               assets: Dict[str, Dict[str, Any]], parameters: Optional[int] = None,
               input_shape: Optional[Sequence[int]] = None, framework: Tuple[str, str] = ("MXNet", mx.__version__),
               extra: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """The STAC MLM item of a model (module docstring).

    Parameters
    ----------
    members : sequence of (CheckpointRecord, Path)
        The checkpoints (one, or an ensemble's members) and their parameters files (:func:`spec_members`).
    mode : {"outputs", "parameters"} or None
        The ensemble's mode, None for one checkpoint.
    item_id : str
        The item's ``id`` and ``mlm:name``.
    assets : dict
        The item's assets (the model file with the role ``mlm:model``, ...).
    parameters : int, optional
        The parameter count of the model as it runs (default: counted from the parameters files).
    input_shape : sequence of int, optional
        ``(batch, bands, height, width)`` of a fixed-size model (ONNX); default any batch and size (-1).
    framework : (str, str)
        ``mlm:framework`` and ``mlm:framework_version``.
    extra : dict, optional
        Further ``mlm:hyperparameters``.
    """
    record = members[0][0]
    if record.normalization is None:
        raise InputError(f"checkpoint of {record.model} epoch {record.epoch} has no input normalization: it is not "
                         f"a change-detection model with a model card")
    channels = len(record.normalization["mean"])
    size_multiple = getattr(get_model(record.model, **record.model_args), "size_multiple", 1)
    shape = list(input_shape) if input_shape is not None else [-1, channels, -1, -1]
    if parameters is None:
        single = count_parameters(members[0][1])
        parameters = single * (len(members) if mode == "outputs" else 1)
    hyper = {"fidelity": _fidelity(record), "model": record.model, "model_args": record.model_args,
             "epochs": [r.epoch for r, _ in members], "ft_depth": record.metrics.get("depth"),
             "size_multiple": size_multiple, "training_chip_size": record.config.get("data", {}).get("chip_size"),
             "inference": INFERENCE, **({"ensemble": {"members": len(members), "mode": mode}} if mode else {}),
             **(extra or {})}
    fidelity = hyper["fidelity"]
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    properties = {
        "datetime": now,
        "description": f"mantis change detection (Diakogiannis et al. 2021): {_architecture(record.model)}, "
                       f"{record.model}, {fidelity} fidelity"
                       + (f", an ensemble of {len(members)} checkpoints ({mode} averaged)" if mode else
                          f", epoch {record.epoch}"),
        "mlm:name": item_id,
        "mlm:architecture": _architecture(record.model),
        "mlm:tasks": ["semantic-segmentation", "regression"],
        "mlm:framework": framework[0],
        "mlm:framework_version": framework[1],
        "mlm:total_parameters": int(parameters),
        "mlm:pretrained": False,
        "mlm:pretrained_source": None,
        "mlm:batch_size_suggestion": INFERENCE["batch_size"],
        "mlm:accelerator": None,
        "mlm:accelerator_constrained": False,
        "mlm:input": _inputs(record, shape),
        "mlm:output": _outputs([shape[0], 2, shape[2], shape[3]]),
        "mlm:hyperparameters": hyper,
    }
    return {"type": "Feature", "stac_version": "1.0.0",
            "stac_extensions": [MLM_SCHEMA, CLASSIFICATION_SCHEMA, FILE_SCHEMA], "id": item_id, "geometry": None,
            "properties": properties, "links": [], "assets": assets}


def _relative(path: Path, folder: Path) -> str:
    return os.path.relpath(path, folder)


def _weights(members: Sequence[Tuple[CheckpointRecord, Path]], folder: Path) -> Dict[str, Dict[str, Any]]:
    return {f"weights_{i}" if len(members) > 1 else "weights": {
        "href": _relative(params, folder), "type": "application/octet-stream; framework=mxnet",
        "title": f"{record.model} epoch {record.epoch} parameters (Gluon save_parameters)",
        "roles": ["mlm:weights", "weights"], "mlm:artifact_type": "mxnet.gluon.Block.save_parameters",
        **({"file:checksum": "1220" + record.params_sha256} if record.params_sha256 else {})}
        for i, (record, params) in enumerate(members)}


def write_card(path: PathLike, card: Dict[str, Any]) -> Path:
    """Write ``card`` as JSON to ``path``, atomically; returns ``path``."""
    atomic_write_text(path, json.dumps(card, indent=2) + "\n")
    return Path(path)


def spec_card(model_file: PathLike, members: Sequence[Tuple[CheckpointRecord, Path]], mode: Optional[str],
              parameters: Optional[int] = None) -> Dict[str, Any]:
    """The card of a checkpoint record or an ensemble file ``model_file`` (its ``mlm:model`` asset) whose
    checkpoints are ``members`` (:func:`spec_members`; the parameters files are its weights, with their SHA-256
    as ``file:checksum``); ``mode``, ``parameters``: as for :func:`model_card`."""
    model_file = Path(model_file)
    record = members[0][0]
    model = {"href": model_file.name, "type": "application/json", "roles": ["mlm:model", "model", "metadata"],
             "mlm:artifact_type": "mantis.ensemble" if mode else "mantis.checkpoint",
             "title": "mantis ensemble file (predict.py --model)" if mode else
                      "mantis checkpoint record (predict.py --model): architecture, arguments, normalization"}
    item_id = f"{record.model}-{model_file.stem}" if mode else f"{record.model}-epoch_{record.epoch:04d}"
    return model_card(members, mode, item_id, {"model": model, **_weights(members, model_file.parent)}, parameters)


def write_spec_card(spec: PathLike, parameters: Optional[int] = None) -> Path:
    """Write the card (:func:`spec_card`) of a checkpoint or an ensemble file ``spec`` beside its record or the
    ensemble file (:func:`card_path`); returns the card's path."""
    members, mode = spec_members(spec)
    model_file = Path(spec) if mode else members[0][1].with_suffix(".json")  # a checkpoint: its record
    return write_card(card_path(model_file), spec_card(model_file, members, mode, parameters))


def onnx_metadata(card: Dict[str, Any]) -> Dict[str, str]:
    """The ONNX file's metadata (``metadata_props``) from its card: what running it needs, one key each (bands
    and their order, normalisation, input shape, outputs and their meaning, framework, fidelity), and the whole
    card as ``stac_mlm_item``."""
    properties = card["properties"]
    first = properties["mlm:input"][0]
    hyper = properties["mlm:hyperparameters"]
    return {
        "mlm:name": properties["mlm:name"], "mlm:architecture": properties["mlm:architecture"],
        "inputs": ",".join(i["name"] for i in properties["mlm:input"]),
        "bands": json.dumps(first["bands"]),
        "mean": json.dumps([s["mean"] for s in first["value_scaling"]]),
        "std": json.dumps([s["stddev"] for s in first["value_scaling"]]),
        "normalization": "(value - mean) / std per band, band-first float32; pixels without data: the band's mean",
        "input_shape": json.dumps(first["input"]["shape"]),
        "outputs": json.dumps({o["name"]: o["description"] for o in properties["mlm:output"]}),
        "classes": json.dumps({c["value"]: c["name"] for c in CLASSES}),
        "framework": f"{properties['mlm:framework']} {properties['mlm:framework_version']}, trained with "
                     f"{hyper.get('trained_with', 'MXNet ' + mx.__version__)}",
        "fidelity": hyper["fidelity"],
        "stac_mlm_item": json.dumps(card),
    }
