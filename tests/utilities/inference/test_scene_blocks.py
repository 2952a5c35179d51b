"""utilities/inference/blocks.py and region.py: a scene predicted as blocks of rows in separate tasks and joined
equals the prediction of the whole scene in one process, bit for bit, with a tiny mantis model; the halo; the
block files; resuming and the completion records."""
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from tests.utilities.fakes import GAP_NODATA, fill_window, write_geotiff_pair
from tests.utilities.tiny_models import NORMALIZATION, tiny_network
from utilities.artifacts.model_io import Predictor
from utilities.errors import InputError
from utilities.inference.blocks import BLOCKS_DIR, plan_blocks
from utilities.inference.manifest import Pair, plan_tasks
from utilities.inference.region import RECORD_FILE, Settings, pending, run_task, task_status
from utilities.inference.tiled import MASK_NODATA, OUTPUT_FILES, QUICKLOOK_FILE, predict_rasters
from utilities.raster.cog import quantize
from utilities.raster.tiling import Tiling

pytestmark = pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")

WINDOW, STRIDE = 32, 8  # the tiny models take multiples of 8; 4 windows over each pixel in each direction


@pytest.fixture(scope="module")
def predictor():
    return Predictor([tiny_network("fractalresnet_tiny", seed=3)], NORMALIZATION["mean"], NORMALIZATION["std"])


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """A georeferenced float32 pair, 150 x 70, with nodata in both dates (the scene's own nodata value)."""
    folder = tmp_path_factory.mktemp("scene")
    date1, date2, _ = write_geotiff_pair(folder, 150, 70, dtype="float32", nodata=GAP_NODATA, with_label=False)
    for path in (date1, date2):  # float32 pixels in [0, 1): put them on the model's 8-bit scale
        with rasterio.open(path, "r+") as dst:
            dst.write(dst.read() * 255)
    fill_window(date1, (60, 10, 4, 6), GAP_NODATA)  # astride the block edges of the tests below
    fill_window(date2, (98, 40, 5, 5), float("nan"))
    return date1, date2


@pytest.fixture(scope="module")
def whole(scene, predictor, tmp_path_factory):
    """The single-process prediction of the whole scene, ``{probability dtype: its folder}``."""
    outs = {}
    for dtype in ("float32", "uint8"):
        outs[dtype] = tmp_path_factory.mktemp(f"whole_{dtype}")
        predict_rasters(predictor, *scene, outs[dtype], window=WINDOW, stride=STRIDE, batch_size=3, progress=False,
                        probability_dtype=dtype)
    return outs


