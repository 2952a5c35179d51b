"""Per-epoch checkpoints of a training run, written atomically, and resuming from the last one.

Layout under ``<run_dir>/checkpoints``::

    epoch_0007.params   model parameters (Gluon ``save_parameters``)
    epoch_0007.states   optimiser state: Adam moments and update counts (``Trainer.save_states``)
    epoch_0007.json     its CheckpointRecord: model, schedule state, metrics, config, the files and digests
    epoch_0007.stac.json  its model card (utilities/artifacts/model_card.py), for a change-detection model
    latest.json         the newest complete checkpoint (written last)

Every file is written under a temporary name and renamed, and ``latest.json`` only after the
files of its epoch exist, so a run killed at any moment resumes from a complete checkpoint. The parameters
file is read back before it takes its name (MXNet's writer can leave a short file without an error). A save
that fails (a full disk: "no space left on device writing FILE") removes the files of its epoch written so
far, and every save first removes the parameter and state files that have no record (left by a run killed
between them), so that no ``epoch_NNNN.params`` is ever left without its ``.json``.

The record holds the SHA-256 of the parameters and state files: a truncated, emptied or byte-flipped file
is refused when loaded ("checkpoint X cannot be read: ...") instead of loading wrong numbers.

A record is a :class:`CheckpointRecord`, written with its ``format_version``. Records written before the
version was recorded are read as version 1; a record missing a required key, or written by a newer mantis,
is refused in one line naming the file.
"""
from __future__ import annotations

import dataclasses
import errno
import functools
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from mxnet import gluon, nd
from mxnet.base import MXNetError

from utilities.atomic import atomic_path, atomic_write_text
from utilities.errors import InputError

#: version of the record written by :meth:`Checkpoints.save`; 1 is a record without ``format_version``
FORMAT_VERSION = 2
#: keys every record holds, whatever its version
REQUIRED_KEYS = ("model", "epoch", "params")


