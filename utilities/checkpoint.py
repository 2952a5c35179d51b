"""Per-epoch checkpoints of a training run, written atomically, and resuming from the last one.

Layout under ``<run_dir>/checkpoints``::

    epoch_0007.params   model parameters (Gluon ``save_parameters``)
    epoch_0007.states   optimiser state: Adam moments and update counts (``Trainer.save_states``)
    epoch_0007.json     epoch, learning rate, FT depth, schedule state, metrics, model config
    latest.json         the newest complete checkpoint (written last)

Every file is written under a temporary name and renamed, and ``latest.json`` only after the three
files of its epoch exist, so a run killed at any moment resumes from a complete checkpoint.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional

from mxnet import gluon

from .atomic import atomic_path, atomic_write_text
from .errors import InputError


class Checkpoints:
    """Save and find the checkpoints of one run directory."""

    def __init__(self, run_dir: str | Path):
        self.dir = Path(run_dir) / "checkpoints"

    def _stem(self, epoch: int) -> Path:
        return self.dir / f"epoch_{epoch:04d}"

    def save(self, epoch: int, net: gluon.Block, trainer: Optional[gluon.Trainer], meta: Dict[str, Any]) -> Path:
        """Write the checkpoint of ``epoch`` (``meta`` must be JSON-serialisable); return its params path."""
        stem = self._stem(epoch)
        with atomic_path(stem.with_suffix(".params")) as tmp:
            net.save_parameters(tmp)
        if trainer is not None:
            with atomic_path(stem.with_suffix(".states")) as tmp:
                trainer.save_states(tmp)
        record = dict(meta, epoch=epoch, params=stem.with_suffix(".params").name,
                      states=stem.with_suffix(".states").name if trainer is not None else None)
        atomic_write_text(stem.with_suffix(".json"), json.dumps(record, indent=2))
        atomic_write_text(self.dir / "latest.json", json.dumps(record, indent=2))
        return stem.with_suffix(".params")

    def latest(self) -> Optional[Dict[str, Any]]:
        """The newest complete checkpoint's record, or None when the run has none."""
        path = self.dir / "latest.json"
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError:
            raise InputError(f"checkpoint index {path} is corrupt (not JSON)") from None

    def records(self) -> List[Dict[str, Any]]:
        """Records of every saved epoch, in epoch order."""
        return [json.loads(p.read_text()) for p in sorted(self.dir.glob("epoch_*.json"))]

    def prune(self, keep: int) -> None:
        """Delete all but the newest ``keep`` checkpoints (their records stay, for the history)."""
        for record in self.records()[:-keep]:
            for name in (record["params"], record.get("states")):
                if name:
                    (self.dir / name).unlink(missing_ok=True)

    def load(self, record: Dict[str, Any], net: gluon.Block, trainer: Optional[gluon.Trainer] = None) -> None:
        """Load parameters (and optimiser state) of ``record`` into ``net`` (and ``trainer``).

        The trainer's parameters must already have their shapes (run one forward first).
        """
        params = self.dir / record["params"]
        load_parameters(net, params)
        if trainer is not None and record.get("states"):
            trainer.load_states(str(self.dir / record["states"]))


def load_parameters(net: gluon.Block, path: str | Path) -> None:
    """``net.load_parameters`` with a one-line error for a missing file or another architecture."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"checkpoint {path} does not exist")
    try:
        net.load_parameters(str(path))
    except (AssertionError, KeyError, ValueError) as err:  # MXNet's messages for name/shape mismatches
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputError(f"checkpoint {path} does not fit this model ({first[:200]})") from None
    except Exception as err:  # MXNetError for unreadable files
        raise InputError(f"checkpoint {path} cannot be read: {str(err).strip().splitlines()[0][:200]}") from None
