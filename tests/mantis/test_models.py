"""mantis change-detection models (paper Section 6.2-6.3, Figs 6-7): every registered tiny variant."""
from nn import Fusion

import mxnet as mx
import numpy as np
import pytest
from mxnet import nd

from mantis import get_model, list_models
from mantis.models import FIDELITIES, UNITS, MantisCD, nearest2x
from mantis.summary import count_parameters
from tests.mantis.readings import parameters, ungrouping, units

TINY_CD = [f"{unit}_tiny" for unit in sorted(UNITS)]
TINY_BOTH = [(name, fidelity) for name in TINY_CD for fidelity in sorted(FIDELITIES)]
SIZE = 16  # multiple of the tiny models' size_multiple (2 ** (depth - 1 + psp_depth - 1) = 8)


def _dates(batch=2, seed=0):
    rng = np.random.RandomState(seed)
    return (nd.array(rng.uniform(size=(batch, 3, SIZE, SIZE))), nd.array(rng.uniform(size=(batch, 3, SIZE, SIZE))))


def _build(name, seed=0, fidelity="paper"):
    mx.random.seed(seed)
    net = get_model(name, fidelity=fidelity)
    net.initialize(mx.init.Xavier())
    return net


def test_registry_lists_all_variants():
    names = list_models()
    for unit in UNITS:
        assert f"{unit}_d6nf32" in names and f"{unit}_tiny" in names
    assert set(list_models(tiny=True)) >= set(TINY_CD)
    assert not any("tiny" in n for n in list_models(tiny=False))


def test_overrides_reach_the_model():
    net = get_model("ceecnetv1_d6nf32", nfilters=64, depth=4)
    assert net.config["nfilters"] == 64 and net.config["depth"] == 4 and net.config["unit"] == "ceecnetv1"


def test_unknown_unit():
    with pytest.raises(ValueError, match="unknown unit 'resnext'"):
        MantisCD(unit="resnext")


@pytest.mark.parametrize("name,fidelity", TINY_BOTH)
def test_outputs_are_probabilities(name, fidelity):
    """Every output lies in [0, 1], the segmentation sums to 1 over the classes (shapes, finiteness,
    gradients and hybridization: test_contract.py)."""
    net = _build(name, fidelity=fidelity)
    segm, bound, dist = net(*_dates())
    for out in (segm, bound, dist):
        a = out.asnumpy()
        assert a.min() >= 0.0 and a.max() <= 1.0
    np.testing.assert_allclose(segm.sum(axis=1).asnumpy(), 1.0, rtol=1e-5)  # softmax over classes


@pytest.mark.parametrize("name", TINY_CD)
def test_encoder_weights_are_shared_between_dates(name):
    """One set of encoder parameters: changing one of its weights changes both dates' features."""
    net = _build(name)
    a, b = _dates()
    net(a, b)
    before = [net.encode(nd, x)[0][-1].asnumpy() for x in (a, b)]
    w = net.encoder[0].collect_params()
    first_conv = next(p for n, p in w.items() if n.endswith("weight"))
    first_conv.set_data(first_conv.data() * 1.5)
    after = [net.encode(nd, x)[0][-1].asnumpy() for x in (a, b)]
    for x, y in zip(before, after):
        assert not np.allclose(x, y)


@pytest.mark.parametrize("name", TINY_CD)
def test_swapping_dates_changes_the_output(name, set_gammas):
    """Fusion's attentions and its concatenation order make the model date-ordered (the paper teaches
    time-reversal invariance by augmentation, Section 8.3, not by construction)."""
    net = _build(name)
    set_gammas(net, 0.5)
    a, b = _dates()
    ab = net(a, b)[0].asnumpy()
    ba = net(b, a)[0].asnumpy()
    assert not np.allclose(ab, ba, atol=1e-6)


def test_size_multiple():
    assert get_model("ceecnetv1_d6nf32").size_multiple == 256
    assert get_model("ceecnetv1_tiny").size_multiple == 8
    assert get_model("ceecnetv1_tiny", fidelity="authors").size_multiple == 8  # the head's PSPPooling: depth 4


def test_fidelity_through_the_registry_with_overrides():
    """get_model(name, fidelity=...) with other overrides: the authors' normalisation (per-group affine)
    unless norm is given; upfuse defaults to the fidelity's (paper: V2 only; authors: never)."""
    net = get_model("ceecnetv2_d6nf32", fidelity="authors", nfilters=16, depth=4, nheads_start=2, psp_depth=2)
    assert net.config == dict(unit="ceecnetv2", nfilters=16, depth=4, classes=2, nheads_start=2, ftdepth=5,
                              psp_depth=2, norm="GroupNormPerGroup", norm_groups=4, fidelity="authors", upfuse=False)
    assert get_model("ceecnetv2_tiny").config["upfuse"] is True
    assert get_model("ceecnetv1_tiny").config["upfuse"] is False
    assert get_model("ceecnetv1_tiny", fidelity="authors", upfuse=True, norm="BatchNorm").config["norm"] == "BatchNorm"
    with pytest.raises(ValueError, match=r"unknown fidelity 'exact'; choose one of \['authors', 'paper'\]"):
        get_model("ceecnetv1_tiny", fidelity="exact")


