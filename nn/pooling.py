"""Pyramid scene parsing pooling (PSPPooling; Zhao et al. 2017, as used in ResUNet-a and the mantis
middle and head, paper Section 6.2)."""
from __future__ import annotations

from mxnet.gluon import HybridBlock, nn

from .conv import Conv2DN
from .ops import channel_concat


def grid_max_pool(F, x, cells: int):
    """Max over each of ``cells x cells`` equal blocks of ``x`` (B, C, H, W), broadcast back over its
    block; ``H`` and ``W`` must be divisible by ``cells``. Shape-agnostic (no shape inference), so it
    hybridizes for any input size."""
    blocks = x.reshape((0, 0, -4, cells, -1, -4, cells, -1))     # (B, C, n, H/n, n, W/n)
    peak = F.max(blocks, axis=(3, 5), keepdims=True)             # (B, C, n, 1, n, 1)
    return F.broadcast_like(peak, blocks).reshape((0, 0, -3, -3))


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
            self.convs = nn.HybridSequential()
            for _ in range(depth):
                self.convs.add(Conv2DN(channels, kernel_size=1, norm=norm, norm_groups=norm_groups))
            self.conv_out = Conv2DN(channels, kernel_size=1, norm=norm, norm_groups=norm_groups)

    def hybrid_forward(self, F, *parts):
        x = channel_concat(F, *parts) if len(parts) > 1 else parts[0]
        views = [conv(grid_max_pool(F, x, 2 ** i)) for i, conv in enumerate(self.convs)]
        return self.conv_out(channel_concat(F, *parts, *views))
