"""Sharding for Horovod data parallelism (single process: the sampler's arithmetic for any world) and the shutdown."""
import subprocess
import sys
from pathlib import Path

import pytest

from utilities.training.distributed import ShardSampler, World


@pytest.mark.parametrize("length, size", [(10, 3), (1, 2), (7, 1), (2, 5), (13, 4)])
def test_shards_are_disjoint_in_order_and_complete(length, size):
    shards = [list(ShardSampler(length, World(rank, size, rank))) for rank in range(size)]
    assert sorted(i for shard in shards for i in shard) == list(range(length))
    assert all(shard == sorted(shard) for shard in shards)
    assert [len(ShardSampler(length, World(r, size, r))) for r in range(size)] == [len(s) for s in shards]


def test_shutdown_leaves_horovod_even_when_the_wait_fails(monkeypatch):
    """A collective that failed (another rank ended) makes the final wait raise: Horovod is still shut down."""
    from utilities.training import distributed

    calls = []

    def failing_wait():
        calls.append("waitall")
        raise RuntimeError("Horovod has been shut down")

    monkeypatch.setattr(distributed.mx.nd, "waitall", failing_wait)
    monkeypatch.setattr(distributed.hvd, "shutdown", lambda: calls.append("shutdown"))
    with pytest.raises(RuntimeError, match="Horovod has been shut down"):
        distributed.shutdown()
    assert calls == ["waitall", "shutdown"]


def test_many_small_broadcasts_on_two_ranks_neither_crash_nor_lose_values(tmp_path):
    """``broadcast_parameters``'s pattern, many times over: 3 two-rank jobs of 20,000 small in-place broadcasts each
    end with rank 0's values. Horovod 0.28.1 unpatched crashed (SIGSEGV, a use-after-free of the operation's name
    when the broadcast completed before its enqueue call returned) in 2 of 10 such jobs; the install patches it."""
    soak = Path(__file__).resolve().parents[3] / "benchmarks" / "soak_broadcast.py"
    result = subprocess.run([sys.executable, str(soak), "--jobs", "3", "--rounds", "200", "--arrays", "100",
                             "--out", str(tmp_path)], capture_output=True, text=True, timeout=600)
    kept = "".join(p.read_text()[-4000:] for p in sorted((tmp_path / "failures").glob("*.txt")))
    assert result.returncode == 0, result.stdout + kept
    assert "0 failed job(s) in 3" in result.stdout


#: a training entry point under run_rank that waits for SIGTERM: in Python, or inside a C call that signals do
#: not end (a mutex locked twice: how MXNet's engine waits for an operator or a collective)
WAITING_RANK = """
import ctypes, sys, time
sys.path.insert(0, {root!r})
from utilities.training.distributed import run_rank


def main(argv):
    print("waiting", flush=True)
    if {inside_c!r}:
        mutex = ctypes.create_string_buffer(64)
        ctypes.CDLL(None).pthread_mutex_lock(mutex)
        ctypes.CDLL(None).pthread_mutex_lock(mutex)
    while True:
        time.sleep(0.01)


sys.exit(run_rank(main, {{}}))
"""


@pytest.mark.parametrize("inside_c", [False, True], ids=["in-python", "inside-c"])
def test_sigterm_ends_a_rank_with_one_line_and_status_143(tmp_path, inside_c):
    """SIGTERM (scancel, the time limit, horovodrun stopping its ranks) prints ``terminated`` and exits 143, also
    when the main thread never returns to Python (then after TERMINATE_GRACE_S, within horovodrun's 5 s)."""
    root = Path(__file__).resolve().parents[3]
    script = tmp_path / "waiting_rank.py"
    script.write_text(WAITING_RANK.format(root=str(root), inside_c=inside_c))
    process = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    assert process.stdout.readline() == "waiting\n"
    process.terminate()
    _, stderr = process.communicate(timeout=60)
    assert (process.returncode, stderr) == (143, "terminated\n")


#: run_rank's process forks a child (as a DataLoader with workers does) and ends it with SIGTERM
FORKING_RANK = """
import os, sys, time
sys.path.insert(0, {root!r})
from utilities.training.distributed import TERMINATE_GRACE_S, run_rank


def main(argv):
    child = os.fork()
    if child == 0:
        time.sleep(60)
        os._exit(0)
    os.kill(child, 15)
    _, status = os.waitpid(child, 0)
    print("child ended by signal", os.WTERMSIG(status) if os.WIFSIGNALED(status) else None, flush=True)
    time.sleep(TERMINATE_GRACE_S + 1)  # the child's signal must not end this process meanwhile
    return 0


sys.exit(run_rank(main, {{}}))
"""


def test_a_forked_child_keeps_the_default_sigterm_and_does_not_end_its_parent(tmp_path):
    root = Path(__file__).resolve().parents[3]
    script = tmp_path / "forking_rank.py"
    script.write_text(FORKING_RANK.format(root=str(root)))
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert (result.returncode, result.stdout, result.stderr) == (0, "child ended by signal 15\n", "")
