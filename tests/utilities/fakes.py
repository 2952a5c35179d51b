"""Fake change-detection data written in the real on-disk formats, for tests (no mocked readers).

- :func:`write_levircd_tree`: PNG tiles in the LEVIR-CD layout (``split/{A,B,label}/<name>.png``,
  RGB dates, single-band 0/255 labels);
- :func:`write_geotiff_pair`: a WHU-like pair of GeoTIFFs (``2011.tif``, ``2016.tif``) and a 0/255
  ``label.tif`` on one georeferenced grid;
- :func:`write_mismatched_pair`: a bad input met in LEVIR-CD-like data, two RGBA PNG dates that differ
  in size by one row (384 x 768 and 383 x 768).

Import them as ``from tests.utilities.fakes import write_levircd_tree, write_geotiff_pair``.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Optional, Sequence, Tuple, Union

import cv2
import numpy as np
import rasterio
from affine import Affine
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window

PathLike = Union[str, Path]

#: a UTM 33N grid with 0.3 m pixels (WHU's resolution)
DEFAULT_TRANSFORM = Affine(0.3, 0.0, 500000.0, 0.0, -0.3, 4500000.0)


def fake_label(height: int, width: int, rng: np.random.Generator, n_boxes: int = 3) -> np.ndarray:
    """A uint8 {0, 1} mask with up to ``n_boxes`` random rectangles of change."""
    mask = np.zeros((height, width), dtype=np.uint8)
    for _ in range(n_boxes):
        r, c = rng.integers(0, height), rng.integers(0, width)
        mask[r:r + rng.integers(1, max(2, height // 3)), c:c + rng.integers(1, max(2, width // 3))] = 1
    return mask


def fake_image(height: int, width: int, bands: int, dtype: str, rng: np.random.Generator) -> np.ndarray:
    """A random ``(bands, height, width)`` image covering the range of ``dtype`` (floats in [0, 1))."""
    if np.issubdtype(np.dtype(dtype), np.integer):
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, size=(bands, height, width), endpoint=True, dtype=dtype)
    return rng.random((bands, height, width)).astype(dtype)


def write_png(path: PathLike, image: np.ndarray) -> Path:
    """Write a ``(C, H, W)`` (RGB(A) order) or ``(H, W)`` image as PNG with OpenCV (which wants BGR(A))."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if image.ndim == 3:
        image = image.transpose(1, 2, 0)
        if image.shape[2] >= 3:
            image = image[:, :, [2, 1, 0, *range(3, image.shape[2])]]
    if not cv2.imwrite(str(path), np.ascontiguousarray(image)):
        raise OSError(f"cv2.imwrite failed for {path}")
    return path


def write_levircd_tree(root: PathLike, splits: Optional[Sequence[str]] = ("train", "val", "test"), n: int = 2,
                       size: int = 64, seed: int = 0) -> Path:
    """Write a fake LEVIR-CD data set of PNG tiles.

    Parameters
    ----------
    root : path
        Where to write. Official layout ``root/<split>/{A,B,label}/<split>_<i>.png`` (i = 1..n); with
        ``splits=None`` the flat layout ``root/{A,B,label}/tile_<i>.png`` (like the shared samples).
    splits : sequence of str or None
    n : int
        Tiles per split.
    size : int
        Tile side (the real tiles are 1024).
    seed : int

    Returns
    -------
    Path
        ``root``.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    for split in splits or (None,):
        folder = root if split is None else root / split
        for i in range(1, n + 1):
            name = f"{split or 'tile'}_{i}.png"
            write_png(folder / "A" / name, fake_image(size, size, 3, "uint8", rng))
            write_png(folder / "B" / name, fake_image(size, size, 3, "uint8", rng))
            write_png(folder / "label" / name, fake_label(size, size, rng) * np.uint8(255))
    return root


def write_geotiff(path: PathLike, image: np.ndarray, crs: Optional[str] = "EPSG:32633",
                  transform: Optional[Affine] = DEFAULT_TRANSFORM, nodata: Optional[float] = None) -> Path:
    """Write a ``(C, H, W)`` array as a GeoTIFF (``crs=None, transform=None``: not georeferenced)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    profile = dict(driver="GTiff", height=image.shape[1], width=image.shape[2], count=image.shape[0],
                   dtype=image.dtype.name, nodata=nodata)
    if crs is not None:
        profile["crs"] = crs
    if transform is not None:
        profile["transform"] = transform
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(image)
    return path


