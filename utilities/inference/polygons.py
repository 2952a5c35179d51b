"""Polygons of the connected regions of a classified raster, built strip by strip and written to a GeoPackage.

:class:`RegionPolygons` takes the rows of a class raster (0 = background; e.g. the change mask, or TP/FP/FN
outcomes coded 1-3) and of a probability map, strip by strip from the top, and gives one polygon per connected
region of equal class (4-connected: pixels that share an edge, GDAL's and QGIS's default for polygonising),
with holes where the region encloses other pixels. Each strip is labelled (OpenCV) and polygonised (GDAL's
polygonize through ``rasterio.features.shapes``) in pixel coordinates, where every vertex is an integer and
exact; regions that continue across the seam with the previous strip are joined (their pieces are merged
with shapely when the region is complete: it has no pixel in the last row read). A region is written as
soon as it is complete, so memory is one strip plus the regions that cross the current row (a region that
spans the whole raster is held until its end).

:func:`polygon_writer` writes the regions, mapped to the raster's CRS through its geotransform, to a
GeoPackage layer (pyogrio) with the fields

- ``class`` (for more than one class), the region's class name;
- ``pixels``: its pixel count;
- ``area_m2``: its area in square metres: on the ellipsoid (pyproj's geodesic area, edges split at a pixel's
  size) in a geographic CRS, the planar area times the unit's size squared in a projected one; NULL without
  a CRS;
- ``mean_probability``, ``max_probability``: over its pixels.

Regions smaller than ``min_area`` square metres are left out. The file is written under a temporary name and
renamed when complete.
"""
from __future__ import annotations

import contextlib
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Mapping, Optional, Union

import cv2
import numpy as np
import pyogrio.raw
import pyproj
import rasterio
import shapely
from affine import Affine
from rasterio.crs import CRS
from rasterio.errors import NotGeoreferencedWarning
from rasterio.features import shapes
from rasterio.windows import Window
from rasterio.windows import transform as window_transform
from shapely.affinity import affine_transform
from shapely.geometry import shape

from utilities.atomic import FileSet, atomic_files
from utilities.errors import InputError

PathLike = Union[str, os.PathLike]
#: the GeoPackage of predict.py --polygons, and its layer
POLYGONS_FILE = "change_polygons.gpkg"
#: features buffered before they are appended to the GeoPackage
_BATCH = 2048
_CONNECTIVITY = 4
_FIELDS = ("pixels", "area_m2", "mean_probability", "max_probability")


@dataclass
class Region:
    """A connected region of one class: its polygon pieces in pixel coordinates (col, row) and its statistics."""

    value: int
    pieces: List[shapely.Polygon] = field(default_factory=list)
    pixels: int = 0
    total: float = 0.0
    peak: float = -np.inf

    def join(self, other: "Region") -> None:
        """Take ``other``'s pieces and pixels (the same region, seen in another strip)."""
        self.pieces += other.pieces
        self.pixels += other.pixels
        self.total += other.total
        self.peak = max(self.peak, other.peak)

    def polygon(self) -> shapely.Polygon:
        """The region's polygon in pixel coordinates."""
        return self.pieces[0] if len(self.pieces) == 1 else shapely.union_all(self.pieces)


