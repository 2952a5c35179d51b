"""OpenMP threads chosen before MXNet loads (nn/threads.py)."""
import os
import subprocess
import sys

from nn.threads import default_threads


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


def _threads_in_fresh_process(**env):
    code = "import nn, os; print(os.environ['OMP_NUM_THREADS'])"
    clean = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MANTIS_THREADS")}
    out = subprocess.run([sys.executable, "-c", code], env={**clean, **env}, capture_output=True, text=True,
                         check=True, cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
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
