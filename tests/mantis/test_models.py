"""mantis change-detection models (paper Section 6.2-6.3, Figs 6-7): every registered tiny variant."""
import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd, nd

from mantis import get_model, list_models
from mantis.models import UNITS, MantisCD

TINY_CD = [f"{unit}_tiny" for unit in sorted(UNITS)]
SIZE = 16  # multiple of the tiny models' size_multiple (2 ** (depth - 1 + psp_depth - 1) = 8)


def _dates(batch=2, seed=0):
    rng = np.random.RandomState(seed)
    return (nd.array(rng.uniform(size=(batch, 3, SIZE, SIZE))), nd.array(rng.uniform(size=(batch, 3, SIZE, SIZE))))


def _build(name, seed=0):
    mx.random.seed(seed)
    net = get_model(name)
    net.initialize(mx.init.Xavier())
    return net


def _open_gammas(net, value=0.5):
    """Attention scalings start at 0 (eqs 14-16), which blocks the attention branches' gradients."""
    for name, p in net.collect_params().items():
        if p.shape == (1,) and name.split("_")[-1].startswith("gamma") and "sigmoidcrisp" not in name:
            p.set_data(nd.full((1,), value))


def test_registry_lists_all_variants():
    names = list_models()
    for unit in UNITS:
        assert f"{unit}_d6nf32" in names and f"{unit}_tiny" in names
    assert set(list_models(tiny=True)) >= set(TINY_CD)
    assert not any("tiny" in n for n in list_models(tiny=False))


def test_unknown_model_error_names_the_choices():
    with pytest.raises(ValueError, match=r"unknown model 'ceecnetv9'.*ceecnetv1_d6nf32"):
        get_model("ceecnetv9")


def test_overrides_reach_the_model():
    net = get_model("ceecnetv1_d6nf32", nfilters=64, depth=4)
    assert net.config["nfilters"] == 64 and net.config["depth"] == 4 and net.config["unit"] == "ceecnetv1"


def test_unknown_unit():
    with pytest.raises(ValueError, match="unknown unit 'resnext'"):
        MantisCD(unit="resnext")


@pytest.mark.parametrize("name", TINY_CD)
def test_outputs_shapes_and_ranges(name):
    net = _build(name)
    segm, bound, dist = net(*_dates())
    for out in (segm, bound, dist):
        assert out.shape == (2, 2, SIZE, SIZE)
        a = out.asnumpy()
        assert np.isfinite(a).all()
        assert a.min() >= 0.0 and a.max() <= 1.0
    np.testing.assert_allclose(segm.sum(axis=1).asnumpy(), 1.0, rtol=1e-5)  # softmax over classes


@pytest.mark.parametrize("name", TINY_CD)
def test_every_parameter_gets_a_gradient(name):
    net = _build(name)
    _open_gammas(net)
    a, b = _dates()
    net(a, b)
    weights = [nd.array(np.random.RandomState(i).normal(size=(2, 2, SIZE, SIZE))) for i in range(3)]
    with autograd.record():
        outs = net(a, b)
        loss = sum((o * w).sum() for o, w in zip(outs, weights))
    loss.backward()
    dead = [n for n, p in net.collect_params().items()
            if p.grad_req != "null" and not np.abs(p.grad().asnumpy()).max() > 0]
    assert not dead, f"parameters without gradient: {dead}"


@pytest.mark.parametrize("name", TINY_CD)
def test_hybridized_equals_imperative(name):
    net = _build(name)
    _open_gammas(net)
    a, b = _dates()
    imperative = [o.asnumpy() for o in net(a, b)]
    net.hybridize()
    hybrid = [o.asnumpy() for o in net(a, b)]
    for x, y in zip(imperative, hybrid):
        np.testing.assert_allclose(x, y, atol=1e-5)


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
def test_swapping_dates_changes_the_output(name):
    """Fusion's attentions and its concatenation order make the model date-ordered (the paper teaches
    time-reversal invariance by augmentation, Section 8.3, not by construction)."""
    net = _build(name)
    _open_gammas(net)
    a, b = _dates()
    ab = net(a, b)[0].asnumpy()
    ba = net(b, a)[0].asnumpy()
    assert not np.allclose(ab, ba, atol=1e-6)


def test_size_multiple():
    assert get_model("ceecnetv1_d6nf32").size_multiple == 256
    assert get_model("ceecnetv1_tiny").size_multiple == 8
