"""Tiled inference with an exported ONNX model in ONNX Runtime: the ``onnx`` engine of ``predict.py``.

:class:`OnnxPredictor` has the interface of :class:`~utilities.artifacts.model_io.Predictor` that tiled
inference uses (``channels``, ``size_multiple``, ``bands``, ``mean``/``std``, ``standardise`` and
``predictor(date1, date2) -> (segmentation, boundary, distance)``), so the windows, reflect padding,
averaging and nodata handling of :mod:`utilities.inference.tiled` are the same code for both engines;
only the forward pass differs. It runs a file of :func:`utilities.artifacts.export.export_onnx` (a single
model or an ensemble graph), standardising the dates with the normalization written beside it.

The exported graph has a fixed input shape ``(batch, C, size, size)``: windows must be ``size`` pixels
and a call with another number of windows runs in chunks of ``batch``, the last one filled up with zeros
(their outputs dropped). :func:`onnx_model` exports a checkpoint, run directory or ensemble file once
for a window and batch size and keeps the file in a cache, keyed by the network's architecture and
parameters, so that the tasks of a job array share one export.

Execution providers: the first of :data:`PROVIDERS` that the installed ONNX Runtime offers, then the CPU.
The ``onnxruntime`` package runs on CPUs; ``onnxruntime-gpu`` adds CUDA and TensorRT, which run the
exported models on GPUs that MXNet 1.9 has no code for (sm_90 and later). The CPU provider runs
``OMP_NUM_THREADS`` threads, the number MXNet uses (:mod:`nn.threads`).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import onnxruntime

from utilities.artifacts.export import INPUT_NAMES, OUTPUT_NAMES, export_onnx, network_symbol, normalization_path
from utilities.artifacts.model_io import Predictor, load_predictor
from utilities.errors import InputError

PathLike = Union[str, Path]
#: execution providers in order of preference, used when the installed ONNX Runtime has them
PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
#: where exported models are kept (``MANTIS_ONNX_CACHE`` overrides)
DEFAULT_CACHE = Path.home() / ".cache" / "mantis" / "onnx"


def providers(available: Optional[Sequence[str]] = None) -> List[str]:
    """The providers of :data:`PROVIDERS` that ONNX Runtime offers (``available``, default: the installed
    one's), in that order."""
    available = onnxruntime.get_available_providers() if available is None else available
    return [p for p in PROVIDERS if p in available]


class OnnxPredictor:
    """Maps raw date images ``(B, C, H, W)`` to ``(segmentation, boundary, distance)`` with an ONNX file.

    Parameters
    ----------
    path : path
        An ``.onnx`` file of :func:`~utilities.artifacts.export.export_onnx`, with its ``<name>.json``.
    threads : int, optional
        Threads of the CPU provider (default ``OMP_NUM_THREADS``).

    Attributes
    ----------
    batch, size : int
        The graph's fixed number of windows per run and window side.
    providers : list of str
        The execution providers of the session.
    """

    # the standardisation is the MXNet predictor's own (the same per-band mean/std, NaN -> the band's mean)
    standardise = Predictor.standardise
    channels = Predictor.channels

    def __init__(self, path: PathLike, threads: Optional[int] = None):
        path = Path(path)
        norm_path = normalization_path(path)
        if not path.is_file():
            raise InputError(f"ONNX model {path} does not exist")
        try:
            norm = json.loads(norm_path.read_text())
            mean, std = norm["mean"], norm["std"]
        except (OSError, ValueError, KeyError) as err:
            raise InputError(f"ONNX model {path} needs the normalization {norm_path} that export.py writes "
                             f"beside it ({type(err).__name__}: {err})") from None
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # errors only
        options.intra_op_num_threads = threads or int(os.environ.get("OMP_NUM_THREADS", "0"))
        options.inter_op_num_threads = 1
        try:
            self.session = onnxruntime.InferenceSession(str(path), options, providers=providers())
        except Exception as err:  # onnxruntime raises its own Fail, InvalidProtobuf, ... (no common base)
            raise InputError(f"ONNX model {path} cannot be loaded by ONNX Runtime: {' '.join(str(err).split())}") \
                from None
        inputs = {i.name: i.shape for i in self.session.get_inputs()}
        outputs = [o.name for o in self.session.get_outputs()]
        if sorted(inputs) != sorted(INPUT_NAMES) or sorted(outputs) != sorted(OUTPUT_NAMES):
            raise InputError(f"ONNX model {path} has inputs {sorted(inputs)} and outputs {outputs}, not the "
                             f"{list(INPUT_NAMES)} and {list(OUTPUT_NAMES)} of a mantis export")
        self.batch, _, self.size, _ = inputs[INPUT_NAMES[0]]
        self.path, self.bands, self.dtype = path, norm.get("bands"), norm.get("dtype")
        self.members = norm.get("members", 1)
        std = np.asarray(std, dtype=np.float32)
        self.mean = np.asarray(mean, dtype=np.float32)[None, :, None, None]
        self.std = np.where(std > 0, std, 1.0).astype(np.float32)[None, :, None, None]
        self.providers = self.session.get_providers()

    @property
    def size_multiple(self) -> int:
        """Windows must be :attr:`size` pixels (the graph's fixed shape); :func:`check_window` is the caller's."""
        return self.size

    def check_window(self, window: int) -> None:
        """Raise :class:`InputError` unless ``window`` is the graph's input size."""
        if window != self.size:
            raise InputError(f"ONNX model {self.path} takes windows of {self.size} pixels, not {window}: predict "
                             f"with --window {self.size}, or export the model with --size {window}")

    def __call__(self, date1: np.ndarray, date2: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        dates = [self.standardise(date) for date in (date1, date2)]
        n = len(dates[0])
        results = []
        for start in range(0, n, self.batch):
            chunk = [d[start:start + self.batch] for d in dates]
            fill = self.batch - len(chunk[0])
            if fill:
                chunk = [np.concatenate([c, np.zeros((fill, *c.shape[1:]), np.float32)]) for c in chunk]
            outputs = self.session.run(list(OUTPUT_NAMES), dict(zip(INPUT_NAMES, chunk)))
            results.append([o[:self.batch - fill] for o in outputs])
        return tuple(np.concatenate(parts) if len(parts) > 1 else parts[0] for parts in zip(*results))


def model_key(predictor: Predictor, window: int, batch: int) -> str:
    """SHA-256 of what an export depends on: the network's operators and parameters, its normalization and
    bands, the window and batch size (not the names MXNet gave its layers, which vary between processes)."""
    symbol, params = network_symbol(predictor.network)
    nodes = [(node["op"], node.get("attrs", {})) for node in json.loads(symbol.tojson())["nodes"]]
    about = [nodes, window, batch, predictor.mean.ravel().tolist(), predictor.std.ravel().tolist(),
             predictor.bands, getattr(predictor, "dtype", None)]
    digest = hashlib.sha256(json.dumps(about, sort_keys=True, default=str).encode())
    for name in symbol.list_inputs():  # graph order
        if name in params:
            digest.update(params[name].asnumpy().tobytes())
    return digest.hexdigest()


def cache_folder() -> Path:
    return Path(os.environ.get("MANTIS_ONNX_CACHE") or DEFAULT_CACHE)


def onnx_model(spec: PathLike, window: int, batch: int) -> Path:
    """The ONNX file of a model spec (checkpoint, run directory or ensemble file) for windows of ``window``
    pixels in batches of ``batch``: from the cache, else exported there (with the export's parity check)."""
    key = model_key(load_predictor(spec), window, batch)
    path = cache_folder() / f"{key[:32]}_{window}_b{batch}.onnx"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        export_onnx(spec, path, size=window, batch=batch)
    return path


def load_onnx_predictor(spec: PathLike, window: int, batch: int) -> OnnxPredictor:
    """An :class:`OnnxPredictor` of ``spec``: an ``.onnx`` file as it is, anything else through
    :func:`onnx_model`; windows of ``window`` pixels are checked against the graph."""
    path = Path(spec) if Path(spec).suffix == ".onnx" else onnx_model(spec, window, batch)
    predictor = OnnxPredictor(path)
    predictor.check_window(window)
    return predictor
