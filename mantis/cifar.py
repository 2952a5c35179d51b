"""CIFAR-10 classifiers comparing the building blocks (paper Section 7.1, Fig. 8, Appendix A Table A.3).

One backbone, four micro-topologies: the networks differ only in their building block ("BBlock"),
chosen by name from :data:`BLOCKS` -- plain pre-activation residual units (ResNet V2, He et al.
2016), FracTAL ResNet units (Fig. 4) and CEECNet V1 / V2 units (Fig. 5). Registered models:
``cifar_resnet``, ``cifar_fractalresnet``, ``cifar_ceecnetv1``, ``cifar_ceecnetv2`` with the sizes of
Table A.3, and ``*_tiny`` variants of each for tests.
"""
from __future__ import annotations

from functools import partial
from typing import Callable, Dict, Sequence

from nn import CEECUnit, Conv2DN, FTAttResUnit, ResBlock, get_norm

from mxnet.gluon import HybridBlock
from mxnet.gluon import nn as gluon_nn

from mantis.registry import register_model


class ResidualUnit(HybridBlock):
    """Pre-activation residual unit of ResNet V2 (He et al. 2016): ``x + ResBlock(x)``, the "ResNet"
    column of Table A.3 (the FracTAL ResNet unit without its attention)."""

    def __init__(self, channels: int, norm: str = "BatchNorm", norm_groups: int = 4, **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            self.res = ResBlock(channels, norm=norm, norm_groups=norm_groups)

    def hybrid_forward(self, F, x):
        return x + self.res(x)


class DenseN(HybridBlock):
    """The paper's ``DenseN`` (Table A.3): a dense layer (no bias: the normalisation's shift replaces
    it) followed by a normalisation layer.

    The features are viewed as ``(B, units, 1, 1)`` for the normalisation, so that every entry of
    :data:`nn.norm.NORMS` (GroupNorm included, which needs spatial axes) can be used.
    """

    def __init__(self, units: int, norm: str = "BatchNorm", norm_groups: int = 4, **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            self.dense = gluon_nn.Dense(units, use_bias=False)
            self.norm = get_norm(norm, units, norm_groups)

    def hybrid_forward(self, F, x):
        x = self.norm(F.reshape(self.dense(x), shape=(0, 0, 1, 1)))
        return F.flatten(x)


def _resnet_block(channels: int, nheads: int, ftdepth: int, norm: str, norm_groups: int) -> HybridBlock:
    return ResidualUnit(channels, norm=norm, norm_groups=norm_groups)


def _fractal_block(channels: int, nheads: int, ftdepth: int, norm: str, norm_groups: int) -> HybridBlock:
    return FTAttResUnit(channels, nheads=nheads, groups=nheads, ftdepth=ftdepth, norm=norm, norm_groups=norm_groups)


def _ceec_block(channels: int, nheads: int, ftdepth: int, norm: str, norm_groups: int,
                version: int) -> HybridBlock:
    return CEECUnit(channels, nheads=nheads, groups=nheads, version=version, ftdepth=ftdepth, norm=norm,
                    norm_groups=norm_groups)


#: block name -> factory(channels, nheads, ftdepth, norm, norm_groups). The units are the change-detection
#: models' (:mod:`mantis.models`), their convolutions grouped by the heads as there (Listings 6-7, the
#: authors' code); the ResNet block has no attention and ignores ``nheads`` and ``ftdepth`` (Table A.3 lists
#: no heads for it), so its convolutions are ungrouped.
BLOCKS: Dict[str, Callable[..., HybridBlock]] = {
    "resnet": _resnet_block,
    "fractal": _fractal_block,
    "ceecv1": partial(_ceec_block, version=1),
    "ceecv2": partial(_ceec_block, version=2),
}


class CifarNet(HybridBlock):
    """The CIFAR-10 backbone of Table A.3 with a chosen building block.

    Layout (Table A.3, all convolutions 3x3 with padding 1; ``nf``/``nh`` from ``widths``/``nheads``)::

        stem      Conv2DN(nf_1)                       (not in Table A.3, see below)
        stage i   BBlock[nf_i, nh_i] x units_per_stage
                  Conv2DN(nf_{i+1}, stride 2)         (between stages: halves the size)
        head      ReLU, DenseN(4096), ReLU, DenseN(512), ReLU, DenseN(classes)

    Table A.3 starts with ``BBlock[nf=64]`` and lists no stem. Every building block keeps its
    channel count (``x + f(x)``), so the 3-channel image is first brought to ``nf_1`` channels by a
    stride-1 Conv2DN: the one layer added to the table. The last layer is a ``DenseN`` (dense +
    normalisation) as Table A.3 lists it (Layer 14), not a plain dense layer. No pooling precedes the
    first DenseN (none is listed), so it sees the flattened ``nf_last x 8 x 8`` features of a 32 x 32
    image: with the paper's sizes it holds 256 * 64 * 4096 = 67.1 M of the weights.

    Normalisation: the paper's Conv2DN/DenseN layers normalise, and Appendix C says GroupNorm was used
    when the batch per GPU was very small (< 4, the change-detection models); CIFAR-10's 32 x 32
    images allow ordinary batches, so the default here is BatchNorm. ``norm`` selects any entry of
    :data:`nn.norm.NORMS`.

    Parameters
    ----------
    block : str
        Building block, a key of :data:`BLOCKS`: ``'resnet'``, ``'fractal'``, ``'ceecv1'``, ``'ceecv2'``.
    widths : sequence of int
        Channels ``nf`` of each stage (paper: 64, 128, 256).
    nheads : sequence of int
        FracTAL heads ``nh`` of each stage (paper: 8, 16, 32); ignored by ``'resnet'``.
    dense : sequence of int
        Widths of the hidden DenseN layers (paper: 4096, 512).
    classes : int
        Number of classes (the output layer's width).
    units_per_stage : int
        Building blocks per stage (paper: 2).
    ftdepth : int
        Depth ``d`` of the FracTAL's similarity (paper: 5 in all experiments, Section 8).
    norm, norm_groups : str, int
        Normalisation name (see :data:`nn.norm.NORMS`) and its groups (GroupNorm only).
    """

    def __init__(self, block: str = "fractal", widths: Sequence[int] = (64, 128, 256),
                 nheads: Sequence[int] = (8, 16, 32), dense: Sequence[int] = (4096, 512), classes: int = 10,
                 units_per_stage: int = 2, ftdepth: int = 5, norm: str = "BatchNorm", norm_groups: int = 4,
                 **kwargs):
        super().__init__(**kwargs)
        try:
            make_block = BLOCKS[block]
        except KeyError:
            raise ValueError(f"unknown building block {block!r}; choose one of {sorted(BLOCKS)}") from None
        if len(widths) != len(nheads) or not widths:
            raise ValueError(f"widths {tuple(widths)} and nheads {tuple(nheads)} need one entry per stage")
        norm_args = dict(norm=norm, norm_groups=norm_groups)
        with self.name_scope():
            self.features = gluon_nn.HybridSequential(prefix="features_")
            with self.features.name_scope():
                self.features.add(Conv2DN(widths[0], **norm_args))
                for stage, (channels, heads) in enumerate(zip(widths, nheads)):
                    if stage:
                        self.features.add(Conv2DN(channels, strides=2, **norm_args))
                    for _ in range(units_per_stage):
                        self.features.add(make_block(channels, heads, ftdepth, norm, norm_groups))
            self.head = gluon_nn.HybridSequential(prefix="head_")
            with self.head.name_scope():
                for units in (*dense, classes):
                    self.head.add(gluon_nn.Activation("relu"), DenseN(units, **norm_args))

    def hybrid_forward(self, F, x):
        return self.head(self.features(x))


#: Table A.3 sizes, and small ones (same topology, two stages) for tests.
PAPER_SIZES = dict(widths=(64, 128, 256), nheads=(8, 16, 32), dense=(4096, 512))
TINY_SIZES = dict(widths=(8, 16), nheads=(2, 2), dense=(32, 16))

#: registry name -> building block
REGISTERED = {
    "cifar_resnet": "resnet",
    "cifar_fractalresnet": "fractal",
    "cifar_ceecnetv1": "ceecv1",
    "cifar_ceecnetv2": "ceecv2",
}

for _name, _block in REGISTERED.items():
    register_model(_name, CifarNet, block=_block, **PAPER_SIZES)
    register_model(f"{_name}_tiny", CifarNet, block=_block, **TINY_SIZES)
