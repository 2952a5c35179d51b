"""One training step, what feeds it and what a run keeps: the one implementation that ``train.py``,
``train_cifar.py`` and the benchmarks share.

:func:`train_step` is one optimisation step of the paper's training (Appendix D): forward of the
inputs, the loss against the targets, backward, and the optimiser update of a Gluon trainer (under
Horovod a ``DistributedTrainer``, whose update all-reduces the gradients first). With a
:class:`FiniteCheck` it stops, with :class:`NonFiniteError`, at the first non-finite input, per-sample
loss or (all-reduced) gradient, naming where and which sample. :func:`make_loaders` builds train.py's
chip loaders; :func:`previous_run`, :func:`end_epoch` and :func:`write_history` are a run directory's
checkpoints and history, fresh or resumed.
"""
from __future__ import annotations

import csv
import io
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np
from mxnet import autograd, gluon, nd

from utilities.artifacts.checkpoint import CheckpointRecord, Checkpoints
from utilities.atomic import atomic_write_text
from utilities.data.augment import ChangeAugmentation
from utilities.data.chips import ChipDataset
from utilities.errors import InputError
from utilities.progress import write
from utilities.training.config import Config
from utilities.training.distributed import ShardSampler, World, barrier
from utilities.training.pipeline import chip_caches


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
    """One training step: ``loss_fn(*net(*inputs), *targets)`` recorded, backward, ``trainer.step(batch)``.

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
    if check is not None:
        check.samples(finite_samples(*inputs), "input")
    with autograd.record():
        outputs = net(*inputs)
        outputs = list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
        loss = loss_fn(*outputs, *targets)
    loss.backward()
    if check is not None:
        check.samples(np.isfinite(loss.asnumpy()), "loss")
    trainer.step(inputs[0].shape[0])
    if check is not None:
        check.gradients(net)
    return loss, outputs


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


def make_loaders(cfg: Config, world: World, run_dir: Path):
    """Chip caches (built by rank 0 while the others wait), datasets, per-rank loaders and the input
    standardisation.

    Returns
    -------
    tuple
        ``(train loader, its ShardSampler, its ChangeAugmentation or None, validation loader,
        {"mean": ..., "std": ...} of the training chips)``.
    """
    if world.is_root:
        folders = chip_caches(cfg.data, run_dir / "chips")
    barrier("chip_caches")
    if not world.is_root:
        folders = chip_caches(cfg.data, run_dir / "chips", progress=False)  # reused, not rebuilt
    train_dir, val_dir = folders["train"], folders["val"]
    augment = ChangeAugmentation(cfg.augment.policy, **cfg.augment.args) if cfg.augment.enabled else None
    train_set = ChipDataset(train_dir, transform=augment, targets=cfg.data.targets)
    val_set = ChipDataset(val_dir, targets=cfg.data.targets)
    if len(train_set) == 0 or len(val_set) == 0:
        raise InputError(f"no training or validation chips in {train_dir.parent} (train {len(train_set)}, "
                         f"val {len(val_set)})")
    if world.is_root:
        write(f"chips: {len(train_set)} training, {len(val_set)} validation ({train_set.skipped} and "
              f"{val_set.skipped} skipped for NaN, infinite or nodata pixels)")
    train_sampler = ShardSampler(len(train_set), world, shuffle=True, seed=cfg.train.seed, pad=True)
    val_sampler = ShardSampler(len(val_set), world, shuffle=False, pad=False)
    loader = dict(batch_size=cfg.train.batch_size, num_workers=cfg.data.num_workers, last_batch="keep")
    normalization = {"mean": train_set.manifest["mean"], "std": train_set.manifest["std"]}
    return (gluon.data.DataLoader(train_set, sampler=train_sampler, **loader), train_sampler, augment,
            gluon.data.DataLoader(val_set, sampler=val_sampler, **loader), normalization)


def previous_run(run_dir: Path, resume: bool, world: World) -> Tuple[Checkpoints, Optional[CheckpointRecord], list]:
    """The run directory's checkpoints, the record to resume from (None: start afresh) and the history up
    to it.

    Raises
    ------
    InputError
        ``run_dir`` holds checkpoints but ``resume`` is not set (a new run would mix with them).
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
    path = run_dir / "history.json"
    history = json.loads(path.read_text()) if path.exists() else []
    return checkpoints, latest, [h for h in history if h["epoch"] <= latest.epoch]


def end_epoch(checkpoints: Checkpoints, record: CheckpointRecord, net: gluon.Block, trainer: gluon.Trainer,
              history: List[Dict[str, Any]], keep: Optional[int]) -> None:
    """Rank 0's writes after an epoch: its checkpoint, then (with ``keep``) only the newest ``keep`` checkpoints
    keep their files, then the run's history (:func:`write_history`)."""
    checkpoints.save(record, net, trainer)
    if keep:
        checkpoints.prune(keep)
    write_history(checkpoints.dir.parent, history)


def write_history(run_dir: Path, history: List[Dict[str, Any]]) -> None:
    """``history.json`` and ``history.csv`` (one row per epoch), atomically."""
    atomic_write_text(run_dir / "history.json", json.dumps(history, indent=2))
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(history[0]))
    writer.writeheader()
    writer.writerows(history)
    atomic_write_text(run_dir / "history.csv", out.getvalue())
