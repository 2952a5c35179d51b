"""Small tensor helpers shared by the blocks."""
from __future__ import annotations


def channel_concat(F, *xs):
    """Concatenate ``(B, C_i, H, W)`` tensors along channels: ``(B, sum C_i, H, W)``.

    Same result as ``F.concat(*xs, dim=1)``, computed on ``(B, C_i, H*W)`` views and reshaped back.
    MXNet 1.9.1's MKLDNN Concat backward on 4-D arrays in blocked layouts crashes the process
    (SIGFPE) or fails with "could not construct a sub-memory" for some channel counts (e.g. two
    8-channel inputs into a 16- or 32-filter convolution, or 12-channel inputs; seen on AVX2 CPUs).
    The 3-D views reach Concat in the default layout, where its backward is sound.
    """
    flat = [x.reshape((0, 0, -1)) for x in xs]
    return F.reshape_like(F.concat(*flat, dim=1), xs[0], lhs_begin=2, lhs_end=None, rhs_begin=2, rhs_end=None)
