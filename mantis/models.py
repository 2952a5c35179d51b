"""The mantis macro-topology for change detection (paper Section 6.2, Fig. 6) and its registry
entries (``<unit>_d6nf32`` of Section 8, ``<unit>_small`` for CPU demos, ``<unit>_tiny`` for tests).

Siamese encoder: both dates pass through the *same* blocks (one set of parameters). At every depth
the two dates' features are combined by relative attention :class:`nn.Fusion` (eqs 15-17) and kept
for the decoder; between depths a strided Conv2DN (no activation) halves the resolution and doubles
the channels. The deepest features of both dates are concatenated into PSPPooling. A single decoder
upsamples (bilinear x2, 1x1 Conv2DN, ReLU) and combines with the fused skip of the same depth by
concatenation + 1x1 Conv2DN (CEECNetV1, FracTAL ResNet) or by :class:`nn.Fusion` (CEECNetV2, Section
6.2: "replaces all concatenation operations followed by a normed convolution, with a Fusion operation
as described in Listing 3": its fusing 3x3 convolution grouped by the heads, as Listing 3 writes it,
and no activation inside), then ReLU and a unit. The conditioned head (:mod:`mantis.head`) takes the
last decoder features and the fused first-level features. Fusion, in the encoder as in the decoder,
ends with its normed convolution (Listing 3).

Settings the paper leaves implicit follow the authors' D6nf32 example: filters ``nf * 2**i`` and
heads ``nheads_start * 2**i`` at depth ``i`` (the decoder unit at depth ``i`` uses the heads of depth
``i + 1``, as in the authors' code), units' convolutions grouped by their number of heads (Listings
6-7), GroupNorm with 4 groups, PSPPooling depth 4, FracTAL depth 5.

Two fidelities (:data:`FIDELITIES`, the ``fidelity`` argument, through the registry as
``get_model(name, fidelity="authors")``):

- ``"paper"`` (default): the paper wherever it is explicit or its listings agree (module and block
  docstrings say where a choice was made), with Wu & He's per-channel GroupNorm affine.
- ``"authors"``: the network of the authors' public code (``mantis_dn_cmtsk``), parameter for
  parameter, so that its trained ``.params`` files load (:func:`utilities.artifacts.authors.load_authors_parameters`)
  and give its outputs: per-group GroupNorm affine, Fusion ending in a ReLU, decoder steps of nearest
  x2 + 1x1 Conv2DN to half the channels + concatenation + 1x1 Conv2DN (no ReLU), or with
  ``upfuse=True`` bilinear x2 + 3x3 Conv2DN grouped by the heads + Fusion; V2's ExpandNCombine
  convolving its high-resolution input, the macro-topology's Fusions at FracTAL depth 5 whatever
  ``ftdepth``, the head's PSPPooling at depth 4 whatever ``psp_depth``, a softmax distance output and
  the crisp sigmoid parametrised as ``0.01 + sigmoid(raw)``.
"""
from __future__ import annotations

from functools import partial
from typing import Callable, Dict, NamedTuple, Optional, Tuple

from nn import CEECUnit, ConcatConv2DN, Conv2DN, FTAttResUnit, Fusion, PSPPooling
from nn.ops import relu, upsample2x

from mxnet.gluon import HybridBlock
from mxnet.gluon import nn as gluon_nn

from mantis.head import ConditionedHead
from mantis.registry import register_model

#: unit name -> factory(channels, nheads, groups, ftdepth, norm, norm_groups, **unit_args)
UNITS: Dict[str, Callable[..., HybridBlock]] = {
    "ceecnetv1": partial(CEECUnit, version=1),
    "ceecnetv2": partial(CEECUnit, version=2),
    "fractalresnet": FTAttResUnit,
}


def nearest2x(F, x):
    """Nearest-neighbour x2 resize of the spatial axes: every pixel repeated into a 2 x 2 block."""
    return x.repeat(repeats=2, axis=2).repeat(repeats=2, axis=3)


#: name -> x2 spatial upsampling ``f(F, x)``
UPSAMPLERS: Dict[str, Callable] = {"bilinear": upsample2x, "nearest": nearest2x}


class DecoderStyle(NamedTuple):
    """How a decoder step brings the deeper features up before combining them with the skip."""

    upsample: str       #: key of :data:`UPSAMPLERS`
    up_divisor: int     #: the up-convolution gives ``channels // up_divisor`` channels
    up_kernel: int      #: its kernel size
    up_grouped: bool    #: grouped by the step's heads (else ungrouped)
    relu: bool          #: ReLU after the combination


