"""Bilinear x2 upsampling: the forms of ``nn.ops.upsample2x`` against MXNet's operator, in one process.

    python benchmarks/bench_upsample.py
    OMP_NUM_THREADS=1 python benchmarks/bench_upsample.py --repeats 9

Forward + backward (hybridized, gradient of the input) of the fused kernel (``upsample2x_kernel``),
the dense interpolation-matrix products it replaces (``upsample2x_products``) and
``contrib.BilinearResize2D``, on the largest shapes a CEECNet D6nf32 step upsamples (the EC branch's
Expand at the first depth, the decoder's first and deepest steps). The forms run interleaved, so a
busy machine slows them alike; medians of ``--repeats``. Prints the largest difference from the
operator's output and input gradient too.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable, Dict

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import nn  # noqa: E402,F401  (threads first)
from nn.ops import upsample2x_kernel, upsample2x_products  # noqa: E402

import mxnet as mx  # noqa: E402
import numpy as np  # noqa: E402
from bench_models import median_seconds, print_header  # noqa: E402
from mxnet import autograd  # noqa: E402
from mxnet.gluon import nn as gluon_nn  # noqa: E402


def bilinear_operator(F, x):
    return F.contrib.BilinearResize2D(x, scale_height=2.0, scale_width=2.0)


FORMS: Dict[str, Callable] = {"kernel": upsample2x_kernel, "products": upsample2x_products,
                              "BilinearResize2D": bilinear_operator}


def step(form: Callable, x: mx.nd.NDArray, dy: mx.nd.NDArray):
    """A hybridized forward + backward of ``form`` on ``x``: returns (run, output, input gradient)."""
    block = gluon_nn.HybridLambda(form)
    block.hybridize()
    x = x.copy()
    x.attach_grad()

    def run() -> None:
        with autograd.record():
            out = block(x)
        out.backward(dy)
        mx.nd.waitall()

    run()
    return run, block(x), x.grad


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=["1,16,256,256", "1,256,16,16", "1,32,128,128"])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    print_header()
    print()
    print(f"| input shape | {' | '.join(f'{name} ms' for name in FORMS)} | products / kernel | "
          f"max diff kernel vs operator (out / dx) |")
    print(f"|---|{'---|' * len(FORMS)}---|---|")
    for text in args.shapes:
        shape = tuple(int(v) for v in text.split(","))
        x = mx.nd.random.uniform(shape=shape)
        dy = mx.nd.random.normal(shape=shape[:2] + (2 * shape[2], 2 * shape[3]))
        steps = {name: step(form, x, dy) for name, form in FORMS.items()}
        times = {name: [] for name in FORMS}
        for _ in range(args.repeats):
            for name, (run, _, _) in steps.items():
                times[name].append(median_seconds(run, 1))
        ms = {name: 1e3 * float(np.median(t)) for name, t in times.items()}
        diffs = [float(np.abs(a.asnumpy() - b.asnumpy()).max())
                 for a, b in zip(steps["kernel"][1:], steps["BilinearResize2D"][1:])]
        print(f"| {text} | {' | '.join(f'{ms[name]:.1f}' for name in FORMS)} | "
              f"{ms['products'] / ms['kernel']:.1f}x | {diffs[0]:.1e} / {diffs[1]:.1e} |", flush=True)


if __name__ == "__main__":
    main()
