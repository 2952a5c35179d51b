"""Evaluate a trained mantis model on labelled change-detection data (paper Section 8.4).

    python evaluate.py --model runs/levir/ensemble.json --levircd data/LEVIR-CD --split test --out eval/
    python evaluate.py --model runs/whu --date1 2011.tif --date2 2016.tif --label label.tif --out eval/
    python evaluate.py --prediction out/change_probability.tif --label label.tif --out eval/

With ``--model`` the images are predicted by the paper's overlapping windows (256, stride 64, averaged;
``--window``, ``--stride``, ``--blend``), as ``predict.py`` does. With ``--prediction`` the change probability that
``predict.py`` already wrote is scored instead, without running a model: it must be on the label's grid
(size, CRS, geotransform), and its nodata pixels are left out of the counts as those of the dates are.

Writes to OUTDIR: ``metrics.json`` and ``metrics.md`` (global metrics from the pooled confusion counts, then
one row per image: precision, recall, F1, MCC, IoU, overall accuracy, kappa), and per image
``<name>_tpfpfn.png`` (TP white, FP red, FN blue, TN black) plus ``<name>_tpfpfn.tif`` with the input's
CRS and geotransform when the input is georeferenced; with ``--polygons`` also ``<name>_tpfpfn.gpkg``, one polygon
per connected region of true positives, false positives and false negatives (layer ``tpfpfn``, field ``class``)
with its pixels, area in square metres and mean / max probability, ``--min-area`` leaving out smaller regions
(utilities/inference/polygons.py). They appear together when the evaluation is complete
(``metrics.json`` last), or none does. The rasters are read strip by strip: memory does not
grow with their size. Exit status 2 with a one-line message for unusable inputs (including an ``--out``
that cannot be written, found before anything is predicted), 1 for a failed write (e.g. a full disk).
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from typing import Callable, Dict, Optional, Sequence, Tuple

# before nn: inference uses the cores that are idle at start (a forward pass gives the same bits at any
# thread count; nn/threads.py)
os.environ.setdefault("MANTIS_THREAD_POLICY", "free")
import nn  # noqa: E402,F401  (first: sets MXNet's OpenMP threads before MXNet loads)

from utilities.artifacts.model_io import load_predictor  # noqa: E402
from utilities.atomic import FileSet, atomic_files, writable_folder
from utilities.cli import add_data_arguments, data_description, entry_point
from utilities.errors import InputError
from utilities.inference.data_options import data_samples
from utilities.inference.evaluation import Evaluation, Prediction, evaluate, evaluate_prediction, write_evaluation
from utilities.inference.metrics import METRIC_NAMES
from utilities.inference.polygons import OutcomePolygons
from utilities.inference.tiled import tiled_prediction
from utilities.raster.tiling import BLENDS

#: called with every predicted strip (utilities.inference.evaluation.score's observe)
Observer = Callable[[Prediction], None]


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="checkpoint (.params/.json), run directory or ensemble JSON")
    parser.add_argument("--prediction", help="a change_probability.tif written by predict.py, scored against "
                                             "--label without running a model (instead of --model)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--threshold", type=float, default=0.5,
                        help="change where the change probability is at least this (default 0.5)")
    parser.add_argument("--window", type=int, default=256,
                        help="inference window side of --model (default 256, the paper's)")
    parser.add_argument("--stride", type=int, default=64, help="step between windows (default 64, the paper's)")
    parser.add_argument("--batch-size", type=int, default=4, help="windows per forward pass (default 4)")
    parser.add_argument("--blend", choices=BLENDS, default=BLENDS[0], help="how overlapping windows' "
                        "probabilities are combined: uniform (default, the paper's plain average) or taper (each "
                        "window's edges faded by a raised cosine: smooth seams at a larger --stride, e.g. 128)")
    parser.add_argument("--force-inputs", action="store_true", help="score dates unlike the model's training "
                        "images (another data type, band means far off) with a warning instead of refusing them")
    parser.add_argument("--polygons", action="store_true", help="also write <name>_tpfpfn.gpkg: the TP, FP and FN "
                        "regions as polygons with their area (m2), pixels and probabilities")
    parser.add_argument("--min-area", type=float, help="with --polygons: leave out regions smaller than this many "
                        "square metres (default 0)")
    add_data_arguments(parser, split="test")
    return parser.parse_args(argv)


def _score_model(args: argparse.Namespace, files: FileSet,
                 observe: Optional[Observer]) -> Tuple[Evaluation, Dict[str, str]]:
    samples = data_samples(args)
    writable_folder(args.out, "--out")  # before anything is predicted
    evaluation = evaluate(load_predictor(args.model), samples, threshold=args.threshold, maps_dir=args.out,
                          predict=tiled_prediction(args.window, args.stride, args.batch_size, args.blend),
                          observe=observe,
                          files=files, force_inputs=args.force_inputs)
    return evaluation, {"model": args.model, "data": data_description(args)}


def _score_prediction(args: argparse.Namespace, files: FileSet,
                      observe: Optional[Observer]) -> Tuple[Evaluation, Dict[str, str]]:
    if args.levircd is not None or args.date1 is not None or args.date2 is not None:
        raise InputError("--prediction is scored against --label alone: --levircd, --date1 and --date2 go "
                         "with --model")
    if args.label is None:
        raise InputError("--prediction needs the --label to score it against")
    writable_folder(args.out, "--out")
    evaluation = evaluate_prediction(args.prediction, args.label, threshold=args.threshold, maps_dir=args.out,
                                     files=files, observe=observe)
    return evaluation, {"prediction": args.prediction, "data": f"label {args.label}"}


def _main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(format="warning: %(message)s", level=logging.WARNING)
    if (args.model is None) == (args.prediction is None):
        raise InputError("give either --model (to predict and score) or --prediction (to score a prediction "
                         "already made), not both")
    if args.min_area is not None and not args.polygons:
        raise InputError("--min-area goes with --polygons")
    with atomic_files() as files, (OutcomePolygons(args.out, args.threshold, args.min_area or 0.0, files)
                                   if args.polygons else contextlib.nullcontext()) as observe:
        # the maps, polygons and metrics appear together, or none does
        evaluation, about = (_score_model if args.prediction is None else _score_prediction)(args, files, observe)
        json_path, md_path = write_evaluation(evaluation, args.out, about, files)
    summary = ", ".join(f"{k} {evaluation.metrics[k]:.4f}" for k in METRIC_NAMES)
    print(f"{len(evaluation.images)} image(s): {summary}")
    print(f"wrote {json_path}, {md_path} and the TP/FP/FN maps{' and polygons' if args.polygons else ''} to "
          f"{args.out}")
    return 0


main = entry_point(_main)

if __name__ == "__main__":
    sys.exit(main())
