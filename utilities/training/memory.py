"""Lower peak memory of CPU training at some cost in time: ``train.memory_saving``.

MXNet 1.9 allocates CPU tensors with plain ``malloc``. glibc serves a block above its mmap threshold
by a mapping of its own, handed back to the system on ``free``, but raises that threshold (up to
32 MiB) every time such a block is freed; after the first training step nearly every activation of a
D6nf32 network (a few MiB each) then comes from the heap, where freed blocks stay resident and
fragment, so the peak resident size grows above the tensors alive at once. A fixed threshold keeps
every block from 128 KiB on in its own mapping: peak RSS of a D6nf32 step measured 12-24 % lower, for
1.3-1.75x the time per step (page faults on every new tensor; BENCHMARKS.md), hence an option.

``MXNET_BACKWARD_DO_MIRROR`` (recomputation of cheap activations) is not an alternative here: MXNet
1.9 applies it to symbolic executors only, not to Gluon's hybridized graphs, and even the same graph run
as an executor recomputed without a lower peak (measured, BENCHMARKS.md).
"""
from __future__ import annotations

import ctypes
import ctypes.util

#: glibc's ``mallopt`` parameter number for the mmap threshold (``M_MMAP_THRESHOLD``)
M_MMAP_THRESHOLD = -3
#: allocations of at least this many bytes get a mapping of their own under :func:`return_freed_memory`
THRESHOLD = 128 * 1024


def return_freed_memory(threshold: int = THRESHOLD) -> bool:
    """Fix glibc's mmap threshold at ``threshold`` bytes for this process (see the module docstring).

    Returns False, changing nothing, where the C library has no ``mallopt`` (not glibc).
    """
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    mallopt = getattr(libc, "mallopt", None)
    return bool(mallopt and mallopt(M_MMAP_THRESHOLD, int(threshold)) == 1)
