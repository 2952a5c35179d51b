"""Evaluation of a change-detection model on labelled pairs of dates (paper Section 8.4).

For every sample the model's change probability is thresholded into a change mask and compared with the
label: the per-image confusion counts ``[tp, fp, fn, tn]`` give per-image metrics, and the *pooled* counts
of all images give the global metrics (the paper's pixel-wise precision, recall, F1, MCC and IoU, plus
overall accuracy and Cohen's kappa, all from pycm through :func:`utilities.inference.metrics.change_metrics`). The
global row is therefore not the mean of the per-image rows.

Images are read, predicted and counted strip by strip, as ``predict.py`` does (a
:data:`~utilities.inference.tiled.StripPredictFn`): with the paper's overlapping windows
(:func:`~utilities.inference.tiled.tiled_prediction`, what ``evaluate.py`` uses) memory is a strip of windows,
not the raster; :func:`~utilities.inference.tiled.padded_prediction` (the default, for tiles that fit in memory)
predicts a whole image in one pass, reflect-padded to the model's ``size_multiple``: every input pixel is
evaluated, none is cropped away. Pixels without data in either date (NaN, infinite, or the rasters' nodata
value) are given the band's training mean (a neutral input) for the prediction and left out of the
counts; a sample without any such pixel gets a warning.

Outputs (all written atomically): per image (:func:`tpfpfn_writer`) ``<name>_tpfpfn.png`` (colours of
:data:`TPFPFN_COLOURS`, as in the paper's Fig. 1), plus ``<name>_tpfpfn.tif`` with the input's CRS and
geotransform when the input is georeferenced; then :func:`write_evaluation`: ``metrics.json``, ``metrics.md``.
Given one :class:`~utilities.atomic.FileSet` (``files``), they all appear together when the evaluation is
complete, or none does (``evaluate.py``).
"""
from __future__ import annotations

import contextlib
import errno
import json
import logging
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import nn  # noqa: F401  (sets MXNet's OpenMP threads first)

import numpy as np
import rasterio
import rasterio.shutil
from rasterio._err import CPLE_BaseError  # GDAL's errors that rasterio.shutil.copy raises as they are
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.windows import Window
from rasterio.windows import transform as window_transform

from utilities.artifacts.model_io import Predictor
from utilities.atomic import FileSet, atomic_files, temporary_path, write_error
from utilities.data.datasets import Sample
from utilities.errors import InputError
from utilities.inference.input_check import check_inputs
from utilities.inference.metrics import METRIC_NAMES, change_metrics, confusion_counts
from utilities.inference.tiled import (
    DateRows,
    RasterRows,
    StripPredictFn,
    WindowForward,
    padded_prediction,
    pair_rows,
    select_bands,
)
from utilities.progress import progress
from utilities.raster.cog import band_scaling, dequantize
from utilities.raster.io import PixelWindow, RasterInfo, check_grid, check_pair, raster_info, read_label

PathLike = Union[str, Path]
Outputs = Tuple[np.ndarray, np.ndarray, np.ndarray]
log = logging.getLogger(__name__)
#: ``add(row, rgb)``: write the RGB rows ``(n, W, 3)`` of a map from ``row`` on
AddRows = Callable[[int, np.ndarray], None]
#: rows of a prediction file read at a time
STRIP_ROWS = 256

COUNT_NAMES = ("tp", "fp", "fn", "tn")
#: RGB colour of each outcome in the maps; pixels without data are grey
TPFPFN_COLOURS: Dict[str, Tuple[int, int, int]] = {
    "tp": (255, 255, 255), "fp": (255, 0, 0), "fn": (0, 0, 255), "tn": (0, 0, 0), "nodata": (128, 128, 128)}
#: column titles of the Markdown tables
_TITLES = {"precision": "precision", "recall": "recall", "f1": "F1", "mcc": "MCC", "iou": "IoU",
           "overall_accuracy": "OA", "kappa": "kappa"}


def change_probability(segmentation: np.ndarray) -> np.ndarray:
    """The change class's probability ``(..., H, W)`` from a ``(classes, ..., H, W)`` segmentation (last class)."""
    return segmentation[-1]


