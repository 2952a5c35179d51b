"""Model size summaries: the number of learned parameters of a Gluon block."""
from __future__ import annotations

from typing import Sequence

import mxnet as mx
import numpy as np
from mxnet.gluon import Block


def count_parameters(net: Block, *input_shapes: Sequence[int], ctx: mx.Context | None = None) -> int:
    """Number of learned scalars (parameters with ``grad_req != 'null'``) of ``net``.

    Shapes that Gluon defers to the first forward are resolved by one forward pass on zeros of
    ``input_shapes`` (one shape per input of ``net``), outside ``autograd.record()`` so that nothing
    (e.g. BatchNorm running statistics) is updated. Parameters not yet initialised are initialised
    with MXNet's default initialiser; initialised ones are left as they are. Running statistics and
    constants (``grad_req == 'null'``) are not counted.

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
    net(*[mx.nd.zeros(tuple(shape), ctx=ctx) for shape in input_shapes])
    return int(sum(np.prod(p.shape) for p in params.values() if p.grad_req != "null"))
