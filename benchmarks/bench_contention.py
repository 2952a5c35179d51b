"""A D6nf32 training step on a busy machine: idle and beside a competing process, per thread setting, side by side.

    python benchmarks/bench_contention.py                                   # fractalresnet_d6nf32, batch 1, 256x256
    python benchmarks/bench_contention.py --competitor mxnet                # beside another mantis training
    python benchmarks/bench_contention.py --settings 1 2 2:PASSIVE --rounds 2
    python benchmarks/bench_contention.py --forward --settings 1 2 free              # inference's forward pass

A setting is how the measured process runs its OpenMP threads:

- ``default``: what mantis chooses by itself for training (no thread variable set: :mod:`nn.threads`'s
  ``share`` policy);
- ``free``: ``MANTIS_THREADS=free``, the policy of ``predict.py`` and ``evaluate.py`` (the cores idle at start);
- ``T``: ``MANTIS_THREADS=T`` with libgomp's own wait policy (threads spin a while at every barrier);
- ``T:PASSIVE``: also ``OMP_WAIT_POLICY=PASSIVE`` (threads sleep at once at a barrier);
- ``T:spin=N``: also ``GOMP_SPINCOUNT=N`` (spin N iterations, then sleep).

Each round runs every setting in a fresh process twice, idle and beside the competitor, which starts
before the process and ends after it: ``spin`` is one process spinning on a core (``while True: pass``),
``mxnet`` is another process training the same model with mantis's default threads. One warm-up step
(graph build), then ``--steps`` timed steps (forward + backward of the FT multitask loss + Adam; with
``--forward`` the forward pass alone, as in inference); the median is reported. Prints the command, date
and machine first; every figure of one table comes from one run of this script.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_models import print_header, random_target  # noqa: E402

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MANTIS_THREADS", "MANTIS_AUTO_THREADS", "MANTIS_THREAD_POLICY",
                    "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


def setting_env(setting: str) -> Dict[str, str]:
    """The environment of a measured process for ``setting`` (see the module docstring)."""
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARIABLES}
    if setting == "default":
        return env
    if setting == "free":
        return {**env, "MANTIS_THREADS": "free"}
    threads, _, policy = setting.partition(":")
    env["MANTIS_THREADS"] = str(int(threads))
    if policy == "PASSIVE":
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    elif policy.startswith("spin="):
        env["GOMP_SPINCOUNT"] = str(int(policy[len("spin="):]))
    elif policy:
        raise SystemExit(f"unknown setting {setting!r}: use default, free, T, T:PASSIVE or T:spin=N")
    return env


def steps(model: str, batch: int, size: int, count: Optional[int], forward: bool) -> Dict:
    """In a child process: seconds of ``count`` training steps (forward passes) after one warm-up (None:
    forever), and how its threads were chosen."""
    sys.path.insert(0, str(ROOT))
    import nn  # threads first
    from nn import MultitaskFTLoss

    import mxnet as mx
    from mxnet import gluon, nd

    from mantis import get_model
    from utilities.training.step import train_step

    net = get_model(model)
    net.initialize(mx.init.Xavier())
    net.hybridize()
    x, target = nd.random.uniform(shape=(batch, 3, size, size)), random_target(batch, size)
    trainer = gluon.Trainer(net.collect_params(), "adam", {"learning_rate": 1e-3})
    loss_fn = MultitaskFTLoss(depth=0)
    times: List[float] = []
    while count is None or len(times) < count + 1:
        tic = time.perf_counter()
        if forward:
            net(x, x)
        else:
            train_step(net, trainer, loss_fn, (x, x), (target, target, target))
        nd.waitall()
        times.append(time.perf_counter() - tic)
    return {"seconds": times[1:], "threads": nn.threads.choice}


def competitor(kind: str, args: argparse.Namespace) -> Optional[subprocess.Popen]:
    """Start the competing process (None for an idle measurement)."""
    if kind == "idle":
        return None
    if kind == "spin":
        command = [sys.executable, "-c", "while True: pass"]
    else:
        command = [sys.executable, __file__, "--child-forever", "--model", args.model, "--batch", str(args.batch),
                   "--size", str(args.size)]
    process = subprocess.Popen(command, env=setting_env("default"), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    time.sleep(args.competitor_start_s if kind == "mxnet" else 1.0)  # the MXNet competitor builds its graph first
    return process


def measure(setting: str, beside: str, args: argparse.Namespace) -> Optional[float]:
    """Median step seconds of ``setting`` in a fresh process, idle or beside a competitor (None: it failed)."""
    other = competitor(beside, args)
    try:
        out = subprocess.run([sys.executable, __file__, "--child", "--model", args.model, "--batch", str(args.batch),
                              "--size", str(args.size), "--steps", str(args.steps)]
                             + (["--forward"] if args.forward else []),
                             env=setting_env(setting), capture_output=True, text=True)
    finally:
        if other is not None:
            other.kill()
            other.wait()
    if out.returncode:
        print(f"{setting}, {beside}: failed: {(out.stderr.strip().splitlines() or ['no message'])[-1]}", flush=True)
        return None
    result = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"  {setting}, {beside}: {result['threads']}", flush=True)
    return statistics.median(result["seconds"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="fractalresnet_d6nf32")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per process, after one warm-up")
    parser.add_argument("--settings", nargs="+", default=["default", "1", "2", "2:PASSIVE"])
    parser.add_argument("--forward", action="store_true", help="time forward passes (inference), not training steps")
    parser.add_argument("--competitor", choices=("spin", "mxnet"), default="spin")
    parser.add_argument("--competitor-start-s", type=float, default=30.0,
                        help="seconds the mxnet competitor gets to build its graph before the measurement starts")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child-forever", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child or args.child_forever:
        print(json.dumps(steps(args.model, args.batch, args.size, None if args.child_forever else args.steps,
                               args.forward)))
        return
    for setting in args.settings:
        setting_env(setting)  # refuse a malformed setting before any measurement
    print_header()
    what = "forward pass (inference)" if args.forward else "training step (forward + backward + Adam)"
    print(f"{args.model}, batch {args.batch}, two dates of {args.size}x{args.size}; {what}, median of {args.steps} "
          f"after a warm-up; competitor: {args.competitor}; {args.rounds} round(s)\n")
    results: Dict[str, Dict[str, List[float]]] = {s: {"idle": [], args.competitor: []} for s in args.settings}
    for _ in range(args.rounds):
        for setting in args.settings:
            for beside in ("idle", args.competitor):
                seconds = measure(setting, beside, args)
                if seconds is not None:
                    results[setting][beside].append(seconds)
                    print(f"  {setting}, {beside}: {seconds:.2f} s", flush=True)
    best_idle = min((statistics.median(r["idle"]) for r in results.values() if r["idle"]), default=None)
    print(f"\n| setting | idle s | beside {args.competitor} s | slowdown | beside / best idle |")
    print("|---|---|---|---|---|")
    for setting, r in results.items():
        if not (r["idle"] and r[args.competitor]):
            print(f"| {setting} | failed |")
            continue
        idle, busy = statistics.median(r["idle"]), statistics.median(r[args.competitor])
        print(f"| {setting} | {idle:.2f} | {busy:.2f} | {busy / idle:.2f}x | {busy / best_idle:.2f}x |")


if __name__ == "__main__":
    main()
