"""A small tmpfs for the tests of a full disk: real ENOSPC from the kernel, whoever writes (Python, MXNet's C++
file stream, GDAL). Mounting needs root; the tests that use it skip otherwise."""
import contextlib
import os
import subprocess
from pathlib import Path
from typing import Iterator

import pytest


@contextlib.contextmanager
def small_tmpfs(folder: Path, size: str) -> Iterator[Path]:
    """Mount a tmpfs of ``size`` (mount's syntax: ``64k``, ``1m``) on ``folder`` (created) for the ``with``
    block; skip the test when it cannot be mounted (not root, no mount permission in a container)."""
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "--lazy", str(folder)], capture_output=True)


def fill(folder: Path) -> None:
    """Take all the free space left in ``folder``'s file system (a file of its own, ``filler``)."""
    with open(folder / "filler", "wb", buffering=0) as f, contextlib.suppress(OSError):
        while True:
            f.write(b"\0" * 4096)
