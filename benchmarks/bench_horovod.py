"""Horovod data-parallel scaling on this machine: training-step time and allreduce share with 1 and 2 ranks.

    python benchmarks/bench_horovod.py                                  # fractalresnet_small, batch 2 per rank, 128x128
    python benchmarks/bench_horovod.py --model fractalresnet_tiny --size 64 --steps 2
    python benchmarks/bench_horovod.py --model fractalresnet_d6nf32 --batch 3 --size 256 --steps 3

Every rank count is a real ``horovodrun -np N --gloo -H localhost:N`` launch of this script (``--child``), which
trains as train.py does: ``nn`` imported first (OpenMP threads = cores / local ranks), the model hybridized (no
static_alloc), ``hvd.init()``, parameters broadcast from rank 0 after a forward inside ``autograd.record``,
``hvd.DistributedTrainer`` with Adam and the multitask FT loss, on random inputs (different on every rank).

Per rank count: the median seconds of ``--steps`` training steps after one warm-up step (forward, backward,
gradient allreduce, Adam update, until ``nd.waitall``); then, in the same run, the median of ``--steps`` allreduces
of every parameter's gradient alone (``hvd.allreduce_`` per parameter, as DistributedTrainer enqueues them), as a
share of the step (with 1 rank DistributedTrainer does no allreduce: none is timed). chips/s = ranks x batch / step
s; scaling efficiency = chips/s with N ranks / (N x chips/s with 1 rank). Rank 0 writes its results as JSON to a
file in a temporary folder, which this (parent) process reads. Prints machine details, the command and the date, as
BENCHMARKS.md records them; absolute seconds on shared machines are noisy, compare the numbers of one run.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Optional, Union

from bench_models import median_seconds, print_header, random_target

if TYPE_CHECKING:
    from mxnet import gluon, nd

ROOT = Path(__file__).resolve().parents[1]
HOROVODRUN = Path(sys.executable).parent / "horovodrun"
sys.path.insert(0, str(ROOT))


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="fractalresnet_small", help="registered mantis model")
    parser.add_argument("--batch", type=int, default=2, help="chips per rank and step")
    parser.add_argument("--size", type=int, default=128, help="side of the two input dates")
    parser.add_argument("--steps", type=int, default=5, help="timed steps (after one warm-up step)")
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2], help="rank counts to launch")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # inside horovodrun: JSON file that rank 0 writes
    return parser.parse_args(argv)


def step(net: gluon.HybridBlock, trainer: gluon.Trainer, loss_fn: gluon.loss.Loss, x: nd.NDArray,
         target: nd.NDArray) -> None:
    """Forward, backward, allreduce and Adam update of one batch (``utilities.training.step.train_step``, the targets as
    in bench_models.py), until ``nd.waitall``."""
    from mxnet import nd

    from utilities.training.step import train_step

    train_step(net, trainer, loss_fn, (x, x), (target, target, target))
    nd.waitall()


def allreduce_gradients(grads: List[nd.NDArray]) -> None:
    """Sum every gradient over the ranks, as DistributedTrainer does on a CPU build (averaging in Adam)."""
    import horovod.mxnet as hvd
    from mxnet import nd

    for i, grad in enumerate(grads):
        hvd.allreduce_(grad, average=False, name=f"bench_grad.{i}", priority=-i)
    nd.waitall()


def measure(args: argparse.Namespace, out: Path) -> None:
    """In every rank of a horovodrun launch: median step and allreduce seconds; rank 0 writes them to ``out``."""
    from nn import MultitaskFTLoss

    import horovod.mxnet as hvd
    import mxnet as mx
    from mxnet import autograd, nd

    from mantis import get_model
    from utilities.training.distributed import init_world

    world = init_world()
    mx.random.seed(world.rank)
    net = get_model(args.model)
    net.initialize(mx.init.Xavier())
    net.hybridize()
    x = nd.random.uniform(shape=(args.batch, 3, args.size, args.size))
    target = random_target(args.batch, args.size)
    with autograd.record():  # shapes first, inside record, as train.py does before broadcasting
        net(x, x)
    hvd.broadcast_parameters(net.collect_params(), root_rank=0)
    nd.waitall()
    trainer = hvd.DistributedTrainer(net.collect_params(), "adam",
                                     {"learning_rate": 1e-3, "beta1": 0.9, "beta2": 0.999})
    loss_fn = MultitaskFTLoss(depth=0)
    step(net, trainer, loss_fn, x, target)  # warm-up
    step_s = median_seconds(lambda: step(net, trainer, loss_fn, x, target), args.steps)
    trained = [p for p in net.collect_params().values() if p.grad_req != "null"]
    grads = [p.grad() for p in trained]
    allreduce = median_seconds(lambda: allreduce_gradients(grads), args.steps) if world.size > 1 else None
    if world.is_root:
        out.write_text(json.dumps({"ranks": world.size, "threads": int(os.environ["OMP_NUM_THREADS"]),
                                   "step_s": step_s, "allreduce_s": allreduce}))


def child_command(args: argparse.Namespace, ranks: Union[int, str], out: Path) -> List[str]:
    return [str(HOROVODRUN), "-np", str(ranks), "--gloo", "-H", f"localhost:{ranks}", sys.executable,
            str(Path(__file__).relative_to(ROOT)), "--model", args.model, "--batch", str(args.batch), "--size",
            str(args.size), "--steps", str(args.steps), "--child", str(out)]


def launch(args: argparse.Namespace, ranks: int, folder: Path) -> Dict[str, object]:
    """Run one horovodrun launch; return rank 0's results."""
    out = folder / f"ranks_{ranks}.json"
    result = subprocess.run(child_command(args, ranks, out), cwd=ROOT, capture_output=True, text=True)
    if result.returncode or not out.exists():
        lines = result.stderr.splitlines()
        ranks_stderr = [line for line in lines if "]<stderr>:" in line]  # horovodrun's prefix on the ranks' lines
        tail = "\n".join((ranks_stderr or lines)[-15:])
        raise RuntimeError(f"horovodrun -np {ranks} failed (exit {result.returncode}):\n{tail}")
    return json.loads(out.read_text())


