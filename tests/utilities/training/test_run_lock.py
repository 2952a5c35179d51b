"""The run directory's lock: a second process is refused with the holder named, the lock dies with its process, a
failed run leaves nothing, file systems without (cluster-wide) locks are named in one warning line."""
import errno
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from utilities.errors import InputError
from utilities.training import run_lock
from utilities.training.run_lock import LOCK_NAME, RunLock, node_local_locks

ROOT = Path(__file__).resolve().parents[3]

#: a process that takes the lock of a run directory, says so, and holds it until its stdin closes
HOLDER = """
import sys
sys.path.insert(0, {root!r})
from utilities.errors import InputError
from utilities.training.run_lock import RunLock
try:
    RunLock({run_dir!r}).acquire()
except InputError as err:
    print(err, flush=True)
    sys.exit(2)
print("locked", flush=True)
sys.stdin.read()
"""


def holder(run_dir: Path, **env) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-c", HOLDER.format(root=str(ROOT), run_dir=str(run_dir))],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env={**os.environ, **env})
    return process


def refusal(run_dir: Path, pid: int, job: str = "") -> str:
    """The message that refuses a run of ``run_dir`` held by ``pid`` of this host, as a regular expression."""
    job = f", SLURM job {job}" if job else ""
    return (rf"{re.escape(str(run_dir))} is in use by another training \(host {re.escape(socket.gethostname())}, "
            rf"pid {pid}{job}, since \d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{{4}}\): wait for it to end or stop it, "
            "or use another run_dir")


def test_a_second_process_is_refused_with_the_holder_named_and_the_lock_dies_with_its_process(tmp_path):
    run_dir = tmp_path / "run"
    first = holder(run_dir, SLURM_JOB_ID="4242")
    try:
        assert first.stdout.readline() == "locked\n"
        with pytest.raises(InputError) as err:
            RunLock(run_dir).acquire()
        assert re.fullmatch(refusal(run_dir, first.pid, job="4242"), str(err.value))
    finally:
        first.kill()  # SIGKILL: nothing of the holder runs any more, the kernel releases its lock
        first.wait()
    lock = RunLock(run_dir).acquire()
    try:
        assert lock.held
        second = holder(run_dir)  # now refused, naming this process
        out, _ = second.communicate(timeout=120)
        assert second.returncode == 2 and re.fullmatch(refusal(run_dir, os.getpid()), out.strip()), out
    finally:
        lock.release()
    assert (run_dir / LOCK_NAME).read_text() == ""  # released: no holder recorded


def test_a_failed_run_leaves_nothing_it_created(tmp_path):
    fresh = tmp_path / "fresh" / "run"
    lock = RunLock(fresh).acquire()
    (fresh / "chips" / "train").mkdir(parents=True)  # a chip cache whose build failed
    lock.release(failed=True)
    assert not fresh.exists() and (tmp_path / "fresh").exists()

    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "slurm_jobs.txt").write_text("job 1\n")
    lock = RunLock(existing).acquire()
    (existing / "chips").mkdir()
    (existing / "checkpoints").mkdir()
    (existing / "checkpoints" / "epoch_0001.json").write_text("{}")
    lock.release(failed=True)
    assert sorted(p.name for p in existing.rglob("*")) == ["checkpoints", "epoch_0001.json", "slurm_jobs.txt"]


def test_a_successful_run_keeps_its_lock_file_empty(tmp_path):
    lock = RunLock(tmp_path / "run").acquire()
    (tmp_path / "run" / "chips").mkdir()
    lock.release()
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["chips", LOCK_NAME]
    assert (tmp_path / "run" / LOCK_NAME).read_text() == ""


@pytest.mark.parametrize("code", [errno.ENOLCK, errno.ENOSYS])
def test_a_file_system_without_locks_is_named_in_one_warning(tmp_path, monkeypatch, capsys, code):
    """ENOLCK: an NFS client without its lock manager; ENOSYS: Lustre mounted without ``flock``."""
    def no_locks(fd, operation):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(run_lock.fcntl, "lockf", no_locks)
    lock = RunLock(tmp_path / "run").acquire()
    assert not lock.held and (tmp_path / "run").is_dir()
    assert capsys.readouterr().err == (
        f"warning: cannot lock {tmp_path / 'run' / LOCK_NAME} ({os.strerror(code)}): its file system takes no "
        "locks, so a second training started in this run directory would not be stopped\n")


MOUNTINFO = """\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
40 22 0:40 / /shared rw,relatime shared:20 - nfs nas:/export rw,vers=3,hard,proto=tcp,nolock,local_lock=all
41 40 0:41 / /shared/ok rw,relatime shared:21 - nfs4 nas:/ok rw,vers=4.2,local_lock=none
42 22 0:42 / /lustre rw shared:22 - lustre mds@o2ib:/fs rw,localflock
43 22 0:43 / /lustre2 rw shared:23 - lustre mds@o2ib:/fs2 rw,flock
44 22 0:44 / /with\\040space rw shared:24 - nfs nas:/sp rw,vers=3,nolock,local_lock=all
"""


@pytest.mark.parametrize("path, reason", [
    ("/shared/runs/a", "nfs mounted with nolock"),
    ("/shared/ok/runs/a", None),  # the deeper mount holds it: NFSv4's own locks, across hosts
    ("/lustre/x", "lustre mounted with localflock"),
    ("/lustre2/x", None),
    ("/with space/run", "nfs mounted with nolock"),
    ("/home/user/run", None),
])
def test_mounts_whose_locks_hold_on_one_host_only_are_recognised(path, reason):
    assert node_local_locks(Path(path), MOUNTINFO) == reason
