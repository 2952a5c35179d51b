"""Adam updates of one global batch made in different ways, for test_accumulate.py (run as a script, one
process or under ``horovodrun``): train.py's pieces (plan_global_batch, forward_backward, GradientSum, update,
a DistributedTrainer) on fixed random chips.

    python tests/utilities/training/accumulation_worker.py OUT.npz --batch-sizes 4 1 [--dtypes float32 float64]

For every dtype and every ``--batch-sizes`` entry: the model built and initialised from seed 0 (rank 0's
parameters on every rank), then ``--updates`` updates of ``--global-batch`` chips each (update ``u`` uses
the chips ``u * global_batch`` to ``(u + 1) * global_batch`` of one fixed random set, rank ``r`` its ``r``-th
share, in the passes of the plan). Rank 0 saves the parameters before and after, one flat float64 vector
per key ``<dtype>/<batch size>`` (``<dtype>/initial``), and the plans (``<dtype>/<batch size>/plan``).
float64 runs GroupNorm in its operator form (the fused kernel computes in float32).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

import nn  # noqa: E402, F401  (threads first)
from nn import MultitaskFTLoss  # noqa: E402
from nn.norm import groupnorm_form  # noqa: E402

import horovod.mxnet as hvd  # noqa: E402
import mxnet as mx  # noqa: E402
import numpy as np  # noqa: E402
from mxnet import autograd, nd  # noqa: E402

from mantis import get_model  # noqa: E402
from utilities.training.accumulate import GradientSum, plan_global_batch  # noqa: E402
from utilities.training.config import TrainConfig  # noqa: E402
from utilities.training.step import forward_backward, update  # noqa: E402

#: GroupNorm's form per dtype
FORMS = {"float32": "kernel", "float64": "operator"}


def chips(count: int, size: int, dtype: str):
    """``count`` random chip pairs and one-hot change targets (the same target for the three heads)."""
    rng = np.random.RandomState(1)
    dates = [nd.array(rng.rand(count, 3, size, size), dtype=dtype) for _ in range(2)]
    labels = rng.randint(0, 2, (count, size, size))
    return dates, nd.array(np.stack([1 - labels, labels], axis=1), dtype=dtype)


def flat(net) -> np.ndarray:
    return np.concatenate([p.data().asnumpy().astype(np.float64).ravel() for p in net.collect_params().values()])


def run(args, dtype: str, batch_size: int):
    """(initial parameters, parameters after the updates, plan) of one way of making the global batches."""
    plan = plan_global_batch(TrainConfig(batch_size=batch_size, global_batch=args.global_batch), hvd.size(), "worker")
    (date1, date2), target = chips(args.global_batch * args.updates, args.size, dtype)
    mx.random.seed(0)
    net = get_model(args.model)
    net.initialize(mx.init.Xavier())
    if dtype != "float32":
        net.cast(dtype)
    net.hybridize()
    with autograd.record():  # shapes, then rank 0's parameters everywhere (as train.py)
        net(date1[:1], date2[:1])
    hvd.broadcast_parameters(net.collect_params(), root_rank=0)
    nd.waitall()
    initial = flat(net)
    trainer = hvd.DistributedTrainer(net.collect_params(), "adam", {"learning_rate": 1e-3, "beta1": 0.9,
                                                                    "beta2": 0.999})
    gradients, loss_fn = GradientSum(net), MultitaskFTLoss(depth=0)
    for u in range(args.updates):
        start = u * plan.size + hvd.rank() * plan.share
        for i, chips_in_pass in enumerate(plan.passes):
            begin = start + sum(plan.passes[:i])
            part = slice(begin, begin + chips_in_pass)
            forward_backward(net, loss_fn, (date1[part], date2[part]), [target[part]] * 3)
            gradients.add_pass(last=i == len(plan.passes) - 1)
        update(net, trainer, plan.share)
    return initial, flat(net), plan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--batch-sizes", type=int, nargs="+", required=True)
    parser.add_argument("--dtypes", nargs="+", default=["float32", "float64"])
    parser.add_argument("--model", default="fractalresnet_tiny")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--global-batch", type=int, default=4)
    parser.add_argument("--updates", type=int, default=3)
    args = parser.parse_args()
    hvd.init()
    results = {}
    for dtype in args.dtypes:
        with groupnorm_form(FORMS[dtype]):
            for batch_size in args.batch_sizes:
                initial, final, plan = run(args, dtype, batch_size)
                results.update({f"{dtype}/initial": initial, f"{dtype}/{batch_size}": final,
                                f"{dtype}/{batch_size}/plan": np.array(plan.describe())})
    if hvd.rank() == 0:
        np.savez(args.out, **results)
    nd.waitall()
    hvd.shutdown()


if __name__ == "__main__":
    main()
