"""Change maps of large rasters by tiled inference (paper Section 8.5.1), written as GeoTIFFs.

:func:`predict_rasters` predicts a pair of co-registered date images with overlapping windows
(256 x 256, stride 64, reflect padding at the borders, per-pixel average of the windows' probabilities;
see :mod:`utilities.raster.tiling`), streaming the rasters strip by strip so that memory does not grow with
their size, and writes to ``out_dir``:

- ``change_probability.tif``: the averaged probability p of class 1 (change), by default as uint8
  ``floor(254 p)`` with GDAL scale 1/254 and nodata 255 (:func:`~utilities.raster.cog.quantize`), or float32
  with NaN nodata (``probability_dtype="float32"``);
- ``change_mask.tif``: uint8, 1 where that probability is >= ``threshold``, else 0; nodata 255;
- ``boundary.tif``, ``distance.tif``: the averaged class-1 boundary and distance maps of the multitask head
  (Section 6.3), stored as the probability is;
- ``change_polygons.gpkg`` (optional): one polygon per connected change region of the mask, with its area,
  pixel count, mean and maximum probability (:mod:`utilities.inference.polygons`);
- ``quicklook.png`` (optional): date 1 | date 2 | change (date 2 in grey, the change mask in magenta),
  at most 2048 pixels on its long side (:func:`shrink_by_area`, any size down to 1 x 1).

Dates unlike the model's training images (another data type, band means far from the training's) are
refused or warned about first (:mod:`utilities.inference.input_check`).

The GeoTIFFs are Cloud-Optimized GeoTIFFs (:mod:`utilities.raster.cog`: 256 x 256 tiles, overviews,
deflate with a predictor) and carry the input's CRS and geotransform;
PNG/JPEG inputs have none, and neither have their outputs. Pixels without data in either date (as GDAL's
dataset mask has them: every band at its declared nodata value, or 0 in the file's mask or alpha band; or
NaN / infinite in a band, :func:`read_date`) are nodata in every output (255, or NaN in float32 maps); a
pixel with only some bands at the nodata value holds data and is predicted from its values. Before
prediction, pixels without data are filled with the model's training mean of their band (a neutral input:
0 after the model's standardisation), so they do not disturb the valid pixels around them more than
necessary. Every file is written under a temporary name and renamed when complete: an interrupted run
leaves no file that looks finished.
"""
from __future__ import annotations

import contextlib
import functools
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import cv2
import numpy as np
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.windows import Window

from utilities.artifacts.model_io import Predictor
from utilities.atomic import atomic_path, writable_folder, write_error
from utilities.data.datasets import levircd_samples
from utilities.errors import InputError
from utilities.inference.input_check import check_inputs
from utilities.inference.polygons import POLYGONS_FILE, check_min_area, polygon_writer
from utilities.progress import progress as progress_bar
from utilities.raster.cog import BLOCK, QUANTIZED_MAX, QUANTIZED_NODATA, cog_dataset, quantize
from utilities.raster.io import (
    PathLike,
    PixelWindow,
    RasterInfo,
    check_pair,
    nodata_mask,
    read_image,
    valid_mask,
)
from utilities.raster.tiling import RowReader, Strip, Tiling, check_window, stream_strips

#: output name -> file name
OUTPUT_FILES = {"probability": "change_probability.tif", "mask": "change_mask.tif",
                "boundary": "boundary.tif", "distance": "distance.tif"}
QUICKLOOK_FILE = "quicklook.png"
#: the model's outputs, in order; each has one map per class
HEADS = ("segmentation", "boundary", "distance")
#: ``predict(forward, read, height, width)``: the :class:`~utilities.raster.tiling.Strip` s of a pair of dates
#: whose stacked rows ``read`` gives (:func:`pair_rows`), predicted by ``forward`` (a :class:`WindowForward`,
#: whose :meth:`~WindowForward.heads` splits the strips' outputs)
StripPredictFn = Callable[["WindowForward", RowReader, int, int], Iterator[Strip]]
MASK_NODATA = QUANTIZED_NODATA
#: how the probability, boundary and distance maps can be stored (the first is the default)
PROBABILITY_DTYPES = ("uint8", "float32")
#: the band description of each output (what QGIS shows)
_DESCRIPTIONS = {"probability": "change probability", "mask": "change mask (1 change, 0 no change)",
                 "boundary": "change boundary probability", "distance": "change distance map (class 1)"}