@dataclass
class Prediction:
    """Rows ``[row, row + n)`` of a sample: its label, the change probability and the pixels that have data.

    Attributes
    ----------
    sample : Sample
    row : int
        The sample's row of the first of these rows.
    label : numpy.ndarray
        uint8 ``(n, W)`` in {0, 1}.
    probability : numpy.ndarray
        float ``(n, W)``: the change class's probability.
    valid : numpy.ndarray
        bool ``(n, W)``: False where either date (or the prediction read from a file) has no data.
    height : int
        The sample's number of rows (``row + n == height`` on its last rows).
    outputs : (segmentation, boundary, distance), optional
        ``(classes, n, W)`` each, when a model predicted the rows (None for a prediction read from a file).
    """

    sample: Sample
    row: int
    label: np.ndarray
    probability: np.ndarray
    valid: np.ndarray
    height: int
    outputs: Optional[Outputs] = None

    @property
    def last(self) -> bool:
        """These are the sample's last rows."""
        return self.row + len(self.label) == self.height


def _region(sample: Sample, info: RasterInfo) -> PixelWindow:
    return sample.window if sample.window is not None else (0, 0, info.height, info.width)


def sample_predictions(predictor: Predictor, sample: Sample, predict: StripPredictFn = padded_prediction,
                       force_inputs: bool = False) -> Iterator[Prediction]:
    """Predict a labelled sample strip by strip, as ``predict`` hands the strips out (a tiled predictor
    holds a strip of windows in memory, not the raster). Dates unlike the model's training images are
    refused first, or only warned about with ``force_inputs``
    (:func:`~utilities.inference.input_check.check_inputs`).

    Raises
    ------
    InputError
        The sample has no label, its files do not match (:func:`~utilities.raster.io.check_pair`), are unreadable,
        or do not have the model's bands, or are unlike its training images.
    """
    if sample.label is None:
        raise InputError(f"sample {sample.name} ({sample.date1}) has no label to evaluate against")
    info = check_pair(sample.date1, sample.date2, sample.label)
    bands = select_bands(sample.date1, info.count, predictor.bands, predictor.channels)
    check_inputs(predictor, (sample.date1, sample.date2), bands, force=force_inputs)
    region = _region(sample, info)
    read = pair_rows(sample.date1, sample.date2, bands, region)
    labels = RasterRows(Path(sample.label), read_label, region)
    height, width = region[2:]
    forward = WindowForward(predictor)
    for strip in predict(forward, read, height, width):
        rows = strip.outputs.shape[1]
        outputs = forward.heads(strip.outputs)
        yield Prediction(sample, strip.row, labels(strip.row, strip.row + rows), change_probability(outputs[0]),
                         ~np.isnan(strip.inputs).any(axis=0), height, outputs)


def file_predictions(prediction: PathLike, label: PathLike, rows: int = STRIP_ROWS) -> Iterator[Prediction]:
    """The rows of a change probability raster that ``predict.py`` wrote (``change_probability.tif``) and of
    its label, ``rows`` at a time; the prediction's nodata (NaN or its declared nodata value) is not valid.
    Values are read with the band's scale and offset (uint8 ``v`` with scale 1/254: ``p = v / 254``,
    :func:`~utilities.raster.cog.dequantize`). The files are checked at once, before the first rows are read.

    Raises
    ------
    InputError
        The files are not on the same grid (size, CRS, geotransform; :func:`~utilities.raster.io.check_grid`), the
        prediction has more than one band, or a file is unreadable.
    """
    prediction, label = Path(prediction), Path(label)
    info = check_grid("prediction and label", prediction, label)
    if info.count != 1:
        raise InputError(f"prediction {prediction} has {info.count} bands: expected one, the change probability "
                         f"(change_probability.tif of predict.py)")
    region = (0, 0, info.height, info.width)
    probabilities = DateRows(prediction, [1], region)
    scale, offset = band_scaling(prediction)
    labels = RasterRows(label, read_label, region)
    sample = Sample(prediction.stem, prediction, prediction, label)

    def strips() -> Iterator[Prediction]:
        for row in range(0, info.height, rows):
            end = min(row + rows, info.height)
            probability = dequantize(probabilities(row, end)[0], scale, offset)
            yield Prediction(sample, row, labels(row, end), probability, ~np.isnan(probability), info.height)

    return strips()


