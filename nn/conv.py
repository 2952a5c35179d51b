"""Conv2DN: a 2D convolution followed by a normalisation layer (the paper's ``Conv2DN``,
Appendix C: "a sequential combination of a 2D convolution followed by a normalization layer")."""
from __future__ import annotations

from nn.norm import get_norm

from mxnet.gluon import HybridBlock
from mxnet.gluon import nn as gluon_nn


class Conv2DN(HybridBlock):
    """Convolution (no bias: the normalisation's shift replaces it) + normalisation.

    Parameters
    ----------
    channels : int
        Output channels.
    kernel_size, strides, padding : int
        As in ``gluon.nn.Conv2D``; the default 3/1/1 keeps the spatial size ("SAME").
    groups : int
        Convolution groups (the FracTAL's heads use grouped convolutions, Listing 2).
    norm, norm_groups : str, int
        Normalisation name from :data:`nn.norm.NORMS` and its number of groups (GroupNorm).
    in_channels : int
        Input channels, 0 to infer at the first forward.
    """

    def __init__(self, channels: int, kernel_size: int = 3, strides: int = 1, padding: int | None = None,
                 groups: int = 1, norm: str = "GroupNorm", norm_groups: int = 4, in_channels: int = 0,
                 **kwargs):
        super().__init__(**kwargs)
        if padding is None:
            padding = kernel_size // 2
        with self.name_scope():
            self.conv = gluon_nn.Conv2D(channels, kernel_size=kernel_size, strides=strides, padding=padding,
                                  groups=groups, use_bias=False, in_channels=in_channels)
            self.norm = get_norm(norm, channels, norm_groups)

    def hybrid_forward(self, F, x):
        return self.norm(self.conv(x))
