"""Training chips (paper Section 8.3): 256 x 256 windows with stride 128, cached as memory-mapped arrays.

:func:`chip_windows` lays the sliding windows over a raster, :func:`build_chip_cache` cuts every sample
into chips once and stores them in a folder of ``.npy`` files with a ``manifest.json``, and
:class:`ChipDataset` serves them to Gluon with normalised inputs and the multitask targets of
:func:`utilities.data.targets.make_targets`.

Missing data: a chip is kept only when every pixel of both dates holds data. Chips with a pixel without
data in either date are skipped and counted in the manifest, so no non-finite value ever reaches the network.
A pixel is without data as GDAL's dataset mask says (:func:`utilities.raster.io.valid_mask`: every band
at its declared nodata value, or 0 in the file's mask or alpha band; a dark pixel with one band at the
nodata value holds data), or when a band is NaN or infinite (:func:`utilities.raster.io.nodata_mask`);
the same pixels are nodata in predict.py's and evaluate.py's outputs. Skipping rather than masking keeps
the loss exact: the fractal Tanimoto of a chip (eqs. 5-8) sums over all its pixels, and a filled-in pixel
would teach a "no change" that was never observed. The price is that pixels within a chip's side of a
nodata area are trained on only through the chips that avoid it.

Cache folder layout (format version :data:`FORMAT_VERSION`):

- ``date1.npy``, ``date2.npy``: ``(N, C, size, size)`` in the images' data type;
- ``label.npy``: ``(N, size, size)`` uint8 in {0, 1} (absent when the samples have no labels);
- ``manifest.json``: the parameters (size, stride, bands), per sample its name, window, input files
  (path, size in bytes, modification time) and chips (index of its first chip, count, ``(row, col)``
  of every kept chip in raster coordinates, ``skipped``: chips left out for missing data), the totals
  ``n`` and ``skipped``, and the per-band ``mean`` and ``std`` of the date images over all chips
  (both dates pooled: the time-reversal augmentation swaps the dates, so they must share one
  normalisation).
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, NamedTuple, Optional, Sequence, Tuple

import numpy as np
from mxnet.gluon.data import Dataset

from utilities.data.datasets import Sample
from utilities.data.targets import make_targets
from utilities.errors import InputError
from utilities.progress import progress as progress_bar
from utilities.raster.io import (
    PathLike,
    PixelWindow,
    check_pair,
    nodata_mask,
    raster_info,
    read_image,
    read_label,
    valid_mask,
)

Transform = Callable[[np.ndarray, np.ndarray, np.ndarray], Tuple[np.ndarray, np.ndarray, np.ndarray]]

logger = logging.getLogger(__name__)

FORMAT_VERSION = 2  # 2: chips with missing data are skipped
MANIFEST = "manifest.json"
#: the files of a cache folder; an existing folder holding anything else is never replaced.
CACHE_FILES = frozenset({MANIFEST, "date1.npy", "date2.npy", "label.npy"})
#: rasters are read in strips of whole chip rows of at most this many pixels (memory bound for WHU).
MAX_STRIP_PIXELS = 1 << 25
_INPUT_KEYS = ("format_version", "size", "stride", "bands")
_SAMPLE_INPUT_KEYS = ("name", "window", "date1", "date2", "label")
_STATS_BATCH = 16
_COPY_BATCH = 64
#: dates named in the error for samples without a chip that holds data everywhere
_LISTED_DATES = 3


def _starts(length: int, size: int, stride: int) -> List[int]:
    starts = list(range(0, length - size + 1, stride))
    if starts[-1] != length - size:
        starts.append(length - size)
    return starts


def chip_windows(height: int, width: int, size: int = 256, stride: int = 128,
                 name: str = "raster") -> List[Tuple[int, int]]:
    """Top-left corners ``(row, col)`` of the ``size x size`` sliding windows covering a raster.

    Windows start every ``stride`` pixels; the last row and column of windows are moved to the
    bottom and right borders, so every pixel is covered and no window leaves the raster (Section 8.3:
    size 256, stride 128, i.e. chips overlapping by half; a 1024 x 1024 LEVIR-CD tile gives 7 x 7).

    Parameters
    ----------
    height, width : int
        Raster size in pixels.
    size, stride : int
        Window side and step, ``1 <= stride <= size``.
    name : str
        What the raster is (e.g. its file name), for the error message.

    Returns
    -------
    list of (int, int)
        Row-major order.

    Raises
    ------
    InputError
        Bad size/stride, or a raster smaller than ``size`` in either dimension.
    """
    if not 1 <= stride <= size:
        raise InputError(f"chip size and stride must satisfy 1 <= stride <= size, got size {size} and stride {stride}.")
    if height < size or width < size:
        raise InputError(f"{name} is {height}x{width} (rows x cols), smaller than the {size}x{size} chip size.")
    return [(r, c) for r in _starts(height, size, stride) for c in _starts(width, size, stride)]


def _file_record(path: Optional[PathLike]) -> Optional[Dict[str, Any]]:
    if path is None:
        return None
    try:
        stat = Path(path).stat()
    except OSError:
        raise InputError(f"file not found: {path}.") from None
    return {"path": str(Path(path).resolve()), "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _inputs(samples: Sequence[Sample], size: int, stride: int, bands: Optional[Sequence[int]]) -> Dict[str, Any]:
    """What the cache is made from: parameters and input files (compared to reuse a cache)."""
    return {"format_version": FORMAT_VERSION, "size": int(size), "stride": int(stride),
            "bands": None if bands is None else [int(b) for b in bands],
            "samples": [{"name": s.name, "window": None if s.window is None else [int(v) for v in s.window],
                         "date1": _file_record(s.date1), "date2": _file_record(s.date2),
                         "label": _file_record(s.label)} for s in samples]}


def _fingerprint(manifest: Dict[str, Any]) -> Dict[str, Any]:
    return {**{k: manifest.get(k) for k in _INPUT_KEYS},
            "samples": [{k: s.get(k) for k in _SAMPLE_INPUT_KEYS} for s in manifest.get("samples", [])]}


def _reusable(cache_dir: Path, inputs: Dict[str, Any]) -> bool:
    try:
        manifest = json.loads((cache_dir / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    arrays = ("date1", "date2", "label") if manifest.get("has_label") else ("date1", "date2")
    return (_fingerprint(manifest) == _fingerprint(inputs)
            and all((cache_dir / f"{a}.npy").is_file() for a in arrays))


class _Kind(NamedTuple):
    """What every sample of one cache must share."""

    dtype: str
    channels: int
    has_label: bool

    def __str__(self) -> str:
        return f"{self.dtype}, {self.channels} bands, {'with' if self.has_label else 'without'} label"


class _SamplePlan(NamedTuple):
    window: PixelWindow  # the part of the rasters to chip (all of it when the sample has no window)
    origins: List[Tuple[int, int]]  # chip origins relative to ``window``
    masks: Tuple[Optional[str], Optional[str]]  # how date 1 and date 2 mark pixels without data (RasterInfo.mask)


def _plan(samples: Sequence[Sample], size: int, stride: int,
          bands: Optional[Sequence[int]]) -> Tuple[List[_SamplePlan], _Kind]:
    """Validate the samples (:func:`~utilities.raster.io.check_pair`) and lay out their chips."""
    plans, kind = [], None
    for s in samples:
        info = check_pair(s.date1, s.date2, s.label)
        this = _Kind(info.dtype, info.count if bands is None else len(bands), s.label is not None)
        if kind is not None and this != kind:
            raise InputError(f"sample {s.name} ({s.date1}: {this}) does not match sample {samples[0].name} "
                             f"({kind}): all samples of a chip cache need the same kind.")
        kind = this
        window = (0, 0, info.height, info.width) if s.window is None else tuple(int(v) for v in s.window)
        origins = chip_windows(window[2], window[3], size, stride, name=f"sample {s.name} ({s.date1})")
        plans.append(_SamplePlan(window, origins, (info.mask, raster_info(s.date2).mask)))
    return plans, kind


def _strips(rows: Sequence[int], size: int, max_height: int) -> List[List[int]]:
    """Group consecutive chip rows so that one strip spans at most ``max_height`` raster rows."""
    strips: List[List[int]] = []
    for row in rows:
        if strips and row + size - strips[-1][0] <= max_height:
            strips[-1].append(row)
        else:
            strips.append([row])
    return strips


class _BandStats:
    """Running per-band count, sum and sum of squares (float64) of the finite pixel values."""

    def __init__(self, channels: int) -> None:
        self.count, self.total, self.squares = (np.zeros(channels) for _ in range(3))

    def add(self, chips: np.ndarray) -> None:
        for start in range(0, len(chips), _STATS_BATCH):
            x = np.asarray(chips[start:start + _STATS_BATCH], dtype=np.float64).swapaxes(0, 1)
            x = x.reshape(x.shape[0], -1)
            finite = np.isfinite(x)
            x = np.where(finite, x, 0.0)
            self.count += finite.sum(axis=1)
            self.total += x.sum(axis=1)
            self.squares += np.square(x).sum(axis=1)

    def mean_std(self) -> Tuple[List[float], List[float]]:
        mean = self.total / self.count
        return mean.tolist(), np.sqrt(np.maximum(self.squares / self.count - mean ** 2, 0.0)).tolist()


class _Strip(NamedTuple):
    """Whole chip rows of a sample: the strip's first row and the chip origins relative to the strip
    (both within the sample's window), the strip of each date and of the label, the pixels without
    data in either date, and why each date has pixels without data in the strip (empty: none)."""

    top: int
    origins: List[Tuple[int, int]]
    images: Tuple[np.ndarray, ...]  # date 1, date 2 and, with labels, the label
    missing: np.ndarray
    reasons: Tuple[List[str], List[str]]  # e.g. ["nodata 0"], ["NaN or infinite values"]


def _missing(image: np.ndarray, path: PathLike, window: PixelWindow,
             mask: Optional[str]) -> Tuple[np.ndarray, List[str]]:
    """The pixels of a date's strip without data, and why there are any: its mask (``mask``, e.g. ``"nodata
    0"``), NaN or infinite values."""
    valid = valid_mask(path, window)
    missing = nodata_mask(image, valid)
    reasons = [mask] if mask is not None and not valid.all() else []
    if (missing & valid).any():
        reasons.append("NaN or infinite values")
    return missing, reasons


def _read_strips(sample: Sample, plan: _SamplePlan, size: int, bands: Optional[Sequence[int]],
                 has_label: bool) -> Iterator[_Strip]:
    """Read a sample strip by strip."""
    row0, col0, _, width = plan.window
    max_height = max(size, MAX_STRIP_PIXELS // width)
    for strip in _strips(sorted({r for r, _ in plan.origins}), size, max_height):
        window = (row0 + strip[0], col0, strip[-1] + size - strip[0], width)
        paths = (sample.date1, sample.date2)
        dates = [read_image(path, bands=bands, window=window) for path in paths]
        (missing1, reasons1), (missing2, reasons2) = (_missing(date, path, window, mask)
                                                      for date, path, mask in zip(dates, paths, plan.masks))
        label = [read_label(sample.label, window=window)] if has_label else []
        origins = [(r - strip[0], c) for r, c in plan.origins if strip[0] <= r <= strip[-1]]
        yield _Strip(strip[0], origins, (*dates, *label), missing1 | missing2, (reasons1, reasons2))


def _no_chip_error(samples: Sequence[Sample], n: int,
                   reasons: Dict[Tuple[str, int, str], List[str]]) -> InputError:
    """The error for samples none of whose ``n`` chips holds data everywhere, naming the dates with pixels
    without data (at most :data:`_LISTED_DATES` of them) and why."""
    where = f"sample {samples[0].name}" if len(samples) == 1 else f"the {len(samples)} samples"
    dates = [f"date {date} {path} ({', '.join(why)})" for (_, date, path), why in reasons.items() if why]
    listed = " and ".join(dates[:_LISTED_DATES]) + (f" and {len(dates) - _LISTED_DATES} more dates"
                                                    if len(dates) > _LISTED_DATES else "")
    return InputError(f"every chip of {where} ({n} chips) has pixels without data, in {listed}: no data to chip.")


def _shrink(folder: Path, arrays: Dict[str, np.ndarray], n: int) -> None:
    """Rewrite the ``.npy`` arrays of ``folder`` with their first ``n`` chips only."""
    for name, array in arrays.items():
        target = folder / f"{name}.shrinking.npy"
        copy = np.lib.format.open_memmap(target, mode="w+", dtype=array.dtype, shape=(n, *array.shape[1:]))
        for start in range(0, n, _COPY_BATCH):
            copy[start:start + _COPY_BATCH] = array[start:min(start + _COPY_BATCH, n)]
        copy.flush()
        os.replace(target, folder / f"{name}.npy")


def _write_chips(samples: Sequence[Sample], plans: Sequence[_SamplePlan], kind: _Kind, folder: Path,
                 inputs: Dict[str, Any], progress: str) -> Dict[str, Any]:
    """Fill ``folder`` with the chips that hold data everywhere; return the manifest. ``progress``: the
    progress label (:func:`utilities.progress.progress`), "" for none."""
    size, bands = inputs["size"], inputs["bands"]
    n = sum(len(p.origins) for p in plans)
    shape = (n, kind.channels, size, size)
    open_memmap = np.lib.format.open_memmap
    arrays = {"date1": open_memmap(folder / "date1.npy", mode="w+", dtype=kind.dtype, shape=shape),
              "date2": open_memmap(folder / "date2.npy", mode="w+", dtype=kind.dtype, shape=shape)}
    if kind.has_label:
        arrays["label"] = open_memmap(folder / "label.npy", mode="w+", dtype=np.uint8, shape=(n, size, size))
    stats = _BandStats(kind.channels)
    records, k = [], 0
    reasons: Dict[Tuple[str, int, str], List[str]] = {}  # (sample, date, path) -> why it has pixels without data
    with progress_bar(total=n, desc=progress, unit="chip", disable=not progress) as bar:
        for sample, plan, record in zip(samples, plans, inputs["samples"]):
            first, row0, col0 = k, *plan.window[:2]
            kept: List[List[int]] = []
            for strip in _read_strips(sample, plan, size, bands, kind.has_label):
                for date, (path, why) in enumerate(zip((sample.date1, sample.date2), strip.reasons), start=1):
                    found = reasons.setdefault((sample.name, date, str(path)), [])
                    found.extend(reason for reason in why if reason not in found)
                start = k
                for r, c in strip.origins:
                    if strip.missing[r:r + size, c:c + size].any():
                        continue
                    for array, image in zip(arrays.values(), strip.images):
                        array[k] = image[..., r:r + size, c:c + size]
                    kept.append([row0 + strip.top + r, col0 + c])
                    k += 1
                stats.add(arrays["date1"][start:k])
                stats.add(arrays["date2"][start:k])
                bar.update(len(strip.origins))
            records.append({**record, "first": first, "count": k - first, "origins": kept,
                            "skipped": len(plan.origins) - (k - first)})
    if k == 0:
        raise _no_chip_error(samples, n, reasons)
    for array in arrays.values():
        array.flush()
    if k < n:
        _shrink(folder, arrays, k)
    mean, std = stats.mean_std()
    return {**inputs, "samples": records, "n": k, "skipped": n - k, "dtype": kind.dtype, "channels": kind.channels,
            "has_label": kind.has_label, "mean": mean, "std": std}


def _replace_folder(new: Path, cache_dir: Path) -> None:
    """Move the finished folder ``new`` to ``cache_dir``, replacing an older cache there."""
    if not cache_dir.exists():
        os.replace(new, cache_dir)
        return
    old = cache_dir.with_name(f".{cache_dir.name}.old-{uuid.uuid4().hex}")
    os.replace(cache_dir, old)
    os.replace(new, cache_dir)
    shutil.rmtree(old)


def build_chip_cache(samples: Sequence[Sample], cache_dir: PathLike, size: int = 256, stride: int = 128,
                     bands: Optional[Sequence[int]] = None, progress: bool = True) -> Path:
    """Cut samples into chips once and store them as memory-mapped arrays (Section 8.3).

    The cache is built in a temporary sibling folder and moved into place with ``os.replace`` only
    when complete, so a killed build never leaves a cache that looks complete. If ``cache_dir``
    already holds a cache of the same inputs (same parameters, file paths, sizes and modification
    times) it is reused, and the log says so; otherwise it is rebuilt. Build on one process only
    (e.g. Horovod rank 0, then a barrier).

    Parameters
    ----------
    samples : sequence of Sample
        What to chip; each sample's ``window`` (if any) is chipped instead of the whole raster. All
        samples must share data type, band count and whether they have a label.
    cache_dir : str or PathLike
        The cache folder (see the module docstring for its layout).
    size, stride : int
        Chip side and sliding-window step (:func:`chip_windows`).
    bands : sequence of int, optional
        1-based bands of the date images to keep (default: all).
    progress : bool
        Report progress (:func:`utilities.progress.progress`).

    Returns
    -------
    Path
        The cache's ``manifest.json``.

    Raises
    ------
    InputError
        No samples; unreadable or mismatched inputs; a sample smaller than a chip; samples of
        different kinds; ``cache_dir`` exists and holds files that are not a chip cache; no chip free
        of missing data (see the module docstring).
    """
    cache_dir = Path(cache_dir)
    samples = list(samples)
    if not samples:
        raise InputError(f"no samples to chip into {cache_dir}.")
    inputs = _inputs(samples, size, stride, bands)
    if _reusable(cache_dir, inputs):
        logger.info("chip cache %s is up to date: reusing it", cache_dir)
        return cache_dir / MANIFEST
    if cache_dir.exists() and not (cache_dir.is_dir() and {p.name for p in cache_dir.iterdir()} <= CACHE_FILES):
        raise InputError(f"{cache_dir} exists and is not a chip cache: refusing to replace it.")
    plans, kind = _plan(samples, size, stride, bands)
    logger.info("building chip cache %s from %d samples", cache_dir, len(samples))
    cache_dir.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=f".{cache_dir.name}.building-", dir=cache_dir.parent))
    try:
        description = f"chipping into {cache_dir}" if progress else ""
        manifest = _write_chips(samples, plans, kind, building, inputs, description)
        (building / MANIFEST).write_text(json.dumps(manifest, indent=1))
        _replace_folder(building, cache_dir)
    finally:
        shutil.rmtree(building, ignore_errors=True)
    logger.info("chip cache %s: %d chips, %d skipped for NaN, infinite or nodata pixels", cache_dir,
                manifest["n"], manifest["skipped"])
    return cache_dir / MANIFEST