def tpfpfn_map(pred: np.ndarray, label: np.ndarray, valid: Optional[np.ndarray] = None) -> np.ndarray:
    """RGB ``(H, W, 3)`` uint8 map of true/false positives/negatives (:data:`TPFPFN_COLOURS`)."""
    pred, label = np.asarray(pred, dtype=bool), np.asarray(label, dtype=bool)
    image = np.zeros(pred.shape + (3,), dtype=np.uint8)
    outcomes = {"tp": pred & label, "fp": pred & ~label, "fn": ~pred & label, "tn": ~pred & ~label}
    if valid is not None:
        outcomes = {k: m & valid for k, m in outcomes.items()}
        outcomes["nodata"] = ~valid
    for outcome, mask in outcomes.items():
        image[mask] = TPFPFN_COLOURS[outcome]
    return image


def _georeference(sample: Sample) -> Optional[Tuple[Any, Any]]:
    """``(crs, transform)`` of the sample's pixels, or None when date 1 is not georeferenced."""
    info = raster_info(sample.date1)
    if info.crs is None and info.transform is None:
        return None
    transform = info.transform or rasterio.Affine.identity()
    if sample.window is not None:
        row, col, rows, cols = sample.window
        transform = window_transform(Window(col, row, cols, rows), transform)
    return info.crs, transform


def _readable(path: str) -> bool:
    """GDAL reads every block of the raster ``path`` back."""
    try:
        with rasterio.open(path) as src:
            for _, window in src.block_windows(1):
                src.read(window=window)
    except (CPLE_BaseError, RasterioError, OSError):
        return False
    return True


@contextlib.contextmanager
def tpfpfn_writer(out_dir: PathLike, sample: Sample, height: int, width: int,
                  files: Optional[FileSet] = None) -> Iterator[AddRows]:
    """Write the TP/FP/FN map of one sample strip by strip: yields ``add(row, rgb (n, W, 3))``.

    The rows go to ``<name>_tpfpfn.tif`` (kept when the sample is georeferenced, with its CRS and
    geotransform), from which GDAL then copies ``<name>_tpfpfn.png`` row by row: memory is a strip. Both are
    written under temporary names and take their final names with the other files of ``files``
    (:func:`~utilities.atomic.atomic_files`; None: the two together, when the context ends without error).

    A failed write (a full disk: "no space left on device writing FILE") names the file that could not be
    written: GDAL reports no error when it cannot complete the GeoTIFF as it closes it, so when the PNG copy
    fails the GeoTIFF is read back to tell which of the two failed.
    """
    out_dir = Path(out_dir)
    png, tif = out_dir / f"{sample.name}_tpfpfn.png", out_dir / f"{sample.name}_tpfpfn.tif"
    georeference = _georeference(sample)
    crs, transform = georeference or (None, None)
    with atomic_files(files) as files, \
            (files.path(tif) if georeference is not None else temporary_path(tif, suffix=".tif")) as tmp_tif:
        rows_to = tif if georeference is not None else png  # the output that the GeoTIFF's rows are for
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                dataset = rasterio.open(tmp_tif, "w", driver="GTiff", height=height, width=width, count=3,
                                        dtype="uint8", crs=crs, transform=transform, photometric="RGB",
                                        compress="deflate")
        except (OSError, RasterioError) as err:
            raise write_error(err, rows_to) from None

        def add(row: int, rgb: np.ndarray) -> None:
            try:
                dataset.write(rgb.transpose(2, 0, 1), window=Window(0, row, width, len(rgb)))
            except (OSError, RasterioError) as err:
                raise write_error(err, rows_to) from None

        with dataset:
            yield add
        with files.path(png) as tmp, rasterio.Env(GDAL_PAM_ENABLED="NO"):
            try:
                rasterio.shutil.copy(tmp_tif, tmp, driver="PNG")
            except CPLE_BaseError as err:  # its errno is GDAL's error class, not the system's
                if georeference is not None and not _readable(tmp_tif):
                    raise write_error(OSError(errno.EIO, "GDAL could not complete it (it does not read back)"),
                                      tif) from None
                raise write_error(OSError(errno.EIO, " ".join(str(err).split())), png) from None


