"""The mantis macro-topology for change detection (paper Section 6.2, Fig. 6) and its registry
entries (``<unit>_d6nf32`` of Section 8, ``<unit>_small`` for CPU demos, ``<unit>_tiny`` for tests).

Siamese encoder: both dates pass through the *same* blocks (one set of parameters). At every depth
the two dates' features are combined by relative attention :class:`nn.Fusion` (eqs 15-17) and kept
for the decoder; between depths a strided Conv2DN (no activation) halves the resolution and doubles
the channels. The deepest features of both dates are concatenated into PSPPooling. A single decoder
upsamples (bilinear x2, 1x1 Conv2DN, ReLU) and combines with the fused skip of the same depth by
concatenation + 1x1 Conv2DN (CEECNetV1, FracTAL ResNet) or by :class:`nn.Fusion` (CEECNetV2, Section
6.2: "replaces all concatenation operations followed by a normed convolution, with a Fusion"),
then applies a unit. The conditioned head (:mod:`mantis.head`) takes the last decoder features and
the fused first-level features.

Settings the paper leaves implicit follow the authors' D6nf32 example: filters ``nf * 2**i`` and
heads ``nheads_start * 2**i`` at depth ``i`` (the decoder unit at depth ``i`` uses the heads of depth
``i + 1``, as in the authors' code), units' convolutions grouped by their number of heads (Listings
6-7), GroupNorm with 4 groups, PSPPooling depth 4, FracTAL depth 5.
"""
from __future__ import annotations

from functools import partial
from typing import Callable, Dict, Tuple

from nn import CEECUnit, Conv2DN, FTAttResUnit, Fusion, PSPPooling, make_combiner
from nn.ops import upsample2x

from mxnet.gluon import HybridBlock, nn

from .head import ConditionedHead
from .registry import register_model

#: unit name -> factory(channels, nheads, groups, ftdepth, norm, norm_groups)
UNITS: Dict[str, Callable[..., HybridBlock]] = {
    "ceecnetv1": partial(CEECUnit, version=1),
    "ceecnetv2": partial(CEECUnit, version=2),
    "fractalresnet": FTAttResUnit,
}

#: unit name -> how the decoder combines upsampled and skip features (1: concat + Conv2DN, 2: Fusion)
DECODER_COMBINE: Dict[str, int] = {"ceecnetv1": 1, "ceecnetv2": 2, "fractalresnet": 1}


