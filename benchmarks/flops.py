"""FLOPs of a model counted from its graph, and the fraction of this machine's matmul peak a step reaches.

    python benchmarks/flops.py                                  # the three D6nf32 variants, batch 1, 256x256
    python benchmarks/flops.py --models fractalresnet_d6nf32 --step-seconds 8.1

Counts multiply-adds as 2 FLOPs in every Convolution, Deconvolution and FullyConnected node of the
forward graph (shapes from MXNet's shape inference): the network's own arithmetic. ``dot`` and
``batch_dot`` nodes are counted apart: mantis uses them as fast forms of sums, broadcasts and the
bilinear upsampling (mostly multiplications by ones or by sparse interpolation matrices), so their
FLOPs are real work for the CPU but not the model's. Element-wise operators, reductions and
normalisation are listed apart too, as one operation per output element (memory-bound work). A
training step is counted as 3x the forward's network FLOPs (backward: one product for the input
gradient, one for the weight gradient). The peak is measured here: ``mx.nd.dot`` of two 2048x2048
float32 matrices, median of 5, at the current thread setting. With ``--step-seconds`` (a measured
training step, e.g. from bench_models.py) it prints the fraction of that peak the step reaches.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Dict, Tuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import nn  # noqa: E402,F401  (threads first)

import mxnet as mx  # noqa: E402
import numpy as np  # noqa: E402
from bench_models import print_header  # noqa: E402

from mantis import get_model  # noqa: E402

NETWORK_OPS = ("Convolution", "Deconvolution", "FullyConnected")
FORM_OPS = ("dot", "batch_dot")


def _kernel_macs(op: str, attrs: dict, in_shapes: list, out_shape: Tuple[int, ...]) -> int:
    """Multiply-adds of one matrix node."""
    out = int(np.prod(out_shape))
    if op in ("Convolution", "Deconvolution"):
        kernel = int(np.prod(eval(attrs["kernel"])))  # noqa: S307 (MXNet writes tuples as "(3, 3)")
        groups = int(attrs.get("num_group", 1))
        data_channels = in_shapes[0][1]
        if op == "Convolution":
            return out * kernel * data_channels // groups
        return int(np.prod(in_shapes[0])) * kernel * out_shape[1] // groups
    if op == "FullyConnected":
        return out * int(np.prod(in_shapes[1][1:]))
    transpose_a = attrs.get("transpose_a", "False") == "True"
    inner = in_shapes[0][-2] if transpose_a else in_shapes[0][-1]
    return out * inner


def count(name: str, size: int, batch: int) -> Dict[str, float]:
    """Forward GFLOP of the network's matrix nodes, of the dot/batch_dot forms, and element-wise operations."""
    net = get_model(name)
    net.initialize()
    outputs = net(mx.sym.var("date1"), mx.sym.var("date2"))
    symbol = mx.sym.Group(list(outputs))
    shape = (batch, 3, size, size)
    internals = symbol.get_internals()
    _, out_shapes, _ = internals.infer_shape(date1=shape, date2=shape)
    shapes = dict(zip(internals.list_outputs(), out_shapes))
    graph = json.loads(symbol.tojson())
    nodes = graph["nodes"]

    def entry_shape(entry) -> Tuple[int, ...]:
        node = nodes[entry[0]]
        key = node["name"] if node["op"] == "null" else f"{node['name']}_output"
        if key not in shapes:
            key = f"{node['name']}_output{entry[1]}"
        return tuple(shapes[key])

    network, forms, elementwise = 0, 0, 0
    for i, node in enumerate(nodes):
        if node["op"] == "null":
            continue
        out_shape = entry_shape([i, 0])
        if node["op"] in NETWORK_OPS + FORM_OPS:
            in_shapes = [entry_shape(e) for e in node["inputs"]]
            flops = 2 * _kernel_macs(node["op"], node.get("attrs", {}), in_shapes, out_shape)
            if node["op"] in NETWORK_OPS:
                network += flops
            else:
                forms += flops
        elif node["op"] not in ("Reshape", "reshape_like", "slice_axis", "ones_like", "zeros_like", "BlockGrad"):
            elementwise += int(np.prod(out_shape))
    return {"network_gflop": network / 1e9, "forms_gflop": forms / 1e9, "elementwise_gflop": elementwise / 1e9}


def matmul_peak(n: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of ``mx.nd.dot`` on two n x n float32 matrices here."""
    a, b = mx.nd.random.uniform(shape=(n, n)), mx.nd.random.uniform(shape=(n, n))
    mx.nd.dot(a, b).wait_to_read()
    times = []
    for _ in range(repeats):
        tic = time.perf_counter()
        mx.nd.dot(a, b).wait_to_read()
        times.append(time.perf_counter() - tic)
    return 2 * n ** 3 / float(np.median(times)) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["fractalresnet_d6nf32", "ceecnetv1_d6nf32", "ceecnetv2_d6nf32"])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--step-seconds", type=float, nargs="*", default=[],
                        help="measured training-step seconds, one per model, for the fraction of peak")
    args = parser.parse_args()
    peak = matmul_peak()
    print_header(f"; measured matmul peak {peak:.0f} GFLOP/s (mx.nd.dot 2048x2048)")
    print(f"batch {args.batch}, two dates of {args.size}x{args.size}\n")
    print("| model | forward GFLOP (network) | forward GFLOP (dot/batch_dot forms) | forward G element-wise ops | "
          "step GFLOP (3x network) | step s | fraction of matmul peak |")
    print("|---|---|---|---|---|---|---|")
    for i, name in enumerate(args.models):
        c = count(name, args.size, args.batch)
        step = 3 * c["network_gflop"]
        seconds = args.step_seconds[i] if i < len(args.step_seconds) else None
        fraction = f"{100 * step / seconds / peak:.1f} %" if seconds else "-"
        print(f"| {name} | {c['network_gflop']:.1f} | {c['forms_gflop']:.1f} | {c['elementwise_gflop']:.1f} | "
              f"{step:.1f} | {seconds if seconds else '-'} | {fraction} |", flush=True)


if __name__ == "__main__":
    main()
