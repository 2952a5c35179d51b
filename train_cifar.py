"""Train a CIFAR-10 classifier of Table A.3 (paper Section 7): the building-block comparison (Fig. 8)
and the evolving-loss experiment (Section 7.2, Fig. 11).

    python train_cifar.py -c configs/cifar10_table_a3.yaml
    horovodrun -np 4 -H localhost:4 python train_cifar.py -c configs/cifar10_evolving_loss.yaml
    python train_cifar.py -c CONFIG --resume              # continue a killed run
    python train_cifar.py -c my.yaml --fake               # small fake CIFAR-10 written to the run dir (smoke test)

The config's keys and defaults: ``CifarConfig`` in utilities/training/config.py. Horovod data parallelism as in
train.py (one process per device; ``batch_size`` is per process): parameters broadcast from rank 0,
gradients averaged by ``DistributedTrainer``, BatchNorm running statistics averaged over the ranks after
every epoch, metrics summed over ranks (float64). Adam, and the evolving-loss schedule
(utilities/training/schedule.py): each epoch sets the learning rate and the depth ``d`` of the loss ``1 - <FT>^d``
(on softmax outputs against one-hot labels, over the class axis). Rank 0 writes, atomically,
``config.yaml`` (resolved) at start and per epoch a checkpoint (parameters, optimiser state, schedule;
the newest ``keep_checkpoints`` keep their parameters), ``history.json`` and ``history.csv``.

Exit status: 0 when training ends; 2 for bad input (one line ``error: ...`` naming the file or config
key, checked before Horovod starts; also a run directory in use by another training, or a ``--resume``
with a config that changes what the run computes, as in train.py); 1 when an input, the loss, the gradients
or the parameters are not finite (one line naming the epoch, the step and, for inputs and losses, the first
offending image) or a write fails; 130 after SIGINT, 143 after SIGTERM (``terminated``).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Tuple

import nn  # noqa: F401  (first: sets MXNet's OpenMP threads per rank before MXNet loads)
from nn import FTnmtLoss

import horovod.mxnet as hvd
import mxnet as mx
import numpy as np
from mxnet import autograd, gluon, nd

from mantis import get_model
from utilities.artifacts.checkpoint import CheckpointRecord
from utilities.data.cifar10 import load_cifar10, write_fake_cifar10
from utilities.errors import InputError
from utilities.progress import progress, write
from utilities.training.config import CifarConfig, check_config, config_to_dict, load_config, save_config
from utilities.training.distributed import World, allreduce_sum, init_world, run_rank
from utilities.training.run_lock import lock_run_dir
from utilities.training.schedule import EvolvingLossSchedule
from utilities.training.step import (
    FiniteCheck,
    NonFiniteError,
    check_parameters,
    end_epoch,
    previous_run,
    restore_schedule,
    train_step,
)

#: images per fake batch file with --fake (5 x 64 training, 64 test)
FAKE_PER_BATCH = 64
#: exit statuses: bad input 2, non-finite inputs, loss, gradients or parameters 1
FAILURES = {InputError: 2, NonFiniteError: 1}

ft_loss = FTnmtLoss(depth=0, axis=(1,))  # its .depth follows the schedule
#: the config's ``loss`` -> per-sample loss of (logits, labels) (utilities.training.config.CIFAR_LOSSES)
LOSSES = {
    "ce": gluon.loss.SoftmaxCrossEntropyLoss(),
    "ft": lambda out, y: ft_loss(nd.softmax(out, axis=1), nd.one_hot(y, out.shape[1])),
}
#: the config's ``optimizer`` -> Gluon optimiser name and arguments (utilities.training.config.CIFAR_OPTIMIZERS)
OPTIMIZERS = {"adam": lambda cfg: ("adam", {"beta1": cfg.betas[0], "beta2": cfg.betas[1]})}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-c", "--config", required=True, help="YAML config (see configs/cifar10_*.yaml)")
    parser.add_argument("--resume", action="store_true", help="continue from the run's last checkpoint")
    parser.add_argument("--run-dir", help="override out_dir")
    parser.add_argument("--fake", action="store_true", help="write and train on a small fake CIFAR-10 in the run dir")
    return parser.parse_args(argv)


def load_data(cfg: CifarConfig, source: str) -> Tuple[Tuple[np.ndarray, np.ndarray], Tuple[np.ndarray, np.ndarray]]:
    """The training and test splits (uint8 NHWC images, labels); a missing or corrupt file is bad input."""
    try:
        return load_cifar10(cfg.data_dir, "train", layout="NHWC"), load_cifar10(cfg.data_dir, "test", layout="NHWC")
    except (OSError, ValueError) as err:
        raise InputError(f"config {source}: data_dir: {err}") from None


def to_tensor(images: np.ndarray, ctx) -> nd.NDArray:
    """uint8 NHWC -> float32 NCHW in [0, 1] on ``ctx``."""
    return nd.array(images.transpose(0, 3, 1, 2).astype(np.float32) / 255.0, ctx=ctx)


def augment(images: np.ndarray, rng: np.random.RandomState) -> np.ndarray:
    """The standard CIFAR augmentation (He et al. 2016): random horizontal flip, then a random
    32 x 32 crop of the image zero-padded by 4 pixels (uint8 NHWC in and out)."""
    n, h, w, _ = images.shape
    flip = rng.rand(n) < 0.5
    images = np.where(flip[:, None, None, None], images[:, :, ::-1], images)
    padded = np.pad(images, ((0, 0), (4, 4), (4, 4), (0, 0)))
    dy, dx = rng.randint(0, 9, size=(2, n))
    return np.stack([padded[i, y:y + h, x:x + w] for i, (y, x) in enumerate(zip(dy, dx))])


def epoch_batches(n: int, cfg: CifarConfig, epoch: int, world: World) -> np.ndarray:
    """This rank's training batches: a permutation shared by all ranks (seeded by epoch), wrapped so
    that every rank takes the same number of full steps (a rank leaving early ends a Horovod job)."""
    order = np.random.RandomState([cfg.seed, epoch]).permutation(n)
    steps = -(-n // (cfg.batch_size * world.size))
    steps = min(steps, cfg.max_steps_per_epoch) if cfg.max_steps_per_epoch else steps
    order = np.resize(order, steps * cfg.batch_size * world.size)
    return order[world.rank::world.size].reshape(steps, cfg.batch_size)


def sync_running_stats(net: gluon.Block) -> None:
    """Average the non-learned state (BatchNorm running mean and variance) over the ranks: Horovod
    averages gradients only, so each rank's statistics follow its own data shard."""
    for p in net.collect_params().values():
        if p.grad_req == "null":
            hvd.allreduce_(p.data(), average=True, name=p.name)


