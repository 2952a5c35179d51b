"""A scene too large for one job, predicted as blocks of rows in separate tasks and joined into one result.

The joined outputs equal the prediction of the whole scene in one process, pixel for pixel and bit for bit,
because each block is predicted with the whole scene's window grid, not as a scene of its own: a pixel's
value is the average over the windows that cover it, which start up to ``window - 1`` rows above it and
end up to ``window - 1`` rows below it. A block of rows ``[first, stop)`` is therefore predicted with every
window of the whole scene's grid that overlaps it (:meth:`~utilities.raster.tiling.Tiling.window_rows`),
reading its *halo*: the rows those windows reach beyond the block, up to ``window - 1`` on each side (the
rows of one window, less at the scene's own borders). Reflect padding happens only at the scene's true
borders, and the windows' inputs, batches and order of summation are those of the whole run
(:func:`~utilities.raster.tiling.stream_strips` with ``rows``). A block is cut at any row; nothing needs
aligning to the stride.

Each block task writes its outputs to ``<out>/blocks/block_NNNN.tif``: the unmasked change class of the
three heads (``float32``, 3 bands: segmentation, boundary, distance), with the block's rows, the scene's
width and the block's georeferencing. :func:`joined_strips` reads them back with the dates' rows, as
strips that :func:`~utilities.inference.tiled.write_outputs` turns into the usual outputs of the whole scene.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional, Sequence

import numpy as np
import rasterio
from affine import Affine
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.windows import Window

from utilities.atomic import atomic_path
from utilities.errors import InputError
from utilities.inference.tiled import BLOCK, HEADS
from utilities.raster.io import RasterInfo
from utilities.raster.tiling import RowReader, Strip, Tiling

#: the folder of a pair's output folder that holds its blocks until they are joined
BLOCKS_DIR = "blocks"


@dataclass(frozen=True)
class Block:
    """Rows ``[first, stop)`` of a scene, block ``index`` of ``count``."""

    index: int
    count: int
    first: int
    stop: int

    @property
    def rows(self) -> tuple:
        return self.first, self.stop

    def file(self, out_dir: Path) -> Path:
        """The block's outputs in the pair's output folder."""
        return Path(out_dir) / BLOCKS_DIR / f"block_{self.index:04d}.tif"

    def halo(self, tiling: Tiling) -> tuple:
        """Rows ``(above, below)`` the block that its windows read (reflected rows at the scene's borders
        not counted): at most ``window - 1`` each."""
        origins = tiling.row_origins[tiling.window_rows(self.first, self.stop)] - tiling.pad
        return self.first - max(int(origins[0]), 0), min(int(origins[-1]) + tiling.window, tiling.height) - self.stop


def plan_blocks(height: int, block_rows: Optional[int] = None) -> List[Block]:
    """Split ``height`` rows into the fewest blocks of at most ``block_rows`` rows, of equal heights to within
    a row (None: one block).

    Raises
    ------
    InputError
        ``block_rows`` < 1.
    """
    if block_rows is not None and block_rows < 1:
        raise InputError(f"--block-rows must be >= 1, got {block_rows}.")
    count = 1 if block_rows is None else -(-height // block_rows)
    edges = [i * height // count for i in range(count + 1)]
    return [Block(i, count, edges[i], edges[i + 1]) for i in range(count)]


def write_block(strips: Iterator[Strip], block: Block, info: RasterInfo, out_dir: Path) -> Path:
    """Write a block's strips (:func:`~utilities.inference.tiled.predicted_strips` with ``rows=block.rows``) to
    :meth:`Block.file`, atomically; returns its path."""
    path = block.file(out_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    profile = dict(driver="GTiff", height=block.stop - block.first, width=info.width, count=len(HEADS),
                   dtype="float32", tiled=True, blockxsize=BLOCK, blockysize=BLOCK, compress="deflate")
    if info.crs is not None:
        profile["crs"] = info.crs
    if info.transform is not None:
        profile["transform"] = info.transform @ Affine.translation(0, block.first)
    with atomic_path(path, suffix=".tif") as tmp, warnings.catch_warnings():  # write errors name the block file
        warnings.simplefilter("ignore", NotGeoreferencedWarning)  # PNG/JPEG inputs have no georeferencing
        with rasterio.open(tmp, "w", **profile) as dataset:
            for strip in strips:
                window = Window(0, strip.row - block.first, info.width, strip.outputs.shape[1])
                dataset.write(strip.outputs.astype(np.float32), window=window)
    return path


def check_block(block: Block, info: RasterInfo, out_dir: Path) -> Optional[str]:
    """Why the block file of ``block`` cannot be joined (missing, unreadable, another shape), or None."""
    path = block.file(out_dir)
    if not path.exists():
        return f"{path} does not exist"
    try:
        with rasterio.open(path) as src:
            shape = (src.count, src.height, src.width, src.dtypes[0])
    except RasterioError as err:
        return f"{path} cannot be read: {' '.join(str(err).split())}"
    expected = (len(HEADS), block.stop - block.first, info.width, "float32")
    return None if shape == expected else f"{path} holds {shape}, expected {expected} (bands, rows, cols, type)"


def joined_strips(blocks: Sequence[Block], read: RowReader, out_dir: Path, rows: int = BLOCK) -> Iterator[Strip]:
    """The strips of the whole scene from its block files, ``rows`` rows at a time, with the dates' rows
    ``read(row0, row1)`` (:func:`~utilities.inference.tiled.pair_rows`) as inputs."""
    for block in blocks:
        with rasterio.open(block.file(out_dir)) as src:
            for row in range(block.first, block.stop, rows):
                n = min(rows, block.stop - row)
                outputs = src.read(window=Window(0, row - block.first, src.width, n))
                yield Strip(row, read(row, row + n), outputs)
