"""Fractal Tanimoto loss ``L = 1 - <FT>^d`` (paper Section 4) and the multitask loss, against an
independent float64 NumPy reference of eqs 5, 7, 8.

The losses run with their default smoothing ``s = 1e-5``; the reference adds the same ``s`` to the
numerator and denominator of eq. 5 (as in the authors' public code).
"""
from nn.loss import FTnmtLoss, MultitaskFTLoss

import mxnet as mx
import numpy as np
import pytest

from tests.authors_code import authors_module

SHAPE = (2, 3, 8, 8)
SMOOTH = 1e-5
RTOL, ATOL = 1e-4, 1e-5
EVOLVING_DEPTHS = [0, 10, 20, 30]  # Section 4 / Appendix D


def _dot(a, b, axis):
    return np.sum(a * b, axis=axis, keepdims=True)


def t_ref(p, l, depth, axis, smooth):
    """Eq. 5, smoothed: ``(p.l + s) / (2^d (p.p + l.l) - (2^(d+1) - 1) p.l + s)``."""
    pl, pp, ll = _dot(p, l, axis), _dot(p, p, axis), _dot(l, l, axis)
    return (pl + smooth) / (2.0 ** depth * (pp + ll) - (2.0 ** (depth + 1) - 1.0) * pl + smooth)


def mean_ft_ref(p, l, depth, axis, smooth=SMOOTH):
    """Eq. 8 with eq. 7 inside; ``<FT>^0 = FT^0``."""
    def ft(i):
        return 0.5 * (t_ref(p, l, i, axis, smooth) + t_ref(1 - p, 1 - l, i, axis, smooth))
    if depth == 0:
        return ft(0)
    return sum(ft(i) for i in range(depth)) / depth


def loss_ref(p, l, depth, axis=(2, 3)):
    """``1 - <FT>^d``, averaged over the remaining (class) axes: one value per sample."""
    sim = mean_ft_ref(p, l, depth, axis)
    return 1.0 - sim.reshape(sim.shape[0], -1).mean(axis=1)


def make_pair(rng, shape=SHAPE):
    p = (1.0 / (1.0 + np.exp(-2.0 * rng.randn(*shape)))).astype(np.float32)
    l = (rng.rand(*shape) > 0.5).astype(np.float32)
    return p, l


def nd(a):
    return mx.nd.array(a, dtype="float32")


