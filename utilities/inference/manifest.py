"""A manifest of pairs to predict (a region of many scenes), and the tasks it makes for a job array.

A manifest is a CSV file with a header row, or a YAML file (a list of mappings, or a mapping whose
``pairs`` key holds that list). Each pair has ``date1``, ``date2``, ``out`` (the pair's output folder)
and optionally ``label`` (a change label on the dates' grid); relative paths are relative to the
manifest's folder. Example (CSV)::

    date1,date2,label,out
    2011/tile_a.tif,2016/tile_a.tif,,pred/tile_a
    2011/tile_b.tif,2016/tile_b.tif,labels/tile_b.tif,pred/tile_b

:func:`read_manifest` checks every pair before any work is done (a missing column or file, dates that
are not on one grid, two pairs writing to one folder) and names the manifest, the pair and its line.
:func:`plan_tasks` makes one task per pair, or one per block of rows of a pair taller than
``block_rows`` (:mod:`utilities.inference.blocks`); task numbers are the order of the manifest, so a
job array's task ``i`` is :func:`plan_tasks`'s task ``i``.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Union

import yaml

from utilities.errors import InputError
from utilities.inference.blocks import Block, plan_blocks
from utilities.raster.io import check_pair

PathLike = Union[str, Path]
REQUIRED = ("date1", "date2", "out")
OPTIONAL = ("label",)


@dataclass(frozen=True)
class Pair:
    """One pair of a manifest: ``number`` (1-based, in the manifest's order), its files and output folder,
    and the rows of its dates (``height``)."""

    number: int
    date1: Path
    date2: Path
    out: Path
    height: int
    label: Optional[Path] = None


@dataclass(frozen=True)
class Task:
    """Task ``index`` (0-based) of a manifest: a whole pair (``block.count == 1``) or one block of its rows."""

    index: int
    pair: Pair
    block: Block

    def describe(self) -> str:
        where = f"pair {self.pair.number} ({self.pair.date1.name} -> {self.pair.date2.name})"
        if self.block.count == 1:
            return where
        return (f"{where}, block {self.block.index + 1}/{self.block.count} "
                f"(rows {self.block.first}-{self.block.stop - 1} of {self.pair.height})")


def _rows(path: Path) -> List[Dict[str, Any]]:
    """The manifest's entries, each with ``_where`` (how to name it in messages)."""
    try:
        text = path.read_text()
    except OSError as err:
        raise InputError(f"manifest {path} cannot be read: {err.strerror or err}") from None
    except UnicodeDecodeError:
        raise InputError(f"manifest {path} is not a text file") from None
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(text.splitlines())
        unknown = sorted(set(reader.fieldnames or ()) - set(REQUIRED) - set(OPTIONAL))
        if unknown or not set(REQUIRED) <= set(reader.fieldnames or ()):
            raise InputError(f"manifest {path}: the header must name the columns {', '.join(REQUIRED)} and "
                             f"optionally {', '.join(OPTIONAL)}; it has {', '.join(reader.fieldnames or ['none'])}")
        return [{**{k: v for k, v in row.items() if k is not None}, "_where": f"pair {i} (line {reader.line_num})",
                 "_extra": row.get(None)} for i, row in enumerate(reader, 1)]
    if path.suffix.lower() not in (".yaml", ".yml"):
        raise InputError(f"manifest {path}: give a .csv, .yaml or .yml file")
    try:
        content = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise InputError(f"manifest {path} is not valid YAML: {' '.join(str(err).split())}") from None
    if isinstance(content, dict) and set(content) == {"pairs"}:
        content = content["pairs"]
    if not isinstance(content, list) or not all(isinstance(e, dict) for e in content):
        raise InputError(f"manifest {path}: expected a list of pairs (mappings with {', '.join(REQUIRED)}), "
                         f"or a mapping with that list under 'pairs'")
    return [{**entry, "_where": f"pair {i}"} for i, entry in enumerate(content, 1)]


def _path(value: Any, base: Path) -> Path:
    path = Path(str(value)).expanduser()
    return path if path.is_absolute() else base / path


def read_manifest(path: PathLike) -> List[Pair]:
    """The pairs of a manifest (module docstring), every one checked.

    Raises
    ------
    InputError
        One line naming the manifest and the pair (and line of a CSV): an unreadable or empty manifest,
        a missing or unknown field, dates or label that :func:`~utilities.raster.io.check_pair` refuses,
        two pairs with the same output folder.
    """
    path = Path(path)
    pairs: List[Pair] = []
    outs: Dict[Path, str] = {}
    for row in _rows(path):
        where = f"manifest {path}, {row.pop('_where')}"
        if row.pop("_extra", None):
            raise InputError(f"{where}: more values than the header's columns")
        unknown = sorted(set(row) - set(REQUIRED) - set(OPTIONAL))
        if unknown:
            raise InputError(f"{where}: unknown field(s) {', '.join(map(str, unknown))} (known: "
                             f"{', '.join(REQUIRED + OPTIONAL)})")
        missing = [k for k in REQUIRED if row.get(k) in (None, "")]
        if missing:
            raise InputError(f"{where}: no {', '.join(missing)}")
        date1, date2, out = (_path(row[k], path.parent) for k in REQUIRED)
        label = None if row.get("label") in (None, "") else _path(row["label"], path.parent)
        try:
            info = check_pair(date1, date2, label)
        except InputError as err:
            raise InputError(f"{where}: {err}") from None
        resolved = out.resolve()
        if resolved in outs:
            raise InputError(f"{where}: its out {out} is also the out of {outs[resolved]}")
        outs[resolved] = where.split(", ", 1)[1]
        pairs.append(Pair(len(pairs) + 1, date1, date2, out, info.height, label))
    if not pairs:
        raise InputError(f"manifest {path} lists no pairs")
    return pairs


def plan_tasks(pairs: Sequence[Pair], block_rows: Optional[int] = None) -> List[Task]:
    """The tasks of ``pairs`` in order: each pair whole, or in blocks of at most ``block_rows`` rows."""
    tasks: List[Task] = []
    for pair in pairs:
        for block in plan_blocks(pair.height, block_rows):
            tasks.append(Task(len(tasks), pair, block))
    return tasks


def array_spec(indices: Iterable[int]) -> str:
    """SLURM's ``--array`` list of task indices, runs as ranges: ``[0, 1, 2, 5, 7, 8]`` -> ``"0-2,5,7-8"``."""
    runs: List[List[int]] = []
    for i in sorted(set(indices)):
        if runs and i == runs[-1][1] + 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)
