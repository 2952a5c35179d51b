"""Dates made of band files: a multi-band raster, a GDAL VRT, or single-band files (a folder or a list) and a
band list, read as one raster on the grid of a reference band.

A date of band files becomes a small GDAL VRT (an XML file; no pixel is copied): one VRT band per named
band, in the band list's order, each a source window placed on the reference grid by georeference. GDAL
resamples a band whose pixels differ from the reference's on the fly, for the window being read only
(``resampling``, default ``bilinear``: right for reflectances and radiances; ``nearest`` for classes), so
chipping, prediction and evaluation read these dates window by window like any GeoTIFF, and no full-scene
copy is ever held in memory or written. The reference band is by default the finest (smallest pixel area;
the first listed among equals), e.g. B02 of Sentinel-2. The bands of one date must share a CRS and cover the
reference band's extent (within one of their own pixels).

Two dates on different grids are refused by :func:`utilities.raster.io.check_pair` as before; with
``align="date1"`` date 2 is resampled onto date 1's grid by georeference (a GDAL warped VRT, reprojecting
if the CRSs differ), window by window as well.

The VRT files are named by what they hold and by their sources' sizes and modification times (a changed
source gives a new name, so chip caches notice), in ``$MANTIS_CACHE/dates`` (default
``~/.cache/mantis/dates``); they are a few kilobytes each, written atomically, and reused when present.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union
from xml.sax.saxutils import escape

import numpy as np
import rasterio
import rasterio.shutil
import rasterio.warp
from affine import Affine
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.vrt import WarpedVRT

from utilities.atomic import atomic_path, atomic_write_text
from utilities.errors import InputError

PathLike = Union[str, os.PathLike]
#: a date: one raster (multi-band GeoTIFF, VRT), a folder of band files, or a list of band files
DateSource = Union[PathLike, Sequence[PathLike]]

#: suffixes of band files looked for in a date folder
BAND_SUFFIXES = (".tif", ".tiff", ".jp2", ".vrt")
#: resampling name -> GDAL's VRT source resampling (the names rasterio's Resampling also has)
RESAMPLING = {name: name for name in ("nearest", "bilinear", "cubic", "cubicspline", "lanczos", "average", "mode")}
DEFAULT_RESAMPLING = "bilinear"
#: the one alignment of date 2 offered: onto date 1's grid
ALIGN_CHOICES = ("date1",)
#: numpy dtype name -> GDAL data type name
_GDAL_TYPES = {"uint8": "Byte", "int8": "Int8", "uint16": "UInt16", "int16": "Int16", "uint32": "UInt32",
               "int32": "Int32", "float32": "Float32", "float64": "Float64"}


@dataclass(frozen=True)
class BandFile:
    """One named band of a date: band ``index`` (1-based) of the raster ``path``."""

    name: str
    path: Path
    index: int = 1


@dataclass(frozen=True)
class _Grid:
    width: int
    height: int
    crs: Any
    transform: Affine
    dtype: str
    nodata: Optional[float]


def _open(path: Path):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return rasterio.open(path)
    except (RasterioError, OSError) as error:
        raise InputError(f"cannot read raster {path}: {' '.join(str(error).split()).rstrip('.')}.") from None


def _grid(path: Path, index: int = 1) -> _Grid:
    with _open(path) as src:
        return _Grid(src.width, src.height, src.crs, src.transform, src.dtypes[index - 1], src.nodatavals[index - 1])


def cache_folder() -> Path:
    """Where the date VRTs are written: ``$MANTIS_CACHE/dates``, default ``~/.cache/mantis/dates``."""
    root = os.environ.get("MANTIS_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "mantis") / "dates"


def parse_band_names(value: Union[str, Sequence[str], None]) -> Optional[List[str]]:
    """A band list as names: ``"B02,B03"`` or ``["B02", "B03"]`` (or ``["B02,B03", "B04"]``), or None.

    Raises
    ------
    InputError
        An empty list or a band named twice.
    """
    if value is None:
        return None
    items = [value] if isinstance(value, str) else list(value)
    names = [part.strip() for item in items for part in str(item).split(",") if part.strip()]
    if not names:
        raise InputError("the band list is empty: name at least one band, e.g. B02,B03,B04")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise InputError(f"band {twice[0]} is listed twice in the band list {','.join(names)}")
    return names


def _band_of_stem(stem: str) -> str:
    """The band name of a band file's stem: the part after its last ``_`` (``T31UDQ_..._B8A`` -> ``B8A``)."""
    return stem.rsplit("_", 1)[-1]


