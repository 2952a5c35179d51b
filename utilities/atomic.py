"""Atomic file writes: write to a temporary name in the destination folder, then ``os.replace``.

A process killed mid-write leaves either the old file or none, never a truncated file that looks
complete (checkpoints, histories, outputs). Temporary names are hidden and carry the host and process
id (``.<name>.<host>-<pid>.<random>.tmp<suffix>``): a process killed by SIGKILL cannot remove its
own, so every write removes the temporary files that dead processes of this host left next to its
target. Files are created with mode ``0666 & ~umask``, like any file the user creates. The outputs of one
command can be written as a set that appears all at once or not at all (:func:`atomic_files`).

Write failures raise :class:`WriteError` (an :class:`OSError`) naming the final file, not the temporary
one; a failure with (almost) no free space left on the device is reported as ``ENOSPC`` even when the
writing library (GDAL, libpng) gives no reason of its own.
"""
from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import socket
from pathlib import Path
from typing import Dict, Iterator, Optional, Tuple, Union

from rasterio.errors import RasterioError

from utilities.errors import InputError

PathLike = Union[str, Path]
#: a write failure with less free space than this on the device is reported as "no space left"
LOW_SPACE_BYTES = 1 << 20
_HOST = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname())
#: the write errors of the libraries behind atomic_path (GDAL's come through rasterio)
_WRITE_ERRORS = (OSError, RasterioError)


def _temporary_name(path: Path, suffix: str) -> Path:
    return path.parent / f".{path.name}.{_HOST}-{os.getpid()}.{secrets.token_hex(4)}.tmp{suffix}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_temporaries(path: PathLike) -> int:
    """Remove the temporary files of ``path`` left by dead processes of this host; returns how many."""
    path = Path(path)
    pattern = re.compile(rf"\.{re.escape(path.name)}\.{re.escape(_HOST)}-(\d+)\.[0-9a-f]+\.tmp")
    removed = 0
    with contextlib.suppress(OSError):
        for entry in os.scandir(path.parent):
            match = pattern.match(entry.name)
            if match and not _alive(int(match.group(1))):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                    removed += 1
    return removed


def _low_space(folder: Path) -> bool:
    try:
        stats = os.statvfs(folder)
    except OSError:
        return False
    return stats.f_bavail * stats.f_frsize < LOW_SPACE_BYTES


class WriteError(OSError):
    """A file could not be written; the message is one line naming the file (not its temporary name)."""


def write_error(error: BaseException, path: Path) -> WriteError:
    """``error`` (raised while writing ``path``) as a :class:`WriteError`; already one: unchanged."""
    if isinstance(error, WriteError):
        return error
    code = getattr(error, "errno", None)
    if code == errno.ENOSPC or _low_space(path.parent):
        return WriteError(errno.ENOSPC, f"no space left on device writing {path}")
    reason = getattr(error, "strerror", None) or " ".join(str(error).split()) or type(error).__name__
    return WriteError(code or errno.EIO, f"cannot write {path}: {reason}")


def writable_folder(folder: PathLike, what: str = "output folder") -> Path:
    """Check that files can be written in ``folder``, before any work: it is a folder or can be created
    (nothing is created: a probe file is made and removed in the nearest existing folder).

    Raises
    ------
    InputError
        One line naming ``what``, the folder and the reason (it is a file, lies under a file, is read-only,
        is on a file system that takes no files such as /proc, ...).
    """
    folder = Path(folder)
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        where = "it is a file" if existing == folder else f"it lies under the file {existing}"
        raise InputError(f"cannot write to {what} {folder}: {where}, not a folder")
    probe = _temporary_name(existing / "write-test", "")
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        os.unlink(probe)
    except OSError as err:
        raise InputError(f"cannot write to {what} {folder}: no file can be created in {existing} "
                         f"({err.strerror or err})") from None
    return folder


@contextlib.contextmanager
def temporary_path(path: PathLike, suffix: str = "") -> Iterator[str]:
    """Yield a new empty temporary file next to ``path`` (the folder is created if needed); it is removed
    on leaving, whatever happens. Stale temporary files of ``path`` are removed first
    (:func:`remove_stale_temporaries`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    tmp = _temporary_name(path, suffix)
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        yield str(tmp)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


@contextlib.contextmanager
def atomic_path(path: PathLike, suffix: str = "") -> Iterator[str]:
    """Yield a temporary file name next to ``path``; on success rename it to ``path``.

    For libraries that write to a file name themselves (``net.save_parameters``, ``rasterio.open``).
    ``suffix`` keeps an extension some writers need. On error the temporary file is removed and write
    errors (:class:`OSError`, rasterio's errors) are raised as a :class:`WriteError` naming ``path``
    (:func:`write_error`); other exceptions pass unchanged.
    """
    path = Path(path)
    with temporary_path(path, suffix) as tmp:
        try:
            yield tmp
            os.replace(tmp, path)
        except _WRITE_ERRORS as err:
            raise write_error(err, path) from None


def atomic_write_text(path: PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)


class FileSet:
    """Output files that appear under their final names together: made by :func:`atomic_files`."""

    def __init__(self, stack: contextlib.ExitStack):
        self._stack = stack
        self._staged: Dict[Path, Tuple[str, bool]] = {}

    @contextlib.contextmanager
    def path(self, path: PathLike, last: bool = False) -> Iterator[str]:
        """Yield a temporary file name for ``path`` (with its extension, which some writers need), as
        :func:`atomic_path` does, but keep it under that name until the whole set is complete. Write errors
        are raised as a :class:`WriteError` naming ``path``. ``last``: rename it after the files not marked
        so (the file whose presence tells that the others are there, e.g. the ensemble a later command reads).
        """
        path = Path(path)
        tmp = self._stack.enter_context(temporary_path(path, path.suffix))
        try:
            yield tmp
        except _WRITE_ERRORS as err:
            raise write_error(err, path) from None
        self._staged[path] = (tmp, last)

    def write_text(self, path: PathLike, text: str, last: bool = False) -> None:
        """Write ``text`` to ``path`` as part of the set."""
        with self.path(path, last) as tmp:
            Path(tmp).write_text(text)

    def staged(self, path: PathLike) -> Path:
        """The temporary file that holds the content of ``path`` (already written in the set) until the set
        is complete, to read it back meanwhile."""
        return Path(self._staged[Path(path)][0])

    def _commit(self) -> None:
        order = sorted(self._staged.items(), key=lambda item: item[1][1])  # stable: the last-marked at the end
        for path, (tmp, _) in order:
            try:
                os.replace(tmp, path)
            except OSError as err:
                raise write_error(err, path) from None


@contextlib.contextmanager
def atomic_files(within: Optional[FileSet] = None) -> Iterator[FileSet]:
    """A :class:`FileSet`: the files written into it take their final names only when the context ends
    without error, all of them, in the order they were written (those marked ``last`` after the others);
    on error (a full disk, Ctrl-C, a failure of the command) every one is removed and none appears. A
    process killed meanwhile leaves only temporary files, which later writes remove.

    ``within``: an enclosing set to join instead (its files then appear with that set's); lets a function
    write its files on its own or as part of its caller's outputs.
    """
    if within is not None:
        yield within
        return
    with contextlib.ExitStack() as stack:
        files = FileSet(stack)
        yield files
        files._commit()

