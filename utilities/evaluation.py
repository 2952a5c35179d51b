"""Evaluation of a change-detection model on labelled pairs of dates (paper Section 8.4).

For every sample the model's change probability is thresholded into a change mask and compared with the
label: the per-image confusion counts ``[tp, fp, fn, tn]`` give per-image metrics, and the *pooled* counts
of all images give the global metrics (the paper's pixel-wise precision, recall, F1, MCC and IoU, plus
overall accuracy and Cohen's kappa, all from pycm through :func:`utilities.metrics.change_metrics`). The
global row is therefore not the mean of the per-image rows.

Images are predicted whole. When their height or width is not a multiple of the model's
``size_multiple`` they are reflect-padded (as the paper pads the borders of large rasters, Section 8.5.1)
to the next multiple and the outputs cropped back: every input pixel is evaluated, none is cropped away.
Pixels without data in either date (NaN, or the rasters' nodata value) are given the band's training mean
(a neutral input) for the prediction and left out of the counts.

Outputs (all written atomically) of :func:`write_evaluation`: ``metrics.json``, ``metrics.md`` and, per
image, ``<name>_tpfpfn.png`` (colours of :data:`TPFPFN_COLOURS`, as in the paper's Fig. 1), plus
``<name>_tpfpfn.tif`` with the input's CRS and geotransform when the input is georeferenced.
"""
from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import nn  # noqa: F401  (sets MXNet's OpenMP threads first)

import cv2
import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window
from rasterio.windows import transform as window_transform

from .atomic import atomic_path, atomic_write_text
from .datasets import Sample
from .errors import InputError
from .io import nodata_mask, raster_info, read_image, read_label
from .metrics import METRIC_NAMES, change_metrics, confusion_counts
from .model_io import Predictor

PathLike = Union[str, Path]
Outputs = Tuple[np.ndarray, np.ndarray, np.ndarray]
#: ``predict(predictor, date1, date2) -> (segmentation, boundary, distance)``, images ``(C, H, W)``,
#: outputs ``(classes, H, W)``
PredictFn = Callable[[Predictor, np.ndarray, np.ndarray], Outputs]

COUNT_NAMES = ("tp", "fp", "fn", "tn")
#: RGB colour of each outcome in the maps; pixels without data are grey
TPFPFN_COLOURS: Dict[str, Tuple[int, int, int]] = {
    "tp": (255, 255, 255), "fp": (255, 0, 0), "fn": (0, 0, 255), "tn": (0, 0, 0), "nodata": (128, 128, 128)}
#: column titles of the Markdown tables
_TITLES = {"precision": "precision", "recall": "recall", "f1": "F1", "mcc": "MCC", "iou": "IoU",
           "overall_accuracy": "OA", "kappa": "kappa"}


def _pad_to_multiple(image: np.ndarray, multiple: int) -> np.ndarray:
    rows, cols = (-n % multiple for n in image.shape[-2:])
    return np.pad(image, ((0, 0), (0, rows), (0, cols)), mode="reflect") if rows or cols else image


def predict_padded(predictor: Predictor, date1: np.ndarray, date2: np.ndarray) -> Outputs:
    """The model's outputs for one whole pair of ``(C, H, W)`` images.

    Inputs are reflect-padded at the bottom and right to the next multiple of ``predictor.size_multiple``
    and the outputs cropped back to ``(classes, H, W)``.
    """
    height, width = date1.shape[-2:]
    padded = [_pad_to_multiple(d, predictor.size_multiple)[None] for d in (date1, date2)]
    return tuple(o[0, :, :height, :width] for o in predictor(*padded))


def change_probability(segmentation: np.ndarray) -> np.ndarray:
    """The change class's probability ``(H, W)`` from a ``(classes, H, W)`` segmentation (last class)."""
    return segmentation[-1]


@dataclass
class Prediction:
    """A sample with its label, the model's outputs and the pixels that have data."""

    sample: Sample
    label: np.ndarray
    outputs: Outputs
    valid: np.ndarray


def _read_date(path: Path, sample: Sample, predictor: Predictor) -> Tuple[np.ndarray, np.ndarray]:
    image = read_image(path, bands=predictor.bands, window=sample.window)
    if image.shape[0] != predictor.channels:
        raise InputError(f"the model takes {predictor.channels} band(s) but {path} gives {image.shape[0]}")
    missing = nodata_mask(image, raster_info(path).nodata)
    if missing.any():  # a neutral input there: the band's training mean (0 once standardised)
        image = np.where(missing[None], predictor.mean[0], image)
    return image, missing


