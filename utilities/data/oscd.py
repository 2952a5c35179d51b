"""The Onera Satellite Change Detection data set (OSCD; Caye Daudt et al., IGARSS 2018): Sentinel-2 Level-1C
pairs of 24 cities, 13 bands per date as one GeoTIFF each at 10, 20 and 60 m, with pixel change labels.

Layout (the data set's own)::

    ROOT/train.txt, test.txt                          comma-separated city names
    ROOT/images/<city>/imgs_1/<product>_B01.tif ...   date 1, one file per band (B01-B12, B8A)
    ROOT/images/<city>/imgs_2/...                     date 2
    ROOT/train_labels/<city>/cm/<city>-cm.tif         change label (test_labels/ for the test cities)

What the reader copes with:

- every date becomes a VRT of its band files on the grid of the finest band (10 m), the 20 m and 60 m bands
  resampled on the fly (:mod:`utilities.raster.bands`; bilinear by default);
- the label tifs carry no georeferencing: the label is put on date 1's 10 m grid (the data set's: "the older
  images with resolution of 10m per pixel is used"), after checking that it has that grid's size;
- the labels' values: the files hold 1 = no change, 2 = change (measured), although the data set's README
  says 0/1; both codings (and 0/255) are read, anything else is refused naming the file and its values;
- a city whose two dates are on different grids (``saclay_e``: 688 x 639 vs 679 x 631) is refused in one
  line by :func:`utilities.raster.io.check_pair` unless ``align="date1"`` resamples date 2 onto date 1's grid.

Splits are by city (neighbouring chips of one city never fall on both sides).
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from utilities.data.datasets import Sample
from utilities.errors import InputError
from utilities.raster.bands import DEFAULT_RESAMPLING, label_on_grid, pair_rasters
from utilities.raster.io import PathLike, check_pair, read_image

#: Sentinel-2 MSI bands in the data set's order of wavelength (B8A after B08)
SENTINEL2_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12")
#: the label codings met: values found -> mapping to 0 (no change) / 1 (change); None: read as it is
LABEL_CODINGS = {(1, 2): {1: 0, 2: 1}, (0, 1): None, (0, 255): None}
LABEL_FOLDERS = ("train_labels", "test_labels")


def _listed(path: Path) -> List[str]:
    return [name.strip() for name in path.read_text().replace("\n", ",").split(",") if name.strip()]


def oscd_cities(root: PathLike, listing: str = "train") -> List[str]:
    """The cities of ``ROOT/<listing>.txt``, or, without it, every city folder under ``ROOT/images``.

    Raises
    ------
    InputError
        ``ROOT/images`` missing, or no city found.
    """
    root = Path(root)
    if not (root / "images").is_dir():
        raise InputError(f"OSCD folder {root} has no images/ folder (expected ROOT/images/<city>/imgs_1, imgs_2)")
    listed = root / f"{listing}.txt"
    cities = _listed(listed) if listed.is_file() else sorted(p.name for p in (root / "images").iterdir() if p.is_dir())
    if not cities:
        raise InputError(f"OSCD folder {root} lists no city ({listed if listed.is_file() else root / 'images'})")
    return cities


def label_path(root: PathLike, city: str) -> Optional[Path]:
    """The city's label tif (``train_labels/`` or ``test_labels/``), or None when it has none."""
    for folder in LABEL_FOLDERS:
        path = Path(root) / folder / city / "cm" / f"{city}-cm.tif"
        if path.is_file():
            return path
    return None


def label_coding(path: PathLike) -> Optional[Dict[int, int]]:
    """How a label file codes change (:data:`LABEL_CODINGS`), from the values it holds.

    Raises
    ------
    InputError
        Values of none of the codings, listed with the file.
    """
    values = tuple(int(v) for v in np.unique(read_image(path)[0]))
    for coding, mapping in LABEL_CODINGS.items():
        if set(values) <= set(coding):  # 1/2 first: a label of 1s alone is OSCD's 'no change'
            return mapping
    raise InputError(f"OSCD label {path} holds values {list(values)[:10]}: expected 1/2 (no change/change), 0/1 "
                     f"or 0/255")


