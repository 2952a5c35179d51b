"""Model registry: ``get_model("ceecnetv1_d6nf32", **overrides)`` (the gluon-cv model-zoo pattern).

Each entry is a factory ``(**kwargs) -> HybridBlock`` with its defaults bound; ``get_model`` passes
the overrides to it. Modules that define models register them with :func:`register_model`.
"""
from __future__ import annotations

import inspect
from functools import partial
from typing import Any, Callable, Dict, List

from mxnet.gluon import HybridBlock

_MODELS: Dict[str, Callable[..., HybridBlock]] = {}


def register_model(name: str, factory: Callable[..., HybridBlock], **defaults: Any) -> None:
    """Register ``factory`` under ``name`` with default keyword arguments ``defaults``."""
    if name in _MODELS:
        raise ValueError(f"model {name!r} is already registered")
    _MODELS[name] = partial(factory, **defaults)


def get_model(name: str, **overrides: Any) -> HybridBlock:
    """Build the registered model ``name``; ``overrides`` replace its default arguments."""
    _load_all()
    try:
        factory = _MODELS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; registered models: {', '.join(list_models())}") from None
    return factory(**overrides)


def model_parameters(name: str) -> List[str]:
    """The keyword arguments ``get_model(name, ...)`` accepts: the named parameters of its factory."""
    _load_all()
    signature = inspect.signature(_MODELS[name.lower()])
    return [p.name for p in signature.parameters.values() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def list_models(tiny: bool | None = None) -> List[str]:
    """Registered names, sorted; ``tiny=True`` only the small test variants, ``False`` only the others."""
    _load_all()
    names = sorted(_MODELS)
    if tiny is None:
        return names
    return [n for n in names if ("tiny" in n) == tiny]


def _load_all() -> None:
    """Import the modules that register models (kept lazy to avoid import cycles)."""
    from . import cifar, models  # noqa: F401
