"""Pyramid scene parsing pooling (PSPPooling; Zhao et al. 2017, as used in ResUNet-a and the mantis
middle and head, paper Section 6.2)."""
from __future__ import annotations

from typing import Callable, Dict

from nn import kernels
from nn.conv import Conv2DN
from nn.norm import current_form
from nn.ops import channel_concat

from mxnet.gluon import HybridBlock
from mxnet.gluon import nn as gluon_nn


def grid_max_pool(F, x, cells: int):
    """Max over each of ``cells x cells`` equal blocks of ``x`` (B, C, H, W), broadcast back over its
    block; ``H`` and ``W`` must be divisible by ``cells``. Shape-agnostic (no shape inference), so it
    hybridizes for any input size.

    The maxima (:func:`grid_max`) are spread over their blocks by two batched products with rows/columns
    of ones (same values), first over the block width, then over the block height: MXNet 1.9.1's CPU
    backward of ``broadcast_like`` sums the gradient with a slow generic kernel, ``batch_dot``'s backward
    is fast matrix products.
    """
    n = cells
    grid = x.reshape((-3, -4, n, -1, -4, n, -1))                                          # (B C, n, H/n, n, W/n)
    peak = grid_max(F, x, n).reshape((-1, n, 1))                                          # (B C n, n, 1)
    row = F.slice(grid, begin=(None, None, 0, 0, None), end=(None, None, 1, 1, None))     # (B C, n, 1, 1, W/n)
    column = F.slice(grid, begin=(None, None, None, 0, 0), end=(None, None, None, 1, 1))  # (B C, n, H/n, 1, 1)
    wide = F.batch_dot(peak, F.ones_like(row).reshape((-3, 0, -3)))                       # (B C n, n, W/n)
    out = F.batch_dot(F.ones_like(column).reshape((-3, 0, -3)), wide.reshape((0, 1, -1)))  # (B C n, H/n, W)
    return F.reshape_like(out, x)


def grid_max(F, x, cells: int):
    """The maxima of the ``cells x cells`` equal blocks of ``x`` (B, C, H, W): (B, C, cells, cells), in
    GroupNorm's form (:func:`nn.norm.current_form`)."""
    return GRID_MAX_FORMS[current_form()](F, x, cells)


def grid_max_reduction(F, x, cells: int):
    """:func:`grid_max` as MXNet's ``max`` over the block axes of a (B, C, n, H/n, n, W/n) view."""
    return F.max(x.reshape((0, 0, -4, cells, -1, -4, cells, -1)), axis=(3, 5))


def grid_max_kernel(F, x, cells: int):
    """:func:`grid_max` as mantis's fused CPU operator ``mantis_grid_max`` (``nn/kernels/grid_max.cc``): one
    pass forward and backward (MXNet's ``max`` and its backward run generic broadcast kernels)."""
    kernels.require("grid_max")
    return F.mantis_grid_max(x, cells=cells)


#: form name (:data:`nn.norm.FORMS`) -> how :func:`grid_max` computes
GRID_MAX_FORMS: Dict[str, Callable] = {"kernel": grid_max_kernel, "operator": grid_max_reduction}


class PSPPooling(HybridBlock):
    """Concatenate the input with ``depth`` pooled views of it and bind them with a 1x1 Conv2DN.

    View ``i`` (``i = 0 .. depth-1``) is the max over a ``2^i x 2^i`` grid of blocks (``i = 0``:
    global max pooling), broadcast over its block and projected to ``channels`` by a 1x1 Conv2DN.
    The output has ``channels`` channels. Inputs need ``H`` and ``W`` divisible by ``2^(depth-1)``.

    The input may be given in parts: ``psp(a, b)`` pools ``concat([a, b])`` (the mantis middle pools
    both dates' deepest features, the head the fused and decoded features).
    """

    def __init__(self, channels: int, depth: int = 4, norm: str = "GroupNorm", norm_groups: int = 4, **kwargs):
        super().__init__(**kwargs)
        self.depth = depth
        with self.name_scope():
            self.convs = gluon_nn.HybridSequential()
            for _ in range(depth):
                self.convs.add(Conv2DN(channels, kernel_size=1, norm=norm, norm_groups=norm_groups))
            self.conv_out = Conv2DN(channels, kernel_size=1, norm=norm, norm_groups=norm_groups)

    def hybrid_forward(self, F, *parts):
        x = channel_concat(F, *parts) if len(parts) > 1 else parts[0]
        views = [conv(grid_max_pool(F, x, 2 ** i)) for i, conv in enumerate(self.convs)]
        return self.conv_out(channel_concat(F, *parts, *views))
