"""Feature-extraction units: FracTAL ResNet (Section 5.2.1, Fig. 4, Listing 4) and CEECNet V1/V2
(Section 6.1, Fig. 5, Listings 5-7), with their Expand / ExpandNCombine layers."""
from __future__ import annotations

from typing import Callable, Dict

from nn.attention import FTAttention2D
from nn.conv import Conv2DN
from nn.fusion import ConcatConv2DN, Fusion, scale_by_attention
from nn.norm import get_norm
from nn.ops import relu, upsample2x

import mxnet as mx
from mxnet.gluon import HybridBlock
from mxnet.gluon import nn as gluon_nn


class ResBlock(HybridBlock):
    """Pre-activation residual branch (ResNet V2): Norm, ReLU, Conv, Norm, ReLU, Conv (Listing 4)."""

    def __init__(self, channels: int, kernel_size: int = 3, groups: int = 1, norm: str = "GroupNorm",
                 norm_groups: int = 4, in_channels: int = 0, **kwargs):
        super().__init__(**kwargs)
        in_channels = in_channels or channels
        with self.name_scope():
            self.norm1 = get_norm(norm, in_channels, norm_groups)
            self.conv1 = gluon_nn.Conv2D(channels, kernel_size, padding=kernel_size // 2, groups=groups,
                                   use_bias=False, in_channels=in_channels)
            self.norm2 = get_norm(norm, channels, norm_groups)
            self.conv2 = gluon_nn.Conv2D(channels, kernel_size, padding=kernel_size // 2, groups=groups,
                                   in_channels=channels)

    def hybrid_forward(self, F, x):
        x = self.conv1(relu(F, self.norm1(x)))
        return self.conv2(relu(F, self.norm2(x)))


