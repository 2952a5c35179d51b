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


def scalar_times(F, gamma, x):
    """``gamma * x`` for a one-element ``gamma`` (shape ``(1,)``) and ``x`` of shape (B, C, H, W).

    Computed as matrix products (same values): ``gamma`` repeated once per channel (``FullyConnected``
    of a column of ones), then each channel's (1, 1) factor times the channel as (1, H*W)
    (``batch_dot``). MXNet 1.9.1's CPU backward of ``broadcast_mul`` sums the gradient of ``gamma``
    with a slow generic kernel; these backwards are fast matrix products, and sum per channel first,
    which keeps the float32 sum accurate. (No ``dot``: the ONNX exporter warns on every one.)
    """
    rows = x.reshape((-3, 1, -1))                                                     # (B C, 1, H W)
    ones = F.ones_like(F.slice_axis(rows, axis=2, begin=0, end=1)).reshape((-1, 1))   # (B C, 1)
    column = F.FullyConnected(ones, gamma.reshape((1, 1)), num_hidden=1, no_bias=True)  # (B C, 1)
    return F.reshape_like(F.batch_dot(column.reshape((0, 0, 1)), rows), x)
