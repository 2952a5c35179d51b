"""Benchmark of tiled large-raster inference (paper Section 8.5.1): overhead and peak memory.

For each raster size, a synthetic georeferenced pair (utilities/data/synthetic.py) is predicted by
``predict_rasters`` with a mantis model (random weights: the speed and memory do not depend on them)
in a fresh process, which reports

- the time of the whole run and, inside it, the time of the model's forward passes of the same batches
  of windows; the overhead is everything else (reading, reflect padding, batching, averaging, writing
  the four compressed GeoTIFFs and the quick-look) relative to the forward time;
- the peak resident memory (``ru_maxrss``) of the process after loading the model and running it three
  times on a batch (MXNet's memory pool reaches its steady state), after the run, and the difference
  (what the tiling adds): flat in the raster size when the rasters are streamed strip by strip.

Targets: overhead <= 5 %, flat peak RSS, < 2 GiB for an 8192 x 8192 pair with a D6nf32.

    python benchmarks/bench_inference.py --model fractalresnet_tiny --sizes 2048 8192
    python benchmarks/bench_inference.py --model ceecnetv1_d6nf32 --sizes 256 512 --batch-size 1
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

from bench_models import print_header

ROOT = Path(__file__).resolve().parents[1]
#: forward passes after the first before the model's memory is measured (its steady state)
WARM_CALLS = 2
sys.path.insert(0, str(ROOT))


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="fractalresnet_tiny", help="registered mantis model")
    parser.add_argument("--sizes", type=int, nargs="+", default=[2048, 8192], help="raster sides to predict")
    parser.add_argument("--window", type=int, default=256)
    parser.add_argument("--stride", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--workdir", help="where the synthetic scenes and outputs go (default: a temporary folder)")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)  # one measurement, in its own process
    return parser.parse_args(argv)


def max_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def measure(args: argparse.Namespace, size: int, folder: Path) -> dict:
    """One run of ``predict_rasters`` on the scene in ``folder`` (called in a fresh process)."""
    import nn  # noqa: F401  (sets MXNet's OpenMP threads first)

    import mxnet as mx
    import numpy as np

    from mantis import get_model
    from utilities.artifacts.model_io import Predictor
    from utilities.inference.tiled import predict_rasters
    from utilities.raster.tiling import Tiling

    class TimedPredictor(Predictor):
        """Adds up the time of the forward passes (normalisation, forward, copy back to NumPy)."""

        seconds = 0.0

        def __call__(self, date1, date2):
            tic = time.perf_counter()
            outputs = super().__call__(date1, date2)
            self.seconds += time.perf_counter() - tic
            return outputs

    net = get_model(args.model)
    net.initialize(mx.init.Xavier())
    predictor = TimedPredictor([net], [128.0] * 3, [64.0] * 3)
    window = np.zeros((args.batch_size, 3, args.window, args.window), np.float32)
    tic = time.perf_counter()
    predictor(window, window)  # builds the hybridized graph
    first_call = time.perf_counter() - tic
    for _ in range(WARM_CALLS):  # MXNet's memory pool grows over the first calls
        predictor(window, window)
    rss_model = max_rss_mib()
    predictor.seconds = 0.0
    tic = time.perf_counter()
    predict_rasters(predictor, folder / "date1.tif", folder / "date2.tif", folder / "out", window=args.window,
                    stride=args.stride, batch_size=args.batch_size, progress=False)
    total = time.perf_counter() - tic
    rss_peak = max_rss_mib()
    return dict(size=size, windows=Tiling(size, size, args.window, args.stride).n_windows, total_s=total,
                forward_s=predictor.seconds, overhead_pct=100 * (total - predictor.seconds) / predictor.seconds,
                first_call_s=first_call, rss_model_mib=rss_model, rss_peak_mib=rss_peak,
                rss_added_mib=rss_peak - rss_model, threads=os.environ.get("OMP_NUM_THREADS"))


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child is not None:
        print(json.dumps(measure(args, args.child, Path(args.workdir) / str(args.child))))
        return 0
    print_header()
    print(f"model {args.model}, window {args.window}, stride {args.stride}, batch {args.batch_size}, random "
          f"weights; synthetic uint8 RGB GeoTIFF pairs; every size in a fresh process")
    print()
    print("| raster | windows | threads | total s | forward s | overhead | s/window | first call s | model RSS "
          "MiB | peak RSS MiB | added by tiling MiB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(dir=args.workdir) as workdir:
        from utilities.data.synthetic import write_geotiff_scene

        for size in args.sizes:
            write_geotiff_scene(Path(workdir) / str(size), size, size, seed=size)
            child = [sys.executable, __file__, "--model", args.model, "--window", str(args.window), "--stride",
                     str(args.stride), "--batch-size", str(args.batch_size), "--workdir", workdir,
                     "--child", str(size)]
            result = subprocess.run(child, capture_output=True, text=True, check=True)
            r = json.loads(result.stdout.splitlines()[-1])
            print(f"| {size}x{size} | {r['windows']} | {r['threads']} | {r['total_s']:.1f} | {r['forward_s']:.1f} | "
                  f"{r['overhead_pct']:.1f} % | {r['total_s'] / r['windows']:.3f} | {r['first_call_s']:.1f} | "
                  f"{r['rss_model_mib']:.0f} | {r['rss_peak_mib']:.0f} | {r['rss_added_mib']:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