def read_manifest(cache_dir: PathLike) -> Dict[str, Any]:
    """The manifest of a chip cache.

    Raises
    ------
    InputError
        No cache (or an unreadable or incompatible manifest) in ``cache_dir``.
    """
    path = Path(cache_dir) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except OSError:
        raise InputError(f"no chip cache in {cache_dir}: {path} is missing (build it with build_chip_cache).") from None
    except ValueError:
        raise InputError(f"chip cache manifest {path} is not valid JSON: rebuild the cache.") from None
    if manifest.get("format_version") != FORMAT_VERSION:
        raise InputError(f"chip cache {cache_dir} has format version {manifest.get('format_version')!r}, "
                         f"this code reads version {FORMAT_VERSION}: rebuild the cache.")
    return manifest


class ChipDataset(Dataset):
    """The chips of a cache as training items ``(date1, date2, segm, bound, dist)``.

    Parameters
    ----------
    cache_dir : str or PathLike
        A folder written by :func:`build_chip_cache`.
    transform : callable, optional
        ``(img1_hwc, img2_hwc, mask_hw) -> (img1_hwc, img2_hwc, mask_hw)`` on writable copies of the
        chip (images in their stored dtype, mask uint8 {0, 1}), e.g.
        :class:`utilities.data.augment.ChangeAugmentation`. The targets are computed after it.
    normalize : bool
        Standardise each band of the dates with ``normalization`` (a band with std 0 is only centred).
    normalization : mapping, optional
        The per-band ``{"mean": [...], "std": [...]}`` to standardise with. Default: this cache's own
        (the manifest's ``mean`` and ``std``), right for training chips; validation chips take the
        training chips' (:attr:`normalization` of the training set), as checkpoints and inference do.
        :attr:`normalization` also names the cache's input ``dtype``, which checkpoints record so that
        inference can refuse inputs of another type.
    targets : str
        Form of the boundary and distance targets: ``paper`` or ``authors``
        (:data:`utilities.data.targets.TARGET_FORMS`).

    Notes
    -----
    Items are float32 numpy arrays: dates ``(C, size, size)``, targets ``(2, size, size)`` each
    (:func:`utilities.data.targets.make_targets`). A cache without labels gives ``(date1, date2)`` only
    (the transform then gets an all-zero mask). The arrays are memory-mapped on first access, so the
    data set pickles cheaply to DataLoader worker processes.
    """

    def __init__(self, cache_dir: PathLike, transform: Optional[Transform] = None, normalize: bool = True,
                 targets: str = "paper", normalization: Optional[Mapping[str, Sequence[float]]] = None) -> None:
        self.cache_dir = Path(cache_dir)
        self.manifest = read_manifest(self.cache_dir)
        self.transform = transform
        self.normalize = normalize
        self.targets = targets
        self.has_label = bool(self.manifest["has_label"])
        source = self.manifest if normalization is None else normalization
        self.normalization = {"mean": [float(v) for v in source["mean"]], "std": [float(v) for v in source["std"]],
                              "dtype": str(self.manifest["dtype"])}
        std = np.asarray(self.normalization["std"], dtype=np.float32)
        self._mean = np.asarray(self.normalization["mean"], dtype=np.float32)[:, None, None]
        self._std = np.where(std > 0, std, 1.0).astype(np.float32)[:, None, None]
        self._arrays: Optional[Dict[str, np.ndarray]] = None

    def __len__(self) -> int:
        return int(self.manifest["n"])

    @property
    def skipped(self) -> int:
        """Chips left out of the cache for NaN, infinite or nodata pixels."""
        return int(self.manifest["skipped"])

    def describe(self, index: int) -> str:
        """Where chip ``index`` comes from, e.g. ``chip 12 (sample train_1, row 32, col 0, in .../date1.png)``."""
        for sample in self.manifest["samples"]:
            if sample["first"] <= index < sample["first"] + sample["count"]:
                row, col = sample["origins"][index - sample["first"]]
                return f"chip {index} (sample {sample['name']}, row {row}, col {col}, in {sample['date1']['path']})"
        raise IndexError(f"chip {index} is not in the cache {self.cache_dir} ({len(self)} chips)")

    def __getstate__(self) -> Dict[str, Any]:
        state = self.__dict__.copy()
        state["_arrays"] = None
        return state

    def _open(self) -> Dict[str, np.ndarray]:
        if self._arrays is None:
            names = ("date1", "date2", "label") if self.has_label else ("date1", "date2")
            self._arrays = {n: np.load(self.cache_dir / f"{n}.npy", mmap_mode="r") for n in names}
        return self._arrays

    def _date(self, image_hwc: np.ndarray) -> np.ndarray:
        image = np.asarray(image_hwc, dtype=np.float32).transpose(2, 0, 1)
        if self.normalize:
            image = (image - self._mean) / self._std
        return np.ascontiguousarray(image)

    def __getitem__(self, index: int) -> Tuple[np.ndarray, ...]:
        arrays = self._open()
        img1, img2 = (np.array(arrays[d][index].transpose(1, 2, 0), order="C") for d in ("date1", "date2"))
        mask = np.array(arrays["label"][index]) if self.has_label else np.zeros(img1.shape[:2], dtype=np.uint8)
        if self.transform is not None:
            img1, img2, mask = self.transform(img1, img2, mask)
        dates = (self._date(img1), self._date(img2))
        return (*dates, *make_targets(mask, form=self.targets)) if self.has_label else dates
