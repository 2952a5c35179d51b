"""The stall watchdog: its deadline arithmetic on a fake clock, the grace of a rank waiting inside the
engine, and real processes whose main thread blocks (with and without holding the GIL)."""
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from utilities.training.watchdog import PEER_GRACE_S, STALL_EXIT_CODE, StallWatchdog

ROOT = Path(__file__).resolve().parents[3]


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def frame_of(module: str):
    """A frame whose code belongs to ``module`` (as a function of that package would run)."""
    namespace = {"__name__": module, "sys": sys}
    exec("def wait_here():\n    return sys._getframe()\n", namespace)
    return namespace["wait_here"]()


def test_deadline_counts_from_the_last_beat():
    clock = FakeClock()
    dog = StallWatchdog(60, rank=3, clock=clock, backstop=False)
    here = frame_of("train")
    dog.beat("epoch 2, step 7")
    clock.now += 59.9
    assert dog.overdue(clock.now, here) is None
    dog.beat("epoch 2, step 8")
    clock.now += 59.9
    assert dog.overdue(clock.now, here) is None
    clock.now += 0.2
    assert dog.overdue(clock.now, here) == (
        "error: rank 3 stalled: no training step or validation batch completed in 60.1 s (train.stall_timeout_s 60); "
        f"last completed: epoch 2, step 8; main thread in wait_here (<string>:{here.f_lineno}); ending the job")


@pytest.mark.parametrize("module", ["mxnet.ndarray.ndarray", "horovod.mxnet.mpi_ops"])
def test_a_rank_waiting_in_the_engine_leaves_the_stalled_rank_time_to_report_first(module):
    clock = FakeClock()
    dog = StallWatchdog(60, rank=0, clock=clock, backstop=False)
    dog.beat("epoch 1, validation step 4")
    clock.now += 60 + PEER_GRACE_S - 0.1
    assert dog.overdue(clock.now, frame_of(module)) is None
    assert dog.overdue(clock.now, frame_of("utilities.data.chips")) is not None  # blocked elsewhere: no grace
    clock.now += 0.2
    message = dog.overdue(clock.now, frame_of(module))
    assert message.startswith(f"error: rank 0 stalled: no training step or validation batch completed in "
                              f"{60 + PEER_GRACE_S + 0.1:.1f} s")
    assert message.endswith("inside MXNet/Horovod: waiting for the engine or another rank; ending the job")


def test_zero_timeout_is_off():
    clock = FakeClock()
    dog = StallWatchdog(0, rank=0, clock=clock)
    with dog:
        clock.now += 1e9
        assert dog.overdue(clock.now, None) is None
        assert dog._thread is None


def test_thread_reports_a_stall_with_the_last_completed_step():
    stalled = []
    done = threading.Event()
    dog = StallWatchdog(0.2, rank=1, on_stall=lambda m: (stalled.append(m), done.set()), backstop=False)
    with dog:
        dog.beat("epoch 1, validation step 4")
        assert done.wait(30)
    assert len(stalled) == 1
    assert "rank 1 stalled" in stalled[0] and "last completed: epoch 1, validation step 4;" in stalled[0]
    assert "; main thread in wait (threading.py:" in stalled[0]  # innermost frame: the Event.wait above


def test_stopped_watchdog_stays_quiet():
    stalled = []
    dog = StallWatchdog(0.05, rank=0, on_stall=stalled.append, backstop=False)
    with dog:
        pass
    assert not dog._thread.is_alive() and stalled == []


BLOCKED_MAIN = """
import ctypes, os, sys
sys.path.insert(0, {root!r})
import utilities.training.watchdog as watchdog
watchdog.BACKSTOP_GRACE_S = {grace}
def wait_for_writer(fifo):
    {block}
with watchdog.StallWatchdog(1.0, rank=5) as dog:
    dog.beat("epoch 4, step 2")
    wait_for_writer({fifo!r})
print("unreachable")
"""


@pytest.mark.parametrize("block, grace, status, expected", [
    # the main thread waits in open() (GIL released): the watchdog thread's one line, exit 124
    ("open(fifo).read()", 60, STALL_EXIT_CODE, None),
    # the main thread holds the GIL while it waits (a C call through PyDLL): faulthandler's backstop
    ("fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK); ctypes.PyDLL(None).sleep(600)", 0.5, 1,
     "Timeout (0:00:01.500000)!"),
])
def test_blocked_main_thread_ends_the_process(tmp_path, block, grace, status, expected):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    script = BLOCKED_MAIN.format(root=str(ROOT), fifo=str(fifo), block=block, grace=grace)
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == status, result.stderr
    assert "unreachable" not in result.stdout
    if expected is None:
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith("error: rank 5 stalled: no training step or validation batch completed in 1.0 s")
        assert "last completed: epoch 4, step 2; main thread in wait_for_writer (<string>:" in lines[0]
    else:
        assert result.stderr.startswith(expected), result.stderr
        assert "wait_for_writer" in result.stderr  # the stacks show where the main thread waits