#: overviews: continuous maps averaged, the mask's classes kept
_OVERVIEWS = {"probability": Resampling.average, "mask": Resampling.nearest, "boundary": Resampling.average,
              "distance": Resampling.average}
QUICKLOOK_SIDE = 2048
#: formats read whole (small by nature); GeoTIFFs are read in windows of rows
_WHOLE_FORMATS = {".png", ".jpg", ".jpeg"}
#: quick-look colours of non-8-bit images: the model's training mean +- this many standard deviations
_STRETCH = 2.0
#: the quick-look's panels, and the colour of predicted change over the grey date 2 of the last one
_PANELS = ("date 1", "date 2", "change")
_CHANGE_COLOUR = np.array([255, 0, 255], dtype=np.float32)
_GAP = 4  # white pixels between the quick-look's panels


def select_bands(path: PathLike, count: int, bands: Optional[Sequence[int]], channels: int) -> List[int]:
    """The 1-based bands to read: ``bands``, else all ``count`` bands; there must be ``channels`` of them.

    Raises
    ------
    InputError
        Naming the file, the bands selected, its band count and the model's.
    """
    selected = list(range(1, count + 1)) if bands is None else [int(b) for b in bands]
    if len(selected) != channels:
        raise InputError(f"the model takes {channels} band(s) but {len(selected)} would be read from {path} "
                         f"(bands {selected} of its {count}): choose {channels} with --bands.")
    return selected


class RasterRows:
    """Rows of a region of a raster, ``read(row0, row1) -> (..., row1 - row0, width)`` relative to the region.

    GeoTIFFs are read a window at a time; PNG/JPEG (small by nature, and not readable by windows) are
    decoded once. A GeoTIFF's first and last pixels are read at once, so that a truncated or corrupt file
    is refused before any output exists rather than half-way through.

    Parameters
    ----------
    path : Path
    read : callable
        ``read(path, window=(row, col, height, width)) -> array``, e.g. :func:`~utilities.raster.io.read_label`.
    region : (row, col, height, width)
        The rectangle of the raster to read.
    """

    def __init__(self, path: Path, read: Callable[..., np.ndarray], region: PixelWindow):
        self.path, self.read, self.region = path, read, region
        row, col, rows, cols = region
        self.image = None
        if path.suffix.lower() in _WHOLE_FORMATS:
            self.image = read(path, window=region)
        else:
            for corner in ((row, col), (row + rows - 1, col + cols - 1)):
                read(path, window=(*corner, 1, 1))

    def __call__(self, row0: int, row1: int) -> np.ndarray:
        if self.image is not None:
            return self.image[..., row0:row1, :]
        row, col, _, cols = self.region
        return self.read(self.path, window=(row + row0, col, row1 - row0, cols))


def read_date(path: Path, bands: Sequence[int], window: PixelWindow) -> np.ndarray:
    """A window of a date image as float32 ``(C, h, w)``, NaN in every band where the pixel has no data
    (:func:`~utilities.raster.io.nodata_mask`: outside the file's dataset mask, or NaN / infinite in a band)."""
    image = read_image(path, bands=bands, window=window)
    missing = nodata_mask(image, valid_mask(path, window))
    image = image.astype(np.float32)
    image[:, missing] = np.nan
    return image


class DateRows(RasterRows):
    """Rows of (a region of) a date image as float32 ``(C, n, width)``, NaN where the pixel has no data
    (:func:`read_date`)."""

    def __init__(self, path: Path, bands: Sequence[int], region: PixelWindow):
        super().__init__(path, functools.partial(read_date, bands=list(bands)), region)


