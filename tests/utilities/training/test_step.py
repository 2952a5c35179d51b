"""utilities.training.step: the one training step (against a NumPy SGD step), its non-finite stops, and a run's
resume point and history."""
import csv
import json
import re

import mxnet as mx
import numpy as np
import pytest
from mxnet import gluon, nd

from utilities.artifacts.checkpoint import CheckpointRecord
from utilities.errors import InputError
from utilities.training.distributed import World
from utilities.training.step import (
    FiniteCheck,
    NonFiniteError,
    end_epoch,
    limit,
    previous_run,
    to_ctx,
    train_step,
    write_history,
)

LR = 0.1


def linear(weight: np.ndarray) -> gluon.nn.Dense:
    net = gluon.nn.Dense(weight.shape[0], in_units=weight.shape[1], use_bias=False)
    net.initialize()
    net.weight.set_data(nd.array(weight))
    return net


def sgd(net):
    return gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": LR})


def squared_error(out, y):
    """Per-sample 0.5 * sum of squares."""
    return 0.5 * ((out - y) ** 2).sum(axis=1)


def describe(i):
    return f"sample {i}"


@pytest.mark.parametrize("hybridize", [False, True])
def test_one_step_is_sgd_on_the_batch_mean_gradient(hybridize):
    """W' = W - lr * (1/B) sum_i (W x_i - y_i) x_i^T, the loss per sample 0.5 |W x_i - y_i|^2."""
    rng = np.random.RandomState(0)
    w, x, y = rng.normal(size=(2, 3)), rng.normal(size=(4, 3)), rng.normal(size=(4, 2))
    net = linear(w)
    if hybridize:
        net.hybridize()
    loss, [out] = train_step(net, sgd(net), squared_error, [nd.array(x)], [nd.array(y)],
                             FiniteCheck("step 1", describe))
    residual = x @ w.T - y
    np.testing.assert_allclose(out.asnumpy(), x @ w.T, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(loss.asnumpy(), 0.5 * (residual ** 2).sum(axis=1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(net.weight.data().asnumpy(), w - LR * residual.T @ x / len(x), rtol=1e-5, atol=1e-6)


def test_several_steps_reduce_the_loss():
    rng = np.random.RandomState(1)
    x = nd.array(rng.normal(size=(8, 3)))
    y = nd.array(rng.normal(size=(8, 3)) @ rng.normal(size=(3, 2)))
    net = linear(np.zeros((2, 3)))
    trainer = sgd(net)
    losses = [float(train_step(net, trainer, squared_error, [x], [y])[0].mean().asscalar()) for _ in range(20)]
    assert all(b < a for a, b in zip(losses, losses[1:]))


class TwoHeads(gluon.nn.HybridBlock):
    """Two inputs, two outputs: (a + b) W and (a - b) W."""

    def __init__(self):
        super().__init__()
        self.dense = gluon.nn.Dense(2, in_units=3, use_bias=False)

    def hybrid_forward(self, F, a, b):
        return self.dense(a + b), self.dense(a - b)


def test_inputs_outputs_and_targets_reach_the_loss_in_order():
    """loss_fn(*net(*inputs), *targets): as train.py's multitask loss (3 outputs, 3 targets) takes them."""
    rng = np.random.RandomState(2)
    a, b, t1, t2 = (nd.array(rng.normal(size=shape)) for shape in ((4, 3), (4, 3), (4, 2), (4, 2)))
    net = TwoHeads()
    net.initialize()
    seen = []

    def loss_fn(*arrays):
        seen.append([arr.asnumpy() for arr in arrays])
        return squared_error(arrays[0], arrays[2]) + squared_error(arrays[1], arrays[3])

    w = net.dense.weight.data().asnumpy()
    loss, outputs = train_step(net, sgd(net), loss_fn, [a, b], [t1, t2])
    [arrays] = seen
    assert len(arrays) == 4 and len(outputs) == 2
    np.testing.assert_allclose(arrays[0], (a + b).asnumpy() @ w.T, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(arrays[1], (a - b).asnumpy() @ w.T, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(arrays[2], t1.asnumpy())
    np.testing.assert_allclose(arrays[3], t2.asnumpy())
    np.testing.assert_allclose(outputs[0].asnumpy(), arrays[0])
    np.testing.assert_allclose(loss.asnumpy(), 0.5 * ((arrays[0] - arrays[2]) ** 2 + (arrays[1] - arrays[3]) ** 2).sum(
        axis=1), rtol=1e-5)


def test_non_finite_input_stops_before_the_forward():
    w = np.ones((2, 3))
    net = linear(w)
    x = np.ones((3, 3))
    x[2, 1] = np.inf
    with pytest.raises(NonFiniteError) as err:
        train_step(net, sgd(net), squared_error, [nd.array(x)], [nd.zeros((3, 2))],
                   FiniteCheck("epoch 2, step 5", lambda i: f"chip {[10, 11, 12][i]}"))
    assert str(err.value) == "non-finite input at epoch 2, step 5, first in chip 12: training stopped"
    np.testing.assert_array_equal(net.weight.data().asnumpy(), w)


def test_non_finite_loss_stops_before_the_update():
    w = np.ones((2, 3))
    net = linear(w)
    y = np.zeros((3, 2))
    y[1, 0] = np.nan
    with pytest.raises(NonFiniteError) as err:
        train_step(net, sgd(net), squared_error, [nd.ones((3, 3))], [nd.array(y)], FiniteCheck("step 1", describe))
    assert str(err.value) == "non-finite loss at step 1, first in sample 1: training stopped"
    np.testing.assert_array_equal(net.weight.data().asnumpy(), w)


def test_non_finite_gradients_stop_after_the_update():
    """sqrt(|out - y|) at out == y: a finite loss (0) with an infinite derivative."""
    net = linear(np.zeros((2, 3)))

    def loss_fn(out, y):
        return nd.sqrt(nd.abs(out - y)).sum(axis=1)

    with pytest.raises(NonFiniteError) as err:
        train_step(net, sgd(net), loss_fn, [nd.ones((2, 3))], [nd.zeros((2, 2))], FiniteCheck("step 3", describe))
    assert str(err.value) == "non-finite gradients at step 3 (finite inputs and loss): training stopped"


def test_without_a_check_nothing_stops():
    net = linear(np.ones((2, 3)))
    loss, _ = train_step(net, sgd(net), squared_error, [nd.ones((2, 3))], [nd.full((2, 2), np.nan)])
    assert np.isnan(loss.asnumpy()).all() and np.isnan(net.weight.data().asnumpy()).all()


def test_limit_and_to_ctx():
    assert list(limit(range(5), 3)) == [0, 1, 2]
    assert list(limit(range(5), None)) == [0, 1, 2, 3, 4]
    assert list(limit(range(2), 3)) == [0, 1]
    moved = to_ctx([nd.ones((2,), ctx=mx.Context("cpu_shared", 0)), nd.zeros((1,))], mx.cpu())
    assert [a.context for a in moved] == [mx.cpu(), mx.cpu()]


ROOT = World(0, 1, 0)


def test_history_files_round_trip(tmp_path):
    history = [{"epoch": 1, "loss": 0.5}, {"epoch": 2, "loss": 0.25}]
    write_history(tmp_path, history)
    assert json.loads((tmp_path / "history.json").read_text()) == history
    rows = list(csv.DictReader((tmp_path / "history.csv").open()))
    assert [(int(r["epoch"]), float(r["loss"])) for r in rows] == [(1, 0.5), (2, 0.25)]


def test_history_csv_has_every_column_of_every_row(tmp_path):
    """A resumed run's rows written before a column existed (e.g. ``updates``) leave it empty in the CSV."""
    write_history(tmp_path, [{"epoch": 1, "loss": 0.5}, {"epoch": 2, "loss": 0.25, "updates": 3}])
    assert list(csv.DictReader((tmp_path / "history.csv").open())) == [
        {"epoch": "1", "loss": "0.5", "updates": ""}, {"epoch": "2", "loss": "0.25", "updates": "3"}]


def test_previous_run(tmp_path, capsys):
    assert previous_run(tmp_path, False, ROOT)[1:] == (None, [])
    assert previous_run(tmp_path, True, ROOT)[1:] == (None, [])
    assert capsys.readouterr().err == f"warning: no checkpoint in {tmp_path / 'checkpoints'}: starting afresh\n"
    (tmp_path / "checkpoints").mkdir()
    record = CheckpointRecord("fractalresnet_tiny", 2, params="epoch_0002.params")
    (tmp_path / "checkpoints" / "latest.json").write_text(json.dumps(record.to_dict()))
    write_history(tmp_path, [{"epoch": e} for e in (1, 2, 3)])  # epoch 3 ended without its checkpoint
    checkpoints, latest, history = previous_run(tmp_path, True, ROOT)
    assert (checkpoints.dir, latest, history) == (tmp_path / "checkpoints", record, [{"epoch": 1}, {"epoch": 2}])
    with pytest.raises(InputError, match=re.escape(f"{tmp_path} already holds checkpoints: use --resume")):
        previous_run(tmp_path, False, ROOT)


def test_end_epoch_saves_prunes_and_writes_the_history(tmp_path):
    net = gluon.nn.Dense(2, in_units=3)
    net.initialize()
    checkpoints, history = previous_run(tmp_path, False, ROOT)[0], []
    for epoch in (1, 2):
        history.append({"epoch": epoch, "val_loss": 1.0 / epoch})
        end_epoch(checkpoints, CheckpointRecord("dense", epoch, metrics=history[-1]), net, None, history, keep=1)
    assert [r.epoch for r in checkpoints.records()] == [1, 2] and checkpoints.latest().metrics == history[-1]
    assert sorted(p.name for p in checkpoints.dir.glob("*.params")) == ["epoch_0002.params"]
    assert json.loads((tmp_path / "history.json").read_text()) == history


def _checkpoint(run_dir, epoch, **fields):
    """A record of ``epoch`` as latest, with its epoch's record file (no parameters: previous_run reads records)."""
    record = CheckpointRecord("fractalresnet_tiny", epoch, params=f"epoch_{epoch:04d}.params", **fields)
    (run_dir / "checkpoints").mkdir(exist_ok=True)
    for name in (f"epoch_{epoch:04d}.json", "latest.json"):
        (run_dir / "checkpoints" / name).write_text(json.dumps(record.to_dict()))
    return record


def test_previous_run_takes_the_rows_a_stopped_run_did_not_write_from_the_records(tmp_path):
    """A run stopped between its checkpoint and its history (SIGTERM, SIGKILL) loses no epoch's row."""
    write_history(tmp_path, [{"epoch": 1, "val_loss": 0.5}])
    _checkpoint(tmp_path, 1, metrics={"epoch": 1, "val_loss": 0.5})
    _checkpoint(tmp_path, 2, metrics={"epoch": 2, "val_loss": 0.4})  # history.json not yet rewritten
    assert previous_run(tmp_path, True, ROOT)[2] == [{"epoch": 1, "val_loss": 0.5}, {"epoch": 2, "val_loss": 0.4}]


def test_previous_run_refuses_a_config_that_changes_the_run_and_names_the_harmless_changes(tmp_path, capsys):
    from utilities.training.config import Config, config_to_dict

    started = Config()
    _checkpoint(tmp_path, 3, config=config_to_dict(started))
    now = Config()
    now.train.loss_axis = [1, 2, 3]
    with pytest.raises(InputError, match=re.escape("config c.yaml: --resume would change train.loss_axis [2, 3] -> "
                                                   f"[1, 2, 3] from the run's checkpoint {tmp_path / 'checkpoints'}")):
        previous_run(tmp_path, True, ROOT, now, "c.yaml")
    now = Config()
    now.train.max_epochs = 7
    assert previous_run(tmp_path, True, ROOT, now, "c.yaml")[1].epoch == 3
    assert capsys.readouterr().out == "resuming with changed settings: train.max_epochs 1000 -> 7\n"
    assert previous_run(tmp_path, True, World(1, 2, 1), now, "c.yaml")[1].epoch == 3
    assert capsys.readouterr().out == ""  # rank 0 says it


def test_restore_schedule_refuses_another_schedule_in_one_line(tmp_path):
    """A checkpoint without a recorded config (written before configs were recorded) is still checked: the
    schedule state it holds must fit the configured schedule."""
    from utilities.artifacts.checkpoint import Checkpoints
    from utilities.training.schedule import EvolvingLossSchedule
    from utilities.training.step import restore_schedule

    saved = EvolvingLossSchedule.from_depths(1e-3, [0, 10])
    record = _checkpoint(tmp_path, 2, schedule=saved.state_dict())
    schedule = EvolvingLossSchedule.from_depths(1e-3, [0, 10])
    restore_schedule(schedule, record, Checkpoints(tmp_path))
    other = EvolvingLossSchedule.from_depths(1e-3, [0, 20])
    with pytest.raises(InputError) as error:
        restore_schedule(other, record, Checkpoints(tmp_path))
    assert str(error.value).startswith(f"cannot resume from checkpoint {tmp_path / 'checkpoints' / 'latest.json'}: "
                                       "evolving-loss schedule: saved stages ")
