"""OpenMP threads chosen before MXNet loads (nn/threads.py)."""
import os
import subprocess
import sys

from nn import threads
from nn.threads import default_threads

import pytest


def test_threads_divide_the_cores_among_local_ranks(monkeypatch):
    cores = len(os.sched_getaffinity(0))
    for var in ("HOROVOD_LOCAL_SIZE", "OMPI_COMM_WORLD_LOCAL_SIZE", "SLURM_NTASKS_PER_NODE"):
        monkeypatch.delenv(var, raising=False)
    assert default_threads() == cores
    monkeypatch.setenv("HOROVOD_LOCAL_SIZE", str(2 * cores))
    assert default_threads() == 1  # never below one
    monkeypatch.delenv("HOROVOD_LOCAL_SIZE")
    monkeypatch.setenv("SLURM_NTASKS_PER_NODE", "2(x3)")
    assert default_threads() == max(cores // 2, 1)


def _fresh_process(**env):
    code = "import nn, os; print(os.environ['OMP_NUM_THREADS'])"
    clean = {k: v for k, v in os.environ.items()
             if k not in ("OMP_NUM_THREADS", "MANTIS_THREADS", "MANTIS_AUTO_THREADS", threads.POLICY)}
    return subprocess.run([sys.executable, "-c", code], env={**clean, **env}, capture_output=True, text=True,
                          cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))


def _threads_in_fresh_process(**env):
    out = _fresh_process(**env)
    assert out.returncode == 0, out.stderr
    return int(out.stdout.strip())


def test_import_sets_threads_unless_the_user_did():
    assert _threads_in_fresh_process() == default_threads()
    assert _threads_in_fresh_process(OMP_NUM_THREADS="3") == 3
    assert _threads_in_fresh_process(OMP_NUM_THREADS="3", MANTIS_THREADS="1") == 1


def test_a_value_chosen_for_a_parent_is_recomputed_under_horovod():
    """horovodrun started from a process that imported nn: each rank gets cores / local ranks."""
    parent = default_threads()
    assert _threads_in_fresh_process(OMP_NUM_THREADS=str(parent), MANTIS_AUTO_THREADS=str(parent),
                                     HOROVOD_LOCAL_SIZE="2") == max(parent // 2, 1)


def _fake_cpu_times(monkeypatch, busy):
    """/proc/stat as two samples 100 jiffies apart in which CPU i was busy ``busy[i]`` of the time."""
    monkeypatch.setattr(threads, "_cores", lambda: list(range(len(busy))))
    monkeypatch.setattr(threads.time, "sleep", lambda seconds: None)
    samples = iter([{cpu: [0, 0] for cpu in range(len(busy))},
                    {cpu: [round(100 * (1 - b)), 100] for cpu, b in enumerate(busy)}])
    monkeypatch.setattr(threads, "_cpu_times", lambda: next(samples))
    for var in ("HOROVOD_LOCAL_SIZE", "OMPI_COMM_WORLD_LOCAL_SIZE", "SLURM_NTASKS_PER_NODE"):
        monkeypatch.delenv(var, raising=False)


@pytest.mark.parametrize("busy, expected", [([0.0, 0.0], 2), ([1.0, 0.0], 1), ([0.3, 0.1], 2), ([0.7, 0.0], 1),
                                            ([1.0, 1.0], 1), ([0.0] * 7, 7), ([1.0, 0.0, 0.0, 1.0, 0.0], 3)])
def test_the_free_policy_uses_at_most_the_idle_cores(monkeypatch, busy, expected):
    _fake_cpu_times(monkeypatch, busy)
    assert threads.free_threads() == expected
    assert threads.choice.startswith(f"{expected} thread(s): {len(busy) - sum(busy):.1f} of {len(busy)} cores idle")


def test_the_free_policy_keeps_to_the_share_of_local_ranks(monkeypatch):
    _fake_cpu_times(monkeypatch, [0.0] * 4)
    monkeypatch.setenv("HOROVOD_LOCAL_SIZE", "2")
    assert threads.free_threads() == 2


def test_idle_cores_are_read_from_proc_stat_of_this_machine():
    idle = threads.free_cores(0.05)
    assert idle is None or 0.0 <= idle <= len(os.sched_getaffinity(0)) + 1e-9


def test_policies_in_fresh_processes():
    assert 1 <= _threads_in_fresh_process(MANTIS_THREADS="free") <= default_threads()
    assert 1 <= _threads_in_fresh_process(MANTIS_THREAD_POLICY="free") <= default_threads()
    assert _threads_in_fresh_process(MANTIS_THREAD_POLICY="free", OMP_NUM_THREADS="3") == 3  # the user's value
    assert _threads_in_fresh_process(MANTIS_THREADS="share", OMP_NUM_THREADS="3") == default_threads()


@pytest.mark.parametrize("env, message", [
    ({"MANTIS_THREADS": "two"}, "error: MANTIS_THREADS='two': give a number of threads (>= 1), 'share' or 'free'"),
    ({"MANTIS_THREADS": "0"}, "error: MANTIS_THREADS='0': give a number of threads (>= 1), 'share' or 'free'"),
    ({"MANTIS_THREAD_POLICY": "all"}, "error: MANTIS_THREAD_POLICY='all': choose one of share, free")])
def test_a_bad_thread_setting_stops_with_one_line(env, message):
    out = _fresh_process(**env)
    assert out.returncode == 1 and out.stderr.strip() == message


@pytest.mark.parametrize("script", ["predict", "evaluate"])
def test_inference_entry_points_choose_the_free_policy(script):
    code = f"import {script}, nn; print(nn.threads.choice)"
    clean = {k: v for k, v in os.environ.items()
             if k not in ("OMP_NUM_THREADS", "MANTIS_THREADS", "MANTIS_AUTO_THREADS", threads.POLICY)}
    out = subprocess.run([sys.executable, "-c", code], env=clean, capture_output=True, text=True, check=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    assert "cores idle at start" in out.stdout or "idle cores unknown" in out.stdout


FORWARD = """
import hashlib, nn, mxnet as mx, numpy as np
from mantis import get_model
for name in {names}:
    mx.random.seed(0)
    net = get_model(name)
    net.initialize(mx.init.Xavier())
    net.hybridize()
    rng = np.random.default_rng(0)
    x1, x2 = (mx.nd.array(rng.normal(size=(2, 3, 96, 80))) for _ in range(2))
    print(name, hashlib.sha256(b"".join(o.asnumpy().tobytes() for o in net(x1, x2))).hexdigest())
"""


def test_a_forward_pass_gives_the_same_bits_at_one_and_two_threads():
    """What lets inference take the threads that are free: its outputs do not depend on their number."""
    names = ["fractalresnet_tiny", "ceecnetv1_tiny", "ceecnetv2_tiny"]
    code = FORWARD.format(names=names)
    root = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
    outputs = [subprocess.run([sys.executable, "-c", code], env=dict(os.environ, MANTIS_THREADS=str(n)),
                              capture_output=True, text=True, check=True, cwd=root).stdout for n in (1, 2)]
    assert outputs[0] == outputs[1] and len(outputs[0].splitlines()) == len(names)
