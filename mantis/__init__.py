"""mantis: the macro-topology, heads, CIFAR-10 classifiers and model registry.

Importing the package imports the modules that define models, which registers them
(:mod:`mantis.registry` itself imports nothing of mantis).
"""
import nn  # noqa: F401  (sets MXNet's OpenMP threads before MXNet loads)

from mantis import cifar, models  # noqa: F401  (importing them registers their models)
from mantis.registry import get_model, list_models, model_parameters, register_model

__all__ = ["get_model", "list_models", "model_parameters", "register_model"]