class RegionPolygons:
    """Connected regions of a class raster fed strip by strip (:meth:`add`) from the top; complete regions
    are returned as soon as no later row can extend them.

    Parameters
    ----------
    width : int
        The raster's columns.
    """

    def __init__(self, width: int):
        self.width, self.row = width, 0
        self.regions: Dict[int, Region] = {}  # regions with pixels in the last row read, by id
        self.last_ids = np.zeros(width, np.int64)  # the region id of each pixel of the last row read (0: none)
        self.next_id = 1

    def _label(self, classes: np.ndarray, values: np.ndarray) -> tuple:
        """``(labels, regions)``: the strip's connected regions of equal class, numbered from 1."""
        labels = np.zeros(classes.shape, np.int32)
        regions: Dict[int, Region] = {}
        for value in np.unique(classes[classes > 0]):
            count, own = cv2.connectedComponents((classes == value).astype(np.uint8), connectivity=_CONNECTIVITY,
                                                 ltype=cv2.CV_32S)
            offset = len(regions)
            labels[own > 0] = own[own > 0] + offset
            regions.update({offset + k: Region(int(value)) for k in range(1, count)})
        inside = labels > 0
        ids, probabilities = labels[inside], values[inside].astype(np.float64)
        pixels = np.bincount(ids, minlength=len(regions) + 1)
        totals = np.bincount(ids, weights=probabilities, minlength=len(regions) + 1)
        peaks = np.full(len(regions) + 1, -np.inf)
        np.maximum.at(peaks, ids, probabilities)
        origin = Affine.translation(0, self.row)
        for geometry, label in shapes(labels, mask=inside, connectivity=_CONNECTIVITY, transform=origin):
            regions[int(label)].pieces.append(shape(geometry))
        for label, region in regions.items():
            region.pixels, region.total, region.peak = int(pixels[label]), float(totals[label]), float(peaks[label])
        return labels, regions

    def add(self, classes: np.ndarray, values: np.ndarray) -> List[Region]:
        """Add the next rows: ``classes`` ``(n, width)`` integers (0 = background) and ``values`` ``(n, width)``
        (the probability, for the regions' mean and maximum). Returns the regions completed by these rows."""
        labels, pieces = self._label(classes, values)
        self.row += len(classes)
        # groups of the open regions (keys: their ids) and the strip's pieces (keys: -label) joined at the seam
        parent: Dict[int, int] = {}

        def find(key: int) -> int:
            parent.setdefault(key, key)
            while parent[key] != key:
                parent[key] = parent[parent[key]]
                key = parent[key]
            return key

        seam = (labels[0] > 0) & (self.last_ids > 0)
        for label, region_id in set(zip(labels[0][seam].tolist(), self.last_ids[seam].tolist())):
            if self.regions[region_id].value == pieces[label].value:
                parent[find(-label)] = find(region_id)
        group_ids: Dict[int, int] = {}  # group -> the region that gathers it
        for region_id in list(self.regions):
            gathering = group_ids.setdefault(find(region_id), region_id)
            if gathering != region_id:  # two open regions meet in this strip
                self.regions[gathering].join(self.regions.pop(region_id))
        ids = np.zeros(len(pieces) + 1, np.int64)
        for label, piece in pieces.items():
            group = find(-label)
            if group not in group_ids:
                group_ids[group] = self.next_id
                self.regions[self.next_id] = Region(piece.value)
                self.next_id += 1
            self.regions[group_ids[group]].join(piece)
            ids[label] = group_ids[group]
        self.last_ids = ids[labels[-1]]
        still_open = set(self.last_ids[self.last_ids > 0].tolist())
        return [self.regions.pop(k) for k in sorted(self.regions) if k not in still_open]

    def close(self) -> List[Region]:
        """The regions still open after the last rows."""
        done = [self.regions[k] for k in sorted(self.regions)]
        self.regions, self.last_ids = {}, np.zeros(self.width, np.int64)
        return done


def area_function(crs: Optional[CRS], transform: Affine) -> Callable[[shapely.Polygon], float]:
    """``area(polygon in the CRS's coordinates) -> square metres``: geodesic on the CRS's ellipsoid for a
    geographic CRS (edges split at the pixel's size first, so that they follow the pixels' parallels and
    meridians closely), planar area times the unit's size squared for a projected one; NaN without a CRS."""
    if crs is None:
        return lambda polygon: float("nan")
    proj = pyproj.CRS.from_wkt(crs.to_wkt())
    if proj.is_geographic:
        geod = proj.get_geod()
        step = min(abs(transform.a) or abs(transform.b), abs(transform.e) or abs(transform.d))
        return lambda polygon: abs(geod.geometry_area_perimeter(shapely.segmentize(polygon, step))[0])
    metres = proj.axis_info[0].unit_conversion_factor
    return lambda polygon: polygon.area * metres ** 2


def check_min_area(min_area: float, crs: Optional[CRS], path: PathLike) -> None:
    """``min_area`` (square metres) must be >= 0, and 0 for a raster without CRS (``path``, named)."""
    if not min_area >= 0:
        raise InputError(f"--min-area must be >= 0 square metres, got {min_area}.")
    if min_area > 0 and crs is None:
        raise InputError(f"--min-area is in square metres but {path} has no CRS: polygons of rasters without "
                         f"one have no area.")


