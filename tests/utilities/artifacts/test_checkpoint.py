"""Checkpoints: atomic per-epoch files, latest pointer, round trip of parameters and Adam state, the typed
versioned record."""
import dataclasses
import errno
import hashlib
import json
import os

import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd, gluon, nd

from utilities.artifacts import checkpoint
from utilities.artifacts.checkpoint import FORMAT_VERSION, CheckpointRecord, Checkpoints, load_parameters
from utilities.atomic import WriteError, atomic_path, atomic_write_text
from utilities.errors import InputError


def _net_and_trainer(seed):
    mx.random.seed(seed)
    net = gluon.nn.Dense(3, in_units=4)
    net.initialize()
    trainer = gluon.Trainer(net.collect_params(), "adam", {"learning_rate": 0.1})
    return net, trainer


def _record(epoch, **fields):
    return CheckpointRecord("dense", epoch, **fields)


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
    ckpt.save(_record(1, schedule={"stage": 0}), net, trainer)
    _step(net, trainer, x)  # the uninterrupted run's next step
    expected = net.weight.data().asnumpy()

    other, other_trainer = _net_and_trainer(1)
    record = ckpt.latest()
    assert record.epoch == 1 and record.schedule == {"stage": 0}
    ckpt.load(record, other, other_trainer)
    _step(other, other_trainer, x)  # resumed: Adam moments and update count restored
    np.testing.assert_allclose(other.weight.data().asnumpy(), expected, rtol=1e-6)


def test_latest_points_to_newest_and_prune_keeps_records(tmp_path):
    net, trainer = _net_and_trainer(0)
    ckpt = Checkpoints(tmp_path)
    for epoch in (1, 2, 3):
        ckpt.save(_record(epoch), net, trainer)
    assert ckpt.latest().epoch == 3
    ckpt.prune(1)
    assert [r.epoch for r in ckpt.records()] == [1, 2, 3]
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


def _flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1:]


#: damage(file content, the weight's bytes) -> damaged content
DAMAGES = {
    "truncated": lambda data, weight: data[: len(data) // 2],
    "empty": lambda data, weight: b"",
    "byte-flipped header": lambda data, weight: _flip(data, 0),  # the format's magic number
    "byte-flipped values": lambda data, weight: _flip(data, data.index(weight) + 1),
}


@pytest.mark.parametrize("damage", DAMAGES)
@pytest.mark.parametrize("recorded_digest", [True, False])
def test_damaged_parameters_are_refused_in_one_line(tmp_path, damage, recorded_digest):
    net, trainer = _net_and_trainer(0)
    ckpt = Checkpoints(tmp_path)
    params = ckpt.save(_record(1), net, trainer)
    record = ckpt.latest()
    assert record.params_sha256 == hashlib.sha256(params.read_bytes()).hexdigest()
    if not recorded_digest:  # a record written before digests were recorded
        record = dataclasses.replace(record, params_sha256=None)
    params.write_bytes(DAMAGES[damage](params.read_bytes(), net.weight.data().asnumpy().tobytes()))
    if not recorded_digest and damage == "byte-flipped values":
        ckpt.load(record, net, trainer)  # undetectable without the digest: a value changed, the format is fine
        return
    with pytest.raises(InputError) as err:
        ckpt.load(record, net, trainer)
    message = str(err.value)
    assert message.startswith(f"checkpoint {params} cannot be read: ") and "\n" not in message
    assert "Traceback" not in message and "File " not in message
    reason = message.split("cannot be read: ", 1)[1]
    assert reason in ("the file is empty", "Invalid NDArray file format",
                      "its content differs from the SHA-256 in its record (a truncated or damaged copy)"), reason


def test_damaged_optimizer_states_are_refused_in_one_line(tmp_path):
    net, trainer = _net_and_trainer(0)
    ckpt = Checkpoints(tmp_path)
    ckpt.save(_record(1), net, trainer)
    states = ckpt.dir / "epoch_0001.states"
    states.write_bytes(states.read_bytes()[:7])
    with pytest.raises(InputError, match=rf"^checkpoint {states} cannot be read: its content differs"):
        ckpt.load(ckpt.latest(), net, trainer)


def _write_to_full_device(tmp):
    """A writer that meets a full disk: /dev/full fails every write with ENOSPC."""
    with open("/dev/full", "wb") as full:
        full.write(b"\0" * 4096)


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="/dev/full is not available")
@pytest.mark.parametrize("failing", ["params", "states", "record"])
def test_a_full_disk_leaves_no_orphan_file_and_the_previous_checkpoint(tmp_path, monkeypatch, failing):
    net, trainer = _net_and_trainer(0)
    ckpt = Checkpoints(tmp_path)
    ckpt.save(_record(1), net, trainer)
    before = sorted(p.name for p in ckpt.dir.iterdir())
    if failing == "params":
        monkeypatch.setattr(net, "save_parameters", _write_to_full_device)
    elif failing == "states":
        monkeypatch.setattr(trainer, "save_states", _write_to_full_device)
    else:
        def full_disk(path, text):
            with atomic_path(path) as tmp:
                _write_to_full_device(tmp)
        monkeypatch.setattr(checkpoint, "atomic_write_text", full_disk)
    with pytest.raises(WriteError) as err:
        ckpt.save(_record(2), net, trainer)
    assert err.value.errno == errno.ENOSPC
    assert err.value.strerror.startswith("no space left on device writing ") and "epoch_0002." in err.value.strerror
    assert sorted(p.name for p in ckpt.dir.iterdir()) == before  # epoch 1 intact, nothing of epoch 2
    assert ckpt.latest().epoch == 1