def oscd_city(root: PathLike, city: str, bands: Optional[Sequence[str]] = None, reference: Optional[str] = None,
              resampling: str = DEFAULT_RESAMPLING, align: Optional[str] = None, labelled: bool = True,
              folder: Optional[PathLike] = None) -> Sample:
    """One OSCD city as a :class:`~utilities.data.datasets.Sample` of VRTs (dates and label).

    Parameters
    ----------
    root : path
        The data set's root.
    city : str
        A folder of ``ROOT/images``.
    bands : sequence of str, optional
        The bands to read, in order (default: all 13, :data:`SENTINEL2_BANDS`).
    reference, resampling, align
        As :func:`utilities.raster.bands.pair_rasters` (default: the finest band's grid, bilinear, no alignment).
    labelled : bool
        False: no label needed (prediction).
    folder : path, optional
        Where the VRTs go (default :func:`utilities.raster.bands.cache_folder`).

    Raises
    ------
    InputError
        A missing city, date folder, band file or label; a label of another size or coding; dates on
        different grids without ``align``.
    """
    base = Path(root) / "images" / city
    if not base.is_dir():
        raise InputError(f"OSCD city {city} not found: no folder {base}")
    dates = [base / f"imgs_{n}" for n in (1, 2)]
    for date in dates:
        if not date.is_dir():
            raise InputError(f"OSCD city {city} has no date folder {date}")
    names = list(SENTINEL2_BANDS if bands is None else bands)
    date1, date2 = pair_rasters(*dates, names, reference, resampling, align, stem=city, folder=folder)
    label = None
    if labelled:
        found = label_path(root, city)
        if found is None:
            expected = Path(root) / LABEL_FOLDERS[0] / city / "cm" / f"{city}-cm.tif"
            raise InputError(f"OSCD city {city} has no label {expected}")
        label = label_on_grid(found, date1, label_coding(found), stem=f"{city}-label", folder=folder)
    check_pair(date1, date2, label)
    return Sample(city, date1, date2, label)


def oscd_samples(root: PathLike, cities: Sequence[str], **kwargs) -> List[Sample]:
    """:func:`oscd_city` of each city (keyword arguments passed on)."""
    if not cities:
        raise InputError(f"no OSCD city selected from {root}")
    return [oscd_city(root, city, **kwargs) for city in cities]


def split_cities(root: PathLike, split: str, train: Optional[Sequence[str]],
                 val: Optional[Sequence[str]]) -> List[str]:
    """The cities of ``split`` ("train" or "val"): ``val`` for validation; ``train`` for training, by default the
    cities of ``ROOT/train.txt`` not in ``val``.

    Raises
    ------
    InputError
        No validation city, a city on both sides, or no training city left.
    """
    if not val:
        raise InputError("config: data.kind 'oscd' needs data.val_cities (the cities held out for validation)")
    train = [c for c in oscd_cities(root) if c not in val] if train is None else list(train)
    both = sorted(set(train) & set(val))
    if both:
        raise InputError(f"config: OSCD city {both[0]} is in both data.train_cities and data.val_cities")
    if not train:
        raise InputError(f"config: no OSCD training city left in {root} once data.val_cities are held out")
    return train if split == "train" else list(val)


def oscd_source(cfg, split: str) -> List[Sample]:
    """The samples of ``split`` for a training config's ``data`` section of kind ``oscd``
    (``utilities.training.pipeline.SOURCES``)."""
    if cfg.root in (None, ""):
        raise InputError("config: data.kind 'oscd' needs data.root")
    cities = split_cities(cfg.root, split, cfg.train_cities, cfg.val_cities)
    return oscd_samples(cfg.root, cities, bands=cfg.band_names, reference=cfg.reference_band,
                        resampling=cfg.resampling, align=cfg.align)