class DecoderStep(HybridBlock):
    """Upsample the deeper features (bilinear x2, 1x1 Conv2DN to ``channels``, ReLU), combine them
    with the skip features of the same depth, ReLU, then apply the unit."""

    def __init__(self, channels: int, unit: HybridBlock, combine: int, nheads: int, ftdepth: int,
                 norm: str, norm_groups: int, **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            self.up = Conv2DN(channels, kernel_size=1, norm=norm, norm_groups=norm_groups)
            self.combine = make_combiner(combine, channels, channels, nheads=nheads, groups=1, ftdepth=ftdepth,
                                         norm=norm, norm_groups=norm_groups, concat_kernel=1)
            self.unit = unit

    def hybrid_forward(self, F, deep, skip):
        up = F.relu(self.up(upsample2x(F, deep)))
        return self.unit(F.relu(self.combine(up, skip)))


class MantisCD(HybridBlock):
    """mantis change-detection network: two dates in, ``(segmentation, boundary, distance)`` out.

    Parameters
    ----------
    unit : str
        Building block: ``"ceecnetv1"``, ``"ceecnetv2"`` or ``"fractalresnet"`` (see :data:`UNITS`).
    nfilters : int
        Filters at the first depth (paper: 32).
    depth : int
        Encoder depths (paper: 6). Inputs need H, W divisible by ``2 ** (depth - 1 + psp_depth - 1)``.
    classes : int
        Output classes (2: one-hot no-change / change).
    nheads_start : int
        Heads of the FracTAL at the first depth (doubling per depth).
    ftdepth : int
        Depth of the fractal Tanimoto inside the attention (paper: 5).
    psp_depth : int
        Pyramid levels of PSPPooling (middle and head).
    norm, norm_groups : str, int
        Normalisation (paper: GroupNorm) and its groups.
    """

    def __init__(self, unit: str = "ceecnetv1", nfilters: int = 32, depth: int = 6, classes: int = 2,
                 nheads_start: int = 4, ftdepth: int = 5, psp_depth: int = 4, norm: str = "GroupNorm",
                 norm_groups: int = 4, **kwargs):
        super().__init__(**kwargs)
        try:
            make_unit = UNITS[unit]
        except KeyError:
            raise ValueError(f"unknown unit {unit!r}; choose one of {sorted(UNITS)}") from None
        if depth < 2:
            raise ValueError(f"mantis depth must be >= 2, got {depth}")
        self.depth = depth
        self.psp_depth = psp_depth
        self.config = dict(unit=unit, nfilters=nfilters, depth=depth, classes=classes, nheads_start=nheads_start,
                           ftdepth=ftdepth, psp_depth=psp_depth, norm=norm, norm_groups=norm_groups)
        normed = dict(norm=norm, norm_groups=norm_groups)

        def block(level: int, heads_level: int) -> HybridBlock:
            heads = nheads_start * 2 ** heads_level
            return make_unit(nfilters * 2 ** level, nheads=heads, groups=heads, ftdepth=ftdepth, **normed)

        with self.name_scope():
            self.stem = Conv2DN(nfilters, kernel_size=1, **normed)
            self.fuse_stem = Fusion(nfilters, nheads=1, ftdepth=ftdepth, **normed)
            self.encoder = nn.HybridSequential()
            self.fusions = nn.HybridSequential()
            self.downs = nn.HybridSequential()
            for level in range(depth):
                self.encoder.add(block(level, level))
                if level < depth - 1:
                    heads = nheads_start * 2 ** level
                    self.fusions.add(Fusion(nfilters * 2 ** level, nheads=heads, ftdepth=ftdepth, **normed))
                    self.downs.add(Conv2DN(nfilters * 2 ** (level + 1), strides=2, **normed))
            self.middle = PSPPooling(nfilters * 2 ** (depth - 1), depth=psp_depth, **normed)
            self.decoder = nn.HybridSequential()
            for level in range(depth - 2, -1, -1):
                self.decoder.add(DecoderStep(nfilters * 2 ** level, block(level, level + 1), DECODER_COMBINE[unit],
                                             nheads_start * 2 ** (level + 1), ftdepth, **normed))
            self.head = ConditionedHead(nfilters, classes=classes, psp_depth=psp_depth, **normed)

    @property
    def size_multiple(self) -> int:
        """Input height and width must be multiples of this."""
        return 2 ** (self.depth - 1 + self.psp_depth - 1)

    def encode(self, F, x) -> Tuple[list, object]:
        """Per-depth features of one date (the shared-weight encoder branch) and its stem output."""
        stem = self.stem(x)
        feats, h = [], stem
        for level, unit in enumerate(self.encoder):
            h = unit(h)
            feats.append(h)
            if level < self.depth - 1:
                h = self.downs[level](h)
        return feats, stem

    def hybrid_forward(self, F, date1, date2):
        feats1, stem1 = self.encode(F, date1)
        feats2, stem2 = self.encode(F, date2)
        fused_stem = self.fuse_stem(stem1, stem2)
        skips = [fuse(a, b) for fuse, a, b in zip(self.fusions, feats1, feats2)]
        h = F.relu(self.middle(feats1[-1], feats2[-1]))
        for step, skip in zip(self.decoder, reversed(skips)):
            h = step(h, skip)
        return self.head(h, fused_stem)


def _register() -> None:
    sizes = {
        "d6nf32": dict(nfilters=32, depth=6, nheads_start=4),                # the paper's (Section 8)
        "small": dict(nfilters=16, depth=4, nheads_start=1, psp_depth=3),    # CPU demos
        "tiny": dict(nfilters=8, depth=3, nheads_start=1, psp_depth=2),      # tests
    }
    for unit in UNITS:
        for size, args in sizes.items():
            register_model(f"{unit}_{size}", MantisCD, unit=unit, **args)


_register()
