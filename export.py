"""Export a trained mantis model to ONNX and check it against MXNet with onnxruntime.

    python export.py --model runs/levir/checkpoints/epoch_0042.params --out levir.onnx
    python export.py --model runs/levir/ensemble_params.json --out levir.onnx --size 256

The graph takes the standardised date images ``date1, date2`` (batch, bands, size, size) and returns
``segmentation, boundary, distance``; the per-band mean/std to standardise with are written beside it as
``<name>.json``, and its model card (a STAC Machine-Learning-Model item: bands, normalisation, input size,
outputs, framework, fidelity; also in the ONNX file's metadata) as ``<name>.stac.json``. An ensemble file
exports as its mode says: ``parameters``, the one averaged network; ``outputs``, one graph running every member
and averaging their outputs (paper Section 8.5.2).
Exit status: 0 exported and parity within the tolerance; 1 not exportable or parity above the tolerance
(nothing written); 2 unusable input.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional, Sequence

from utilities.artifacts.export import TOLERANCE, ExportError, export_onnx
from utilities.atomic import writable_folder
from utilities.cli import entry_point
from utilities.errors import InputError


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="checkpoint (.params/.json), run directory or ensemble JSON")
    parser.add_argument("--out", required=True, help="the .onnx file to write")
    parser.add_argument("--size", type=int, default=256, help="input height and width (default 256, the paper's "
                                                               "inference window)")
    parser.add_argument("--batch", type=int, default=1, help="batch size of the graph (default 1)")
    parser.add_argument("--tolerance", type=float, default=TOLERANCE,
                        help=f"largest accepted |onnxruntime - MXNet| per output (default {TOLERANCE:g})")
    return parser.parse_args(argv)


def _main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    if out.is_dir():
        raise InputError(f"cannot write to --out {out}: it is a folder, not a file")
    writable_folder(out.parent, "the folder of --out")
    report = export_onnx(args.model, args.out, size=args.size, batch=args.batch, tolerance=args.tolerance)
    members = f", {report.members} members averaged in the graph" if report.members > 1 else ""
    print(f"wrote {report.model_file} (opset {report.opset}, input {list(report.input_shape)}{members}) and "
          f"{report.normalization_file}, model card {report.card_file}")
    print("parity |onnxruntime - MXNet| max: " + json.dumps(report.max_abs_diff) + f" <= {report.tolerance:g}")
    return 0


main = entry_point(_main, {InputError: 2, ExportError: 1})

if __name__ == "__main__":
    sys.exit(main())
