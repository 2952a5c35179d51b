"""Shared fixtures for the test suite: seeding, generic checks of Gluon blocks, a small LEVIR-CD folder.

The checks are handed out as fixtures (functions) so that test modules need not import this file.
"""
import mxnet as mx
import numpy as np
import pytest

from utilities.data.synthetic import write_levircd_layout


@pytest.fixture(autouse=True)
def _seed():
    """Seed NumPy's global RNG and MXNet's RNG (parameter initialisation) before every test."""
    np.random.seed(0)
    mx.random.seed(0)


@pytest.fixture
def rng():
    """A seeded NumPy generator for test data."""
    return np.random.RandomState(1234)


def _walk(block):
    """``block`` and all its descendants."""
    stack = [block]
    while stack:
        b = stack.pop()
        yield b
        stack.extend(b._children.values())


def set_attention_gammas(block, value):
    """Set the scalar attention-fusion gammas (``gamma``, ``gamma1..3`` of Fusion, FTAttResUnit,
    CEECUnit, anywhere inside ``block``) to ``value``. Normalisation gammas are left alone: they are
    selected by owning block, not by name. Returns the number of parameters set."""
    from nn import CEECUnit, FTAttResUnit, Fusion

    count = 0
    for b in _walk(block):
        if isinstance(b, (Fusion, FTAttResUnit, CEECUnit)):
            for name in ("gamma", "gamma1", "gamma2", "gamma3"):
                param = getattr(b, name, None)
                if param is None:
                    continue
                assert param.shape == (1,), (param.name, param.shape)
                param.set_data(mx.nd.full(param.shape, value))
                count += 1
    return count


def _outputs(result):
    """A block's output(s) as a list."""
    return list(result) if isinstance(result, (list, tuple)) else [result]


def assert_hybrid_matches(block, *inputs, atol=1e-5, rtol=1e-5):
    """The hybridized block gives the imperative output (same parameters, same inputs), on the first
    (graph-building) call and on a second (cached) call."""
    imperative = [o.asnumpy() for o in _outputs(block(*inputs))]
    block.hybridize()
    for _ in range(2):
        hybrid = [o.asnumpy() for o in _outputs(block(*inputs))]
        assert len(hybrid) == len(imperative)
        for h, i in zip(hybrid, imperative):
            np.testing.assert_allclose(h, i, rtol=rtol, atol=atol)


def assert_all_params_get_grad(block, *inputs, seed=7):
    """Every parameter with ``grad_req != 'null'`` receives a finite, non-zero gradient from the loss
    ``sum_k sum(output_k * w_k)`` with fixed random ``w_k`` (not invariant to any normalisation), over
    all the block's outputs."""
    rng = np.random.RandomState(seed)
    with mx.autograd.record():
        outs = _outputs(block(*inputs))
        loss = mx.nd.add_n(*[(out * mx.nd.array(rng.randn(*out.shape))).sum() for out in outs])
    loss.backward()
    dead, nonfinite = [], []
    params = [p for p in block.collect_params().values() if p.grad_req != "null"]
    assert params, "block has no trainable parameters"
    for p in params:
        g = p.grad().asnumpy()
        if not np.all(np.isfinite(g)):
            nonfinite.append(p.name)
        elif not np.any(g != 0):
            dead.append(p.name)
    assert not nonfinite, f"non-finite gradients: {nonfinite}"
    assert not dead, f"parameters without gradient: {dead}"


@pytest.fixture
def set_gammas():
    return set_attention_gammas


@pytest.fixture
def check_hybrid():
    return assert_hybrid_matches


@pytest.fixture
def check_grads():
    return assert_all_params_get_grad


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    """A LEVIR-CD folder of synthetic 64x64 scenes (2 train, 1 val), written once per test module."""
    root = tmp_path_factory.mktemp("levir")
    write_levircd_layout(root, n_per_split={"train": 2, "val": 1}, size=64, seed=0)
    return root
