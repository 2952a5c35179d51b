"""How a D6nf32 forward pass scales from 1 to 2 threads, in total and layer by layer.

    python benchmarks/thread_scaling.py                                     # the three D6nf32 variants
    python benchmarks/thread_scaling.py --models ceecnetv2_d6nf32 --top 25 --batch 4

Per model and thread count, one fresh process (``MANTIS_THREADS=T``) measures:

- the hybridized forward pass (inference, no autograd): median seconds of ``--repeats`` after a warm-up;
- the same network run imperatively with every leaf block timed (``nd.waitall()`` before and after it):
  seconds per kind of layer, a kind being the block's class, its input and output shapes and its
  kernel/groups. What no leaf block computes (the operators of composite blocks) is the row "between
  layers".

The table lists the kinds by their 2-thread seconds, with their count, 1- and 2-thread seconds, the ratio
and their share of the 1-thread leaf time. Each variant's forward GFLOP (``flops.py``'s count) and the
fraction of this machine's matmul peak (``mx.nd.dot`` 2048x2048 at the same thread count) that its
hybridized forward reaches close the report. All figures of one report come from one run.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Dict, List

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_models import print_header  # noqa: E402

BETWEEN = "between layers"


def layer_kind(block, inputs, output) -> str:
    """A leaf block's kind: class, shapes, and for convolutions kernel and groups."""
    shapes = "+".join("x".join(map(str, x.shape)) for x in inputs if hasattr(x, "shape"))
    out = output[0] if isinstance(output, (list, tuple)) else output
    kind = f"{type(block).__name__} {shapes} -> {'x'.join(map(str, out.shape))}"
    if hasattr(block, "_kwargs") and "kernel" in block._kwargs:
        kind += f" k{block._kwargs['kernel'][0]} g{block._kwargs.get('num_group', 1)}"
    return kind


