"""The global batch: every optimiser update uses exactly ``train.global_batch`` chips, whatever the ranks.

The paper trained with a batch of ~256 on 64 GPUs, 3 chips per GPU (Section 8.3, Appendix D). Here each
rank takes an equal share of every global batch (:func:`plan_global_batch`) and runs it as passes
(micro-batches) of at most ``train.batch_size`` chips, forward and backward each; :class:`GradientSum`
sums the passes' gradients, and one all-reduce and one Adam update follow per global batch. The loss is
per chip and summed, the update divides by the global batch (``trainer.step(share)``: Horovod's
``DistributedTrainer`` averages the ranks' gradients, ``1 / (ranks x share) = 1 / global batch``), so the
update is the one of a single batch of ``global_batch`` chips. That is exact when no layer computes
statistics over the chips of a batch (GroupNorm, the paper's choice, normalises each chip on its own);
:func:`batch_statistics_warning` says when BatchNorm makes it inexact.

:class:`GlobalBatchSampler` decides which chips make each update: the epoch's shuffled order (seed and
epoch), cut into consecutive global batches, the same whatever the ranks and passes; the last
``chips mod global_batch`` chips of the order sit the epoch out (another set every epoch), so an epoch is
``floor(chips / global_batch)`` updates and no chip is counted twice in one.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, List, Optional, Tuple

import numpy as np
from mxnet import gluon, nd

from utilities.errors import InputError
from utilities.training.config import TrainConfig
from utilities.training.distributed import World


def _count(n: int, noun: str) -> str:
    """``1 chip``, ``3 chips``, ``2 passes``."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}{'es' if noun.endswith('s') else 's'}"


@dataclass(frozen=True)
class GlobalBatch:
    """How the ranks make one global batch: ``size`` chips, an equal share on each of ``ranks`` ranks, each
    share run as passes of ``passes[i]`` chips."""

    size: int
    ranks: int
    passes: Tuple[int, ...]

    @property
    def share(self) -> int:
        """Chips of one global batch on one rank."""
        return sum(self.passes)

    @property
    def split(self) -> str:
        """The split in words, e.g. ``2 ranks x 32 passes x 3 chips``."""
        groups = [(self.passes.count(chips), chips) for chips in sorted(set(self.passes), reverse=True)]
        parts = [f"{_count(n, 'pass')} x {_count(chips, 'chip')}" for n, chips in groups]
        return f"{_count(self.ranks, 'rank')} x " + (parts[0] if len(parts) == 1 else f"({' + '.join(parts)})")

    def describe(self) -> str:
        """E.g. ``global batch 192 = 2 ranks x 32 passes x 3 chips``."""
        return f"global batch {self.size} = {self.split}"


def plan_global_batch(train: TrainConfig, ranks: int, source: str) -> GlobalBatch:
    """The global batch of ``train`` on ``ranks`` ranks (``source``: the config file, for the message).

    ``train.global_batch`` None: one pass of ``train.batch_size`` chips per rank. Otherwise each rank takes
    ``global_batch / ranks`` chips in ``ceil(share / batch_size)`` passes as equal as possible (larger first).

    Raises
    ------
    InputError
        ``global_batch`` is not a multiple of ``ranks``: the ranks cannot take equal shares.
    """
    size = train.global_batch if train.global_batch is not None else train.batch_size * ranks
    if size % ranks:
        lower = size - size % ranks
        use = f"{lower} or {lower + ranks}" if lower else f"{ranks}"
        raise InputError(f"config {source}: train.global_batch {size} cannot be shared by {_count(ranks, 'rank')}: "
                         f"every rank takes the same number of chips, so it must be a multiple of {ranks} (e.g. {use})")
    share = size // ranks
    count = math.ceil(share / train.batch_size)
    chips, extra = divmod(share, count)  # the first ``extra`` passes take one chip more
    return GlobalBatch(size, ranks, (chips + 1,) * extra + (chips,) * (count - extra))


