"""Small tensor helpers shared by the blocks."""
from __future__ import annotations


def channel_concat(F, *xs):
    """Concatenate equally shaped ``(B, C, H, W)`` tensors along channels: ``(B, n*C, H, W)``.

    Same result as ``F.concat(*xs, dim=1)``, computed as ``stack`` + ``reshape``. MXNet 1.9.1's
    MKLDNN Concat backward crashes the process (SIGFPE) or fails with "could not construct a
    sub-memory" for some channel counts (e.g. two 8-channel inputs into a 16- or 32-filter
    convolution, or 12-channel inputs; seen on AVX2 CPUs); stack's backward does not use it.
    """
    return F.stack(*xs, axis=1).reshape((0, -3, -2))
