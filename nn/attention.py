"""FracTAL: the fractal Tanimoto attention layer (paper Section 5.1, eqs 11-13, Listing 2)."""
from __future__ import annotations

from typing import Callable, Dict

from nn import kernels
from nn.conv import Conv2DN
from nn.norm import current_form, get_norm
from nn.ops import sigmoid
from nn.similarity import mean_fractal_tanimoto

from mxnet.gluon import HybridBlock


def average_weight(F, chan, spat):
    """``0.5 * (chan + spat)`` of ``chan`` (B, C, 1, 1) and ``spat`` (B, 1, H, W), as (B, C, H*W).

    One matrix product per sample, ``[chan/2, 1/2] @ [1; spat]`` (same values): MXNet 1.9.1's CPU
    backward of ``broadcast_add`` sums the gradients with a slow generic kernel, while ``batch_dot``'s
    backward is two fast matrix products.
    """
    col = chan.reshape((0, 0, 1))                                # (B, C, 1)
    row = spat.reshape((0, 1, -1))                               # (B, 1, H*W)
    left = 0.5 * F.concat(col, F.ones_like(col), dim=2)          # (B, C, 2)
    right = F.concat(F.ones_like(row), row, dim=1)               # (B, 2, H*W)
    return F.batch_dot(left, right)


def attention_weighting(F, chan, spat, v):
    """Eq. 13's average of the channel- and the spatially weighted values, ``0.5 * (chan * v + spat * v)``,
    of ``chan`` (B, C, 1, 1), ``spat`` (B, 1, H, W) and ``v`` (B, C, H, W), computed as
    ``0.5 * (chan + spat) * v`` (the same sum) in GroupNorm's form (:func:`nn.norm.current_form`).
    """
    return ATTENTION_WEIGHTING_FORMS[current_form()](F, chan, spat, v)


def attention_weighting_products(F, chan, spat, v):
    """:func:`attention_weighting` from MXNet operators: :func:`average_weight` times ``v``."""
    return F.reshape_like(average_weight(F, chan, spat), v) * v


def attention_weighting_kernel(F, chan, spat, v):
    """:func:`attention_weighting` as mantis's fused CPU operator ``mantis_attention_weighting``
    (``nn/kernels/fractal_attention.cc``): one pass forward, no full-size weight kept for the backward."""
    kernels.require("attention_weighting")
    return F.mantis_attention_weighting(chan, spat, v)


#: form name (:data:`nn.norm.FORMS`) -> how :func:`attention_weighting` computes
ATTENTION_WEIGHTING_FORMS: Dict[str, Callable] = {"kernel": attention_weighting_kernel,
                                                  "operator": attention_weighting_products}


class FTAttention2D(HybridBlock):
    """Joint channel and spatial fractal Tanimoto attention of a query on keys/values.

    ``q, k, v = sigmoid(Conv2DN(.))`` of the three inputs, each a grouped 3x3 convolution with
    ``nheads`` groups (multi-head attention, Listing 2). The channel similarity ``<FT>^d`` over the
    spatial axes (eq. 11, one value per channel) and the spatial similarity over the channel axis
    (eq. 12, one value per pixel) each weight the values, and the result is their average (eq. 13),
    normalised::

        A = Norm(0.5 * (<FT>_chan(q, k) * v + <FT>_spat(q, k) * v))

    computed as ``Norm(0.5 * (<FT>_chan + <FT>_spat) * v)``: the same sum with one full-size product
    (see :func:`attention_weighting`).
    Called with one input it is self-attention (``q = k = v`` inputs).

    Parameters
    ----------
    channels : int
        Channels of queries, keys, values and output (the inputs must have ``channels`` too when
        ``nheads > 1``, because of the grouped convolutions).
    nheads : int
        Number of heads (groups of the q/k/v convolutions).
    ftdepth : int
        Depth ``d`` of ``<FT>^d`` (paper: 5).
    norm, norm_groups : str, int
        Normalisation of the q/k/v convolutions and of the output.
    """

    def __init__(self, channels: int, nheads: int = 1, ftdepth: int = 5, kernel_size: int = 3,
                 norm: str = "GroupNorm", norm_groups: int = 4, smooth: float = 1e-5, **kwargs):
        super().__init__(**kwargs)
        if channels % nheads:
            raise ValueError(f"FTAttention2D: channels ({channels}) must be divisible by nheads ({nheads})")
        self.ftdepth = ftdepth
        self.smooth = smooth
        conv_args = dict(kernel_size=kernel_size, groups=nheads, norm=norm, norm_groups=norm_groups)
        with self.name_scope():
            self.query = Conv2DN(channels, **conv_args)
            self.key = Conv2DN(channels, **conv_args)
            self.value = Conv2DN(channels, **conv_args)
            self.norm = get_norm(norm, channels, norm_groups)

    def hybrid_forward(self, F, qin, kin=None, vin=None):
        kin = qin if kin is None else kin
        vin = kin if vin is None else vin
        q = sigmoid(F, self.query(qin))
        k = sigmoid(F, self.key(kin))
        v = sigmoid(F, self.value(vin))
        chan = mean_fractal_tanimoto(F, q, k, self.ftdepth, (2, 3), self.smooth)  # (B, C, 1, 1)
        spat = mean_fractal_tanimoto(F, q, k, self.ftdepth, (1,), self.smooth)    # (B, 1, H, W)
        return self.norm(attention_weighting(F, chan, spat, v))
