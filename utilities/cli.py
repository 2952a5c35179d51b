"""What the command-line entry points (``evaluate.py``, ``select_models.py``, ``export.py``) share: error
handling and the options that name labelled data.

A command's ``main(argv) -> int`` raises :class:`~utilities.errors.InputError` for unusable inputs;
:func:`entry_point` turns that into one line ``error: <message>`` on stderr and exit status 2 (no stack
trace). Commands can map further exception types to other statuses (e.g. a failed ONNX parity check
to 1). Whatever the mapping, a failed read or write of a file (:class:`OSError`, e.g. a full disk) ends
with one line and status 1, and Ctrl-C (SIGINT) with the line ``interrupted`` and status 130 (128 + the
signal number, as shells report it).
"""
from __future__ import annotations

import argparse
import functools
import sys
from typing import Callable, List, Mapping, Optional, Sequence, Type

from utilities.artifacts.band_inputs import model_band_inputs, model_dates
from utilities.data.datasets import LEVIRCD_SPLITS, Sample, levircd_samples, pair_samples
from utilities.data.oscd import oscd_cities, oscd_samples
from utilities.errors import InputError
from utilities.raster.bands import ALIGN_CHOICES, DEFAULT_RESAMPLING, check_band_names, pair_rasters, parse_band_names

Main = Callable[[Optional[Sequence[str]]], int]

#: exception type -> exit status, checked in order (the first matching type wins)
DEFAULT_FAILURES: Mapping[Type[BaseException], int] = {InputError: 2}
#: exit status of a failed file operation (:class:`OSError`) that ``failures`` does not map
OS_ERROR_STATUS = 1
#: exit status after SIGINT (128 + 2)
INTERRUPTED_STATUS = 130


def _message(err: BaseException) -> str:
    """One line: an :class:`OSError`'s reason and file, anything else's text."""
    if isinstance(err, OSError) and err.strerror:
        text = err.strerror if err.filename is None else f"{err.strerror}: {err.filename}"
    else:
        text = str(err) or type(err).__name__
    return " ".join(text.split())


def entry_point(main: Main, failures: Mapping[Type[BaseException], int] = DEFAULT_FAILURES) -> Main:
    """Wrap ``main`` so that the exceptions in ``failures`` end it with a one-line message and their status.

    Parameters
    ----------
    main : callable
        ``main(argv) -> int``, argv as for ``argparse`` (None: ``sys.argv[1:]``).
    failures : mapping of exception type to int
        Exit status per exception type; default: :class:`~utilities.errors.InputError` -> 2. An
        :class:`OSError` not mapped here exits with :data:`OS_ERROR_STATUS`, SIGINT with
        :data:`INTERRUPTED_STATUS`.

    Returns
    -------
    callable
        ``run(argv=None) -> int``; use as ``sys.exit(run())``.
    """
    statuses = {**failures, OSError: failures.get(OSError, OS_ERROR_STATUS)}

    @functools.wraps(main)
    def run(argv: Optional[Sequence[str]] = None) -> int:
        try:
            return main(argv)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return INTERRUPTED_STATUS
        except tuple(statuses) as err:
            print(f"error: {_message(err)}", file=sys.stderr)
            return next(code for kind, code in statuses.items() if isinstance(err, kind))

    return run


def add_data_arguments(parser: argparse.ArgumentParser, split: str) -> None:
    """The options that name labelled data: a LEVIR-CD folder and split, an OSCD folder and cities, or one pair
    with its label (dates as rasters or folders of band files, :mod:`utilities.raster.bands`)."""
    group = parser.add_argument_group("labelled data (a LEVIR-CD folder, an OSCD folder, or one pair of dates)")
    group.add_argument("--levircd", metavar="ROOT", help="LEVIR-CD root (ROOT/<split>/{A,B,label}/*.png)")
    group.add_argument("--split", default=split, choices=(*LEVIRCD_SPLITS, "none"),
                       help=f"LEVIR-CD split (default {split}); 'none': ROOT holds A/, B/, label/ itself")
    group.add_argument("--date1", help="date 1 image of one pair (GeoTIFF, PNG or JPEG)")
    group.add_argument("--date2", help="date 2 image of the pair")
    group.add_argument("--label", help="change label of the pair (0/1 or 0/255)")
    group.add_argument("--oscd", metavar="ROOT", help="an OSCD data set (ROOT/images/<city>/imgs_1, imgs_2, "
                       "ROOT/train_labels/<city>/cm) instead: the cities of --cities")
    group.add_argument("--cities", help="with --oscd: comma-separated cities (default: those of ROOT/train.txt)")
    group.add_argument("--bands", help="band names of dates made of band files, e.g. B02,B03,B04 (default: the "
                       "model's; dates that lack one of them are refused)")
    group.add_argument("--align", choices=ALIGN_CHOICES, help="resample date 2 onto date 1's grid by georeference")


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


def data_description(args: argparse.Namespace) -> str:
    """The data options in words, for reports."""
    if args.levircd is not None:
        return f"LEVIR-CD {args.levircd} split {args.split}"
    if args.oscd is not None:
        return f"OSCD {args.oscd} cities {args.cities or 'of train.txt'}"
    return f"pair {args.date1} / {args.date2}, label {args.label}"