def _in_folder(folder: Path, names: Sequence[str]) -> List[BandFile]:
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in BAND_SUFFIXES)
    found = []
    for name in names:
        matches = [p for p in files if _band_of_stem(p.stem).upper() == name.upper()]
        if not matches:
            raise InputError(f"date folder {folder} has no file for band {name} (expected a name ending in "
                             f"_{name} or {name}, suffix {', '.join(BAND_SUFFIXES)})")
        if len(matches) > 1:
            raise InputError(f"date folder {folder} has {len(matches)} files for band {name}: "
                             f"{', '.join(p.name for p in matches)}")
        found.append(BandFile(name, matches[0]))
    return found


def _in_raster(path: Path, names: Optional[Sequence[str]]) -> List[BandFile]:
    """The named bands of one raster, by their descriptions; a raster without any, of as many bands as named,
    is taken to hold them in the list's order."""
    with _open(path) as src:
        described = [d or str(i) for i, d in enumerate(src.descriptions, start=1)]
        positional = not any(src.descriptions) and names is not None and len(names) == src.count
        if not any(src.descriptions) and names is not None and not positional:
            raise InputError(f"raster {path} has {src.count} band(s) without names but the band list names "
                             f"{len(names)} ({','.join(names)})")
    if names is None or positional:
        return [BandFile(name, path, i) for i, name in enumerate(names or described, start=1)]
    upper = [d.upper() for d in described]
    found = []
    for name in names:
        if name.upper() not in upper:
            raise InputError(f"raster {path} has no band {name}: its bands are {', '.join(described)}")
        found.append(BandFile(name, path, upper.index(name.upper()) + 1))
    return found


def _in_list(paths: Sequence[PathLike], names: Optional[Sequence[str]]) -> List[BandFile]:
    paths = [Path(p) for p in paths]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise InputError(f"band file not found: {missing[0]}")
    if names is None:
        names = [_band_of_stem(p.stem) for p in paths]
        return [BandFile(name, path) for name, path in zip(parse_band_names(names), paths)]
    by_name = {_band_of_stem(p.stem).upper(): p for p in paths}
    if len(by_name) == len(paths):  # the files name their bands: take them by name, in the band list's order
        extra = sorted(set(by_name) - {n.upper() for n in names})
        if extra:
            raise InputError(f"band file {by_name[extra[0]]} is band {extra[0]}, which the band list "
                             f"{','.join(names)} does not name")
        absent = [n for n in names if n.upper() not in by_name]
        if absent:
            raise InputError(f"the band files {', '.join(str(p) for p in paths)} have no band {absent[0]}")
        return [BandFile(name, by_name[name.upper()]) for name in names]
    if len(names) != len(paths):
        raise InputError(f"{len(paths)} band files but {len(names)} band names ({','.join(names)})")
    return [BandFile(name, path) for name, path in zip(names, paths)]