class Fidelity(NamedTuple):
    """The choices a fidelity fixes (see the module docstring)."""

    norm: str                               #: default normalisation (:data:`nn.norm.NORMS`)
    fusion_relu: bool                       #: :class:`nn.Fusion` ends in a ReLU
    upfuse: Dict[str, bool]                 #: unit -> default of ``upfuse`` (decoder combines by Fusion)
    decoder: Dict[bool, DecoderStyle]       #: upfuse -> decoder step
    unit_args: Dict[str, dict]              #: unit -> extra arguments of its factory
    macro_ftdepth: Optional[int]            #: FracTAL depth of the macro-topology's Fusions (None: ftdepth)
    head_psp_depth: Optional[int]           #: PSPPooling depth of the head (None: psp_depth)
    distance: str                           #: distance activation (:data:`mantis.head.DISTANCE_ACTIVATIONS`)
    crisp: str                              #: crisp-sigmoid parametrisation (:data:`nn.activations.PARAMETRISATIONS`)


#: Section 6.2: bilinear upsampling, then "a concatenation operation followed by a normed convolution"
#: (V1, FracTAL ResNet) or, in V2, "a Fusion operation as described in Listing 3" (whose fusing
#: convolution is grouped by its heads). The up-convolution (1x1 to the skip's channels, ReLU) and the
#: ReLU after the combination are not specified by the paper: mantis's choice.
_PAPER_DECODER = DecoderStyle(upsample="bilinear", up_divisor=1, up_kernel=1, up_grouped=False, relu=True)

#: fidelity name -> choices
FIDELITIES: Dict[str, Fidelity] = {
    "paper": Fidelity(
        norm="GroupNorm", fusion_relu=False,
        upfuse={"ceecnetv1": False, "ceecnetv2": True, "fractalresnet": False},
        decoder={False: _PAPER_DECODER, True: _PAPER_DECODER},
        unit_args={}, macro_ftdepth=None, head_psp_depth=None, distance="sigmoid", crisp="paper"),
    "authors": Fidelity(
        norm="GroupNormPerGroup", fusion_relu=True,
        upfuse={"ceecnetv1": False, "ceecnetv2": False, "fractalresnet": False},
        decoder={False: DecoderStyle(upsample="nearest", up_divisor=2, up_kernel=1, up_grouped=False, relu=False),
                 True: DecoderStyle(upsample="bilinear", up_divisor=1, up_kernel=3, up_grouped=True, relu=False)},
        unit_args={"ceecnetv2": dict(high_conv=True)}, macro_ftdepth=5, head_psp_depth=4, distance="softmax",
        crisp="authors"),
}


def _concat_combiner(channels: int, nheads: int, ftdepth: int, relu: bool, norm: str, norm_groups: int):
    return ConcatConv2DN(channels, kernel_size=1, norm=norm, norm_groups=norm_groups)


def _fusion_combiner(channels: int, nheads: int, ftdepth: int, relu: bool, norm: str, norm_groups: int):
    return Fusion(channels, nheads=nheads, ftdepth=ftdepth, relu=relu, norm=norm, norm_groups=norm_groups)


#: upfuse -> the decoder's combination of upsampled and skip features: concatenation + 1x1 Conv2DN, or
#: Listing 3's Fusion (fusing convolution grouped by the heads)
DECODER_COMBINERS: Dict[bool, Callable[..., HybridBlock]] = {False: _concat_combiner, True: _fusion_combiner}


class DecoderStep(HybridBlock):
    """Upsample the deeper features x2, Conv2DN + ReLU (:class:`DecoderStyle`), combine them with the skip
    features of the same depth (:data:`DECODER_COMBINERS`), optionally ReLU, then apply the unit."""

    def __init__(self, channels: int, unit: HybridBlock, style: DecoderStyle, upfuse: bool, nheads: int,
                 ftdepth: int, fusion_relu: bool, norm: str, norm_groups: int, **kwargs):
        super().__init__(**kwargs)
        self._upsample = UPSAMPLERS[style.upsample]
        self.relu = style.relu
        with self.name_scope():
            self.up = Conv2DN(channels // style.up_divisor, kernel_size=style.up_kernel,
                              groups=nheads if style.up_grouped else 1, norm=norm, norm_groups=norm_groups)
            self.combine = DECODER_COMBINERS[upfuse](channels, nheads, ftdepth, fusion_relu, norm, norm_groups)
            self.unit = unit

    def hybrid_forward(self, F, deep, skip):
        up = relu(F, self.up(self._upsample(F, deep)))
        combined = self.combine(up, skip)
        return self.unit(relu(F, combined) if self.relu else combined)


def _lookup(table: dict, key, what: str):
    try:
        return table[key]
    except KeyError:
        raise ValueError(f"unknown {what} {key!r}; choose one of {sorted(table)}") from None


