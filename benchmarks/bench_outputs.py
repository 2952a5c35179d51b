"""Benchmark of predict.py's output files: size on disk and write time of the change maps in each form.

The maps of a prediction written with ``--probability-dtype float32`` (e.g. the demo's 3072 x 1024 scene) are
read once and written again, strip by strip as predict.py writes them, in three forms:

- ``GeoTIFF float32``: the form before the COGs (tiled 256 x 256 deflate GeoTIFFs, float32 maps, uint8 mask);
- ``COG float32``: ``write_outputs(..., probability_dtype="float32")`` (utilities/inference/tiled.py);
- ``COG uint8``: ``write_outputs(...)``, the default (probabilities as uint8 p = v / 254), and the same with
  ``polygons=True`` (change_polygons.gpkg as well).

For each: the bytes of the four maps (and the GeoPackage) and the median seconds of ``--repeats`` writes.

    python predict.py --model demo_output/selection/ensemble.json --date1 demo_output/data/date1.tif \\
        --date2 demo_output/data/date2.tif --out /tmp/f32 --stride 128 --probability-dtype float32
    python benchmarks/bench_outputs.py /tmp/f32
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

from bench_models import print_header

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
STRIP_ROWS = 64


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prediction", help="a folder of predict.py outputs written with --probability-dtype float32")
    parser.add_argument("--repeats", type=int, default=3, help="writes per form (default 3; the median is shown)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    import numpy as np
    import rasterio
    from rasterio.windows import Window

    from utilities.inference.tiled import OUTPUT_FILES, write_outputs
    from utilities.raster.io import raster_info
    from utilities.raster.tiling import Strip

    args = parse_args(argv)
    folder = Path(args.prediction)
    info = raster_info(folder / OUTPUT_FILES["probability"])
    maps = {}
    for name in ("probability", "boundary", "distance"):
        with rasterio.open(folder / OUTPUT_FILES[name]) as src:
            if src.dtypes[0] != "float32":
                sys.exit(f"{src.name} is {src.dtypes[0]}: predict with --probability-dtype float32")
            maps[name] = src.read(1)
    nodata = np.isnan(maps["probability"])
    outputs = np.stack([np.nan_to_num(maps[n]) for n in ("probability", "boundary", "distance")])
    inputs = np.where(nodata, np.float32(np.nan), np.float32(0))[None]
    print_header(f", {info.width} x {info.height} maps from {folder}")

    def strips():
        for row in range(0, info.height, STRIP_ROWS):
            yield Strip(row, inputs[:, row:row + STRIP_ROWS], outputs[:, row:row + STRIP_ROWS])

    def geotiff_float32(out: Path) -> None:  # predict.py's writer before the COGs, strip by strip
        profile = dict(driver="GTiff", height=info.height, width=info.width, count=1, tiled=True, blockxsize=256,
                       blockysize=256, compress="deflate", crs=info.crs, transform=info.transform)
        mask = np.where(nodata, 255, maps["probability"] >= 0.5).astype(np.uint8)
        arrays = {**maps, "mask": mask}
        for name, file_name in OUTPUT_FILES.items():
            dtype, fill = ("uint8", 255) if name == "mask" else ("float32", np.nan)
            with rasterio.open(out / file_name, "w", dtype=dtype, nodata=fill, **profile) as dst:
                for row in range(0, info.height, 256):
                    part = arrays[name][row:row + 256]
                    dst.write(part[None], window=Window(0, row, info.width, len(part)))

    predictor = SimpleNamespace(channels=1)
    forms = {
        "GeoTIFF float32 (before)": geotiff_float32,
        "COG float32": lambda out: write_outputs(strips(), info, out, predictor, quicklook=False,
                                                 probability_dtype="float32"),
        "COG uint8 (default)": lambda out: write_outputs(strips(), info, out, predictor, quicklook=False),
        "COG uint8 + polygons": lambda out: write_outputs(strips(), info, out, predictor, quicklook=False,
                                                          polygons=True),
    }
    print(f"{'form':<26} {'maps MiB':>9} {'gpkg KiB':>9} {'seconds':>8}  per file MiB")
    for form, write in forms.items():
        seconds = []
        for _ in range(args.repeats):
            with tempfile.TemporaryDirectory() as tmp:
                out = Path(tmp)
                tic = time.perf_counter()
                write(out)
                seconds.append(time.perf_counter() - tic)
                sizes = {name: (out / f).stat().st_size for name, f in OUTPUT_FILES.items()}
                gpkg = out / "change_polygons.gpkg"
                polygons = gpkg.stat().st_size / 1024 if gpkg.exists() else 0.0
        per_file = ", ".join(f"{name} {size / 2**20:.2f}" for name, size in sizes.items())
        print(f"{form:<26} {sum(sizes.values()) / 2**20:>9.2f} {polygons:>9.1f} {statistics.median(seconds):>8.2f}  "
              f"{per_file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
