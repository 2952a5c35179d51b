"""mantis's fused GroupNorm kernel (nn/kernels) against the straightforward form and float64 NumPy.

The kernel form must agree with the operator form (MXNet's own GroupNorm operator + broadcast affine,
differentiated by MXNet's autograd) in values and in the gradients of the input, gamma and beta, to
float32 tolerance; and with the equations of Wu & He (2018) evaluated in float64.
"""
import math
import subprocess
import sys

import nn
from nn import kernels
from nn.fusion import Fusion
from nn.norm import FORMS, GroupNorm, current_form, groupnorm_form

import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd


def run(form, x, dy, gamma, beta, groups, hybridize=True):
    """Output and gradients (x, gamma, beta) of a GroupNorm built in ``form``."""
    with groupnorm_form(form):
        block = GroupNorm(x.shape[1], num_groups=groups)
        block.initialize()
        block.gamma.set_data(mx.nd.array(gamma))
        block.beta.set_data(mx.nd.array(beta))
        if hybridize:
            block.hybridize()
        data = mx.nd.array(x)
        data.attach_grad()
        with autograd.record():
            out = block(data)
        out.backward(mx.nd.array(dy))
    return out.asnumpy(), data.grad.asnumpy(), block.gamma.grad().asnumpy(), block.beta.grad().asnumpy()


def numpy_groupnorm(x, gamma, beta, groups, eps=1e-5):
    """Wu & He eqs. 1-3 with a per-channel affine, float64."""
    b, c = x.shape[:2]
    xg = x.astype(np.float64).reshape(b, groups, -1)
    norm = ((xg - xg.mean(axis=2, keepdims=True)) / np.sqrt(xg.var(axis=2, keepdims=True) + eps)).reshape(x.shape)
    affine = (1, c) + (1,) * (x.ndim - 2)
    return norm * gamma.reshape(affine) + beta.reshape(affine)


def numpy_groupnorm_grad(x, dy, gamma, groups, eps=1e-5):
    """d(sum(out * dy))/dx of :func:`numpy_groupnorm` in closed form, float64."""
    b, c = x.shape[:2]
    xg = x.astype(np.float64).reshape(b, groups, -1)
    rstd = 1.0 / np.sqrt(xg.var(axis=2, keepdims=True) + eps)
    xhat = (xg - xg.mean(axis=2, keepdims=True)) * rstd
    gdy = (dy.astype(np.float64) * gamma.reshape((1, c) + (1,) * (x.ndim - 2))).reshape(b, groups, -1)
    dx = rstd * (gdy - gdy.mean(axis=2, keepdims=True) - xhat * (gdy * xhat).mean(axis=2, keepdims=True))
    return dx.reshape(x.shape)


def case(shape, seed=0, mean=1.5, std=3.0):
    rng = np.random.default_rng(seed)
    x = rng.normal(mean, std, shape).astype(np.float32)
    dy = rng.normal(size=shape).astype(np.float32)
    gamma = rng.uniform(0.5, 2.0, shape[1]).astype(np.float32)
    beta = rng.normal(size=shape[1]).astype(np.float32)
    return x, dy, gamma, beta


SHAPES = [((2, 12, 5, 7), 4), ((1, 8, 16, 16), 8), ((3, 16, 4, 6), 1), ((2, 6, 3, 3), 4), ((2, 32, 64, 64), 4)]


def test_kernel_is_the_default_on_cpu():
    """On this CPU-only machine with the library built, GroupNorm runs the kernel."""
    assert kernels.LIBRARY.exists(), "run scripts/install.sh: it builds nn/kernels/libmantis_ops.so"
    assert mx.context.num_gpus() == 0 and current_form() == "kernel"


@pytest.mark.parametrize("shape,groups", SHAPES)
def test_kernel_matches_operator_form(shape, groups):
    """Values and all three gradients agree with MXNet's GroupNorm operator + broadcast affine."""
    x, dy, gamma, beta = case(shape)
    g = math.gcd(groups, shape[1])
    fast, reference = run("kernel", x, dy, gamma, beta, g), run("operator", x, dy, gamma, beta, g)
    for name, a, b in zip(("out", "dx", "dgamma", "dbeta"), fast, reference):
        scale = max(np.abs(b).max(), 1.0)
        np.testing.assert_allclose(a, b, rtol=0, atol=2e-5 * scale, err_msg=name)


@pytest.mark.parametrize("shape,groups", SHAPES[:2])
def test_kernel_matches_numpy_float64(shape, groups):
    """The kernel's output against the equations in float64."""
    x, dy, gamma, beta = case(shape, seed=1)
    out = run("kernel", x, dy, gamma, beta, groups)[0]
    np.testing.assert_allclose(out, numpy_groupnorm(x, gamma, beta, groups), rtol=0, atol=1e-5)


def test_kernel_gradient_matches_finite_differences():
    """d(sum(out * dy))/dx of the kernel, and the closed form the other tests use, against central
    differences of the float64 equations."""
    x, dy, gamma, beta = case((1, 4, 3, 3), seed=2)
    grad = run("kernel", x, dy, gamma, beta, 2)[1]
    x64, h = x.astype(np.float64), 1e-6
    numeric = np.zeros_like(x64)

    def loss(a):
        return (numpy_groupnorm(a, gamma, beta, 2) * dy).sum()

    for i in np.ndindex(x.shape):
        up, down = x64.copy(), x64.copy()
        up[i] += h
        down[i] -= h
        numeric[i] = (loss(up) - loss(down)) / (2 * h)
    np.testing.assert_allclose(numpy_groupnorm_grad(x, dy, gamma, 2), numeric, rtol=0, atol=1e-6)
    np.testing.assert_allclose(grad, numeric, rtol=0, atol=2e-5)


