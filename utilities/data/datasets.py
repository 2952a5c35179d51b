"""Where change-detection samples come from: LEVIR-CD tiles, the WHU rasters, a user's own pair.

A :class:`Sample` names the two date images, the label and optionally a window of large rasters; the
sample lists built here are validated with :func:`utilities.raster.io.check_pair` (same size, bands, CRS and
grid) and are then chipped by :mod:`utilities.data.chips` (Section 8.3).
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

from utilities.errors import InputError
from utilities.raster.io import PathLike, PixelWindow, check_pair, raster_info

LEVIRCD_SPLITS = ("train", "val", "test")
LEVIRCD_FOLDERS = ("A", "B", "label")
#: the parts of a tile in :func:`tile_area_split`, by split
TILE_PARTS = {"train": ("top", "left"), "val": ("corner",)}
WHU_SPLITS = ("train", "val", "test")

#: The default spatial split of the WHU rasters: named regions, each with the split it belongs to and
#: its rectangle ``(row, col, height, width)`` as fractions of the raster (``fraction``) or in pixels
#: (``pixels``). Horizontal bands: train = top 63 % of the rows, val = the next 7 %, test = the
#: bottom 30 % (70 % train + val split 90/10, 30 % test; validation between train and test).
WHU_DEFAULT_SPLIT: Dict[str, Dict[str, Any]] = {
    "train": {"split": "train", "fraction": (0.0, 0.0, 0.63, 1.0)},
    "val": {"split": "val", "fraction": (0.63, 0.0, 0.07, 1.0)},
    "test": {"split": "test", "fraction": (0.70, 0.0, 0.30, 1.0)},
}


@dataclass
class Sample:
    """One co-registered pair of dates with its change label.

    Attributes
    ----------
    name : str
        Identifier (LEVIR-CD: the tile's file name without suffix; WHU: the region's name).
    date1, date2 : Path
        The images of the two dates.
    label : Path or None
        The binary change label (0/1 or 0/255), None for unlabelled data.
    window : (row, col, height, width) or None
        The part of the rasters the sample covers; None for the whole raster.
    """

    name: str
    date1: Path
    date2: Path
    label: Optional[Path] = None
    window: Optional[PixelWindow] = None


def _png_names(folder: Path) -> List[str]:
    if not folder.is_dir():
        raise InputError(f"LEVIR-CD folder not found: {folder}.")
    return sorted(p.name for p in folder.iterdir() if p.suffix.lower() == ".png" and p.is_file())


def levircd_samples(root: PathLike, split: Optional[str] = None, labelled: bool = True) -> List[Sample]:
    """The samples of LEVIR-CD (Chen & Shi 2020; paper Section 8.1).

    Parameters
    ----------
    root : str or PathLike
        With ``split``: the data set root in the official layout ``root/{train,val,test}/{A,B,label}/*.png``
        (1024 x 1024 tiles, labels 0/255). Without: a folder holding ``A/``, ``B/``, ``label/`` directly
        (any tile size).
    split : {"train", "val", "test"}, optional
        The official split to read.
    labelled : bool
        False: only ``A/`` and ``B/`` are needed (prediction); the samples have no label.

    Returns
    -------
    list of Sample
        One per tile, sorted by name (``A/<name>.png``, ``B/<name>.png``, ``label/<name>.png``).

    Raises
    ------
    InputError
        Unknown split; missing or empty folder; a tile without its partner in another folder (named);
        a pair that fails :func:`~utilities.raster.io.check_pair`.
    """
    folder = Path(root)
    if split is not None:
        if split not in LEVIRCD_SPLITS:
            raise InputError(f"unknown LEVIR-CD split {split!r}: expected one of {', '.join(LEVIRCD_SPLITS)}.")
        folder = folder / split
    names = {sub: _png_names(folder / sub) for sub in (LEVIRCD_FOLDERS if labelled else LEVIRCD_FOLDERS[:2])}
    if not names["A"]:
        raise InputError(f"no .png images in the LEVIR-CD folder {folder / 'A'}.")
    every = set().union(*names.values())
    for sub, present in names.items():
        missing = sorted(every.difference(present))
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise InputError(f"LEVIR-CD tile {missing[0]} has no partner {folder / sub / missing[0]}{more}.")
    samples = [Sample(Path(n).stem, folder / "A" / n, folder / "B" / n, folder / "label" / n if labelled else None)
               for n in names["A"]]
    _validate(samples)
    return samples


def tile_parts(height: int, width: int, fraction: float) -> Dict[str, PixelWindow]:
    """The parts of a ``height x width`` tile in the paper's validation split (see :func:`tile_area_split`):
    ``{"corner": ..., "top": ..., "left": ...}`` as ``(row, col, height, width)``."""
    rows, cols = (round(math.sqrt(fraction) * side) for side in (height, width))
    return {"corner": (height - rows, width - cols, rows, cols), "top": (0, 0, height - rows, width),
            "left": (height - rows, 0, rows, width - cols)}


def tile_area_split(tiles: Sequence[Sample], fraction: float, split: str, chip_size: int = 1) -> List[Sample]:
    """The paper's validation split of LEVIR-CD (Section 8.1: "for each tile from the training and validation
    set, we extracted ~10 % of the area of each tile for extracting validation training chips").

    Every tile gives its bottom-right corner, ``round(sqrt(fraction) H) x round(sqrt(fraction) W)`` pixels,
    to validation, as the authors' chipping takes its validation chips from the last rows and columns of
    each tile. Training takes the rest as two rectangles, the band above the corner (all columns) and the
    block left of it, so that every pixel is on one side and no chip, cut within its rectangle, holds
    pixels of both sides. (The authors' chipping cuts its training chips from the whole chip grid, so its
    training chips overlap its validation chips by half a chip, and it also sends the last row and column
    of chips to validation: 16 of the 48 chips it cuts from a 1024 x 1024 tile.) Deterministic: geometry only.

    Parameters
    ----------
    tiles : sequence of Sample
        Whole tiles (no ``window``), e.g. :func:`levircd_samples` of the official train and val folders.
    fraction : float
        The share of each tile's area for validation, in (0, 1) (the paper: ~0.1).
    split : {"train", "val"}
        The side to return.
    chip_size : int
        The chip side: every part must hold a chip.

    Returns
    -------
    list of Sample
        Per tile, its parts of ``split`` (:data:`TILE_PARTS`) as windows, named ``<tile>/<part>``.

    Raises
    ------
    InputError
        A fraction outside (0, 1), an unknown split, a tile with a window, or one whose parts cannot each
        hold a chip.
    """
    if not 0 < fraction < 1:
        raise InputError(f"the validation share of each tile must be in (0, 1), got {fraction}.")
    if split not in TILE_PARTS:
        raise InputError(f"unknown split {split!r} of the tiles: expected one of {', '.join(TILE_PARTS)}.")
    samples = []
    for tile in tiles:
        if tile.window is not None:
            raise InputError(f"sample {tile.name} ({tile.date1}) is a window, not a whole tile to split.")
        info = raster_info(tile.date1)
        parts = tile_parts(info.height, info.width, fraction)
        small = {name: part for name, part in parts.items() if min(part[2:]) < chip_size}
        if small:
            listed = ", ".join(f"{name} {part[2]}x{part[3]}" for name, part in small.items())
            raise InputError(f"tile {tile.date1} is {info.height}x{info.width} (rows x cols): with {fraction:g} of it "
                             f"for validation, its parts ({listed}) cannot hold a {chip_size}x{chip_size} chip.")
        samples += [Sample(f"{tile.name}/{name}", tile.date1, tile.date2, tile.label, parts[name])
                    for name in TILE_PARTS[split]]
    return samples


def _validate(samples: Sequence[Sample]) -> None:
    for sample in samples:
        check_pair(sample.date1, sample.date2, sample.label)


def _region_window(name: str, region: Mapping[str, Any], height: int, width: int) -> PixelWindow:
    """A region of the split config in pixels; fractional edges are rounded, so that regions which
    share an edge as fractions share it in pixels (no gap, no overlap)."""
    units = [key for key in ("fraction", "pixels") if key in region]
    values = region[units[0]] if len(units) == 1 else ()
    valid = isinstance(values, (list, tuple)) and len(values) == 4 and all(
        isinstance(v, numbers.Real) and not isinstance(v, bool) for v in values)
    if not valid:
        raise InputError(f"WHU split region {name!r} needs exactly one of 'fraction' or 'pixels' as "
                         f"(row, col, height, width), got {dict(region)}.")
    row, col, rows, cols = values
    if units[0] == "pixels":
        return int(row), int(col), int(rows), int(cols)
    top, bottom = (round(round(f, 9) * height) for f in (row, row + rows))
    left, right = (round(round(f, 9) * width) for f in (col, col + cols))
    return top, left, bottom - top, right - left


def _overlap(a: PixelWindow, b: PixelWindow) -> bool:
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


def whu_regions(height: int, width: int,
                split_config: Optional[Mapping[str, Mapping[str, Any]]] = None) -> Dict[str, Dict[str, Any]]:
    """The regions of a WHU split config in pixels: ``{name: {"split": ..., "window": (row, col, h, w)}}``.

    Raises
    ------
    InputError
        A region with an unknown split, an empty region, one that leaves the raster, or two regions of
        different splits that overlap (which would leak training pixels into validation or test).
    """
    config = WHU_DEFAULT_SPLIT if split_config is None else split_config
    regions = {}
    for name, region in config.items():
        split = region.get("split") if isinstance(region, Mapping) else None
        if split not in WHU_SPLITS:
            raise InputError(f"WHU split region {name!r} has split {split!r}: expected one of {', '.join(WHU_SPLITS)}.")
        window = _region_window(name, region, height, width)
        row, col, rows, cols = window
        if rows < 1 or cols < 1 or row < 0 or col < 0 or row + rows > height or col + cols > width:
            raise InputError(f"WHU split region {name!r} = {window} (row, col, height, width) is empty or leaves "
                             f"the {height}x{width} (rows x cols) raster.")
        for other, seen in regions.items():
            if seen["split"] != split and _overlap(window, seen["window"]):
                raise InputError(f"WHU split regions {other!r} ({seen['split']}) and {name!r} ({split}) overlap.")
        regions[name] = {"split": split, "window": window}
    return regions


def whu_samples(date1: PathLike, date2: PathLike, label: Optional[PathLike], split: str,
                split_config: Optional[Mapping[str, Mapping[str, Any]]] = None) -> List[Sample]:
    """The samples of one split of the WHU building change data set (Ji et al. 2019; Section 8.2).

    WHU is one pair of large co-registered GeoTIFFs (2011 and 2016, 0.3 m) with a change label raster.
    The paper splits it *spatially*: 30 % of the area for testing and the remaining 70 % split 90/10
    into training and validation, with the validation area between training and test, so that no
    training chip is a spatial neighbour of a test chip (Section 8.2, Fig. 9). Random splits of the
    chips, common in the literature, put correlated neighbouring chips on both sides and inflate the
    scores (Section 9.2). The paper's exact rectangles are only given as a figure, so the default
    (:data:`WHU_DEFAULT_SPLIT`) is a horizontal split of the rows: train = top 63 %, val = next 7 %,
    test = bottom 30 %. Supply your own regions through ``split_config``.

    Parameters
    ----------
    date1, date2, label : str or PathLike
        The 2011 image, the 2016 image and the change label (0/255), same grid.
    split : {"train", "val", "test"}
        The split to return.
    split_config : mapping, optional
        Named regions ``{name: {"split": "train", "fraction": (row, col, height, width)}}``, with
        fractions of the raster's rows/columns, or ``"pixels": (row, col, height, width)``; a split may
        have several regions. Default: :data:`WHU_DEFAULT_SPLIT`.

    Returns
    -------
    list of Sample
        One per region of ``split``, named after the region, with its pixel window.

    Raises
    ------
    InputError
        Rasters that fail :func:`~utilities.raster.io.check_pair`; an unknown split; a bad region (see
        :func:`whu_regions`).
    """
    if split not in WHU_SPLITS:
        raise InputError(f"unknown WHU split {split!r}: expected one of {', '.join(WHU_SPLITS)}.")
    info = check_pair(date1, date2, label)
    regions = whu_regions(info.height, info.width, split_config)
    label = None if label is None else Path(label)
    samples = [Sample(name, Path(date1), Path(date2), label, region["window"])
               for name, region in regions.items() if region["split"] == split]
    if not samples:
        raise InputError(f"the WHU split config has no region for split {split!r}.")
    return samples


def pair_samples(date1: PathLike, date2: PathLike, label: Optional[PathLike] = None) -> List[Sample]:
    """One generic pair of co-registered rasters (GeoTIFF, PNG or JPEG), e.g. a user's own data.

    Returns
    -------
    list of Sample
        One sample named after ``date1``'s file name (without suffix), covering the whole rasters.

    Raises
    ------
    InputError
        Rasters that fail :func:`~utilities.raster.io.check_pair`.
    """
    samples = [Sample(Path(date1).stem, Path(date1), Path(date2), None if label is None else Path(label))]
    _validate(samples)
    return samples

