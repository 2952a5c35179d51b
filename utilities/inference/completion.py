"""Completion records: which outputs a finished piece of work wrote, so that a re-run can skip it safely.

A record is a small JSON file written atomically *after* the outputs it lists: the settings the work was
done with (``request``) and, per output file, its size and SHA-256. Work counts as complete when its
record exists, was made with the same settings, and every file it lists is still there with the same
size and checksum; anything else (no record: the work was killed; another model, window or input;
a file missing, truncated or changed since) means the work is redone.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Dict, Iterable, Optional

from utilities.atomic import atomic_write_text

_CHUNK = 1 << 20


def sha256(path: Path) -> str:
    """SHA-256 of a file's content, hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _describe(path: Path, base: Path) -> Dict[str, Any]:
    return {"path": os.path.relpath(path, base), "bytes": path.stat().st_size, "sha256": sha256(path)}


def write_record(record: Path, request: Dict[str, Any], files: Iterable[Path]) -> None:
    """Write the completion record ``record`` for ``files`` (paths relative to the record's folder are
    stored), made with the settings ``request`` (JSON-serialisable)."""
    record = Path(record)
    entries = [_describe(Path(f), record.parent) for f in files]
    atomic_write_text(record, json.dumps({"request": request, "files": entries}, indent=2, sort_keys=True) + "\n")


def incomplete(record: Path, request: Dict[str, Any], checksums: bool = True) -> Optional[str]:
    """None when the work of ``record`` is complete for ``request``; else why it is not, in words.
    ``checksums=False`` compares the files' sizes only (a cheap check of work that is known to be intact)."""
    record = Path(record)
    if not record.exists():
        return f"no record {record}"
    try:
        content = json.loads(record.read_text())
        recorded, files = content["request"], content["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return f"record {record} cannot be read"
    normalised = json.loads(json.dumps(request))  # tuples as lists, as the record holds them
    changed = sorted(k for k in set(recorded) | set(normalised) if recorded.get(k) != normalised.get(k))
    if changed:
        return f"record {record} was made with other settings ({', '.join(changed)})"
    for entry in files:
        path = record.parent / entry["path"]
        if not path.is_file():
            return f"{path} is missing"
        if path.stat().st_size != entry["bytes"] or (checksums and sha256(path) != entry["sha256"]):
            return f"{path} changed since it was written"
    return None
