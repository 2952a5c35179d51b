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
from typing import Callable, Mapping, Optional, Sequence, Type

from utilities.data.datasets import LEVIRCD_SPLITS
from utilities.errors import InputError
from utilities.raster.bands import ALIGN_CHOICES

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


def data_description(args: argparse.Namespace) -> str:
    """The data options in words, for reports."""
    if args.levircd is not None:
        return f"LEVIR-CD {args.levircd} split {args.split}"
    if args.oscd is not None:
        return f"OSCD {args.oscd} cities {args.cities or 'of train.txt'}"
    return f"pair {args.date1} / {args.date2}, label {args.label}"