def find_bands(source: DateSource, names: Optional[Sequence[str]] = None) -> List[BandFile]:
    """The named bands of a date, in the band list's order.

    Parameters
    ----------
    source : path or sequence of paths
        A folder of band files (``<anything>_<BAND>.tif`` or ``<BAND>.tif``; ``.tiff``, ``.jp2``, ``.vrt`` too), a
        list of single-band files, or one raster (its bands named by their descriptions, else ``1``, ``2``, ...).
    names : sequence of str, optional
        The bands to take, in order (required for a folder; default otherwise: every band of the source).

    Raises
    ------
    InputError
        One line naming the source and the band that is missing, extra or ambiguous.
    """
    if not isinstance(source, (str, os.PathLike)):
        return _in_list(list(source), names)
    path = Path(source)
    if path.is_dir():
        if names is None:
            raise InputError(f"date {path} is a folder of band files: give the band list "
                             f"(e.g. --bands B02,B03,B04,B08)")
        return _in_folder(path, names)
    if not path.exists():
        raise InputError(f"date not found: {path}")
    return _in_raster(path, names)


def _pixel_area(grid: _Grid) -> float:
    return abs(grid.transform.determinant)


def reference_band(bands: Sequence[BandFile], reference: Optional[str] = None) -> BandFile:
    """The band whose grid the date takes: ``reference`` by name, else the finest (the first listed among equal
    pixel areas)."""
    if reference is not None:
        chosen = [b for b in bands if b.name.upper() == reference.upper()]
        if not chosen:
            raise InputError(f"the reference band {reference} is not in the band list "
                             f"{','.join(b.name for b in bands)}")
        return chosen[0]
    areas = [_pixel_area(_grid(b.path, b.index)) for b in bands]
    return bands[areas.index(min(areas))]


def _destination(band: BandFile, grid: _Grid, ref: _Grid) -> Tuple[float, float, float, float]:
    """Where ``band``'s raster lies on the reference grid: ``(x, y, width, height)`` in reference pixels."""
    if grid.crs != ref.crs:
        raise InputError(f"band {band.name} ({band.path}) has CRS {grid.crs} but the reference band has {ref.crs}: "
                         f"the bands of a date must share a CRS")
    if grid.transform.b or grid.transform.d or ref.transform.b or ref.transform.d:
        raise InputError(f"band {band.name} ({band.path}) or the reference band has a rotated geotransform, "
                         f"which band stacking does not handle")
    x, y = ~ref.transform @ (grid.transform.c, grid.transform.f)
    width = grid.width * grid.transform.a / ref.transform.a
    height = grid.height * grid.transform.e / ref.transform.e
    slack_x, slack_y = abs(grid.transform.a / ref.transform.a), abs(grid.transform.e / ref.transform.e)
    if x > slack_x or y > slack_y or x + width < ref.width - slack_x or y + height < ref.height - slack_y:
        raise InputError(f"band {band.name} ({band.path}) does not cover the reference band's extent: it spans "
                         f"columns {x:.1f} to {x + width:.1f} and rows {y:.1f} to {y + height:.1f} of its "
                         f"{ref.width}x{ref.height} grid")
    return x, y, width, height


def _transform_text(t: Affine) -> str:
    return ", ".join(repr(float(v)) for v in (t.c, t.a, t.b, t.f, t.d, t.e))


def _band_xml(number: int, band: BandFile, grid: _Grid, ref: _Grid, dtype: str, resampling: str) -> str:
    x, y, width, height = _destination(band, grid, ref)
    nodata = "" if grid.nodata is None else f"<NoDataValue>{grid.nodata!r}</NoDataValue>"
    source_nodata = "" if grid.nodata is None else f"<NODATA>{grid.nodata!r}</NODATA>"
    return (f'  <VRTRasterBand dataType="{_GDAL_TYPES[dtype]}" band="{number}">\n'
            f"    <Description>{escape(band.name)}</Description>{nodata}\n"
            f'    <ComplexSource resampling="{resampling}">\n'
            f'      <SourceFilename relativeToVRT="0">{escape(str(band.path.resolve()))}</SourceFilename>\n'
            f"      <SourceBand>{band.index}</SourceBand>\n"
            f'      <SrcRect xOff="0" yOff="0" xSize="{grid.width}" ySize="{grid.height}"/>\n'
            f'      <DstRect xOff="{x!r}" yOff="{y!r}" xSize="{width!r}" ySize="{height!r}"/>{source_nodata}\n'
            f"    </ComplexSource>\n  </VRTRasterBand>\n")


