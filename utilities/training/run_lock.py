"""One training at a time in a run directory: an exclusive lock on ``<run_dir>/run.lock``.

Two trainings writing into one run directory overwrite each other's checkpoints, history and config, and a
``--resume`` started while the first still trains would continue from its epoch alongside it. The process
that writes the run (Horovod rank 0) therefore holds an exclusive lock on ``<run_dir>/run.lock`` for as
long as it lives, and a second training is refused with one line naming the holder (host, pid, SLURM
job, start). The kernel releases the lock when its process ends, however it ends (SIGKILL, a SLURM job
stopped for its requeue), so nothing needs cleaning up after a crash; only the lock of a node that crashed
outlives it on a network file system until the server learns of the crash (NFSv4: the client's lease, about
90 s; NFSv3: the node's restart; Lustre: the client's eviction), and the refusal names that host. The
file's content (who holds it) is only meaningful while the lock is held.

The lock is a POSIX record lock (``fcntl.lockf``), not ``flock``: forked children (DataLoader workers)
do not inherit it, so a worker that outlives its trainer does not keep the run locked; on NFS, Linux
implements ``flock`` with these locks anyway (the NLM protocol, or NFSv4's own locks), which hold across
the client hosts; Lustre needs its ``flock`` mount option for either kind. Where the file system takes no
locks (ENOLCK: an NFS client without its lock manager; ENOSYS: Lustre without ``flock``) and where its
locks hold on one host only (NFS ``nolock`` / ``local_lock``, Lustre ``localflock``, see
:func:`node_local_locks`), the run says so in one warning line and goes on.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import socket
import sys
import time
from pathlib import Path
from typing import Dict, Iterator, Optional, Set, Tuple

from utilities.atomic import write_error
from utilities.errors import InputError
from utilities.training.distributed import World, from_root

#: the lock file in a run directory
LOCK_NAME = "run.lock"
#: errno of a lock another process holds
_HELD = (errno.EACCES, errno.EAGAIN)
#: errno of a file system that takes no locks
_NO_LOCKS = (errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL)
#: file system type -> mount options with which its locks hold on this host only
LOCAL_LOCK_OPTIONS: Dict[str, Tuple[str, ...]] = {
    "nfs": ("nolock", "local_lock=all", "local_lock=posix"),
    "nfs4": ("local_lock=all", "local_lock=posix"),
    "lustre": ("localflock",),
}


def _unescape(field: str) -> str:
    """A path of /proc/self/mountinfo (spaces and the like written as octal escapes, e.g. ``\\040``)."""
    return re.sub(r"\\([0-7]{3})", lambda match: chr(int(match.group(1), 8)), field)


def node_local_locks(path: Path, mountinfo: str) -> Optional[str]:
    """Why locks on ``path`` hold on this host only, from the mount that holds it (``mountinfo``: the text of
    /proc/self/mountinfo), e.g. ``"nfs mounted with nolock"``; None when they hold across hosts (or the file
    system is local to this host)."""
    real, best = os.path.realpath(path), None
    for line in mountinfo.splitlines():
        fields = line.split()
        if "-" not in fields[6:]:
            continue
        separator = fields.index("-", 6)
        point = _unescape(fields[4])
        inside = real == point or real.startswith(point.rstrip("/") + "/")
        if inside and (best is None or len(point) > len(best[0])):
            options = fields[5].split(",") + fields[separator + 3].split(",")
            best = (point, fields[separator + 1], options)
    if best is None:
        return None
    _, kind, options = best
    local = [option for option in LOCAL_LOCK_OPTIONS.get(kind, ()) if option in options]
    return f"{kind} mounted with {local[0]}" if local else None


def _holder_text() -> str:
    return json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "slurm_job": os.environ.get("SLURM_JOB_ID"),
                       "since": time.strftime("%Y-%m-%d %H:%M:%S %z")})


def _describe_holder(text: str) -> str:
    """The holder recorded in a lock file, in words."""
    try:
        holder = json.loads(text)
        words = [f"host {holder['host']}", f"pid {holder['pid']}"]
    except (ValueError, TypeError, KeyError):
        return "a process that has not recorded itself yet"
    if holder.get("slurm_job"):
        words.append(f"SLURM job {holder['slurm_job']}")
    if holder.get("since"):
        words.append(f"since {holder['since']}")
    return ", ".join(words)


class RunLock:
    """The exclusive lock of one run directory (:meth:`acquire`, :meth:`release`)."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self._fd: Optional[int] = None
        self._created: Set[Path] = set()  # what acquire created: the run directory, the lock file
        self._entries: Set[str] = set()

    @property
    def held(self) -> bool:
        return self._fd is not None

    def _open_locked(self) -> Optional[int]:
        """The lock file's descriptor, locked; None when the file system takes no locks (after a warning).

        A lock taken on a file that :meth:`release` removed meanwhile is not the run's lock: then again.
        """
        while True:
            try:
                self.run_dir.mkdir(parents=True)
                self._created.add(self.run_dir)
            except FileExistsError:
                pass
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
                self._created.add(self.path)
            except FileExistsError:
                fd = os.open(self.path, os.O_RDWR | os.O_CLOEXEC)
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                holder = os.pread(fd, 4096, 0).decode(errors="replace")
                os.close(fd)
                if err.errno in _HELD:
                    raise InputError(f"{self.run_dir} is in use by another training ({_describe_holder(holder)}): "
                                     "wait for it to end or stop it, or use another run_dir") from None
                if err.errno in _NO_LOCKS:
                    print(f"warning: cannot lock {self.path} ({err.strerror}): its file system takes no locks, so "
                          "a second training started in this run directory would not be stopped", file=sys.stderr)
                    return None
                raise
            with contextlib.suppress(FileNotFoundError):
                if os.stat(self.path).st_ino == os.fstat(fd).st_ino:
                    return fd
            os.close(fd)

    def acquire(self) -> "RunLock":
        """Create the run directory if needed and lock it; record this process as the holder.

        Raises
        ------
        InputError
            Another process holds the lock: one line naming it (host, pid, SLURM job, since when).
        WriteError
            The holder cannot be written (a full disk).
        """
        fd = self._open_locked()
        if fd is None:
            return self
        self._fd = fd
        self._entries = {entry.name for entry in os.scandir(self.run_dir)}
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, _holder_text().encode(), 0)
        except OSError as err:
            self.release(failed=True)
            raise write_error(err, self.path) from None
        with contextlib.suppress(OSError):
            local = node_local_locks(self.run_dir, Path("/proc/self/mountinfo").read_text())
            if local:
                print(f"warning: {self.run_dir} is on {local}: its run lock holds on this host only, so a training "
                      "started in it on another host would not be stopped", file=sys.stderr)
        return self

    def release(self, failed: bool = False) -> None:
        """Release the lock. ``failed``: the run ended with an error; the empty folders it created in the run
        directory are removed, and so are the lock file and the run directory when :meth:`acquire` created them
        and nothing else is in it (a run refused for bad input leaves nothing behind)."""
        if self._fd is None:
            return
        if failed:
            for name in {entry.name for entry in os.scandir(self.run_dir)} - self._entries:
                _remove_empty_folders(self.run_dir / name)
            if self.path in self._created:
                self.path.unlink()  # while locked: a process that opened it meanwhile sees it gone and retries
            if self.run_dir in self._created:
                with contextlib.suppress(OSError):  # not empty: it holds what the run wrote
                    self.run_dir.rmdir()
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, 0)
        os.close(self._fd)  # releases the lock
        self._fd = None


def _remove_empty_folders(folder: Path) -> None:
    """Remove ``folder`` when it holds nothing but empty folders."""
    if not folder.is_dir() or folder.is_symlink():
        return
    for child in folder.iterdir():
        _remove_empty_folders(child)
    with contextlib.suppress(OSError):
        folder.rmdir()


@contextlib.contextmanager
def lock_run_dir(run_dir: Path, world: World) -> Iterator[None]:
    """Hold the lock of ``run_dir`` on rank 0 (the rank that writes the run) while the context runs.

    Every rank raises the error of rank 0 when it cannot take the lock (all stop together, with one line
    each). On leaving with an error, :meth:`RunLock.release` removes the empty folders the run created.
    """
    lock, failure = RunLock(run_dir), None
    if world.is_root:
        try:
            lock.acquire()
        except Exception as err:  # shared with the other ranks, which would otherwise wait for rank 0
            failure = err
    failure = from_root(failure, "run_lock")
    if failure is not None:
        raise failure
    try:
        yield
    except BaseException:
        lock.release(failed=True)
        raise
    lock.release()
