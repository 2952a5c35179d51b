"""Model registry: ``get_model("ceecnetv1_d6nf32", **overrides)`` (the gluon-cv model-zoo pattern).

Each entry is a factory ``(**kwargs) -> HybridBlock`` with its defaults bound; ``get_model`` passes
the overrides to it. Modules that define models register them with :func:`register_model` when they
are imported (the ``mantis`` package imports them all); this module imports nothing of mantis.
Names are case-insensitive: they are stored lower-cased.
"""
from __future__ import annotations

import inspect
from functools import partial
from typing import Any, Callable, Dict, List

from mxnet.gluon import HybridBlock

_MODELS: Dict[str, Callable[..., HybridBlock]] = {}


def register_model(name: str, factory: Callable[..., HybridBlock], **defaults: Any) -> None:
    """Register ``factory`` under ``name`` (lower-cased) with default keyword arguments ``defaults``."""
    key = name.lower()
    if key in _MODELS:
        raise ValueError(f"model {key!r} is already registered")
    _MODELS[key] = partial(factory, **defaults)


def _factory(name: str) -> Callable[..., HybridBlock]:
    try:
        return _MODELS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; registered models: {', '.join(list_models())}") from None


def get_model(name: str, **overrides: Any) -> HybridBlock:
    """Build the registered model ``name``; ``overrides`` replace its default arguments."""
    return _factory(name)(**overrides)


def model_parameters(name: str) -> List[str]:
    """The keyword arguments ``get_model(name, ...)`` accepts: the named parameters of its factory."""
    signature = inspect.signature(_factory(name))
    return [p.name for p in signature.parameters.values() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def list_models(tiny: bool | None = None) -> List[str]:
    """Registered names, sorted; ``tiny=True`` only the small test variants, ``False`` only the others."""
    names = sorted(_MODELS)
    if tiny is None:
        return names
    return [n for n in names if ("tiny" in n) == tiny]
