"""Crisp sigmoid (paper Section 6.3, eq. 18): ``sigmoid(x / gamma)`` with a learned ``gamma`` in
``[0.01, 1]``: the paper's ``raw`` folded into the interval (gamma starts at exactly 1), the authors'
``gamma = 0.01 + sigmoid(raw)``."""
from nn.activations import PARAMETRISATIONS, SigmoidCrisp

import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd, gluon

SHAPE = (2, 1, 8, 8)


def sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def folded(raw, smooth=0.01):
    """raw reflected into [smooth, 1] (NumPy): a triangle wave of period 2 (1 - smooth)."""
    period = 2 * (1 - smooth)
    phase = np.mod(raw - smooth, period)
    return smooth + np.minimum(phase, period - phase)


def effective(raw, parametrisation="paper", smooth=0.01):
    """gamma of ``raw`` (NumPy, float64) and d gamma / d raw."""
    if parametrisation == "paper":
        inside = smooth <= np.mod(raw - smooth, 2 * (1 - smooth)) + smooth <= 1
        return folded(raw, smooth), 1.0 if inside else -1.0
    return smooth + sigmoid(raw), sigmoid(raw) * (1 - sigmoid(raw))


def block_with_raw(raw, parametrisation="paper"):
    block = SigmoidCrisp(parametrisation=parametrisation)
    block.initialize()
    if raw is not None:
        block.gamma.set_data(mx.nd.array([raw]))
    return block


def gradient(block, x, w):
    """d sum(w * block(x)) / d raw."""
    with autograd.record():
        loss = (block(mx.nd.array(x)) * mx.nd.array(w)).sum()
    loss.backward()
    return block.gamma.grad().asnumpy()[0]


def numpy_gradient(raw, parametrisation, x, w):
    gamma, slope = effective(raw, parametrisation)
    s = sigmoid(x.astype(np.float64) / gamma)
    return np.sum(w * s * (1 - s) * (-x / gamma ** 2)) * slope


@pytest.mark.parametrize("parametrisation,gamma0,slope0", [("paper", 1.0, 1.0),
                                                           ("authors", 0.01 + sigmoid(1.0), 0.19661193)])
def test_initial_gamma_and_slope(parametrisation, gamma0, slope0):
    """paper: gamma starts at exactly 1, the plain sigmoid, with d gamma / d raw = 1; authors: raw 1,
    gamma 0.741, slope 0.197."""
    block = block_with_raw(None, parametrisation)
    assert block.gamma_value() == pytest.approx(gamma0, rel=1e-6)
    x = np.random.randn(*SHAPE) * 4
    np.testing.assert_allclose(block(mx.nd.array(x)).asnumpy(), sigmoid(x / gamma0), rtol=1e-5, atol=1e-6)
    x = np.random.randn(*SHAPE).astype(np.float32) * 3
    w = np.random.randn(*SHAPE).astype(np.float32)
    d_gamma = numpy_gradient(1.0, parametrisation, x, w) / effective(1.0, parametrisation)[1]
    assert gradient(block, x, w) == pytest.approx(d_gamma * slope0, rel=1e-4)


@pytest.mark.parametrize("parametrisation", sorted(PARAMETRISATIONS))
@pytest.mark.parametrize("raw", [-30.0, -0.7, 0.005, 0.01, 0.5, 1.0, 1.2, 1.9, 4.0, 30.0])
def test_values_and_bounds(raw, parametrisation, check_hybrid):
    """sigmoid(x / gamma(raw)) as in NumPy; for the paper's parametrisation gamma lies in [0.01, 1]
    whatever the raw value (eq. 18), and is raw folded into it near the interval (the clip takes over
    only a whole period away); hybridized == imperative."""
    block = block_with_raw(raw, parametrisation)
    gamma, _ = effective(raw, parametrisation)
    if parametrisation == "paper":
        assert np.float32(0.01) <= block.gamma_value() <= 1.0
        if abs(raw - 0.5) > 2.5:
            gamma = block.gamma_value()
    assert block.gamma_value() == pytest.approx(gamma, rel=1e-6)
    x = np.random.randn(*SHAPE).astype(np.float32)
    np.testing.assert_allclose(block(mx.nd.array(x)).asnumpy(), sigmoid(x.astype(np.float64) / gamma),
                               rtol=1e-4, atol=1e-6)
    check_hybrid(block, mx.nd.array(x))