def train_epoch(net, trainer, loss_fn, data, cfg: CifarConfig, world: World, ctx, epoch: int) -> Tuple[float, float]:
    """Mean training loss and accuracy of one epoch over all ranks."""
    images, labels = data
    # augmentation is a function of (seed, rank, epoch): a resumed run repeats it
    rng = np.random.RandomState([cfg.seed, world.rank, epoch])
    totals = np.zeros(3)  # loss sum, correct, count
    steps = epoch_batches(len(images), cfg, epoch, world)
    for step, idx in enumerate(progress(steps, desc=f"epoch {epoch} train", disable=not world.is_root, leave=False,
                                        file=sys.stdout), start=1):
        x = to_tensor(augment(images[idx], rng) if cfg.augment else images[idx], ctx)
        y = nd.array(labels[idx], ctx=ctx)
        check = FiniteCheck(f"epoch {epoch}, step {step}", lambda i, idx=idx: f"training image {idx[i]}")
        loss, [out] = train_step(net, trainer, loss_fn, [x], [y], check)
        totals += [loss.sum().asscalar(), (out.argmax(axis=1) == y).sum().asscalar(), len(idx)]
    loss_sum, correct, count = allreduce_sum(totals, "train_totals")
    return loss_sum / count, correct / count


def validate(net, loss_fn, data, cfg: CifarConfig, world: World, ctx) -> Tuple[float, float]:
    """Mean loss and accuracy over all ranks (each rank takes every size-th image)."""
    images, labels = data
    mine = np.arange(world.rank, len(images), world.size)
    batches = [mine[i:i + cfg.batch_size] for i in range(0, len(mine), cfg.batch_size)][:cfg.max_steps_per_epoch]
    totals = np.zeros(3)  # loss sum, correct, count
    for idx in progress(batches, desc="validation", disable=not world.is_root, leave=False, file=sys.stdout):
        out = net(to_tensor(images[idx], ctx))
        y = nd.array(labels[idx], ctx=ctx)
        totals += [loss_fn(out, y).sum().asscalar(), (out.argmax(axis=1) == y).sum().asscalar(), len(idx)]
    loss_sum, correct, count = allreduce_sum(totals, "val_totals")
    return loss_sum / count, correct / count