def test_kernel_keeps_precision_when_the_mean_dwarfs_the_spread():
    """Moments accumulated in double: data with mean 1000 and std 0.5 still normalise to float32 accuracy."""
    x, dy, gamma, beta = case((2, 8, 32, 32), seed=3, mean=1000.0, std=0.5)
    out, dx = run("kernel", x, dy, gamma, beta, 4)[:2]
    np.testing.assert_allclose(out, numpy_groupnorm(x, gamma, beta, 4), rtol=0, atol=2e-5)
    np.testing.assert_allclose(dx, numpy_groupnorm_grad(x, dy, gamma, 4), rtol=0, atol=2e-5 * np.abs(dx).max())


def test_kernel_hybridized_equals_imperative():
    x, dy, gamma, beta = case((2, 8, 6, 5), seed=4)
    for a, b in zip(run("kernel", x, dy, gamma, beta, 4, hybridize=True),
                    run("kernel", x, dy, gamma, beta, 4, hybridize=False)):
        np.testing.assert_array_equal(a, b)


def test_kernel_refuses_other_dtypes():
    kernels.load()
    ones = mx.nd.ones((4,), dtype="float64")
    with pytest.raises(mx.MXNetError, match="mantis_group_norm supports float32 only"):
        mx.nd.mantis_group_norm(mx.nd.ones((1, 4, 2, 2), dtype="float64"), ones, ones, num_groups=2,
                                eps=1e-5)[0].wait_to_read()


def test_unknown_form_is_refused(monkeypatch):
    with pytest.raises(ValueError, match=r"groupnorm_form: unknown GroupNorm form 'fast'; choose one of "
                                         r"kernel, operator"):
        with groupnorm_form("fast"):
            pass
    monkeypatch.setenv("MANTIS_GROUPNORM", "cudnn")
    with pytest.raises(ValueError, match="MANTIS_GROUPNORM: unknown GroupNorm form 'cudnn'"):
        current_form()
    monkeypatch.setenv("MANTIS_GROUPNORM", "operator")
    assert current_form() == "operator"
    assert FORMS == ("kernel", "operator")


def test_build_writes_a_shared_library(tmp_path):
    """``python -m nn.kernels``'s build compiles the sources into a shared object (atomically)."""
    out = kernels.build(tmp_path / "libmantis_ops.so")
    assert out.read_bytes()[:4] == b"\x7fELF"
    assert list(tmp_path.iterdir()) == [out]
    symbols = subprocess.run(["nm", "-D", str(out)], capture_output=True, text=True).stdout
    assert "initialize" in symbols and "_opRegSize" in symbols


@pytest.mark.parametrize("order", ["horovod first", "kernels first"])
def test_kernel_loads_next_to_horovod(order):
    """The library and Horovod's MXNet extension live in one process, loaded in either order."""
    steps = ["import horovod.mxnet as hvd; hvd.init()", "nn.kernels.load()"]
    steps = steps if order == "horovod first" else steps[::-1]
    code = "; ".join(["import sys; sys.path.insert(0, %r)" % str(kernels.LIBRARY.parents[2]), "import nn", *steps,
                      "import mxnet as mx",
                      "y = mx.nd.mantis_group_norm(mx.nd.ones((1, 4, 2, 2)), mx.nd.ones(4), mx.nd.zeros(4), "
                      "num_groups=2, eps=1e-5)[0]",
                      "x = mx.nd.ones((3,)); hvd.allreduce_(x)",
                      "print(float(y.abs().sum().asscalar()), x.asnumpy().tolist())"])
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split()[-4:] == ["0.0", "[1.0,", "1.0,", "1.0]"]


def test_nn_exports_kernels_module():
    assert nn.kernels is kernels


def _pass_gradients(block, data, grad_req):
    """Parameter gradients after a backward pass over each input tuple of ``data`` with ``grad_req``."""
    block.collect_params().setattr("grad_req", grad_req)
    for param in block.collect_params().values():
        param.zero_grad()
    for inputs in data:
        with autograd.record():
            loss = (block(*inputs) * inputs[0]).sum()
        loss.backward()
    return {name: param.grad().asnumpy().astype(np.float64) for name, param in block.collect_params().items()}


@pytest.mark.parametrize("hybridize", [False, True])
@pytest.mark.parametrize("make, arity", [(lambda: GroupNorm(6, num_groups=3), 1),
                                         (lambda: GroupNorm(6, 3, affine="group"), 1),
                                         (lambda: Fusion(6, nheads=2), 2)],
                         ids=["groupnorm", "groupnorm-per-group", "fusion"])
def test_kernel_forms_add_into_parameter_gradients_with_grad_req_add(make, arity, hybridize):
    """grad_req='add' sums the passes' gradients: the library operators (which MXNet 1.9.1 gives no request
    type) must not overwrite the gradients of the parameters they read."""
    with groupnorm_form("kernel"):
        block = make()
        block.initialize()
        rng = np.random.default_rng(1)
        data = [tuple(mx.nd.array(rng.normal(size=(2, 6, 5, 7))) for _ in range(arity)) for _ in range(2)]
        block(*data[0])  # the convolutions' shapes
        for param in block.collect_params().values():  # Fusion's gammas start at zero, which stops gradients
            param.set_data(mx.nd.array(rng.uniform(0.2, 1.0, param.shape)))
        if hybridize:
            block.hybridize()
        each = [_pass_gradients(block, [inputs], "write") for inputs in data]
        summed = _pass_gradients(block, data, "add")
    assert summed.keys() == each[0].keys()
    for name in summed:
        np.testing.assert_allclose(summed[name], each[0][name] + each[1][name], rtol=1e-5, atol=1e-6, err_msg=name)
        assert np.abs(each[1][name]).max() > 1e-4, name  # each pass contributes
