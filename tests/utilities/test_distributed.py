"""Sharding for Horovod data parallelism (single process: the sampler's arithmetic for any world) and the shutdown."""
import numpy as np
import pytest

from utilities.distributed import ShardSampler, World


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
    from utilities import distributed

    calls = []

    def failing_wait():
        calls.append("waitall")
        raise RuntimeError("Horovod has been shut down")

    monkeypatch.setattr(distributed.mx.nd, "waitall", failing_wait)
    monkeypatch.setattr(distributed.hvd, "shutdown", lambda: calls.append("shutdown"))
    with pytest.raises(RuntimeError, match="Horovod has been shut down"):
        distributed.shutdown()
    assert calls == ["waitall", "shutdown"]
