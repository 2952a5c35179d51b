"""GroupNorm's two forms side by side: mantis's fused kernel against MXNet's operator + broadcast affine.

    python benchmarks/bench_groupnorm.py
    OMP_NUM_THREADS=1 python benchmarks/bench_groupnorm.py --shapes 1,32,256,256 3,64,128,128

For each shape, both forms of :class:`nn.GroupNorm` (``nn.norm.FORMS``) run hybridized in the same
process on the same data: median milliseconds of the forward and of forward + backward, their ratio,
and the largest differences between the forms in the output and in the gradients of the input,
gamma and beta (float32; the kernel accumulates in double).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Dict, Tuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import nn  # noqa: E402  (threads first)
from nn.norm import FORMS, groupnorm_form  # noqa: E402

import mxnet as mx  # noqa: E402
import numpy as np  # noqa: E402
from bench_models import median_seconds, print_header  # noqa: E402
from mxnet import autograd, nd  # noqa: E402


def run_form(form: str, shape: Tuple[int, ...], repeats: int, seed: int = 0) -> Dict[str, object]:
    """Timings and results of one form on data of ``shape`` (mean 2, std 3: the mean matters for accuracy)."""
    rng = np.random.default_rng(seed)
    x = nd.array(rng.normal(2.0, 3.0, shape).astype(np.float32))
    dy = nd.array(rng.normal(size=shape).astype(np.float32))
    with groupnorm_form(form):
        block = nn.GroupNorm(shape[1], num_groups=4)
        block.initialize()
        block.gamma.set_data(nd.array(rng.uniform(0.5, 2.0, shape[1])))
        block.beta.set_data(nd.array(rng.normal(size=shape[1])))
        block.hybridize()
        x.attach_grad()

        def forward() -> None:
            block(x).wait_to_read()

        def train() -> None:
            with autograd.record():
                y = block(x)
            y.backward(dy)
            nd.waitall()

        forward()  # warm-up: graph build
        train()
        fwd, step = 1e3 * median_seconds(forward, repeats), 1e3 * median_seconds(train, repeats)
        with autograd.record():
            y = block(x)
        y.backward(dy)
    return {"forward": fwd, "step": step, "out": y.asnumpy(), "dx": x.grad.asnumpy(),
            "dgamma": block.gamma.grad().asnumpy(), "dbeta": block.beta.grad().asnumpy()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=["1,32,256,256", "3,64,128,128", "1,512,8,8"])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    print_header(f", mxnet {mx.__version__}")
    print(f"hybridized, num_groups 4, median of {args.repeats}; 'max diff' = largest |kernel - operator|\n")
    print("| shape | form | forward ms | forward+backward ms | max diff out / dx / dgamma / dbeta |")
    print("|---|---|---|---|---|")
    for text in args.shapes:
        shape = tuple(int(v) for v in text.split(","))
        results = {form: run_form(form, shape, args.repeats) for form in FORMS}
        kernel, operator = results["kernel"], results["operator"]
        diffs = " / ".join(f"{np.abs(kernel[k] - operator[k]).max():.1e}" for k in ("out", "dx", "dgamma", "dbeta"))
        for form in FORMS:
            r = results[form]
            print(f"| {text} | {form} | {r['forward']:.1f} | {r['step']:.1f} | {diffs if form == 'kernel' else ''} |")
        print(f"| {text} | operator / kernel | {operator['forward'] / kernel['forward']:.1f}x | "
              f"{operator['step'] / kernel['step']:.1f}x | |", flush=True)


if __name__ == "__main__":
    main()
