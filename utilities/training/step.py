"""One training step, what feeds it and what a run keeps: the one implementation that ``train.py``,
``train_cifar.py`` and the benchmarks share.

:func:`train_step` is one optimisation step of the paper's training (Appendix D): forward of the
inputs, the loss against the targets, backward (:func:`forward_backward`), and the optimiser update of a
Gluon trainer (:func:`update`; under Horovod a ``DistributedTrainer``, whose update all-reduces the
gradients first); train.py runs several passes per update (utilities/training/accumulate.py). With a
:class:`FiniteCheck` it stops, with :class:`NonFiniteError`, at the first non-finite input, per-sample
loss or (all-reduced) gradient, naming where and which sample. :func:`make_loaders` builds train.py's
chip loaders; :func:`previous_run`, :func:`restore_schedule`, :func:`end_epoch` and :func:`write_history`
are a run directory's checkpoints and history, fresh or resumed.
"""
from __future__ import annotations

import csv
import functools
import io
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
from mxnet import autograd, gluon, nd

from utilities.artifacts.checkpoint import CheckpointRecord, Checkpoints
from utilities.artifacts.model_card import card_path, write_spec_card
from utilities.atomic import atomic_write_text
from utilities.data.augment import ChangeAugmentation
from utilities.errors import InputError
from utilities.progress import write
from utilities.training.accumulate import GlobalBatch, GlobalBatchSampler
from utilities.training.config import CifarConfig, Config, resume_changes
from utilities.training.distributed import ShardSampler, World, barrier
from utilities.training.pipeline import chip_caches, chip_datasets
from utilities.training.schedule import EvolvingLossSchedule


class NonFiniteError(RuntimeError):
    """An input, the loss, the gradients or the parameters are not finite: training stops (exit status 1)
    and the epoch gets no checkpoint."""


def finite_samples(*arrays: nd.NDArray) -> np.ndarray:
    """One flag per sample of a batch: every value of the sample in ``arrays`` (NDArrays, batch first) is finite."""
    return np.logical_and.reduce([np.isfinite(a.asnumpy().reshape(a.shape[0], -1)).all(axis=1) for a in arrays])


@dataclass(frozen=True)
class FiniteCheck:
    """The non-finite checks of one batch: ``where`` it is (e.g. "epoch 2, step 5"), for the messages, and
    ``describe(i)``, the ``i``-th sample of the batch in words (e.g. its chip's scene and origin)."""

    where: str
    describe: Callable[[int], str]

    def samples(self, finite: np.ndarray, what: str) -> None:
        """Stop at the first sample whose ``what`` is not finite (``finite``: one flag per sample)."""
        bad = np.flatnonzero(~np.asarray(finite))
        if bad.size:
            raise NonFiniteError(f"non-finite {what} at {self.where}, first in {self.describe(int(bad[0]))}: "
                                 "training stopped")

    def gradients(self, net: gluon.Block) -> None:
        """Stop when the gradients are not finite (after the ranks' all-reduce: every rank stops together)."""
        grads = [p.grad() for p in net.collect_params().values() if p.grad_req != "null"]
        if not np.isfinite(nd.multi_sum_sq(*grads, num_arrays=len(grads)).asnumpy()).all():
            raise NonFiniteError(f"non-finite gradients at {self.where} (finite inputs and loss): training stopped")


def train_step(net: gluon.Block, trainer: gluon.Trainer, loss_fn: Callable[..., nd.NDArray],
               inputs: Sequence[nd.NDArray], targets: Sequence[nd.NDArray],
               check: Optional[FiniteCheck] = None) -> Tuple[nd.NDArray, List[nd.NDArray]]:
    """One training step: :func:`forward_backward` of one batch, then :func:`update` by its size.

    The loss is per sample (shape ``(batch,)``) and the update normalises its summed gradient by the
    batch size (the first axis of ``inputs[0]``). With ``check``, the inputs are checked before the
    forward, the loss before the update and the gradients after it (after a ``DistributedTrainer``'s
    all-reduce); the first non-finite one raises :class:`NonFiniteError`. Without it nothing waits for
    MXNet's engine.

    Returns
    -------
    loss : NDArray
        The per-sample loss.
    outputs : list of NDArray
        The network's outputs (one for a single-output network).
    """
    loss, outputs = forward_backward(net, loss_fn, inputs, targets, check)
    update(net, trainer, inputs[0].shape[0], check)
    return loss, outputs


