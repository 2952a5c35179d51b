"""Peak memory of a global batch made in one pass or in several (train.global_batch, train.batch_size).

    MANTIS_THREADS=1 python benchmarks/bench_batch_memory.py                       # CEECNetV2 D6nf32, global batch 3
    python benchmarks/bench_batch_memory.py --models fractalresnet_d6nf32 --batch-sizes 3 2 1
    python benchmarks/bench_batch_memory.py --fidelities paper --memory-saving     # also with train.memory_saving

For every model, fidelity (``paper``, ``authors``: ``mantis.get_model(..., fidelity=...)`` and that fidelity's
loss axes) and ``--batch-sizes`` entry, a fresh process trains as train.py does, on one process: the model
hybridized, Adam (0.9, 0.999), the multitask FT loss, and ``--updates`` updates of ``--global-batch`` random
256x256 chip pairs, each in the passes of ``plan_global_batch`` (at most ``batch_size`` chips each, gradients
summed by ``GradientSum``; utilities/training/accumulate.py). It reports its peak RSS (``ru_maxrss``: the
first update builds the graphs, the second has Adam's state too) and the seconds of its last update.

This process polls each child's resident size every 0.5 s and stops it once it passes ``--limit-gib`` (the
answer is then "above the limit"), or once the machine has less than ``--reserve-gib`` available (the answer
is then unknown): a batch that needs more memory than the machine has would otherwise end in the kernel's
OOM killer, which may pick another process. Prints the command, date, machine and a markdown table, as
BENCHMARKS.md records them. Threads: ``MANTIS_THREADS`` / ``OMP_NUM_THREADS`` as for train.py (peak RSS
changes little with them; seconds do).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, Optional

from bench_models import print_header, random_target

ROOT = Path(__file__).resolve().parents[1]
GIB = 2 ** 30


def measure(args: argparse.Namespace) -> dict:
    """In the child process: peak RSS and the last update's seconds of one way of making the global batch."""
    sys.path.insert(0, str(ROOT))
    from utilities.training.memory import return_freed_memory

    if args.child_memory_saving:
        return_freed_memory()
    import nn  # noqa: F401  (threads first)
    from nn import MultitaskFTLoss

    import mxnet as mx
    from mxnet import gluon, nd

    from mantis import get_model
    from utilities.training.accumulate import GradientSum, plan_global_batch
    from utilities.training.config import FIDELITIES, TrainConfig
    from utilities.training.step import forward_backward, update

    fidelity = FIDELITIES[args.child_fidelity]
    plan = plan_global_batch(TrainConfig(batch_size=args.child_batch_size, global_batch=args.global_batch), 1,
                             "benchmark")
    mx.random.seed(0)
    net = get_model(args.child, **fidelity.model_args)
    net.initialize(mx.init.Xavier())
    net.hybridize()
    trainer = gluon.Trainer(net.collect_params(), "adam", {"learning_rate": 1e-3, "beta1": 0.9, "beta2": 0.999})
    loss_fn = MultitaskFTLoss(depth=0, axis=fidelity.loss_axis)
    gradients = GradientSum(net)
    seconds = []
    for _ in range(args.updates):
        tic = time.perf_counter()
        for i, chips in enumerate(plan.passes):
            dates = [nd.random.uniform(shape=(chips, 3, args.size, args.size)) for _ in range(2)]
            target = random_target(chips, args.size)
            forward_backward(net, loss_fn, dates, [target] * 3)
            gradients.add_pass(last=i == len(plan.passes) - 1)
        update(net, trainer, plan.share)
        nd.waitall()
        seconds.append(time.perf_counter() - tic)
    return {"split": plan.split, "update_s": round(seconds[-1], 1),
            "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB, 2)}


def resident_gib(pid: int) -> float:
    """A process's resident size now (0 once it has gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    return next((int(line.split()[1]) * 1024 / GIB for line in status.splitlines() if line.startswith("VmRSS:")), 0.0)


def available_gib() -> float:
    meminfo = Path("/proc/meminfo").read_text()
    return next(int(line.split()[1]) * 1024 / GIB for line in meminfo.splitlines() if line.startswith("MemAvailable:"))


def run_child(model: str, fidelity: str, batch_size: int, memory_saving: bool, args: argparse.Namespace) -> Dict:
    """One measurement in a fresh process, watched (see the module docstring)."""
    command = [sys.executable, __file__, "--child", model, "--child-fidelity", fidelity, "--child-batch-size",
               str(batch_size), "--global-batch", str(args.global_batch), "--updates", str(args.updates),
               "--size", str(args.size)] + (["--child-memory-saving"] if memory_saving else [])
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(command, stdout=out, stderr=err, text=True)
        seen, stopped = 0.0, None
        while proc.poll() is None:
            seen = max(seen, resident_gib(proc.pid))
            if seen > args.limit_gib:
                stopped = f"above {args.limit_gib:g} GiB: stopped at {seen:.2f}"
            elif available_gib() < args.reserve_gib:
                stopped = f"unknown: stopped at {seen:.2f} GiB, the machine had under {args.reserve_gib:g} GiB left"
            if stopped:
                proc.kill()
                proc.wait()
                return {"stopped": stopped}
            time.sleep(0.5)
        out.seek(0)
        err.seek(0)
        lines = out.read().strip().splitlines()
        if proc.returncode or not lines:
            last = err.read().strip().splitlines()
            return {"stopped": f"failed (exit status {proc.returncode}): {last[-1] if last else 'no message'}"}
        return json.loads(lines[-1])


def main(argv: Optional[list] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["ceecnetv2_d6nf32"])
    parser.add_argument("--fidelities", nargs="+", default=["paper", "authors"])
    parser.add_argument("--global-batch", type=int, default=3)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[3, 1],
                        help="train.batch_size values: the most chips per pass")
    parser.add_argument("--updates", type=int, default=2)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--memory-saving", action="store_true", help="also measure with train.memory_saving")
    parser.add_argument("--limit-gib", type=float, default=16.0, help="stop a child whose resident size passes this")
    parser.add_argument("--reserve-gib", type=float, default=2.0,
                        help="stop a child when the machine has less than this available")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--child-fidelity", help=argparse.SUPPRESS)
    parser.add_argument("--child-batch-size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--child-memory-saving", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(measure(args)))
        return
    threads = os.environ.get("MANTIS_THREADS", os.environ.get("OMP_NUM_THREADS", "nn's default"))
    print_header(f", MANTIS_THREADS={os.environ.get('MANTIS_THREADS', 'unset')}, "
                 f"{available_gib():.1f} GiB available at start")
    print(f"global batch {args.global_batch}, two dates of {args.size}x{args.size}, {args.updates} updates, "
          f"threads {threads}, stop above {args.limit_gib:g} GiB\n")
    print("| model | fidelity | memory saving | batch_size | split | peak RSS GiB | last update s |")
    print("|---|---|---|---|---|---|---|")
    for model in args.models:
        for fidelity in args.fidelities:
            for saving in [False, True] if args.memory_saving else [False]:
                for batch_size in args.batch_sizes:
                    r = run_child(model, fidelity, batch_size, saving, args)
                    cells = [r["split"], r["peak_rss_gib"], r["update_s"]] if "stopped" not in r else \
                        ["", r["stopped"], ""]
                    print(f"| {model} | {fidelity} | {'yes' if saving else 'no'} | {batch_size} | "
                          + " | ".join(map(str, cells)) + " |", flush=True)


if __name__ == "__main__":
    main()