def main(argv=None) -> int:
    args = parse_args(argv)
    cfg = load_config(args.config, CifarConfig)
    if args.run_dir:
        cfg.out_dir = args.run_dir
    check_config(cfg, args.config)
    run_dir = Path(cfg.out_dir)
    if args.fake:
        cfg.data_dir = str(write_fake_cifar10(run_dir / "fake_cifar10", FAKE_PER_BATCH, cfg.seed))
    train_data, val_data = load_data(cfg, args.config)
    world = init_world()
    with lock_run_dir(run_dir, world):  # one training at a time in a run directory
        return train(cfg, args, world, train_data, val_data)


def train(cfg: CifarConfig, args: argparse.Namespace, world: World, train_data: Tuple[np.ndarray, np.ndarray],
          val_data: Tuple[np.ndarray, np.ndarray]) -> int:
    """The run of :func:`main` in its locked run directory."""
    run_dir = Path(cfg.out_dir)
    ctx = mx.cpu() if mx.context.num_gpus() == 0 else mx.gpu(world.local_rank)
    mx.random.seed(cfg.seed)
    checkpoints, latest, history = previous_run(run_dir, args.resume, world, cfg, args.config)
    schedule = EvolvingLossSchedule.from_depths(cfg.lr, cfg.schedule.depths, factor=cfg.schedule.factor,
                                                patience=cfg.schedule.patience, milestones=cfg.schedule.milestones)
    if latest is not None:
        restore_schedule(schedule, latest, checkpoints)
    if world.is_root:
        save_config(cfg, run_dir / "config.yaml")
        write(f"{cfg.model}: {len(train_data[0])} training / {len(val_data[0])} validation images, {world.size} "
              f"process(es), batch {cfg.batch_size} per process, loss {cfg.loss}, run dir {run_dir}")

    net = get_model(cfg.model, **cfg.model_kwargs)
    net.initialize(mx.init.Xavier(), ctx=ctx)
    net.hybridize()
    loss_fn = LOSSES[cfg.loss]
    # shapes first, inside autograd.record (as train.py), then the same starting parameters on every rank
    with autograd.record():
        net(to_tensor(train_data[0][:cfg.batch_size], ctx))
    hvd.broadcast_parameters(net.collect_params(), root_rank=0)
    nd.waitall()
    opt_name, opt_params = OPTIMIZERS[cfg.optimizer](cfg)
    trainer = hvd.DistributedTrainer(net.collect_params(), opt_name, {"learning_rate": schedule.lr, **opt_params})
    start = 1
    if latest is not None:
        checkpoints.load(latest, net, trainer)  # on every rank: parameters, BatchNorm statistics and Adam state
        start = latest.epoch + 1
        if world.is_root:
            write(f"resumed from epoch {latest.epoch}: lr {schedule.lr:g}, FT depth {schedule.depth}")

    for epoch in range(start, cfg.epochs + 1):
        if schedule.finished:
            break
        tic = time.time()
        lr, depth = schedule.lr, schedule.depth
        trainer.set_learning_rate(lr)  # on every rank, or the ranks drift apart
        ft_loss.depth = depth
        train_loss, train_accuracy = train_epoch(net, trainer, loss_fn, train_data, cfg, world, ctx, epoch)
        sync_running_stats(net)
        check_parameters(net, epoch)  # on every rank (they hold the same parameters): all stop together
        val_loss, val_accuracy = validate(net, loss_fn, val_data, cfg, world, ctx)
        advanced = schedule.step(val_loss)  # identical on every rank: val_loss is all-reduced
        row = dict(epoch=epoch, lr=lr, depth=depth, train_loss=train_loss, train_accuracy=train_accuracy,
                   val_loss=val_loss, val_accuracy=val_accuracy, seconds=round(time.time() - tic, 2))
        history.append(row)
        if world.is_root:
            record = CheckpointRecord(cfg.model, epoch, cfg.model_kwargs, schedule=schedule.state_dict(),
                                      metrics=row, config=config_to_dict(cfg))
            end_epoch(checkpoints, record, net, trainer, history, cfg.keep_checkpoints)
            write(f"epoch {epoch}: lr {lr:g} depth {depth} train loss {train_loss:.4f} accuracy {train_accuracy:.4f} "
                  f"val loss {val_loss:.4f} accuracy {val_accuracy:.4f} ({row['seconds']:.0f} s)"
                  + (f" -> lr {schedule.lr:g}, FT depth {schedule.depth}" if advanced else ""))
    if world.is_root:
        write("training finished: last stage ended" if schedule.finished else "training stopped at epochs")
    return 0


if __name__ == "__main__":
    sys.exit(run_rank(main, FAILURES))
