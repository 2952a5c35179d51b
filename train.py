"""Train a mantis change-detection model with the paper's protocol (Section 8, Appendix D).

    python train.py -c configs/levircd_ceecnetv1_d6nf32.yaml                 # one process
    horovodrun -np 2 -H localhost:2 --gloo python train.py -c CONFIG         # two ranks, one machine
    horovodrun -np 64 python train.py -c CONFIG                              # a cluster (hpc/levir.slurm)
    python train.py -c CONFIG --resume                                       # continue a killed run

Horovod data parallelism: parameters broadcast from rank 0, gradients averaged by
``DistributedTrainer``, data sharded per rank, validation counts summed over ranks (float64). Every
update ("step") uses ``train.global_batch`` chips: each rank's equal share in passes of at most
``train.batch_size`` chips, their gradients summed (utilities/training/accumulate.py).
Adam (0.9, 0.999); the evolving loss: learning rate / 10 and FT depth 0 -> 10 -> 20 -> 30 whenever
the validation loss has not improved for ``patience`` epochs; the last stage runs
``final_stage_epochs`` epochs, then training ends. ``fidelity`` (``paper`` or ``authors``) picks the loss
reduction, augmentation policy, target form and network (utilities/training/config.py).
Rank 0 holds the run directory's lock (utilities/training/run_lock.py: a second training in it is
refused), logs, shows progress bars and writes, atomically, per epoch: a checkpoint (parameters,
optimiser state, schedule), ``history.json`` / ``history.csv``; ``config.yaml`` (resolved) once the data
are found usable. ``--resume`` refuses a config that changes what the run computes or trains on
(``RESUMABLE_KEYS`` in utilities/training/config.py lists what may change).

Exit status: 0 when training ends; 2 for bad input (one line ``error: ...`` naming the file or config
key, checked before any chip is cut; also a run directory in use by another training, or a ``--resume``
with a changed config); 1 when an input, the loss, the gradients or the parameters are not finite (one
line naming the epoch, the step and, for inputs and losses, the first offending chip; checked before
every parameter update and before every checkpoint: that epoch gets no checkpoint) or a write fails
("no space left on device writing FILE"); 130 after SIGINT (``interrupted``), 143 after SIGTERM
(``terminated``), the checkpoints those of the last complete epoch.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Tuple

import nn  # first: sets MXNet's OpenMP threads per rank before MXNet loads
from nn import MultitaskFTLoss, mean_fractal_tanimoto

import horovod.mxnet as hvd
import mxnet as mx
import numpy as np
from mxnet import autograd, nd

from mantis import get_model
from utilities.artifacts.checkpoint import CheckpointRecord
from utilities.errors import InputError
from utilities.inference.metrics import change_metrics, confusion_counts
from utilities.progress import progress, write
from utilities.training.accumulate import (
    GlobalBatch,
    GradientSum,
    batch_statistics_warning,
    check_resumed_batch,
    plan_global_batch,
)
from utilities.training.config import Config, check_config, config_to_dict, load_config, save_config
from utilities.training.distributed import World, allreduce_sum, init_world, run_rank
from utilities.training.memory import return_freed_memory
from utilities.training.pipeline import band_inputs
from utilities.training.run_lock import lock_run_dir
from utilities.training.schedule import EvolvingLossSchedule
from utilities.training.step import (
    FiniteCheck,
    NonFiniteError,
    batches,
    check_parameters,
    end_epoch,
    finite_samples,
    forward_backward,
    limit,
    make_loaders,
    previous_run,
    restore_schedule,
    to_ctx,
    update,
)
from utilities.training.watchdog import StallWatchdog


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-c", "--config", required=True, help="YAML experiment config (see configs/)")
    parser.add_argument("--resume", action="store_true", help="continue from the run's last checkpoint")
    parser.add_argument("--run-dir", help="override output.run_dir")
    return parser.parse_args(argv)


def log(world: World, message: str) -> None:
    if world.is_root:
        write(message)


#: exit statuses: bad input 2, non-finite inputs, loss, gradients or parameters 1
FAILURES = {InputError: 2, NonFiniteError: 1}


def train_epoch(net, trainer, loss_fn, loader, cfg: Config, world: World, ctx, epoch: int, watchdog: StallWatchdog,
                plan: GlobalBatch, gradients: GradientSum) -> Tuple[float, int]:
    """One epoch of updates ("steps"), each of ``plan.size`` chips: this rank's passes of ``plan``, their gradients
    summed, one all-reduce and one Adam update. Inputs and losses are checked every pass, the gradients every
    update; the watchdog hears of every pass. Returns the mean training loss over all ranks' chips and the
    number of updates."""
    passes = len(plan.passes)
    steps = len(loader) // passes
    if cfg.train.max_steps_per_epoch is not None:
        steps = min(steps, cfg.train.max_steps_per_epoch)
    total, count = 0.0, 0
    bar = progress(total=steps * passes, desc=f"epoch {epoch} train", unit="step" if passes == 1 else "pass",
                   disable=not world.is_root, leave=False, file=sys.stdout)
    for n, (indices, batch) in enumerate(limit(batches(loader), steps * passes)):
        step, done = n // passes + 1, n % passes + 1
        where = f"epoch {epoch}, step {step}" + (f", pass {done}" if passes > 1 else "")
        date1, date2, *targets = to_ctx(batch, ctx)
        check = FiniteCheck(where, lambda i: loader._dataset.describe(indices[i]))
        loss, _ = forward_backward(net, loss_fn, (date1, date2), targets, check)
        gradients.add_pass(last=done == passes)
        if done == passes:
            update(net, trainer, plan.share, FiniteCheck(f"epoch {epoch}, step {step}", check.describe))
        total += float(loss.sum().asscalar())
        count += date1.shape[0]
        bar.set_postfix(loss=f"{total / count:.4f}")
        bar.update()
        watchdog.beat(where)
    bar.close()
    summed = allreduce_sum([total, count], "train_loss")
    return summed[0] / max(summed[1], 1), steps


def validate(net, loss_fn, loader, cfg: Config, world: World, ctx, epoch: int, watchdog: StallWatchdog) -> dict:
    """Validation loss, <FT>^d of the change mask at the current depth, and pycm metrics."""
    loss_sum, ft_sum, n = 0.0, 0.0, 0
    counts = np.zeros(4, dtype=np.int64)
    steps = len(loader) if cfg.train.max_val_steps is None else min(len(loader), cfg.train.max_val_steps)
    for step, (indices, batch) in enumerate(progress(limit(batches(loader), steps), total=steps, desc="validation",
                                                     disable=not world.is_root, leave=False, file=sys.stdout),
                                            start=1):
        where = f"epoch {epoch}, validation step {step}"
        check = FiniteCheck(where, lambda i: loader._dataset.describe(indices[i]))
        date1, date2, segm_t, bound_t, dist_t = to_ctx(batch, ctx)
        check.samples(finite_samples(date1, date2), "input")
        segm, bound, dist = net(date1, date2)
        values = loss_fn(segm, bound, dist, segm_t, bound_t, dist_t).asnumpy()
        check.samples(np.isfinite(values), "loss")
        loss_sum += float(values.sum())
        ft = mean_fractal_tanimoto(nd, segm, segm_t, loss_fn.depth, tuple(cfg.train.loss_axis))
        ft_sum += float(ft.mean(axis=0, exclude=True).sum().asscalar())
        n += date1.shape[0]
        pred = segm.asnumpy().argmax(axis=1) == 1
        counts += confusion_counts(pred, segm_t.asnumpy()[:, 1] > 0.5)
        watchdog.beat(where)
    summed = allreduce_sum([loss_sum, ft_sum, n, *counts], "validation")
    metrics = change_metrics(summed[3:])
    metrics.update(loss=summed[0] / max(summed[2], 1), ft=summed[1] / max(summed[2], 1))
    return metrics


def parameter_spread(net) -> float:
    """Largest difference between the ranks' parameter checksums: 0 while the ranks agree."""
    checksum = sum(float(p.data().astype("float64").sum().asscalar()) for p in net.collect_params().values())
    sums = hvd.allgather(nd.array([checksum], dtype="float64"), name="param_checksum").asnumpy()
    return float(sums.max() - sums.min())


