"""Normalisation layers chosen by name from a lookup table.

The paper (Section 8.3, Appendix C) normalises with GroupNorm (Wu & He, 2018) because a GPU holds
only ~3 chips of 256x256. Wu & He's GroupNorm normalises over groups of channels and then applies a
*per-channel* affine transform. MXNet 1.9's ``gluon.nn.GroupNorm`` keeps one gamma/beta *per group*
instead; :class:`GroupNorm` here restores the per-channel affine of the original definition (it runs
MXNet's fused GroupNorm operator for the statistics and applies the affine through MXNet's BatchNorm
operator with fixed statistics, which differentiates much faster than broadcast arithmetic). Its
parameter count is therefore ``2 * channels`` like BatchNorm's.
"""
from __future__ import annotations

import math
from typing import Callable, Dict

import mxnet as mx
from mxnet.gluon import HybridBlock, nn

#: BatchNorm's epsilon in the affine of :class:`GroupNorm` (cuDNN needs >= 1e-5); the fixed variance is
#: ``1 - eps`` so that ``sqrt(var + eps) == 1``
_AFFINE_EPS = 1e-5


class GroupNorm(HybridBlock):
    """Group normalisation with a per-channel affine (Wu & He, 2018, eq. 1-3).

    Parameters
    ----------
    channels : int
        Number of input channels (axis 1).
    num_groups : int
        Number of channel groups; reduced to ``gcd(num_groups, channels)`` so that thin layers
        (e.g. the ``nf/4`` channels inside a tiny CEECNet unit) stay valid.
    epsilon : float
        Added to the variance.
    """

    def __init__(self, channels: int, num_groups: int = 4, epsilon: float = 1e-5, **kwargs):
        super().__init__(**kwargs)
        self.channels = channels
        self.num_groups = math.gcd(num_groups, channels)
        self.epsilon = epsilon
        with self.name_scope():
            self.gamma = self.params.get("gamma", shape=(channels,), init=mx.init.One())
            self.beta = self.params.get("beta", shape=(channels,), init=mx.init.Zero())
            # unit scale / zero shift for the operator's per-group affine (not learned)
            self.group_one = self.params.get_constant("group_one", mx.nd.ones((self.num_groups,)))
            self.group_zero = self.params.get_constant("group_zero", mx.nd.zeros((self.num_groups,)))
            # statistics that make BatchNorm(use_global_stats) the identity before its affine
            self.stat_mean = self.params.get_constant("stat_mean", mx.nd.zeros((channels,)))
            self.stat_var = self.params.get_constant("stat_var", mx.nd.full((channels,), 1.0 - _AFFINE_EPS))

    def hybrid_forward(self, F, x, gamma, beta, group_one, group_zero, stat_mean, stat_var):
        x = F.GroupNorm(x, group_one, group_zero, num_groups=self.num_groups, eps=self.epsilon)
        # the per-channel affine gamma * x + beta, run as BatchNorm with fixed statistics (mean 0,
        # variance 1): the same values, and ~25x faster to differentiate on CPU than broadcast_mul /
        # broadcast_add, whose backward reduces over batch and pixels with MXNet's slow generic kernel
        return F.BatchNorm(x, gamma, beta, stat_mean, stat_var, eps=_AFFINE_EPS, use_global_stats=True,
                           fix_gamma=False, axis=1)

    def __repr__(self) -> str:
        return f"GroupNorm(channels={self.channels}, num_groups={self.num_groups})"


def _batch_norm(channels: int, num_groups: int) -> HybridBlock:
    return nn.BatchNorm(axis=1, in_channels=channels)


def _instance_norm(channels: int, num_groups: int) -> HybridBlock:
    return nn.InstanceNorm(axis=1, in_channels=channels)


def _layer_norm(channels: int, num_groups: int) -> HybridBlock:
    return nn.LayerNorm(axis=1, in_channels=channels)


def _group_norm(channels: int, num_groups: int) -> HybridBlock:
    return GroupNorm(channels, num_groups=num_groups)


#: name -> factory(channels, num_groups). Add an entry to support another normalisation.
NORMS: Dict[str, Callable[[int, int], HybridBlock]] = {
    "BatchNorm": _batch_norm,
    "InstanceNorm": _instance_norm,
    "LayerNorm": _layer_norm,
    "GroupNorm": _group_norm,
}


def get_norm(name: str, channels: int, num_groups: int = 4) -> HybridBlock:
    """Return the normalisation layer ``name`` for ``channels`` channels (see :data:`NORMS`)."""
    try:
        factory = NORMS[name]
    except KeyError:
        raise ValueError(f"unknown normalisation {name!r}; choose one of {sorted(NORMS)}") from None
    return factory(channels, num_groups)