def write_geotiff_pair(folder: PathLike, height: int, width: int, bands: int = 3, crs: Optional[str] = "EPSG:32633",
                       transform: Optional[Affine] = DEFAULT_TRANSFORM, dtype: str = "uint8",
                       nodata: Optional[float] = None, with_label: bool = True,
                       seed: int = 0) -> Tuple[Path, Path, Optional[Path]]:
    """Write a WHU-like pair of co-registered GeoTIFFs and their change label.

    Parameters
    ----------
    folder : path
        Receives ``2011.tif``, ``2016.tif`` and (``with_label``) ``label.tif`` (uint8, 0/255).
    height, width, bands : int
    crs : str or None
        e.g. ``"EPSG:32633"``; None writes no CRS.
    transform : affine.Affine or None
        The pixel-to-map geotransform (default: 0.3 m pixels in UTM 33N).
    dtype : str
        Pixel type of the dates (random values over the type's range; floats in [0, 1)).
    nodata : float, optional
        Declared nodata value of the dates.
    with_label : bool
    seed : int

    Returns
    -------
    (Path, Path, Path or None)
        date 1, date 2, label.
    """
    folder = Path(folder)
    rng = np.random.default_rng(seed)
    paths = [write_geotiff(folder / f"{year}.tif", fake_image(height, width, bands, dtype, rng), crs, transform, nodata)
             for year in (2011, 2016)]
    label = None
    if with_label:
        mask = fake_label(height, width, rng)[None] * np.uint8(255)
        label = write_geotiff(folder / "label.tif", mask, crs, transform)
    return paths[0], paths[1], label


def fill_window(path: PathLike, window: Tuple[int, int, int, int], value: float,
                bands: Optional[Sequence[int]] = None) -> Path:
    """Overwrite the pixels of ``window`` ``(row, col, height, width)`` of an existing GeoTIFF with
    ``value`` (e.g. NaN, inf or the nodata value) in ``bands`` (1-based; default: all), in place."""
    path = Path(path)
    row, col, height, width = window
    with rasterio.open(path, "r+") as dst:
        for band in bands or range(1, dst.count + 1):
            dst.write(np.full((height, width), value, dtype=dst.dtypes[band - 1]), band,
                      window=Window(col, row, width, height))
    return path


#: the gaps of :func:`write_pair_with_gaps`: (date 0 or 1, window (row, col, height, width), value, bands)
GAP_NODATA = -9999.0
GAPS = ((0, (20, 20, 5, 5), float("nan"), None), (1, (70, 5, 3, 3), float("inf"), None),
        (1, (60, 60, 2, 2), float("-inf"), [3]), (0, (5, 80, 2, 2), GAP_NODATA, None))


def write_pair_with_gaps(folder: PathLike, height: int = 96, width: int = 96,
                         seed: int = 0) -> Tuple[Path, Path, Optional[Path]]:
    """A float32 pair (:func:`write_geotiff_pair`, nodata :data:`GAP_NODATA`) with the gaps of :data:`GAPS`:
    NaN, +inf, -inf (-inf in one band) and the nodata value (in every band: pixels without data, as GDAL's
    dataset mask has it) in parts of the dates."""
    paths = write_geotiff_pair(folder, height, width, dtype="float32", nodata=GAP_NODATA, seed=seed)
    for date, window, value, bands in GAPS:
        fill_window(paths[date], window, value, bands)
    return paths


#: (rows, cols) of the two dates of :func:`write_mismatched_pair`
MISMATCHED_SHAPES = ((384, 768), (383, 768))


def write_mismatched_pair(folder: PathLike, seed: int = 0) -> Tuple[Path, Path]:
    """Write ``A.png`` and ``B.png``: RGBA dates of :data:`MISMATCHED_SHAPES` (one row apart), as a
    co-registration gone wrong produces them; returns their paths."""
    folder = Path(folder)
    rng = np.random.default_rng(seed)
    return tuple(write_png(folder / name, fake_image(rows, cols, 4, "uint8", rng))
                 for name, (rows, cols) in zip(("A.png", "B.png"), MISMATCHED_SHAPES))


def write_masked_rgb(path: PathLike, image: np.ndarray, nodata: Optional[float] = None,
                     mask: Optional[np.ndarray] = None) -> Path:
    """A georeferenced uint8 RGB GeoTIFF ``(3, H, W)`` with declared ``nodata``, and an internal mask band
    (0 = no data) when ``mask`` is given."""
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True):
        with rasterio.open(path, "w", driver="GTiff", height=image.shape[1], width=image.shape[2], count=3,
                           dtype="uint8", crs="EPSG:32633", transform=DEFAULT_TRANSFORM, nodata=nodata) as dst:
            dst.write(image)
            if mask is not None:
                dst.write_mask(mask)
    return Path(path)