def forward_backward(net: gluon.Block, loss_fn: Callable[..., nd.NDArray], inputs: Sequence[nd.NDArray],
                     targets: Sequence[nd.NDArray],
                     check: Optional[FiniteCheck] = None) -> Tuple[nd.NDArray, List[nd.NDArray]]:
    """``loss_fn(*net(*inputs), *targets)`` recorded and its backward: the parameters' gradients become those of
    the per-sample loss summed over the batch. With ``check``, the inputs are checked before the forward and
    the loss after the backward. Returns the per-sample loss and the network's outputs (a list)."""
    if check is not None:
        check.samples(finite_samples(*inputs), "input")
    with autograd.record():
        outputs = net(*inputs)
        outputs = list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
        loss = loss_fn(*outputs, *targets)
    loss.backward()
    if check is not None:
        check.samples(np.isfinite(loss.asnumpy()), "loss")
    return loss, outputs


def update(net: gluon.Block, trainer: gluon.Trainer, chips: int, check: Optional[FiniteCheck] = None) -> None:
    """The optimiser update with the gradients summed over ``chips`` chips on this rank: ``trainer.step(chips)``
    (a ``DistributedTrainer`` first averages the ranks' gradients, so with equal shares the update divides by
    all ranks' chips), then, with ``check``, the all-reduced gradients are checked."""
    trainer.step(chips)
    if check is not None:
        check.gradients(net)


def check_parameters(net: gluon.Block, epoch: int) -> None:
    """Refuse to checkpoint parameters that are not all finite."""
    params = list(net.collect_params().items())
    bad = [name for name, p in params if not np.isfinite(p.data().asnumpy()).all()]
    if bad:
        raise NonFiniteError(f"after epoch {epoch}, {len(bad)} of {len(params)} parameter arrays are not finite "
                             f"(first {bad[0]}): training stopped, no checkpoint written for epoch {epoch}")


def to_ctx(batch: Sequence[nd.NDArray], ctx: Any) -> List[nd.NDArray]:
    """The arrays of a batch on ``ctx`` (DataLoader batches may live on ``cpu_shared(0)``, which a hybridized
    network rejects)."""
    return [x.as_in_context(ctx) for x in batch]


def limit(iterable: Iterable, n: Optional[int]) -> Iterator:
    """The first ``n`` items (all when ``n`` is None)."""
    for i, item in enumerate(iterable):
        if n is not None and i >= n:
            return
        yield item


def batches(loader: gluon.data.DataLoader) -> Iterator[Tuple[List[int], Any]]:
    """``(chip indices, batch)`` of a Gluon DataLoader, in its order (its batch sampler, iterated again)."""
    return zip(loader._batch_sampler, loader)


def make_loaders(cfg: Config, world: World, run_dir: Path, plan: GlobalBatch):
    """Chip caches (built by rank 0 while the others wait), datasets, per-rank loaders and the input
    standardisation: the training chips' per-band mean and std, for both loaders and the checkpoints
    (:func:`~utilities.training.pipeline.chip_datasets`).

    Returns
    -------
    tuple
        ``(train loader, its GlobalBatchSampler, its ChangeAugmentation or None, validation loader,
        {"mean": ..., "std": ...} of the training chips)``; the train loader yields this rank's passes of
        ``plan`` (:class:`~utilities.training.accumulate.GlobalBatchSampler`).
    """
    if world.is_root:
        folders = chip_caches(cfg.data, run_dir / "chips")
    barrier("chip_caches")
    if not world.is_root:
        folders = chip_caches(cfg.data, run_dir / "chips", progress=False)  # reused, not rebuilt
    augment = ChangeAugmentation(cfg.augment.policy, **cfg.augment.args) if cfg.augment.enabled else None
    if augment is not None:  # "epoch 0" of train.py's (seed, rank, epoch): the shape-inferring batch before epoch 1
        augment.rng = np.random.default_rng((cfg.train.seed, world.rank, 0))
    datasets = chip_datasets(cfg.data, folders, transform=augment)  # validation standardised as training
    train_set, val_set = datasets["train"], datasets["val"]
    if len(train_set) == 0 or len(val_set) == 0:
        raise InputError(f"no training or validation chips in {folders['train'].parent} (train {len(train_set)}, "
                         f"val {len(val_set)})")
    if world.is_root:
        write(f"chips: {len(train_set)} training, {len(val_set)} validation ({train_set.skipped} and "
              f"{val_set.skipped} skipped for NaN, infinite or nodata pixels)")
    train_sampler = GlobalBatchSampler(len(train_set), world, plan, seed=cfg.train.seed)
    val_sampler = ShardSampler(len(val_set), world)
    loader = dict(batch_size=cfg.train.batch_size, num_workers=cfg.data.num_workers, last_batch="keep")
    return (gluon.data.DataLoader(train_set, batch_sampler=train_sampler, num_workers=cfg.data.num_workers),
            train_sampler, augment,
            gluon.data.DataLoader(val_set, sampler=val_sampler, **loader), train_set.normalization)


