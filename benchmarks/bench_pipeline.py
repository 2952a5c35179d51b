"""Throughput of the training data pipeline against what a model's training step consumes.

    python benchmarks/bench_pipeline.py                                  # 256 chips of 256x256, fractalresnet_d6nf32
    python benchmarks/bench_pipeline.py --chips 32 --chip-size 64 --skip-model
    python benchmarks/bench_pipeline.py --model ceecnetv1_d6nf32 --steps 3

Synthetic scenes in the LEVIR-CD layout (``utilities.data.synthetic.write_levircd_layout``, 4 chips wide like
LEVIR-CD's 1024x1024 tiles at 256) are written to a temporary folder and chipped into the chip cache
(``utilities.training.pipeline.chip_cache``, stride chip-size / 2, the paper's half overlap), then train.py's
``make_loaders`` (utilities.training.step) makes the training loader with the paper's defaults otherwise: ChipDataset
(reading the memory-mapped chips, here from the page cache as the cache was just written; standardising; multitask
targets), ChangeAugmentation, GlobalBatchSampler, DataLoader (batch ``--batch``, ``num_workers`` 0: train.py's default,
loading in the training process). The pipeline's chips/s is the time to draw ``--chips`` chips batch by batch and move
them to the training context, with augmentation on and off. Then, in the same process, the training chips/s of
``--model`` on one batch of these chips: ``--batch`` / median seconds of ``--steps`` training steps (forward,
backward, Adam update of the multitask FT loss, hybridized, as train.py) after one warm-up step; and the ratio
pipeline chips/s / training chips/s, how many times faster the pipeline serves chips than one training process
consumes them. Prints machine details, the command and the date, as BENCHMARKS.md records them; absolute seconds on
shared machines are noisy, compare one run's numbers.
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, List, Optional, Tuple

from bench_models import print_header

if TYPE_CHECKING:
    from mxnet import nd

    from utilities.training.config import Config
    from utilities.training.distributed import World

ROOT = Path(__file__).resolve().parents[1]
#: scenes are this many chips wide (LEVIR-CD: 1024x1024 tiles, 256x256 chips)
SCENE_CHIPS = 4
sys.path.insert(0, str(ROOT))


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chips", type=int, default=256, help="chips drawn through the pipeline per measurement")
    parser.add_argument("--chip-size", type=int, default=256, help="chip side (also the model's input side)")
    parser.add_argument("--batch", type=int, default=3, help="batch size of the loader and the model")
    parser.add_argument("--model", default="fractalresnet_d6nf32", help="registered mantis model")
    parser.add_argument("--steps", type=int, default=2, help="timed training steps (after one warm-up step)")
    parser.add_argument("--skip-model", action="store_true", help="measure the pipeline only")
    return parser.parse_args(argv)


def write_data(folder: Path, chips: int, chip_size: int) -> Path:
    """Enough synthetic LEVIR-CD-layout training scenes for ``chips`` chips, and one validation scene."""
    from utilities.data.chips import chip_windows
    from utilities.data.synthetic import write_levircd_layout

    side = SCENE_CHIPS * chip_size
    per_scene = len(chip_windows(side, side, chip_size, chip_size // 2))
    return write_levircd_layout(folder / "levircd", {"train": math.ceil(chips / per_scene), "val": 1}, size=side)


def make_config(data: Path, run_dir: Path, args: argparse.Namespace, augment: bool) -> Config:
    """The paper's defaults (utilities.training.config) with the synthetic data, chip size and batch of this
    benchmark."""
    from utilities.training.config import Config

    cfg = Config()
    cfg.data.root, cfg.data.chip_size, cfg.data.stride = str(data), args.chip_size, args.chip_size // 2
    cfg.augment.enabled = augment
    cfg.train.batch_size = args.batch
    cfg.output.run_dir = str(run_dir)
    return cfg


def build_caches(cfg: Config) -> None:
    """Chip the training and validation scenes once, where make_loaders looks for them (no progress bars)."""
    from utilities.training.pipeline import chip_cache

    for split in ("train", "val"):
        chip_cache(cfg.data, split, Path(cfg.output.run_dir) / "chips", progress=False)


def pipeline_seconds(cfg: Config, world: World, chips: int) -> Tuple[int, float, List[nd.NDArray]]:
    """Draw ``chips`` chips through train.py's training loader (epoch 1): chips drawn, seconds, first batch."""
    import mxnet as mx
    import numpy as np
    from mxnet import nd

    from utilities.training.accumulate import plan_global_batch
    from utilities.training.step import limit, make_loaders, to_ctx

    plan = plan_global_batch(cfg.train, world.size, "benchmark")
    loader, sampler, augment, _, _ = make_loaders(cfg, world, Path(cfg.output.run_dir), plan)
    if sampler.updates * plan.share < chips:
        raise ValueError(f"an epoch draws {sampler.updates * plan.share} chips, fewer than --chips {chips}")
    sampler.set_epoch(1)
    if augment is not None:  # seeded as train.py seeds it
        augment.rng = np.random.default_rng((cfg.train.seed, world.rank, 1))
    drawn, first = 0, None
    tic = time.perf_counter()
    for batch in limit(loader, math.ceil(chips / cfg.train.batch_size)):
        batch = to_ctx(batch, mx.cpu())
        if first is None:
            first = batch
        drawn += batch[0].shape[0]
    nd.waitall()
    return drawn, time.perf_counter() - tic, first