def _stamp(paths: Sequence[Path]) -> List[List[Any]]:
    return [[str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns] for p in paths]


def _cached(stem: str, key: Dict[str, Any], folder: Optional[Path]) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return (cache_folder() if folder is None else Path(folder)) / f"{stem}-{digest}.vrt"


def _check_resampling(resampling: str) -> str:
    if resampling not in RESAMPLING:
        raise InputError(f"unknown resampling {resampling!r}: choose one of {', '.join(RESAMPLING)}")
    return RESAMPLING[resampling]


def stack_bands(bands: Sequence[BandFile], reference: Optional[str] = None, resampling: str = DEFAULT_RESAMPLING,
                stem: str = "date", folder: Optional[PathLike] = None) -> Path:
    """A VRT of ``bands`` (in order) on the reference band's grid; see the module docstring.

    Parameters
    ----------
    bands : sequence of BandFile
        :func:`find_bands`.
    reference : str, optional
        The band whose grid the date takes (default: the finest).
    resampling : str
        How bands of other grids are resampled (:data:`RESAMPLING`; default bilinear).
    stem : str
        The start of the VRT's file name (e.g. ``saclay_e-date1``).
    folder : path, optional
        Where to write it (default :func:`cache_folder`).

    Returns
    -------
    Path
        The VRT, written if not already there.

    Raises
    ------
    InputError
        A band of another CRS, a rotated grid, a band that does not cover the reference's extent, an
        unknown reference band or resampling.
    """
    resampling = _check_resampling(resampling)
    ref_band = reference_band(bands, reference)
    ref = _grid(ref_band.path, ref_band.index)
    grids = [_grid(b.path, b.index) for b in bands]
    dtype = np.result_type(*(g.dtype for g in grids)).name
    if dtype not in _GDAL_TYPES:
        raise InputError(f"the bands {','.join(b.name for b in bands)} have data types "
                         f"{', '.join(sorted({g.dtype for g in grids}))}, which have no common type GDAL stores")
    srs = "" if ref.crs is None else f"  <SRS>{escape(ref.crs.to_wkt())}</SRS>\n"
    xml = (f'<VRTDataset rasterXSize="{ref.width}" rasterYSize="{ref.height}">\n{srs}'
           f"  <GeoTransform>{_transform_text(ref.transform)}</GeoTransform>\n"
           + "".join(_band_xml(i, b, g, ref, dtype, resampling) for i, (b, g) in enumerate(zip(bands, grids), 1))
           + "</VRTDataset>\n")
    path = _cached(stem, {"xml": xml, "sources": _stamp(sorted({b.path for b in bands}))},
                   None if folder is None else Path(folder))
    if not path.exists():
        atomic_write_text(path, xml)
    return path