@pytest.mark.parametrize("parametrisation", sorted(PARAMETRISATIONS))
@pytest.mark.parametrize("raw", [-0.7, 0.005, 0.01, 0.5, 1.0, 1.2, 1.9])
def test_gradient_is_nonzero_and_analytic(raw, parametrisation):
    """d loss / d raw is non-zero inside the interval, at its bounds and past them (a clamp of gamma has
    gradient 0 past a bound) and equals the chain rule of sigmoid(x / gamma(raw)) in NumPy: for the
    paper's form, slope 1 inside and at the bounds, -1 reflected."""
    block = block_with_raw(raw, parametrisation)
    x = np.random.randn(*SHAPE).astype(np.float32) * 3
    w = np.random.randn(*SHAPE).astype(np.float32)
    grad = gradient(block, x, w)
    assert grad != 0
    np.testing.assert_allclose(grad, numpy_gradient(raw, parametrisation, x, w), rtol=1e-4)


def _fit(block, trainer, x, target_gamma, steps):
    target = mx.nd.sigmoid(x / target_gamma)
    for _ in range(steps):
        with autograd.record():
            loss = ((block(x) - target) ** 2).mean()
        loss.backward()
        trainer.step(1)
    return block.gamma_value()


def test_reaches_a_crisper_gamma_within_a_short_training():
    """Targets sigmoid(x / 0.6) with Adam at the paper's learning rate (1e-3): both forms take gamma to 0.6
    within 1000 steps (about 8 epochs of LEVIR-CD chips at the paper's 64 ranks of batch 3), the paper's
    from its start at 1 (at slope 1, Adam moves it by about the learning rate per step)."""
    x = mx.nd.array(np.random.RandomState(0).randn(*SHAPE) * 3)
    for parametrisation in ("paper", "authors"):
        block = block_with_raw(None, parametrisation)
        trainer = gluon.Trainer(block.collect_params(), "adam", {"learning_rate": 1e-3})
        assert _fit(block, trainer, x, 0.6, 1000) == pytest.approx(0.6, abs=0.01), parametrisation


def test_comes_back_from_the_upper_bound():
    """A fit whose optimum is smoother than the bound (gamma 3) holds gamma at the bound with raw beside
    it (the reflection turns the push back, no drift); crisp targets then bring gamma down to 0.6 (raw may
    take the reflected branch: gamma is the same function of it there)."""
    x = mx.nd.array(np.random.RandomState(0).randn(*SHAPE) * 3)
    block = block_with_raw(0.6)
    trainer = gluon.Trainer(block.collect_params(), "adam", {"learning_rate": 0.01})
    assert _fit(block, trainer, x, 3.0, 300) > 0.97
    assert abs(block.gamma.data().asscalar() - 1.0) < 0.05
    assert _fit(block, trainer, x, 0.6, 250) == pytest.approx(0.6, abs=0.02)


@pytest.mark.parametrize("parametrisation,gamma", [("paper", 0.01), ("paper", 0.61), ("paper", 1.0),
                                                   ("authors", 0.02), ("authors", 0.61), ("authors", 1.0)])
def test_set_gamma_value_round_trip(parametrisation, gamma):
    block = block_with_raw(None, parametrisation)
    block.set_gamma_value(gamma)
    assert block.gamma_value() == pytest.approx(gamma, rel=1e-5)


def test_rejects_bad_arguments():
    """smooth must lie in (0, 1); the parametrisation must be known; set_gamma_value stays inside the bounds."""
    for smooth in (0.0, 1.0, -0.1):
        with pytest.raises(ValueError, match="smooth must be in"):
            SigmoidCrisp(smooth=smooth)
    choices = r"unknown SigmoidCrisp parametrisation 'clip'; choose one of \['authors', 'paper'\]"
    with pytest.raises(ValueError, match=choices):
        SigmoidCrisp(parametrisation="clip")
    for parametrisation, gamma, interval in (("paper", 0.005, r"\[0.01, 1\]"), ("paper", 1.5, r"\[0.01, 1\]"),
                                             ("authors", 0.01, r"\(0.01, 1 \+ 0.01\)")):
        with pytest.raises(ValueError, match=rf"^SigmoidCrisp gamma of the '{parametrisation}' parametrisation "
                                             rf"must lie in {interval}, got {gamma}$"):
            block_with_raw(None, parametrisation).set_gamma_value(gamma)
