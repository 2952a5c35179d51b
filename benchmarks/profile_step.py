"""Where a training step's time goes: MXNet profiler aggregate statistics of one D6nf32 training step.

    python benchmarks/profile_step.py                                   # fractalresnet_d6nf32, batch 1, 256x256
    OMP_NUM_THREADS=1 python benchmarks/profile_step.py --model ceecnetv1_d6nf32 --top 15
    python benchmarks/profile_step.py --model ceecnetv1_d6nf32 --depth 5 --size 128     # quicker, same widths
    MANTIS_THREADS=2 python benchmarks/profile_step.py --model ceecnetv2_d6nf32 --forward  # inference only

One warm-up step (graph build), then ``--steps`` profiled training steps (forward + backward of the
multitask FT loss + Adam update, hybridized; with ``--forward`` the forward pass alone, as in inference)
under ``mx.profiler`` with ``aggregate_stats=True``. Prints
the operators sorted by total time with their share of the profiled operator time, per step, as a
markdown table, plus the command, the date and the machine.
"""
from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import nn  # noqa: E402,F401  (sets the OpenMP threads before MXNet loads)
from nn import MultitaskFTLoss  # noqa: E402

import mxnet as mx  # noqa: E402
from bench_models import print_header, random_target  # noqa: E402
from mxnet import gluon, nd  # noqa: E402

from mantis import get_model  # noqa: E402
from utilities.training.step import train_step  # noqa: E402

#: one row of the profiler's "operator" table: name, count, total, min, max, average (ms)
_ROW = re.compile(r"^(\S+)\s+(\d+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)$")


def operator_times(report: str) -> dict:
    """Total milliseconds per operator from the profiler's aggregate report (the 'operator' section)."""
    totals, in_operators = {}, False
    for line in report.splitlines():
        if line.strip() in ("operator", "MXNET_C_API", "Device Storage"):
            in_operators = line.strip() == "operator"
            continue
        match = _ROW.match(line.strip())
        if in_operators and match:
            totals[match.group(1)] = totals.get(match.group(1), 0.0) + float(match.group(3))
    return totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="fractalresnet_d6nf32")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--forward", action="store_true", help="profile the forward pass (inference) only")
    parser.add_argument("--depth", type=int, help="encoder depths instead of the model's (sizes: multiples of "
                                                   "2 ** (depth + 2) with PSP depth 4)")
    args = parser.parse_args()

    net = get_model(args.model, **({"depth": args.depth} if args.depth else {}))
    net.initialize(mx.init.Xavier())
    net.hybridize()
    shape = (args.batch, 3, args.size, args.size)
    x1, x2 = nd.random.uniform(shape=shape), nd.random.uniform(shape=shape)
    target = random_target(args.batch, args.size)
    loss_fn = MultitaskFTLoss(depth=0)
    trainer = gluon.Trainer(net.collect_params(), "adam", {"learning_rate": 1e-4})

    def step() -> None:
        if args.forward:
            net(x1, x2)
        else:
            train_step(net, trainer, loss_fn, (x1, x2), (target, target, target))
        nd.waitall()

    step()
    # the profiler also writes a trace file (and replaces, not writes into, an existing path: never /dev/null)
    trace = Path(tempfile.mkdtemp(prefix="mantis-profile-")) / "trace.json"
    mx.profiler.set_config(profile_all=True, aggregate_stats=True, filename=str(trace))
    mx.profiler.set_state("run")
    tic = time.time()
    for _ in range(args.steps):
        step()
    wall = (time.time() - tic) / args.steps
    mx.profiler.set_state("stop")
    totals = operator_times(mx.profiler.dumps(reset=True))
    mx.profiler.dump()
    shutil.rmtree(trace.parent)
    total = sum(totals.values())

    print_header()
    depth = f" at depth {args.depth}" if args.depth else ""
    what = "forward pass" if args.forward else "step"
    print(f"{args.model}{depth}, batch {args.batch}, two dates of {args.size}x{args.size}, hybridized; "
          f"wall {wall:.2f} s per profiled {what}, operators {total / 1e3 / args.steps:.2f} s per {what}\n")
    print("| operator | s per step | share |")
    print("|---|---|---|")
    for name, ms in sorted(totals.items(), key=lambda kv: -kv[1])[:args.top]:
        print(f"| {name} | {ms / 1e3 / args.steps:.3f} | {100 * ms / total:.1f} % |")


if __name__ == "__main__":
    main()
