"""Normalisation layers chosen by name from a lookup table.

The paper (Section 8.3, Appendix C) normalises with GroupNorm (Wu & He, 2018) because a GPU holds
only ~3 chips of 256x256. Wu & He's GroupNorm normalises over groups of channels and then applies a
*per-channel* affine transform. MXNet 1.9's ``gluon.nn.GroupNorm`` keeps one gamma/beta *per group*
instead; :class:`GroupNorm` here restores the per-channel affine of the original definition, so its
parameter count is ``2 * channels`` like BatchNorm's. The entry ``"GroupNormPerGroup"`` keeps MXNet's
per-group affine (``2 * groups`` parameters), which the authors' public code trains with.

:class:`GroupNorm` computes in one of two forms (:data:`FORMS`), with the same parameters:

- ``"kernel"``: mantis's fused CPU operator ``mantis_group_norm`` (:mod:`nn.kernels`). MXNet's own
  GroupNorm operator ran at a few hundred MB/s on CPU and was 40 % of a D6nf32 training step; the
  fused kernel does the forward and backward about 30x faster (BENCHMARKS.md).
- ``"operator"``: MXNet's ``GroupNorm`` operator with unit per-group gamma / zero beta, then the
  per-channel affine as broadcast arithmetic: the straightforward form. It runs on GPUs and exports to
  ONNX (utilities/artifacts/export.py converts MXNet's GroupNorm).

The default is ``"kernel"`` on CPU-only machines where the kernel library is built, otherwise
``"operator"``; the environment variable ``MANTIS_GROUPNORM`` or :func:`groupnorm_form` overrides it.
The form is read when a network's graph is built (its first call after ``hybridize()``).
"""
from __future__ import annotations

import contextlib
import math
import os
from typing import Callable, Dict, Iterator, Optional, Tuple

from nn import kernels

import mxnet as mx
from mxnet.gluon import HybridBlock
from mxnet.gluon import nn as gluon_nn

#: the ways :class:`GroupNorm` can compute (module docstring)
FORMS = ("kernel", "operator")

_forced: Optional[str] = None


def _checked(form: str, source: str) -> str:
    if form not in FORMS:
        raise ValueError(f"{source}: unknown GroupNorm form {form!r}; choose one of {', '.join(FORMS)}")
    if form == "kernel" and not kernels.load():
        raise ValueError(f"{source}: GroupNorm form 'kernel' needs {kernels.LIBRARY}; run `bash scripts/install.sh`")
    return form


def current_form() -> str:
    """The form :class:`GroupNorm` computes in now (see the module docstring)."""
    if _forced:
        return _forced
    if "MANTIS_GROUPNORM" in os.environ:
        return _checked(os.environ["MANTIS_GROUPNORM"], "MANTIS_GROUPNORM")
    return "kernel" if mx.context.num_gpus() == 0 and kernels.load() else "operator"


@contextlib.contextmanager
def groupnorm_form(form: str) -> Iterator[None]:
    """Build graphs with GroupNorm in ``form`` inside the ``with`` block (e.g. ``"operator"`` for ONNX)."""
    global _forced
    previous, _forced = _forced, _checked(form, "groupnorm_form")
    try:
        yield
    finally:
        _forced = previous


def _per_channel(F, param, repeats: int):
    return param


def _per_group(F, param, repeats: int):
    return F.repeat(param, repeats=repeats)


#: affine name -> (parameter length from (channels, groups), expansion of the parameter to one value per channel)
AFFINES: Dict[str, Tuple[Callable[[int, int], int], Callable]] = {
    "channel": (lambda channels, groups: channels, _per_channel),
    "group": (lambda channels, groups: groups, _per_group),
}


