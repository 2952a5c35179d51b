"""mantis: the macro-topology, heads, CIFAR-10 classifiers and model registry."""
import nn  # noqa: F401  (sets MXNet's OpenMP threads before MXNet loads)

from .registry import get_model, list_models, register_model

__all__ = ["get_model", "list_models", "register_model"]
