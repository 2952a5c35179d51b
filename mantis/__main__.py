"""``python -m mantis [NAME ...]``: the parameter count of each registered model (or of NAME ...)."""
from __future__ import annotations

import argparse

import nn  # noqa: F401  (sets MXNet's OpenMP threads first)

from mantis import get_model, list_models
from mantis.models import MantisCD
from mantis.summary import count_parameters


def input_shapes(net) -> list:
    """Shapes of the inputs of one forward pass that resolves every deferred shape."""
    if isinstance(net, MantisCD):
        side = net.size_multiple
        return [(1, 3, side, side)] * 2
    return [(1, 3, 32, 32)]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("names", nargs="*", help="registered model names (default: all)")
    names = parser.parse_args(argv).names or list_models()
    print(f"{'model':28s} {'parameters':>14s}")
    for name in names:
        net = get_model(name)
        print(f"{name:28s} {count_parameters(net, *input_shapes(net)):14,d}", flush=True)


if __name__ == "__main__":
    main()
