"""``fidelity="authors"``: the network of the authors' public code (``mantis_dn_cmtsk``), parameter for
parameter. Its D6nf32 parameter counts are the authors' (counted by shape inference, nothing computed);
parameters saved by their network load with ``utilities.artifacts.authors.load_authors_parameters`` and give their
outputs (segmentation, boundary, distance) within 1e-5 to 1e-4 in float32 (as far as the parameters are
moved from their initial values) and 1e-9 in float64, imperative and hybridized, and the same gradients with
respect to the inputs.

The authors' code is the oracle: tests that run it skip where ``../shared/reference`` (relative to the
repository root) is absent.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

from nn.norm import groupnorm_form

import mxnet as mx
import numpy as np
import pytest

from mantis import get_model
from mantis.summary import count_parameters
from utilities.artifacts.authors import load_authors_parameters
from utilities.errors import InputError

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT.parent / "shared" / "reference"
needs_reference = pytest.mark.skipif(not (REFERENCE / "ceecnet").is_dir(),
                                     reason=f"the authors' code is not at {REFERENCE}")

#: mantis unit -> the authors' model name
MODELS = {"fractalresnet": "FracTALResNet", "ceecnetv1": "CEECNetV1", "ceecnetv2": "CEECNetV2"}
SMALL = dict(nfilters=16, depth=4, nheads_start=2, psp_depth=2)  # the smallest that builds in their code
SIDE = 64

#: the authors' D6nf32 trainable parameters (their README; GroupNorm(4), nheads_start 4, psp_depth 4, ftdepth 5)
AUTHORS_D6NF32 = [("fractalresnet", False, 23_491_798), ("ceecnetv1", False, 39_902_348),
                  ("ceecnetv2", False, 64_076_166), ("ceecnetv2", True, 63_560_656)]


@pytest.mark.parametrize("unit,upfuse,expected", AUTHORS_D6NF32)
def test_d6nf32_parameter_counts_equal_the_authors(unit, upfuse, expected):
    net = get_model(f"{unit}_d6nf32", fidelity="authors", upfuse=upfuse)
    assert count_parameters(net, (1, 3, 256, 256), (1, 3, 256, 256)) == expected


def _authors_network(unit, upfuse, nfilters, depth, nheads_start, psp_depth):
    if str(REFERENCE) not in sys.path:
        sys.path.insert(0, str(REFERENCE))
    from ceecnet.models.changedetection.mantis.mantis_dn import mantis_dn_cmtsk

    return mantis_dn_cmtsk(nfilters_init=nfilters, depth=depth, NClasses=2, ftdepth=5, psp_depth=psp_depth,
                           norm_type="GroupNorm", norm_groups=4, nheads_start=nheads_start, model=MODELS[unit],
                           upFuse=upfuse, verbose=False)


def _trained_authors_file(tmp_path, unit, upfuse, config, side, scale=0.1, batch=2, seed=0):
    """The authors' network with random weights, its attention and crisp-sigmoid gammas and normalisation
    affines moved away from their initial values by N(0, scale) (as training would), saved with
    ``save_parameters``; returns the file, two dates and the network."""
    mx.random.seed(seed)
    rng = np.random.RandomState(seed)
    theirs = _authors_network(unit, upfuse, **config)
    theirs.initialize(mx.init.Xavier())
    dates = [mx.nd.array(rng.uniform(size=(batch, 3, side, side))) for _ in range(2)]
    theirs(*dates)
    for name, p in theirs._collect_params_with_prefix().items():
        if p.shape == (1,) or "norm" in name or "BN" in name:
            p.set_data(p.data() + mx.nd.array(rng.normal(scale=scale, size=p.shape)))
    path = tmp_path / f"{unit}.params"
    theirs.save_parameters(str(path))
    return path, dates, theirs


def _assert_outputs_equal(net, dates, expected, atol=1e-5):
    for ours, theirs, what in zip(net(*dates), expected, ("segmentation", "boundary", "distance")):
        np.testing.assert_allclose(ours.asnumpy(), theirs, rtol=0, atol=atol, err_msg=what)


CASES = [("fractalresnet", False), ("ceecnetv1", False), ("ceecnetv2", False), ("ceecnetv2", True)]
SMALL_AUTHORS = dict(nfilters=16, depth=4, nheads_start=2, psp_depth=2)
#: gradient cases left to ``make slow`` (about 30 s each); CEECNetV1 (oneDNN's SIGFPE) and V2 with upfuse (the
#: largest float32 differences) run by default
SLOW_GRADIENTS = {("fractalresnet", False), ("ceecnetv2", False)}


@needs_reference
@pytest.mark.parametrize("unit,upfuse", CASES)
def test_authors_parameters_give_the_authors_outputs(tmp_path, unit, upfuse):
    """Small configuration, 64x64: after loading the authors' file into a freshly built network (no
    forward pass first), the three outputs equal theirs, imperative and hybridized: within 1e-5 in float32
    with the gammas and normalisation affines moved by N(0, 0.1); within 1e-4 moved by N(0, 0.5), further
    from their initial values (measured: up to 2.5e-5, CEECNetV2 with upfuse); within 1e-9 in float64
    with the latter: the same function, the float32 differences are rounding (mantis computes GroupNorm,
    resizing and attention products in other but equal forms)."""
    for scale, atol in ((0.1, 1e-5), (0.5, 1e-4)):
        path, dates, theirs = _trained_authors_file(tmp_path, unit, upfuse, SMALL_AUTHORS, SIDE, scale=scale)
        expected = [o.asnumpy() for o in theirs(*dates)]
        net = get_model(f"{unit}_d6nf32", fidelity="authors", upfuse=upfuse, **SMALL)
        load_authors_parameters(net, path)
        _assert_outputs_equal(net, dates, expected, atol)
        net.hybridize()
        _assert_outputs_equal(net, dates, expected, atol)

    dates = [d.astype("float64") for d in dates]
    theirs.cast("float64")
    net = get_model(f"{unit}_d6nf32", fidelity="authors", upfuse=upfuse, **SMALL)
    load_authors_parameters(net, path)
    net.cast("float64")
    with groupnorm_form("operator"):  # the kernel computes in float32
        _assert_outputs_equal(net, dates, [o.asnumpy() for o in theirs(*dates)], atol=1e-9)


def input_gradients(unit: str, upfuse: bool, folder: str) -> dict:
    """float64 gradients of a weighted sum of the three outputs with respect to both dates, of the authors'
    network (parameters moved by N(0, 0.5)) and of mantis's loaded from its file: the largest difference
    and the largest gradient (run by :func:`test_input_gradients_equal_the_authors` in a child process)."""
    path, dates, theirs = _trained_authors_file(Path(folder), unit, upfuse, SMALL_AUTHORS, SIDE, scale=0.5)
    dates = [d.astype("float64") for d in dates]
    theirs.cast("float64")
    net = get_model(f"{unit}_d6nf32", fidelity="authors", upfuse=upfuse, **SMALL)
    load_authors_parameters(net, path)
    net.cast("float64")
    rng = np.random.RandomState(1)
    weights = [mx.nd.array(rng.normal(size=(2, 2, SIDE, SIDE)), dtype="float64") for _ in range(3)]
    grads = []
    for model in (theirs, net):
        inputs = [d.copy() for d in dates]
        for x in inputs:
            x.attach_grad()
        with mx.autograd.record(), groupnorm_form("operator"):
            loss = mx.nd.add_n(*[(o * w).sum() for o, w in zip(model(*inputs), weights)])
        loss.backward()
        grads.append(np.stack([x.grad.asnumpy() for x in inputs]))
    return {"difference": float(np.abs(grads[0] - grads[1]).max()), "largest": float(np.abs(grads[0]).max())}


@needs_reference
@pytest.mark.parametrize("unit,upfuse", [pytest.param(*case, marks=pytest.mark.slow) if case in SLOW_GRADIENTS
                                         else case for case in CASES])
def test_input_gradients_equal_the_authors(tmp_path, unit, upfuse):
    """The gradients with respect to both dates (what training propagates through the whole network) equal
    the authors' network's in float64 within 1e-9 of the largest, with parameters moved by N(0, 0.5). In a
    child process with oneDNN off (``MXNET_MKLDNN_ENABLED=0``, read once when MXNet starts): MXNet 1.9.1's
    oneDNN backward of the authors' small CEECNetV1 dies with SIGFPE."""
    code = ("import json, sys; import nn; from tests.mantis.test_authors import input_gradients; "
            f"print(json.dumps(input_gradients({unit!r}, {upfuse!r}, {str(tmp_path)!r})))")
    env = {**os.environ, "MXNET_MKLDNN_ENABLED": "0"}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["largest"] > 0 and result["difference"] <= 1e-9 * result["largest"], result


