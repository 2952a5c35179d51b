"""Trained models for inference: a checkpoint, a run's latest checkpoint, or an ensemble of
checkpoints (paper Section 8.5.2: the Pareto-front models are used by averaging their outputs).

A *model spec* is one of

- a checkpoint's ``epoch_NNNN.params`` or ``epoch_NNNN.json`` (from ``train.py``),
- a run directory (its latest checkpoint),
- an ensemble file (``select_models.py`` writes one): JSON ``{"members": [checkpoint paths], "mode":
  "outputs" | "parameters"}``; ``outputs`` averages the members' output probabilities (the paper's
  way, k forward passes), ``parameters`` averages their parameters into one model (one pass).

:func:`load_predictor` turns a spec into a :class:`Predictor`: raw date images in (the bands the
model was trained on, in their file values), the three head outputs out, standardised with the
training chips' per-band mean/std stored in the checkpoint.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple, Union

import nn  # noqa: F401  (sets MXNet's OpenMP threads first)

import mxnet as mx
import numpy as np
from mxnet import gluon

from mantis import get_model
from utilities.artifacts.checkpoint import CheckpointRecord, load_parameters
from utilities.errors import InputError

PathLike = Union[str, Path]


def checkpoint_record(path: PathLike) -> Tuple[CheckpointRecord, Path]:
    """The record and the parameters file of a checkpoint given as .params, .json or run dir."""
    path = Path(path)
    if path.is_dir():
        latest = path / "checkpoints" / "latest.json"
        if not latest.exists():
            raise InputError(f"run directory {path} has no checkpoint (no checkpoints/latest.json)")
        path = latest
    record_path = path.with_suffix(".json") if path.suffix == ".params" else path
    if not path.exists():
        raise InputError(f"checkpoint {path} does not exist")
    if not record_path.exists():
        raise InputError(f"checkpoint {path} has no record {record_path.name} beside it (written by train.py)")
    record = CheckpointRecord.read(record_path)
    return record, record_path.parent / record.params


def load_network(path: PathLike, ctx: mx.Context = mx.cpu()) -> Tuple[gluon.HybridBlock, CheckpointRecord]:
    """The network of a checkpoint (architecture from its record, then its parameters)."""
    record, params = checkpoint_record(path)
    net = get_model(record.model, **record.model_args)
    net.initialize(ctx=ctx)  # deferred; the parameters below fix every shape
    load_parameters(net, params, record.params_sha256)
    return net, record


def average_parameters(nets: Sequence[gluon.Block]) -> None:
    """Replace the first network's parameters by the mean of all networks' (same architecture)."""
    first = list(nets[0].collect_params().values())
    others = [list(n.collect_params().values()) for n in nets[1:]]
    for i, param in enumerate(first):
        total = param.data().copy()
        for params in others:
            total += params[i].data()
        param.set_data(total / len(nets))


class EnsembleMean(gluon.HybridBlock):
    """The mean of its member networks' outputs, output by output (paper Section 8.5.2: the Pareto-front
    models are used by averaging their predictions); hybridizes, and exports to ONNX, as one graph."""

    def __init__(self, members: Sequence[gluon.HybridBlock], **kwargs):
        super().__init__(**kwargs)
        self.members = list(members)
        for member in self.members:
            self.register_child(member)

    @property
    def size_multiple(self) -> int:
        return getattr(self.members[0], "size_multiple", 1)

    def hybrid_forward(self, F, date1, date2):
        results = [member(date1, date2) for member in self.members]
        return tuple(F.add_n(*outputs) / len(results) for outputs in zip(*results))


class Predictor:
    """Maps raw date images ``(B, C, H, W)`` to ``(segmentation, boundary, distance)`` numpy arrays.

    The images are standardised with the training chips' per-band mean/std; pixels without data (NaN)
    are given the band's training mean, a neutral input (0 once standardised), so that they disturb the
    valid pixels around them as little as possible (callers mask them out of the outputs). Several networks
    run as one :class:`EnsembleMean`.

    Attributes
    ----------
    network : gluon.HybridBlock
        The network that runs: the one network, or the :class:`EnsembleMean` of several.
    members : int
        The number of networks averaged.
    dtype : str or None
        The data type of the training images (e.g. ``"uint8"``); None when the checkpoint does not say.
    """

    def __init__(self, nets: List[gluon.HybridBlock], mean: Sequence[float], std: Sequence[float],
                 bands: Sequence[int] | None = None, ctx: mx.Context = mx.cpu(), dtype: str | None = None):
        self.network = nets[0] if len(nets) == 1 else EnsembleMean(nets)
        self.members, self.ctx, self.bands, self.dtype = len(nets), ctx, bands, dtype
        std = np.asarray(std, dtype=np.float32)
        self.mean = np.asarray(mean, dtype=np.float32)[None, :, None, None]
        self.std = np.where(std > 0, std, 1.0).astype(np.float32)[None, :, None, None]
        self.network.hybridize()

    @property
    def channels(self) -> int:
        return self.mean.shape[1]

    @property
    def size_multiple(self) -> int:
        return getattr(self.network, "size_multiple", 1)

    def standardise(self, date: np.ndarray) -> np.ndarray:
        """``(date - mean) / std`` per band, float32, with 0 (the band's mean) where the pixel is NaN."""
        standardised = (date.astype(np.float32) - self.mean) / self.std
        return np.where(np.isnan(standardised), np.float32(0), standardised)

    def __call__(self, date1: np.ndarray, date2: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        dates = (mx.nd.array(self.standardise(date), ctx=self.ctx) for date in (date1, date2))
        return tuple(output.asnumpy() for output in self.network(*dates))


def _ensemble(spec: Dict[str, Any], base: Path, ctx: mx.Context) -> Predictor:
    members = [base / m if not Path(m).is_absolute() else Path(m) for m in spec.get("members", [])]
    if not members:
        raise InputError(f"ensemble {base} lists no members")
    mode = spec.get("mode", "outputs")
    if mode not in ("outputs", "parameters"):
        raise InputError(f"ensemble mode must be 'outputs' or 'parameters', got {mode!r}")
    loaded = [load_network(m, ctx) for m in members]
    records = [r for _, r in loaded]
    if len({(r.model, json.dumps(r.model_args, sort_keys=True)) for r in records}) > 1:
        raise InputError(f"ensemble members are different architectures: {[r.model for r in records]}")
    nets = [n for n, _ in loaded]
    if mode == "parameters":
        average_parameters(nets)
        nets = nets[:1]
    norm = records[0].normalization or {}
    return Predictor(nets, norm.get("mean", []), norm.get("std", []), records[0].bands, ctx, norm.get("dtype"))


def ensemble_spec(spec: PathLike) -> Union[Dict[str, Any], None]:
    """The content of ``spec`` when it is an ensemble file (a JSON file with ``members``), else None.

    Raises
    ------
    InputError
        ``spec`` is a ``.json`` file that is not valid JSON.
    """
    spec = Path(spec)
    if not (spec.is_file() and spec.suffix == ".json"):
        return None
    try:
        content = json.loads(spec.read_text())
    except json.JSONDecodeError:
        raise InputError(f"model file {spec} is not valid JSON") from None
    return content if "members" in content else None


def load_predictor(spec: PathLike, ctx: mx.Context = mx.cpu()) -> Predictor:
    """A :class:`Predictor` from a model spec (see the module docstring)."""
    spec = Path(spec)
    ensemble = ensemble_spec(spec)
    if ensemble is not None:
        return _ensemble(ensemble, spec.parent, ctx)
    net, record = load_network(spec, ctx)
    norm = record.normalization
    if not norm:
        raise InputError(f"checkpoint {spec} has no input normalization (written by an older train.py)")
    return Predictor([net], norm["mean"], norm["std"], record.bands, ctx, norm.get("dtype"))
