"""Building blocks (paper Sections 5-6, eqs 11-18, Listings 2-7): shapes, gradients, hybridization,
and the equations each block combines its sub-blocks with.

Equation checks recompute a block's output from its own sub-blocks (q/k/v convolutions, attention
layers, fusing convolution, ...) plus an independent NumPy computation where the paper gives the
formula (FracTAL similarity, GroupNorm, grid max pooling; the crisp sigmoid in test_activations.py).
"""
import math

from nn.activations import SigmoidCrisp
from nn.attention import FTAttention2D
from nn.conv import Conv2DN
from nn.fusion import ConcatConv2DN, Fusion
from nn.norm import NORMS, GroupNorm, get_norm
from nn.pooling import PSPPooling, grid_max_pool
from nn.units import CEECUnit, Expand, ExpandNCombine, FTAttResUnit, ResBlock

import mxnet as mx
import numpy as np
import pytest
from mxnet.gluon import nn as gluon_nn

B, H, W = 2, 8, 8


def nd(a):
    return mx.nd.array(a, dtype="float32")


def randn(*shape):
    return nd(np.random.randn(*shape))


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def perturb_params(block, scale=0.5):
    """Add noise to every trainable parameter of ``block``."""
    for p in block.collect_params().values():
        if p.grad_req != "null":
            p.set_data(p.data() + scale * mx.nd.array(np.random.randn(*p.shape)))


# ----------------------------------------------------------------------------- NumPy <FT>^d (eqs 5, 7, 8)

def mean_ft_ref(p, l, depth, axis, smooth=0.0):
    """<FT>^d of eq. 8 (<FT>^0 = FT^0) from eq. 5 with complement (eq. 7), float64."""
    def t(a, b, d):
        ab, aa, bb = (np.sum(x * y, axis=axis, keepdims=True) for x, y in ((a, b), (a, a), (b, b)))
        return (ab + smooth) / (2.0 ** d * (aa + bb) - (2.0 ** (d + 1) - 1.0) * ab + smooth)

    def ft(d):
        return 0.5 * (t(p, l, d) + t(1 - p, 1 - l, d))

    return ft(0) if depth == 0 else sum(ft(i) for i in range(depth)) / depth


