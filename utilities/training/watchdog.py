"""A per-rank stall watchdog: end the job when training stops making progress.

Horovod 0.28.1 ends a job when a rank dies (``horovodrun`` ends the others within a second) and Gloo
ends it when a peer stops answering for ``HOROVOD_GLOO_TIMEOUT_SECONDS`` (a SIGSTOPped rank). A rank
whose *main thread* blocks while its Horovod threads stay alive (a hung mount, a FIFO read, a
deadlock) ends nothing: every other rank waits in its next collective and the job hangs for as long
as the allocation lasts (Horovod's stall check does not fire for it, and there is no elastic mode
for MXNet). :class:`StallWatchdog` covers that case without relying on Horovod or on the main thread:

- the training loop calls :meth:`StallWatchdog.beat` after every completed training step and
  validation batch;
- a Python thread of its own prints one line naming the rank, the time waited, the last completed
  step and where the main thread is, then ends the process with :data:`STALL_EXIT_CODE`
  (``os._exit``: no clean-up that could block as well). ``horovodrun`` / ``srun`` then end the
  other ranks;
- the rank to blame reports first: a rank whose main thread waits inside MXNet or Horovod (where the
  other ranks' collectives complete, i.e. most likely for a stalled peer) gives the others
  :data:`PEER_GRACE_S` more seconds to end the job before it reports itself;
- a backstop that needs no Python lock (``faulthandler.dump_traceback_later``, a C thread) ends the
  process :data:`BACKSTOP_GRACE_S` after the deadline if the Python thread could not run (the main
  thread blocked while holding the GIL): it prints every thread's Python stack and exits with 1.
"""
from __future__ import annotations

import faulthandler
import os
import sys
import threading
import time
from types import FrameType
from typing import Callable, Optional

#: exit status of a process ended by the watchdog (as ``timeout(1)`` uses)
STALL_EXIT_CODE = 124
#: extra seconds a rank waiting inside MXNet / Horovod leaves the other ranks to report first
PEER_GRACE_S = 60.0
#: seconds after the deadline at which the GIL-free backstop ends the process
BACKSTOP_GRACE_S = 90.0
#: packages whose frames mean "waiting for the engine, where the collectives of the other ranks complete"
ENGINE_PACKAGES = ("mxnet", "horovod")


def exit_process(message: str) -> None:
    """Print ``message`` on stderr and end the process at once with :data:`STALL_EXIT_CODE`."""
    sys.stderr.write(message + "\n")
    sys.stderr.flush()
    os._exit(STALL_EXIT_CODE)


def main_frame() -> Optional[FrameType]:
    """The innermost Python frame of the main thread (None if it has none)."""
    return sys._current_frames().get(threading.main_thread().ident)


def waits_in_engine(frame: Optional[FrameType]) -> bool:
    """Whether ``frame`` is code of MXNet or Horovod (:data:`ENGINE_PACKAGES`)."""
    module = frame.f_globals.get("__name__", "") if frame is not None else ""
    return module.split(".")[0] in ENGINE_PACKAGES


def location(frame: Optional[FrameType]) -> str:
    """``function (file:line)`` of ``frame``."""
    if frame is None:
        return "unknown"
    return f"{frame.f_code.co_name} ({os.path.basename(frame.f_code.co_filename)}:{frame.f_lineno})"


class StallWatchdog:
    """End the process when no :meth:`beat` arrives for ``timeout_s`` seconds (0: never; the watchdog
    is then inert).

    Parameters
    ----------
    timeout_s : float
        Longest time allowed between two beats (config ``train.stall_timeout_s``).
    rank : int
        This process's Horovod rank, named in the message.
    on_stall : callable
        Called with the one-line message when the time is up; default :func:`exit_process`.
    clock : callable
        Monotonic seconds (tests substitute their own).
    backstop : bool
        Arm ``faulthandler.dump_traceback_later`` (process-wide: one watchdog per process).

    Use as a context manager around the training loop: the clock starts when the block is entered.
    """

    def __init__(self, timeout_s: float, rank: int, on_stall: Callable[[str], None] = exit_process,
                 clock: Callable[[], float] = time.monotonic, backstop: bool = True):
        self.timeout_s, self.rank, self.on_stall, self.clock = float(timeout_s), rank, on_stall, clock
        self.backstop = backstop and self.enabled
        self.last = "none (no training step completed yet)"
        self._since = clock()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    @property
    def enabled(self) -> bool:
        return self.timeout_s > 0

    def beat(self, completed: str) -> None:
        """Record that ``completed`` (e.g. ``"epoch 3, step 12"``) has just finished."""
        self.last, self._since = completed, self.clock()
        if self.backstop:
            faulthandler.dump_traceback_later(self.timeout_s + BACKSTOP_GRACE_S, exit=True)

    def overdue(self, now: float, frame: Optional[FrameType]) -> Optional[str]:
        """The stall message if, at ``now`` with the main thread in ``frame``, the time is up; else None."""
        waited = now - self._since
        in_engine = waits_in_engine(frame)
        if not self.enabled or waited < self.timeout_s + (PEER_GRACE_S if in_engine else 0.0):
            return None
        where = location(frame) + (", inside MXNet/Horovod: waiting for the engine or another rank" if in_engine
                                   else "")
        return (f"error: rank {self.rank} stalled: no training step or validation batch completed in {waited:.1f} s "
                f"(train.stall_timeout_s {self.timeout_s:g}); last completed: {self.last}; main thread in {where}; "
                f"ending the job")

    def _run(self) -> None:
        while True:
            now = self.clock()
            message = self.overdue(now, main_frame())
            if message is not None:
                self.on_stall(message)
                return
            deadline = self._since + self.timeout_s
            if now >= deadline:  # the main thread waits in the engine: check again soon
                deadline = now + 1.0
            if self._stop.wait(deadline - now):
                return

    def start(self) -> "StallWatchdog":
        if self.enabled and self._thread is None:
            self.beat(self.last)
            self._thread = threading.Thread(target=self._run, name=f"stall-watchdog-rank{self.rank}", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self.backstop:
            faulthandler.cancel_dump_traceback_later()

    def __enter__(self) -> "StallWatchdog":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
