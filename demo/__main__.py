"""``make demo`` / ``python -m demo``.

The end-to-end demo (synthetic scenes -> Horovod training through the evolving-loss stages ->
Pareto-front selection -> georeferenced prediction) is not built yet (issues 5-7). Until then this
runs what exists and says so: a forward and backward pass of each tiny mantis variant on two
random dates, with the FT loss, printing shapes, value ranges and the loss.
"""
from __future__ import annotations

import nn  # noqa: F401  (sets MXNet's OpenMP threads first)
from nn import MultitaskFTLoss

import mxnet as mx
from mxnet import autograd, nd

from mantis import get_model
from mantis.models import UNITS


def main() -> None:
    print("mantis demo: the full end-to-end demo is not built yet (issues 5-7);")
    print("running a smoke forward/backward pass of each tiny mantis variant instead.\n")
    mx.random.seed(0)
    date1 = nd.random.uniform(shape=(2, 3, 32, 32))
    date2 = nd.random.uniform(shape=(2, 3, 32, 32))
    target = nd.one_hot(nd.random.randint(0, 2, shape=(2, 32, 32)).astype("float32"), 2).transpose((0, 3, 1, 2))
    loss_fn = MultitaskFTLoss(depth=0)
    for unit in sorted(UNITS):
        net = get_model(f"{unit}_tiny")
        net.initialize(mx.init.Xavier())
        net.hybridize()
        with autograd.record():
            segm, bound, dist = net(date1, date2)
            loss = loss_fn(segm, bound, dist, target, target, target).mean()
        loss.backward()
        print(f"{unit + '_tiny':22s} outputs {segm.shape} x3, segmentation in "
              f"[{segm.min().asscalar():.3f}, {segm.max().asscalar():.3f}], FT loss {loss.asscalar():.4f}")
    print("\nsmoke pass finished.")


if __name__ == "__main__":
    main()
