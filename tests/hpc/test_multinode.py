"""hpc/launch.sh across two nodes: the ranks of a multi-node job are started by horovodrun over ssh.

The two "nodes" are loopback aliases of this machine, mantis-node1 (127.0.0.2) and mantis-node2
(127.0.0.3), served by one sshd that listens on those two addresses only, with a key generated for
the test (``tests/hpc/local_sshd.sh``; it installs openssh-server with apt-get when missing and stops
only what it started). The launch is the one a two-node SLURM job runs: ``hpc/launch.sh`` with the
variables SLURM sets for ``--nodes=2 --ntasks-per-node=1`` (``SLURM_JOB_NODELIST=mantis-node[1-2]``,
``SLURM_TASKS_PER_NODE=1(x2)``), which it turns into ``horovodrun -np 2 -H mantis-node1:1,mantis-node2:1``.
Neither name resolves to an address of a local interface, so horovodrun starts both ranks through
ssh, as it starts the ranks of every node but the batch host on a cluster. The site's ssh settings
reach horovodrun through ``HOROVOD_ARGS`` (port, identity file, the network interface: ``lo``, so
that nothing leaves the loopback). No slurmctld runs: ``scontrol show hostnames`` only needs a
slurm.conf (``SLURM_CONF``), and ``TRAIN_TIMEOUT`` is given so that the launch does not ask squeue.

Where each rank ran is read from the rank's own environment: sshd sets ``SSH_CONNECTION`` (client
address and port, server address and port) in the session it starts, and the test's interpreter
wrapper (``PYTHON``) prints it before it runs the training; horovodrun prefixes that line with the
rank (``[1]<stdout>:``).

Skipped, with the reason, when not root or when ssh, sshd or scontrol are missing and apt-get cannot
install them.
"""
import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from utilities.data.synthetic import write_levircd_layout

ROOT = Path(__file__).resolve().parents[2]
LAUNCH = ROOT / "hpc" / "launch.sh"
LOCAL_SSHD = Path(__file__).with_name("local_sshd.sh")
NODES = {"mantis-node1": "127.0.0.2", "mantis-node2": "127.0.0.3"}


def apt_install(*packages: str) -> str:
    """Install Debian packages (apt-get update only when the first attempt fails); '' or the error."""
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages]
    result = subprocess.run(install, env=env, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, timeout=600)
        result = subprocess.run(install, env=env, capture_output=True, text=True, timeout=600)
    return "" if result.returncode == 0 else (result.stdout + result.stderr)[-500:]


