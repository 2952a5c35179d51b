"""Horovod data parallelism for MXNet: the world, sharding, and reductions (paper Appendix D).

Facts this module relies on (Horovod 0.28.1 + MXNet 1.9.1, checked with 2-rank ``horovodrun --gloo``):
metric counts are all-reduced in float64 (float32 loses counts above 2^24); every rank must take the
same number of training steps per epoch (a rank that leaves the loop early ends the job), hence the
padded :class:`ShardSampler`; every process must end with ``nd.waitall(); hvd.shutdown()``.
"""
from __future__ import annotations

import faulthandler
import os
from dataclasses import dataclass
from typing import Iterator, Mapping, Sequence, Type

import horovod.mxnet as hvd
import mxnet as mx
import numpy as np
from mxnet import gluon

from utilities.cli import Main, entry_point
from utilities.errors import InputError


@dataclass(frozen=True)
class World:
    rank: int
    size: int
    local_rank: int

    @property
    def is_root(self) -> bool:
        return self.rank == 0


def init_world() -> World:
    """``hvd.init()``; under SLURM, check that Horovod sees as many ranks as SLURM gave tasks.

    Plain ``srun -n N python train.py`` with a Gloo-only Horovod silently runs N independent
    single-process jobs; this stops that with a one-line message instead.

    Every rank also enables :mod:`faulthandler`: a rank that dies of a signal (SIGSEGV, SIGABRT) prints
    the Python stack of each of its threads before MXNet's own handler runs, so a native crash in a
    multi-rank job says where each thread was.
    """
    faulthandler.enable(all_threads=True)
    hvd.init()
    world = World(hvd.rank(), hvd.size(), hvd.local_rank())
    tasks = os.environ.get("SLURM_NTASKS")
    if tasks and os.environ.get("MANTIS_SKIP_SLURM_CHECK") != "1" and int(tasks) != world.size:
        raise InputError(f"SLURM gave {tasks} tasks but Horovod sees {world.size} rank(s): launch with "
                         f"`horovodrun -np $SLURM_NTASKS ...` (or set MANTIS_SKIP_SLURM_CHECK=1 to run anyway)")
    return world


def allreduce_sum(values: Sequence[float], name: str) -> np.ndarray:
    """Sum ``values`` over all ranks in float64."""
    array = mx.nd.array(np.asarray(values, dtype=np.float64), dtype="float64")
    return hvd.allreduce(array, average=False, name=name).asnumpy()


def barrier(name: str = "barrier") -> None:
    """Wait until every rank gets here."""
    allreduce_sum([0.0], name)


def shutdown() -> None:
    """Finish pending work and leave Horovod cleanly (avoids crashes at interpreter exit).

    ``hvd.shutdown()`` runs even when the wait raises (a collective failed because another rank ended),
    so that no process leaves with Horovod's threads still running.
    """
    try:
        mx.nd.waitall()
    finally:
        hvd.shutdown()


def run_rank(main: Main, failures: Mapping[Type[BaseException], int]) -> int:
    """Run a training entry point on this rank (:func:`~utilities.cli.entry_point`: one-line errors and
    their statuses) and leave Horovod afterwards, error or not: Horovod processes that skip
    :func:`shutdown` crash or hang at exit. Returns the exit status."""
    try:
        return entry_point(main, failures)()
    finally:
        shutdown()

class ShardSampler(gluon.data.Sampler):
    """Indices of this rank's shard of ``length`` items, reshuffled every epoch identically on all ranks.

    With ``pad`` (training) every rank gets ``ceil(length / size)`` indices, the shortfall filled by
    wrapping around, so all ranks take the same number of steps. Without it (validation) the shards
    are disjoint and cover every item exactly once.
    """

    def __init__(self, length: int, world: World, shuffle: bool = True, seed: int = 0, pad: bool = True):
        self.length, self.world, self.shuffle, self.seed, self.pad = length, world, shuffle, seed, pad
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _indices(self) -> np.ndarray:
        order = np.arange(self.length)
        if self.shuffle:
            order = np.random.default_rng((self.seed, self.epoch)).permutation(self.length)
        if self.pad:
            per_rank = -(-self.length // self.world.size)
            order = np.resize(order, per_rank * self.world.size)
        return order[self.world.rank::self.world.size]

    def __iter__(self) -> Iterator[int]:
        return iter(self._indices().tolist())

    def __len__(self) -> int:
        return len(self._indices())