# ----------------------------------------------------------------------------- the blocks under test
# name -> (factory, input shapes, output shape)
CASES = {
    "FTAttention2D-c8-h1": (lambda: FTAttention2D(8, nheads=1), [(B, 8, H, W)], (B, 8, H, W)),
    "FTAttention2D-c16-h4-qkv": (lambda: FTAttention2D(16, nheads=4, ftdepth=3),
                                 [(B, 16, H, W)] * 3, (B, 16, H, W)),
    "FTAttention2D-c8-BatchNorm": (lambda: FTAttention2D(8, nheads=2, norm="BatchNorm"),
                                   [(B, 8, H, W)] * 2, (B, 8, H, W)),
    "Fusion-c8-h2": (lambda: Fusion(8, nheads=2), [(B, 8, H, W)] * 2, (B, 8, H, W)),
    "Fusion-c8-out16": (lambda: Fusion(8, out_channels=16, nheads=1), [(B, 8, H, W)] * 2, (B, 16, H, W)),
    "ConcatConv2DN": (lambda: ConcatConv2DN(12), [(B, 8, H, W), (B, 8, H, W)], (B, 12, H, W)),
    "ResBlock-c8": (lambda: ResBlock(8), [(B, 8, H, W)], (B, 8, H, W)),
    "ResBlock-in8-c16": (lambda: ResBlock(16, in_channels=8), [(B, 8, H, W)], (B, 16, H, W)),
    "FTAttResUnit-c8-h2": (lambda: FTAttResUnit(8, nheads=2), [(B, 8, H, W)], (B, 8, H, W)),
    "FTAttResUnit-c16-h4-g2": (lambda: FTAttResUnit(16, nheads=4, groups=2), [(B, 16, H, W)], (B, 16, H, W)),
    "Expand-c8": (lambda: Expand(8), [(B, 16, H, W)], (B, 8, 2 * H, 2 * W)),
    "Expand-c8-g2": (lambda: Expand(8, groups=2), [(B, 8, 4, 6)], (B, 8, 8, 12)),
    "ExpandNCombine-v1": (lambda: ExpandNCombine(8, version=1), [(B, 16, H // 2, W // 2), (B, 8, H, W)],
                          (B, 8, H, W)),
    "ExpandNCombine-v2-h2": (lambda: ExpandNCombine(8, version=2, nheads=2), [(B, 16, H // 2, W // 2), (B, 8, H, W)],
                             (B, 8, H, W)),
    "CEECUnit-v1-c8": (lambda: CEECUnit(8, version=1), [(B, 8, H, W)], (B, 8, H, W)),
    "CEECUnit-v2-c8-h2": (lambda: CEECUnit(8, version=2, nheads=2), [(B, 8, H, W)], (B, 8, H, W)),
    "CEECUnit-v1-c16-h2-g2": (lambda: CEECUnit(16, version=1, nheads=2, groups=2), [(B, 16, H, W)], (B, 16, H, W)),
    "PSPPooling-c8": (lambda: PSPPooling(8), [(B, 8, H, W)], (B, 8, H, W)),
    "PSPPooling-c8-d3-2parts": (lambda: PSPPooling(8, depth=3), [(B, 8, H, 12)] * 2, (B, 8, H, 12)),
    "GroupNorm-c12-g8": (lambda: GroupNorm(12, num_groups=8), [(B, 12, H, W)], (B, 12, H, W)),
    "GroupNorm-c12-g4-pergroup": (lambda: GroupNorm(12, num_groups=4, affine="group"), [(B, 12, H, W)],
                                  (B, 12, H, W)),
    "Fusion-c8-h2-relu": (lambda: Fusion(8, nheads=2, relu=True), [(B, 8, H, W)] * 2, (B, 8, H, W)),
    "ExpandNCombine-v2-h2-highconv": (lambda: ExpandNCombine(8, version=2, nheads=2, high_conv=True),
                                      [(B, 16, H // 2, W // 2), (B, 8, H, W)], (B, 8, H, W)),
    "CEECUnit-v2-c16-h2-g2-highconv": (lambda: CEECUnit(16, version=2, nheads=2, groups=2, high_conv=True),
                                       [(B, 16, H, W)], (B, 16, H, W)),
    "SigmoidCrisp": (lambda: SigmoidCrisp(), [(B, 1, H, W)], (B, 1, H, W)),
}
for _norm in sorted(NORMS):
    CASES[f"Conv2DN-{_norm}"] = (lambda n=_norm: Conv2DN(8, norm=n), [(B, 4, H, W)], (B, 8, H, W))
    CASES[f"Conv2DN-{_norm}-stride2"] = (lambda n=_norm: Conv2DN(8, strides=2, norm=n), [(B, 4, H, W)],
                                         (B, 8, H // 2, W // 2))


def build(name):
    factory, in_shapes, out_shape = CASES[name]
    block = factory()
    block.initialize()
    inputs = [randn(*s) for s in in_shapes]
    return block, inputs, out_shape


@pytest.mark.parametrize("name", sorted(CASES))
def test_output_shape_and_finite(name, set_gammas):
    """Output shapes (Expand doubles H, W; ExpandNCombine returns the high-res shape; PSPPooling and
    Fusion map to their ``channels``/``out_channels``); no NaN, also with attention switched on."""
    block, inputs, out_shape = build(name)
    out = block(*inputs)
    assert out.shape == out_shape
    assert np.all(np.isfinite(out.asnumpy()))
    set_gammas(block, 0.5)
    assert np.all(np.isfinite(block(*inputs).asnumpy()))


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_parameter_gets_gradient(name, set_gammas, check_grads):
    """Every trainable parameter receives a non-zero gradient (attention gammas set to 0.5, since at
    their initial 0 they block the attention branches)."""
    block, inputs, _ = build(name)
    block(*inputs)  # deferred initialisation
    set_gammas(block, 0.5)
    check_grads(block, *inputs)


@pytest.mark.parametrize("name", sorted(CASES))
def test_hybridized_equals_imperative(name, set_gammas, check_hybrid):
    """Hybridized output equals the imperative one (same parameters and inputs, attention switched on)."""
    block, inputs, _ = build(name)
    block(*inputs)
    set_gammas(block, 0.5)
    check_hybrid(block, *inputs, atol=1e-5)


def test_attention_gammas_start_at_zero():
    """The fusion gammas of eqs 14-16 (Fusion, FTAttResUnit, CEECUnit) are initialised to 0."""
    for block, names in ((Fusion(8), ("gamma1", "gamma2")), (FTAttResUnit(8), ("gamma",)),
                         (CEECUnit(8), ("gamma1", "gamma2", "gamma3"))):
        block.initialize()
        for n in names:
            assert getattr(block, n).data().asnumpy().tolist() == [0.0]


# ----------------------------------------------------------------------------- FracTAL (eqs 11-13, Listing 2)

@pytest.mark.parametrize("norm", ["GroupNorm", "BatchNorm"])
@pytest.mark.parametrize("channels,nheads,depth", [(8, 1, 5), (16, 4, 0), (8, 2, 3)])
def test_fractal_attention_listing2(channels, nheads, depth, norm):
    """FTAttention2D = Norm(0.5 (<FT>_chan(q, k) v + <FT>_spat(q, k) v)) with q, k, v = sigmoid(Conv2DN(.))
    of the query, key and value inputs (eqs 11-13; FracTAL in NumPy, smooth=0)."""
    block = FTAttention2D(channels, nheads=nheads, ftdepth=depth, norm=norm, smooth=0.0)
    block.initialize()
    qin, kin, vin = (randn(B, channels, H, W) for _ in range(3))
    out = block(qin, kin, vin).asnumpy()

    q, k, v = (sigmoid(conv(x).asnumpy().astype(np.float64))
               for conv, x in ((block.query, qin), (block.key, kin), (block.value, vin)))
    chan = mean_ft_ref(q, k, depth, axis=(2, 3))   # eq. 11: one value per channel
    spat = mean_ft_ref(q, k, depth, axis=(1,))     # eq. 12: one value per pixel
    assert chan.shape == (B, channels, 1, 1) and spat.shape == (B, 1, H, W)
    att = 0.5 * (chan * v + spat * v)              # eq. 13
    ref = block.norm(nd(att)).asnumpy()
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4)


def test_fractal_attention_self_attention_and_key_value_roles():
    """One input is self-attention (q = k = v inputs); with three inputs the value input only enters
    through v, the key input only through k (the similarity)."""
    block = FTAttention2D(8, nheads=2)
    block.initialize()
    x, y, z = randn(B, 8, H, W), randn(B, 8, H, W), randn(B, 8, H, W)
    np.testing.assert_allclose(block(x).asnumpy(), block(x, x, x).asnumpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(block(x, y).asnumpy(), block(x, y, y).asnumpy(), rtol=1e-6, atol=1e-6)
    # the similarity depends on the key: with values fixed, changing the key changes the output
    assert not np.allclose(block(x, y, z).asnumpy(), block(x, x, z).asnumpy(), atol=1e-4)
    # the key does not act as the value: swapping key and value inputs changes the output
    assert not np.allclose(block(x, y, z).asnumpy(), block(x, z, y).asnumpy(), atol=1e-4)


def test_fractal_attention_rejects_bad_heads():
    """channels must be divisible by nheads (grouped q/k/v convolutions)."""
    with pytest.raises(ValueError):
        FTAttention2D(10, nheads=4)


# ----------------------------------------------------------------------------- Fusion (eqs 15-17, Listing 3)

@pytest.mark.parametrize("channels,out_channels,nheads", [(8, None, 1), (8, 16, 2)])
def test_fusion_equations(channels, out_channels, nheads):
    """Fusion with gamma1 = gamma2 = 0 is fuse(concat([x1, x2])); with gammas non-zero it is
    fuse(concat([x1 (1 + g1 A(x1, x2, x2)), x2 (1 + g2 A(x2, x1, x1))])) (eqs 15-17), which differs."""
    block = Fusion(channels, out_channels=out_channels, nheads=nheads)
    block.initialize()
    x1, x2 = randn(B, channels, H, W), randn(B, channels, H, W)
    out0 = block(x1, x2).asnumpy()
    np.testing.assert_allclose(out0, block.fuse(mx.nd.concat(x1, x2, dim=1)).asnumpy(), rtol=1e-5, atol=1e-5)

    g1, g2 = 0.7, -0.4
    block.gamma1.set_data(mx.nd.array([g1]))
    block.gamma2.set_data(mx.nd.array([g2]))
    out = block(x1, x2).asnumpy()
    f1 = x1 * (1 + g1 * block.att12(x1, x2, x2))  # eq. 15
    f2 = x2 * (1 + g2 * block.att21(x2, x1, x1))  # eq. 16
    ref = block.fuse(mx.nd.concat(f1, f2, dim=1)).asnumpy()  # eq. 17
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
    assert not np.allclose(out, out0, atol=1e-3)


def test_fusion_relu_ends_in_relu():
    """Fusion(relu=True) = relu(Fusion(relu=False)) with the same parameters (the authors' code)."""
    plain, with_relu = Fusion(8, nheads=2), Fusion(8, nheads=2, relu=True)
    plain.initialize()
    x1, x2 = randn(B, 8, H, W), randn(B, 8, H, W)
    plain(x1, x2)
    with_relu.initialize()
    with_relu(x1, x2)
    for a, b in zip(plain.collect_params().values(), with_relu.collect_params().values()):
        b.set_data(a.data())
    np.testing.assert_allclose(with_relu(x1, x2).asnumpy(), mx.nd.relu(plain(x1, x2)).asnumpy(), rtol=1e-6, atol=1e-6)


def test_concat_conv2dn_is_conv_of_concat():
    """ConcatConv2DN(a, b) = Conv2DN(concat([a, b])) (the V1 combination)."""
    block = ConcatConv2DN(8)
    block.initialize()
    a, b = randn(B, 8, H, W), randn(B, 8, H, W)
    np.testing.assert_allclose(block(a, b).asnumpy(), block.conv(mx.nd.concat(a, b, dim=1)).asnumpy(),
                               rtol=1e-6, atol=1e-6)
    assert not np.allclose(block(a, b).asnumpy(), block(a * 0, b).asnumpy(), atol=1e-3)


def test_concat_conv2dn_unequal_channels():
    """ConcatConv2DN(a, b) = Conv2DN(concat([a, b])) also when a and b have different channel counts (its
    documented contract); the value must be computed, not fail when the output is read."""
    block = ConcatConv2DN(8)
    block.initialize()
    a, b = randn(B, 8, H, W), randn(B, 4, H, W)
    out = block(a, b).asnumpy()
    assert out.shape == (B, 8, H, W)
    np.testing.assert_allclose(out, block.conv(mx.nd.concat(a, b, dim=1)).asnumpy(), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("combiner", ["concat", "fusion"])
@pytest.mark.parametrize("channels,out_channels", [(8, 16), (8, 32), (4, 16), (12, 16)])
def test_combiner_backward_after_convolutions(combiner, channels, out_channels, set_gammas):
    """Backward through a two-input combination of convolution outputs completes with finite gradients.
    Regression guard: MXNet 1.9.1's MKLDNN Concat backward kills the process (SIGFPE) for e.g. two
    8-channel convolution outputs concatenated into a 16-filter convolution."""
    conv_a, conv_b = gluon_nn.Conv2D(channels, 3, padding=1), gluon_nn.Conv2D(channels, 3, padding=1)
    block = ConcatConv2DN(out_channels) if combiner == "concat" else Fusion(channels, out_channels=out_channels)
    for blk in (conv_a, conv_b, block):
        blk.initialize()
    x = randn(B, 4, H, W)
    x.attach_grad()
    block(conv_a(x), conv_b(x))
    set_gammas(block, 0.5)
    with mx.autograd.record():
        loss = (block(conv_a(x), conv_b(x)) * randn(B, out_channels, H, W)).sum()
    loss.backward()
    grad = x.grad.asnumpy()
    assert np.all(np.isfinite(grad)) and np.any(grad != 0)


# ----------------------------------------------------------------------------- FracTAL ResNet unit (eq. 14, Listing 4)

def test_ftattresunit_equation():
    """FTAttResUnit: gamma = 0 gives x + ResBlock(x); gamma != 0 gives (x + ResBlock(x)) (1 + gamma A(x))."""
    block = FTAttResUnit(8, nheads=2)
    block.initialize()
    x = randn(B, 8, H, W)
    residual = x + block.res(x)
    np.testing.assert_allclose(block(x).asnumpy(), residual.asnumpy(), rtol=1e-5, atol=1e-5)
    block.gamma.set_data(mx.nd.array([0.6]))
    ref = residual * (1 + 0.6 * block.att(x))
    np.testing.assert_allclose(block(x).asnumpy(), ref.asnumpy(), rtol=1e-5, atol=1e-5)
    assert not np.allclose(block(x).asnumpy(), residual.asnumpy(), atol=1e-3)


def test_resblock_preactivation_order():
    """ResBlock = conv2(relu(norm2(conv1(relu(norm1(x)))))) (pre-activation, Listing 4 comment)."""
    block = ResBlock(8)
    block.initialize()
    x = randn(B, 8, H, W)
    ref = block.conv2(mx.nd.relu(block.norm2(block.conv1(mx.nd.relu(block.norm1(x))))))
    np.testing.assert_allclose(block(x).asnumpy(), ref.asnumpy(), rtol=1e-6, atol=1e-6)


# ----------------------------------------------------------------------------- Expand / ExpandNCombine (Listings 6-7)

def test_expand_listing6():
    """Expand = relu(conv2(relu(conv1(bilinear x2 (x))))) (Listing 6)."""
    block = Expand(8)
    block.initialize()
    x = randn(B, 16, 4, 4)
    up = mx.nd.contrib.BilinearResize2D(x, height=8, width=8)
    ref = mx.nd.relu(block.conv2(mx.nd.relu(block.conv1(up))))
    np.testing.assert_allclose(block(x).asnumpy(), ref.asnumpy(), rtol=1e-5, atol=1e-5)


def test_bilinear_upsampling_of_a_linear_ramp():
    """The E operation resizes bilinearly: a ramp along W stays a (finer) ramp with the same end points,
    and a constant image stays constant."""
    from nn.units import upsample2x

    ramp = nd(np.tile(np.arange(4.0), (1, 1, 3, 1)))
    up = upsample2x(mx.nd, ramp).asnumpy()
    assert up.shape == (1, 1, 6, 8)
    np.testing.assert_allclose(up[0, 0, 0], np.linspace(0.0, 3.0, 8), atol=1e-5)
    np.testing.assert_allclose(upsample2x(mx.nd, mx.nd.ones((1, 2, 3, 5)) * 3).asnumpy(), 3.0, atol=1e-6)


@pytest.mark.parametrize("version", [1, 2])
def test_expandncombine_listing7(version):
    """ExpandNCombine(low, high) = relu(combine(relu(conv(bilinear x2 (low))), high)); V1 combine is
    concat + Conv2DN (Listing 7), V2 is Fusion."""
    block = ExpandNCombine(8, version=version)
    block.initialize()
    assert isinstance(block.combine, ConcatConv2DN if version == 1 else Fusion)
    low, high = randn(B, 16, 4, 4), randn(B, 8, 8, 8)
    up = mx.nd.relu(block.conv(mx.nd.contrib.BilinearResize2D(low, height=8, width=8)))
    ref = mx.nd.relu(block.combine(up, high))
    np.testing.assert_allclose(block(low, high).asnumpy(), ref.asnumpy(), rtol=1e-5, atol=1e-5)


def test_expandncombine_high_conv(set_gammas):
    """high_conv=True (the authors' V2): the high-resolution input passes through relu(conv_high(.)) before
    the combination."""
    block = ExpandNCombine(8, version=2, high_conv=True)
    block.initialize()
    set_gammas(block, 0.5)
    low, high = randn(B, 16, 4, 4), randn(B, 8, 8, 8)
    up = mx.nd.relu(block.conv(mx.nd.contrib.BilinearResize2D(low, height=8, width=8)))
    ref = mx.nd.relu(block.combine(up, mx.nd.relu(block.conv_high(high))))
    np.testing.assert_allclose(block(low, high).asnumpy(), ref.asnumpy(), rtol=1e-5, atol=1e-5)
    assert not hasattr(ExpandNCombine(8, version=2), "conv_high")


@pytest.mark.parametrize("version", [1, 2])
def test_ceecunit_collect_is_ungrouped_with_one_head(version):
    """collect binds the two views (Section 6.1): an ungrouped 3x3 Conv2DN in V1 (Listing 5), a Fusion with one
    head and an ungrouped fusing convolution in V2 (Listing 3 ties the groups to the heads), whatever the
    unit's heads and groups."""
    block = CEECUnit(16, version=version, nheads=2, groups=2)
    block.initialize()
    block(randn(B, 16, H, W))
    fuse = block.collect.conv if version == 1 else block.collect.fuse
    assert fuse.conv.weight.shape == (16, 16, 3, 3)
    if version == 2:
        assert block.collect.att12.query.conv.weight.shape == (8, 8, 3, 3)
    assert block.att.query.conv.weight.shape == (16, 16 // 2, 3, 3)  # the unit's other attentions keep 2 heads


def test_unknown_ceecnet_version():
    """Only versions 1 and 2 exist."""
    with pytest.raises(ValueError):
        ExpandNCombine(8, version=3)
    with pytest.raises(ValueError):
        CEECUnit(8, version=3)


# ----------------------------------------------------------------------------- CEECNet unit (Fig. 5, Listing 5)

def ceec_reference(block, x, g1, g2, g3):
    """Listing 5 (with ``compr12`` applied to ``out1``), from the unit's own sub-blocks."""
    relu = mx.nd.relu
    c = block.conv_ce(x)                               # (nf/2, H)
    ce = relu(block.compress_ce1(c))                   # (nf, H/2)
    assert ce.shape[1:] == (x.shape[1], x.shape[2] // 2, x.shape[3] // 2)
    ce = relu(block.compress_ce2(ce))
    ce = block.expand_ce(ce, c)                        # (nf/2, H)
    e = block.conv_ec(x)                               # (nf/2, H)
    ec = block.expand_ec(e)                            # (nf/4, 2H)
    assert ec.shape[1:] == (x.shape[1] // 4, 2 * x.shape[2], 2 * x.shape[3])
    ec = relu(block.compress_ec(ec))                   # (nf/2, H)
    ec = relu(block.combine_ec(ec, e))
    ce_att = ce * (1 + g2 * block.att_ce(ce, ec, ec))  # relative attention, eq. 15
    ec_att = ec * (1 + g3 * block.att_ec(ec, ce, ce))  # eq. 16
    out = relu(block.collect(ce_att, ec_att))
    return (x + out) * (1 + g1 * block.att(x))         # eq. 14


@pytest.mark.parametrize("version", [1, 2])
def test_ceecunit_composition(version, set_gammas):
    """CEECUnit equals Listing 5 recomputed from its sub-blocks: with all gammas 0 it is
    x + relu(collect(ce, ec)); with gammas non-zero the relative and self attentions enter as in eqs 14-16."""
    block = CEECUnit(8, version=version, nheads=2)
    block.initialize()
    x = randn(B, 8, H, W)
    out0 = block(x).asnumpy()
    np.testing.assert_allclose(out0, ceec_reference(block, x, 0.0, 0.0, 0.0).asnumpy(), rtol=1e-5, atol=1e-5)

    set_gammas(block, 0.3)  # also the gammas of the V2 Fusion sub-blocks
    block.gamma1.set_data(mx.nd.array([0.5]))
    block.gamma2.set_data(mx.nd.array([-0.7]))
    block.gamma3.set_data(mx.nd.array([0.9]))
    out = block(x).asnumpy()
    np.testing.assert_allclose(out, ceec_reference(block, x, 0.5, -0.7, 0.9).asnumpy(), rtol=1e-5, atol=1e-5)
    assert not np.allclose(out, out0, atol=1e-3)


@pytest.mark.parametrize("version", [1, 2])
def test_ceecunit_self_attention_gated_by_gamma1(version):
    """With gamma1 = 0 the self-attention layer ``att`` has no influence (perturbing its parameters leaves
    the output unchanged); with gamma1 != 0 it does (eq. 14)."""
    block = CEECUnit(8, version=version)
    block.initialize()
    x = randn(B, 8, H, W)
    before = block(x).asnumpy()
    perturb_params(block.att)
    np.testing.assert_allclose(block(x).asnumpy(), before, rtol=0, atol=0)
    block.gamma1.set_data(mx.nd.array([0.5]))
    with_att = block(x).asnumpy()
    perturb_params(block.att)
    assert not np.allclose(block(x).asnumpy(), with_att, atol=1e-4)


def test_ftattresunit_attention_gated_by_gamma():
    """FTAttResUnit: ``att`` has no influence at gamma = 0, and influence at gamma != 0 (eq. 14)."""
    block = FTAttResUnit(8)
    block.initialize()
    x = randn(B, 8, H, W)
    before = block(x).asnumpy()
    perturb_params(block.att)
    np.testing.assert_allclose(block(x).asnumpy(), before, rtol=0, atol=0)
    block.gamma.set_data(mx.nd.array([0.5]))
    with_att = block(x).asnumpy()
    perturb_params(block.att)
    assert not np.allclose(block(x).asnumpy(), with_att, atol=1e-4)


def test_ceecunit_rejects_channels_not_divisible_by_4():
    """CEECUnit needs nf/4 channels for the expanded EC view."""
    with pytest.raises(ValueError):
        CEECUnit(6)


# ----------------------------------------------------------------------------- PSPPooling

def grid_max_ref(x, n):
    """Max over each of n x n equal blocks, broadcast back over the block (NumPy)."""
    b, c, h, w = x.shape
    out = np.empty_like(x)
    bh, bw = h // n, w // n
    for i in range(n):
        for j in range(n):
            blk = x[:, :, i * bh:(i + 1) * bh, j * bw:(j + 1) * bw]
            out[:, :, i * bh:(i + 1) * bh, j * bw:(j + 1) * bw] = blk.max(axis=(2, 3), keepdims=True)
    return out


@pytest.mark.parametrize("shape", [(2, 3, 8, 8), (1, 2, 8, 16), (2, 1, 12, 4)])
@pytest.mark.parametrize("cells", [1, 2, 4])
def test_grid_max_pool(shape, cells):
    """grid_max_pool(F, x, n) is the block-wise max broadcast over each block (n = 1: global max)."""
    x = np.random.randn(*shape).astype(np.float32)
    out = grid_max_pool(mx.nd, nd(x), cells).asnumpy()
    np.testing.assert_array_equal(out, grid_max_ref(x, cells))


@pytest.mark.parametrize("nparts", [1, 2])
def test_psppooling_composition_and_sizes(nparts, check_hybrid):
    """PSPPooling(parts) = conv_out(concat(parts + [conv_i(gridmax_{2^i}(x))])) with x = concat(parts) (grid max
    in NumPy); the output has ``channels`` channels and the hybridized block accepts a second input size."""
    block = PSPPooling(8, depth=3)
    block.initialize()
    parts = [randn(B, 8, 8, 8) for _ in range(nparts)]
    x = mx.nd.concat(*parts, dim=1)
    views = [conv(nd(grid_max_ref(x.asnumpy(), 2 ** i))) for i, conv in enumerate(block.convs)]
    ref = block.conv_out(mx.nd.concat(*parts, *views, dim=1))
    out = block(*parts)
    assert out.shape == (B, 8, 8, 8)
    np.testing.assert_allclose(out.asnumpy(), ref.asnumpy(), rtol=1e-5, atol=1e-5)
    check_hybrid(block, *parts)
    parts = [randn(B, 8, 16, 12) for _ in range(nparts)]
    hybrid = block(*parts).asnumpy()
    assert hybrid.shape == (B, 8, 16, 12)
    x = mx.nd.concat(*parts, dim=1)
    views = [conv(nd(grid_max_ref(x.asnumpy(), 2 ** i))) for i, conv in enumerate(block.convs)]
    np.testing.assert_allclose(hybrid, block.conv_out(mx.nd.concat(*parts, *views, dim=1)).asnumpy(),
                               rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- normalisation

@pytest.mark.parametrize("channels,groups", [(8, 4), (12, 8), (6, 4), (8, 1), (16, 16)])
def test_groupnorm_per_channel_affine(channels, groups):
    """GroupNorm (Wu & He 2018): statistics over (C/G, H, W) per group (eps 1e-5, biased variance), then a
    per-channel gamma and beta; G is reduced to gcd(groups, channels)."""
    block = GroupNorm(channels, num_groups=groups)
    block.initialize()
    g = math.gcd(groups, channels)
    assert block.num_groups == g
    gamma = np.random.randn(1, channels, 1, 1).astype(np.float32)
    beta = np.random.randn(1, channels, 1, 1).astype(np.float32)
    block.gamma.set_data(nd(gamma.reshape(-1)))
    block.beta.set_data(nd(beta.reshape(-1)))
    x = (3.0 * np.random.randn(B, channels, H, W) + 1.5).astype(np.float32)
    xg = x.astype(np.float64).reshape(B, g, -1)
    norm = (xg - xg.mean(axis=2, keepdims=True)) / np.sqrt(xg.var(axis=2, keepdims=True) + 1e-5)
    ref = norm.reshape(x.shape) * gamma + beta
    np.testing.assert_allclose(block(nd(x)).asnumpy(), ref, rtol=1e-4, atol=1e-4)
    trainable = [p for p in block.collect_params().values() if p.grad_req != "null"]
    assert sum(int(np.prod(p.shape)) for p in trainable) == 2 * channels


@pytest.mark.parametrize("form", ["kernel", "operator"])
@pytest.mark.parametrize("channels,groups", [(8, 4), (12, 4), (6, 4), (8, 8)])
def test_groupnorm_per_group_affine(channels, groups, form):
    """affine="group" (MXNet's and the authors'): one gamma/beta per group, applied to the group's channels;
    equal to NumPy and to gluon.nn.GroupNorm with the same values, in both forms."""
    from nn.norm import groupnorm_form, kernels

    if form == "kernel" and not kernels.load():
        pytest.skip("the GroupNorm kernel library is not built")
    block = GroupNorm(channels, num_groups=groups, affine="group")
    block.initialize()
    g = math.gcd(groups, channels)
    gamma, beta = np.random.randn(g).astype(np.float32), np.random.randn(g).astype(np.float32)
    block.gamma.set_data(nd(gamma))
    block.beta.set_data(nd(beta))
    x = (3.0 * np.random.randn(B, channels, H, W) + 1.5).astype(np.float32)
    xg = x.astype(np.float64).reshape(B, g, -1)
    norm = (xg - xg.mean(axis=2, keepdims=True)) / np.sqrt(xg.var(axis=2, keepdims=True) + 1e-5)
    ref = (norm * gamma.reshape(1, g, 1) + beta.reshape(1, g, 1)).reshape(x.shape)
    mxnet_gn = gluon_nn.GroupNorm(num_groups=g)
    mxnet_gn.initialize()
    mxnet_gn(nd(x))
    mxnet_gn.gamma.set_data(nd(gamma))
    mxnet_gn.beta.set_data(nd(beta))
    with groupnorm_form(form):
        out = block(nd(x)).asnumpy()
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(out, mxnet_gn(nd(x)).asnumpy(), rtol=1e-5, atol=1e-5)
    assert [p.shape for p in block.collect_params().values()] == [(g,), (g,)]


def test_groupnorm_unknown_affine():
    with pytest.raises(ValueError, match=r"unknown GroupNorm affine 'none'; choose one of \['channel', 'group'\]"):
        GroupNorm(8, affine="none")


@pytest.mark.parametrize("name", sorted(NORMS))
def test_get_norm_known(name):
    """get_norm builds the named layer for ``channels`` channels."""
    layer = get_norm(name, 8, 4)
    expected = {"GroupNorm": GroupNorm, "GroupNormPerGroup": GroupNorm, "BatchNorm": gluon_nn.BatchNorm,
                "InstanceNorm": gluon_nn.InstanceNorm, "LayerNorm": gluon_nn.LayerNorm}[name]
    assert isinstance(layer, expected)
    layer.initialize()
    assert layer(randn(B, 8, 4, 4)).shape == (B, 8, 4, 4)


def test_get_norm_unknown_names_choices():
    """An unknown normalisation raises ValueError naming the valid choices."""
    with pytest.raises(ValueError) as err:
        get_norm("WeightNorm", 8)
    for name in NORMS:
        assert name in str(err.value)
    assert "WeightNorm" in str(err.value)


@pytest.mark.parametrize("name", sorted(NORMS))
def test_conv2dn_is_conv_then_norm(name):
    """Conv2DN = Norm(Conv2D(x)) with a bias-free 'same' 3x3 convolution (Appendix C)."""
    block = Conv2DN(8, norm=name)
    block.initialize()
    x = randn(B, 4, H, W)
    assert block.conv.bias is None
    np.testing.assert_allclose(block(x).asnumpy(), block.norm(block.conv(x)).asnumpy(), rtol=1e-6, atol=1e-6)
    assert isinstance(block.norm, type(get_norm(name, 8)))

