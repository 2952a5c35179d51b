"""Reading and validating the rasters of a change-detection sample (paper Sections 8.1-8.3).

Two readers, chosen by the file suffix:

- GeoTIFF (``.tif``, ``.tiff``) and GDAL VRT (``.vrt``, e.g. a date of band files,
  :mod:`utilities.raster.bands`) through rasterio (GDAL): keeps the georeferencing (CRS, geotransform,
  nodata) and reads windows of large rasters (the WHU pair, Section 8.2) without loading them whole;
- PNG and JPEG (``.png``, ``.jpg``, ``.jpeg``, e.g. LEVIR-CD, Section 8.1) through OpenCV, all bands
  kept (RGBA has 4) and converted from OpenCV's BGR(A) order to RGB(A). These formats carry no
  georeferencing here.

Images are returned band-first, ``(C, H, W)``, in the file's data type. Windows are
``(row, col, height, width)`` in pixels; band indices are 1-based (the rasterio convention).
Every problem with an input raises :class:`~utilities.errors.InputError` with a one-line message
naming the file(s); nothing is ever cropped or padded to make inputs fit.

Pixels without data follow GDAL's meaning (:func:`valid_mask`): a GeoTIFF's nodata value is per band,
and a pixel is missing where the file's dataset mask says so: where every band holds its nodata value,
or where the mask band (an internal or ``.msk`` mask, an alpha band) is 0 when the file has one. A pixel
with data in some bands keeps all its values. On top of that, a pixel with a NaN or infinite value in
any band is missing (:func:`nodata_mask`): no network can take it. PNG and JPEG pixels all hold data.
"""
from __future__ import annotations

import math
import os
import sys
import tempfile
import threading
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import ColorInterp, MaskFlags
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.windows import Window

from utilities.errors import InputError

PathLike = Union[str, os.PathLike]
#: ``(row, col, height, width)`` of a rectangle of pixels.
PixelWindow = Tuple[int, int, int, int]

#: two geotransforms are the same grid when they map the raster's corners to points closer than
#: this fraction of a pixel.
TRANSFORM_TOLERANCE = 0.01
#: colour interpretations (as GDAL reports them) for which OpenCV's ``IMREAD_UNCHANGED`` returns
#: the same number of bands as GDAL: the header is then enough for :func:`raster_info`. Others
#: (palette, grey + alpha) are expanded by OpenCV and are decoded once to count their bands.
_PLAIN_COLOURS = {
    (ColorInterp.gray,),
    (ColorInterp.red, ColorInterp.green, ColorInterp.blue),
    (ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha),
}
_MAX_LISTED_VALUES = 10
_STDERR_LOCK = threading.Lock()


@dataclass(frozen=True)
class RasterInfo:
    """What a raster is, read from its header.

    Attributes
    ----------
    height, width : int
        Rows and columns.
    count : int
        Number of bands, as :func:`read_image` returns them (RGBA PNG: 4).
    dtype : str
        NumPy name of the pixel type, e.g. ``"uint8"``.
    crs : rasterio.crs.CRS or None
        Coordinate reference system; None for PNG/JPEG and non-georeferenced TIFFs.
    transform : affine.Affine or None
        Pixel-to-map geotransform; None when the raster is not georeferenced.
    nodata : float or None
        The nodata value declared for the file's first band, if any.
    mask : str or None
        How the file marks pixels without data (:func:`valid_mask`), for messages: ``"nodata 0"`` (the
        bands' declared values), ``"a mask band"``, ``"an alpha band"``; None when every pixel holds data.
    """

    height: int
    width: int
    count: int
    dtype: str
    crs: Optional[CRS] = None
    transform: Optional[Affine] = None
    nodata: Optional[float] = None
    mask: Optional[str] = None


def _one_line(error: Exception) -> str:
    """A library's error message as one line without a trailing full stop."""
    return " ".join(str(error).split()).rstrip(".")


def _existing_file(path: PathLike) -> Path:
    path = Path(path)
    if not path.exists():
        raise InputError(f"file not found: {path}.")
    if not path.is_file():
        raise InputError(f"not a file: {path}.")
    return path


def _check_bands(path: Path, bands: Optional[Sequence[int]], count: int) -> Optional[list]:
    if bands is None:
        return None
    bands = list(bands)
    if not bands:
        raise InputError(f"no bands selected from {path}: give at least one 1-based band index.")
    for band in bands:
        if isinstance(band, bool) or not isinstance(band, (int, np.integer)) or not 1 <= band <= count:
            raise InputError(f"cannot select band {band!r} of {path}: it has {count} band(s) "
                             f"and band indices are 1-based.")
    return [int(b) for b in bands]


