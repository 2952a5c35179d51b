"""The engines that run a model's windows: MXNet (the training framework) or ONNX Runtime (an exported graph).

Both give a predictor with one interface (:class:`~utilities.artifacts.model_io.Predictor`), so tiled
inference is the same code for both; their outputs agree within 1e-5. :data:`DEFAULT_ENGINE` is the one
this project's machines run faster, measured by ``benchmarks/bench_engines.py`` (BENCHMARKS.md, "MXNet and
ONNX Runtime side by side").
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, Optional, Union

from utilities.artifacts.model_io import Predictor, load_predictor
from utilities.errors import InputError
from utilities.inference.onnx_engine import load_onnx_predictor

PathLike = Union[str, Path]
#: engine name -> ``load(model spec, window, batch size)``
ENGINES: Dict[str, Callable[[PathLike, int, int], Predictor]] = {
    "mxnet": lambda spec, window, batch: load_predictor(spec),
    "onnx": load_onnx_predictor,
}
#: measured on the project's 2-core CPU machines (BENCHMARKS.md, 2026-12-06, idle, two rounds): MXNet ran a D6nf32
#: FracTAL ResNet's windows 1.38-1.77x (1 thread) and 1.45-1.61x (2 threads) as fast as ONNX Runtime, the demo's
#: tiny model 1.05-1.12x (mantis's fused CPU kernels have no ONNX counterpart); ONNX Runtime is for GPUs MXNet 1.9
#: cannot use
DEFAULT_ENGINE = "mxnet"


def resolve_engine(spec: PathLike, engine: Optional[str] = None) -> str:
    """The engine to run ``spec`` with: ``engine`` if given, ``onnx`` for an ``.onnx`` file, else
    :data:`DEFAULT_ENGINE`.

    Raises
    ------
    InputError
        An unknown engine, or an ``.onnx`` file with ``engine="mxnet"``.
    """
    is_onnx = Path(spec).suffix == ".onnx"
    if engine is None:
        return "onnx" if is_onnx else DEFAULT_ENGINE
    if engine not in ENGINES:
        raise InputError(f"unknown engine {engine!r}: choose one of {', '.join(ENGINES)}")
    if engine == "mxnet" and is_onnx:
        raise InputError(f"{spec} is an ONNX file, which runs with --engine onnx; MXNet runs checkpoints, run "
                         f"directories and ensemble files")
    return engine


def load_engine(spec: PathLike, engine: Optional[str] = None, window: int = 256, batch_size: int = 4) -> Predictor:
    """The predictor of ``spec`` on ``engine`` (:func:`resolve_engine`) for windows of ``window`` pixels."""
    return ENGINES[resolve_engine(spec, engine)](spec, window, batch_size)