def training_step_seconds(name: str, batch: List[nd.NDArray], cfg: Config, steps: int) -> float:
    """Median seconds of a train.py training step (``utilities.training.step.train_step``, without the non-finite
    checks) of a fresh hybridized model on ``batch``."""
    from nn import MultitaskFTLoss

    import horovod.mxnet as hvd
    import mxnet as mx
    from mxnet import nd

    from mantis import get_model
    from utilities.training.step import train_step

    net = get_model(name)
    net.initialize(mx.init.Xavier())
    net.hybridize()
    trainer = hvd.DistributedTrainer(net.collect_params(), "adam",
                                     {"learning_rate": cfg.train.lr, "beta1": 0.9, "beta2": 0.999})
    loss_fn = MultitaskFTLoss(depth=0, axis=tuple(cfg.train.loss_axis))
    date1, date2, *targets = batch
    times = []
    for _ in range(steps + 1):  # the first is the warm-up (graph build)
        tic = time.perf_counter()
        train_step(net, trainer, loss_fn, (date1, date2), targets)
        nd.waitall()
        times.append(time.perf_counter() - tic)
    return statistics.median(times[1:])


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    import nn  # noqa: F401  (first: OpenMP threads, before MXNet loads)

    from utilities.training.distributed import init_world, shutdown

    print_header(f"; mxnet {version('mxnet')}, horovod {version('horovod')}")
    print(f"{args.chip_size}x{args.chip_size} chips (stride {args.chip_size // 2}) of synthetic "
          f"{SCENE_CHIPS * args.chip_size}x{SCENE_CHIPS * args.chip_size} scenes, batch {args.batch}, "
          f"num_workers 0 (train.py's DataLoader); training: {args.model}, hybridized, median of {args.steps} steps "
          f"after 1 warm-up\n")
    print("| what | chips | s | chips/s |")
    print("|---|---|---|---|")
    world = init_world()
    pipeline = {}
    try:
        with tempfile.TemporaryDirectory() as folder:
            data = write_data(Path(folder), args.chips, args.chip_size)
            for augment in (True, False):
                cfg = make_config(data, Path(folder) / "run", args, augment)
                build_caches(cfg)  # the second time: found up to date, as every later training run finds it
                chips, seconds, batch = pipeline_seconds(cfg, world, args.chips)
                pipeline[augment] = chips / seconds
                print(f"| pipeline, augmentation {'on' if augment else 'off'} | {chips} | {seconds:.2f} | "
                      f"{pipeline[augment]:.1f} |", flush=True)
        if args.skip_model:
            return 0
        step = training_step_seconds(args.model, batch, cfg, args.steps)
        training = args.batch / step
        print(f"| training step of {args.model}, batch {args.batch} | {args.batch} | {step:.2f} | {training:.2f} |")
        print(f"\npipeline chips/s / training chips/s: augmentation on {pipeline[True] / training:.1f}x, "
              f"off {pipeline[False] / training:.1f}x; with num_workers 0 the loader adds "
              f"{100 * training / pipeline[True]:.1f} % (augmentation on) to every training step")
    finally:
        shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
