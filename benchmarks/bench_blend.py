"""Faster inference protocols against the paper's, side by side in one run: time and F1/MCC of each.

The paper predicts with 256 x 256 windows at stride 64, averaging the windows' probabilities (the
``uniform`` blend). A larger stride predicts fewer windows (about (stride / 64)^2 times fewer) and the
``taper`` blend (utilities/raster/tiling.py: window_weights) fades each window's edges so that they
leave no seams. For each protocol ``STRIDE:BLEND`` this script predicts and scores the same data with
the project's own path (utilities/inference/evaluation.py: evaluate with tiled_prediction, as
``evaluate.py --model`` does, no maps written), and reports the windows predicted, the wall time (reading,
windows, blending, scoring; the model loaded once before) and the pooled F1 and MCC against the labels.
The protocols run in turn, round after round (``--rounds``): each protocol's fastest round is
reported, and the ratios are between protocols of this one run. With ``stride == window`` the windows do
not overlap and both blends give the same result: 256 is run uniform only.

Data: the options of ``evaluate.py`` (one data set per run): one pair (``--date1 --date2 --label``, e.g.
the demo's 3072 x 1024 synthetic scene, which ``python -m demo`` writes to <out>/data/scene), a LEVIR-CD
folder, or OSCD cities (``--oscd ROOT --cities aguasclaras,paris``, read as the model was trained on
them), predicted with ``--model`` (e.g. the demo's ensemble, <out>/selection/ensemble.json).

    python benchmarks/bench_blend.py --model demo_output/selection/ensemble.json \\
        --date1 demo_output/data/scene/date1.tif --date2 demo_output/data/scene/date2.tif \\
        --label demo_output/data/scene/label.tif
    python benchmarks/bench_blend.py --model runs/oscd --oscd ../shared/data/oscd --cities aguasclaras,paris
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path
from typing import Dict, List, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import nn  # noqa: E402,F401  (first: sets MXNet's OpenMP threads before MXNet loads)

from bench_models import print_header  # noqa: E402

from utilities.artifacts.model_io import load_predictor  # noqa: E402
from utilities.cli import add_data_arguments, data_description  # noqa: E402
from utilities.inference.data_options import data_samples  # noqa: E402
from utilities.inference.evaluation import evaluate  # noqa: E402
from utilities.inference.tiled import tiled_prediction  # noqa: E402
from utilities.raster.io import RasterInfo, raster_info  # noqa: E402
from utilities.raster.tiling import BLENDS, Tiling  # noqa: E402

DEFAULT_PROTOCOLS = ("64:uniform", "128:uniform", "128:taper", "256:uniform")


def parse_protocol(text: str) -> Tuple[int, str]:
    stride, _, blend = text.partition(":")
    if not stride.isdigit() or blend not in BLENDS:
        raise argparse.ArgumentTypeError(f"protocol {text!r} is not STRIDE:BLEND with BLEND one of {BLENDS}")
    return int(stride), blend


def windows(sizes: List[RasterInfo], window: int, stride: int) -> int:
    """Windows predicted over rasters of these sizes."""
    return sum(Tiling(i.height, i.width, window, stride).n_windows for i in sizes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="checkpoint, run directory or ensemble JSON")
    add_data_arguments(parser, split="none")
    parser.add_argument("--protocols", type=parse_protocol, nargs="+",
                        default=[parse_protocol(p) for p in DEFAULT_PROTOCOLS], help="STRIDE:BLEND ...")
    parser.add_argument("--window", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2, help="runs of every protocol, in turn (default 2)")
    args = parser.parse_args()
    logging.basicConfig(format="warning: %(message)s", level=logging.WARNING)
    samples = data_samples(args)
    name = data_description(args)
    print_header(f", model {args.model}, window {args.window}, batch {args.batch_size}, {args.rounds} round(s)")
    sizes = [raster_info(s.date1) for s in samples]  # read once: pixels here, windows in the table
    pixels = sum(info.height * info.width for info in sizes)
    print(f"data: {name}, {len(samples)} pair(s), {pixels:,} pixels")
    predictor = load_predictor(args.model)
    results: Dict[Tuple[int, str], dict] = {}
    for round_ in range(args.rounds):
        for stride, blend in args.protocols:
            predict = tiled_prediction(args.window, stride, args.batch_size, blend)
            tic = time.perf_counter()
            # force_inputs: a model trained on other images (the demo's synthetic ones) is scored all the same
            evaluation = evaluate(predictor, samples, predict=predict, force_inputs=True)
            seconds = time.perf_counter() - tic
            result = results.setdefault((stride, blend), dict(seconds=[], metrics=evaluation.metrics))
            result["seconds"].append(seconds)
            assert result["metrics"] == evaluation.metrics  # deterministic: every round scores the same
            print(f"round {round_ + 1}: stride {stride} {blend}: {seconds:.2f} s, F1 {evaluation.metrics['f1']:.4f}, "
                  f"MCC {evaluation.metrics['mcc']:.4f}, load average {os.getloadavg()[0]:.1f}", flush=True)
    reference = min(results.get((64, "uniform"), {}).get("seconds", [float("nan")]))
    print("\n| stride | blend | windows | time (s), fastest round | time vs stride 64 | F1 | MCC |")
    print("|---|---|---|---|---|---|---|")
    for stride, blend in args.protocols:
        r = results[(stride, blend)]
        seconds = min(r["seconds"])
        print(f"| {stride} | {blend} | {windows(sizes, args.window, stride)} | {seconds:.2f} | "
              f"{seconds / reference:.2f} | {r['metrics']['f1']:.4f} | {r['metrics']['mcc']:.4f} |")
    print(f"\nload average at the end: {', '.join(f'{v:.1f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
