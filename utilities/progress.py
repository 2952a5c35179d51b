"""Progress of the long loops (training and validation epochs, chipping, tiled inference).

On a terminal :func:`progress` returns a tqdm bar. Elsewhere (``horovodrun`` and SLURM pipe every
rank's output into a log file) a bar would write one line per update, so it returns a
:class:`LogProgress`: one line every ``interval`` seconds and one when the stage ends, each with the
count, the rate and the time left::

    epoch 3 train: 12/32 steps (38%), 0.41 steps/s, elapsed 29s, ETA 49s, loss=0.5123
    epoch 3 train: 32/32 steps (100%), 0.41 steps/s, done in 1m18s, loss=0.5012

The interval is the ``interval`` argument, else the environment variable ``MANTIS_PROGRESS_SECONDS``,
else :data:`DEFAULT_INTERVAL` seconds.
"""
from __future__ import annotations

import os
import sys
import time
from typing import Any, Callable, Iterable, Iterator, Optional, TextIO, Union

from tqdm import tqdm

from utilities.errors import InputError

#: seconds between two log lines where the output is not a terminal
DEFAULT_INTERVAL = 30.0
#: environment variable that overrides :data:`DEFAULT_INTERVAL`
INTERVAL_VARIABLE = "MANTIS_PROGRESS_SECONDS"


def log_interval(interval: Optional[float] = None) -> float:
    """``interval`` if given, else ``$MANTIS_PROGRESS_SECONDS``, else :data:`DEFAULT_INTERVAL`."""
    if interval is None:
        text = os.environ.get(INTERVAL_VARIABLE)
        if text is None:
            return DEFAULT_INTERVAL
        try:
            interval = float(text)
        except ValueError:
            raise InputError(f"{INTERVAL_VARIABLE}={text!r} is not a number of seconds.") from None
    if not interval >= 0:
        raise InputError(f"progress interval must be >= 0 seconds, got {interval}.")
    return float(interval)


def _duration(seconds: float) -> str:
    """``42s``, ``3m05s``, ``2h07m``."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class LogProgress:
    """The non-terminal form of a progress bar: the subset of tqdm's interface the loops use
    (``update``, ``set_postfix``, ``close``, iteration, ``with``), writing whole lines."""

    def __init__(self, iterable: Optional[Iterable] = None, total: Optional[int] = None, desc: str = "",
                 unit: str = "step", file: Optional[TextIO] = None, interval: Optional[float] = None,
                 clock: Callable[[], float] = time.monotonic):
        if total is None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.iterable, self.total, self.desc, self.unit = iterable, total, desc, unit
        self.file = file
        self.interval = log_interval(interval)
        self.clock = clock
        self.n = 0
        self.postfix = ""
        self.start = self.last = clock()
        self.closed = False

    def __iter__(self) -> Iterator:
        try:
            for item in self.iterable:
                yield item
                self.update()
        finally:
            self.close()

    def __enter__(self) -> "LogProgress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def set_postfix(self, **values: Any) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def update(self, n: int = 1) -> None:
        self.n += n
        now = self.clock()
        if now - self.last >= self.interval:
            self.last = now
            self._write(now, done=False)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._write(self.clock(), done=True)

    def line(self, now: float, done: bool) -> str:
        """One progress line at time ``now``."""
        elapsed = now - self.start
        rate = self.n / elapsed if elapsed > 0 else 0.0
        count = f"{self.n}/{self.total}" if self.total else f"{self.n}"
        parts = [f"{count} {self.unit}s" + (f" ({100 * self.n / self.total:.0f}%)" if self.total else ""),
                 f"{rate:.2f} {self.unit}s/s"]
        if done:
            parts.append(f"done in {_duration(elapsed)}")
        else:
            parts.append(f"elapsed {_duration(elapsed)}")
            if self.total and rate > 0:
                parts.append(f"ETA {_duration((self.total - self.n) / rate)}")
        if self.postfix:
            parts.append(self.postfix)
        return f"{self.desc}: " + ", ".join(parts)

    def _write(self, now: float, done: bool) -> None:
        print(self.line(now, done), file=self.file or sys.stderr, flush=True)


def progress(iterable: Optional[Iterable] = None, total: Optional[int] = None, desc: str = "", unit: str = "step",
             disable: bool = False, file: Optional[TextIO] = None, leave: bool = True,
             interval: Optional[float] = None) -> Union[tqdm, LogProgress]:
    """A progress reporter for one stage of ``total`` units: a tqdm bar when ``file`` (default
    ``sys.stderr``, as tqdm) is a terminal, a :class:`LogProgress` otherwise. ``disable`` (e.g. on
    every rank but the first) makes it silent; ``leave`` keeps the finished bar on a terminal."""
    file = file or sys.stderr
    isatty = getattr(file, "isatty", None)
    if disable or (isatty is not None and isatty()):
        return tqdm(iterable, total=total, desc=desc, unit=unit, disable=disable, file=file, leave=leave)
    return LogProgress(iterable, total=total, desc=desc, unit=unit, file=file, interval=interval)


def write(message: str, file: Optional[TextIO] = None) -> None:
    """Print a log line without breaking a progress bar on the same terminal."""
    tqdm.write(message, file=file or sys.stdout)
