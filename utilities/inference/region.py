"""Predict a region: the tasks of a manifest (:mod:`utilities.inference.manifest`), resumable, one per job-array task.

A task predicts a whole pair into its ``out`` folder, or one block of rows of a large pair into
``out/blocks/`` (:mod:`utilities.inference.blocks`); the task that completes the last block of a pair joins
the blocks into the pair's outputs and removes them. Every file is written atomically, and each finished
pair or block gets a completion record (:mod:`utilities.inference.completion`) written after its files:
``out/prediction.json`` for a pair, ``out/blocks/block_NNNN.json`` for a block. A task whose pair (or
block) is complete with the same settings and unchanged files is skipped, so a job array submitted again
redoes only the work that a killed, failed or timed-out task left undone.

Two tasks that finish the last blocks of a pair at the same moment both join it: the outputs have the same
pixels (from the same blocks; a GeoPackage of polygons may differ in its bytes), every file is renamed into
place whole, and each task's record, written after its files are in place, hashes the files then on disk,
so the record written last describes the files that stand. A task that finds the blocks already removed
by the other stops there, reporting the pair as joined.
"""
from __future__ import annotations

import inspect
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from rasterio.errors import RasterioError

from utilities.artifacts.model_io import Predictor
from utilities.atomic import writable_folder
from utilities.errors import InputError
from utilities.inference.blocks import BLOCKS_DIR, Block, check_block, joined_strips, plan_blocks, write_block
from utilities.inference.completion import incomplete, write_record
from utilities.inference.manifest import Pair, Task
from utilities.inference.tiled import pair_rows, predict_rasters, predicted_strips, select_bands, write_outputs
from utilities.raster.io import check_pair

#: a pair's completion record, in its output folder
RECORD_FILE = "prediction.json"


#: the options of :func:`~utilities.inference.tiled.predict_rasters` that go to the prediction of the strips
#: (the others go to :func:`~utilities.inference.tiled.write_outputs`)
_STRIP_OPTIONS = set(inspect.signature(predicted_strips).parameters) - {"predictor", "date1", "date2", "rows",
                                                                        "progress"}


@dataclass(frozen=True)
class Settings:
    """What the outputs of a manifest are made with.

    Attributes
    ----------
    model : Path
        The model spec, as given to the engine.
    engine : str
        ``mxnet`` or ``onnx``.
    options : dict
        Options of :func:`~utilities.inference.tiled.predict_rasters` (window, stride, batch_size, bands,
        threshold, quicklook, ...; not ``progress``).
    block_rows : int or None
        Pairs taller than this are predicted in blocks of at most this many rows.
    """

    model: Path
    engine: str
    options: Dict[str, Any] = field(default_factory=dict)
    block_rows: Optional[int] = None

    @property
    def strips(self) -> Dict[str, Any]:
        """The options of :func:`~utilities.inference.tiled.predicted_strips`."""
        return {k: v for k, v in self.options.items() if k in _STRIP_OPTIONS}

    @property
    def outputs(self) -> Dict[str, Any]:
        """The options of :func:`~utilities.inference.tiled.write_outputs`."""
        return {k: v for k, v in self.options.items() if k not in _STRIP_OPTIONS}

    def request(self, pair: Pair, block: Optional[Block] = None) -> Dict[str, Any]:
        """The settings and inputs a completion record of ``pair`` (or of its ``block``) must match: the
        model file's and the input files' paths, sizes and modification times, and every setting that
        changes the outputs (the engine and batch size too: a block joins bit for bit only with blocks
        predicted the same way)."""
        files = {"model": self.model, "date1": pair.date1, "date2": pair.date2}
        about: Dict[str, Any] = {name: _file_state(path) for name, path in files.items()}
        about.update(engine=self.engine, **self.options)
        if block is not None:
            about.update(rows=list(block.rows))
        return about


def _file_state(path: Path) -> Dict[str, Any]:
    stat = Path(path).stat()
    return {"path": str(Path(path).resolve()), "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _block_record(block: Block, out: Path) -> Path:
    return block.file(out).with_suffix(".json")


def task_status(task: Task, settings: Settings) -> Optional[str]:
    """None when ``task``'s work is done (its pair complete, or its block predicted); else why not."""
    pair_missing = incomplete(task.pair.out / RECORD_FILE, settings.request(task.pair))
    if pair_missing is None or task.block.count == 1:
        return pair_missing
    return incomplete(_block_record(task.block, task.pair.out), settings.request(task.pair, task.block))


def pending(tasks: Sequence[Task], settings: Settings) -> List[Task]:
    """The tasks whose work is not done (:func:`task_status`)."""
    return [task for task in tasks if task_status(task, settings) is not None]


def _remove_blocks(out: Path) -> None:
    shutil.rmtree(out / BLOCKS_DIR, ignore_errors=True)


def _join(pair: Pair, blocks: Sequence[Block], predictor: Predictor, settings: Settings) -> Dict[str, Path]:
    info = check_pair(pair.date1, pair.date2)
    bands = settings.strips.get("bands")
    bands = select_bands(pair.date1, info.count, predictor.bands if bands is None else bands, predictor.channels)
    for block in blocks:
        problem = check_block(block, info, pair.out)
        if problem is not None:
            raise InputError(f"cannot join the blocks of {pair.out}: {problem}")
    read = pair_rows(pair.date1, pair.date2, bands, (0, 0, info.height, info.width))
    return write_outputs(joined_strips(blocks, read, pair.out), info, pair.out, predictor, **settings.outputs)


def run_task(task: Task, predictor: Predictor, settings: Settings, progress: bool = True) -> str:
    """Do ``task`` unless it is done; returns what happened, in words.

    A whole pair is predicted into its folder; a block is predicted into ``out/blocks/``, and when every
    block of the pair is then done, they are joined into the pair's outputs.
    """
    pair, block = task.pair, task.block
    record, request = pair.out / RECORD_FILE, settings.request(pair)
    if incomplete(record, request) is None:
        _remove_blocks(pair.out)  # left by a joining task killed after its record
        return f"{pair.out} is complete: skipped"
    writable_folder(pair.out)
    if block.count == 1:
        paths = predict_rasters(predictor, pair.date1, pair.date2, pair.out, progress=progress, **settings.options)
        write_record(record, request, paths.values())
        return f"predicted {pair.out}"
    block_record, block_request = _block_record(block, pair.out), settings.request(pair, block)
    if incomplete(block_record, block_request) is None:
        done = f"block {block.index + 1}/{block.count} was done already"
    else:
        info, strips = predicted_strips(predictor, pair.date1, pair.date2, rows=block.rows, progress=progress,
                                        **settings.strips)
        write_record(block_record, block_request, [write_block(strips, block, info, pair.out)])
        done = f"predicted block {block.index + 1}/{block.count} into {block.file(pair.out)}"
    blocks = plan_blocks(pair.height, settings.block_rows)
    waiting = [b for b in blocks if incomplete(_block_record(b, pair.out), settings.request(pair, b),
                                               checksums=False) is not None]
    if waiting:
        return f"{done}; {len(waiting)} block(s) of {pair.out} still to predict (the last task joins them)"
    try:
        paths = _join(pair, blocks, predictor, settings)
    except (OSError, RasterioError):
        if incomplete(record, request) is None:  # another task joined them first and removed the blocks
            return f"{done}; another task joined the blocks into {pair.out}"
        raise
    write_record(record, request, paths.values())
    _remove_blocks(pair.out)
    return f"{done}; joined the {len(blocks)} blocks into {pair.out}"
