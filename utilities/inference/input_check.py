"""Whether date images look like the images a model was trained on, checked before predicting.

A network standardises its inputs with the training chips' per-band mean and std (recorded in its
checkpoint with their data type) and learnt nothing about values far from them: a 16-bit image given
to a model trained on 8-bit ones runs without error and gives wrong probabilities. :func:`check_inputs`
compares, for each date, the data type and the per-band mean of a sample of the pixels that hold data
(:func:`~utilities.raster.io.read_sample`, at most :data:`SAMPLE_SIDE` rows and columns) with the
training's:

- another data type than the training's (floating-point types of any width count as one), or a band mean
  more than :data:`REFUSE` training standard deviations from the training mean (a scaling error: 16-bit
  values for 8-bit ones are hundreds away), is refused (:class:`~utilities.errors.InputError`, one line
  naming the date and the differences), or, when forced, logged as a one-line warning;
- a band mean more than :data:`WARN` standard deviations away is logged as a one-line warning and the
  prediction goes on: scenes of the training's sensor and processing can get there (another season, a
  model trained on a few tiles whose spread is narrow).

Checkpoints written before the data type was recorded are checked on the means alone.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import List, Sequence, Tuple

import numpy as np

from utilities.artifacts.model_io import Predictor
from utilities.errors import InputError
from utilities.raster.io import PathLike, read_sample

logger = logging.getLogger(__name__)

#: a band mean this many training standard deviations from the training mean is refused (unless forced)
REFUSE = 20.0
#: a band mean this many training standard deviations from the training mean is warned about
WARN = 4.0
#: the sample of a date: at most this many rows and columns
SAMPLE_SIDE = 512
#: what the refusal says to do (the command-line option that forces the prediction)
FORCE_HINT = "convert it as the training images were, or pass --force-inputs to predict anyway"


def _values(values: Sequence[float]) -> str:
    return "[" + ", ".join(f"{v:.4g}" for v in values) + "]"


def _alike(dtype: str, trained: str) -> bool:
    return dtype == trained or (np.dtype(dtype).kind == "f" and np.dtype(trained).kind == "f")


def differences(predictor: Predictor, path: PathLike, bands: Sequence[int]) -> Tuple[List[str], bool]:
    """How the date image ``path`` (its ``bands``) differs from the model's training images.

    Returns
    -------
    (list of str, bool)
        The differences (empty when alike), e.g. ``"uint16 where the model was trained on uint8"``, ``"band means
        [3.3e+04, ...] against the training's [110, 115, 100] (std [50, 48, 52])"``; and whether one of them is
        refused (see the module docstring).
    """
    sample, valid = read_sample(path, bands, SAMPLE_SIDE)
    found, refused = [], False
    trained_dtype = getattr(predictor, "dtype", None)
    if trained_dtype is not None and not _alike(sample.dtype.name, trained_dtype):
        found.append(f"{sample.dtype.name} where the model was trained on {trained_dtype}")
        refused = True
    if valid.any():
        mean = sample[:, valid].astype(np.float64).mean(axis=1)
        trained_mean, trained_std = predictor.mean.ravel(), predictor.std.ravel()
        distance = np.abs(mean - trained_mean) / trained_std
        if (distance > WARN).any():
            found.append(f"band means {_values(mean)} against the training's {_values(trained_mean)} "
                         f"(std {_values(trained_std)})")
            refused |= bool((distance > REFUSE).any())
    return found, refused


def check_inputs(predictor: Predictor, dates: Sequence[PathLike], bands: Sequence[int], force: bool = False) -> None:
    """Refuse date images unlike the model's training images (see the module docstring).

    Parameters
    ----------
    predictor : Predictor
        The model: its training images' band statistics (``mean``, ``std``) and, when it has one that is not
        None, their data type (``dtype``).
    dates : sequence of path
        Date 1, date 2.
    bands : sequence of int
        The 1-based bands the model reads.
    force : bool
        Log the differences that are refused as a warning (one line per date) instead of refusing.

    Raises
    ------
    InputError
        ``date 2 B.tif is unlike the images the model was trained on: uint16 where the model was trained on
        uint8; band means [...] against the training's [...] (std [...]): convert it ...`` (the first date
        refused).
    """
    for number, path in enumerate(dates, start=1):
        found, refused = differences(predictor, path, bands)
        if not found:
            continue
        message = f"date {number} {Path(path)} is unlike the images the model was trained on: {'; '.join(found)}"
        if refused and not force:
            raise InputError(f"{message}: {FORCE_HINT}.")
        logger.warning("%s%s", message, " (predicting anyway, as forced)" if refused else "")
