"""OpenMP threads for MXNet, chosen before MXNet loads.

MXNet 1.9 reads ``OMP_NUM_THREADS`` once, when its library loads, and on these machines otherwise
runs one thread. Importing :mod:`nn` (which every mantis entry point does first) sets it, unless the
user already did, by one of two policies:

- ``share`` (training's default): the cores this process may use divided by the processes sharing the
  node (``HOROVOD_LOCAL_SIZE`` under horovodrun, ``SLURM_NTASKS_PER_NODE`` under srun), at least 1. The
  count does not depend on the load, and training's bits depend on the count (oneDNN's weight gradients
  sum over threads), so a run repeats bit for bit, idle or busy.
- ``free`` (``predict.py`` and ``evaluate.py``): that share, but no more threads than cores that were idle
  over a fifth of a second at start (``/proc/stat``, the cores of this process's CPU set; at least 1). An
  OpenMP thread on a core another process keeps busy makes every parallel region wait for it: beside one
  busy process a 2-thread step of FracTAL ResNet D6nf32 took 2.7x its idle time and 1.9x the 1-thread step
  (BENCHMARKS.md). A forward pass gives the same bits at any thread count, so inference loses nothing.

``MANTIS_THREADS`` overrides both: a number, ``share`` or ``free``. An entry point chooses its default by
setting ``MANTIS_THREAD_POLICY`` before it imports :mod:`nn`.
"""
from __future__ import annotations

import os
import time
from typing import Dict, List, Optional

#: marks a value of OMP_NUM_THREADS that :func:`configure_threads` chose (not the user)
_AUTO = "MANTIS_AUTO_THREADS"
#: the policy of an entry point (``share`` when unset)
POLICY = "MANTIS_THREAD_POLICY"
POLICIES = ("share", "free")
#: seconds over which ``free`` counts the idle cores
SAMPLE_SECONDS = 0.2
#: how the last :func:`configure_threads` chose, for the entry points' reports
choice = ""
#: the threads this process's MXNet runs (chosen when :mod:`nn` was first imported)
count = 0


def _cores() -> List[int]:
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))


def default_threads() -> int:
    """Cores available to this process divided by the local ranks sharing them (>= 1)."""
    local = os.environ.get("HOROVOD_LOCAL_SIZE") or os.environ.get("OMPI_COMM_WORLD_LOCAL_SIZE") \
        or os.environ.get("SLURM_NTASKS_PER_NODE") or "1"
    try:
        local_ranks = max(int(local.split("(")[0]), 1)
    except ValueError:
        local_ranks = 1
    return max(len(_cores()) // local_ranks, 1)


def _cpu_times() -> Dict[int, List[int]]:
    """Per CPU number, its (idle + iowait, total) jiffies from /proc/stat."""
    times = {}
    with open("/proc/stat") as stat:
        for line in stat:
            name, *fields = line.split()
            if name.startswith("cpu") and name[3:].isdigit():
                values = [int(v) for v in fields[:8]]  # user nice system idle iowait irq softirq steal
                times[int(name[3:])] = [values[3] + values[4], sum(values)]
    return times


def free_cores(seconds: float = SAMPLE_SECONDS) -> Optional[float]:
    """Idle cores of this process's CPU set over ``seconds`` (a fraction: 1.4 = one idle core and 40 % of
    another), or None where ``/proc/stat`` cannot be read."""
    try:
        before = _cpu_times()
        time.sleep(seconds)
        after = _cpu_times()
    except (OSError, ValueError, IndexError):
        return None
    idle = 0.0
    for cpu in _cores():
        if cpu in before and cpu in after and after[cpu][1] > before[cpu][1]:
            idle += (after[cpu][0] - before[cpu][0]) / (after[cpu][1] - before[cpu][1])
    return idle


def free_threads(seconds: float = SAMPLE_SECONDS) -> int:
    """The ``free`` policy's count: :func:`default_threads`, but at most the idle cores (rounded, >= 1)."""
    global choice
    share, idle = default_threads(), free_cores(seconds)
    if idle is None:
        choice = f"{share} thread(s): this process's share of the cores (idle cores unknown)"
        return share
    threads = max(1, min(share, int(idle + 0.5)))
    choice = f"{threads} thread(s): {idle:.1f} of {len(_cores())} cores idle at start"
    return threads


def configure_threads() -> int:
    """Set ``OMP_NUM_THREADS`` (if unset) from ``MANTIS_THREADS`` or the entry point's policy; return it.

    A value this function set in a parent process (inherited, e.g. by the ranks that ``horovodrun``
    starts from a process that imported :mod:`nn`) is recomputed for this process, not kept: only a
    value the user set is left alone.

    Raises
    ------
    SystemExit
        ``MANTIS_THREADS`` or ``MANTIS_THREAD_POLICY`` is neither a positive number nor a policy (one line).
    """
    global choice
    requested = os.environ.get("MANTIS_THREADS")
    if requested is not None and requested not in POLICIES:
        if not requested.isdigit() or int(requested) < 1:
            raise SystemExit(f"error: MANTIS_THREADS={requested!r}: give a number of threads (>= 1), 'share' or "
                             "'free'")
        os.environ["OMP_NUM_THREADS"] = requested
        choice = f"{requested} thread(s): MANTIS_THREADS"
        return int(requested)
    if os.environ.get("OMP_NUM_THREADS") == os.environ.get(_AUTO, "") or requested is not None:
        os.environ.pop("OMP_NUM_THREADS", None)
    if "OMP_NUM_THREADS" in os.environ:
        choice = f"{os.environ['OMP_NUM_THREADS']} thread(s): OMP_NUM_THREADS"
        return int(os.environ["OMP_NUM_THREADS"])
    policy = requested or os.environ.get(POLICY, "share")
    if policy not in POLICIES:
        raise SystemExit(f"error: {POLICY}={policy!r}: choose one of {', '.join(POLICIES)}")
    if policy == "free":
        threads = free_threads()
    else:
        threads = default_threads()
        choice = f"{threads} thread(s): this process's share of the cores"
    os.environ["OMP_NUM_THREADS"] = os.environ[_AUTO] = str(threads)
    return threads


count = configure_threads()
