"""The forms that replace MXNet operators have the values and gradients of what they replace, imperative
and hybridized: matrix products for broadcasts (nn.ops.scalar_times, nn.fusion.scale_by_attention,
nn.attention.average_weight, nn.pooling.grid_max_pool, SigmoidCrisp's division), mantis's fused kernels
(the bilinear x2 upsampling, eq. 13's weighting, eqs 14-16's fusion, the grid maxima of PSPPooling), and
``Activation`` for nn.ops.relu and nn.ops.sigmoid; the kernels are used exactly in GroupNorm's kernel form."""
import json

from nn.activations import SigmoidCrisp
from nn.attention import (
    attention_weighting,
    attention_weighting_kernel,
    attention_weighting_products,
    average_weight,
)
from nn.fusion import scale_by_attention, scale_by_attention_kernel, scale_by_attention_products
from nn.norm import groupnorm_form
from nn.ops import relu, scalar_times, sigmoid, sum_of_products, upsample2x, upsample2x_kernel, upsample2x_products
from nn.pooling import grid_max, grid_max_kernel, grid_max_pool, grid_max_reduction

import mxnet as mx
import numpy as np
import pytest
from mxnet.gluon import nn as gluon_nn


def values_and_grads(fn, arrays, hybridize):
    """Output of ``fn(F, *arrays)`` and the gradients of ``sum(output * w)`` (fixed random ``w``) for each input."""
    block = gluon_nn.HybridLambda(fn)
    if hybridize:
        block.hybridize()
    xs = [mx.nd.array(a) for a in arrays]
    for x in xs:
        x.attach_grad()
    with mx.autograd.record():
        out = block(*xs)
        loss = (out * mx.nd.array(np.random.RandomState(7).randn(*out.shape))).sum()
    loss.backward()
    return [out.asnumpy()] + [x.grad.asnumpy() for x in xs]


def assert_same(new, ref):
    assert len(new) == len(ref)
    for n, r in zip(new, ref):
        assert n.shape == r.shape
        np.testing.assert_allclose(n, r, rtol=1e-5, atol=1e-5 * max(np.abs(r).max(), 1.0))


def pool_case(cells):
    def ref(F, x):
        blocks = x.reshape((0, 0, -4, cells, -1, -4, cells, -1))
        return F.broadcast_like(F.max(blocks, axis=(3, 5), keepdims=True), blocks).reshape((0, 0, -3, -3))

    return lambda F, x: grid_max_pool(F, x, cells), ref


def eq14_fusion(F, x, gamma, att):
    """Eqs 14-16 as written: ``x + gamma * att * x``."""
    return x + x * F.broadcast_mul(gamma, att)


def eq13_average(F, chan, spat, v):
    """Eq. 13 as written: the mean of the channel-weighted and the spatially weighted values."""
    return 0.5 * (F.broadcast_mul(chan, v) + F.broadcast_mul(spat, v))


# chan, spat, v of the FracTAL's eq. 13
WEIGHTING_SHAPES = [(2, 3, 1, 1), (2, 1, 5, 7), (2, 3, 5, 7)]
# name -> (new form, broadcast form, input shapes); batch of 2 and non-square H, W
CASES = {
    "scalar_times": (scalar_times, lambda F, g, x: F.broadcast_mul(g, x), [(1,), (2, 3, 5, 7)]),
    "scalar_times-b1": (scalar_times, lambda F, g, x: F.broadcast_mul(g, x), [(1,), (1, 4, 6, 2)]),
    "scale_by_attention": (scale_by_attention, eq14_fusion, [(2, 3, 5, 7), (1,), (2, 3, 5, 7)]),
    "scale_by_attention_products": (scale_by_attention_products, eq14_fusion, [(2, 3, 5, 7), (1,), (2, 3, 5, 7)]),
    "scale_by_attention_kernel": (scale_by_attention_kernel, eq14_fusion, [(2, 3, 5, 7), (1,), (2, 3, 5, 7)]),
    "scale_by_attention_kernel-vs-products": (scale_by_attention_kernel, scale_by_attention_products,
                                              [(1, 40, 33, 17), (1,), (1, 40, 33, 17)]),
    "average_weight": (average_weight, lambda F, chan, spat: (0.5 * F.broadcast_add(chan, spat)).reshape((0, 0, -1)),
                       [(2, 3, 1, 1), (2, 1, 5, 7)]),
    "grid_max_pool-1": (*pool_case(1), [(2, 3, 6, 10)]),
    "grid_max_pool-2": (*pool_case(2), [(2, 3, 6, 10)]),
    "grid_max_pool-4": (*pool_case(4), [(2, 2, 8, 12)]),
    "grid_max_kernel-1": (lambda F, x: grid_max_kernel(F, x, 1), lambda F, x: grid_max_reduction(F, x, 1),
                          [(2, 3, 6, 10)]),
    "grid_max_kernel-4": (lambda F, x: grid_max_kernel(F, x, 4), lambda F, x: grid_max_reduction(F, x, 4),
                          [(1, 5, 32, 24)]),
    "attention_weighting": (attention_weighting, eq13_average, WEIGHTING_SHAPES),
    "attention_weighting_products": (attention_weighting_products, eq13_average, WEIGHTING_SHAPES),
    "attention_weighting_kernel": (attention_weighting_kernel, eq13_average, WEIGHTING_SHAPES),
    "attention_weighting_kernel-vs-products": (attention_weighting_kernel, attention_weighting_products,
                                               [(1, 40, 1, 1), (1, 1, 33, 17), (1, 40, 33, 17)]),
    "relu": (relu, lambda F, x: F.relu(x), [(2, 8, 16, 12)]),
    "sigmoid": (sigmoid, lambda F, x: F.sigmoid(x), [(2, 8, 16, 12)]),
    "sigmoid-one-element": (sigmoid, lambda F, x: F.sigmoid(x), [(1,)]),
}


