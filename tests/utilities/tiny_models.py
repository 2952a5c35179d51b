"""Tiny trained-looking checkpoints for the evaluation, selection and export tests.

Networks come from the model registry (``get_model``) with random parameters and are saved through
:class:`utilities.artifacts.checkpoint.Checkpoints` with the
:class:`~utilities.artifacts.checkpoint.CheckpointRecord` that ``train.py`` writes (model, model_args,
normalization, bands, metrics), so that ``load_predictor`` reads them like real checkpoints.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional

import nn  # noqa: F401

import mxnet as mx
from mxnet import gluon

from mantis import get_model
from utilities.artifacts.checkpoint import CheckpointRecord, Checkpoints

#: per-band mean/std of 8-bit RGB images
NORMALIZATION = {"mean": [110.0, 115.0, 100.0], "std": [50.0, 48.0, 52.0]}


def tiny_network(name: str = "fractalresnet_tiny", seed: int = 0) -> gluon.HybridBlock:
    """A tiny registered model with random parameters (all shapes known)."""
    mx.random.seed(seed)
    net = get_model(name)
    net.initialize(mx.init.Xavier())
    x = mx.nd.zeros((1, len(NORMALIZATION["mean"]), net.size_multiple, net.size_multiple))
    net(x, x)
    return net


def save_checkpoint(run_dir: Path, net: gluon.HybridBlock, epoch: int, name: str = "fractalresnet_tiny",
                    metrics: Optional[Dict[str, Any]] = None) -> Path:
    """Save ``net`` as checkpoint ``epoch`` of ``run_dir``; returns its ``.params`` path."""
    record = CheckpointRecord(name, epoch, normalization=NORMALIZATION,
                              metrics=metrics or {"depth": 0, "val_mcc": 0.5, "val_ft": 0.5})
    return Checkpoints(run_dir).save(record, net, None)
