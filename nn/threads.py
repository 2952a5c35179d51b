"""OpenMP threads for MXNet, chosen before MXNet loads.

MXNet 1.9 reads ``OMP_NUM_THREADS`` once, when its library loads, and on these machines otherwise
runs one thread. Importing :mod:`nn` (which every mantis entry point does first) sets it, unless the
user already did, to the cores this process may use divided by the processes sharing the node
(``HOROVOD_LOCAL_SIZE`` under horovodrun, ``SLURM_NTASKS_PER_NODE`` under srun), at least 1.
``MANTIS_THREADS`` overrides the computed value.
"""
from __future__ import annotations

import os

#: marks a value of OMP_NUM_THREADS that :func:`configure_threads` chose (not the user)
_AUTO = "MANTIS_AUTO_THREADS"


def default_threads() -> int:
    """Cores available to this process divided by the local ranks sharing them (>= 1)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    local = os.environ.get("HOROVOD_LOCAL_SIZE") or os.environ.get("OMPI_COMM_WORLD_LOCAL_SIZE") \
        or os.environ.get("SLURM_NTASKS_PER_NODE") or "1"
    try:
        local_ranks = max(int(local.split("(")[0]), 1)
    except ValueError:
        local_ranks = 1
    return max(cores // local_ranks, 1)


def configure_threads() -> int:
    """Set ``OMP_NUM_THREADS`` (if unset) from ``MANTIS_THREADS`` or :func:`default_threads`; return it.

    A value this function set in a parent process (inherited, e.g. by the ranks that ``horovodrun``
    starts from a process that imported :mod:`nn`) is recomputed for this process, not kept: only a
    value the user set is left alone.
    """
    if "MANTIS_THREADS" in os.environ:
        os.environ["OMP_NUM_THREADS"] = os.environ["MANTIS_THREADS"]
    elif os.environ.get("OMP_NUM_THREADS") == os.environ.get(_AUTO, ""):
        del os.environ["OMP_NUM_THREADS"]
    if "OMP_NUM_THREADS" not in os.environ:
        os.environ["OMP_NUM_THREADS"] = os.environ[_AUTO] = str(default_threads())
    return int(os.environ["OMP_NUM_THREADS"])


configure_threads()