def main(argv=None) -> int:
    args = parse_args(argv)
    cfg = load_config(args.config)
    if args.run_dir:
        cfg.output.run_dir = args.run_dir
    check_config(cfg, args.config)
    if cfg.train.memory_saving:
        return_freed_memory()
    world = init_world()
    with lock_run_dir(Path(cfg.output.run_dir), world):  # one training at a time in a run directory
        return train(cfg, args, world)


def train(cfg: Config, args: argparse.Namespace, world: World) -> int:
    """The run of :func:`main` in its locked run directory."""
    run_dir = Path(cfg.output.run_dir)
    plan = plan_global_batch(cfg.train, world.size, args.config)  # refused before any chip is cut
    ctx = mx.cpu() if mx.context.num_gpus() == 0 else mx.gpu(world.local_rank)
    mx.random.seed(cfg.train.seed)
    np.random.seed(cfg.train.seed)
    checkpoints, latest, history = previous_run(run_dir, args.resume, world, cfg, args.config)
    schedule = EvolvingLossSchedule.from_depths(cfg.train.lr, cfg.train.depths, factor=cfg.train.lr_factor,
                                                patience=cfg.train.patience, milestones=cfg.train.milestones,
                                                final_stage_epochs=cfg.train.final_stage_epochs)
    if latest is not None:
        check_resumed_batch(plan, latest.metrics, args.config)
        restore_schedule(schedule, latest, checkpoints)
    log(world, f"mantis train: {cfg.model.name}, {world.size} rank(s), {nn.threads.count} "
               f"thread(s) each, {plan.describe()}, run dir {run_dir}")

    # normalization: the training chips' per-band mean/std, saved with every checkpoint for inference
    train_loader, train_sampler, augment, val_loader, normalization = make_loaders(cfg, world, run_dir, plan)
    if world.is_root:  # once the data are found usable: a run refused for its data leaves no config behind
        save_config(cfg, run_dir / "config.yaml")
    net = get_model(cfg.model.name, **cfg.model.args)
    net.initialize(mx.init.Xavier(), ctx=ctx)
    warning = batch_statistics_warning(net, plan)
    if warning and world.is_root:
        print(warning, file=sys.stderr)
    if cfg.model.hybridize:
        # not static_alloc: with it MXNet 1.9.1 intermittently returns NaN gradients for the first
        # layer (6 of 15 identical tiny runs here; 0 of 15 without it)
        net.hybridize()
    loss_fn = MultitaskFTLoss(depth=schedule.depth, axis=tuple(cfg.train.loss_axis))

    # shapes first (inside autograd.record: a broadcast after an inference-mode forward fails on
    # MKLDNN arrays), then the same starting parameters on every rank
    date1, date2 = to_ctx(next(iter(train_loader))[:2], ctx)
    with autograd.record():
        net(date1, date2)
    hvd.broadcast_parameters(net.collect_params(), root_rank=0)
    nd.waitall()  # every parameter has rank 0's values before the first step touches it
    trainer = hvd.DistributedTrainer(net.collect_params(), "adam",
                                     {"learning_rate": schedule.lr, "beta1": 0.9, "beta2": 0.999})
    gradients = GradientSum(net)
    start = 1
    if latest is not None:
        checkpoints.load(latest, net, trainer)  # on every rank: parameters and Adam state
        trainer.set_learning_rate(schedule.lr)  # the schedule's (the saved optimiser carries its own)
        start = latest.epoch + 1
        log(world, f"resumed from epoch {latest.epoch}: lr {schedule.lr:g}, FT depth {schedule.depth}")

    # from here on a rank that completes no step for train.stall_timeout_s ends the job; if training raises
    # (e.g. a collective failed because a peer ended) its clock starts again: this rank is not the stalled
    # one, but a Horovod shutdown that then hangs for train.stall_timeout_s still ends the process
    watchdog = StallWatchdog(cfg.train.stall_timeout_s, world.rank).start()
    try:
        for epoch in range(start, cfg.train.max_epochs + 1):
            if schedule.finished:
                break
            tic = time.time()
            # data order and augmentation are functions of (seed, rank, epoch): a resumed run repeats them
            train_sampler.set_epoch(epoch)
            if augment is not None:
                augment.rng = np.random.default_rng((cfg.train.seed, world.rank, epoch))
            train_loss, updates = train_epoch(net, trainer, loss_fn, train_loader, cfg, world, ctx, epoch, watchdog,
                                              plan, gradients)
            check_parameters(net, epoch)  # on every rank (they hold the same parameters): all stop together
            val = validate(net, loss_fn, val_loader, cfg, world, ctx, epoch, watchdog)
            lr, depth = schedule.lr, schedule.depth
            advanced = schedule.step(val["loss"])  # identical on every rank: val["loss"] is all-reduced
            if advanced:
                trainer.set_learning_rate(schedule.lr)  # on every rank, or the ranks drift apart
                loss_fn.depth = schedule.depth
            row = dict(epoch=epoch, lr=lr, depth=depth, train_loss=train_loss, updates=updates,
                       global_batch=plan.size, batch_split=plan.split,
                       **{f"val_{k}": v for k, v in val.items()}, rank_spread=parameter_spread(net),
                       seconds=round(time.time() - tic, 2))
            history.append(row)
            if world.is_root:
                record = CheckpointRecord(cfg.model.name, epoch, cfg.model.args, normalization=normalization,
                                          bands=cfg.data.bands, schedule=schedule.state_dict(), metrics=row,
                                          config=config_to_dict(cfg), band_inputs=band_inputs(cfg.data))
                end_epoch(checkpoints, record, net, trainer, history, cfg.output.keep_checkpoints)
                log(world, f"epoch {epoch}: lr {lr:g} depth {depth} train loss {train_loss:.4f} val loss "
                           f"{val['loss']:.4f} <FT> {val['ft']:.4f} F1 {val['f1']:.4f} MCC {val['mcc']:.4f} "
                           f"IoU {val['iou']:.4f} ({row['seconds']:.0f} s)"
                           + (f" -> lr {schedule.lr:g}, FT depth {schedule.depth}" if advanced else ""))
    except BaseException:
        watchdog.beat("nothing more (training raised an error; shutting down)")
        raise
    watchdog.stop()
    log(world, "training finished: last stage ended" if schedule.finished else "training stopped at max_epochs")
    return 0


if __name__ == "__main__":
    sys.exit(run_rank(main, FAILURES))