def bilinear_resize2x(F, x):
    """The operator upsample2x replaces (align_corners=True, MXNet's default)."""
    return F.contrib.BilinearResize2D(x, scale_height=2.0, scale_width=2.0)


# odd, even, non-square sizes and the edge sizes 1 and 2 of H and W
UPSAMPLE_SIZES = [(5, 7), (8, 6), (1, 1), (1, 4), (5, 1), (2, 2), (2, 9), (17, 33)]
# every form against the operator, and the kernel against the products it replaces
for _name, _form, _ref in [("upsample2x", upsample2x, bilinear_resize2x),
                           ("upsample2x_products", upsample2x_products, bilinear_resize2x),
                           ("upsample2x_kernel", upsample2x_kernel, bilinear_resize2x),
                           ("upsample2x_kernel-vs-products", upsample2x_kernel, upsample2x_products)]:
    CASES.update({f"{_name}-{h}x{w}": (_form, _ref, [(2, 3, h, w)]) for h, w in UPSAMPLE_SIZES})
CASES["upsample2x_kernel-vs-products-64x48"] = (upsample2x_kernel, upsample2x_products, [(1, 16, 64, 48)])


@pytest.mark.parametrize("hybridize", [False, True])
@pytest.mark.parametrize("name", sorted(CASES))
def test_same_values_and_gradients_as_broadcast_form(name, hybridize):
    new, ref, shapes = CASES[name]
    arrays = [np.random.randn(*s).astype(np.float32) for s in shapes]
    assert_same(values_and_grads(new, arrays, hybridize), values_and_grads(ref, arrays, False))


@pytest.mark.parametrize("form", [upsample2x_products, upsample2x_kernel])
def test_upsample2x_hybridized_graph_follows_the_input_size(form):
    """One hybridized graph serves inputs of different sizes (the interpolation comes from the shape)."""
    block = gluon_nn.HybridLambda(form)
    block.hybridize()
    for shape in [(1, 2, 3, 5), (2, 2, 6, 4), (1, 2, 3, 5)]:
        x = mx.nd.array(np.random.randn(*shape))
        np.testing.assert_allclose(block(x).asnumpy(), bilinear_resize2x(mx.nd, x).asnumpy(), rtol=1e-5, atol=1e-5)


# function -> (its symbolic call, the kernel's operator, an operator only the MXNet-operator form uses)
KERNEL_USERS = {
    "upsample2x": (lambda: upsample2x(mx.sym, mx.sym.var("x")), "mantis_upsample2x", "batch_dot"),
    "attention_weighting": (lambda: attention_weighting(mx.sym, *map(mx.sym.var, "csv")),
                            "mantis_attention_weighting", "batch_dot"),
    "grid_max": (lambda: grid_max(mx.sym, mx.sym.var("x"), 2), "mantis_grid_max", "max"),
    "scale_by_attention": (lambda: scale_by_attention(mx.sym, *map(mx.sym.var, "xga")), "mantis_scale_by_attention",
                           "batch_dot"),
}


