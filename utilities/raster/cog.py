"""Cloud-Optimized GeoTIFF outputs and probabilities stored as 8-bit integers.

A COG (GDAL's ``COG`` driver) holds its tiles and overviews in the order a reader streams them, so it cannot be
written strip by strip. :func:`cog_dataset` therefore gives a tiled GeoTIFF to write into (a hidden temporary
file next to the output) and, when it is complete, copies it with the COG driver to another temporary name that
is then renamed to the output: 256 x 256 tiles, overviews down to one tile, deflate with the predictor that
suits the data type (horizontal differencing for integers, floating-point prediction for floats), BigTIFF when
the file could exceed 4 GiB. A failed copy (a full disk) leaves no file under the output's name.

Probabilities in [0, 1] are stored as uint8 ``v = floor(254 p)`` (:func:`quantize`) with 255 for pixels without
data, and the band's GDAL scale 1/254 (offset 0), so that GDAL, QGIS and rasterio's ``read(masked=True)``
users read ``p = v / 254`` (:func:`read_scaled` does). Flooring keeps thresholds exact: ``v / 254 >= k / 254``
exactly when ``p >= k / 254``, so the default threshold 0.5 = 127/254 marks the same pixels in the file as
in the float probabilities; a threshold between two steps is within one step (1/254) of it.
"""
from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path
from typing import Any, Dict, Iterator, Tuple, Union

import numpy as np
import rasterio
import rasterio.shutil
from rasterio._err import CPLE_BaseError  # GDAL's errors, which rasterio.shutil.copy raises as they are
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning
from rasterio.io import DatasetWriter

from utilities.atomic import atomic_path, temporary_path, write_error

PathLike = Union[str, os.PathLike]

#: largest stored value of a quantized probability (p = 1) and the value of pixels without data
QUANTIZED_MAX = 254
QUANTIZED_NODATA = 255
#: tile side of the COGs (and of the temporary GeoTIFF written strip by strip)
BLOCK = 256
#: creation options of the COG driver (GDAL >= 3.1) beside the overview resampling
COG_OPTIONS = {"BLOCKSIZE": BLOCK, "COMPRESS": "DEFLATE", "PREDICTOR": "YES", "BIGTIFF": "IF_SAFER",
               "OVERVIEWS": "AUTO"}
#: the temporary GeoTIFF: tiled like the COG, fast compression (it is read once, by the copy)
_STAGING = {"driver": "GTiff", "tiled": True, "blockxsize": BLOCK, "blockysize": BLOCK, "compress": "deflate",
            "zlevel": 1, "bigtiff": "IF_SAFER"}


def quantize(probability: np.ndarray) -> np.ndarray:
    """uint8 ``floor(254 p)`` of probabilities ``p`` (clipped to [0, 1]); NaN becomes :data:`QUANTIZED_NODATA`.

    The product is taken in float64, where ``254 p`` of a float32 ``p`` is exact, so that
    ``quantize(p) >= k`` exactly when ``p >= k / 254``."""
    p = np.asarray(probability, dtype=np.float64)
    values = np.floor(np.clip(p, 0.0, 1.0) * QUANTIZED_MAX)
    return np.where(np.isnan(p), QUANTIZED_NODATA, values).astype(np.uint8)


def dequantize(values: np.ndarray, scale: float, offset: float = 0.0) -> np.ndarray:
    """Float64 ``values * scale + offset``; a scale of 1/n (integer n, e.g. 1/254) divides by n instead, so
    that ``127 * scale`` is exactly 0.5 (``127 * (1/254)`` rounds below it)."""
    values = np.asarray(values, dtype=np.float64)
    steps = 1.0 / scale if scale else 0.0
    if steps and abs(steps - round(steps)) < 1e-6 * steps:
        return values / round(steps) + offset
    return values * scale + offset


def band_scaling(path: PathLike, band: int = 1) -> Tuple[float, float]:
    """``(scale, offset)`` that GDAL declares for a band of the raster ``path`` (``(1, 0)`` when none)."""
    with rasterio.open(path) as src:
        return float(src.scales[band - 1]), float(src.offsets[band - 1])


def read_scaled(path: PathLike, band: int = 1, **kwargs) -> np.ndarray:
    """A band of ``path`` as float64 values with its scale and offset applied, NaN where it has no data
    (``kwargs`` go to ``read``, e.g. ``window``); for a quantized probability, ``p = v / 254``."""
    with rasterio.open(path) as src:
        data = src.read(band, masked=True, **kwargs)
        scale, offset = float(src.scales[band - 1]), float(src.offsets[band - 1])
    values = dequantize(data.data, scale, offset)
    values[np.ma.getmaskarray(data)] = np.nan
    return values


def staging_profile(profile: Dict[str, Any]) -> Dict[str, Any]:
    """``profile`` (size, count, dtype, nodata, crs, transform) as the temporary tiled GeoTIFF's."""
    return {**profile, **_STAGING}


def translate_to_cog(source: PathLike, path: PathLike, resampling: Resampling) -> None:
    """Copy the raster ``source`` to ``path`` as a COG (:data:`COG_OPTIONS`, overviews by ``resampling``),
    atomically.

    Raises
    ------
    WriteError
        The copy failed (e.g. "no space left on device writing PATH").
    """
    path = Path(path)
    with atomic_path(path, suffix=".tif") as tmp, rasterio.Env(GDAL_PAM_ENABLED="NO"):
        try:
            rasterio.shutil.copy(source, tmp, driver="COG", RESAMPLING=resampling.name.upper(), **COG_OPTIONS)
        except CPLE_BaseError as err:
            raise write_error(err, path) from None


@contextlib.contextmanager
def cog_dataset(path: PathLike, profile: Dict[str, Any], resampling: Resampling) -> Iterator[DatasetWriter]:
    """A tiled GeoTIFF open for writing (in any order, e.g. strip by strip) that becomes the COG ``path`` when the
    context ends without error (:func:`translate_to_cog`); on error nothing is left.

    Parameters
    ----------
    path : path
        The COG to write.
    profile : dict
        rasterio's ``height, width, count, dtype, nodata`` and optionally ``crs, transform``.
    resampling : rasterio.enums.Resampling
        How the overviews are computed: ``average`` for continuous maps, ``nearest`` for classes.
    """
    path = Path(path)
    with temporary_path(path, suffix=".tif") as staging, warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)  # a raster without georeferencing stays so
        with rasterio.open(staging, "w", **staging_profile(profile)) as dataset:
            yield dataset
        translate_to_cog(staging, path, resampling)
