"""Other readings of the paper's listings, counted on a built mantis model: how many trainable parameters a
reading adds to (or removes from) mantis's ``paper`` network, from the shapes of its layers (the README's
table of readings). Nothing is computed but shapes: count after ``mantis.summary.count_parameters``."""
from __future__ import annotations

from typing import Callable, Iterator, Tuple

import numpy as np
from mxnet.gluon import Block
from mxnet.gluon import nn as gluon_nn


def blocks(block: Block, path: str = "") -> Iterator[Tuple[str, Block]]:
    """``(attribute path, block)`` of ``block`` and every block under it, e.g. ``("res.conv1", Conv2D)``."""
    yield path, block
    for name, child in block._children.items():
        yield from blocks(child, f"{path}.{name}" if path else name)


def parameters(block: Block) -> int:
    """Trainable scalars of an (initialised, shape-inferred) block."""
    return int(sum(np.prod(p.shape) for p in block.collect_params().values() if p.grad_req != "null"))


def ungrouping(block: Block, chosen: Callable[[str], bool]) -> int:
    """Parameters added by ungrouping the chosen grouped convolutions under ``block`` (``chosen(path)``):
    a convolution of ``g`` groups holds ``1 / g`` of the weights of its ungrouped form."""
    extra = 0
    for path, conv in blocks(block):
        groups = conv._kwargs.get("num_group", 1) if isinstance(conv, gluon_nn.Conv2D) else 1
        if groups > 1 and chosen(path):
            extra += int(np.prod(conv.weight.shape)) * (groups - 1)
    return extra


def units(net) -> Iterator[Block]:
    """The units of a MantisCD network: the encoder's and the decoder steps'."""
    yield from net.encoder
    yield from (step.unit for step in net.decoder)
