"""Speed of the mantis D6nf32 variants on this machine: first hybridized call, forward, training step.

    python benchmarks/bench_models.py                                 # all three D6nf32 variants, batch 1
    python benchmarks/bench_models.py --models fractalresnet_d6nf32 --batch 3 --repeats 3
    python benchmarks/bench_models.py --batch 3 --imperative          # also without hybridize()
    python benchmarks/bench_models.py --batch 3 --memory-saving       # also with train.memory_saving

Per model (and mode), in a fresh process each (so peak RSS is the model's): parameters, seconds of
the first forward (for a hybridized model: graph build + run), median forward seconds and chips/s
(a chip = one pair of dates), median training-step seconds and chips/s (forward + backward + Adam
update, the FT multitask loss), and peak RSS. Prints machine details, the
command and the date, as BENCHMARKS.md records them. Absolute seconds on shared machines are noisy:
compare numbers from one run.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]


def measure(name: str, batch: int, size: int, repeats: int, hybridize: bool, memory_saving: bool) -> dict:
    """Run in a child process: timings of one model."""
    sys.path.insert(0, str(ROOT))
    from utilities.training.memory import return_freed_memory

    if memory_saving:
        return_freed_memory()
    import nn  # noqa: F401  (threads first)
    from nn import MultitaskFTLoss

    import mxnet as mx
    from mxnet import gluon, nd

    from mantis import get_model
    from utilities.training.step import train_step

    net = get_model(name)
    net.initialize(mx.init.Xavier())
    if hybridize:
        net.hybridize()
    x = nd.random.uniform(shape=(batch, 3, size, size))
    target = random_target(batch, size)
    tic = time.time()
    net(x, x)[0].wait_to_read()
    first = time.time() - tic
    forward = []
    for _ in range(repeats):
        tic = time.time()
        net(x, x)[0].wait_to_read()
        forward.append(time.time() - tic)
    loss_fn = MultitaskFTLoss(depth=0)
    trainer = gluon.Trainer(net.collect_params(), "adam", {"learning_rate": 1e-3})
    steps = []
    for _ in range(repeats + 1):
        tic = time.time()
        train_step(net, trainer, loss_fn, (x, x), (target, target, target))
        nd.waitall()
        steps.append(time.time() - tic)
    params = sum(p.data().size for p in net.collect_params().values() if p.grad_req != "null")
    forward_s, step_s = sorted(forward)[len(forward) // 2], sorted(steps[1:])[len(steps[1:]) // 2]
    mode = ("hybridized" if hybridize else "imperative") + (", memory saving" if memory_saving else "")
    return {"model": name, "mode": mode, "parameters": int(params),
            "first_call_s": round(first, 2), "forward_s": round(forward_s, 2),
            "forward_chips_s": round(batch / forward_s, 3), "train_step_s": round(step_s, 2),
            "train_chips_s": round(batch / step_s, 3),
            "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20, 2)}


def median_seconds(action: Callable[[], None], repeats: int) -> float:
    """Median wall time of ``action`` (which waits for MXNet itself)."""
    times = []
    for _ in range(repeats):
        tic = time.perf_counter()
        action()
        times.append(time.perf_counter() - tic)
    return statistics.median(times)


def random_target(batch: int, size: int):
    """A random binary change mask as the one-hot (batch, 2, size, size) target of every head."""
    from mxnet import nd

    labels = nd.random.randint(0, 2, shape=(batch, size, size)).astype("float32")
    return nd.one_hot(labels, 2).transpose((0, 3, 1, 2))


def cpu() -> str:
    """Cores and CPU model of this machine, e.g. "2 cores, Intel(R) Xeon(R) Processor"."""
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    return f"{os.cpu_count()} cores, {model}"


def print_header(details: str = "") -> None:
    """The lines every benchmark prints first and BENCHMARKS.md records: command, UTC date, machine (+ details)."""
    print(f"command: {shlex.join([sys.executable, *sys.argv])}")
    print(f"date: {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}")
    print(f"machine: {machine()}{details}")


def machine() -> str:
    return (f"{cpu()}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset (nn: cores)')}, "
            f"load average {', '.join(f'{v:.1f}' for v in os.getloadavg())}, Python {platform.python_version()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+",
                        default=["fractalresnet_d6nf32", "ceecnetv1_d6nf32", "ceecnetv2_d6nf32"])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--imperative", action="store_true", help="also measure each model without hybridize()")
    parser.add_argument("--memory-saving", action="store_true",
                        help="also measure each model with train.memory_saving (utilities/training/memory.py)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--child-imperative", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child-memory-saving", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.batch, args.size, args.repeats, not args.child_imperative,
                                 args.child_memory_saving)))
        return
    print_header()
    print(f"batch {args.batch}, two dates of {args.size}x{args.size}, median of {args.repeats}\n")
    print("| model | mode | parameters | first call s | forward s | forward chips/s | train step s | "
          "train chips/s | peak RSS GiB |")
    print("|---|---|---|---|---|---|---|---|---|")
    modes = [(imperative, saving) for imperative in ([False, True] if args.imperative else [False])
             for saving in ([False, True] if args.memory_saving else [False])]
    for name in args.models:
        for imperative, saving in modes:
            command = [sys.executable, __file__, "--child", name, "--batch", str(args.batch), "--size", str(args.size),
                       "--repeats", str(args.repeats)] + (["--child-imperative"] if imperative else []) \
                + (["--child-memory-saving"] if saving else [])
            out = subprocess.run(command, capture_output=True, text=True)
            if out.returncode:
                lines = out.stderr.strip().splitlines()
                reason = lines[-1] if lines else f"exit code {out.returncode}, no message (killed: out of memory?)"
                mode = ("imperative" if imperative else "hybridized") + (", memory saving" if saving else "")
                print(f"| {name} | {mode} | failed: {reason} |", flush=True)
                continue
            r = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"| {r['model']} | {r['mode']} | {r['parameters']:,} | {r['first_call_s']} | {r['forward_s']} | "
                  f"{r['forward_chips_s']} | {r['train_step_s']} | {r['train_chips_s']} | {r['peak_rss_gib']} |",
                  flush=True)


if __name__ == "__main__":
    main()