class GlobalBatchSampler(gluon.data.Sampler):
    """This rank's passes (lists of chip indices) of an epoch, for a DataLoader's ``batch_sampler``.

    The epoch's order is a permutation of the ``length`` chips drawn from ``(seed, epoch)``; global batch
    ``u`` is its chips ``u * size`` to ``(u + 1) * size``, of which rank ``r`` takes the ``r``-th share, cut
    into the plan's passes. Only the :attr:`updates` whole global batches are used (see the module docstring).

    Raises
    ------
    InputError
        Fewer chips than one global batch.
    """

    def __init__(self, length: int, world: World, plan: GlobalBatch, seed: int = 0):
        if length < plan.size:
            raise InputError(f"train.global_batch {plan.size} is more than the {length} training chips: an epoch "
                             "would make no update")
        self.length, self.world, self.plan, self.seed = length, world, plan, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def updates(self) -> int:
        """Optimiser updates per epoch: whole global batches."""
        return self.length // self.plan.size

    def __iter__(self) -> Iterator[List[int]]:
        order = np.random.default_rng((self.seed, self.epoch)).permutation(self.length)
        bounds = np.cumsum((0,) + self.plan.passes)
        for update in range(self.updates):
            start = update * self.plan.size + self.world.rank * self.plan.share
            share = order[start:start + self.plan.share]
            for begin, end in zip(bounds[:-1], bounds[1:]):
                yield share[begin:end].tolist()

    def __len__(self) -> int:
        return self.updates * len(self.plan.passes)


class GradientSum:
    """The sum of one global batch's pass gradients on this rank.

    Each backward pass writes the parameters' gradients (``grad_req`` ``'write'``); :meth:`add_pass` keeps
    their running sum beside them, one extra copy of the trainable parameters while a global batch takes more
    than one pass, and after the last pass leaves the whole sum in the gradients, ready for the update. A
    global batch of one pass per rank (the default) thus runs the plain training step: no gradient is zeroed,
    copied or added, as it would be with ``grad_req='add'``.
    """

    def __init__(self, net: gluon.Block):
        self._grads = [p for p in net.collect_params().values() if p.grad_req != "null"]
        self._sums: Optional[List[nd.NDArray]] = None
        self._summing = False

    def add_pass(self, last: bool) -> None:
        """After a pass's backward: add its gradients to the sum; with ``last``, put the sum into the gradients
        and start the next global batch's."""
        grads = [p.grad() for p in self._grads]
        if last:
            if self._summing:
                for grad, total in zip(grads, self._sums):
                    grad += total
            self._summing = False
        elif not self._summing:
            if self._sums is None:
                self._sums = [grad.copy() for grad in grads]
            else:
                for grad, total in zip(grads, self._sums):
                    grad.copyto(total)
            self._summing = True
        else:
            for grad, total in zip(grads, self._sums):
                total += grad


def batch_statistics_warning(net: gluon.Block, plan: GlobalBatch) -> Optional[str]:
    """A one-line warning when ``net`` has BatchNorm layers and a pass holds fewer chips than the global batch
    (their statistics then come from each pass's chips alone: the update is not the one of a single global
    batch); None otherwise."""
    found, blocks = 0, [net]
    while blocks:
        block = blocks.pop()
        found += isinstance(block, gluon.nn.BatchNorm)
        blocks.extend(block._children.values())
    if not found or max(plan.passes) == plan.size:
        return None
    return (f"warning: BatchNorm ({_count(found, 'layer')}) normalises each pass of at most "
            f"{_count(max(plan.passes), 'chip')} on its own: the update is not that of one batch of {plan.size} chips "
            "(it is with per-chip normalisation such as GroupNorm)")


def check_resumed_batch(plan: GlobalBatch, metrics: Optional[dict], source: str) -> None:
    """Refuse to resume with another global batch than the checkpoint's (its history row ``metrics``).

    With ``train.global_batch`` unset the global batch is ``batch_size`` x ranks, so a run resumed on another
    number of ranks would change the update without a change in its config, which :func:`resume_changes
    <utilities.training.config.resume_changes>` compares.

    Raises
    ------
    InputError
        The global batches differ; the message names both and the setting that resumes the run as it was.
    """
    before = (metrics or {}).get("global_batch")
    if before is None or before == plan.size:
        return
    raise InputError(f"config {source}: resuming with a global batch of {plan.size} ({plan.split}) instead of the "
                     f"checkpoint's {before} ({metrics.get('batch_split', '?')}): set train.global_batch: {before} "
                     "to resume it with the same updates")