class GroupNorm(HybridBlock):
    """Group normalisation with a per-channel affine (Wu & He, 2018, eqs. 1-3).

    ``y[b, c] = gamma[c] * (x[b, c] - mean[b, g]) / sqrt(var[b, g] + eps) + beta[c]``, with the mean and
    the biased variance of sample ``b`` over the channels of group ``g = c // (C / G)`` and all pixels.

    ``affine="group"`` keeps one gamma/beta per group instead (``gamma[g]`` for every channel of group
    ``g``), as MXNet's ``gluon.nn.GroupNorm`` does and the authors' public code uses (NORMS entry
    ``"GroupNormPerGroup"``); the per-group values are repeated per channel, so both affines compute in
    the same forms.

    Parameters
    ----------
    channels : int
        Number of input channels (axis 1).
    num_groups : int
        Number of channel groups; reduced to ``gcd(num_groups, channels)`` so that thin layers
        (e.g. the ``nf/4`` channels inside a tiny CEECNet unit) stay valid.
    epsilon : float
        Added to the variance.
    affine : str
        ``"channel"`` (Wu & He) or ``"group"`` (MXNet's): a key of :data:`AFFINES`.
    """

    def __init__(self, channels: int, num_groups: int = 4, epsilon: float = 1e-5, affine: str = "channel",
                 **kwargs):
        super().__init__(**kwargs)
        try:
            length, self._expand = AFFINES[affine]
        except KeyError:
            raise ValueError(f"unknown GroupNorm affine {affine!r}; choose one of {sorted(AFFINES)}") from None
        self.channels = channels
        self.num_groups = math.gcd(num_groups, channels)
        self.epsilon = epsilon
        self.affine = affine
        shape = (length(channels, self.num_groups),)
        with self.name_scope():
            self.gamma = self.params.get("gamma", shape=shape, init=mx.init.One())
            self.beta = self.params.get("beta", shape=shape, init=mx.init.Zero())

    def hybrid_forward(self, F, x, gamma, beta):
        repeats = self.channels // self.num_groups
        gamma, beta = self._expand(F, gamma, repeats), self._expand(F, beta, repeats)
        if current_form() == "kernel":
            gamma, beta = kernels.parameter_input(F, gamma), kernels.parameter_input(F, beta)
            return F.mantis_group_norm(x, gamma, beta, num_groups=self.num_groups, eps=self.epsilon)[0]
        group_ones = F.ones_like(F.slice_axis(gamma, axis=0, begin=0, end=self.num_groups))
        x = F.GroupNorm(x, group_ones, F.zeros_like(group_ones), num_groups=self.num_groups, eps=self.epsilon)
        return F.broadcast_add(F.broadcast_mul(x, F.reshape(gamma, shape=(1, -1, 1, 1))),
                               F.reshape(beta, shape=(1, -1, 1, 1)))

    def __repr__(self) -> str:
        return f"GroupNorm(channels={self.channels}, num_groups={self.num_groups}, affine={self.affine!r})"


def _batch_norm(channels: int, num_groups: int) -> HybridBlock:
    return gluon_nn.BatchNorm(axis=1, in_channels=channels)


def _instance_norm(channels: int, num_groups: int) -> HybridBlock:
    return gluon_nn.InstanceNorm(axis=1, in_channels=channels)


def _layer_norm(channels: int, num_groups: int) -> HybridBlock:
    return gluon_nn.LayerNorm(axis=1, in_channels=channels)


def _group_norm(channels: int, num_groups: int) -> HybridBlock:
    return GroupNorm(channels, num_groups=num_groups)


def _group_norm_per_group(channels: int, num_groups: int) -> HybridBlock:
    return GroupNorm(channels, num_groups=num_groups, affine="group")


#: name -> factory(channels, num_groups). Add an entry to support another normalisation.
NORMS: Dict[str, Callable[[int, int], HybridBlock]] = {
    "BatchNorm": _batch_norm,
    "InstanceNorm": _instance_norm,
    "LayerNorm": _layer_norm,
    "GroupNorm": _group_norm,
    "GroupNormPerGroup": _group_norm_per_group,
}


def get_norm(name: str, channels: int, num_groups: int = 4) -> HybridBlock:
    """Return the normalisation layer ``name`` for ``channels`` channels (see :data:`NORMS`)."""
    try:
        factory = NORMS[name]
    except KeyError:
        raise ValueError(f"unknown normalisation {name!r}; choose one of {sorted(NORMS)}") from None
    return factory(channels, num_groups)
