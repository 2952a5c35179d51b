"""``python -m mantis [NAME ...] [--fidelity paper|authors|all]``: the parameter count of each registered
model (or of NAME ...) in a fidelity (default ``paper``), or in every fidelity side by side (``all``).

Models without fidelities (the CIFAR-10 classifiers of Table A.3) count in the ``paper`` column only.
"""
from __future__ import annotations

import argparse
from typing import List, Optional

import nn  # noqa: F401  (sets MXNet's OpenMP threads first)

from mantis import get_model, list_models, model_parameters
from mantis.models import FIDELITIES, MantisCD
from mantis.summary import count_parameters

ALL = "all"


def input_shapes(net) -> list:
    """Shapes of the inputs of one forward pass that resolves every deferred shape."""
    if isinstance(net, MantisCD):
        side = net.size_multiple
        return [(1, 3, side, side)] * 2
    return [(1, 3, 32, 32)]


def registered(name: str) -> str:
    """``name`` lower-cased if it is a registered model (argparse type)."""
    if name.lower() not in list_models():
        raise argparse.ArgumentTypeError(f"unknown model {name!r} (registered: {', '.join(list_models())})")
    return name.lower()


def count(name: str, fidelity: str) -> Optional[int]:
    """Trainable parameters of model ``name`` in ``fidelity``; None if the model has no such fidelity."""
    if "fidelity" in model_parameters(name):
        net = get_model(name, fidelity=fidelity)
    elif fidelity == "paper":
        net = get_model(name)
    else:
        return None
    return count_parameters(net, *input_shapes(net))


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", metavar="NAME", type=registered,
                        help="registered model names (default: all)")
    parser.add_argument("--fidelity", choices=[*FIDELITIES, ALL], default="paper",
                        help="the fidelity to count, or all of them (default: paper)")
    args = parser.parse_args(argv)
    fidelities = list(FIDELITIES) if args.fidelity == ALL else [args.fidelity]
    print(f"{'model':28s}" + "".join(f" {fidelity:>14s}" for fidelity in fidelities))
    for name in args.names or list_models():
        counts = [count(name, fidelity) for fidelity in fidelities]
        print(f"{name:28s}" + "".join(f" {'-' if n is None else format(n, ',d'):>14s}" for n in counts), flush=True)


if __name__ == "__main__":
    main()