@needs_reference
@pytest.mark.slow
def test_authors_parameters_give_the_authors_outputs_d6nf32(tmp_path):
    """D6nf32 (the paper's size), FracTAL ResNet, one 256x256 pair."""
    path, dates, theirs = _trained_authors_file(tmp_path, "fractalresnet", False, dict(
        nfilters=32, depth=6, nheads_start=4, psp_depth=4), 256, batch=1)
    expected = [o.asnumpy() for o in theirs(*dates)]
    del theirs
    net = get_model("fractalresnet_d6nf32", fidelity="authors")
    load_authors_parameters(net, path)
    _assert_outputs_equal(net, dates, expected)


# ----------------------------------------------------------------------------- what does not match

def _save(tmp_path, arrays, name="file.params"):
    path = tmp_path / name
    mx.nd.save(str(path), arrays)
    return path


def _small_fractal():
    return get_model("fractalresnet_tiny", fidelity="authors", depth=2)


def test_only_an_authors_network_takes_their_parameters(tmp_path):
    path = _save(tmp_path, {"features.conv_first.conv2d.weight": mx.nd.zeros((8, 3, 1, 1))})
    with pytest.raises(InputError, match=r"file\.params: the authors' parameters load only into a network built "
                                         r"with fidelity='authors', not 'paper'$"):
        load_authors_parameters(get_model("fractalresnet_tiny"), path)