def previous_run(run_dir: Path, resume: bool, world: World, config: Optional[Union[Config, CifarConfig]] = None,
                 source: str = "") -> Tuple[Checkpoints, Optional[CheckpointRecord], list]:
    """The run directory's checkpoints, the record to resume from (None: start afresh) and the history up
    to it.

    The history is ``history.json`` up to the record's epoch, with the rows of checkpointed epochs that it
    lacks (a run stopped between a checkpoint and its history) taken from their records. With ``config`` (read
    from the file ``source``), a resumed run's config is compared with the one its checkpoint recorded
    (:func:`~utilities.training.config.resume_changes`); rank 0 says which allowed keys changed.

    Raises
    ------
    InputError
        ``run_dir`` holds checkpoints but ``resume`` is not set (a new run would mix with them), or the
        config changes what the resumed run computes or trains on.
    """
    checkpoints = Checkpoints(run_dir)
    latest = checkpoints.latest()
    if not resume:
        if latest is not None:
            raise InputError(f"{run_dir} already holds checkpoints: use --resume to continue it or another run_dir")
        return checkpoints, None, []
    if latest is None:
        if world.is_root:
            print(f"warning: no checkpoint in {checkpoints.dir}: starting afresh", file=sys.stderr)
        return checkpoints, None, []
    if config is not None and latest.config:
        changes = resume_changes(config, latest.config, source, checkpoints.dir / "latest.json")
        if changes and world.is_root:
            write(f"resuming with changed settings: {', '.join(changes)}")
    path = run_dir / "history.json"
    rows = {row["epoch"]: row for row in (json.loads(path.read_text()) if path.exists() else [])}
    for record in checkpoints.records():
        if record.metrics and record.epoch not in rows:
            rows[record.epoch] = record.metrics
    return checkpoints, latest, [rows[epoch] for epoch in sorted(rows) if epoch <= latest.epoch]


def restore_schedule(schedule: EvolvingLossSchedule, record: CheckpointRecord, checkpoints: Checkpoints) -> None:
    """Load the schedule state of the checkpoint ``record`` into ``schedule``.

    Raises
    ------
    InputError
        The schedule configured now differs from the checkpoint's (other stages, patience, milestones).
    """
    try:
        schedule.load_state_dict(record.schedule)
    except ValueError as err:
        raise InputError(f"cannot resume from checkpoint {checkpoints.dir / 'latest.json'}: {err}") from None


def end_epoch(checkpoints: Checkpoints, record: CheckpointRecord, net: gluon.Block, trainer: gluon.Trainer,
              history: List[Dict[str, Any]], keep: Optional[int]) -> None:
    """Rank 0's writes after an epoch: its checkpoint with, for a change-detection model, its model card
    (:func:`~utilities.artifacts.model_card.write_spec_card`, written before ``latest.json``), then (with
    ``keep``) only the newest ``keep`` checkpoints keep their files and cards, then the run's history
    (:func:`write_history`)."""
    describe = None
    if record.normalization is not None:
        size = sum(p.data().size for p in net.collect_params().values())
        describe = functools.partial(write_spec_card, parameters=size)
    checkpoints.save(record, net, trainer, describe)
    if keep:
        checkpoints.prune(keep)
        for pruned in checkpoints.records():  # a card describes a model that can run: not one without parameters
            if pruned.params is None or not (checkpoints.dir / pruned.params).exists():
                card_path(checkpoints.dir / f"epoch_{pruned.epoch:04d}.json").unlink(missing_ok=True)
    write_history(checkpoints.dir.parent, history)


def write_history(run_dir: Path, history: List[Dict[str, Any]]) -> None:
    """``history.json`` and ``history.csv`` (one row per epoch), atomically."""
    atomic_write_text(run_dir / "history.json", json.dumps(history, indent=2))
    out = io.StringIO()
    # every column of every row (rows of a resumed run written before a column existed leave it empty)
    writer = csv.DictWriter(out, fieldnames=list(dict.fromkeys(key for row in history for key in row)))
    writer.writeheader()
    writer.writerows(history)
    atomic_write_text(run_dir / "history.csv", out.getvalue())
