"""Crisp sigmoid (paper Section 6.3, eq. 18): ``sigmoid(x / gamma)`` with a learned ``gamma`` in
``[0.01, 1]``, through ``gamma = smooth + span * sigmoid(raw)``."""
import math

from nn.activations import PARAMETRISATIONS, SigmoidCrisp

import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd, gluon

SHAPE = (2, 1, 8, 8)


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def effective(raw, parametrisation="paper", smooth=0.01):
    """gamma of ``raw`` (NumPy, float64)."""
    span = 1.0 - smooth if parametrisation == "paper" else 1.0
    return smooth + span * sigmoid(raw)


def block_with_raw(raw, parametrisation="paper"):
    block = SigmoidCrisp(parametrisation=parametrisation)
    block.initialize()
    if raw is not None:
        block.gamma.set_data(mx.nd.array([raw]))
    return block


@pytest.mark.parametrize("parametrisation,gamma0", [("paper", 0.01 + 0.99 * 0.99), ("authors", 0.01 + sigmoid(1.0))])
def test_initial_gamma(parametrisation, gamma0):
    """paper: gamma starts at 0.9901 (the paper's 1 to within 1 %); authors: raw 1, gamma 0.741."""
    block = block_with_raw(None, parametrisation)
    assert block.gamma_value() == pytest.approx(gamma0, rel=1e-6)
    x = np.random.randn(*SHAPE) * 4
    np.testing.assert_allclose(block(mx.nd.array(x)).asnumpy(), sigmoid(x / gamma0), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("parametrisation", sorted(PARAMETRISATIONS))
@pytest.mark.parametrize("raw", [-30.0, -2.0, 0.005, 0.5, 1.2, 4.0, 30.0])
def test_values_and_bounds(raw, parametrisation, check_hybrid):
    """sigmoid(x / gamma) with gamma = smooth + span sigmoid(raw) in NumPy; gamma in [0.01, 1] for the
    paper's parametrisation (eq. 18) whatever the raw value; hybridized == imperative."""
    block = block_with_raw(raw, parametrisation)
    gamma = effective(raw, parametrisation)
    assert block.gamma_value() == pytest.approx(gamma, rel=1e-6)
    if parametrisation == "paper":
        assert np.float32(0.01) <= block.gamma_value() <= 1.0
    x = np.random.randn(*SHAPE).astype(np.float32)
    np.testing.assert_allclose(block(mx.nd.array(x)).asnumpy(), sigmoid(x.astype(np.float64) / gamma),
                               rtol=1e-4, atol=1e-6)
    check_hybrid(block, mx.nd.array(x))


@pytest.mark.parametrize("parametrisation", sorted(PARAMETRISATIONS))
@pytest.mark.parametrize("raw", [0.005, 0.5, 1.2])
def test_gradient_is_nonzero_and_analytic(raw, parametrisation):
    """d loss / d raw is non-zero at 0.005, 0.5 and 1.2 (a clamp of gamma to [0.01, 1] has gradient 0 at
    1.2 and beyond) and equals the chain rule of sigmoid(x / gamma(raw)) in NumPy."""
    block = block_with_raw(raw, parametrisation)
    x = np.random.randn(*SHAPE).astype(np.float32) * 3
    w = np.random.randn(*SHAPE).astype(np.float32)
    with autograd.record():
        loss = (block(mx.nd.array(x)) * mx.nd.array(w)).sum()
    loss.backward()
    grad = block.gamma.grad().asnumpy()[0]
    gamma = effective(raw, parametrisation)
    s = sigmoid(x.astype(np.float64) / gamma)
    d_gamma = np.sum(w * s * (1 - s) * (-x / gamma ** 2))
    span = 0.99 if parametrisation == "paper" else 1.0
    expected = d_gamma * span * sigmoid(raw) * (1 - sigmoid(raw))
    assert grad != 0
    np.testing.assert_allclose(grad, expected, rtol=1e-4)


def _fit(block, trainer, x, target_gamma, steps):
    target = mx.nd.sigmoid(x / target_gamma)
    for _ in range(steps):
        with autograd.record():
            loss = ((block(x) - target) ** 2).mean()
        loss.backward()
        trainer.step(1)
    return block.gamma_value()


def test_learns_a_crisper_gamma_and_comes_back_from_the_upper_bound():
    """A toy fit whose optimum is crisper than 1 (targets sigmoid(x / 0.6)) moves gamma down to ~0.6
    with Adam; after a fit whose optimum is smoother than the bound (gamma 3) has pushed gamma to the
    upper bound, the crisp targets bring it back down."""
    x = mx.nd.array(np.random.RandomState(0).randn(*SHAPE) * 3)
    block = SigmoidCrisp()
    block.initialize()
    trainer = gluon.Trainer(block.collect_params(), "adam", {"learning_rate": 0.05})
    assert _fit(block, trainer, x, 0.6, 150) == pytest.approx(0.6, abs=0.02)

    pushed = _fit(block, trainer, x, 3.0, 200)
    assert pushed > 0.99
    assert block.gamma.data().asscalar() > math.log(99.0)  # further into the tail than at the start
    back = _fit(block, trainer, x, 0.6, 600)
    assert back < 0.8


@pytest.mark.parametrize("gamma", [0.02, 0.61, 0.99])
def test_set_gamma_value_round_trip(gamma):
    block = block_with_raw(None)
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
    block = block_with_raw(None)
    for gamma in (0.01, 1.0, 1.5):
        with pytest.raises(ValueError, match="gamma must lie in"):
            block.set_gamma_value(gamma)
