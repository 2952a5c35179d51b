"""Model size summaries: the number of learned parameters of a Gluon block."""
from __future__ import annotations

from typing import Sequence

import mxnet as mx
import numpy as np
from mxnet.gluon import Block, HybridBlock


def count_parameters(net: Block, *input_shapes: Sequence[int], ctx: mx.Context | None = None) -> int:
    """Number of learned scalars (parameters with ``grad_req != 'null'``) of ``net``.

    Shapes that Gluon defers to the first forward are resolved from ``input_shapes`` (one shape per
    input of ``net``): by shape inference on the symbolic graph for a HybridBlock (nothing is
    computed, so a D6nf32 model is counted in seconds and little memory), otherwise by one forward
    pass on zeros outside ``autograd.record()`` (nothing, e.g. BatchNorm running statistics, is
    updated). Parameters not yet initialised are initialised with MXNet's default initialiser;
    initialised ones are left as they are. Running statistics and constants (``grad_req == 'null'``)
    are not counted.

    Parameters
    ----------
    net : mxnet.gluon.Block
        The model.
    *input_shapes : sequence of int
        Shape of each input, batch axis included, e.g. ``(1, 3, 32, 32)``.
    ctx : mxnet.Context, optional
        Where to run the forward pass (default CPU).

    Returns
    -------
    int
        The number of learned scalars.
    """
    ctx = ctx or mx.cpu()
    params = net.collect_params()
    for param in params.values():
        try:
            param.list_ctx()  # raises only when the parameter was never initialised
        except RuntimeError:
            param.initialize(ctx=ctx)
    inputs = [mx.nd.zeros(tuple(shape), ctx=ctx) for shape in input_shapes]
    if isinstance(net, HybridBlock):
        net.infer_shape(*inputs)
    else:
        net(*inputs)
    return int(sum(np.prod(p.shape) for p in params.values() if p.grad_req != "null"))
