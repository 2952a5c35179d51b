"""MXNet and ONNX Runtime side by side: tiled inference of one scene by both engines, alternately, in one run.

For each model (random weights: speed and memory do not depend on them), the parent exports the model to
ONNX once (``export_onnx``, its parity check reported), then runs ``predict_rasters`` on the scene for each
round, thread count and engine, alternating the engines, each run in a fresh process that loads only its
own engine's model (the MXNet checkpoint, or the ``.onnx`` file). Each run reports

- the model's load time plus its first batch (graph build, session set-up), not counted below;
- the whole ``predict_rasters`` (reading, windows in batches, averaging, writing the outputs): windows/s
  and km²/h of the scene at its pixel size;
- the peak resident memory of the process (``ru_maxrss``);

and the parent compares the two engines' float32 change probabilities (largest absolute difference).
Scenes: the demo's 3072 x 1024 synthetic scene (0.5 m pixels, seed 2021, windows 256 at stride 128 as the
demo predicts it) with the demo's tiny model, and a ``--crop`` of its top-left corner for a D6nf32 model.

    python benchmarks/bench_engines.py                                        # both models, 1 and 2 threads
    python benchmarks/bench_engines.py --models fractalresnet_tiny --threads 2 --rounds 3
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
sys.path.insert(0, str(ROOT))
#: the demo's scene (demo/__main__.py: FULL.big_scene, seed 2021, its change settings)
DEMO_SCENE = dict(height=1024, width=3072, seed=2021, p_new=0.6, p_demolish=0.25)
NORMALIZATION = {"mean": [110.0, 115.0, 100.0], "std": [50.0, 48.0, 52.0]}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["fractalresnet_tiny", "fractalresnet_d6nf32"],
                        help="registered mantis models; D6nf32 ones predict the --crop")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=1, help="alternations of the engines per thread count")
    parser.add_argument("--window", type=int, default=256)
    parser.add_argument("--stride", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--crop", type=int, default=512, help="side of the scene's corner a D6nf32 model predicts")
    parser.add_argument("--workdir", help="where the scene, models and outputs go (default: a temporary folder)")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # one run, as JSON
    return parser.parse_args(argv)


def run_child(spec: dict) -> dict:
    """One engine on one scene in this (fresh) process."""
    import numpy as np
    import rasterio

    from utilities.inference.engines import load_engine
    from utilities.inference.tiled import predict_rasters
    from utilities.raster.tiling import Tiling

    tic = time.perf_counter()
    predictor = load_engine(spec["model"], spec["engine"], spec["window"], spec["batch_size"])
    window = np.full((spec["batch_size"], predictor.channels, spec["window"], spec["window"]), 100, np.float32)
    predictor(window, window)
    first = time.perf_counter() - tic
    tic = time.perf_counter()
    predict_rasters(predictor, spec["date1"], spec["date2"], spec["out"], window=spec["window"], stride=spec["stride"],
                    batch_size=spec["batch_size"], progress=False, probability_dtype="float32", quicklook=False)
    seconds = time.perf_counter() - tic
    with rasterio.open(spec["date1"]) as src:
        height, width, transform = src.height, src.width, src.transform
    windows = Tiling(height, width, spec["window"], spec["stride"]).n_windows
    km2 = height * width * abs(transform.a * transform.e) / 1e6
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return dict(first_s=first, seconds=seconds, windows=windows, windows_per_s=windows / seconds,
                km2_per_h=km2 / seconds * 3600, km2=km2, rss_mib=rss_mib,
                providers=getattr(predictor, "providers", ["MXNet CPU"]))


def crop(scene: dict, side: int, folder: Path) -> dict:
    """The top-left ``side`` x ``side`` pixels of the scene's dates, georeferenced."""
    import rasterio
    from rasterio.windows import Window
    from rasterio.windows import transform as window_transform

    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name in ("date1", "date2"):
        with rasterio.open(scene[name]) as src:
            window = Window(0, 0, min(side, src.width), min(side, src.height))
            profile = dict(src.profile, width=window.width, height=window.height,
                           transform=window_transform(window, src.transform))
            out[name] = folder / f"{name}.tif"
            with rasterio.open(out[name], "w", **profile) as dst:
                dst.write(src.read(window=window))
    return out


