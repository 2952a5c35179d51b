"""Fractal Tanimoto similarity (paper Section 3, eqs 1-8) against an independent float64 NumPy
reference.

Reference conventions: the comparisons with the paper's formulas use ``smooth=0`` on the MXNet side
(inputs are non-degenerate). Where the default smoothing matters (empty masks) the reference adds
the same ``smooth`` to numerator and denominator of eq. 5, as the authors' public code does:
``(p.l + s) / (2^d (p.p + l.l) - (2^(d+1) - 1) p.l + s)``.
"""
import json

from nn.norm import groupnorm_form
from nn.similarity import (
    FTanimoto,
    fractal_tanimoto,
    fractal_tanimoto_complement,
    mean_fractal_tanimoto,
    tanimoto_terms,
    tanimoto_terms_kernel,
    tanimoto_terms_products,
)

import mxnet as mx
import numpy as np
import pytest

SHAPE = (2, 4, 8, 8)
AXES = [(2, 3), (1,), (1, 2, 3)]
DEPTHS = [0, 1, 5, 10, 30]
RTOL, ATOL = 1e-4, 1e-5


# ----------------------------------------------------------------------------- NumPy reference

def _dot(a, b, axis):
    return np.sum(a * b, axis=axis, keepdims=True)


def tanimoto_eq1(p, l, axis):
    """Eq. 1 (= eq. 2): ``p.l / (p.p + l.l - p.l)``."""
    pl = _dot(p, l, axis)
    return pl / (_dot(p, p, axis) + _dot(l, l, axis) - pl)


def tanimoto_recursive(p, l, depth, axis):
    """Eqs 2-3 evaluated literally (T^{d-1}(p, p) and T^{d-1}(l, l) are computed, not set to 1)."""
    if depth == 0:
        return tanimoto_eq1(p, l, axis)
    t_pl = tanimoto_recursive(p, l, depth - 1, axis)
    t_pp = tanimoto_recursive(p, p, depth - 1, axis)
    t_ll = tanimoto_recursive(l, l, depth - 1, axis)
    return t_pl / (t_pp + t_ll - t_pl)


def tanimoto_closed(p, l, depth, axis, smooth=0.0):
    """Eq. 5: ``p.l / (2^d (p.p + l.l) - (2^(d+1) - 1) p.l)`` (optionally smoothed, see module doc)."""
    pl, pp, ll = _dot(p, l, axis), _dot(p, p, axis), _dot(l, l, axis)
    return (pl + smooth) / (2.0 ** depth * (pp + ll) - (2.0 ** (depth + 1) - 1.0) * pl + smooth)


def ft_ref(p, l, depth, axis, smooth=0.0):
    """Eq. 7: ``(T^d(p, l) + T^d(1-p, 1-l)) / 2``."""
    return 0.5 * (tanimoto_closed(p, l, depth, axis, smooth) + tanimoto_closed(1 - p, 1 - l, depth, axis, smooth))


def mean_ft_ref(p, l, depth, axis, smooth=0.0):
    """Eq. 8: ``<FT>^0 = FT^0``, ``<FT>^d = (1/d) sum_{i=0}^{d-1} FT^i``."""
    if depth == 0:
        return ft_ref(p, l, 0, axis, smooth)
    return sum(ft_ref(p, l, i, axis, smooth) for i in range(depth)) / depth


# ----------------------------------------------------------------------------- data

def probs(rng, shape=SHAPE):
    """Predictions strictly inside (0, 1)."""
    return 1.0 / (1.0 + np.exp(-2.0 * rng.randn(*shape)))


def binary_labels(rng, shape=SHAPE):
    return (rng.rand(*shape) > 0.5).astype(np.float64)


def soft_labels(rng, shape=SHAPE):
    return rng.rand(*shape)


def nd(a):
    return mx.nd.array(a, dtype="float32")


def f32(a):
    """The float32 values the MXNet side sees, back in float64 for the reference."""
    return np.asarray(a, dtype=np.float32).astype(np.float64)


@pytest.fixture(params=["binary", "soft"])
def pair(request, rng):
    p = f32(probs(rng))
    l = f32(binary_labels(rng) if request.param == "binary" else soft_labels(rng))
    return p, l