@pytest.fixture(scope="module")
def nodes(tmp_path_factory):
    """Start the two ssh nodes; yield the launcher's ssh settings; stop them."""
    if os.geteuid() != 0:
        pytest.skip("needs root: sshd for root logins on loopback aliases, host names in /etc/hosts")
    if not shutil.which("apt-get") and not (shutil.which("ssh") and Path("/usr/sbin/sshd").exists()):
        pytest.skip("ssh or sshd is not installed and apt-get is unavailable to install them")
    if not shutil.which("scontrol"):
        error = apt_install("slurm-client") if shutil.which("apt-get") else "apt-get is unavailable"
        if error:
            pytest.skip(f"scontrol (slurm-client) is not installed and cannot be: {error}")
    env = dict(os.environ, SSHD_BASE=str(tmp_path_factory.mktemp("sshd")))
    try:
        result = subprocess.run(["bash", str(LOCAL_SSHD)], env=env, capture_output=True, text=True, timeout=900)
        if "apt-get could not install" in result.stderr:
            pytest.skip(result.stderr.strip().splitlines()[-1])
        assert result.returncode == 0, result.stderr[-3000:]
        settings = dict(line.split("=", 1) for line in result.stdout.splitlines())
        yield dict(settings, log=Path(env["SSHD_BASE"]) / "sshd.log")
    finally:
        subprocess.run(["bash", str(LOCAL_SSHD), "stop"], env=env, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    root = tmp_path_factory.mktemp("levir")
    write_levircd_layout(root, n_per_split={"train": 2, "val": 1}, size=64, seed=0)
    return root


def write_config(folder: Path, root: Path) -> Path:
    config = {
        "data": {"kind": "levircd", "root": str(root), "chip_size": 32, "stride": 32},
        "model": {"name": "fractalresnet_tiny"},
        "train": {"batch_size": 2, "depths": [0, 1], "patience": 100, "max_epochs": 2, "max_steps_per_epoch": 2},
        "output": {"run_dir": str(folder / "runs" / "tiny")},
    }
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def node_reporting_python(folder: Path) -> Path:
    """An interpreter wrapper that prints where a rank runs (sshd's SSH_CONNECTION), then runs Python."""
    wrapper = folder / "python"
    wrapper.write_text('#!/bin/sh\n'
                       '[ -z "$HOROVOD_RANK" ] || echo "node check: rank $HOROVOD_RANK,'
                       ' HOROVOD_HOSTNAME=$HOROVOD_HOSTNAME, SSH_CONNECTION=$SSH_CONNECTION"\n'
                       f'exec {sys.executable} "$@"\n')
    wrapper.chmod(0o755)
    return wrapper


def two_node_job_env(tmp_path: Path, nodes: dict, **extra) -> dict:
    """The environment of the batch shell of `sbatch --nodes=2 --ntasks-per-node=1` on mantis-node[1-2]."""
    slurm_conf = tmp_path / "slurm.conf"  # enough for `scontrol show hostnames`; no controller is asked
    slurm_conf.write_text("ClusterName=mantis-test\nSlurmctldHost=localhost\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_", "SSH_"))}
    env.update(SLURM_CONF=str(slurm_conf), SLURM_JOB_ID="4242", SLURM_NTASKS="2", SLURM_TASKS_PER_NODE="1(x2)",
               SLURM_JOB_NODELIST="mantis-node[1-2]", SLURM_JOB_NUM_NODES="2", TRAIN_TIMEOUT="300",
               OMP_NUM_THREADS="1", PYTHON=str(node_reporting_python(tmp_path)),
               HOROVODRUN=str(Path(sys.executable).parent / "horovodrun"),
               HOROVOD_ARGS=(f"--gloo --network-interface lo --ssh-port {nodes['MANTIS_SSH_PORT']} "
                             f"--ssh-identity-file {nodes['MANTIS_SSH_KEY']} --disable-cache"))
    env.update(extra)
    return env


def test_two_node_job_runs_one_rank_per_node_over_ssh(nodes, scenes, tmp_path):
    config = write_config(tmp_path, scenes)
    run_dir = tmp_path / "run"
    result = subprocess.run(["bash", str(LAUNCH)], cwd=ROOT, env=two_node_job_env(tmp_path, nodes, CONFIG=str(config),
                                                                                 RUN_DIR=str(run_dir)),
                            capture_output=True, text=True, timeout=400)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "[launch] job 4242 (restart 0)" in output
    assert "2 Horovod ranks on mantis-node1:1,mantis-node2:1" in output
    assert "[launch] ssh to mantis-node1 mantis-node2: ok" in output  # the launch's own check of the nodes
    assert "mantis train: fractalresnet_tiny, 2 rank(s)" in output  # hvd.size() == SLURM_NTASKS

    # each rank was started by sshd on its own node's address: SSH_CONNECTION's server address
    port = nodes["MANTIS_SSH_PORT"]
    for rank, (name, address) in enumerate(NODES.items()):
        lines = re.findall(rf"^\[{rank}\]<stdout>:node check: (.*)$", output, re.MULTILINE)
        assert len(lines) == 1, output
        hostname, connection = re.fullmatch(r"rank (\d+), HOROVOD_HOSTNAME=(\S+), SSH_CONNECTION=(.*)",
                                            lines[0]).groups()[1:]
        assert hostname == name
        assert connection.split()[2:] == [address, port], lines[0]
    sshd_log = nodes["log"].read_text()
    for address in NODES.values():
        assert re.search(rf"Connection from 127\.0\.0\.1 port \d+ on {re.escape(address)} port {port}", sshd_log)

    # the ranks agree: parameter checksums all-gathered every epoch
    history = json.loads((run_dir / "history.json").read_text())
    assert [row["epoch"] for row in history] == [1, 2]
    assert all(row["rank_spread"] == 0.0 for row in history), history
    assert json.loads((run_dir / "checkpoints" / "latest.json").read_text())["epoch"] == 2
    assert "job 4242 restart 0 ranks 2 hosts mantis-node1:1,mantis-node2:1" in (run_dir / "slurm_jobs.txt").read_text()
    assert "[launch] training finished" in output


