"""The contract of every registered tiny model, in each fidelity it takes (``list_models(tiny=True)``).

A model built by the registry and initialised gives outputs of the expected shapes with finite values;
every trainable parameter receives a gradient (with the attention gammas, which start at 0 by eqs
14-16 and so block the attention branches' gradients, set to 0.5); hybridized equals imperative.
Change-detection models take two dates of their ``size_multiple`` (the smallest valid side) and give
``(segmentation, boundary, distance)``; classifiers take CIFAR-10's 32 x 32 images and give 10 scores.
"""
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import mxnet as mx
import numpy as np
import pytest
from mxnet import nd

from mantis import get_model, list_models, model_parameters
from mantis.cifar import CifarNet
from mantis.models import FIDELITIES, MantisCD

BATCH = 2

Shapes = List[Tuple[int, ...]]


def _change_detection_io(net: MantisCD) -> Tuple[Shapes, Shapes]:
    side = net.size_multiple
    return [(BATCH, 3, side, side)] * 2, [(BATCH, net.config["classes"], side, side)] * 3


def _classifier_io(net: CifarNet) -> Tuple[Shapes, Shapes]:
    return [(BATCH, 3, 32, 32)], [(BATCH, 10)]


#: model class -> its input shapes and output shapes
IO: Dict[type, Callable[..., Tuple[Shapes, Shapes]]] = {MantisCD: _change_detection_io, CifarNet: _classifier_io}


def _cases() -> List:
    cases = []
    for name in list_models(tiny=True):
        fidelities: Sequence[Optional[str]] = sorted(FIDELITIES) if "fidelity" in model_parameters(name) else [None]
        cases += [pytest.param(name, fidelity, id=name if fidelity is None else f"{name}-{fidelity}")
                  for fidelity in fidelities]
    return cases


@pytest.mark.parametrize("name, fidelity", _cases())
def test_model_contract(name, fidelity, set_gammas, check_grads, check_hybrid):
    net = get_model(name, **({} if fidelity is None else {"fidelity": fidelity}))
    net.initialize(mx.init.Xavier())
    input_shapes, output_shapes = IO[type(net)](net)
    rng = np.random.RandomState(0)
    inputs = [nd.array(rng.uniform(size=shape)) for shape in input_shapes]
    net(*inputs)  # resolves the deferred shapes before the gammas are set
    set_gammas(net, 0.5)

    outputs = net(*inputs)
    outputs = list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
    assert [o.shape for o in outputs] == output_shapes
    for out in outputs:
        assert np.isfinite(out.asnumpy()).all()
    check_grads(net, *inputs)
    check_hybrid(net, *inputs)


def test_every_fidelity_of_the_change_detection_models_is_covered():
    ids = {(p.values[0], p.values[1]) for p in _cases()}
    for name in list_models(tiny=True):
        if isinstance(get_model(name), MantisCD):
            assert {(name, fidelity) for fidelity in FIDELITIES} <= ids