def child(model: str, batch: int, size: int, repeats: int) -> Dict:
    """In a process with its threads set: hybridized forward seconds, leaf-block seconds by kind, matmul peak."""
    sys.path.insert(0, str(ROOT))
    import nn  # noqa: F401  (threads first)

    import mxnet as mx
    from flops import matmul_peak
    from mxnet import nd

    from mantis import get_model

    x = nd.random.uniform(shape=(batch, 3, size, size))
    net = get_model(model)
    net.initialize(mx.init.Xavier())
    net.hybridize()
    net(x, x)[0].wait_to_read()
    forward = []
    for _ in range(repeats):
        tic = time.perf_counter()
        outputs = net(x, x)
        nd.waitall()
        forward.append(time.perf_counter() - tic)
    del outputs

    imperative = get_model(model)
    imperative.initialize(mx.init.Xavier())
    seconds: Dict[str, float] = defaultdict(float)
    counts: Dict[str, int] = defaultdict(int)
    started: Dict[int, float] = {}

    def before(block, inputs):
        nd.waitall()
        started[id(block)] = time.perf_counter()

    def after(block, inputs, output):
        nd.waitall()
        kind = layer_kind(block, inputs, output)
        seconds[kind] += time.perf_counter() - started.pop(id(block))
        counts[kind] += 1

    def leaves(block):
        children = list(block._children.values())
        return [b for c in children for b in leaves(c)] if children else [block]

    for leaf in leaves(imperative):
        leaf.register_forward_pre_hook(before)
        leaf.register_forward_hook(after)
    imperative(x, x)
    nd.waitall()
    runs = []
    for _ in range(repeats):
        seconds.clear()
        counts.clear()
        tic = time.perf_counter()
        imperative(x, x)
        nd.waitall()
        runs.append((time.perf_counter() - tic, dict(seconds)))
    total, layers = sorted(runs, key=lambda run: run[0])[len(runs) // 2]  # the run of median total time
    layers[BETWEEN] = max(total - sum(layers.values()), 0.0)
    return {"threads": int(os.environ["OMP_NUM_THREADS"]), "forward_s": statistics.median(forward),
            "imperative_s": total, "layers": layers, "counts": dict(counts), "peak_gflops": matmul_peak()}


def run_child(model: str, threads: int, args: argparse.Namespace) -> Dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MANTIS_AUTO_THREADS")}
    env["MANTIS_THREADS"] = str(threads)
    out = subprocess.run([sys.executable, __file__, "--child", model, "--batch", str(args.batch), "--size",
                          str(args.size), "--repeats", str(args.repeats)], env=env, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"{model}, {threads} thread(s) failed: {out.stderr.strip()[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def report(model: str, one: Dict, two: Dict, top: int, gflop: float) -> None:
    print(f"\n### {model}\n")
    print(f"hybridized forward: 1 thread {one['forward_s']:.3f} s, 2 threads {two['forward_s']:.3f} s: "
          f"{one['forward_s'] / two['forward_s']:.2f}x; imperative with timed layers: {one['imperative_s']:.3f} s "
          f"and {two['imperative_s']:.3f} s")
    for r in (one, two):
        rate = gflop / r["forward_s"]
        print(f"- {r['threads']} thread(s): {gflop:.1f} GFLOP forward (network) at {rate:.1f} GFLOP/s, "
              f"{100 * rate / r['peak_gflops']:.1f} % of the matmul peak ({r['peak_gflops']:.0f} GFLOP/s)")
    leaf_one = sum(one["layers"].values())
    kinds = sorted(one["layers"], key=lambda k: -two["layers"].get(k, 0.0))
    print("\n| layer kind | count | 1 thread s | 2 threads s | ratio | share of 1-thread time |")
    print("|---|---|---|---|---|---|")
    for kind in kinds[:top]:
        t1, t2 = one["layers"][kind], two["layers"].get(kind, float("nan"))
        count = one["counts"].get(kind, "")
        print(f"| {kind} | {count} | {t1:.4f} | {t2:.4f} | {t1 / t2:.2f}x | {100 * t1 / leaf_one:.1f} % |")
    rest = kinds[top:]
    if rest:
        t1 = sum(one["layers"][k] for k in rest)
        t2 = sum(two["layers"].get(k, 0.0) for k in rest)
        print(f"| {len(rest)} other kinds | {sum(one['counts'].get(k, 0) for k in rest)} | {t1:.4f} | {t2:.4f} | "
              f"{t1 / t2:.2f}x | {100 * t1 / leaf_one:.1f} % |")
    by_class: Dict[str, List[float]] = defaultdict(lambda: [0.0, 0.0])
    for kind in kinds:
        totals = by_class[BETWEEN if kind == BETWEEN else kind.split(" ")[0]]
        totals[0] += one["layers"][kind]
        totals[1] += two["layers"].get(kind, 0.0)
    print("\nby class: " + "; ".join(f"{name} {t1:.3f} s -> {t2:.3f} s ({t1 / t2:.2f}x)"
                                      for name, (t1, t2) in sorted(by_class.items(), key=lambda kv: -kv[1][0])))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["fractalresnet_d6nf32", "ceecnetv1_d6nf32", "ceecnetv2_d6nf32"])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--top", type=int, default=15, help="layer kinds listed one by one per model")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.batch, args.size, args.repeats)))
        return
    print_header()
    print(f"batch {args.batch}, two dates of {args.size}x{args.size}; medians of {args.repeats}")
    sys.path.insert(0, str(ROOT))
    from flops import count  # imports nn and MXNet here: after the children's settings are decided

    summary = []
    for model in args.models:
        one, two = run_child(model, 1, args), run_child(model, 2, args)
        gflop = count(model, args.size, args.batch)["network_gflop"]
        report(model, one, two, args.top, gflop)
        summary.append((model, one["forward_s"], two["forward_s"]))
    print("\n| model | forward 1 thread s | forward 2 threads s | ratio |")
    print("|---|---|---|---|")
    for model, t1, t2 in summary:
        print(f"| {model} | {t1:.3f} | {t2:.3f} | {t1 / t2:.2f}x |")


if __name__ == "__main__":
    main()
