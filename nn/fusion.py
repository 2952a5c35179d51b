"""Relative attention fusion of two feature maps (paper Section 5.2.2, eqs 15-17, Listing 3), and
its plain alternative (concatenation + Conv2DN) that the paper says Fusion can replace."""
from __future__ import annotations

from typing import Callable, Dict

from nn import kernels
from nn.attention import FTAttention2D
from nn.conv import Conv2DN
from nn.norm import current_form
from nn.ops import channel_concat, relu, scalar_times

import mxnet as mx
from mxnet.gluon import HybridBlock


def scale_by_attention(F, x, gamma, att):
    """``x * (1 + gamma * att)``: the self/relative attention fusion of eqs 14-16 (``gamma`` of shape
    ``(1,)``), in GroupNorm's form (:func:`nn.norm.current_form`)."""
    return SCALE_BY_ATTENTION_FORMS[current_form()](F, x, gamma, att)


def scale_by_attention_products(F, x, gamma, att):
    """:func:`scale_by_attention` from MXNet operators (see :func:`nn.ops.scalar_times`).

    Operand order matters: with ``x`` first, MXNet 1.9.1's gradient pass builds a cyclic in-place
    gradient sum in the full models ("control dep not found in graph" when hybridized)."""
    return (scalar_times(F, gamma, att) + 1.0) * x


def scale_by_attention_kernel(F, x, gamma, att):
    """:func:`scale_by_attention` as mantis's fused CPU operator ``mantis_scale_by_attention``
    (``nn/kernels/fractal_attention.cc``): one pass forward, and no full-size ``1 + gamma * att`` kept for
    the backward pass. Its inputs are ``(att, gamma, x)``: with ``x`` first, MXNet 1.9.1's in-place gradient
    sum fails to build the full models' backward graph, as for the operator form."""
    kernels.require("scale_by_attention")
    return F.mantis_scale_by_attention(att, kernels.parameter_input(F, gamma), x)


#: form name (:data:`nn.norm.FORMS`) -> how :func:`scale_by_attention` computes
SCALE_BY_ATTENTION_FORMS: Dict[str, Callable] = {"kernel": scale_by_attention_kernel,
                                                 "operator": scale_by_attention_products}


class ConcatConv2DN(HybridBlock):
    """``Conv2DN(concat([a, b]))``: the combination that CEECNetV1 uses and Fusion replaces in V2."""

    def __init__(self, out_channels: int, kernel_size: int = 3, groups: int = 1, norm: str = "GroupNorm",
                 norm_groups: int = 4, **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            self.conv = Conv2DN(out_channels, kernel_size=kernel_size, groups=groups, norm=norm,
                                norm_groups=norm_groups)

    def hybrid_forward(self, F, a, b):
        return self.conv(channel_concat(F, a, b))


class Fusion(HybridBlock):
    """Relative attention fusion::

        F1 = L1 * (1 + gamma1 * A(q=L1, k=L2, v=L2))     (eq. 15)
        F2 = L2 * (1 + gamma2 * A(q=L2, k=L1, v=L1))     (eq. 16)
        F  = Conv2DN(concat([F1, F2]))                   (eq. 17)

    with ``A`` the FracTAL (:class:`FTAttention2D`) and ``gamma1, gamma2`` learned, initialised to 0
    (so at initialisation Fusion is ``Conv2DN(concat([L1, L2]))``). The output convolution is 3x3
    with ``groups`` groups as in Listing 3. Listing 3 returns the normed convolution (eq. 17): no
    activation follows unless ``relu=True`` (the authors' public code ends Fusion with a ReLU).

    Parameters
    ----------
    channels : int
        Channels of each input (both inputs have the same shape).
    out_channels : int
        Channels of the output (default ``channels``).
    nheads : int
        Heads of the two attention layers.
    groups : int
        Groups of the fusing convolution (Listing 3 uses ``nheads``; default the same).
    relu : bool
        End with a ReLU.
    """

    def __init__(self, channels: int, out_channels: int | None = None, nheads: int = 1,
                 groups: int | None = None, ftdepth: int = 5, norm: str = "GroupNorm", norm_groups: int = 4,
                 relu: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.relu = relu
        out_channels = channels if out_channels is None else out_channels
        groups = nheads if groups is None else groups
        att_args = dict(nheads=nheads, ftdepth=ftdepth, norm=norm, norm_groups=norm_groups)
        with self.name_scope():
            self.att12 = FTAttention2D(channels, **att_args)
            self.att21 = FTAttention2D(channels, **att_args)
            self.fuse = Conv2DN(out_channels, kernel_size=3, groups=groups, norm=norm, norm_groups=norm_groups)
            self.gamma1 = self.params.get("gamma1", shape=(1,), init=mx.init.Zero())
            self.gamma2 = self.params.get("gamma2", shape=(1,), init=mx.init.Zero())

    def hybrid_forward(self, F, x1, x2, gamma1, gamma2):
        out12 = scale_by_attention(F, x1, gamma1, self.att12(x1, x2, x2))
        out21 = scale_by_attention(F, x2, gamma2, self.att21(x2, x1, x1))
        out = self.fuse(channel_concat(F, out12, out21))
        return relu(F, out) if self.relu else out
