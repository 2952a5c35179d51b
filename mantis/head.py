"""Conditioned multitask ("causal") segmentation head (paper Section 6.3, Fig. 7; ResUNet-a).

The head predicts the distance transform first, re-uses it to predict boundaries, and re-uses both
to predict the change mask::

    convl = concat(fused first-level features, last decoder features)
    conv  = ReLU(PSPPooling(convl))
    dist  = sigmoid(logits(convl))                                  distance transform
    bound = sigmoid_crisp(logits(concat(conv, Eq(dist))))           boundaries, eq. 18
    segm  = softmax(logits(concat(conv, Eq(concat(Eq(bound), Eq(dist))))))   change mask

``Eq`` are 1x1 Conv2DN + ReLU that bring the intermediate predictions to the features' number of
channels ("balancing the number of channels", Section 6.3). ``logits`` are two (Conv2DN 3x3, ReLU)
and a 1x1 convolution to the classes.

The distance output uses a per-class sigmoid by default: each class's normalised distance transform
is an independent value in [0, 1], and at every pixel one of the two targets is 0, which a softmax
over classes could not represent. (The authors' public code applies the segmentation softmax to it:
``distance="softmax"``.)
"""
from __future__ import annotations

from typing import Callable, Dict

from nn import Conv2DN, PSPPooling, SigmoidCrisp
from nn.ops import channel_concat, relu, sigmoid

from mxnet.gluon import HybridBlock
from mxnet.gluon import nn as gluon_nn


def _softmax(F, x):
    return F.softmax(x, axis=1)


#: name -> activation of the distance output (per-class sigmoid, or softmax over the classes)
DISTANCE_ACTIVATIONS: Dict[str, Callable] = {"sigmoid": sigmoid, "softmax": _softmax}


class Logits(HybridBlock):
    """Two (Conv2DN 3x3, ReLU) then a 1x1 convolution to ``classes`` channels."""

    def __init__(self, channels: int, classes: int, norm: str = "GroupNorm", norm_groups: int = 4, **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            self.body = gluon_nn.HybridSequential()
            for _ in range(2):
                self.body.add(Conv2DN(channels, norm=norm, norm_groups=norm_groups), gluon_nn.Activation("relu"))
            self.body.add(gluon_nn.Conv2D(classes, kernel_size=1))

    def hybrid_forward(self, F, x):
        return self.body(x)


class ConditionedHead(HybridBlock):
    """Distance -> boundary -> segmentation head; returns ``(segmentation, boundary, distance)``,
    each ``(B, classes, H, W)`` in [0, 1] (segmentation: softmax over classes, or a sigmoid when
    ``classes == 1``).

    ``distance`` names the distance activation (:data:`DISTANCE_ACTIVATIONS`; a sigmoid whenever
    ``classes == 1``), ``crisp`` the :class:`nn.SigmoidCrisp` parametrisation of the boundaries."""

    def __init__(self, channels: int, classes: int = 2, psp_depth: int = 4, norm: str = "GroupNorm",
                 norm_groups: int = 4, distance: str = "sigmoid", crisp: str = "paper", **kwargs):
        super().__init__(**kwargs)
        if distance not in DISTANCE_ACTIVATIONS:
            raise ValueError(f"unknown distance activation {distance!r}; choose one of {sorted(DISTANCE_ACTIVATIONS)}")
        self._distance = DISTANCE_ACTIVATIONS[distance] if classes > 1 else sigmoid
        self.classes = classes
        conv = dict(norm=norm, norm_groups=norm_groups)
        with self.name_scope():
            self.psp = PSPPooling(channels, depth=psp_depth, **conv)
            self.dist_logits = Logits(channels, classes, **conv)
            self.dist_eq = Conv2DN(channels, kernel_size=1, **conv)
            self.bound_logits = Logits(channels, classes, **conv)
            self.bound_act = SigmoidCrisp(parametrisation=crisp)
            self.bound_eq = Conv2DN(channels, kernel_size=1, **conv)
            self.combine_eq = Conv2DN(channels, kernel_size=1, **conv)
            self.segm_logits = Logits(channels, classes, **conv)

    def hybrid_forward(self, F, decoder_features, fused_first):
        convl = channel_concat(F, fused_first, decoder_features)
        conv = relu(F, self.psp(fused_first, decoder_features))

        dist = self._distance(F, self.dist_logits(convl))
        dist_eq = relu(F, self.dist_eq(dist))

        bound = self.bound_act(self.bound_logits(channel_concat(F, conv, dist_eq)))
        bound_eq = relu(F, self.bound_eq(bound))

        both = relu(F, self.combine_eq(channel_concat(F, bound_eq, dist_eq)))
        segm = self.segm_logits(channel_concat(F, both, conv))
        segm = F.softmax(segm, axis=1) if self.classes > 1 else sigmoid(F, segm)
        return segm, bound, dist