# ----------------------------------------------------------------------------- reference self-checks

@pytest.mark.parametrize("axis", AXES)
@pytest.mark.parametrize("depth", range(6))
def test_reference_recursion_equals_closed_form(rng, axis, depth):
    """Eqs 2-3 (recursive definition) agree with the closed form eq. 5 in NumPy."""
    p, l = probs(rng), soft_labels(rng)
    np.testing.assert_allclose(tanimoto_recursive(p, l, depth, axis), tanimoto_closed(p, l, depth, axis),
                               rtol=1e-10, atol=0)


def test_reference_eq4_example(rng):
    """The d = 3 expansion of eq. 4 equals eq. 5: guards the reference itself."""
    p, l = probs(rng), soft_labels(rng)
    axis = (2, 3)
    pl, pp, ll = _dot(p, l, axis), _dot(p, p, axis), _dot(l, l, axis)
    a = ll - pl + pp
    inner = 2 - pl / a
    eq4 = pl / (a * inner * (2 - pl / (a * inner)) * (2 - pl / (a * inner * (2 - pl / (a * inner)))))
    np.testing.assert_allclose(eq4, tanimoto_closed(p, l, 3, axis), rtol=1e-10)


# ----------------------------------------------------------------------------- MXNet vs reference

@pytest.mark.parametrize("axis", AXES)
@pytest.mark.parametrize("depth", DEPTHS)
def test_fractal_tanimoto_eq5(pair, axis, depth):
    """``fractal_tanimoto`` is T^d of eq. 5 (smooth=0)."""
    p, l = pair
    out = fractal_tanimoto(mx.nd, nd(p), nd(l), depth=depth, axis=axis, smooth=0.0).asnumpy()
    ref = tanimoto_closed(p, l, depth, axis)
    assert out.shape == ref.shape
    np.testing.assert_allclose(out, ref, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("axis", AXES)
@pytest.mark.parametrize("depth", range(5))
def test_fractal_tanimoto_recursive_definition(rng, axis, depth):
    """``fractal_tanimoto`` is T^d of the recursive definition, eqs 2-3 (smooth=0). Soft labels: the
    literal recursion needs T^{d-1}(l, l), which is 0/0 for an all-zero label vector."""
    p, l = f32(probs(rng)), f32(soft_labels(rng))
    out = fractal_tanimoto(mx.nd, nd(p), nd(l), depth=depth, axis=axis, smooth=0.0).asnumpy()
    np.testing.assert_allclose(out, tanimoto_recursive(p, l, depth, axis), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("axis", AXES)
@pytest.mark.parametrize("depth", DEPTHS)
def test_fractal_tanimoto_complement_eq7(pair, axis, depth):
    """``fractal_tanimoto_complement`` is FT^d of eq. 7 (smooth=0)."""
    p, l = pair
    out = fractal_tanimoto_complement(mx.nd, nd(p), nd(l), depth=depth, axis=axis, smooth=0.0).asnumpy()
    np.testing.assert_allclose(out, ft_ref(p, l, depth, axis), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("axis", AXES)
@pytest.mark.parametrize("depth", DEPTHS)
def test_mean_fractal_tanimoto_eq8(pair, axis, depth):
    """``mean_fractal_tanimoto`` is <FT>^d of eq. 8 (sum of FT^i, i < d, over d; <FT>^0 = FT^0; smooth=0)."""
    p, l = pair
    out = mean_fractal_tanimoto(mx.nd, nd(p), nd(l), depth=depth, axis=axis, smooth=0.0).asnumpy()
    np.testing.assert_allclose(out, mean_ft_ref(p, l, depth, axis), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("axis", AXES)
@pytest.mark.parametrize("depth", [0, 3, 10])
def test_smoothing_matches_smoothed_eq5_with_empty_masks(rng, axis, depth):
    """Default smoothing (1e-5) equals smoothed eq. 5 on inputs with empty (all-zero) channels and pixels."""
    p, l = f32(probs(rng)), f32(binary_labels(rng))
    p[0, 1], l[0, 1] = 0.0, 0.0          # an empty channel (p = l = 0)
    p[1, :, 2, 3], l[1, :, 2, 3] = 0.0, 0.0  # an empty pixel
    p[1, 2], l[1, 2] = 1.0, 1.0          # a full channel (complement empty)
    out = mean_fractal_tanimoto(mx.nd, nd(p), nd(l), depth=depth, axis=axis).asnumpy()
    ref = mean_ft_ref(p, l, depth, axis, smooth=1e-5)
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(out, ref, rtol=RTOL, atol=ATOL)


def test_depth_zero_is_plain_tanimoto(pair):
    """FT^0 / <FT>^0 / <FT>^1 are the Tanimoto coefficient of eq. 1 averaged with its complement; T^0 is eq. 1."""
    p, l = pair
    axis = (2, 3)
    t = tanimoto_eq1(p, l, axis)
    ft0 = 0.5 * (t + tanimoto_eq1(1 - p, 1 - l, axis))
    P, L = nd(p), nd(l)
    np.testing.assert_allclose(fractal_tanimoto(mx.nd, P, L, 0, axis, smooth=0.0).asnumpy(), t, rtol=RTOL, atol=ATOL)
    for out in (fractal_tanimoto_complement(mx.nd, P, L, 0, axis, smooth=0.0),
                mean_fractal_tanimoto(mx.nd, P, L, 0, axis, smooth=0.0),
                mean_fractal_tanimoto(mx.nd, P, L, 1, axis, smooth=0.0)):
        np.testing.assert_allclose(out.asnumpy(), ft0, rtol=RTOL, atol=ATOL)


# ----------------------------------------------------------------------------- properties

@pytest.mark.parametrize("smooth", [0.0, 1e-5])
@pytest.mark.parametrize("axis", AXES)
@pytest.mark.parametrize("depth", DEPTHS)
def test_self_similarity_is_one(rng, depth, axis, smooth):
    """T^d(p, p) = FT^d(p, p) = <FT>^d(p, p) = 1 (eqs 5, 7, 8)."""
    p = nd(probs(rng))
    for fn in (fractal_tanimoto, fractal_tanimoto_complement, mean_fractal_tanimoto):
        out = fn(mx.nd, p, p, depth=depth, axis=axis, smooth=smooth).asnumpy()
        np.testing.assert_allclose(out, 1.0, rtol=0, atol=1e-6)


@pytest.mark.parametrize("axis", AXES)
@pytest.mark.parametrize("depth", DEPTHS)
def test_values_in_unit_interval(pair, depth, axis):
    """T^d, FT^d and <FT>^d lie in [0, 1] (eq. 6), for binary and soft labels, with default smoothing."""
    p, l = nd(pair[0]), nd(pair[1])
    for fn in (fractal_tanimoto, fractal_tanimoto_complement, mean_fractal_tanimoto):
        out = fn(mx.nd, p, l, depth=depth, axis=axis).asnumpy()
        assert np.all(out >= 0.0) and np.all(out <= 1.0 + 1e-6), fn.__name__
        assert np.all(out < 1.0), "random p != l must not give similarity 1"


@pytest.mark.parametrize("depth", [0.5, 2.7, 7.25])
def test_fractional_depth(pair, depth):
    """Eq. 5 / eq. 7 accept real d >= 0 and stay in [0, 1] (eq. 6)."""
    p, l = pair
    out = fractal_tanimoto_complement(mx.nd, nd(p), nd(l), depth=depth, axis=(2, 3), smooth=0.0).asnumpy()
    np.testing.assert_allclose(out, ft_ref(p, l, depth, (2, 3)), rtol=RTOL, atol=ATOL)
    assert np.all((out >= 0) & (out <= 1))


def test_steeper_with_depth(pair):
    """For p != l, T^d and FT^d strictly decrease with d (the 'temperature' of Section 3)."""
    p, l = nd(pair[0]), nd(pair[1])
    values = [fractal_tanimoto_complement(mx.nd, p, l, depth=d, axis=(2, 3), smooth=0.0).asnumpy()
              for d in range(6)]
    for lo, hi in zip(values[1:], values[:-1]):
        assert np.all(lo < hi)


@pytest.mark.parametrize("axis", AXES)
@pytest.mark.parametrize("depth", [0, 5, 30])
@pytest.mark.parametrize("case", ["p=l=0", "p=l=1", "l=0", "p=0", "l=1"])
def test_gradients_finite_on_degenerate_inputs(rng, case, depth, axis):
    """Gradients of 1 - <FT>^d (default smoothing) are finite for empty / full masks and predictions."""
    p, l = probs(rng), binary_labels(rng)
    if case == "p=l=0":
        p, l = np.zeros(SHAPE), np.zeros(SHAPE)
    elif case == "p=l=1":
        p, l = np.ones(SHAPE), np.ones(SHAPE)
    elif case == "l=0":
        l = np.zeros(SHAPE)
    elif case == "l=1":
        l = np.ones(SHAPE)
    elif case == "p=0":
        p = np.zeros(SHAPE)
    P, L = nd(p), nd(l)
    P.attach_grad()
    with mx.autograd.record():
        loss = 1.0 - mean_fractal_tanimoto(mx.nd, P, L, depth=depth, axis=axis).mean()
    loss.backward()
    assert np.isfinite(loss.asscalar())
    grad = P.grad.asnumpy()
    assert np.all(np.isfinite(grad))
    if case.startswith("p=l"):
        np.testing.assert_allclose(loss.asscalar(), 0.0, atol=1e-6)  # empty masks: similarity 1
    elif depth == 0:
        assert np.any(grad != 0), "a wrong prediction must receive a gradient"


def test_gradient_matches_finite_difference(rng):
    """The autograd gradient of <FT>^d is the derivative of the reference (central differences, float64)."""
    shape, axis, depth = (1, 2, 3, 3), (2, 3), 3
    p, l = f32(probs(rng, shape)), f32(soft_labels(rng, shape))
    P = nd(p)
    P.attach_grad()
    with mx.autograd.record():
        out = mean_fractal_tanimoto(mx.nd, P, nd(l), depth=depth, axis=axis, smooth=0.0).sum()
    out.backward()
    num = np.zeros_like(p)
    eps = 1e-6
    for idx in np.ndindex(*shape):
        hi, lo = p.copy(), p.copy()
        hi[idx] += eps
        lo[idx] -= eps
        num[idx] = (mean_ft_ref(hi, l, depth, axis).sum() - mean_ft_ref(lo, l, depth, axis).sum()) / (2 * eps)
    np.testing.assert_allclose(P.grad.asnumpy(), num, rtol=1e-3, atol=1e-5)


# ----------------------------------------------------------------------------- FTanimoto block (Listing 1)

@pytest.mark.parametrize("axis", AXES)
@pytest.mark.parametrize("depth", [0, 5])
def test_ftanimoto_block(pair, depth, axis, check_hybrid):
    """FTanimoto (Listing 1, with complement and depth average) is <FT>^d; hybridized equals imperative."""
    p, l = pair
    block = FTanimoto(depth=depth, axis=axis, smooth=0.0)
    block.initialize()
    np.testing.assert_allclose(block(nd(p), nd(l)).asnumpy(), mean_ft_ref(p, l, depth, axis), rtol=RTOL, atol=ATOL)
    check_hybrid(block, nd(p), nd(l))


@pytest.mark.parametrize("depth", [-1, 2.5, -0.5])
def test_invalid_depth_rejected(depth):
    """<FT>^d needs an integer d >= 0 (eq. 8): FTanimoto and mean_fractal_tanimoto raise ValueError."""
    with pytest.raises(ValueError):
        FTanimoto(depth=depth)
    x = mx.nd.ones((1, 1, 2, 2))
    with pytest.raises(ValueError):
        mean_fractal_tanimoto(mx.nd, x, x, depth=depth)


# ----------------------------------------------------------------------------- the fused sums

def _terms_and_grads(form, p_np, l_np, axis, hybridize, label_grad=True):
    """The three sums of ``form`` and the gradients of ``sum(w_i * sum_i)`` (fixed random ``w_i``)."""
    block = mx.gluon.nn.HybridLambda(lambda F, p, l: F.concat(*[t.reshape((0, -1)) for t in form(F, p, l, axis)],
                                                              dim=1))
    if hybridize:
        block.hybridize()
    p, l = mx.nd.array(p_np), mx.nd.array(l_np)
    p.attach_grad()
    if label_grad:
        l.attach_grad()
    weights = mx.nd.array(np.random.RandomState(11).randn(p_np.shape[0], 3 * int(block(p, l).shape[1] // 3)))
    with mx.autograd.record():
        out = block(p, l)
        (out * weights).sum().backward()
    return out.asnumpy(), p.grad.asnumpy(), l.grad.asnumpy() if label_grad else None, weights.asnumpy()


@pytest.mark.parametrize("hybridize", [False, True])
@pytest.mark.parametrize("shape,axis", [((2, 3, 5, 7), (2, 3)), ((2, 3, 5, 7), (1,)), ((1, 40, 33, 17), (1,)),
                                        ((1, 3, 64, 48), (2, 3)), ((4, 10), (1,))])
def test_tanimoto_terms_kernel_matches_the_operator_form(rng, shape, axis, hybridize):
    """The fused operator gives the three sums and both gradients of the MXNet-operator form it replaces."""
    p, l = rng.rand(*shape).astype(np.float32), rng.rand(*shape).astype(np.float32)
    fused = _terms_and_grads(tanimoto_terms_kernel, p, l, axis, hybridize)
    composed = _terms_and_grads(tanimoto_terms_products, p, l, axis, False)
    for new, ref in zip(fused[:3], composed[:3]):
        assert new.shape == ref.shape
        np.testing.assert_allclose(new, ref, rtol=1e-5, atol=1e-5 * max(np.abs(ref).max(), 1.0))


@pytest.mark.parametrize("axis", [(2, 3), (1,)])
def test_tanimoto_terms_kernel_against_float64(rng, axis):
    """Sums against float64 NumPy, and d/dp of ``sum w . (p.l, (1-p).(1-l), sum (p-l)^2)`` in closed form:
    ``w1 l - w2 (1 - l) + 2 w3 (p - l)``; a label without a gradient (the loss's case) is allowed."""
    shape = (2, 6, 9, 5)
    p, l = rng.rand(*shape).astype(np.float32), rng.rand(*shape).astype(np.float32)
    out, dp, dl, weights = _terms_and_grads(tanimoto_terms_kernel, p, l, axis, True, label_grad=False)
    p64, l64 = p.astype(np.float64), l.astype(np.float64)
    sums = [_dot(p64, l64, axis), _dot(1 - p64, 1 - l64, axis), _dot(p64 - l64, p64 - l64, axis)]
    np.testing.assert_allclose(out, np.concatenate([t.reshape(2, -1) for t in sums], axis=1), rtol=1e-6)
    w1, w2, w3 = (w.reshape(sums[0].shape) for w in np.split(weights, 3, axis=1))
    np.testing.assert_allclose(dp, w1 * l64 - w2 * (1 - l64) + 2 * w3 * (p64 - l64), rtol=1e-5, atol=1e-6)
    assert dl is None


@pytest.mark.parametrize("form,axis,fused", [("kernel", (2, 3), True), ("kernel", (1,), True),
                                             ("kernel", (1, 2, 3), False), ("operator", (2, 3), False),
                                             ("operator", (1,), False)])
def test_tanimoto_terms_computes_in_groupnorms_form(form, axis, fused):
    """The fused operator serves the FracTAL's two reductions when GroupNorm uses the kernel library
    (not on GPUs or for ONNX export); any other reduction composes MXNet operators."""
    with groupnorm_form(form):
        symbol = mx.sym.Group(list(tanimoto_terms(mx.sym, mx.sym.var("p"), mx.sym.var("l"), axis)))
    operators = {node["op"] for node in json.loads(symbol.tojson())["nodes"]}
    assert (operators == {"null", "mantis_tanimoto_terms"}) if fused else ("mantis_tanimoto_terms" not in operators)
