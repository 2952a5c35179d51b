"""Predict change maps of large rasters with a trained model (paper Section 8.5.1: 256 x 256 windows,
stride 64, reflect padding, per-pixel average of the windows' probabilities).

    python predict.py --model runs/levir --date1 2011.tif --date2 2016.tif --out predictions/
    python predict.py --model ensemble.json --levircd data/LEVIR-CD --split test --out predictions/
    python predict.py --model ensemble.json --manifest region.csv [--block-rows 8192] [--task I]
    python predict.py --model ensemble.json --manifest region.csv --status    # what is done, what is not

``--manifest`` lists many pairs (CSV or YAML: date1, date2[, label], out; utilities/inference/manifest.py):
each pair, or each block of ``--block-rows`` rows of a taller one, is a task; ``--task I`` runs task I
(a SLURM job array's task, hpc/predict.slurm), otherwise every task runs in turn. Complete pairs and
blocks are skipped, blocks are joined into their pair's outputs (utilities/inference/region.py).
``--engine mxnet|onnx`` runs the windows in MXNet or in ONNX Runtime (an exported model; default: the
faster here, utilities/inference/engines.py).

``--model`` is a checkpoint (``epoch_NNNN.params``), a run directory (its latest checkpoint) or an
ensemble file (see utilities/artifacts/model_io.py). Writes change_probability.tif, change_mask.tif,
boundary.tif, distance.tif (Cloud-Optimized GeoTIFFs; the probabilities as uint8 p = v / 254 unless
``--probability-dtype float32``), quicklook.png and with ``--polygons`` change_polygons.gpkg (see
utilities/inference/tiled.py), one folder per sample for ``--levircd``. Exit status 2 with a one-line
message for unusable inputs (a model, raster or ``--out`` that cannot be used, found before anything is
written), 1 for a failed write (e.g. "no space left on device writing FILE"), 130 after Ctrl-C; files are
only ever complete under their final names. Dates
whose data type or band means are unlike the model's training images are refused too (see
utilities/inference/input_check.py); ``--force-inputs`` predicts them with a one-line warning instead.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

# before nn: inference uses the cores that are idle at start (a forward pass gives the same bits at any
# thread count; nn/threads.py)
os.environ.setdefault("MANTIS_THREAD_POLICY", "free")
import nn  # noqa: E402,F401  (first: sets MXNet's OpenMP threads before MXNet loads)

from utilities.artifacts.band_inputs import model_dates
from utilities.atomic import writable_folder
from utilities.cli import entry_point
from utilities.errors import InputError
from utilities.inference.engines import DEFAULT_ENGINE, ENGINES, load_engine, resolve_engine
from utilities.inference.manifest import array_spec, plan_tasks, read_manifest
from utilities.inference.region import Settings, pending, run_task, task_status
from utilities.inference.tiled import PROBABILITY_DTYPES, predict_folder, predict_rasters
from utilities.raster.bands import ALIGN_CHOICES, split_band_list
from utilities.raster.io import raster_info
from utilities.raster.tiling import BLENDS


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="checkpoint .params/.json, run directory or ensemble .json")
    parser.add_argument("--date1", help="date 1 image (GeoTIFF, VRT, PNG or JPEG), or a folder of band files "
                        "(with --bands names, or a model trained on band files)")
    parser.add_argument("--date2", help="date 2 image, same grid as date 1")
    parser.add_argument("--levircd", help="a folder in the LEVIR-CD layout (A/, B/; label/ is not needed) instead "
                        "of two dates")
    parser.add_argument("--split", choices=("train", "val", "test"), help="with --levircd: the split to predict")
    parser.add_argument("--manifest", help="a CSV or YAML list of pairs (date1, date2[, label], out) instead of "
                        "two dates")
    parser.add_argument("--out", help="output folder (not with --manifest, which names one per pair)")
    parser.add_argument("--bands", nargs="+", help="1-based bands to read (default: the model's), or band names "
                        "(B02,B03,...) of band files: a model trained on band files takes its own")
    parser.add_argument("--align", choices=ALIGN_CHOICES, help="resample date 2 onto date 1's grid by georeference "
                        "(default: dates on different grids are refused)")
    parser.add_argument("--window", type=int, default=256, help="window side (default 256)")
    parser.add_argument("--stride", type=int, default=64, help="step between windows (default 64)")
    parser.add_argument("--batch-size", type=int, default=4, help="windows per forward pass (default 4)")
    parser.add_argument("--blend", choices=BLENDS, default=BLENDS[0], help="how overlapping windows' "
                        "probabilities are combined: uniform (default, the paper's plain average) or taper (each "
                        "window's edges faded by a raised cosine: smooth seams at a larger --stride, e.g. 128)")
    parser.add_argument("--threshold", type=float, default=0.5, help="change probability threshold (default 0.5)")
    parser.add_argument("--no-quicklook", action="store_true", help="do not write quicklook.png")
    parser.add_argument("--probability-dtype", choices=PROBABILITY_DTYPES,
                        help="how change_probability.tif, boundary.tif and distance.tif store p: uint8 (default: "
                             "floor(254 p), scale 1/254, nodata 255) or float32 (NaN nodata)")
    parser.add_argument("--polygons", action="store_true", help="also write change_polygons.gpkg: one polygon per "
                        "connected change region, with its area (m2), pixels, mean and max probability")
    parser.add_argument("--min-area", type=float, help="with --polygons: leave out regions smaller than this many "
                        "square metres (default 0)")
    parser.add_argument("--force-inputs", action="store_true",
                        help="predict dates whose data type or values are unlike the model's training images (a "
                             "warning instead of a refusal)")
    parser.add_argument("--engine", choices=tuple(ENGINES), help=f"run the windows in MXNet or in ONNX Runtime "
                        f"(default: onnx for an .onnx model, else {DEFAULT_ENGINE}, the faster here)")
    region = parser.add_argument_group("a manifest of pairs (--manifest)")
    region.add_argument("--block-rows", type=int, help="predict pairs taller than this in blocks of at most this "
                        "many rows, one task each (joined when all are done)")
    region.add_argument("--task", type=int, help="run only this task (0-based; a job array's task id)")
    region.add_argument("--status", action="store_true", help="list the tasks and whether each is done; predict "
                        "nothing")
    region.add_argument("--pending", action="store_true", help="print the tasks not done as a SLURM --array list "
                        "(empty when all are); predict nothing")
    args = parser.parse_args(argv)
    dates = args.date1 is not None or args.date2 is not None
    if dates + (args.levircd is not None) + (args.manifest is not None) != 1:
        parser.error("give either --date1 and --date2, --levircd, or --manifest")
    if dates and (args.date1 is None or args.date2 is None):
        parser.error("--date1 and --date2 go together")
    if (args.out is None) == (args.manifest is None):
        parser.error("--manifest names an output folder per pair: give --out with --date1/--date2 or --levircd only")
    if args.manifest is None and (args.block_rows is not None or args.task is not None or args.status
                                  or args.pending):
        parser.error("--block-rows, --task, --status and --pending go with --manifest")
    if args.min_area is not None and not args.polygons:
        parser.error("--min-area goes with --polygons")
    return args


def _manifest(args: argparse.Namespace, options: dict) -> int:
    """Predict, or report on, the tasks of ``--manifest``."""
    tasks = plan_tasks(read_manifest(args.manifest), args.block_rows)
    if args.task is not None and not 0 <= args.task < len(tasks):
        raise InputError(f"--task {args.task} is not a task of {args.manifest}, which has {len(tasks)} "
                         f"(0-{len(tasks) - 1})")
    settings = Settings(model=Path(args.model), engine=resolve_engine(args.model, args.engine), options=options,
                        block_rows=args.block_rows)
    if args.pending:
        print(array_spec(task.index for task in pending(tasks, settings)))
        return 0
    if args.status:
        for task in tasks:
            missing = task_status(task, settings)
            print(f"task {task.index}: {task.describe()}: {'done' if missing is None else 'to do (' + missing + ')'}")
        print(f"{len(tasks) - len(pending(tasks, settings))} of {len(tasks)} task(s) done")
        return 0
    todo = tasks if args.task is None else [tasks[args.task]]
    predictor = load_engine(args.model, args.engine, args.window, args.batch_size)
    for task in todo:
        print(f"task {task.index}: {task.describe()}", flush=True)
        print(f"task {task.index}: {run_task(task, predictor, settings)}", flush=True)
    return 0


def _main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(format="warning: %(message)s", level=logging.WARNING)
    bands, band_names = split_band_list(args.bands)
    if (band_names is not None or args.align is not None) and args.date1 is None:
        raise InputError("band names in --bands and --align go with --date1/--date2 (not --levircd or --manifest)")
    options = dict(window=args.window, stride=args.stride, batch_size=args.batch_size, threshold=args.threshold,
                   bands=bands, quicklook=not args.no_quicklook, force_inputs=args.force_inputs)
    options.update(probability_dtype=args.probability_dtype or PROBABILITY_DTYPES[0], polygons=args.polygons,
                   min_area=args.min_area or 0.0, blend=args.blend)
    if args.manifest is not None:
        return _manifest(args, options)
    writable_folder(args.out, "--out")
    if args.levircd is None:  # band files found (or refused) before the model loads
        date1, date2 = model_dates(args.model, args.date1, args.date2, band_names, args.align)
    predictor = load_engine(args.model, args.engine, args.window, args.batch_size)
    if args.levircd is None:
        outputs = [predict_rasters(predictor, date1, date2, args.out, **options)]
    else:
        outputs = list(predict_folder(predictor, args.levircd, args.out, split=args.split, **options).values())
    for paths in outputs:
        for path in paths.values():
            print(f"wrote {path}")
    if raster_info(outputs[0]["probability"]).crs is None:
        print("note: the inputs have no CRS (PNG/JPEG or a TIFF without one), and neither have the outputs")
    return 0


main = entry_point(_main)

if __name__ == "__main__":
    sys.exit(main())