def test_parameters_without_record_are_removed_at_the_next_save(tmp_path):
    net, trainer = _net_and_trainer(0)
    ckpt = Checkpoints(tmp_path)
    ckpt.save(_record(1), net, trainer)
    for name in ("epoch_0002.params", "epoch_0002.states"):  # a run killed before the record was written
        (ckpt.dir / name).write_bytes(b"partial")
    ckpt.save(_record(3), net, trainer)
    assert not (ckpt.dir / "epoch_0002.params").exists() and not (ckpt.dir / "epoch_0002.states").exists()
    assert (ckpt.dir / "epoch_0001.params").exists() and (ckpt.dir / "epoch_0003.params").exists()


def test_record_round_trip_through_the_saved_file(tmp_path):
    net, trainer = _net_and_trainer(0)
    record = _record(4, model_args={"nfilters": 8}, normalization={"mean": [1.0, 2.0], "std": [3.0, 4.0]},
                     bands=[1, 2], schedule={"stage": 1}, metrics={"depth": 10, "val_mcc": 0.5},
                     config={"train": {"loss_axis": [2, 3]}})
    params = Checkpoints(tmp_path).save(record, net, trainer)
    saved = CheckpointRecord.read(params.with_suffix(".json"))
    assert saved == dataclasses.replace(
        record, params="epoch_0004.params", states="epoch_0004.states",
        params_sha256=hashlib.sha256(params.read_bytes()).hexdigest(),
        states_sha256=hashlib.sha256(params.with_suffix(".states").read_bytes()).hexdigest())
    assert json.loads(params.with_suffix(".json").read_text())["format_version"] == FORMAT_VERSION
    assert CheckpointRecord.from_dict(saved.to_dict(), "x.json") == saved == Checkpoints(tmp_path).latest()


def test_a_record_missing_keys_is_refused_in_one_line(tmp_path):
    path = tmp_path / "epoch_0001.json"
    path.write_text(json.dumps({"epoch": 1, "metrics": {}}))
    with pytest.raises(InputError) as err:
        CheckpointRecord.read(path)
    assert str(err.value) == f"checkpoint record {path} lacks model, params (not written by mantis's training)"


def test_a_record_of_a_newer_format_is_refused_in_one_line(tmp_path):
    path = tmp_path / "latest.json"
    path.write_text(json.dumps(dict(_record(1, params="epoch_0001.params").to_dict(),
                                    format_version=FORMAT_VERSION + 1)))
    with pytest.raises(InputError) as err:
        CheckpointRecord.read(path)
    assert str(err.value) == (f"checkpoint record {path} was written by a newer mantis: format version "
                              f"{FORMAT_VERSION + 1}, this one reads up to {FORMAT_VERSION}")