def _check_window(path: Path, window: Optional[PixelWindow], height: int, width: int) -> Optional[PixelWindow]:
    if window is None:
        return None
    row, col, rows, cols = (int(v) for v in window)
    if rows < 1 or cols < 1 or row < 0 or col < 0 or row + rows > height or col + cols > width:
        raise InputError(f"window (row, col, height, width) = {(row, col, rows, cols)} does not lie inside "
                         f"{path}, which is {height}x{width} (rows x cols).")
    return row, col, rows, cols


@contextmanager
def _captured_stderr() -> Iterator[List[str]]:
    """Collect the lines C libraries print on file descriptor 2 meanwhile (libpng's warnings and errors,
    which OpenCV lets it print): a bad image then gives one message, ours, naming the file. One thread at a
    time: file descriptor 2 is the process's."""
    lines: List[str] = []
    with _STDERR_LOCK, tempfile.TemporaryFile() as capture:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(capture.fileno(), 2)
        try:
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            lines.extend(capture.read().decode(errors="replace").splitlines())


@contextmanager
def _open_raster(path: Path) -> Iterator[rasterio.DatasetReader]:
    """Open with rasterio, turning its errors into :class:`InputError` naming the file."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as src:
                yield src
    except (RasterioError, OSError) as error:  # RasterioIOError is an OSError, not a RasterioError
        raise InputError(f"cannot read raster {path}: {_one_line(error)}.") from None


def _mask_source(src: rasterio.DatasetReader) -> Optional[str]:
    """What GDAL's dataset mask of ``src`` comes from, in GDAL's order of precedence; None: every pixel is valid."""
    flags = [set(band) for band in src.mask_flag_enums]
    if all(MaskFlags.all_valid in band for band in flags):
        return None
    if any(MaskFlags.alpha in band for band in flags):
        return "an alpha band"
    if any(MaskFlags.per_dataset in band for band in flags):
        return "a mask band"
    values = sorted({f"{v:g}" for v in src.nodatavals if v is not None})
    return f"nodata {values[0]}" if len(values) == 1 else f"nodata {', '.join(values)} (per band)"


class _GeoTIFF:
    """GeoTIFF through rasterio: windowed reads, georeferencing kept."""

    @staticmethod
    def info(path: Path) -> RasterInfo:
        with _open_raster(path) as src:
            georeferenced = src.crs is not None or not src.transform.is_identity
            return RasterInfo(height=src.height, width=src.width, count=src.count, dtype=src.dtypes[0],
                              crs=src.crs, transform=src.transform if georeferenced else None, nodata=src.nodata,
                              mask=_mask_source(src))

    @staticmethod
    def read(path: Path, bands: Optional[Sequence[int]], window: Optional[PixelWindow]) -> np.ndarray:
        with _open_raster(path) as src:
            bands = _check_bands(path, bands, src.count)
            window = _check_window(path, window, src.height, src.width)
            return src.read(indexes=bands, window=_rio_window(window))

    @staticmethod
    def valid(path: Path, window: Optional[PixelWindow]) -> np.ndarray:
        with _open_raster(path) as src:
            window = _check_window(path, window, src.height, src.width)
            if _mask_source(src) is None:
                return np.ones((src.height, src.width) if window is None else window[2:], dtype=bool)
            return src.dataset_mask(window=_rio_window(window)) > 0

    @staticmethod
    def sample(path: Path, bands: Optional[Sequence[int]], max_side: int) -> Tuple[np.ndarray, np.ndarray]:
        with _open_raster(path) as src:
            bands = _check_bands(path, bands, src.count)
            step = _sample_step(src.height, src.width, max_side)
            masked = _mask_source(src) is not None
            images, valid = [], []
            for row in range(0, src.height, step):  # a row at a time: memory of the sample
                window = Window(0, row, src.width, 1)
                images.append(src.read(indexes=bands, window=window)[:, :, ::step])
                valid.append(src.dataset_mask(window=window)[:, ::step] > 0 if masked
                             else np.ones((1, images[-1].shape[2]), dtype=bool))
            return np.concatenate(images, axis=1), np.concatenate(valid)


def _rio_window(window: Optional[PixelWindow]) -> Optional[Window]:
    return None if window is None else Window(window[1], window[0], window[3], window[2])


def _sample_step(height: int, width: int, max_side: int) -> int:
    """The smallest step between sampled rows and columns that keeps at most ``max_side`` of each."""
    return -(-max(height, width) // max_side)


class _OpenCVImage:
    """PNG / JPEG through OpenCV, BGR(A) converted to RGB(A); no georeferencing."""

    @staticmethod
    def decode(path: Path) -> np.ndarray:
        # imdecode(fromfile) rather than imread: works for any path encoding.
        data = np.fromfile(path, dtype=np.uint8)
        with _captured_stderr() as printed:  # only around the decoding in memory: it cannot block
            try:
                image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
            except cv2.error:
                image = None
        if image is None:
            errors = [line.split(" error: ", 1)[1] for line in printed if " error: " in line]
            reason = f" ({_one_line(errors[-1])})" if errors else ""
            raise InputError(f"cannot read image {path}: the file is empty, corrupt or not a "
                             f"{path.suffix.lstrip('.').upper()} image{reason}.")
        if image.ndim == 2:
            return image[None]
        image = image.transpose(2, 0, 1)
        if image.shape[0] >= 3:
            image = image[[2, 1, 0, *range(3, image.shape[0])]]
        return np.ascontiguousarray(image)

    @classmethod
    def info(cls, path: Path) -> RasterInfo:
        # GDAL reads the header only (ms instead of tens of ms for decoding a 1024x1024 PNG).
        try:
            with _open_raster(path) as src:
                if tuple(src.colorinterp) in _PLAIN_COLOURS:
                    return RasterInfo(height=src.height, width=src.width, count=src.count, dtype=src.dtypes[0])
        except InputError:
            pass  # decoding below says what is wrong with the image
        image = cls.decode(path)
        return RasterInfo(height=image.shape[1], width=image.shape[2], count=image.shape[0], dtype=image.dtype.name)

    @classmethod
    def read(cls, path: Path, bands: Optional[Sequence[int]], window: Optional[PixelWindow]) -> np.ndarray:
        image = cls.decode(path)
        bands = _check_bands(path, bands, image.shape[0])
        window = _check_window(path, window, image.shape[1], image.shape[2])
        if bands is not None:
            image = image[[b - 1 for b in bands]]
        if window is not None:
            row, col, rows, cols = window
            image = np.ascontiguousarray(image[:, row:row + rows, col:col + cols])
        return image

    @classmethod
    def valid(cls, path: Path, window: Optional[PixelWindow]) -> np.ndarray:
        info = cls.info(path)
        window = _check_window(path, window, info.height, info.width)
        return np.ones((info.height, info.width) if window is None else window[2:], dtype=bool)

    @classmethod
    def sample(cls, path: Path, bands: Optional[Sequence[int]], max_side: int) -> Tuple[np.ndarray, np.ndarray]:
        image = cls.read(path, bands, None)
        step = _sample_step(image.shape[1], image.shape[2], max_side)
        image = np.ascontiguousarray(image[:, ::step, ::step])
        return image, np.ones(image.shape[1:], dtype=bool)


#: file suffix -> reader
_READERS = {".tif": _GeoTIFF, ".tiff": _GeoTIFF, ".vrt": _GeoTIFF, ".png": _OpenCVImage, ".jpg": _OpenCVImage,
            ".jpeg": _OpenCVImage}


def _reader(path: PathLike) -> Tuple[Path, type]:
    path = _existing_file(path)
    reader = _READERS.get(path.suffix.lower())
    if reader is None:
        raise InputError(f"unsupported image format of {path}: expected one of {', '.join(_READERS)}.")
    return path, reader


def read_image(path: PathLike, bands: Optional[Sequence[int]] = None,
               window: Optional[PixelWindow] = None) -> np.ndarray:
    """Read an image as ``(C, H, W)`` in the file's data type.

    Parameters
    ----------
    path : str or PathLike
        A GeoTIFF (read with rasterio) or a PNG / JPEG (read with OpenCV, RGB(A) band order).
    bands : sequence of int, optional
        1-based indices of the bands to return, in that order (default: all bands).
    window : (row, col, height, width), optional
        Read only this rectangle (GeoTIFFs read it from disk without loading the rest).

    Returns
    -------
    numpy.ndarray
        ``(C, H, W)``. NaN and infinite values of float rasters are kept (see :func:`nodata_mask`).

    Raises
    ------
    InputError
        Missing, unreadable or corrupt file; unsupported suffix; band index out of range (the message
        gives the file's band count); window not inside the raster.
    """
    path, reader = _reader(path)
    return reader.read(path, bands, window)


def _format_values(values: np.ndarray) -> str:
    listed = [v.item() for v in values[:_MAX_LISTED_VALUES]]
    if len(values) <= _MAX_LISTED_VALUES:
        return str(listed)
    return f"{str(listed)[:-1]}, ...] ({len(values)} distinct values)"


def read_label(path: PathLike, window: Optional[PixelWindow] = None) -> np.ndarray:
    """Read a binary change label as ``(H, W)`` uint8 in {0, 1} (1 = change).

    Accepted: one band with values in {0, 1} or in {0, 255} (LEVIR-CD and WHU store 0/255), or three
    identical bands (a grey label saved as RGB).

    Parameters
    ----------
    path : str or PathLike
        Label raster (PNG or GeoTIFF).
    window : (row, col, height, width), optional
        Read only this rectangle.

    Raises
    ------
    InputError
        The file cannot be read, has several different bands, or is not binary (the message lists
        the values found).
    """
    image = read_image(path, window=window)
    band = image[0]
    if image.shape[0] != 1 and not (image.shape[0] == 3 and np.array_equal(band, image[1])
                                    and np.array_equal(band, image[2])):
        raise InputError(f"label {path} has {image.shape[0]} bands that differ: a label needs one band "
                         f"(or three identical ones).")
    values = np.unique(band)
    for background, change in ((0, 1), (0, 255)):
        if np.isin(values, (background, change)).all():
            return (band == change).astype(np.uint8)
    raise InputError(f"label {path} is not binary: values {_format_values(values)}; expected 0/1 or 0/255.")


def raster_info(path: PathLike) -> RasterInfo:
    """Size, band count, data type and georeferencing of a raster, from its header.

    GeoTIFF headers are read with rasterio; PNG/JPEG headers with GDAL's drivers when OpenCV would
    return the same bands (grey, RGB, RGBA), otherwise the image is decoded once with OpenCV.

    Raises
    ------
    InputError
        Missing, unreadable or unsupported file.
    """
    path, reader = _reader(path)
    return reader.info(path)


def _describe_crs(crs: Optional[CRS]) -> str:
    return "no CRS" if crs is None else crs.to_string()


def _describe_transform(transform: Optional[Affine]) -> str:
    if transform is None:
        return "no geotransform"
    coefficients = ", ".join(f"{v:.10g}" for v in transform[:6])
    return f"geotransform ({coefficients})"


def _same_transform(first: Affine, second: Affine, height: int, width: int) -> bool:
    """Both geotransforms put the raster's four corners within ``TRANSFORM_TOLERANCE`` pixel."""
    def to_map(t: Affine, col: int, row: int) -> Tuple[float, float]:
        return t.a * col + t.b * row + t.c, t.d * col + t.e * row + t.f

    tolerance = TRANSFORM_TOLERANCE * math.sqrt(abs(first.determinant))
    corners = ((0, 0), (width, 0), (0, height), (width, height))
    return all(math.dist(to_map(first, *corner), to_map(second, *corner)) <= tolerance for corner in corners)


def _check_same_grid(what: str, path1: PathLike, first: RasterInfo, path2: PathLike, second: RasterInfo) -> None:
    if (first.height, first.width) != (second.height, second.width):
        raise InputError(f"{what} differ in size: {path1} is {first.height}x{first.width} (rows x cols) "
                         f"but {path2} is {second.height}x{second.width}.")
    same_crs = first.crs == second.crs if first.crs is not None and second.crs is not None else first.crs is second.crs
    if not same_crs:
        raise InputError(f"{what} differ in CRS: {path1} has {_describe_crs(first.crs)} "
                         f"but {path2} has {_describe_crs(second.crs)}.")
    if first.transform is None and second.transform is None:
        return
    if (first.transform is None or second.transform is None
            or not _same_transform(first.transform, second.transform, first.height, first.width)):
        raise InputError(f"{what} are not on the same pixel grid: {path1} has {_describe_transform(first.transform)} "
                         f"but {path2} has {_describe_transform(second.transform)}.")


def check_pair(path1: PathLike, path2: PathLike, label_path: Optional[PathLike] = None) -> RasterInfo:
    """Check that two dates (and their label) are co-registered rasters of the same grid.

    Required: the same height and width for all files; the same band count and data type for the two
    dates; for georeferenced inputs the same CRS and geotransform (corners within
    ``TRANSFORM_TOLERANCE`` of a pixel). Nothing is cropped or padded.

    Parameters
    ----------
    path1, path2 : str or PathLike
        Date 1 and date 2 images.
    label_path : str or PathLike, optional
        The change label.

    Returns
    -------
    RasterInfo
        The header of date 1 (which all files share).

    Raises
    ------
    InputError
        Naming both files and the two differing values.
    """
    first, second = raster_info(path1), raster_info(path2)
    _check_same_grid("date images", path1, first, path2, second)
    if first.count != second.count:
        raise InputError(f"date images differ in band count: {path1} has {first.count} bands "
                         f"but {path2} has {second.count}.")
    if first.dtype != second.dtype:
        raise InputError(f"date images differ in data type: {path1} is {first.dtype} but {path2} is {second.dtype}.")
    if label_path is not None:
        _check_same_grid("date image and label", path1, first, label_path, raster_info(label_path))
    return first


def check_grid(what: str, path1: PathLike, path2: PathLike) -> RasterInfo:
    """Check that two rasters share their height, width, CRS and geotransform (as :func:`check_pair` does).

    Returns
    -------
    RasterInfo
        The header of ``path1``.

    Raises
    ------
    InputError
        ``"<what> differ in ..."``, naming both files and the two differing values.
    """
    first = raster_info(path1)
    _check_same_grid(what, path1, first, path2, raster_info(path2))
    return first


def valid_mask(path: PathLike, window: Optional[PixelWindow] = None) -> np.ndarray:
    """GDAL's dataset mask of a raster: True where the pixel holds data (see the module docstring).

    Computed by GDAL over all the file's bands, whichever are read: a pixel is without data where every band
    holds its declared nodata value, or where the file's mask band or alpha band is 0. PNG and JPEG: all True.

    Parameters
    ----------
    path : str or PathLike
    window : (row, col, height, width), optional
        Only this rectangle (read from disk without the rest).

    Returns
    -------
    numpy.ndarray
        bool ``(H, W)`` of the raster or window.

    Raises
    ------
    InputError
        As :func:`read_image`.
    """
    path, reader = _reader(path)
    return reader.valid(path, window)


def read_sample(path: PathLike, bands: Optional[Sequence[int]] = None,
                max_side: int = 1024) -> Tuple[np.ndarray, np.ndarray]:
    """Every ``step``-th row and column of a raster, from the first (``step`` as small as keeps at most
    ``max_side`` of each), with the pixels that hold data: a cheap, unbiased look at a large raster's values.

    GeoTIFFs are read a sampled row at a time, so that memory stays that of the sample; PNG and JPEG are
    decoded whole.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        The sample ``(C, h, w)`` in the file's data type, and bool ``(h, w)``: True where the pixel holds
        data (:func:`valid_mask`, and finite in every band).

    Raises
    ------
    InputError
        As :func:`read_image`.
    """
    path, reader = _reader(path)
    image, valid = reader.sample(path, bands, max_side)
    return image, ~nodata_mask(image, valid)


def nodata_mask(image: np.ndarray, valid: Optional[np.ndarray] = None) -> np.ndarray:
    """Pixels without data: False in ``valid`` (the file's :func:`valid_mask`), or not finite (NaN, +inf,
    -inf) in any band.

    Parameters
    ----------
    image : numpy.ndarray
        ``(C, H, W)`` (or ``(H, W)``, one band).
    valid : numpy.ndarray, optional
        bool ``(H, W)``, the raster's :func:`valid_mask` over the same pixels. NaN and infinite values are
        always masked (no sensor measures an infinite radiance: they are fill values or overflows, and no
        network can take them).

    Returns
    -------
    numpy.ndarray
        bool ``(H, W)``.
    """
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[None]
    if image.ndim != 3:
        raise ValueError(f"nodata_mask: expected a (C, H, W) image, got shape {image.shape}")
    mask = np.zeros(image.shape[1:], dtype=bool) if valid is None else ~np.asarray(valid, dtype=bool)
    if image.dtype.kind == "f":
        mask |= ~np.isfinite(image).all(axis=0)
    return mask
