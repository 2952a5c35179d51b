"""Sharding for Horovod data parallelism (single process: the sampler's arithmetic for any world) and the shutdown."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from utilities.training.distributed import ShardSampler, World


def _shards(length, size, pad, epoch=0):
    out = []
    for rank in range(size):
        s = ShardSampler(length, World(rank, size, rank), shuffle=True, seed=3, pad=pad)
        s.set_epoch(epoch)
        out.append(list(s))
    return out


def test_padded_shards_have_equal_length_and_cover_everything():
    shards = _shards(10, 3, pad=True)
    assert [len(s) for s in shards] == [4, 4, 4]
    assert set(np.concatenate(shards)) == set(range(10))


def test_unpadded_shards_are_disjoint_and_complete():
    shards = _shards(10, 3, pad=False)
    flat = np.concatenate(shards)
    assert sorted(flat) == list(range(10))


def test_shuffle_changes_with_epoch_and_is_identical_across_ranks():
    a = _shards(20, 2, pad=True, epoch=0)
    b = _shards(20, 2, pad=True, epoch=1)
    assert a != b
    assert a == _shards(20, 2, pad=True, epoch=0)


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