def row(r: Dict[str, object], batch: int, single: Optional[float]) -> str:
    """One table row; ``single``: chips/s of the 1-rank run (for the scaling efficiency), if measured."""
    chips_s = r["ranks"] * batch / r["step_s"]
    allreduce = ("- | -" if r["allreduce_s"] is None
                 else f"{r['allreduce_s']:.3f} | {100 * r['allreduce_s'] / r['step_s']:.1f} %")
    efficiency = "-" if single is None else f"{100 * chips_s / (r['ranks'] * single):.0f} %"
    return f"| {r['ranks']} | {r['threads']} | {r['step_s']:.3f} | {allreduce} | {chips_s:.2f} | {efficiency} |"


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    if args.child:
        import nn  # noqa: F401  (first: OpenMP threads = cores / local ranks, before MXNet loads)

        from utilities.training.distributed import shutdown

        try:
            measure(args, Path(args.child))
        finally:
            shutdown()  # every rank, error or not (as train.py)
        return 0
    print_header(f"; mxnet {version('mxnet')}, horovod {version('horovod')}")
    print(f"{args.model}, batch {args.batch} per rank, two dates of {args.size}x{args.size}, hybridized, Adam, "
          f"median of {args.steps} steps after 1 warm-up; rank 0's timings")
    print(f"each row: {shlex.join(child_command(args, 'N', Path('OUT.json')))}  (cwd {ROOT})\n")
    print("| ranks | OMP threads per rank | step s | allreduce s | allreduce share | chips/s | scaling efficiency |")
    print("|---|---|---|---|---|---|---|")
    single = None
    with tempfile.TemporaryDirectory() as folder:
        for ranks in args.ranks:
            r = launch(args, ranks, Path(folder))
            if ranks == 1:
                single = args.batch / r["step_s"]
            print(row(r, args.batch, single), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