@pytest.mark.parametrize("form", ["kernel", "operator"])
@pytest.mark.parametrize("name", sorted(KERNEL_USERS))
def test_computes_in_groupnorms_form(name, form):
    """The fused operators are used exactly when GroupNorm uses the kernel library (not on GPUs or for
    ONNX export)."""
    build, kernel_op, operator_op = KERNEL_USERS[name]
    with groupnorm_form(form):
        operators = {node["op"] for node in json.loads(build().tojson())["nodes"]}
    used, unused = (kernel_op, operator_op) if form == "kernel" else (operator_op, kernel_op)
    assert used in operators and unused not in operators


@pytest.mark.parametrize("hybridize", [False, True])
def test_sigmoid_crisp_matches_broadcast_division(hybridize):
    """SigmoidCrisp (x times 1/gamma) has the values and the x and raw-gamma gradients of sigmoid(x / gamma)
    with gamma = raw inside [0.01, 1] (the paper's parametrisation)."""
    block = SigmoidCrisp()
    block.initialize()
    block.gamma.set_data(mx.nd.array([0.6]))
    if hybridize:
        block.hybridize()
    x = np.random.randn(2, 2, 6, 10).astype(np.float32) * 3
    w = mx.nd.array(np.random.randn(*x.shape))
    xs = [mx.nd.array(x), mx.nd.array(x)]
    raw = mx.nd.array([0.6])
    for a in (*xs, raw):
        a.attach_grad()
    with mx.autograd.record():
        out = block(xs[0])
        (out * w).sum().backward()
    with mx.autograd.record():
        ref = mx.nd.sigmoid(mx.nd.broadcast_div(xs[1], raw))
        (ref * w).sum().backward()
    assert_same([out.asnumpy(), xs[0].grad.asnumpy(), block.gamma.grad().asnumpy()],
                [ref.asnumpy(), xs[1].grad.asnumpy(), raw.grad.asnumpy()])


@pytest.mark.parametrize("hybridize", [False, True])
@pytest.mark.parametrize("shape,axis", [((2, 3, 5, 7), (2, 3)), ((2, 3, 5, 7), (1,)), ((4, 10), (1,)),
                                        ((2, 3, 4, 4), (1, 2, 3))])
def test_matrix_product_sums_equal_plain_sums(shape, axis, hybridize):
    """The batched matrix-product form of the similarity's sums gives MXNet's ``sum(a * b)`` values and
    gradients (the reductions the FracTAL runs on (B, C, H, W) tensors, and class vectors (B, K))."""
    rng = np.random.RandomState(3)
    weight = mx.nd.array(rng.rand(*[1 if i in axis else n for i, n in enumerate(shape)]))
    a_np, b_np = rng.rand(*shape), rng.rand(*shape)
    results = []
    plain = lambda F, a, b: F.sum(a * b, axis=axis, keepdims=True)  # noqa: E731
    for form in (lambda F, a, b: sum_of_products(F, a, b, axis), plain):
        block = gluon_nn.HybridLambda(form)
        if hybridize:
            block.hybridize()
        a, b = mx.nd.array(a_np), mx.nd.array(b_np)
        a.attach_grad()
        b.attach_grad()
        with mx.autograd.record():
            out = block(a, b)
            loss = (out * weight).sum()
        loss.backward()
        results.append([out.asnumpy(), a.grad.asnumpy(), b.grad.asnumpy()])
    for new, ref in zip(*results):
        assert new.shape == ref.shape
        np.testing.assert_allclose(new, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("hybridize", [False, True])
def test_grid_max_kernel_shares_the_gradient_among_ties_as_mxnet_max(hybridize):
    """After a ReLU whole blocks are 0: every element equal to its block's maximum gets the block's
    gradient, as with MXNet's max reduction."""
    x = np.maximum(np.random.RandomState(5).randn(2, 3, 8, 8), 0).astype(np.float32)
    x[0, 0, :4, :4] = 0.0  # a block of ties
    x[1, 2, 4:, 4:] = 1.5  # a block of equal positive values
    new = values_and_grads(lambda F, a: grid_max_kernel(F, a, 2), [x], hybridize)
    ref = values_and_grads(lambda F, a: grid_max_reduction(F, a, 2), [x], False)
    assert_same(new, ref)
    assert (new[1][0, 0, :4, :4] != 0).all() and (new[1][1, 2, 4:, 4:] != 0).all()