#: trainable parameters of the D6nf32 models with fidelity="paper" (README's table)
PAPER_D6NF32 = {"fractalresnet": 24_087_998, "ceecnetv1": 40_548_188, "ceecnetv2": 64_349_992}

#: Listing 5's convolutions (mantis's names) that carry no groups in the listing; V2 replaces compr22
#: (``combine_ec``) by a Fusion, whose convolution Listing 3 groups
LISTING5_PLAIN = {"conv_ce", "compress_ce1", "compress_ce2", "conv_ec", "compress_ec", "combine_ec"}
UNGROUPED_IN_LISTINGS = {"fractalresnet": lambda path: path.startswith("res."),
                         "ceecnetv1": lambda path: path.split(".")[0] in LISTING5_PLAIN,
                         "ceecnetv2": lambda path: path.split(".")[0] in LISTING5_PLAIN - {"combine_ec"}}

#: README's table of readings, D6nf32, parameters against mantis ``paper``: Listings 4-5 read literally
#: (ResBlock and Listing 5's convolutions ungrouped); Listings 6-7's Expand/ExpandNCombine ungrouped (the
#: CIFAR-10 models' former reading); V2's decoder Fusions with an ungrouped fusing convolution; the head fed
#: the Fusion of the first unit's outputs (no stem Fusion); the decoder concatenating the resized deeper
#: tensor at its own width (Fig. 6), no 1x1 Conv2DN to c before it
READINGS_D6NF32 = {
    "fractalresnet": dict(listings_4_5=31_083_264, expand=0, decoder_fusion=0, head_input=-74_306,
                          decoder_width=-351_168),
    "ceecnetv1": dict(listings_4_5=48_567_600, expand=18_455_688, decoder_fusion=0, head_input=-74_306,
                      decoder_width=-351_168),
    "ceecnetv2": dict(listings_4_5=40_796_784, expand=18_455_688, decoder_fusion=6_213_888, head_input=-74_306,
                      decoder_width=None),
}


def _readings(net, unit):
    """The parameter effect of each reading of READINGS_D6NF32 on a shape-inferred MantisCD."""
    decoder_width = None
    if not net.config["upfuse"]:  # concatenation: the deeper 2c channels join the skip's c in the 1x1 Conv2DN
        decoder_width = sum(-parameters(step.up) + step.combine.conv.conv.weight.shape[0] * step.up.conv._channels
                            for step in net.decoder)
    return dict(
        listings_4_5=sum(ungrouping(u, UNGROUPED_IN_LISTINGS[unit]) for u in units(net)),
        expand=sum(ungrouping(u, lambda p: p.split(".")[0] in ("expand_ce", "expand_ec")
                              and not any(part.startswith("att") for part in p.split("."))) for u in units(net)),
        decoder_fusion=sum(ungrouping(step.combine, lambda p: p.startswith("fuse.")) for step in net.decoder
                           if isinstance(step.combine, Fusion)),
        head_input=-parameters(net.fuse_stem), decoder_width=decoder_width)


@pytest.mark.parametrize("unit", sorted(PAPER_D6NF32))
def test_paper_d6nf32_parameter_counts_and_other_readings(unit):
    """The README's counts of mantis ``paper`` at D6nf32, and of the readings of the listings it does not
    follow (counted from the layers' shapes, nothing computed)."""
    net = get_model(f"{unit}_d6nf32")
    assert count_parameters(net, (1, 3, 256, 256), (1, 3, 256, 256)) == PAPER_D6NF32[unit]
    assert _readings(net, unit) == READINGS_D6NF32[unit]


def test_paper_v2_decoder_fusion_is_listing3():
    """CEECNetV2 (paper): the decoder combines by Listing 3's Fusion, its fusing convolution grouped by the
    step's heads (Section 6.2), without a trailing activation (Listing 3)."""
    net = get_model("ceecnetv2_tiny")
    net.initialize()
    net.infer_shape(*[nd.zeros((1, 3, SIZE, SIZE))] * 2)
    step = net.decoder[-1]  # depth 1 -> 0: 8 channels, the heads of depth 1 (2)
    assert isinstance(step.combine, Fusion) and not step.combine.relu
    assert step.combine.fuse.conv.weight.shape == (8, 16 // 2, 3, 3)
    assert step.combine.att12.query.conv.weight.shape == (8, 8 // 2, 3, 3)


def test_nearest2x():
    """Every pixel repeated into a 2 x 2 block (MXNet's nearest UpSampling)."""
    x = nd.array(np.random.RandomState(0).randn(2, 3, 4, 5))
    expected = nd.UpSampling(x, scale=2, sample_type="nearest").asnumpy()
    np.testing.assert_array_equal(nearest2x(nd, x).asnumpy(), expected)
