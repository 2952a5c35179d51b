"""Crisp sigmoid of the boundary output (paper Section 6.3, eq. 18)."""
from __future__ import annotations

import math
from typing import Callable, Dict, NamedTuple

from nn.ops import scalar_times, sigmoid

import mxnet as mx
from mxnet.gluon import HybridBlock


class Parametrisation(NamedTuple):
    """``gamma = smooth + span * sigmoid(raw)``: ``span`` as a function of ``smooth``, and the initial
    value of the learned ``raw``."""

    span: float
    raw_init: float


def _paper(smooth: float) -> Parametrisation:
    # gamma in (smooth, 1) as eq. 18 says; raw starts at ln 99 (sigmoid 0.99): gamma = smooth + 0.99 (1 -
    # smooth) = 0.9901 for smooth = 0.01, the paper's initial 1 to within 1 %, where the slope
    # d gamma / d raw = 0.0098 is still far from the saturated tail.
    return Parametrisation(span=1.0 - smooth, raw_init=math.log(99.0))


def _authors(smooth: float) -> Parametrisation:
    # the authors' public code: gamma = smooth + sigmoid(raw) in (smooth, 1 + smooth), raw starts at 1
    # (gamma 0.741).
    return Parametrisation(span=1.0, raw_init=1.0)


#: name -> parametrisation of gamma by the learned ``raw`` (see :class:`SigmoidCrisp`)
PARAMETRISATIONS: Dict[str, Callable[[float], Parametrisation]] = {"paper": _paper, "authors": _authors}


class SigmoidCrisp(HybridBlock):
    """``sigmoid(x / gamma)`` with a learned crispness ``gamma`` in ``[smooth, 1]`` (eq. 18).

    ``gamma`` is learned through an unconstrained parameter ``raw`` (the block's parameter ``gamma``)::

        gamma = smooth + span * sigmoid(raw)

    so that ``gamma`` stays inside its bounds and ``d gamma / d raw = span * sigmoid'(raw)`` is non-zero
    everywhere: training can move ``gamma`` in both directions from any value (a clamp has gradient 0
    outside the interval, and a ``gamma`` pushed past a bound would stay there). ``parametrisation``
    (a key of :data:`PARAMETRISATIONS`) selects ``span`` and the initial ``raw``:

    - ``"paper"``: ``span = 1 - smooth``, so ``gamma`` covers ``(smooth, 1)`` exactly; ``raw`` starts at
      ``ln 99``, ``gamma = 0.9901``: the paper initialises ``gamma = 1`` (Section 6.3), which no
      bounded smooth map reaches with a non-zero gradient, so the start is the plain sigmoid to 1 %.
    - ``"authors"``: ``span = 1`` and ``raw`` starts at 1, as the authors' public code does (``gamma``
      in ``(smooth, 1 + smooth)``, starting at 0.741); their trained ``raw`` values load unchanged.

    :meth:`gamma_value` gives the effective ``gamma`` (the paper reports ~0.61 on LEVIR-CD and ~0.625
    on WHU after training). ``x / gamma`` is computed as ``x * (1 / gamma)`` by
    :func:`nn.ops.scalar_times` (MXNet's ``broadcast_div`` backward is slow).
    """

    def __init__(self, smooth: float = 1e-2, parametrisation: str = "paper", **kwargs):
        super().__init__(**kwargs)
        if not 0 < smooth < 1:
            raise ValueError(f"SigmoidCrisp smooth must be in (0, 1), got {smooth}")
        try:
            self.span, raw_init = PARAMETRISATIONS[parametrisation](smooth)
        except KeyError:
            raise ValueError(f"unknown SigmoidCrisp parametrisation {parametrisation!r}; "
                             f"choose one of {sorted(PARAMETRISATIONS)}") from None
        self.smooth = smooth
        self.parametrisation = parametrisation
        with self.name_scope():
            self.gamma = self.params.get("gamma", shape=(1,), init=mx.init.Constant(raw_init))

    def _effective(self, F, raw):
        return sigmoid(F, raw) * self.span + self.smooth

    def hybrid_forward(self, F, x, gamma):
        return sigmoid(F, scalar_times(F, F.reciprocal(self._effective(F, gamma)), x))

    def gamma_value(self) -> float:
        """The effective gamma of eq. 18."""
        return float(self._effective(mx.nd, self.gamma.data()).asscalar())

    def set_gamma_value(self, gamma: float) -> None:
        """Set the parameter so that the effective gamma is ``gamma`` (strictly inside its bounds)."""
        share = (gamma - self.smooth) / self.span
        if not 0 < share < 1:
            raise ValueError(f"SigmoidCrisp gamma must lie in ({self.smooth}, {self.smooth + self.span}), "
                             f"got {gamma}")
        self.gamma.set_data(mx.nd.array([math.log(share / (1.0 - share))]))