def pair_rows(date1: Path, date2: Path, bands: Sequence[int], region: PixelWindow) -> RowReader:
    """``read(row0, row1) -> (2C, n, width)``: rows of both dates stacked (date 1's bands first), NaN where
    either has no data."""
    dates = [DateRows(Path(date), bands, region) for date in (date1, date2)]
    return lambda row0, row1: np.concatenate([date(row0, row1) for date in dates])


class WindowForward:
    """``forward((B, 2C, h, w)) -> (B, sum of K_i, h, w)``: the class maps of the model's heads
    (:data:`HEADS`) concatenated, for stacked date windows; :meth:`heads` splits them again.

    Pixels without data (NaN) are filled by the :class:`~utilities.artifacts.model_io.Predictor` (the band's training
    mean); the caller masks them out of the outputs.

    Parameters
    ----------
    predictor : Predictor
    done : callable, optional
        ``done(B)`` after every batch (a progress bar).
    """

    def __init__(self, predictor: Predictor, done: Optional[Callable[[int], Any]] = None):
        self.predictor, self.done = predictor, done
        self.sections: Optional[List[int]] = None  # maps per head, known after the first call

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        channels = self.predictor.channels
        outputs = self.predictor(batch[:, :channels], batch[:, channels:])
        self.sections = [o.shape[1] for o in outputs]
        if self.done is not None:
            self.done(len(batch))
        return np.concatenate(outputs, axis=1)

    def heads(self, outputs: np.ndarray, axis: int = 0) -> Tuple[np.ndarray, ...]:
        """``(segmentation, boundary, distance)`` of concatenated outputs (their maps on ``axis``)."""
        return tuple(np.split(outputs, np.cumsum(self.sections)[:-1], axis=axis))


def _profile(info: RasterInfo, dtype: str, nodata: float) -> dict:
    profile = dict(height=info.height, width=info.width, count=1, dtype=dtype, nodata=nodata)
    if info.crs is not None:
        profile["crs"] = info.crs
    if info.transform is not None:
        profile["transform"] = info.transform
    return profile


class _GeoTIFFs:
    """The output COGs (:func:`~utilities.raster.cog.cog_dataset`: tiled GeoTIFFs at temporary names, copied to
    COGs when complete); strips are buffered and written a row of tiles at a time. The probability maps are
    stored as ``probability_dtype``: ``"uint8"`` (:func:`~utilities.raster.cog.quantize`, GDAL scale 1/254) or
    ``"float32"`` (NaN without data)."""

    def __init__(self, stack: contextlib.ExitStack, out_dir: Path, info: RasterInfo, probability_dtype: str = "uint8"):
        if probability_dtype not in PROBABILITY_DTYPES:
            raise InputError(f"probability dtype must be one of {', '.join(PROBABILITY_DTYPES)}, got "
                             f"{probability_dtype!r}.")
        self.datasets, self.pending, self.row = {}, [], 0
        self.paths = {name: out_dir / file_name for name, file_name in OUTPUT_FILES.items()}
        self.quantized = {name for name in OUTPUT_FILES if name != "mask" and probability_dtype == "uint8"}
        for name, file_name in OUTPUT_FILES.items():
            if name == "mask" or name in self.quantized:
                profile = _profile(info, "uint8", MASK_NODATA)
            else:
                profile = _profile(info, "float32", np.nan)
            dataset = stack.enter_context(cog_dataset(out_dir / file_name, profile, _OVERVIEWS[name]))
            if name in self.quantized:
                dataset.scales = (1 / QUANTIZED_MAX,)
            dataset.set_band_description(1, _DESCRIPTIONS[name] + (" (value / 254)" if name in self.quantized else ""))
            self.datasets[name] = dataset

    def add(self, maps: Dict[str, np.ndarray]) -> None:
        """Append rows ``{name: (n, width)}`` (following the rows added before)."""
        self.pending.append(maps)
        if sum(len(m["mask"]) for m in self.pending) >= BLOCK:
            self.flush()

    def flush(self) -> None:
        """Write the pending rows."""
        if not self.pending:
            return
        rows = {name: np.concatenate([m[name] for m in self.pending]) for name in self.datasets}
        n, width = rows["mask"].shape
        for name, dataset in self.datasets.items():
            values = quantize(rows[name]) if name in self.quantized else rows[name]
            try:
                dataset.write(values[None], window=Window(0, self.row, width, n))
            except (OSError, RasterioError) as err:  # named here: the file being written when it failed
                raise write_error(err, self.paths[name]) from None
        self.row += n
        self.pending = []


