"""CIFAR-10 (Krizhevsky, 2009) in its official "python version" format, for the building-block
comparison of the paper (Section 7, Appendix A Table A.3).

The format: a folder (``cifar-10-batches-py`` once the official archive is extracted) holding the
pickles ``data_batch_1`` .. ``data_batch_5`` (training, 10000 images each), ``test_batch`` and
``batches.meta``. Each batch pickle is a dict with ``b'data'``, a ``(N, 3072)`` uint8 array, one row
per 32 x 32 RGB image stored channel-major (1024 red, then 1024 green, then 1024 blue values, each
row-major), and ``b'labels'``, ``N`` ints in 0..9.

Nothing is downloaded. Pickles can execute code when loaded: only read files from a trusted source
(the official archive). :func:`write_fake_cifar10` writes small fake data sets in the same format for
tests and demos.
"""
from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, Tuple, Union

import numpy as np
from mxnet.gluon.data import ArrayDataset

PathLike = Union[str, os.PathLike]

SUBFOLDER = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
SPLITS: Dict[str, Tuple[str, ...]] = {"train": TRAIN_BATCHES, "test": (TEST_BATCH,)}
LABEL_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
IMAGE_SHAPE = (3, 32, 32)
ROW_SIZE = 3 * 32 * 32


def _nhwc_uint8(rows: np.ndarray) -> np.ndarray:
    return rows.reshape((-1, *IMAGE_SHAPE)).transpose(0, 2, 3, 1)


def _nchw_float(rows: np.ndarray) -> np.ndarray:
    return rows.reshape((-1, *IMAGE_SHAPE)).astype(np.float32) / 255.0


#: layout name -> converter of the ``(N, 3072)`` uint8 rows: ``NHWC`` uint8 (as stored, 0..255) or
#: ``NCHW`` float32 scaled to [0, 1] (what the networks take).
LAYOUTS: Dict[str, Callable[[np.ndarray], np.ndarray]] = {"NHWC": _nhwc_uint8, "NCHW": _nchw_float}


def batches_folder(root: PathLike) -> Path:
    """The folder holding the batch pickles: ``root/cifar-10-batches-py`` if it exists, else ``root``.

    Raises
    ------
    FileNotFoundError
        If ``root`` is not a folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"CIFAR-10 folder not found: {root}")
    sub = root / SUBFOLDER
    return sub if sub.is_dir() else root


def read_batch(path: PathLike) -> Tuple[np.ndarray, np.ndarray]:
    """Read one batch pickle; return its ``(N, 3072)`` uint8 rows and ``(N,)`` int64 labels.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        If it is not a pickle, or not a dict with ``b'data'`` (N, 3072) uint8 and ``b'labels'`` N ints
        in 0..9.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"CIFAR-10 batch file not found: {path}")
    try:
        with open(path, "rb") as f:
            batch = pickle.load(f, encoding="bytes")
    except Exception as err:  # garbage makes pickle raise many different types
        raise ValueError(f"corrupt CIFAR-10 batch {path}: not a readable pickle ({type(err).__name__})") from None
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise ValueError(f"corrupt CIFAR-10 batch {path}: expected a dict with keys b'data' and b'labels'")
    data, labels = np.asarray(batch[b"data"]), np.asarray(batch[b"labels"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != ROW_SIZE:
        raise ValueError(f"corrupt CIFAR-10 batch {path}: b'data' must be (N, {ROW_SIZE}) uint8, "
                         f"got {data.shape} {data.dtype}")
    if labels.shape != (len(data),) or labels.dtype.kind not in "iu" or np.any((labels < 0) | (labels > 9)):
        raise ValueError(f"corrupt CIFAR-10 batch {path}: b'labels' must be {len(data)} ints in 0..9, "
                         f"got {labels.shape} {labels.dtype}")
    return data, labels.astype(np.int64)


def load_cifar10(root: PathLike, split: str = "train", layout: str = "NCHW") -> Tuple[np.ndarray, np.ndarray]:
    """Load a CIFAR-10 split.

    Parameters
    ----------
    root : path
        The folder with the batch pickles, or its parent holding ``cifar-10-batches-py``.
    split : str
        ``'train'`` (``data_batch_1..5``) or ``'test'`` (``test_batch``).
    layout : str
        ``'NCHW'``: float32 in [0, 1], shape (N, 3, 32, 32); ``'NHWC'``: uint8, shape (N, 32, 32, 3).

    Returns
    -------
    images : numpy.ndarray
        The images in ``layout``.
    labels : numpy.ndarray
        (N,) int64 class indices (see :data:`LABEL_NAMES`).
    """
    if split not in SPLITS:
        raise ValueError(f"unknown CIFAR-10 split {split!r}; choose one of {sorted(SPLITS)}")
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; choose one of {sorted(LAYOUTS)}")
    folder = batches_folder(root)
    rows, labels = zip(*(read_batch(folder / name) for name in SPLITS[split]))
    return LAYOUTS[layout](np.concatenate(rows)), np.concatenate(labels)


class CIFAR10Dataset(ArrayDataset):
    """A CIFAR-10 split as a Gluon dataset of ``(image, label)`` pairs (see :func:`load_cifar10`)."""

    def __init__(self, root: PathLike, split: str = "train", layout: str = "NCHW"):
        super().__init__(*load_cifar10(root, split, layout))


def _write_pickle_atomic(path: Path, obj: Any) -> None:
    """Pickle ``obj`` to a temporary file beside ``path``, then rename it: concurrent writers of the
    same content (e.g. several Horovod ranks) never expose a partial file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            pickle.dump(obj, f, protocol=2)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def write_fake_cifar10(path: PathLike, n_per_batch: int = 16, seed: int = 0) -> Path:
    """Write a small fake CIFAR-10 in the official format: ``path/cifar-10-batches-py`` with
    ``data_batch_1..5`` and ``test_batch`` of ``n_per_batch`` images each, and ``batches.meta``.

    The images are learnable: each is a fixed random pattern of its class blended with noise, so a
    network can fit them. The same ``seed`` writes the same bytes.

    Returns
    -------
    pathlib.Path
        The ``cifar-10-batches-py`` folder.
    """
    folder = Path(path) / SUBFOLDER
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.RandomState(seed)
    patterns = rng.randint(0, 256, size=(len(LABEL_NAMES), ROW_SIZE))
    for index, name in enumerate((*TRAIN_BATCHES, TEST_BATCH)):
        labels = rng.randint(0, len(LABEL_NAMES), size=n_per_batch)
        noise = rng.randint(0, 256, size=(n_per_batch, ROW_SIZE))
        data = (0.6 * patterns[labels] + 0.4 * noise).astype(np.uint8)
        kind = "testing batch 1 of 1" if name == TEST_BATCH else f"training batch {index + 1} of 5"
        _write_pickle_atomic(folder / name, {
            b"batch_label": kind.encode(),
            b"labels": labels.tolist(),
            b"data": data,
            b"filenames": [f"fake_{name}_{i}.png".encode() for i in range(n_per_batch)],
        })
    _write_pickle_atomic(folder / "batches.meta", {
        b"num_cases_per_batch": n_per_batch,
        b"label_names": [n.encode() for n in LABEL_NAMES],
        b"num_vis": ROW_SIZE,
    })
    return folder
