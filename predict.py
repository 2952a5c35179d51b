"""Predict change maps of large rasters with a trained model (paper Section 8.5.1: 256 x 256 windows,
stride 64, reflect padding, per-pixel average of the windows' probabilities).

    python predict.py --model runs/levir --date1 2011.tif --date2 2016.tif --out predictions/
    python predict.py --model ensemble.json --levircd data/LEVIR-CD --split test --out predictions/

``--model`` is a checkpoint (``epoch_NNNN.params``), a run directory (its latest checkpoint) or an
ensemble file (see utilities/artifacts/model_io.py). Writes change_probability.tif, change_mask.tif,
boundary.tif, distance.tif and quicklook.png (see utilities/inference/tiled.py), one folder per sample
for ``--levircd``. Exit status 2 with a one-line message for unusable inputs (a model, raster or ``--out``
that cannot be used, found before anything is written), 1 for a failed write (e.g. "no space left on
device writing FILE"), 130 after Ctrl-C; files are only ever complete under their final names.
"""
from __future__ import annotations

import argparse
import sys

import nn  # noqa: F401  (first: sets MXNet's OpenMP threads before MXNet loads)

from utilities.artifacts.model_io import load_predictor
from utilities.atomic import writable_folder
from utilities.cli import entry_point
from utilities.inference.tiled import predict_folder, predict_rasters
from utilities.raster.io import raster_info


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="checkpoint .params/.json, run directory or ensemble .json")
    parser.add_argument("--date1", help="date 1 image (GeoTIFF, PNG or JPEG)")
    parser.add_argument("--date2", help="date 2 image, same grid as date 1")
    parser.add_argument("--levircd", help="a folder in the LEVIR-CD layout (A/, B/; label/ is not needed) instead "
                        "of two dates")
    parser.add_argument("--split", choices=("train", "val", "test"), help="with --levircd: the split to predict")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--bands", type=int, nargs="+", help="1-based bands to read (default: the model's)")
    parser.add_argument("--window", type=int, default=256, help="window side (default 256)")
    parser.add_argument("--stride", type=int, default=64, help="step between windows (default 64)")
    parser.add_argument("--batch-size", type=int, default=4, help="windows per forward pass (default 4)")
    parser.add_argument("--threshold", type=float, default=0.5, help="change probability threshold (default 0.5)")
    parser.add_argument("--no-quicklook", action="store_true", help="do not write quicklook.png")
    args = parser.parse_args(argv)
    dates = args.date1 is not None or args.date2 is not None
    if dates == (args.levircd is not None):
        parser.error("give either --date1 and --date2, or --levircd")
    if dates and (args.date1 is None or args.date2 is None):
        parser.error("--date1 and --date2 go together")
    return args


def _main(argv=None) -> int:
    args = parse_args(argv)
    writable_folder(args.out, "--out")
    predictor = load_predictor(args.model)
    options = dict(window=args.window, stride=args.stride, batch_size=args.batch_size, threshold=args.threshold,
                   bands=args.bands, quicklook=not args.no_quicklook)
    if args.levircd is None:
        outputs = [predict_rasters(predictor, args.date1, args.date2, args.out, **options)]
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