@dataclass(frozen=True)
class CheckpointRecord:
    """What a checkpoint's ``epoch_NNNN.json`` holds: enough to rebuild, resume and select the model.

    ``normalization`` (the training chips' per-band ``{"mean": [...], "std": [...]}`` and their data type
    ``"dtype"``, e.g. ``"uint8"``, which records written before it was kept lack) and ``bands`` are
    None for models that take no georeferenced input (CIFAR-10). ``params`` / ``states`` are file names in
    the checkpoint directory (``states`` None when no optimiser state was saved), with their SHA-256.
    ``band_inputs``: for dates made of band files (``utilities.raster.bands``), the band names in input order,
    the reference band (None: the finest), the resampling and the alignment of date 2 the model was trained
    with; None for whole rasters and for records written before it was kept (``bands`` holds 1-based indices).
    """

    model: str
    epoch: int
    model_args: Dict[str, Any] = field(default_factory=dict)
    normalization: Optional[Dict[str, Any]] = None
    bands: Optional[List[int]] = None
    schedule: Dict[str, Any] = field(default_factory=dict)
    band_inputs: Optional[Dict[str, Any]] = None
    metrics: Dict[str, Any] = field(default_factory=dict)
    config: Dict[str, Any] = field(default_factory=dict)
    params: Optional[str] = None
    states: Optional[str] = None
    params_sha256: Optional[str] = None
    states_sha256: Optional[str] = None
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> Dict[str, Any]:
        """The record as JSON-serialisable data (what ``epoch_NNNN.json`` holds)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any, path: str | Path) -> "CheckpointRecord":
        """The record of ``data`` read from ``path`` (named in the errors); without ``format_version``, version 1.

        Raises
        ------
        InputError
            ``checkpoint record X lacks a, b (not written by mantis's training)`` or ``checkpoint record X was
            written by a newer mantis: format version N, this one reads up to M``.
        """
        if not isinstance(data, dict):
            raise InputError(f"checkpoint record {path} is not a JSON object (not written by mantis's training)")
        version = data.get("format_version", 1)
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise InputError(f"checkpoint record {path} was written by a newer mantis: format version {version}, "
                             f"this one reads up to {FORMAT_VERSION}")
        missing = [key for key in REQUIRED_KEYS if data.get(key) is None]
        if missing:
            raise InputError(f"checkpoint record {path} lacks {', '.join(missing)} (not written by mantis's training)")
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{**{k: v for k, v in data.items() if k in known}, "format_version": version})

    @classmethod
    def read(cls, path: str | Path) -> "CheckpointRecord":
        """The record in the JSON file ``path``.

        Raises
        ------
        InputError
            The file is missing, not JSON, or not a record (:meth:`from_dict`).
        """
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise InputError(f"checkpoint record {path} does not exist") from None
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise InputError(f"checkpoint record {path} is corrupt (not JSON)") from None
        return cls.from_dict(data, path)


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file, as hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class Checkpoints:
    """Save and find the checkpoints of one run directory."""

    def __init__(self, run_dir: str | Path):
        self.dir = Path(run_dir) / "checkpoints"

    def _stem(self, epoch: int) -> Path:
        return self.dir / f"epoch_{epoch:04d}"

    def save(self, record: CheckpointRecord, net: gluon.Block, trainer: Optional[gluon.Trainer],
             describe: Optional[Callable[[Path], Optional[Path]]] = None) -> Path:
        """Write the checkpoint of ``record.epoch`` (its file names and digests filled in); return its params path.

        ``describe``, called with the params path once the epoch's record exists and before ``latest.json``
        names it, writes a file that describes the checkpoint (its model card) and returns that file's path, so
        that ``latest.json`` stays the mark of a checkpoint complete with everything that belongs to it.
        On failure (e.g. :class:`~utilities.atomic.WriteError` for a full disk) the files of the epoch already
        written are removed before the error is raised; the previous checkpoints stay intact.
        """
        stem = self._stem(record.epoch)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.remove_orphans()
        files = {"params": stem.with_suffix(".params"), "states": stem.with_suffix(".states")}
        writers = {"params": functools.partial(_save_parameters, net),
                   "states": trainer.save_states if trainer is not None else None}
        written: Dict[str, Optional[str]] = {}
        extra: List[Path] = []
        try:
            for kind, write in writers.items():
                written[kind] = written[f"{kind}_sha256"] = None
                if write is not None:
                    with atomic_path(files[kind]) as tmp:
                        write(tmp)
                        written[kind], written[f"{kind}_sha256"] = files[kind].name, file_digest(tmp)
            text = json.dumps(dataclasses.replace(record, **written, format_version=FORMAT_VERSION).to_dict(),
                              indent=2)
            atomic_write_text(stem.with_suffix(".json"), text)
            if describe is not None:
                extra = [path for path in [describe(files["params"])] if path is not None]
        except BaseException:
            for path in (*files.values(), stem.with_suffix(".json"), *extra):
                path.unlink(missing_ok=True)
            raise
        atomic_write_text(self.dir / "latest.json", text)
        return files["params"]

    def remove_orphans(self) -> List[Path]:
        """Delete parameter and state files without their ``.json`` record (a save interrupted between them)."""
        orphans = [p for pattern in ("epoch_*.params", "epoch_*.states") for p in self.dir.glob(pattern)
                   if not p.with_suffix(".json").exists()]
        for path in orphans:
            path.unlink(missing_ok=True)
        return orphans

    def latest(self) -> Optional[CheckpointRecord]:
        """The newest complete checkpoint's record, or None when the run has none."""
        path = self.dir / "latest.json"
        return CheckpointRecord.read(path) if path.exists() else None

    def records(self) -> List[CheckpointRecord]:
        """Records of every saved epoch, in epoch order (``epoch_NNNN.json``; not their model cards,
        ``epoch_NNNN.stac.json``)."""
        return [CheckpointRecord.read(p) for p in sorted(self.dir.glob("epoch_*.json")) if p.name.count(".") == 1]

    def prune(self, keep: int) -> None:
        """Delete all but the newest ``keep`` checkpoints (their records stay, for the history)."""
        for record in self.records()[:-keep]:
            for name in (record.params, record.states):
                if name:
                    (self.dir / name).unlink(missing_ok=True)

    def load(self, record: CheckpointRecord, net: gluon.Block, trainer: Optional[gluon.Trainer] = None) -> None:
        """Load parameters (and optimiser state) of ``record`` into ``net`` (and ``trainer``).

        The trainer's parameters must already have their shapes (run one forward first).

        Raises
        ------
        InputError
            A missing, unreadable or corrupt file (see :func:`load_parameters`).
        """
        load_parameters(net, self.dir / record.params, record.params_sha256)
        if trainer is not None and record.states:
            states = self.dir / record.states
            _check_file(states, record.states_sha256)
            try:
                trainer.load_states(str(states))
            except Exception as err:  # MXNetError, pickle errors for unreadable files
                raise InputError(f"checkpoint {states} cannot be read: {error_reason(err)}") from None


def _save_parameters(net: gluon.Block, tmp: str) -> None:
    """``net.save_parameters(tmp)``, checked. MXNet's C++ file stream reports a failed write without errno
    ("FileStream.Write incomplete") and ignores a failure when it closes the file: a full disk met by its
    last buffer (a small file: all of it) or a quota that NFS enforces at close leaves a short file without
    any error. So the file is flushed to its device and read back; a failure is an :class:`OSError` (EIO),
    which :func:`~utilities.atomic.atomic_path` reports as "no space left on device writing FILE" when the
    device is (almost) full, judged while the partial file still takes its space."""
    try:
        net.save_parameters(tmp)
    except MXNetError as err:
        raise OSError(errno.EIO, error_reason(err)) from None
    with open(tmp, "rb") as written:
        os.fsync(written.fileno())
    try:
        nd.load(tmp)
    except MXNetError:
        raise OSError(errno.EIO, "MXNet wrote an incomplete file") from None


def error_reason(err: BaseException) -> str:
    """The reason of a library error in one line, without a stack trace: MXNet's messages carry the C++
    trace first and the reason on the last line (``MXNetError: Check failed: <test>: <reason>``)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    reason = (lines[-1] if lines else type(err).__name__).removeprefix("MXNetError:").strip()
    if reason.startswith("Check failed:"):  # "Check failed: fi->Read(data): Invalid NDArray file format"
        reason = reason.rsplit(": ", 1)[-1]
    return reason[:200].rstrip(".")


def _check_file(path: Path, sha256: Optional[str]) -> None:
    if not path.exists():
        raise InputError(f"checkpoint {path} does not exist")
    if path.stat().st_size == 0:
        raise InputError(f"checkpoint {path} cannot be read: the file is empty")
    if sha256 is not None and file_digest(path) != sha256:
        raise InputError(f"checkpoint {path} cannot be read: its content differs from the SHA-256 in its record "
                         f"(a truncated or damaged copy)")


def load_parameters(net: gluon.Block, path: str | Path, sha256: Optional[str] = None) -> None:
    """``net.load_parameters`` with a one-line error for a missing, empty, corrupt (not the ``sha256`` the
    record holds, when given) or unreadable file, or one of another architecture.

    Raises
    ------
    InputError
        ``checkpoint X does not exist``, ``checkpoint X cannot be read: <reason>`` or ``checkpoint X does
        not fit this model (<reason>)``.
    """
    path = Path(path)
    _check_file(path, sha256)
    try:
        net.load_parameters(str(path))
    except (AssertionError, KeyError, ValueError) as err:  # MXNet's messages for name/shape mismatches
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputError(f"checkpoint {path} does not fit this model ({first[:200]})") from None
    except Exception as err:  # MXNetError for unreadable files
        raise InputError(f"checkpoint {path} cannot be read: {error_reason(err)}") from None