class MantisCD(HybridBlock):
    """mantis change-detection network: two dates in, ``(segmentation, boundary, distance)`` out.

    Parameters
    ----------
    unit : str
        Building block: ``"ceecnetv1"``, ``"ceecnetv2"`` or ``"fractalresnet"`` (see :data:`UNITS`).
    nfilters : int
        Filters at the first depth (paper: 32).
    depth : int
        Encoder depths (paper: 6). Inputs need H, W divisible by :attr:`size_multiple`.
    classes : int
        Output classes (2: one-hot no-change / change).
    nheads_start : int
        Heads of the FracTAL at the first depth (doubling per depth).
    ftdepth : int
        Depth of the fractal Tanimoto inside the attention (paper: 5).
    psp_depth : int
        Pyramid levels of PSPPooling (middle and head; the ``authors`` head always uses 4).
    norm, norm_groups : str, int
        Normalisation and its groups; ``norm`` defaults to the fidelity's (GroupNorm with a per-channel
        affine for ``paper``, per-group for ``authors``).
    fidelity : str
        ``"paper"`` or ``"authors"`` (:data:`FIDELITIES`, module docstring).
    upfuse : bool, optional
        Combine in the decoder by Fusion instead of concatenation + Conv2DN. Default: the fidelity's
        (``paper``: V2 only, Section 6.2; ``authors``: never, their ``upFuse=False``).
    """

    def __init__(self, unit: str = "ceecnetv1", nfilters: int = 32, depth: int = 6, classes: int = 2,
                 nheads_start: int = 4, ftdepth: int = 5, psp_depth: int = 4, norm: Optional[str] = None,
                 norm_groups: int = 4, fidelity: str = "paper", upfuse: Optional[bool] = None, **kwargs):
        super().__init__(**kwargs)
        make_unit = _lookup(UNITS, unit, "unit")
        fid = _lookup(FIDELITIES, fidelity, "fidelity")
        if depth < 2:
            raise ValueError(f"mantis depth must be >= 2, got {depth}")
        norm = fid.norm if norm is None else norm
        upfuse = fid.upfuse[unit] if upfuse is None else bool(upfuse)
        head_psp_depth = fid.head_psp_depth or psp_depth
        macro_ftdepth = fid.macro_ftdepth or ftdepth
        self.depth = depth
        self.psp_depth = psp_depth
        self.head_psp_depth = head_psp_depth
        self.config = dict(unit=unit, nfilters=nfilters, depth=depth, classes=classes, nheads_start=nheads_start,
                           ftdepth=ftdepth, psp_depth=psp_depth, norm=norm, norm_groups=norm_groups,
                           fidelity=fidelity, upfuse=upfuse)
        normed = dict(norm=norm, norm_groups=norm_groups)
        unit_args = fid.unit_args.get(unit, {})

        def heads(level: int) -> int:
            return nheads_start * 2 ** level

        def block(level: int, heads_level: int) -> HybridBlock:
            return make_unit(nfilters * 2 ** level, nheads=heads(heads_level), groups=heads(heads_level),
                             ftdepth=ftdepth, **normed, **unit_args)

        def fusion(level: int, nheads: int) -> HybridBlock:
            return Fusion(nfilters * 2 ** level, nheads=nheads, ftdepth=macro_ftdepth, relu=fid.fusion_relu,
                          **normed)

        with self.name_scope():
            self.stem = Conv2DN(nfilters, kernel_size=1, **normed)
            self.fuse_stem = fusion(0, 1)
            self.encoder = gluon_nn.HybridSequential()
            self.fusions = gluon_nn.HybridSequential()
            self.downs = gluon_nn.HybridSequential()
            for level in range(depth):
                self.encoder.add(block(level, level))
                if level < depth - 1:
                    self.fusions.add(fusion(level, heads(level)))
                    self.downs.add(Conv2DN(nfilters * 2 ** (level + 1), strides=2, **normed))
            self.middle = PSPPooling(nfilters * 2 ** (depth - 1), depth=psp_depth, **normed)
            self.decoder = gluon_nn.HybridSequential()
            for level in range(depth - 2, -1, -1):
                self.decoder.add(DecoderStep(nfilters * 2 ** level, block(level, level + 1), fid.decoder[upfuse],
                                             upfuse, heads(level + 1), ftdepth, fid.fusion_relu, **normed))
            self.head = ConditionedHead(nfilters, classes=classes, psp_depth=head_psp_depth, distance=fid.distance,
                                        crisp=fid.crisp, **normed)

    @property
    def size_multiple(self) -> int:
        """Input height and width must be multiples of this."""
        return 2 ** max(self.depth - 1 + self.psp_depth - 1, self.head_psp_depth - 1)

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
        h = relu(F, self.middle(feats1[-1], feats2[-1]))
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