def test_unknown_parameter_is_named(tmp_path):
    path = _save(tmp_path, {"features.conv_first.conv2d.weight": mx.nd.zeros((8, 3, 1, 1)),
                            "features.extra.weight": mx.nd.zeros((2,))})
    with pytest.raises(InputError, match=r"parameter 'features\.extra\.weight' has no counterpart \('extra\.weight'\) "
                                         r"in the mantis network \(fractalresnet nfilters=8 depth=2 upfuse=False\)$"):
        load_authors_parameters(_small_fractal(), path)


def test_shape_mismatch_is_named(tmp_path):
    path = _save(tmp_path, {"features.conv_first.conv2d.weight": mx.nd.zeros((16, 3, 1, 1))})
    with pytest.raises(InputError, match=r"parameter 'features\.conv_first\.conv2d\.weight' has shape \(16, 3, 1, 1\), "
                                         r"the mantis network .* expects \(8, 0, 1, 1\) for 'stem\.conv\.weight'$"):
        load_authors_parameters(_small_fractal(), path)


def test_missing_parameters_are_counted_and_one_is_named(tmp_path):
    path = _save(tmp_path, {"features.conv_first.conv2d.weight": mx.nd.zeros((8, 3, 1, 1))})
    net = _small_fractal()
    total = len(net.collect_params().keys())
    with pytest.raises(InputError, match=rf"{total - 1} parameter\(s\) of the mantis network .* are not in the file, "
                                         r"e.g. 'stem\.norm\.gamma'$"):
        load_authors_parameters(net, path)


def test_unreadable_file(tmp_path):
    path = tmp_path / "broken.params"
    path.write_bytes(b"not a parameter file")
    with pytest.raises(InputError, match=r"broken\.params: not an MXNet parameter file"):
        load_authors_parameters(_small_fractal(), path)
