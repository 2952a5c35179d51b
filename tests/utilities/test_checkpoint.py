"""Checkpoints: atomic per-epoch files, latest pointer, round trip of parameters and Adam state."""
import json

import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd, gluon, nd

from utilities.atomic import atomic_path, atomic_write_text
from utilities.checkpoint import Checkpoints, load_parameters
from utilities.errors import InputError


def _net_and_trainer(seed):
    mx.random.seed(seed)
    net = gluon.nn.Dense(3, in_units=4)
    net.initialize()
    trainer = gluon.Trainer(net.collect_params(), "adam", {"learning_rate": 0.1})
    return net, trainer


def _step(net, trainer, x):
    with autograd.record():
        loss = (net(x) ** 2).sum()
    loss.backward()
    trainer.step(1)


def test_round_trip_restores_parameters_and_optimizer_state(tmp_path):
    x = nd.array(np.random.RandomState(0).normal(size=(2, 4)))
    net, trainer = _net_and_trainer(0)
    _step(net, trainer, x)
    ckpt = Checkpoints(tmp_path)
    ckpt.save(1, net, trainer, {"schedule": {"stage": 0}})
    _step(net, trainer, x)  # the uninterrupted run's next step
    expected = net.weight.data().asnumpy()

    other, other_trainer = _net_and_trainer(1)
    record = ckpt.latest()
    assert record["epoch"] == 1 and record["schedule"] == {"stage": 0}
    ckpt.load(record, other, other_trainer)
    _step(other, other_trainer, x)  # resumed: Adam moments and update count restored
    np.testing.assert_allclose(other.weight.data().asnumpy(), expected, rtol=1e-6)


def test_latest_points_to_newest_and_prune_keeps_records(tmp_path):
    net, trainer = _net_and_trainer(0)
    ckpt = Checkpoints(tmp_path)
    for epoch in (1, 2, 3):
        ckpt.save(epoch, net, trainer, {})
    assert ckpt.latest()["epoch"] == 3
    ckpt.prune(1)
    assert [r["epoch"] for r in ckpt.records()] == [1, 2, 3]
    assert sorted(p.name for p in ckpt.dir.glob("*.params")) == ["epoch_0003.params"]


def test_no_checkpoint_and_corrupt_index(tmp_path):
    ckpt = Checkpoints(tmp_path)
    assert ckpt.latest() is None
    ckpt.dir.mkdir(parents=True)
    (ckpt.dir / "latest.json").write_text("{not json")
    with pytest.raises(InputError, match="latest.json is corrupt"):
        ckpt.latest()


def test_missing_or_foreign_checkpoint_gives_one_line_errors(tmp_path):
    net, trainer = _net_and_trainer(0)
    with pytest.raises(InputError, match=r"checkpoint .*nope.params does not exist"):
        load_parameters(net, tmp_path / "nope.params")
    other = gluon.nn.Dense(5, in_units=4)
    other.initialize()
    other.save_parameters(str(tmp_path / "other.params"))
    with pytest.raises(InputError, match=r"checkpoint .*other.params does not fit this model") as err:
        load_parameters(net, tmp_path / "other.params")
    assert "\n" not in str(err.value)


def test_atomic_write_leaves_old_file_on_error(tmp_path):
    target = tmp_path / "history.json"
    atomic_write_text(target, json.dumps([1]))
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            with open(tmp, "w") as f:
                f.write("partial")
            raise RuntimeError("killed")
    assert json.loads(target.read_text()) == [1]
    assert [p.name for p in tmp_path.iterdir()] == ["history.json"]
