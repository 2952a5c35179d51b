"""Horovod data parallelism for MXNet: the world, sharding, and reductions (paper Appendix D).

Facts this module relies on (Horovod 0.28.1 + MXNet 1.9.1, checked with 2-rank ``horovodrun --gloo``):
metric counts are all-reduced in float64 (float32 loses counts above 2^24); every rank must take the
same number of training steps per epoch (a rank that leaves the loop early ends the job), which the
global batch's sampler ensures (utilities/training/accumulate.py); every process must end with
``nd.waitall(); hvd.shutdown()``.

SIGTERM (SLURM's scancel and time limit, ``timeout``, horovodrun stopping its ranks) ends a rank like
Ctrl-C: :func:`run_rank` prints ``terminated`` and exits with status 143 (128 + 15). The signal raises
:class:`Terminated` in the main thread as soon as it runs Python again; a main thread that stays inside
MXNet (a long operator, a collective whose peer is gone) does not run Python, so the process then ends
:data:`TERMINATE_GRACE_S` seconds after the signal by itself (horovodrun sends SIGKILL 5 s after its
SIGTERM). Either way the checkpoints are those of the last complete epoch: every file is written under a
temporary name and renamed when complete, ``latest.json`` last (utilities/artifacts/checkpoint.py).
"""
from __future__ import annotations

import faulthandler
import os
import signal
import threading
import time
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Sequence, Type

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


def from_root(value: Any, name: str) -> Any:
    """Rank 0's ``value`` (any picklable object) on every rank."""
    return hvd.broadcast_object(value, root_rank=0, name=name)


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


#: exit status after SIGTERM (128 + 15, as shells report a process it ended)
TERMINATED_STATUS = 128 + signal.SIGTERM
#: seconds after SIGTERM within which a rank ends even when its main thread stays inside MXNet; below the
#: 5 s that horovodrun leaves its ranks between its SIGTERM and its SIGKILL
TERMINATE_GRACE_S = 3.0


class Terminated(BaseException):
    """SIGTERM arrived (raised in the main thread, like KeyboardInterrupt for SIGINT)."""


class SigtermExit:
    """SIGTERM handling of a training process (see the module docstring): :meth:`install` once, in the main
    thread. ``received`` tells whether the signal came."""

    def __init__(self, grace: float = TERMINATE_GRACE_S):
        self.grace = grace
        self.received = False
        self._reported = threading.Lock()

    def install(self) -> "SigtermExit":
        """Handle SIGTERM in this process from now on; forked children (DataLoader workers) keep the default."""
        signal.signal(signal.SIGTERM, self._raise)
        read, write = os.pipe()
        os.set_blocking(write, False)
        # the C-level handler writes the signal number here at once, whatever the main thread is doing
        signal.set_wakeup_fd(write, warn_on_full_buffer=False)
        threading.Thread(target=self._watch, args=(read,), name="sigterm-watch", daemon=True).start()
        os.register_at_fork(before=_block_sigterm, after_in_parent=_unblock_sigterm, after_in_child=_default_sigterm)
        return self

    def report(self) -> None:
        """Print ``terminated`` (once, whichever thread comes first; a raw write: no stream lock is taken)."""
        if self._reported.acquire(blocking=False):
            os.write(2, b"terminated\n")

    def _raise(self, signum: int, frame: Any) -> None:
        if self.received:  # a second SIGTERM does not interrupt the shutdown of the first
            return
        self.received = True
        self.report()
        raise Terminated()

    def _watch(self, fd: int) -> None:
        while signal.SIGTERM not in os.read(fd, 64):
            pass
        time.sleep(self.grace)  # the main thread ends the process meanwhile, unless it stays inside MXNet
        self.report()
        os._exit(TERMINATED_STATUS)


def _block_sigterm() -> None:
    """Before a fork: SIGTERM waits, so that a child signalled before :func:`_default_sigterm` ran (MXNet's own
    fork handlers run first) neither loses it nor writes it to its parent's wakeup descriptor."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})


def _unblock_sigterm() -> None:
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})


def _default_sigterm() -> None:
    """In a forked child: SIGTERM's default action and no wakeup descriptor (the parent's watcher would read
    the child's signals); then a SIGTERM that came meanwhile ends the child."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.set_wakeup_fd(-1)
    _unblock_sigterm()


def run_rank(main: Main, failures: Mapping[Type[BaseException], int]) -> int:
    """Run a training entry point on this rank (:func:`~utilities.cli.entry_point`: one-line errors and
    their statuses) and leave Horovod afterwards, error or not: Horovod processes that skip
    :func:`shutdown` crash or hang at exit. SIGTERM ends it with ``terminated`` and
    :data:`TERMINATED_STATUS` (:class:`SigtermExit`). Returns the exit status."""
    sigterm = SigtermExit().install()
    try:
        try:
            return entry_point(main, failures)()
        finally:
            shutdown()
    except Terminated:
        return TERMINATED_STATUS
    except Exception:
        if not sigterm.received:
            raise
        return TERMINATED_STATUS  # the shutdown after SIGTERM failed (a peer ended first): the process ends anyway
    finally:
        # The rank's status is decided. A SIGTERM from now on (horovodrun stops the other ranks as soon as one
        # ends) changes nothing: ignored, it cannot kill the interpreter's exit, which Python runs with SIGTERM's
        # default action (its own handlers are removed then; an ignored signal stays ignored), after which the
        # rank's shell would report "Terminated" below the rank's one line.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)

class ShardSampler(gluon.data.Sampler):
    """This rank's share of ``length`` items for evaluation: item ``i`` goes to rank ``i % size``, in order, so
    the shards are disjoint and together cover every item exactly once (training batches come from
    :class:`~utilities.training.accumulate.GlobalBatchSampler`)."""

    def __init__(self, length: int, world: World):
        self.indices = list(range(world.rank, length, world.size))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)