def read(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read()


def settings(block_rows=None, dtype="uint8") -> Settings:
    return Settings(model=Path(__file__), engine="mxnet", block_rows=block_rows,
                    options=dict(window=WINDOW, stride=STRIDE, batch_size=3, bands=None, probability_dtype=dtype))


def pair_of(scene, out: Path) -> Pair:
    return Pair(1, scene[0], scene[1], out, 150)


def test_blocks_split_the_rows_evenly():
    assert [b.rows for b in plan_blocks(10, 4)] == [(0, 3), (3, 6), (6, 10)]
    assert [b.rows for b in plan_blocks(10)] == [(0, 10)]
    assert [b.rows for b in plan_blocks(10, 10)] == [(0, 10)]
    assert [(b.index, b.count) for b in plan_blocks(7, 2)] == [(0, 4), (1, 4), (2, 4), (3, 4)]
    with pytest.raises(InputError, match=r"^--block-rows must be >= 1, got 0\.$"):
        plan_blocks(10, 0)


def test_halo_reaches_the_windows_over_the_block_at_most_one_window():
    """Windows start at raster rows 8 k - 24 (stride 8, 24 rows of padding): those overlapping rows 50-99 start
    at 24 ... 96 and end at 127, so the block reads 26 rows above and 28 below it."""
    tiling = Tiling(150, 70, WINDOW, STRIDE)
    tops = np.arange(len(tiling.row_origins)) * STRIDE - (WINDOW - STRIDE)
    over = tops[(tops < 100) & (tops + WINDOW > 50)]
    assert (over[0], over[-1] + WINDOW) == (24, 128)
    assert plan_blocks(150, 50)[1].halo(tiling) == (26, 28)
    assert plan_blocks(150, 50)[0].halo(tiling) == (0, 30)  # the scene's top: reflection, not a halo
    assert plan_blocks(150, 50)[2].halo(tiling) == (28, 0)
    assert all(max(b.halo(tiling)) <= WINDOW - 1 for b in plan_blocks(150, 7))


@pytest.mark.parametrize("block_rows, dtype", [(50, "float32"), (37, "float32"), (149, "uint8")])
def test_joined_blocks_equal_the_whole_scene_bit_for_bit(scene, predictor, whole, tmp_path, block_rows, dtype):
    """Blocks cut anywhere (37 rows: not a multiple of the stride; 149: a last block of one row), each predicted
    by its own task, joined by the last: every output equals the whole scene's single-process prediction
    exactly (float32 probabilities compared bit for bit, not within a tolerance), the nodata pixels included;
    the blocks are removed after the join."""
    run, whole = settings(block_rows, dtype), whole[dtype]
    tasks = plan_tasks([pair_of(scene, tmp_path)], block_rows)
    assert len(tasks) == -(-150 // block_rows)
    messages = [run_task(task, predictor, run, progress=False) for task in tasks]
    assert all("still to predict" in m for m in messages[:-1]) and "joined the" in messages[-1]
    for name in OUTPUT_FILES.values():
        joined, expected = read(tmp_path / name), read(whole / name)
        assert joined.dtype == expected.dtype
        assert joined.tobytes() == expected.tobytes(), name  # NaN included: the very bits
    assert (read(tmp_path / OUTPUT_FILES["mask"]) == MASK_NODATA).sum() == 4 * 6 + 5 * 5
    with rasterio.open(tmp_path / OUTPUT_FILES["probability"]) as a, rasterio.open(whole / OUTPUT_FILES["mask"]) as b:
        assert (a.crs, a.transform) == (b.crs, b.transform)
    assert (tmp_path / QUICKLOOK_FILE).read_bytes() == (whole / QUICKLOOK_FILE).read_bytes()
    assert not (tmp_path / BLOCKS_DIR).exists()
    assert pending(tasks, run) == []


def test_joined_blocks_equal_the_whole_scene_bit_for_bit_with_the_taper_blend(scene, predictor, whole, tmp_path):
    """The taper blend (stride 16 of 32: a quarter of the windows of stride 8) keeps the blocks' join exact, and
    differs from the plain average at the same stride."""
    options = dict(window=WINDOW, stride=16, batch_size=3, bands=None, probability_dtype="float32", blend="taper")
    predict_rasters(predictor, *scene, tmp_path / "whole", progress=False, **options)
    run = Settings(model=Path(__file__), engine="mxnet", block_rows=37, options=options)
    tasks = plan_tasks([pair_of(scene, tmp_path / "blocks")], 37)
    for task in tasks:
        run_task(task, predictor, run, progress=False)
    for name in OUTPUT_FILES.values():
        assert read(tmp_path / "blocks" / name).tobytes() == read(tmp_path / "whole" / name).tobytes(), name
    predict_rasters(predictor, *scene, tmp_path / "uniform", progress=False, **dict(options, blend="uniform"))
    name = OUTPUT_FILES["probability"]
    assert np.nanmax(np.abs(read(tmp_path / "whole" / name) - read(tmp_path / "uniform" / name))) > 1e-4


def test_block_file_has_the_blocks_rows_and_georeferencing(scene, predictor, whole, tmp_path):
    run, whole = settings(60), whole["uint8"]
    tasks = plan_tasks([pair_of(scene, tmp_path)], 60)
    run_task(tasks[1], predictor, run, progress=False)
    block = tasks[1].block
    with rasterio.open(block.file(tmp_path)) as src, rasterio.open(whole / OUTPUT_FILES["boundary"]) as ref:
        assert (src.count, src.height, src.width, src.dtypes[0]) == (3, block.stop - block.first, 70, "float32")
        assert src.transform == ref.transform @ Affine.translation(0, block.first)
        assert src.crs == ref.crs
        expected = ref.read(1)[block.first:block.stop]  # quantized (floor(254 p), 255 without data)
        np.testing.assert_array_equal(np.where(expected == MASK_NODATA, MASK_NODATA, quantize(src.read(2))),
                                      expected)
    assert [task_status(t, run) is None for t in tasks] == [False, True, False]
    assert not (tmp_path / RECORD_FILE).exists()


def test_rerun_skips_complete_work_and_redoes_changed_or_missing_files(scene, predictor, tmp_path):
    run = settings()
    [task] = plan_tasks([pair_of(scene, tmp_path)])
    assert "no record" in task_status(task, run)
    assert run_task(task, predictor, run, progress=False) == f"predicted {tmp_path}"
    assert run_task(task, predictor, run, progress=False) == f"{tmp_path} is complete: skipped"
    mask = tmp_path / OUTPUT_FILES["mask"]
    mask.write_bytes(mask.read_bytes()[:-10])  # truncated after the record was written
    assert task_status(task, run) == f"{mask} changed since it was written"
    assert run_task(task, predictor, run, progress=False) == f"predicted {tmp_path}"
    other = Settings(model=run.model, engine="onnx", options=dict(run.options, stride=16))
    assert task_status(task, other) == f"record {tmp_path / RECORD_FILE} was made with other settings (engine, stride)"
    (tmp_path / OUTPUT_FILES["distance"]).unlink()
    assert task_status(task, run) == f"{tmp_path / OUTPUT_FILES['distance']} is missing"


def test_a_killed_block_task_is_redone_and_the_others_are_not(scene, predictor, tmp_path, monkeypatch):
    """A block task killed while writing leaves only a temporary file and no record: the re-run predicts that
    block again, skips the finished one, and joins."""
    run = settings(75)
    tasks = plan_tasks([pair_of(scene, tmp_path)], 75)
    run_task(tasks[0], predictor, run, progress=False)
    first_block = tasks[0].block.file(tmp_path)
    import utilities.inference.region as region

    def killed(strips, *args):
        next(strips)
        raise KeyboardInterrupt  # as a kill in the middle of the block

    monkeypatch.setattr(region, "write_block", killed)
    with pytest.raises(KeyboardInterrupt):
        run_task(tasks[1], predictor, run, progress=False)
    monkeypatch.undo()
    assert [t.index for t in pending(tasks, run)] == [1]
    assert run_task(tasks[0], predictor, run, progress=False).startswith("block 1/2 was done already; 1 block(s)")
    assert run_task(tasks[1], predictor, run, progress=False).endswith(f"joined the 2 blocks into {tmp_path}")
    assert not first_block.exists() and pending(tasks, run) == []