def shrink_by_area(image: np.ndarray, factor: int) -> np.ndarray:
    """Shrink an ``(n, width, channels)`` uint8 image by ``factor`` in both directions, averaging blocks of
    ``factor x factor`` pixels (rounded half up): ``(ceil(n / factor), ceil(width / factor), channels)``, the
    last row and column of blocks averaging the pixels they have. Any width and any number of channels
    (OpenCV's area resize takes at most 4 channels when the width is not a multiple of the factor)."""
    rows, cols = (np.arange(0, size, factor) for size in image.shape[:2])
    sums = np.add.reduceat(np.add.reduceat(image, rows, axis=0, dtype=np.uint32), cols, axis=1, dtype=np.uint32)
    counts = (np.minimum(factor, image.shape[0] - rows)[:, None]
              * np.minimum(factor, image.shape[1] - cols)[None, :])[..., None].astype(np.uint32)
    return ((sums + counts // 2) // counts).astype(np.uint8)


class _Quicklook:
    """``date 1 | date 2 | change``: the two dates and, in the third panel, date 2 in grey with the predicted
    change in magenta (a colour no grey image holds, so red or orange roofs cannot hide it). The panels stand
    side by side, or one above the other for scenes wider than tall (the figure stays near square), and are
    downsampled strip by strip by an integer factor (area averaging) so that the figure's long side is at
    most :data:`QUICKLOOK_SIDE` pixels."""

    def __init__(self, info: RasterInfo, predictor: Predictor):
        self.stacked = info.width > info.height
        figure = (3 * info.height, info.width) if self.stacked else (info.height, 3 * info.width)
        self.factor = max(1, -(-max(figure) // QUICKLOOK_SIDE))
        self.width = -(-info.width // self.factor)
        self.eight_bit = info.dtype == "uint8"
        bands = 3 if predictor.channels >= 3 else 1
        self.low = (predictor.mean - _STRETCH * predictor.std).ravel()[:bands]
        self.high = (predictor.mean + _STRETCH * predictor.std).ravel()[:bands]
        self.pending = np.zeros((0, info.width, 3 * len(_PANELS)), dtype=np.uint8)  # the panels' RGB, stacked
        self.rows: List[np.ndarray] = []

    def _colours(self, date: np.ndarray) -> np.ndarray:
        """``(C, n, width)`` -> RGB ``(n, width, 3)`` float32 in [0, 255] (one band: grey)."""
        rgb = date[:3] if len(date) >= 3 else date[:1]
        if not self.eight_bit:
            rgb = (rgb - self.low[:, None, None]) / (self.high - self.low)[:, None, None] * 255
        rgb = np.nan_to_num(np.clip(rgb, 0, 255), nan=0.0)
        return np.repeat(rgb, 3 // len(rgb), axis=0).transpose(1, 2, 0)

    def add(self, date1: np.ndarray, date2: np.ndarray, mask: np.ndarray) -> None:
        """Add rows of both dates ``(C, n, width)`` and of the change mask ``(n, width)``."""
        rgb1, rgb2 = self._colours(date1), self._colours(date2)
        change = np.repeat(rgb2.mean(axis=2, keepdims=True), 3, axis=2)
        change[mask == 1] = _CHANGE_COLOUR
        self.pending = np.concatenate([self.pending, np.concatenate([rgb1, rgb2, change], axis=2).astype(np.uint8)])
        self._shrink(len(self.pending) - len(self.pending) % self.factor)

    def _shrink(self, n: int) -> None:
        if n:
            self.rows.append(shrink_by_area(self.pending[:n], self.factor))
            self.pending = self.pending[n:]

    def figure(self) -> np.ndarray:
        """The RGB figure ``(H, W, 3)`` uint8: the panels, titled where the title fits (it would hide a panel
        smaller than twice its height), with white gaps between them."""
        self._shrink(len(self.pending))
        rows = np.concatenate(self.rows)
        panels = [np.ascontiguousarray(rows[..., 3 * i:3 * i + 3]) for i in range(len(_PANELS))]
        scale = max(0.35, min(panels[0].shape[:2]) / 500)
        for panel, title in zip(panels, _PANELS):
            origin = (int(6 * scale) + 2, int(28 * scale) + 4)
            outline = max(1, int(3 * scale))
            (width, height), _ = cv2.getTextSize(title, cv2.FONT_HERSHEY_SIMPLEX, scale, outline)
            if panel.shape[1] < origin[0] + width or panel.shape[0] < 2 * origin[1]:
                continue
            for colour, thickness in (((0, 0, 0), outline), ((255, 255, 255), max(1, int(scale)))):
                cv2.putText(panel, title, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, colour, thickness, cv2.LINE_AA)
        axis = 0 if self.stacked else 1
        gap = np.full((_GAP, rows.shape[1], 3) if self.stacked else (rows.shape[0], _GAP, 3), 255, np.uint8)
        return np.concatenate([panels[0], gap, panels[1], gap, panels[2]], axis=axis)

    def write(self, path: Path) -> None:
        figure = self.figure()
        with atomic_path(path, suffix=".png") as tmp:
            if not cv2.imwrite(tmp, figure[:, :, ::-1]):
                raise OSError(f"cannot write the quick-look {path}")


def predicted_strips(predictor: Predictor, date1: PathLike, date2: PathLike, window: int = 256, stride: int = 64,
                     batch_size: int = 4, bands: Optional[Sequence[int]] = None,
                     rows: Optional[Tuple[int, int]] = None, progress: bool = True,
                     force_inputs: bool = False, blend: str = "uniform") -> Tuple[RasterInfo, Iterator[Strip]]:
    """Check a pair of dates and the tiling, then predict it with overlapping windows (Section 8.5.1), lazily.

    Parameters
    ----------
    predictor, date1, date2, window, stride, batch_size, bands, progress, force_inputs, blend
        As for :func:`predict_rasters`.
    rows : (int, int), optional
        Predict only the raster rows ``[first, stop)``, with the windows of the whole raster's grid that
        overlap them (:func:`~utilities.raster.tiling.stream_strips`): the same values as the whole raster's
        prediction there.

    Returns
    -------
    (RasterInfo, iterator of Strip)
        The pair's grid, and its strips in order: ``inputs`` ``(2C, n, width)`` (date 1's bands, then date
        2's; NaN where a date has no data), ``outputs`` ``(3, n, width)`` the change class of the
        segmentation, boundary and distance heads (not yet masked where a date has no data).

    Raises
    ------
    InputError
        As :func:`predict_rasters`, before anything is predicted.
    """
    date1, date2 = Path(date1), Path(date2)
    check_window(window, stride, predictor.size_multiple)
    if batch_size < 1:
        raise InputError(f"batch size must be >= 1, got {batch_size}.")
    info = check_pair(date1, date2)
    bands = select_bands(date1, info.count, predictor.bands if bands is None else bands, predictor.channels)
    check_inputs(predictor, (date1, date2), bands, force=force_inputs)
    read = pair_rows(date1, date2, bands, (0, 0, info.height, info.width))
    tiling = Tiling(info.height, info.width, window, stride, blend)
    first, stop = (0, info.height) if rows is None else rows
    windows = len(tiling.row_origins[tiling.window_rows(first, stop)]) * len(tiling.col_origins)

    def strips() -> Iterator[Strip]:
        with progress_bar(total=windows, desc=f"predict {date2.name}", unit="window", disable=not progress) as bar:
            forward = WindowForward(predictor, bar.update)

            def predict(batch: np.ndarray) -> np.ndarray:  # the change class (the last) of each head
                return np.stack([head[:, -1] for head in forward.heads(forward(batch), axis=1)], axis=1)

            yield from stream_strips(tiling, read, predict, batch_size, rows)

    return info, strips()


def write_outputs(strips: Iterable[Strip], info: RasterInfo, out_dir: PathLike, predictor: Predictor,
                  threshold: float = 0.5, quicklook: bool = True, probability_dtype: str = "uint8",
                  polygons: bool = False, min_area: float = 0.0) -> Dict[str, Path]:
    """Write the outputs (module docstring) of a pair's strips (:func:`predicted_strips`) to ``out_dir``;
    ``probability_dtype``, ``polygons``, ``min_area``: as for :func:`predict_rasters`.

    Returns
    -------
    dict
        ``{"probability", "mask", "boundary", "distance"[, "polygons"][, "quicklook"]: path}``.
    """
    out_dir = Path(out_dir)
    channels = predictor.channels
    paths = {name: out_dir / file_name for name, file_name in OUTPUT_FILES.items()}
    preview = _Quicklook(info, predictor) if quicklook else None
    with contextlib.ExitStack() as stack:
        outputs = _GeoTIFFs(stack, out_dir, info, probability_dtype)
        regions = None
        if polygons:
            paths["polygons"] = out_dir / POLYGONS_FILE
            regions = stack.enter_context(polygon_writer(paths["polygons"], info.width, info.crs, info.transform,
                                                         {1: "change"}, min_area))
        for strip in strips:
            nodata = np.isnan(strip.inputs).any(axis=0)  # NaN after DateRows: nodata in either date
            probability, boundary, distance = np.where(nodata, np.float32(np.nan), strip.outputs)
            mask = np.where(nodata, MASK_NODATA, probability >= threshold).astype(np.uint8)
            outputs.add({"probability": probability, "mask": mask, "boundary": boundary, "distance": distance})
            if regions is not None:
                regions(mask, probability)
            if preview is not None:
                preview.add(strip.inputs[:channels], strip.inputs[channels:], mask)
        outputs.flush()
    if preview is not None:
        paths["quicklook"] = out_dir / QUICKLOOK_FILE
        preview.write(paths["quicklook"])
    return paths


def predict_rasters(predictor: Predictor, date1: PathLike, date2: PathLike, out_dir: PathLike, window: int = 256,
                    stride: int = 64, batch_size: int = 4, threshold: float = 0.5,
                    bands: Optional[Sequence[int]] = None, quicklook: bool = True, progress: bool = True,
                    force_inputs: bool = False, probability_dtype: str = "uint8", polygons: bool = False,
                    min_area: float = 0.0, blend: str = "uniform") -> Dict[str, Path]:
    """Predict the change between two co-registered rasters with overlapping windows (Section 8.5.1).

    Parameters
    ----------
    predictor : Predictor
        The model (:func:`utilities.artifacts.model_io.load_predictor`, or any engine with its interface, e.g.
        :class:`utilities.inference.onnx_engine.OnnxPredictor`).
    date1, date2 : str or PathLike
        The date images (GeoTIFF, PNG or JPEG), same grid and band count.
    out_dir : str or PathLike
        Receives the outputs (see the module docstring); created if needed, existing outputs replaced.
    window, stride : int
        Window side (a multiple of ``predictor.size_multiple``) and step (paper: 256 and 64).
    batch_size : int
        Windows per forward pass.
    threshold : float
        Probability from which a pixel is changed in ``change_mask.tif``.
    bands : sequence of int, optional
        1-based bands to read (default: the model's training bands, else all bands of the files).
    quicklook : bool
        Also write ``quicklook.png``.
    progress : bool
        Show a progress bar over the windows.
    force_inputs : bool
        Predict dates unlike the model's training images with a warning instead of refusing them
        (:func:`~utilities.inference.input_check.check_inputs`).
    probability_dtype : {"uint8", "float32"}
        How ``change_probability.tif``, ``boundary.tif`` and ``distance.tif`` store their values: uint8
        ``floor(254 p)`` with GDAL scale 1/254 and nodata 255 (:func:`~utilities.raster.cog.quantize`), or
        float32 with NaN nodata.
    polygons : bool
        Also write ``change_polygons.gpkg``: one polygon per connected change region of the mask
        (:mod:`utilities.inference.polygons`).
    min_area : float
        Leave out of the polygons the regions smaller than this, in square metres.
    blend : {"uniform", "taper"}
        How the overlapping windows' probabilities are combined: ``"uniform"`` the paper's plain average,
        ``"taper"`` weighted by a raised cosine that fades each window's edges (smooth seams at larger strides;
        :func:`~utilities.raster.tiling.window_weights`).

    Returns
    -------
    dict
        ``{"probability", "mask", "boundary", "distance"[, "polygons"][, "quicklook"]: path}``.

    Raises
    ------
    InputError
        Rasters that fail :func:`~utilities.raster.io.check_pair` (naming both files), the wrong number of bands
        for the model, band indices out of range, an unreadable file, bad tiling parameters, dates unlike the
        model's training images (unless ``force_inputs``).
    """
    if not 0 <= threshold <= 1:
        raise InputError(f"threshold must be in [0, 1], got {threshold}.")
    info, strips = predicted_strips(predictor, date1, date2, window, stride, batch_size, bands, progress=progress,
                                    force_inputs=force_inputs, blend=blend)
    check_min_area(min_area, info.crs, date1)
    writable_folder(Path(out_dir))
    return write_outputs(strips, info, out_dir, predictor, threshold, quicklook, probability_dtype, polygons, min_area)


def predict_folder(predictor: Predictor, root: PathLike, out_dir: PathLike, split: Optional[str] = None,
                   **kwargs) -> Dict[str, Dict[str, Path]]:
    """:func:`predict_rasters` for every pair of a folder in the LEVIR-CD layout (Section 8.1); ``label/``
    is not needed.

    Parameters
    ----------
    predictor : Predictor
    root : str or PathLike
        A LEVIR-CD folder (see :func:`utilities.data.datasets.levircd_samples`).
    out_dir : str or PathLike
        Receives one folder of outputs per sample, ``out_dir/<name>/``.
    split : {"train", "val", "test"}, optional
        The official split to predict.
    **kwargs
        Passed to :func:`predict_rasters`.

    Returns
    -------
    dict
        ``{sample name: its output paths}``.
    """
    return {sample.name: predict_rasters(predictor, sample.date1, sample.date2, Path(out_dir) / sample.name, **kwargs)
            for sample in levircd_samples(root, split, labelled=False)}


def padded_prediction(forward: WindowForward, read: RowReader, height: int, width: int) -> Iterator[Strip]:
    """A :data:`StripPredictFn` for images that fit in memory (e.g. LEVIR-CD tiles): one forward pass over
    the whole pair, reflect-padded at the bottom and right to the next multiple of the model's
    ``size_multiple`` (as the paper pads large rasters, Section 8.5.1), the outputs cropped back; one strip."""
    inputs = read(0, height)
    rows, cols = (-n % forward.predictor.size_multiple for n in (height, width))
    padded = np.pad(inputs, ((0, 0), (0, rows), (0, cols)), mode="reflect") if rows or cols else inputs
    yield Strip(0, inputs, forward(padded[None])[0, :, :height, :width])


def tiled_prediction(window: int = 256, stride: int = 64, batch_size: int = 4,
                     blend: str = "uniform") -> StripPredictFn:
    """A :data:`StripPredictFn` by the paper's overlapping windows (Section 8.5.1), streamed strip by strip
    (:func:`~utilities.raster.tiling.stream_strips`): memory of a strip of windows whatever the raster's size, and
    the outputs :func:`predict_rasters` writes (``blend`` as there)."""

    def predict(forward: WindowForward, read: RowReader, height: int, width: int) -> Iterator[Strip]:
        check_window(window, stride, forward.predictor.size_multiple)
        yield from stream_strips(Tiling(height, width, window, stride, blend), read, forward, batch_size)

    return predict