def align_onto(source: PathLike, target: PathLike, resampling: str = DEFAULT_RESAMPLING,
               stem: str = "aligned", folder: Optional[PathLike] = None) -> Path:
    """A warped VRT of raster ``source`` resampled onto the grid (CRS, geotransform, size) of raster ``target``.

    Pixels of the target grid that ``source`` does not cover take ``source``'s nodata value; a ``source``
    without one must cover the whole grid (within a pixel).

    Raises
    ------
    InputError
        A raster without georeferencing, or a ``source`` without nodata that does not cover the target grid.
    """
    source, target = Path(source), Path(target)
    resampling = _check_resampling(resampling)
    to = _grid(target)
    with _open(source) as src:
        if src.crs is None or to.crs is None:
            raise InputError(f"cannot align {source} onto {target}: both need a CRS and geotransform")
        nodata = src.nodata
        if nodata is None:
            left, bottom, right, top = rasterio.warp.transform_bounds(src.crs, to.crs, *src.bounds)
            tl, br = ~to.transform @ (left, top), ~to.transform @ (right, bottom)
            xs, ys = sorted((tl[0], br[0])), sorted((tl[1], br[1]))
            if xs[0] > 1 or ys[0] > 1 or xs[1] < to.width - 1 or ys[1] < to.height - 1:
                raise InputError(f"cannot align {source} onto {target}: it does not cover that grid and declares "
                                 f"no nodata value for the pixels it leaves out")
        path = _cached(stem, {"source": _stamp([source]), "target": _stamp([target]), "resampling": resampling},
                       None if folder is None else Path(folder))
        if not path.exists():
            with WarpedVRT(src, crs=to.crs, transform=to.transform, width=to.width, height=to.height,
                           resampling=Resampling[resampling], nodata=nodata) as warped:
                path.parent.mkdir(parents=True, exist_ok=True)
                with atomic_path(path, ".vrt") as tmp:
                    rasterio.shutil.copy(warped, tmp, driver="VRT")
    return path


def date_raster(source: DateSource, names: Optional[Sequence[str]] = None, reference: Optional[str] = None,
                resampling: str = DEFAULT_RESAMPLING, stem: str = "date", folder: Optional[PathLike] = None) -> Path:
    """A date as one raster path: a raster given alone is returned as it is; band files (or named bands of a
    raster) are stacked into a VRT (:func:`stack_bands`)."""
    if names is None and isinstance(source, (str, os.PathLike)) and Path(source).is_file():
        return Path(source)
    return stack_bands(find_bands(source, names), reference, resampling, stem, folder)


def pair_rasters(date1: DateSource, date2: DateSource, names: Optional[Sequence[str]] = None,
                 reference: Optional[str] = None, resampling: str = DEFAULT_RESAMPLING, align: Optional[str] = None,
                 stem: str = "pair", folder: Optional[PathLike] = None) -> Tuple[Path, Path]:
    """Both dates as raster paths (:func:`date_raster`); with ``align="date1"`` date 2 resampled onto date 1's
    grid (:func:`align_onto`). Without it, dates on different grids are left as they are, for
    :func:`utilities.raster.io.check_pair` to refuse."""
    if align is not None and align not in ALIGN_CHOICES:
        raise InputError(f"unknown alignment {align!r}: choose {' or '.join(ALIGN_CHOICES)} (or none)")
    first = date_raster(date1, names, reference, resampling, f"{stem}-date1", folder)
    second = date_raster(date2, names, reference, resampling, f"{stem}-date2", folder)
    if _same_grid(first, second):
        return first, second
    if align == "date1":
        return first, align_onto(second, first, resampling, f"{stem}-date2-on-date1", folder)
    if not all(_is_raster(source, path) for source, path in ((date1, first), (date2, second))):
        a, b = _grid(first), _grid(second)  # band files: name the sources, not their VRTs
        raise InputError(f"the dates are not on the same grid: {_describe(date1)} is {a.height}x{a.width} "
                         f"(rows x cols) with {_transform_text(a.transform)}, {_describe(date2)} is "
                         f"{b.height}x{b.width} with {_transform_text(b.transform)}: "
                         f"align date 2 onto date 1 (--align date1, data.align: date1)")
    return first, second


def _is_raster(source: DateSource, path: Path) -> bool:
    """``source`` was given as the raster ``path`` itself (not stacked into a VRT)."""
    return isinstance(source, (str, os.PathLike)) and Path(source) == path


def _describe(source: DateSource) -> str:
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    paths = [str(p) for p in source]
    return f"{paths[0]} (and {len(paths) - 1} more band files)" if len(paths) > 1 else paths[0]


