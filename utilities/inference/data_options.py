"""The data a model is evaluated or selected on, from the options of
:func:`utilities.cli.add_data_arguments` (``evaluate.py``, ``select_models.py``): a LEVIR-CD folder, an OSCD
data set or one pair, with dates of band files read as the model was trained on them."""
from __future__ import annotations

import argparse
from typing import List

from utilities.artifacts.band_inputs import model_band_inputs, model_dates
from utilities.data.datasets import Sample, levircd_samples, pair_samples
from utilities.data.oscd import oscd_cities, oscd_samples
from utilities.errors import InputError
from utilities.raster.bands import DEFAULT_RESAMPLING, check_band_names, pair_rasters, parse_band_names


def data_samples(args: argparse.Namespace) -> List[Sample]:
    """The samples named by the options of :func:`add_data_arguments`.

    Raises
    ------
    InputError
        Neither or both of ``--levircd`` and ``--date1/--date2/--label``, an incomplete pair, or bad data.
    """
    pair = (args.date1, args.date2, args.label)
    if (args.levircd is not None) + (args.oscd is not None) + any(p is not None for p in pair) != 1:
        raise InputError("give either --levircd ROOT or --date1, --date2 and --label (or --oscd ROOT)")
    if args.levircd is not None:
        return levircd_samples(args.levircd, None if args.split == "none" else args.split)
    names = parse_band_names(args.bands)
    model = getattr(args, "model", None) or getattr(args, "run_dir", None)  # evaluate.py / select_models.py
    if args.oscd is not None:
        trained = model_band_inputs(model) if model is not None else None
        if trained is not None and names is not None:
            check_band_names(trained["names"], names, "the band list --bands")
        cities = oscd_cities(args.oscd) if args.cities is None else parse_band_names(args.cities)
        settings = {} if trained is None else {"reference": trained.get("reference"),
                                               "resampling": trained.get("resampling") or DEFAULT_RESAMPLING}
        return oscd_samples(args.oscd, cities, bands=trained["names"] if trained else names, align=args.align,
                            **settings)
    if any(p is None for p in pair):
        raise InputError("a pair needs all of --date1, --date2 and --label")
    if model is not None:
        date1, date2 = model_dates(model, args.date1, args.date2, names, args.align)
    else:
        date1, date2 = pair_rasters(args.date1, args.date2, names, align=args.align)
    return pair_samples(date1, date2, args.label)