class FTAttResUnit(HybridBlock):
    """FracTAL ResNet unit (Fig. 4, eq. 14, Listing 4)::

        out = (x + ResBlock(x)) * (1 + gamma * A(x))

    ``A`` is FracTAL self-attention on the input, ``gamma`` learned and initialised to 0, so the unit
    starts as a plain residual unit.
    """

    def __init__(self, channels: int, nheads: int = 1, groups: int = 1, ftdepth: int = 5,
                 norm: str = "GroupNorm", norm_groups: int = 4, **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            self.res = ResBlock(channels, groups=groups, norm=norm, norm_groups=norm_groups)
            self.att = FTAttention2D(channels, nheads=nheads, ftdepth=ftdepth, norm=norm, norm_groups=norm_groups)
            self.gamma = self.params.get("gamma", shape=(1,), init=mx.init.Zero())

    def hybrid_forward(self, F, x, gamma):
        return scale_by_attention(F, x + self.res(x), gamma, self.att(x))


class Expand(HybridBlock):
    """Listing 6: bilinear x2 upsampling, then two (Conv2DN, ReLU) with ``groups`` groups."""

    def __init__(self, channels: int, groups: int = 1, norm: str = "GroupNorm", norm_groups: int = 4, **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            self.conv1 = Conv2DN(channels, groups=groups, norm=norm, norm_groups=norm_groups)
            self.conv2 = Conv2DN(channels, groups=groups, norm=norm, norm_groups=norm_groups)

    def hybrid_forward(self, F, x):
        x = relu(F, self.conv1(upsample2x(F, x)))
        return relu(F, self.conv2(x))


class ExpandNCombine(HybridBlock):
    """Listing 7: upsample the low-resolution input x2, Conv2DN + ReLU, then combine it with the
    high-resolution input and ReLU. V1 combines by concatenation + Conv2DN (Listing 7); V2 by
    :class:`Fusion` (Section 7.1: "all concatenation operations that are followed by normed
    convolutions being replaced with Fusion operations").

    ``high_conv=True`` first passes the high-resolution input through its own Conv2DN + ReLU
    (``conv_high``), as the authors' public code does in its V2 unit; the paper's replacement of the
    concatenation by Fusion adds no such layer.
    """

    def __init__(self, channels: int, version: int = 1, nheads: int = 1, groups: int = 1, ftdepth: int = 5,
                 norm: str = "GroupNorm", norm_groups: int = 4, high_conv: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.high_conv = high_conv
        with self.name_scope():
            self.conv = Conv2DN(channels, groups=groups, norm=norm, norm_groups=norm_groups)
            if high_conv:
                self.conv_high = Conv2DN(channels, groups=groups, norm=norm, norm_groups=norm_groups)
            self.combine = make_combiner(version, channels, channels, nheads=nheads, groups=groups,
                                         ftdepth=ftdepth, norm=norm, norm_groups=norm_groups)

    def hybrid_forward(self, F, low, high):
        up = relu(F, self.conv(upsample2x(F, low)))
        if self.high_conv:
            high = relu(F, self.conv_high(high))
        return relu(F, self.combine(up, high))


def _concat_combiner(in_channels, out_channels, nheads, groups, ftdepth, norm, norm_groups, kernel_size):
    return ConcatConv2DN(out_channels, kernel_size=kernel_size, groups=groups, norm=norm, norm_groups=norm_groups)


def _fusion_combiner(in_channels, out_channels, nheads, groups, ftdepth, norm, norm_groups, kernel_size):
    return Fusion(in_channels, out_channels, nheads=nheads, groups=groups, ftdepth=ftdepth, norm=norm,
                  norm_groups=norm_groups)


#: CEECNet version -> how two feature maps are combined (V1: concat + Conv2DN, V2: Fusion).
COMBINERS: Dict[int, Callable[..., HybridBlock]] = {1: _concat_combiner, 2: _fusion_combiner}


def make_combiner(version: int, in_channels: int, out_channels: int, nheads: int = 1, groups: int = 1,
                  ftdepth: int = 5, norm: str = "GroupNorm", norm_groups: int = 4,
                  concat_kernel: int = 3) -> HybridBlock:
    """The two-input combination layer of CEECNet ``version`` (see :data:`COMBINERS`).

    ``concat_kernel`` is the kernel of V1's convolution after the concatenation (Fusion's is 3x3,
    Listing 3)."""
    try:
        factory = COMBINERS[version]
    except KeyError:
        raise ValueError(f"unknown CEECNet version {version!r}; choose one of {sorted(COMBINERS)}") from None
    return factory(in_channels, out_channels, nheads, groups, ftdepth, norm, norm_groups, concat_kernel)


class CEECUnit(HybridBlock):
    """CEECNet unit (Fig. 5, Listing 5), version 1 or 2.

    Two views of the input ``x`` (``nf`` channels, H x W):

    * CE, a mini U-Net: ``c = Conv2DN(nf/2)(x)``; compress to (nf, H/2) with a strided and a plain
      Conv2DN (+ReLU); ExpandNCombine back to (nf/2, H) with ``c``.
    * EC, a mini intersection-Net: ``e = Conv2DN(nf/2)(x)``; Expand to (nf/4, 2H); compress to
      (nf/2, H) with a strided Conv2DN (+ReLU); combine with ``e`` (+ReLU).

    The two views attend to each other (relative attention, ``gamma2, gamma3``), are combined into
    ``nf`` channels (+ReLU), and the unit ends as a FracTAL residual: ``(x + out) * (1 + gamma1 *
    A(x))``. V1 combines by concatenation + Conv2DN, V2 by :class:`Fusion`. All gammas start at 0.
    Every combination is followed by a ReLU, so a Fusion that ends in one (the authors' code) changes
    nothing here.

    The final combination ``collect`` is ungrouped, and in V2 it is a Fusion with one head: Listing 5's
    ``collect`` is a plain Conv2DN (no groups), and Section 6.1 says it "binds the relative channels"
    of the two views, which a convolution grouped over ``concat([CE, EC])`` could not (each group would
    see one view only). Listing 3's Fusion ties its fusing convolution's groups to its attention heads
    (one ``nheads`` argument), so V2's ungrouped ``collect`` Fusion has one head. (The authors' code
    agrees: ``CATFusion(nheads=1)``.)

    Listing 5 applies ``compr12`` to ``out10``; the shapes (and the authors' code) require
    ``compr12(out1)``, which is what is implemented.

    ``high_conv`` is passed to the CE view's :class:`ExpandNCombine`.
    """

    def __init__(self, channels: int, nheads: int = 1, groups: int = 1, version: int = 1, ftdepth: int = 5,
                 norm: str = "GroupNorm", norm_groups: int = 4, high_conv: bool = False, **kwargs):
        super().__init__(**kwargs)
        if channels % 4:
            raise ValueError(f"CEECUnit: channels must be divisible by 4, got {channels}")
        if (channels // 4) % groups:
            raise ValueError(f"CEECUnit: groups ({groups}) must divide channels / 4 ({channels // 4})")
        half = channels // 2
        conv = dict(groups=groups, norm=norm, norm_groups=norm_groups)
        att = dict(nheads=nheads, ftdepth=ftdepth, norm=norm, norm_groups=norm_groups)
        with self.name_scope():
            # CE: compress - expand
            self.conv_ce = Conv2DN(half, **conv)
            self.compress_ce1 = Conv2DN(channels, strides=2, **conv)
            self.compress_ce2 = Conv2DN(channels, **conv)
            self.expand_ce = ExpandNCombine(half, version=version, **att, groups=groups, high_conv=high_conv)
            # EC: expand - compress
            self.conv_ec = Conv2DN(half, **conv)
            self.expand_ec = Expand(half // 2, **conv)
            self.compress_ec = Conv2DN(half, strides=2, **conv)
            self.combine_ec = make_combiner(version, half, half, groups=groups, **att)
            # exchange between the views, then collect them into `channels` (ungrouped, one head: it
            # binds the two views' channels)
            self.att_ce = FTAttention2D(half, **att)
            self.att_ec = FTAttention2D(half, **att)
            self.collect = make_combiner(version, half, channels, groups=1, **dict(att, nheads=1))
            self.att = FTAttention2D(channels, **att)
            self.gamma1 = self.params.get("gamma1", shape=(1,), init=mx.init.Zero())
            self.gamma2 = self.params.get("gamma2", shape=(1,), init=mx.init.Zero())
            self.gamma3 = self.params.get("gamma3", shape=(1,), init=mx.init.Zero())

    def hybrid_forward(self, F, x, gamma1, gamma2, gamma3):
        c = self.conv_ce(x)
        ce = relu(F, self.compress_ce1(c))
        ce = relu(F, self.compress_ce2(ce))
        ce = self.expand_ce(ce, c)

        e = self.conv_ec(x)
        ec = self.expand_ec(e)
        ec = relu(F, self.compress_ec(ec))
        ec = relu(F, self.combine_ec(ec, e))

        ce_att = scale_by_attention(F, ce, gamma2, self.att_ce(ce, ec, ec))
        ec_att = scale_by_attention(F, ec, gamma3, self.att_ec(ec, ce, ce))
        out = relu(F, self.collect(ce_att, ec_att))
        return scale_by_attention(F, x + out, gamma1, self.att(x))