def prepare_model(name: str, folder: Path, args: argparse.Namespace) -> dict:
    """A checkpoint of ``name`` with random weights and its ONNX export; returns their paths and the parity."""
    import mxnet as mx

    from mantis import get_model
    from utilities.artifacts.checkpoint import CheckpointRecord, Checkpoints
    from utilities.artifacts.export import export_onnx

    mx.random.seed(0)
    net = get_model(name)
    net.initialize(mx.init.Xavier())
    x = mx.nd.zeros((1, 3, net.size_multiple, net.size_multiple))
    net(x, x)
    params = Checkpoints(folder / name).save(CheckpointRecord(name, 1, normalization=NORMALIZATION), net, None)
    tic = time.perf_counter()
    report = export_onnx(params, folder / f"{name}.onnx", size=args.window, batch=args.batch_size, tolerance=1.0)
    return dict(mxnet=str(params), onnx=report.model_file, parity=max(report.max_abs_diff.values()),
                export_s=time.perf_counter() - tic)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child is not None:
        print(json.dumps(run_child(json.loads(args.child))))
        return 0
    print_header()
    print(f"window {args.window}, stride {args.stride}, batch {args.batch_size}; random weights; each run in a fresh "
          f"process, the engines alternating; onnxruntime providers as listed")
    with tempfile.TemporaryDirectory(dir=args.workdir) as workdir:
        import nn  # noqa: F401  (first: MXNet's threads)

        import numpy as np
        import rasterio

        from utilities.data.synthetic import write_geotiff_scene

        workdir = Path(workdir)
        settings = dict(DEMO_SCENE)
        scene = write_geotiff_scene(workdir / "scene", settings.pop("height"), settings.pop("width"), **settings)
        print()
        print("| model | scene | threads | engine | windows | load + first batch s | predict s | windows/s | km²/h "
              "| peak RSS MiB | providers |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        notes = []
        for name in args.models:
            model = prepare_model(name, workdir / "models", args)
            dates = scene if "tiny" in name else crop(scene, args.crop, workdir / "crop")
            size = "3072x1024" if "tiny" in name else f"{args.crop}x{args.crop} crop"
            for threads in args.threads:
                outputs = {}
                for round_ in range(args.rounds):
                    for engine in ("mxnet", "onnx"):
                        out = workdir / "out" / f"{name}-{threads}-{engine}"
                        spec = dict(model=model[engine], engine=engine, date1=str(dates["date1"]),
                                    date2=str(dates["date2"]), out=str(out), window=args.window, stride=args.stride,
                                    batch_size=args.batch_size)
                        env = dict(os.environ, OMP_NUM_THREADS=str(threads), MANTIS_THREADS=str(threads))
                        result = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], env=env,
                                                capture_output=True, text=True)
                        if result.returncode:
                            raise SystemExit(f"{name} {engine} {threads} thread(s) failed:\n{result.stderr[-3000:]}")
                        r = json.loads(result.stdout.splitlines()[-1])
                        print(f"| {name} | {size} | {threads} | {engine} | {r['windows']} | {r['first_s']:.1f} | "
                              f"{r['seconds']:.1f} | {r['windows_per_s']:.2f} | {r['km2_per_h']:.2f} | "
                              f"{r['rss_mib']:.0f} | {', '.join(r['providers'])} |", flush=True)
                        with rasterio.open(out / "change_probability.tif") as src:
                            outputs[engine] = src.read(1)
                difference = float(np.nanmax(np.abs(outputs["mxnet"] - outputs["onnx"])))
                notes.append(f"{name}, {threads} thread(s): max |p_onnx - p_mxnet| of the scene {difference:.2e}")
            notes.append(f"{name}: export {model['export_s']:.1f} s, export parity check {model['parity']:.2e}")
        print()
        for note in notes:
            print(note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
