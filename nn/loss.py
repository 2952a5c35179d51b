"""Fractal Tanimoto loss ``L = 1 - <FT>^d`` (paper Section 4) and the multitask loss of the
conditioned head (segmentation, boundary and distance, averaged)."""
from __future__ import annotations

from nn.similarity import Axis, mean_fractal_tanimoto

from mxnet.gluon.loss import Loss, _apply_weighting


class FTnmtLoss(Loss):
    """``1 - <FT>^d`` with complement, averaged over classes; one value per sample.

    The evolving-loss schedule (Section 4) changes :attr:`depth` during training (0 -> 10 -> 20 ->
    30 at each learning-rate reduction); setting it drops the cached graph so a hybridized loss
    follows the new depth.

    Parameters
    ----------
    depth : int
        ``d`` of eq. 8.
    axis : sequence of int
        Axes of the dot products. ``(2, 3)`` (default) gives one similarity per sample and class,
        then averaged over classes; ``(1, 2, 3)`` reduces classes and pixels together as the
        authors' public code does.
    smooth : float
        Smoothing (see :mod:`nn.similarity`).
    weight : float, optional
        Global scale of the loss; ``sample_weight`` (broadcastable to ``(B, classes, 1, 1)``) may
        be given at call time, as for Gluon's losses.
    """

    def __init__(self, depth: int = 0, axis: Axis = (2, 3), smooth: float = 1e-5, batch_axis: int = 0,
                 weight=None, **kwargs):
        super().__init__(weight, batch_axis, **kwargs)
        self.axis = tuple(axis)
        self.smooth = smooth
        self._depth = 0
        self.depth = depth

    @property
    def depth(self) -> int:
        return self._depth

    @depth.setter
    def depth(self, value: int) -> None:
        if value < 0 or int(value) != value:
            raise ValueError(f"FT loss depth must be an integer >= 0, got {value!r}")
        if int(value) != self._depth:
            self._depth = int(value)
            self._clear_cached_op()

    def hybrid_forward(self, F, pred, label, sample_weight=None):
        sim = mean_fractal_tanimoto(F, pred, label, self._depth, self.axis, self.smooth)
        loss = _apply_weighting(F, 1.0 - sim, self._weight, sample_weight)
        return F.mean(loss, axis=self._batch_axis, exclude=True)


class MultitaskFTLoss(Loss):
    """Mean of the FT losses of the conditioned head's three outputs (segmentation, boundary,
    distance), each against its own target; the targets are given separately."""

    def __init__(self, depth: int = 0, axis: Axis = (2, 3), smooth: float = 1e-5, **kwargs):
        super().__init__(None, 0, **kwargs)
        with self.name_scope():
            self.ftnmt = FTnmtLoss(depth=depth, axis=axis, smooth=smooth)

    @property
    def depth(self) -> int:
        return self.ftnmt.depth

    @depth.setter
    def depth(self, value: int) -> None:
        self.ftnmt.depth = value
        self._clear_cached_op()

    def hybrid_forward(self, F, segm, bound, dist, segm_t, bound_t, dist_t):
        return (self.ftnmt(segm, segm_t) + self.ftnmt(bound, bound_t) + self.ftnmt(dist, dist_t)) / 3.0
