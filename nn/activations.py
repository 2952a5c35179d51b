"""Crisp sigmoid of the boundary output (paper Section 6.3, eq. 18)."""
from __future__ import annotations

import math
from typing import Any, Callable, Dict, NamedTuple, Optional

from nn.ops import scalar_times, sigmoid

import mxnet as mx
from mxnet.gluon import HybridBlock


class Parametrisation(NamedTuple):
    """How the learned ``raw`` gives gamma: ``gamma(F, raw, smooth)``, its inverse ``raw(gamma, smooth)``
    (None outside ``interval``, the values gamma takes, ``{s}`` standing for ``smooth``), and the initial
    ``raw``."""

    gamma: Callable[..., Any]
    raw: Callable[[float, float], Optional[float]]
    interval: str
    raw_init: float


def _folded(F, raw, smooth: float):
    # raw reflected at smooth and at 1 (a triangle wave of slope +-1): t = max(raw, 2 smooth - raw), then
    # min(t, 2 - t). MXNet hands a tie's gradient to the first operand, so the slope at either bound is
    # that of the inside (1 at the start, raw = 1). The clip only bounds raw beyond a whole period, which
    # the reflected gradients keep it from reaching.
    t = F.maximum(raw, 2.0 * smooth - raw)
    return F.clip(F.minimum(t, 2.0 - t), smooth, 1.0)


def _folded_raw(gamma: float, smooth: float) -> Optional[float]:
    return gamma if smooth <= gamma <= 1.0 else None


def _shifted_sigmoid(F, raw, smooth: float):
    return sigmoid(F, raw) + smooth


def _shifted_sigmoid_raw(gamma: float, smooth: float) -> Optional[float]:
    share = gamma - smooth
    return math.log(share / (1.0 - share)) if 0 < share < 1 else None


#: name -> parametrisation of gamma by the learned ``raw`` (see :class:`SigmoidCrisp`)
PARAMETRISATIONS: Dict[str, Parametrisation] = {
    "paper": Parametrisation(gamma=_folded, raw=_folded_raw, interval="[{s}, 1]", raw_init=1.0),
    "authors": Parametrisation(gamma=_shifted_sigmoid, raw=_shifted_sigmoid_raw, interval="({s}, 1 + {s})",
                               raw_init=1.0),
}


class SigmoidCrisp(HybridBlock):
    """``sigmoid(x / gamma)`` with a learned crispness ``gamma`` in ``[smooth, 1]`` (eq. 18).

    ``gamma`` is learned through an unconstrained parameter ``raw`` (the block's parameter ``gamma``);
    ``parametrisation`` (a key of :data:`PARAMETRISATIONS`) says how:

    - ``"paper"``: ``raw`` folded into ``[smooth, 1]``: ``gamma = raw`` inside the interval, reflected at
      its bounds (``2 - raw`` above 1, ``2 smooth - raw`` below ``smooth``: a triangle wave). ``raw``
      starts at 1, so ``gamma`` starts at exactly 1 as the paper initialises it (Section 6.3), and
      ``d gamma / d raw = +-1`` everywhere: Adam moves ``gamma`` by about its learning rate per step from
      the first one. A smooth bounded map would have slope 0 where it reaches 1; a clamp has slope 0
      beyond its bounds, and a clamp with a straight-through gradient lets ``raw`` drift past the bound
      for as long as the loss pushes there, to be walked back before ``gamma`` moves again. Reflected,
      a push past a bound turns ``gamma`` back, the gradient changes sign, and ``raw`` stays by the bound.
    - ``"authors"``: ``gamma = smooth + sigmoid(raw)``, ``raw`` starting at 1, as the authors' public code
      does (``gamma`` in ``(smooth, 1 + smooth)``, starting at 0.741, slope 0.197); their trained ``raw``
      values load unchanged.

    :meth:`gamma_value` gives the effective ``gamma`` (the paper reports ~0.61 on LEVIR-CD and ~0.625
    on WHU after training). ``x / gamma`` is computed as ``x * (1 / gamma)`` by
    :func:`nn.ops.scalar_times` (MXNet's ``broadcast_div`` backward is slow).
    """

    def __init__(self, smooth: float = 1e-2, parametrisation: str = "paper", **kwargs):
        super().__init__(**kwargs)
        if not 0 < smooth < 1:
            raise ValueError(f"SigmoidCrisp smooth must be in (0, 1), got {smooth}")
        try:
            self._form = PARAMETRISATIONS[parametrisation]
        except KeyError:
            raise ValueError(f"unknown SigmoidCrisp parametrisation {parametrisation!r}; "
                             f"choose one of {sorted(PARAMETRISATIONS)}") from None
        self.smooth = smooth
        self.parametrisation = parametrisation
        with self.name_scope():
            self.gamma = self.params.get("gamma", shape=(1,), init=mx.init.Constant(self._form.raw_init))

    def hybrid_forward(self, F, x, gamma):
        return sigmoid(F, scalar_times(F, F.reciprocal(self._form.gamma(F, gamma, self.smooth)), x))

    def gamma_value(self) -> float:
        """The effective gamma of eq. 18."""
        return float(self._form.gamma(mx.nd, self.gamma.data(), self.smooth).asscalar())

    def set_gamma_value(self, gamma: float) -> None:
        """Set the parameter so that the effective gamma is ``gamma`` (within the values the form takes)."""
        raw = self._form.raw(gamma, self.smooth)
        if raw is None:
            raise ValueError(f"SigmoidCrisp gamma of the {self.parametrisation!r} parametrisation must lie in "
                             f"{self._form.interval.format(s=self.smooth)}, got {gamma}")
        self.gamma.set_data(mx.nd.array([raw]))