@pytest.mark.parametrize("depth", [0, 1, 5, 10, 30])
def test_ftnmt_loss_value(rng, depth):
    """FTnmtLoss = 1 - mean over classes of <FT>^d (spatial sums, eq. 8), one value per sample."""
    p, l = make_pair(rng)
    out = FTnmtLoss(depth=depth)(nd(p), nd(l)).asnumpy()
    assert out.shape == (SHAPE[0],)
    ref = loss_ref(p.astype(np.float64), l.astype(np.float64), depth)
    np.testing.assert_allclose(out, ref, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("depth", [0, 5, 30])
def test_ftnmt_loss_axis_123(rng, depth):
    """axis=(1, 2, 3): classes and pixels in one dot product, 1 - <FT>^d per sample."""
    p, l = make_pair(rng)
    out = FTnmtLoss(depth=depth, axis=(1, 2, 3))(nd(p), nd(l)).asnumpy()
    ref = loss_ref(p.astype(np.float64), l.astype(np.float64), depth, axis=(1, 2, 3))
    assert out.shape == (SHAPE[0],)
    np.testing.assert_allclose(out, ref, rtol=RTOL, atol=ATOL)
    # and it is not the per-class variant
    per_class = loss_ref(p.astype(np.float64), l.astype(np.float64), depth)
    assert not np.allclose(out, per_class, rtol=RTOL, atol=ATOL)


def test_evolving_depth_on_hybridized_loss(rng):
    """Section 4: setting ``.depth`` on a hybridized FTnmtLoss (0 -> 10 -> 20 -> 30) yields the new depth's loss."""
    p, l = make_pair(rng)
    P, L = nd(p), nd(l)
    loss = FTnmtLoss(depth=0)
    loss.hybridize()
    previous = None
    for depth in EVOLVING_DEPTHS + [0]:
        loss.depth = depth
        assert loss.depth == depth
        for _ in range(2):  # graph-building call, then cached call
            out = loss(P, L).asnumpy()
            np.testing.assert_allclose(out, loss_ref(p.astype(np.float64), l.astype(np.float64), depth),
                                       rtol=RTOL, atol=ATOL)
        if previous is not None:
            assert not np.allclose(out, previous), f"depth {depth}: output did not change"
        previous = out


def test_evolving_depth_on_hybridized_multitask_loss(rng):
    """Setting ``.depth`` on a hybridized MultitaskFTLoss changes all three terms to the new depth."""
    pairs = [make_pair(rng) for _ in range(3)]
    args = [nd(p) for p, _ in pairs] + [nd(l) for _, l in pairs]
    loss = MultitaskFTLoss(depth=0)
    loss.hybridize()
    for depth in EVOLVING_DEPTHS:
        loss.depth = depth
        assert loss.depth == depth
        ref = sum(loss_ref(p.astype(np.float64), l.astype(np.float64), depth) for p, l in pairs) / 3.0
        for _ in range(2):
            np.testing.assert_allclose(loss(*args).asnumpy(), ref, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("hybridize", [False, True])
def test_hybridized_equals_imperative(rng, hybridize):
    """FTnmtLoss gives the same value hybridized and imperative (depth 5)."""
    p, l = make_pair(rng)
    imperative = FTnmtLoss(depth=5)(nd(p), nd(l)).asnumpy()
    loss = FTnmtLoss(depth=5)
    if hybridize:
        loss.hybridize()
    np.testing.assert_allclose(loss(nd(p), nd(l)).asnumpy(), imperative, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("axis", [(2, 3), (1, 2, 3)])
@pytest.mark.parametrize("depth", [0, 10, 30])
@pytest.mark.parametrize("labels", ["binary", "soft", "empty", "full"])
def test_perfect_prediction_has_zero_loss(rng, depth, axis, labels):
    """L = 1 - <FT>^d is 0 when the prediction equals the label (including empty and full masks)."""
    l = {"binary": (rng.rand(*SHAPE) > 0.5), "soft": rng.rand(*SHAPE),
         "empty": np.zeros(SHAPE), "full": np.ones(SHAPE)}[labels].astype(np.float32)
    out = FTnmtLoss(depth=depth, axis=axis)(nd(l), nd(l)).asnumpy()
    np.testing.assert_allclose(out, 0.0, atol=1e-6)


@pytest.mark.parametrize("depth", [0, 10, 30])
def test_loss_positive_for_wrong_prediction(rng, depth):
    """L > 0 for a prediction different from the label (and L <= 1)."""
    p, l = make_pair(rng)
    out = FTnmtLoss(depth=depth)(nd(p), nd(l)).asnumpy()
    assert np.all(out > 1e-3) and np.all(out <= 1.0)


@pytest.mark.parametrize("depth", [0, 10, 30])
@pytest.mark.parametrize("labels", ["random", "empty", "full"])
def test_loss_gradient_finite(rng, depth, labels):
    """The gradient of the loss w.r.t. the prediction is finite (also for empty / full masks) and a
    descent step along it lowers the loss."""
    p, l = make_pair(rng)
    if labels == "empty":
        l = np.zeros_like(l)
    elif labels == "full":
        l = np.ones_like(l)
    P = nd(p)
    P.attach_grad()
    loss = FTnmtLoss(depth=depth)
    with mx.autograd.record():
        out = loss(P, nd(l))
    out.backward()
    grad = P.grad.asnumpy()
    assert np.all(np.isfinite(grad)) and np.any(grad != 0)
    step = p - 1e-2 * grad / np.abs(grad).max()
    assert loss(nd(step), nd(l)).sum().asscalar() < out.sum().asscalar()


def test_multitask_is_mean_of_three(rng):
    """MultitaskFTLoss = (L(segm) + L(bound) + L(dist)) / 3, each against its own target."""
    depth = 5
    (s, st), (b, bt), (d, dt) = (make_pair(rng) for _ in range(3))
    out = MultitaskFTLoss(depth=depth)(nd(s), nd(b), nd(d), nd(st), nd(bt), nd(dt)).asnumpy()
    refs = [loss_ref(x.astype(np.float64), t.astype(np.float64), depth) for x, t in ((s, st), (b, bt), (d, dt))]
    np.testing.assert_allclose(out, sum(refs) / 3.0, rtol=RTOL, atol=ATOL)
    # targets are not interchangeable: swapping the boundary and distance targets changes the value
    swapped = MultitaskFTLoss(depth=depth)(nd(s), nd(b), nd(d), nd(st), nd(dt), nd(bt)).asnumpy()
    assert not np.allclose(out, swapped)


@pytest.mark.parametrize("depth", [-1, 1.5])
def test_invalid_depth_rejected(depth):
    """The depth of <FT>^d must be an integer >= 0, at construction and when set later."""
    with pytest.raises(ValueError):
        FTnmtLoss(depth=depth)
    loss = FTnmtLoss(depth=0)
    with pytest.raises(ValueError):
        loss.depth = depth
    multi = MultitaskFTLoss(depth=0)
    with pytest.raises(ValueError):
        multi.depth = depth


@pytest.mark.parametrize("depth", [0, 15, 30])
def test_ftnmt_loss_on_class_vectors(rng, depth):
    """axis=(1,) on (B, K) class-probability vectors (classification, Section 7.2): 1 - <FT>^d per sample."""
    logits = rng.randn(4, 10)
    p = (np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)).astype(np.float32)
    l = np.eye(10, dtype=np.float32)[rng.randint(0, 10, size=4)]
    out = FTnmtLoss(depth=depth, axis=(1,))(nd(p), nd(l)).asnumpy()
    assert out.shape == (4,)
    np.testing.assert_allclose(out, loss_ref(p.astype(np.float64), l.astype(np.float64), depth, axis=(1,)),
                               rtol=RTOL, atol=ATOL)


def test_ftnmt_loss_weight_scales_loss(rng):
    """The ``weight`` accepted by FTnmtLoss (gluon Loss convention) multiplies the loss."""
    p, l = make_pair(rng)
    plain = FTnmtLoss(depth=5)(nd(p), nd(l)).asnumpy()
    weighted = FTnmtLoss(depth=5, weight=2.0)(nd(p), nd(l)).asnumpy()
    np.testing.assert_allclose(weighted, 2.0 * plain, rtol=1e-6)


# ----------------------------------------------------------------------------- the authors' public code

@pytest.mark.parametrize("depth", [0, 1, 5, 10, 30])
def test_ftnmt_loss_axis_123_equals_the_authors(rng, depth):
    """With axis=(1, 2, 3) (the ``authors`` fidelity) FTnmtLoss is the authors' ``ftnmt_loss``, value for
    value; the per-class default is not."""
    authors = authors_module("nn.loss.ftnmt_loss").ftnmt_loss(depth=depth)
    p, l = make_pair(rng)
    ref = authors(nd(p), nd(l)).asnumpy()
    np.testing.assert_allclose(FTnmtLoss(depth=depth, axis=(1, 2, 3))(nd(p), nd(l)).asnumpy(), ref,
                               rtol=1e-6, atol=1e-6)
    assert not np.allclose(FTnmtLoss(depth=depth)(nd(p), nd(l)).asnumpy(), ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("depth", [0, 10, 20, 30])
def test_multitask_loss_axis_123_equals_the_authors(rng, depth):
    """MultitaskFTLoss with axis=(1, 2, 3) is the authors' ``mtsk_loss`` (targets stacked along channels
    there, given separately here), hybridized or not."""
    authors = authors_module("nn.loss.mtsk_loss").mtsk_loss(depth=depth, NClasses=2)
    (s, st), (b, bt), (d, dt) = (make_pair(rng, (2, 2, 16, 16)) for _ in range(3))
    ref = authors.loss([nd(s), nd(b), nd(d)], mx.nd.concat(nd(st), nd(bt), nd(dt), dim=1)).asnumpy()
    for hybridize in (False, True):
        loss = MultitaskFTLoss(depth=depth, axis=(1, 2, 3))
        if hybridize:
            loss.hybridize()
        out = loss(nd(s), nd(b), nd(d), nd(st), nd(bt), nd(dt)).asnumpy()
        np.testing.assert_allclose(out, ref, rtol=1e-6, atol=1e-6)