@contextlib.contextmanager
def polygon_writer(path: PathLike, width: int, crs: Optional[CRS], transform: Optional[Affine],
                   classes: Mapping[int, str], min_area: float = 0.0, layer: Optional[str] = None,
                   files: Optional[FileSet] = None) -> Iterator[Callable[[np.ndarray, np.ndarray], None]]:
    """Write the regions of a class raster to the GeoPackage ``path`` strip by strip: yields
    ``add(classes (n, width), probability (n, width))`` for the rows from the top (see the module docstring).

    Parameters
    ----------
    path : path
        The ``.gpkg`` to write (atomically: it appears complete or not at all; with ``files``, when that set of
        outputs does, :func:`~utilities.atomic.atomic_files`).
    width : int
        The raster's columns.
    crs, transform
        The raster's georeferencing (pixel corners to coordinates; None: pixel coordinates, no CRS).
    classes : mapping of int to str
        The class values to polygonise and their names (e.g. ``{1: "change"}``); other values are background.
        With more than one, each feature gets its name in the field ``class``.
    min_area : float
        Regions smaller than this (square metres) are left out.
    layer : str, optional
        The layer's name (default: the file's stem).
    """
    path = Path(path)
    transform = transform if transform is not None else Affine.identity()
    matrix = [transform.a, transform.b, transform.d, transform.e, transform.c, transform.f]
    area = area_function(crs, transform)
    regions = RegionPolygons(width)
    names = dict(classes)
    fields = (["class"] if len(names) > 1 else []) + list(_FIELDS)
    batch: List[tuple] = []
    written = [False]

    def flush(tmp: str) -> None:
        if written[0] and not batch:
            return
        columns = list(zip(*batch)) if batch else [()] * (1 + len(fields))
        data = [np.array(columns[1 + i], dtype=object if name == "class" else
                         (np.int64 if name == "pixels" else np.float64)) for i, name in enumerate(fields)]
        with warnings.catch_warnings():  # pyogrio warns of a layer without CRS: the raster has none either
            warnings.filterwarnings("ignore", "'crs' was not provided", UserWarning)
            pyogrio.raw.write(tmp, np.array(columns[0], dtype=object), data, fields, driver="GPKG",
                              layer=layer or path.stem, geometry_type="Polygon",
                              crs=crs.to_wkt() if crs is not None else None, append=written[0])
        written[0] = True
        batch.clear()

    def emit(done: List[Region], tmp: str) -> None:
        for region in done:
            polygon = affine_transform(region.polygon(), matrix)
            square_metres = area(polygon)
            if min_area > 0 and square_metres < min_area:
                continue
            row = (shapely.to_wkb(polygon), *([names[region.value]] if len(names) > 1 else []), region.pixels,
                   square_metres, region.total / region.pixels, region.peak)
            batch.append(row)
        if len(batch) >= _BATCH:
            flush(tmp)

    with atomic_files(files) as files, files.path(path) as tmp:
        os.unlink(tmp)  # the GeoPackage driver creates the file itself

        def add(class_rows: np.ndarray, probability: np.ndarray) -> None:
            coded = np.where(np.isin(class_rows, list(names)), class_rows, 0)
            emit(regions.add(coded, np.nan_to_num(probability, nan=0.0)), tmp)

        yield add
        emit(regions.close(), tmp)
        flush(tmp)


#: the outcome classes of an evaluation's TP/FP/FN polygons
OUTCOMES = {1: "TP", 2: "FP", 3: "FN"}


def outcome_classes(pred: np.ndarray, label: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """uint8 codes of :data:`OUTCOMES` (TP 1, FP 2, FN 3; true negatives and pixels without data 0)."""
    pred, label = np.asarray(pred, bool), np.asarray(label, bool)
    codes = np.select([pred & label, pred & ~label, ~pred & label], [1, 2, 3], 0).astype(np.uint8)
    return np.where(valid, codes, 0).astype(np.uint8)


def _sample_grid(path: PathLike, window: Optional[tuple]) -> tuple:
    """``(crs, transform)`` of a sample's pixels (its window of the raster ``path``); identity without one."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path) as src:
            crs, transform = src.crs, src.transform
    if window is not None:
        row, col, rows, cols = window
        transform = window_transform(Window(col, row, cols, rows), transform)
    return crs, transform


class OutcomePolygons:
    """The ``observe`` callback of an evaluation (:func:`utilities.inference.evaluation.score`) that writes, per
    sample, ``<name>_tpfpfn.gpkg`` beside its TP/FP/FN map: the connected regions of true positives, false
    positives and false negatives (field ``class``: TP, FP, FN) with their pixels, area and probabilities, in the
    sample's CRS (pixel coordinates without one). A context manager: a failed evaluation leaves no file.

    Parameters
    ----------
    out_dir : path
    threshold : float
        Change where the probability is at least this (as the evaluation counts).
    min_area : float
        Regions smaller than this (square metres) are left out.
    files : FileSet, optional
        The command's outputs that the files join.
    """

    def __init__(self, out_dir: PathLike, threshold: float, min_area: float = 0.0, files: Optional[FileSet] = None):
        self.out_dir, self.threshold, self.min_area, self.files = Path(out_dir), threshold, min_area, files
        self.sample: Optional[contextlib.ExitStack] = None
        self.add: Optional[Callable[[np.ndarray, np.ndarray], None]] = None

    def __enter__(self) -> "OutcomePolygons":
        return self

    def __exit__(self, *error) -> None:
        if self.sample is not None:
            self.sample.__exit__(*error)
            self.sample = None

    def __call__(self, item) -> None:
        """Take the rows of a :class:`~utilities.inference.evaluation.Prediction`."""
        if item.row == 0:
            crs, transform = _sample_grid(item.sample.date1, item.sample.window)
            check_min_area(self.min_area, crs, item.sample.date1)
            self.sample = contextlib.ExitStack()
            self.add = self.sample.enter_context(polygon_writer(
                self.out_dir / f"{item.sample.name}_tpfpfn.gpkg", item.label.shape[1], crs, transform, OUTCOMES,
                self.min_area, layer="tpfpfn", files=self.files))
        self.add(outcome_classes(item.probability >= self.threshold, item.label, item.valid), item.probability)
        if item.last:
            self.sample.close()
            self.sample = None
