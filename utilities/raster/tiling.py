"""Geometry and accumulation of tiled inference on large rasters (paper Section 8.5.1), without MXNet.

The paper predicts a large raster with overlapping ``256 x 256`` windows at stride 64 and takes, per
pixel, the average of the class probabilities of all windows that overlap it; the raster's borders are
reflect-padded first, so that border pixels are seen by as many windows, and as close to a window's
centre, as interior ones.

Padding. The raster is padded by ``pad = window - stride`` rows and columns before its first row and
column, and by ``pad`` to ``pad + stride - 1`` after its last ones (whatever completes the last window).
With ``stride`` dividing ``window`` every pixel, border or interior, is then covered by exactly
``(window / stride) ** 2`` windows. The padding is the reflection without repeating the edge (numpy's
``"reflect"``, OpenCV's ``BORDER_REFLECT_101``), folded again as often as needed when the pad is
larger than the raster, exactly as both libraries do: rasters of any size, even smaller than a window,
are predicted this way (a single row or column, which has no reflection, is repeated).

Streaming. Windows are processed one row of windows at a time (a *strip*): :func:`stream_strips`
keeps the ``window`` padded input rows that the current strip needs, reading only the ``stride`` new
rows (with their reflected margins) at each step, adds the windows' predictions into a
:class:`StripAccumulator` of ``window`` rows, and hands out the ``stride`` top rows as soon as no later
window can touch them. Memory is ``O(width x window)``, independent of the raster's height.

Blending. The paper's average is the ``"uniform"`` blend: every window's pixels weigh 1. The ``"taper"``
blend (:func:`window_weights`) weighs each window's pixels by a separable raised cosine, 1 at the window's
centre down to :data:`TAPER_FLOOR` at its edges, and takes ``sum(w p) / sum(w)``: the edges of a window,
which see the least context, count less, so that a larger stride (fewer windows) leaves no seams where
windows meet. When the stride is ``window / n`` for an integer ``n >= 2`` (e.g. 128 for 256), the
overlapping windows' weights along an axis add up to the same total at every pixel: a pure cross-fade.
With ``stride == window`` (no overlap) both blends give each pixel its one window's prediction.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterator, NamedTuple, Optional, Tuple

import numpy as np

from utilities.errors import InputError

#: ``read(row0, row1) -> (C, row1 - row0, width)``: rows of the (unpadded) raster.
RowReader = Callable[[int, int], np.ndarray]
#: ``predict(batch (B, C, window, window)) -> (B, K, window, window)``: K maps per window.
WindowPredictor = Callable[[np.ndarray], np.ndarray]
#: how the predictions of overlapping windows are combined (the first, the paper's plain average, is the default)
BLENDS = ("uniform", "taper")
#: the ``"taper"`` weight of a window's outermost pixels along an axis (1 at its centre): > 0, so that a pixel
#: covered by a window's edge alone keeps that window's prediction
TAPER_FLOOR = 0.05


def check_window(window: int, stride: int, size_multiple: int = 1) -> None:
    """Check tiling parameters: ``1 <= stride <= window`` and ``window`` a multiple of ``size_multiple``.

    Raises
    ------
    InputError
        One line saying which parameter is wrong and what would be accepted.
    """
    if window < 1 or not 1 <= stride <= window:
        raise InputError(f"window {window} and stride {stride} are not usable: the tiling needs "
                         f"1 <= stride <= window (the paper: window 256, stride 64).")
    if window % size_multiple:
        lower = window - window % size_multiple
        nearest = f"{lower} or {lower + size_multiple}" if lower else f"{size_multiple}"
        raise InputError(f"window {window} is not a multiple of {size_multiple}, which the model needs (its input "
                         f"sides must be multiples of {size_multiple}): use {nearest}.")


def window_weights(window: int, blend: str = "uniform") -> np.ndarray:
    """The ``(window, window)`` float32 weight of each pixel of a window's prediction in the blend.

    ``"uniform"``: all 1 (the paper's average). ``"taper"``: the outer product of
    ``TAPER_FLOOR + (1 - TAPER_FLOOR) sin^2(pi (i + 0.5) / window)``, ``i = 0 .. window - 1``: symmetric,
    > 0 everywhere, largest at the centre.

    Raises
    ------
    InputError
        An unknown ``blend``.
    """
    if blend not in BLENDS:
        raise InputError(f"blend {blend!r} is not one of {', '.join(BLENDS)}.")
    if blend == "uniform":
        return np.ones((window, window), np.float32)
    profile = TAPER_FLOOR + (1 - TAPER_FLOOR) * np.sin(np.pi * (np.arange(window) + 0.5) / window) ** 2
    return np.outer(profile, profile).astype(np.float32)


def reflect_index(index: np.ndarray, size: int) -> np.ndarray:
    """Map indices of a reflect-padded axis to indices of the axis of length ``size``.

    ``-1 -> 1``, ``size -> size - 2`` (no repeated edge, numpy ``"reflect"`` / OpenCV
    ``BORDER_REFLECT_101``), folding again for indices further than ``size - 1`` outside; an axis of
    length 1 maps every index to 0.
    """
    index = np.asarray(index)
    if size == 1:
        return np.zeros_like(index)
    period = 2 * (size - 1)
    folded = np.mod(index, period)
    return np.where(folded < size, folded, period - folded)


@dataclass(frozen=True)
class Tiling:
    """The windows over a ``height`` x ``width`` raster, in the coordinates of the padded raster.

    Attributes
    ----------
    height, width : int
        Size of the raster.
    window, stride : int
        Window side and step between windows (paper: 256 and 64).
    blend : str
        How overlapping windows' predictions are combined, one of :data:`BLENDS` (:func:`window_weights`).
    """

    height: int
    width: int
    window: int = 256
    stride: int = 64
    blend: str = "uniform"

    def __post_init__(self):
        check_window(self.window, self.stride)
        window_weights(1, self.blend)  # refuses an unknown blend now, not at the first window
        if self.height < 1 or self.width < 1:
            raise ValueError(f"Tiling: empty raster {self.height}x{self.width}")

    @property
    def weights(self) -> np.ndarray:
        """Each window pixel's weight in the blend, ``(window, window)`` (:func:`window_weights`)."""
        return window_weights(self.window, self.blend)

    @property
    def pad(self) -> int:
        """Rows (columns) of reflect padding before the raster's first row (column)."""
        return self.window - self.stride

    def _count(self, size: int) -> int:
        return math.ceil((size + self.pad) / self.stride)

    @property
    def row_origins(self) -> np.ndarray:
        """First padded row of each row of windows."""
        return np.arange(self._count(self.height)) * self.stride

    @property
    def col_origins(self) -> np.ndarray:
        """First padded column of each column of windows."""
        return np.arange(self._count(self.width)) * self.stride

    @property
    def padded_height(self) -> int:
        return int(self.row_origins[-1]) + self.window

    @property
    def padded_width(self) -> int:
        return int(self.col_origins[-1]) + self.window

    @property
    def n_windows(self) -> int:
        return len(self.row_origins) * len(self.col_origins)

    def window_rows(self, first: int, stop: int) -> slice:
        """The rows of windows (indices into :attr:`row_origins`) that overlap the raster rows ``[first, stop)``.

        Raises
        ------
        ValueError
            An empty range or one outside the raster.
        """
        if not 0 <= first < stop <= self.height:
            raise ValueError(f"Tiling: rows [{first}, {stop}) are not a non-empty range of the {self.height} rows")
        # window k covers padded rows [k s, k s + window), i.e. raster rows [k s - pad, k s - pad + window)
        return slice(max(0, (first + self.pad - self.window) // self.stride + 1),
                     min(len(self.row_origins), -(-(stop + self.pad) // self.stride)))

    def source_rows(self, start: int, stop: int) -> np.ndarray:
        """Raster rows holding the padded rows ``[start, stop)``."""
        return reflect_index(np.arange(start, stop) - self.pad, self.height)

    def source_cols(self) -> np.ndarray:
        """Raster columns holding every padded column."""
        return reflect_index(np.arange(self.padded_width) - self.pad, self.width)


class StripAccumulator:
    """Weighted sums of window predictions, and the sums of their weights, over ``rows`` consecutive padded rows.

    Parameters
    ----------
    channels : int
        Maps per window (K).
    rows, width : int
        The strip's height (the window side) and the padded raster's width.
    weights : numpy.ndarray, optional
        ``(rows, w)``: the weight of each pixel of a window (:func:`window_weights`); default all 1, the plain
        average (multiplying by 1 and adding 1 are exact: the same bits as summing and counting).
    """

    def __init__(self, channels: int, rows: int, width: int, weights: Optional[np.ndarray] = None):
        self.sums = np.zeros((channels, rows, width), dtype=np.float32)
        self.counts = np.zeros((rows, width), dtype=np.float32)
        self.weights = weights

    def add(self, col: int, predictions: np.ndarray) -> None:
        """Add a window's ``(K, rows, w)`` predictions at padded column ``col``, times their weights."""
        w = predictions.shape[-1]
        weights = np.ones(predictions.shape[1:], np.float32) if self.weights is None else self.weights
        self.sums[:, :, col:col + w] += predictions * weights
        self.counts[:, col:col + w] += weights

    def pop(self, rows: int) -> np.ndarray:
        """The weighted average of the first ``rows`` rows, ``(K, rows, width)``; the strip then moves down by
        ``rows`` (the rows below move up, new rows start empty)."""
        averaged = self.sums[:, :rows] / self.counts[:rows]
        for array in (self.sums, self.counts):
            array[..., :-rows, :] = array[..., rows:, :]
            array[..., -rows:, :] = 0
        return averaged


class Strip(NamedTuple):
    """Finished rows of the raster.

    Attributes
    ----------
    row : int
        The raster row of the first row.
    inputs : numpy.ndarray
        ``(C, n, width)``: the raster's rows, as read.
    outputs : numpy.ndarray
        ``(K, n, width)``: the average of the predictions of every window covering each pixel (weighted by the
        tiling's blend, :func:`window_weights`).
    """

    row: int
    inputs: np.ndarray
    outputs: np.ndarray


def _read_padded(tiling: Tiling, read: RowReader, start: int, stop: int, cols: np.ndarray) -> np.ndarray:
    """Padded rows ``[start, stop)``, reading the one span of raster rows they reflect."""
    rows = tiling.source_rows(start, stop)
    first, last = int(rows.min()), int(rows.max())
    block = read(first, last + 1)
    return block[:, (rows - first)[:, None], cols]


def stream_strips(tiling: Tiling, read: RowReader, predict: WindowPredictor, batch_size: int,
                  rows: Optional[Tuple[int, int]] = None) -> Iterator[Strip]:
    """Predict a raster window by window and yield its averaged rows (the ``tiling``'s blend) in order, each row
    once.

    Parameters
    ----------
    tiling : Tiling
        The windows.
    read : callable
        ``read(row0, row1) -> (C, row1 - row0, width)``, raster rows; called with spans of at most
        ``window`` rows, moving down the raster, each raster row read about once (rows near the edges
        also for their reflections).
    predict : callable
        ``predict((B, C, window, window)) -> (B, K, window, window)``.
    batch_size : int
        Windows per call of ``predict`` (the last batch of each row of windows may be smaller).
    rows : (int, int), optional
        Only the raster rows ``[first, stop)`` (a block of the raster): only the rows of windows of the
        whole raster's grid that overlap them are predicted (:meth:`Tiling.window_rows`), with the same
        inputs, batches and order of summation, so their outputs are bit for bit those of the whole run.

    Yields
    ------
    Strip
        Consecutive bands of raster rows (``stride`` rows, the last one up to ``window``), as soon as no
        later window overlaps them.
    """
    w, s, pad = tiling.window, tiling.stride, tiling.pad
    first_row, stop_row = (0, tiling.height) if rows is None else rows
    cols, weights = tiling.source_cols(), tiling.weights
    origins = tiling.row_origins[tiling.window_rows(first_row, stop_row)]
    inputs = _read_padded(tiling, read, int(origins[0]), int(origins[0]) + w, cols)
    accumulator = None
    for k, top in enumerate(origins):
        if k:
            inputs[:, :w - s] = inputs[:, s:]
            inputs[:, w - s:] = _read_padded(tiling, read, top + w - s, top + w, cols)
        for i in range(0, len(tiling.col_origins), batch_size):
            batch_cols = tiling.col_origins[i:i + batch_size]
            predictions = predict(np.stack([inputs[:, :, c:c + w] for c in batch_cols]))
            if accumulator is None:
                accumulator = StripAccumulator(predictions.shape[1], w, tiling.padded_width, weights)
            for c, prediction in zip(batch_cols, predictions):
                accumulator.add(c, prediction)
        done = w if k == len(origins) - 1 else s
        outputs = accumulator.pop(done)
        first, last = max(top, pad + first_row), min(top + done, pad + stop_row)
        if first < last:
            kept, columns = slice(first - top, last - top), slice(pad, pad + tiling.width)
            yield Strip(first - pad, inputs[:, kept, columns].copy(), outputs[:, kept, columns])