def other_key(folder: Path) -> str:
    """A key that the nodes do not accept."""
    key = folder / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True, capture_output=True)
    return str(key)


@pytest.mark.parametrize("fault, message", [
    ("key", "root@mantis-node1: Permission denied (publickey)."),
    ("port", "ssh: connect to host mantis-node1 port {port}: Connection refused"),
], ids=["refused key", "closed port"])
def test_node_without_ssh_is_one_line(nodes, scenes, tmp_path, fault, message):
    """Before any rank starts, the launch tries horovodrun's ssh to every other node: a refused key or
    a closed port stops the job with one line naming the node and ssh's reason (not a traceback)."""
    with socket.socket() as closed:  # bound, never listening: connections to it are refused
        closed.bind((NODES["mantis-node1"], 0))
        port = str(closed.getsockname()[1]) if fault == "port" else nodes["MANTIS_SSH_PORT"]
        key = other_key(tmp_path) if fault == "key" else nodes["MANTIS_SSH_KEY"]
        env = two_node_job_env(tmp_path, {"MANTIS_SSH_PORT": port, "MANTIS_SSH_KEY": key},
                               CONFIG=str(write_config(tmp_path, scenes)), RUN_DIR=str(tmp_path / "run"))
        result = subprocess.run(["bash", str(LAUNCH)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.splitlines() == [
        f"error: cannot ssh to node mantis-node1: {message.format(port=port)} (horovodrun starts the other nodes' "
        "ranks over ssh: the job's nodes need password-less ssh between them, see hpc/README.md)"]
    assert "node check" not in result.stdout  # no rank started
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_node_without_the_repository_is_one_line(nodes, scenes, tmp_path):
    """A node that lacks the repository (no shared file system) stops the job with one line. Both nodes
    share this machine's files, so the node is stood in for by an `ssh` (first on PATH) that runs the
    launch's check command on the node as if the repository were elsewhere there."""
    fake = tmp_path / "bin" / "ssh"
    fake.parent.mkdir()
    fake.write_text(f'#!/bin/bash\ncommand=${{*: -1}} root={ROOT}\n'
                    'echo "$command" >> "$0.log"\n'
                    'exec bash -c "${command//"$root"/"/elsewhere$root"}"\n')
    fake.chmod(0o755)
    env = two_node_job_env(tmp_path, nodes, CONFIG=str(write_config(tmp_path, scenes)), RUN_DIR=str(tmp_path / "run"))
    env["PATH"] = f"{fake.parent}:{env['PATH']}"
    result = subprocess.run(["bash", str(LAUNCH)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.splitlines() == [
        f"error: node mantis-node1 has no {ROOT}/train.py or no {env['PYTHON']}: every node needs the repository "
        "and its Python at the same paths (a shared file system)"]
    assert "node check" not in result.stdout
    assert (fake.parent / "ssh.log").read_text().splitlines() == [
        f"cd {ROOT} && test -f train.py && test -x {env['PYTHON']}"] * 2  # one check per node