@dataclass
class ImageResult:
    """Confusion counts ``[tp, fp, fn, tn]`` and metrics of one image."""

    name: str
    counts: np.ndarray
    metrics: Dict[str, float] = field(init=False)

    def __post_init__(self):
        self.metrics = change_metrics(self.counts)


@dataclass
class Evaluation:
    """Per-image results and the global ones, computed from the pooled counts."""

    images: List[ImageResult]
    threshold: float
    counts: np.ndarray = field(init=False)
    metrics: Dict[str, float] = field(init=False)

    def __post_init__(self):
        self.counts = np.sum([r.counts for r in self.images], axis=0, dtype=np.int64)
        self.metrics = change_metrics(self.counts)

    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready: ``global`` and ``images`` rows (counts and metrics; undefined metrics are None)."""
        return {"threshold": self.threshold, "global": result_row(self.counts, self.metrics),
                "images": [{"name": r.name, **result_row(r.counts, r.metrics)} for r in self.images]}


def finite_or_none(value: float) -> Optional[float]:
    """``value``, or None when it is NaN or infinite (JSON has no NaN)."""
    return None if value is None or not math.isfinite(value) else float(value)


def result_row(counts: np.ndarray, metrics: Dict[str, float]) -> Dict[str, Any]:
    """Counts and metrics as one flat JSON-ready mapping."""
    return {**{k: int(c) for k, c in zip(COUNT_NAMES, counts)},
            **{k: finite_or_none(metrics[k]) for k in METRIC_NAMES}}


def score(predictions: Iterable[Iterator[Prediction]], threshold: float = 0.5, maps_dir: Optional[PathLike] = None,
          observe: Optional[Callable[[Prediction], None]] = None, total: Optional[int] = None,
          files: Optional[FileSet] = None) -> Evaluation:
    """Threshold and count the predicted rows of each sample (one iterator of :class:`Prediction` per sample).

    Parameters
    ----------
    predictions : iterable of iterators of Prediction
        Per sample, its rows in order (:func:`sample_predictions` or :func:`file_predictions`).
    threshold : float
        A pixel is predicted as change when its change probability is at least ``threshold`` (as
        ``predict.py``'s change mask).
    maps_dir : path, optional
        Where to write the TP/FP/FN maps (:func:`tpfpfn_writer`); None writes none.
    observe : callable, optional
        Called with every :class:`Prediction`.
    total : int, optional
        The number of samples, for the progress bar.
    files : FileSet, optional
        The command's outputs that the maps join (:func:`~utilities.atomic.atomic_files`): they appear with
        them. None: the maps of each sample appear when they are complete.
    """
    if not 0.0 <= threshold <= 1.0:
        raise InputError(f"threshold must be in [0, 1], got {threshold}")
    results = []
    for rows in progress(predictions, total=total, desc="evaluate", unit="image"):
        counts, add_map, sample = np.zeros(len(COUNT_NAMES), np.int64), None, None
        with contextlib.ExitStack() as maps:
            for item in rows:
                sample = item.sample
                pred = item.probability >= threshold
                counts += confusion_counts(pred, item.label, item.valid)
                if maps_dir is not None:
                    add_map = add_map or maps.enter_context(
                        tpfpfn_writer(maps_dir, sample, item.height, item.label.shape[1], files))
                    add_map(item.row, tpfpfn_map(pred, item.label, item.valid))
                if observe is not None:
                    observe(item)
        if not counts.any():
            log.warning("sample %s (%s, %s) has no pixel with data in both dates: its metrics are undefined",
                        sample.name, sample.date1, sample.date2)
        results.append(ImageResult(sample.name, counts))
    return Evaluation(results, threshold)


def evaluate(predictor: Predictor, samples: Sequence[Sample], threshold: float = 0.5,
             maps_dir: Optional[PathLike] = None, predict: StripPredictFn = padded_prediction,
             observe: Optional[Callable[[Prediction], None]] = None, files: Optional[FileSet] = None,
             force_inputs: bool = False) -> Evaluation:
    """Evaluate ``predictor`` on labelled ``samples`` (paper Section 8.4).

    Parameters
    ----------
    predictor : Predictor
        The model (a checkpoint or an ensemble, :func:`utilities.artifacts.model_io.load_predictor`).
    samples : sequence of Sample
        Labelled pairs (e.g. :func:`utilities.data.datasets.levircd_samples`).
    threshold : float
        A pixel is predicted as change when its change probability is at least ``threshold`` (as
        ``predict.py``'s change mask).
    maps_dir : path, optional
        Where to write the TP/FP/FN maps (:func:`tpfpfn_writer`); None writes none.
    predict : callable
        How a pair is predicted, strip by strip (default :func:`~utilities.inference.tiled.padded_prediction`,
        whole images; :func:`~utilities.inference.tiled.tiled_prediction` for large rasters).
    observe : callable, optional
        Called with every :class:`Prediction` (the strips of each sample in order), for further measures
        of the outputs.
    files : FileSet, optional
        The command's outputs that the maps join (see :func:`score`).
    force_inputs : bool
        Predict dates unlike the model's training images with a warning instead of refusing them.

    Returns
    -------
    Evaluation
    """
    return score((sample_predictions(predictor, sample, predict, force_inputs) for sample in samples), threshold,
                 maps_dir, observe, total=len(samples), files=files)


def evaluate_prediction(prediction: PathLike, label: PathLike, threshold: float = 0.5,
                        maps_dir: Optional[PathLike] = None, files: Optional[FileSet] = None,
                        observe: Optional[Callable[[Prediction], None]] = None) -> Evaluation:
    """Evaluate a change probability raster that ``predict.py`` already wrote against its label, without the
    model (:func:`file_predictions`, read :data:`STRIP_ROWS` rows at a time); the same counts as
    :func:`evaluate` of the model that wrote it with the same windows. ``files``, ``observe``: as for
    :func:`score`."""
    return score([file_predictions(prediction, label, STRIP_ROWS)], threshold, maps_dir, observe, total=1,
                 files=files)


def _cell(value: float) -> str:
    return "n/a" if not math.isfinite(value) else f"{value:.4f}"


def metrics_table(rows: Sequence[Tuple[str, np.ndarray, Dict[str, float]]]) -> str:
    """A Markdown table with one row per ``(name, counts, metrics)``."""
    header = ["", *(_TITLES[k] for k in METRIC_NAMES), *(c.upper() for c in COUNT_NAMES)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, counts, metrics in rows:
        cells = [name, *(_cell(metrics[k]) for k in METRIC_NAMES), *(str(int(c)) for c in counts)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_evaluation(evaluation: Evaluation, out_dir: PathLike, about: Dict[str, Any],
                     files: Optional[FileSet] = None) -> Tuple[Path, Path]:
    """Write ``metrics.json`` (``about`` + :meth:`Evaluation.to_dict`) and ``metrics.md`` to ``out_dir``: both or
    neither, ``metrics.json`` last, with the other files of ``files`` when given
    (:func:`~utilities.atomic.atomic_files`)."""
    out_dir = Path(out_dir)
    json_path, md_path = out_dir / "metrics.json", out_dir / "metrics.md"
    rows = [("**all images (pooled counts)**", evaluation.counts, evaluation.metrics)]
    rows += [(r.name, r.counts, r.metrics) for r in evaluation.images]
    title = f"# Change detection metrics (threshold {evaluation.threshold:g})\n\n"
    with atomic_files(files) as files:
        files.write_text(md_path, title + "".join(f"- {k}: {v}\n" for k, v in about.items()) + "\n"
                         + metrics_table(rows))
        files.write_text(json_path, json.dumps({**about, **evaluation.to_dict()}, indent=2), last=True)
    return json_path, md_path
