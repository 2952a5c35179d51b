"""Crisp sigmoid of the boundary output (paper Section 6.3, eq. 18)."""
from __future__ import annotations

import mxnet as mx
from mxnet.gluon import HybridBlock

from .ops import scalar_times


class SigmoidCrisp(HybridBlock):
    """``sigmoid(x / gamma)`` with a learned ``gamma`` kept in ``[smooth, 1]`` (eq. 18), initialised
    to 1 (the plain sigmoid).

    The clamp is ``gamma - relu(gamma - 1) + relu(smooth - gamma)``: equal to
    ``clip(gamma, smooth, 1)``, with gradient 1 at the bounds themselves so that training can move
    ``gamma`` away from its initial value 1. :meth:`gamma_value` gives the effective value (the
    paper reports ~0.61 on LEVIR-CD and ~0.625 on WHU after training). ``x / gamma`` is computed as
    ``x * (1 / gamma)`` by :func:`nn.ops.scalar_times` (MXNet's ``broadcast_div`` backward is slow).
    """

    def __init__(self, smooth: float = 1e-2, **kwargs):
        super().__init__(**kwargs)
        if not 0 < smooth < 1:
            raise ValueError(f"SigmoidCrisp smooth must be in (0, 1), got {smooth}")
        self.smooth = smooth
        with self.name_scope():
            self.gamma = self.params.get("gamma", shape=(1,), init=mx.init.One())

    def _clamped(self, F, gamma):
        return gamma - F.relu(gamma - 1.0) + F.relu(self.smooth - gamma)

    def hybrid_forward(self, F, x, gamma):
        return F.sigmoid(scalar_times(F, 1.0 / self._clamped(F, gamma), x))

    def gamma_value(self) -> float:
        """The effective (clamped) gamma."""
        return float(self._clamped(mx.nd, self.gamma.data()).asscalar())