def _same_grid(first: Path, second: Path) -> bool:
    a, b = _grid(first), _grid(second)
    if (a.width, a.height, a.crs) != (b.width, b.height, b.crs):
        return False
    return all(math.isclose(x, y, rel_tol=0, abs_tol=1e-9 * max(1.0, abs(x)))
               for x, y in zip(a.transform[:6], b.transform[:6]))


def label_on_grid(label: PathLike, grid_of: PathLike, values: Optional[Dict[int, int]] = None,
                  stem: str = "label", folder: Optional[PathLike] = None) -> Path:
    """A VRT of a label raster given the georeferencing of raster ``grid_of`` (for labels stored without any,
    such as OSCD's), its values mapped by ``values`` (e.g. ``{1: 0, 2: 1}``; unlisted values become 0).

    Raises
    ------
    InputError
        A label whose size differs from ``grid_of``'s.
    """
    label, grid_of = Path(label), Path(grid_of)
    grid, own = _grid(grid_of), _grid(label)
    if (own.width, own.height) != (grid.width, grid.height):
        raise InputError(f"label {label} is {own.height}x{own.width} (rows x cols) but its date {grid_of} is "
                         f"{grid.height}x{grid.width}")
    lut = "" if not values else "<LUT>" + ",".join(f"{k}:{v}" for k, v in sorted(values.items())) + "</LUT>"
    srs = "" if grid.crs is None else f"  <SRS>{escape(grid.crs.to_wkt())}</SRS>\n"
    xml = (f'<VRTDataset rasterXSize="{grid.width}" rasterYSize="{grid.height}">\n{srs}'
           f"  <GeoTransform>{_transform_text(grid.transform)}</GeoTransform>\n"
           f'  <VRTRasterBand dataType="Byte" band="1">\n    <ComplexSource>\n'
           f'      <SourceFilename relativeToVRT="0">{escape(str(label.resolve()))}</SourceFilename>\n'
           f"      <SourceBand>1</SourceBand>{lut}\n    </ComplexSource>\n  </VRTRasterBand>\n</VRTDataset>\n")
    path = _cached(stem, {"xml": xml, "sources": _stamp([label])}, None if folder is None else Path(folder))
    if not path.exists():
        atomic_write_text(path, xml)
    return path


def band_record(names: Optional[Sequence[str]], reference: Optional[str], resampling: str,
                align: Optional[str]) -> Optional[Dict[str, Any]]:
    """What a checkpoint records of band-file inputs (``CheckpointRecord.band_inputs``); None without names."""
    if names is None:
        return None
    return {"names": list(names), "reference": reference, "resampling": resampling, "align": align}


def check_band_names(trained: Sequence[str], given: Sequence[str], what: str) -> None:
    """Refuse a band list unlike the model's: one line naming the first missing or extra band (or the order).

    Raises
    ------
    InputError
    """
    upper = [t.upper() for t in trained]
    missing = [t for t in trained if t.upper() not in {g.upper() for g in given}]
    if missing:
        raise InputError(f"{what} lacks band {missing[0]}, which the model was trained on "
                         f"(its bands: {','.join(trained)})")
    extra = [g for g in given if g.upper() not in upper]
    if extra:
        raise InputError(f"{what} has band {extra[0]}, which the model was not trained on "
                         f"(its bands: {','.join(trained)})")
    if [g.upper() for g in given] != upper:
        raise InputError(f"{what} lists the bands as {','.join(given)}, the model takes them as {','.join(trained)}")


def split_band_list(tokens: Optional[Sequence[str]]) -> Tuple[Optional[List[int]], Optional[List[str]]]:
    """A command line's ``--bands``: 1-based indices (``1 2 3``) or band names (``B02,B03`` or ``B02 B03``), as
    ``(indices, None)`` or ``(None, names)``; ``(None, None)`` when not given."""
    names = parse_band_names(tokens)
    if names is None:
        return None, None
    if all(n.isdigit() for n in names):
        return [int(n) for n in names], None
    return None, names