def predictions(predictor: Predictor, samples: Sequence[Sample],
                predict: PredictFn = predict_padded) -> Iterator[Prediction]:
    """Read each labelled sample and predict it (one at a time, so memory holds one image)."""
    for sample in samples:
        if sample.label is None:
            raise InputError(f"sample {sample.name} ({sample.date1}) has no label to evaluate against")
        date1, missing1 = _read_date(sample.date1, sample, predictor)
        date2, missing2 = _read_date(sample.date2, sample, predictor)
        label = read_label(sample.label, window=sample.window)
        yield Prediction(sample, label, predict(predictor, date1, date2), ~(missing1 | missing2))


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


def write_png(path: PathLike, rgb: np.ndarray) -> None:
    """Write an RGB ``(H, W, 3)`` uint8 image as PNG, atomically."""
    with atomic_path(path, suffix=".png") as tmp:
        if not cv2.imwrite(tmp, np.ascontiguousarray(rgb[:, :, ::-1])):
            raise OSError(f"cannot write {path}")


def write_geotiff_rgb(path: PathLike, rgb: np.ndarray, crs: Any, transform: Any) -> None:
    """Write an RGB ``(H, W, 3)`` uint8 image as a georeferenced GeoTIFF, atomically."""
    with atomic_path(path, suffix=".tif") as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(tmp, "w", driver="GTiff", height=rgb.shape[0], width=rgb.shape[1], count=3,
                           dtype="uint8", crs=crs, transform=transform, photometric="RGB") as dst:
            dst.write(rgb.transpose(2, 0, 1))


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


def write_maps(out_dir: PathLike, sample: Sample, rgb: np.ndarray) -> List[Path]:
    """``<name>_tpfpfn.png``, and ``<name>_tpfpfn.tif`` when the sample is georeferenced."""
    out_dir = Path(out_dir)
    written = [out_dir / f"{sample.name}_tpfpfn.png"]
    write_png(written[0], rgb)
    georeference = _georeference(sample)
    if georeference is not None:
        written.append(out_dir / f"{sample.name}_tpfpfn.tif")
        write_geotiff_rgb(written[1], rgb, *georeference)
    return written


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


def evaluate(predictor: Predictor, samples: Sequence[Sample], threshold: float = 0.5,
             maps_dir: Optional[PathLike] = None, predict: PredictFn = predict_padded,
             observe: Optional[Callable[[Prediction], None]] = None) -> Evaluation:
    """Evaluate ``predictor`` on labelled ``samples`` (paper Section 8.4).

    Parameters
    ----------
    predictor : Predictor
        The model (a checkpoint or an ensemble, :func:`utilities.model_io.load_predictor`).
    samples : sequence of Sample
        Labelled pairs (e.g. :func:`utilities.datasets.levircd_samples`).
    threshold : float
        A pixel is predicted as change when its change probability is above ``threshold``.
    maps_dir : path, optional
        Where to write the TP/FP/FN maps (:func:`write_maps`); None writes none.
    predict : callable
        How a whole pair is predicted (default :func:`predict_padded`; a tiled predictor for large rasters).
    observe : callable, optional
        Called with every :class:`Prediction`, for further measures of the outputs.

    Returns
    -------
    Evaluation
    """
    if not 0.0 <= threshold < 1.0:
        raise InputError(f"threshold must be in [0, 1), got {threshold}")
    results = []
    for item in predictions(predictor, samples, predict):
        pred = change_probability(item.outputs[0]) > threshold
        results.append(ImageResult(item.sample.name, confusion_counts(pred, item.label, item.valid)))
        if maps_dir is not None:
            write_maps(maps_dir, item.sample, tpfpfn_map(pred, item.label, item.valid))
        if observe is not None:
            observe(item)
    return Evaluation(results, threshold)


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


def write_evaluation(evaluation: Evaluation, out_dir: PathLike, about: Dict[str, Any]) -> Tuple[Path, Path]:
    """Write ``metrics.json`` (``about`` + :meth:`Evaluation.to_dict`) and ``metrics.md`` to ``out_dir``."""
    out_dir = Path(out_dir)
    json_path, md_path = out_dir / "metrics.json", out_dir / "metrics.md"
    atomic_write_text(json_path, json.dumps({**about, **evaluation.to_dict()}, indent=2))
    rows = [("**all images (pooled counts)**", evaluation.counts, evaluation.metrics)]
    rows += [(r.name, r.counts, r.metrics) for r in evaluation.images]
    title = f"# Change detection metrics (threshold {evaluation.threshold:g})\n\n"
    atomic_write_text(md_path, title + "".join(f"- {k}: {v}\n" for k, v in about.items()) + "\n"
                      + metrics_table(rows))
    return json_path, md_path