def test_an_unversioned_record_of_an_earlier_mantis_still_loads(tmp_path):
    net, trainer = _net_and_trainer(0)
    ckpt = Checkpoints(tmp_path)
    ckpt.save(_record(1), net, trainer)
    old = {"metrics": {"epoch": 1, "depth": 0}, "schedule": {"stage": 0}, "model": "dense", "model_args": {},
           "config": {}, "epoch": 1, "params": "epoch_0001.params", "states": "epoch_0001.states"}
    (ckpt.dir / "latest.json").write_text(json.dumps(old))  # as train.py wrote it before records were versioned
    record = ckpt.latest()
    assert (record.format_version, record.model, record.epoch, record.normalization) == (1, "dense", 1, None)
    ckpt.load(record, *_net_and_trainer(1))


def test_mxnet_on_a_full_disk_is_named_like_the_other_writers_and_keeps_the_previous_checkpoint(tmp_path):
    """A real full file system (a small tmpfs): MXNet's save_parameters either fails without errno ("FileStream.Write
    incomplete", a file larger than the space left) or, for a file within one buffer, loses the failure when it
    closes the file and leaves it empty; both are "no space left on device writing FILE", nothing of the epoch
    stays and the previous checkpoint still loads."""
    from tests.utilities.tmpfs import fill, small_tmpfs

    for units in (4, 256):  # parameters of about 100 bytes (one buffer) and of about 260 kB
        net, trainer = gluon.nn.Dense(units, in_units=units), None
        net.initialize()
        with small_tmpfs(tmp_path / f"disk{units}", "1m") as disk:
            ckpt = Checkpoints(disk)
            ckpt.save(_record(1), net, trainer)
            before = sorted(p.name for p in ckpt.dir.iterdir())
            fill(disk)
            with pytest.raises(WriteError) as err:
                ckpt.save(_record(2), net, trainer)
            assert err.value.errno == errno.ENOSPC, units
            assert err.value.strerror == f"no space left on device writing {ckpt.dir / 'epoch_0002.params'}"
            assert sorted(p.name for p in ckpt.dir.iterdir()) == before
            (disk / "filler").unlink()
            load_parameters(net, ckpt.dir / ckpt.latest().params, ckpt.latest().params_sha256)


def test_a_failed_mxnet_write_with_space_left_is_one_line_naming_the_file(tmp_path):
    """A write that fails for another reason than space (here the file size limit, RLIMIT_FSIZE): MXNet's reason,
    without its C++ trace, and the final file's name."""
    import resource
    import signal

    net = gluon.nn.Dense(512, in_units=512)
    net.initialize()
    ckpt = Checkpoints(tmp_path)
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead
    try:
        resource.setrlimit(resource.RLIMIT_FSIZE, (65536, limits[1]))
        with pytest.raises(WriteError) as err:
            ckpt.save(_record(1), net, None)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
        signal.signal(signal.SIGXFSZ, handler)
    assert err.value.strerror == f"cannot write {ckpt.dir / 'epoch_0001.params'}: FileStream.Write incomplete"
    assert list(ckpt.dir.iterdir()) == []


def test_the_description_is_written_before_latest_names_the_checkpoint_and_goes_with_a_failed_save(tmp_path):
    net, trainer = _net_and_trainer(0)
    ckpt = Checkpoints(tmp_path)
    seen = []

    def describe(params):  # a model card: it reads the epoch's record, which latest.json does not name yet
        seen.append((CheckpointRecord.read(params.with_suffix(".json")).epoch, ckpt.latest()))
        card = params.with_suffix(".card")
        card.write_text("card")
        return card

    ckpt.save(_record(1), net, trainer, describe)
    assert [(epoch, latest) for epoch, latest in seen] == [(1, None)] and ckpt.latest().epoch == 1
    before = sorted(p.name for p in ckpt.dir.iterdir())
    assert "epoch_0001.card" in before

    def failing(params):  # an atomic writer that fails leaves no file
        seen.append((CheckpointRecord.read(params.with_suffix(".json")).epoch, ckpt.latest()))
        raise WriteError(errno.ENOSPC, f"no space left on device writing {params.with_suffix('.card')}")

    with pytest.raises(WriteError):
        ckpt.save(_record(2), net, trainer, failing)
    assert seen[-1][0] == 2 and seen[-1][1].epoch == 1
    assert sorted(p.name for p in ckpt.dir.iterdir()) == before and ckpt.latest().epoch == 1
