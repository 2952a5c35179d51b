"""CIFAR-10 loader on fake data written in the official python format (Section 7's data set)."""
import pickle

import numpy as np
import pytest

from utilities.data.cifar10 import (
    LABEL_NAMES,
    SUBFOLDER,
    TEST_BATCH,
    TRAIN_BATCHES,
    CIFAR10Dataset,
    load_cifar10,
    read_batch,
    write_fake_cifar10,
)


@pytest.fixture
def fake(tmp_path):
    return write_fake_cifar10(tmp_path / "cifar", n_per_batch=6, seed=3)


def _pickled(path):
    with open(path, "rb") as f:
        return pickle.load(f, encoding="bytes")


def test_fake_data_has_the_official_layout(fake):
    assert fake.name == SUBFOLDER
    assert sorted(p.name for p in fake.iterdir()) == sorted([*TRAIN_BATCHES, TEST_BATCH, "batches.meta"])
    batch = _pickled(fake / "data_batch_2")
    assert batch[b"data"].shape == (6, 3072) and batch[b"data"].dtype == np.uint8
    assert len(batch[b"labels"]) == 6 and all(isinstance(v, int) for v in batch[b"labels"])
    meta = _pickled(fake / "batches.meta")
    assert meta[b"label_names"] == [n.encode() for n in LABEL_NAMES] and meta[b"num_vis"] == 3072


def test_round_trip_both_layouts(fake):
    raw = _pickled(fake / "data_batch_1")
    images, labels = load_cifar10(fake, "train", layout="NHWC")
    assert images.shape == (30, 32, 32, 3) and images.dtype == np.uint8
    assert labels.shape == (30,) and labels.dtype == np.int64
    np.testing.assert_array_equal(labels[:6], raw[b"labels"])
    # channel-major rows: the first 1024 values are the red plane, row-major
    np.testing.assert_array_equal(images[0, :, :, 0], raw[b"data"][0, :1024].reshape(32, 32))
    np.testing.assert_array_equal(images[0, 1, 2], raw[b"data"][0, [32 + 2, 1024 + 32 + 2, 2048 + 32 + 2]])
    floats, _ = load_cifar10(fake.parent, "test", layout="NCHW")  # the parent folder works too
    assert floats.shape == (6, 3, 32, 32) and floats.dtype == np.float32
    test_images, _ = load_cifar10(fake, "test", layout="NHWC")
    np.testing.assert_allclose(floats, test_images.transpose(0, 3, 1, 2) / 255.0, rtol=1e-6)


def test_same_seed_same_bytes_other_seed_other_data(tmp_path):
    a = write_fake_cifar10(tmp_path / "a", n_per_batch=4, seed=1)
    b = write_fake_cifar10(tmp_path / "b", n_per_batch=4, seed=1)
    c = write_fake_cifar10(tmp_path / "c", n_per_batch=4, seed=2)
    assert (a / TEST_BATCH).read_bytes() == (b / TEST_BATCH).read_bytes()
    assert not np.array_equal(read_batch(a / TEST_BATCH)[0], read_batch(c / TEST_BATCH)[0])
    assert not list(a.glob("*.tmp"))


def test_gluon_dataset(fake):
    data = CIFAR10Dataset(fake, "test")
    assert len(data) == 6
    image, label = data[5]
    assert image.shape == (3, 32, 32) and 0 <= label < 10


def test_missing_folder(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError) as err:
        load_cifar10(missing)
    assert str(err.value) == f"CIFAR-10 folder not found: {missing}"


def test_missing_batch(fake):
    (fake / "data_batch_4").unlink()
    with pytest.raises(FileNotFoundError) as err:
        load_cifar10(fake, "train")
    assert str(err.value) == f"CIFAR-10 batch file not found: {fake / 'data_batch_4'}"
    assert load_cifar10(fake, "test")[0].shape[0] == 6  # the test split does not need it


@pytest.mark.parametrize("content, reason", [
    (b"this is not a pickle", "not a readable pickle (UnpicklingError)"),
    (b"", "not a readable pickle (EOFError)"),
    (pickle.dumps({b"data": np.zeros((2, 3072), np.uint8)}), "expected a dict with keys b'data' and b'labels'"),
    (pickle.dumps([1, 2, 3]), "expected a dict with keys b'data' and b'labels'"),
    (pickle.dumps({b"data": np.zeros((2, 1024), np.uint8), b"labels": [0, 1]}),
     "b'data' must be (N, 3072) uint8, got (2, 1024) uint8"),
    (pickle.dumps({b"data": np.zeros((2, 3072), np.float32), b"labels": [0, 1]}),
     "b'data' must be (N, 3072) uint8, got (2, 3072) float32"),
    (pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}),
     "b'labels' must be 2 ints in 0..9, got (1,) int64"),
    (pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}),
     "b'labels' must be 2 ints in 0..9, got (2,) int64"),
])
def test_corrupt_batch(fake, content, reason):
    path = fake / TEST_BATCH
    path.write_bytes(content)
    with pytest.raises(ValueError) as err:
        load_cifar10(fake, "test")
    assert str(err.value) == f"corrupt CIFAR-10 batch {path}: {reason}"


def test_bad_split_and_layout(fake):
    with pytest.raises(ValueError, match="unknown CIFAR-10 split 'val'"):
        load_cifar10(fake, "val")
    with pytest.raises(ValueError, match="unknown layout 'CHW'"):
        load_cifar10(fake, "train", layout="CHW")
