"""Small tensor helpers shared by the blocks, in forms that are fast on MXNet 1.9's CPU backend."""
from __future__ import annotations

from typing import Callable, Dict, Sequence

from nn import kernels
from nn.norm import current_form


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


def relu(F, x):
    """``max(0, x)`` as ``Activation``: on CPU MKLDNN's vectorised, multithreaded kernel, where
    MXNet 1.9.1's ``relu`` operator runs one thread (same values and gradients)."""
    return F.Activation(x, act_type="relu")


def sigmoid(F, x):
    """``1 / (1 + exp(-x))`` as ``Activation``: on CPU MKLDNN's vectorised, multithreaded kernel, 3-5x
    faster than MXNet 1.9.1's one-thread ``sigmoid`` operator (values equal to float32 rounding)."""
    return F.Activation(x, act_type="sigmoid")


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


def upsample2x(F, x):
    """Bilinear x2 resize of the spatial axes (the paper's E operation, Listings 6-7): ``(B, C, H, W)``
    to ``(B, C, 2H, 2W)``.

    The same bilinear interpolation as ``F.contrib.BilinearResize2D(x, scale_height=2.0,
    scale_width=2.0)`` (MXNet's default ``align_corners=True``: output ``i`` samples input
    ``i (n-1) / (2n-1)``), in one of two forms (:data:`UPSAMPLE2X_FORMS`), chosen with GroupNorm's
    (:func:`nn.norm.current_form`: the kernel library on CPU-only machines where it is built, MXNet
    operators on GPUs and for ONNX export).
    """
    return UPSAMPLE2X_FORMS[current_form()](F, x)


def upsample2x_kernel(F, x):
    """:func:`upsample2x` as mantis's fused CPU operator ``mantis_upsample2x`` (``nn/kernels/upsample2x.cc``):
    4 multiply-adds per output element forward and backward, one pass over each tensor."""
    kernels.require("upsample2x")
    return F.mantis_upsample2x(x)


def upsample2x_products(F, x):
    """:func:`upsample2x` as matrix products ``A_H X A_W^T``: two passes of "swap the last two axes, then
    multiply the last axis (length n) by the (n, 2n) interpolation matrix".

    The matrix is ``BilinearResize2D``'s own weights (its resize of the n x n identity), built at run
    time from the shape, since hybridized graphs are shape-free. MXNet 1.9.1's CPU backward of that
    operator is pathologically slow with 2 OpenMP threads (4.7 s of a 13 s CEECNetV1 D6nf32 training
    step, batch 1, 256x256); transposes and matrix products have fast kernels both ways, though the dense
    matrices cost 2n multiply-adds per output element and pass where 2 are needed (19 GFLOP per CEECNet
    D6nf32 forward). ``batch_dot`` (the matrix repeated per sample), not ``dot``: the ONNX exporter warns
    on every dot.
    """
    for _ in range(2):
        x = F.transpose(x, axes=(0, 1, 3, 2))  # (B, C, m, n): the axis to resize goes last
        rows = x.reshape((0, -3, 0))  # (B, C m, n)
        index = F.contrib.arange_like(x, axis=3)
        eye = F.broadcast_equal(index.reshape((1, 1, -1, 1)), index.reshape((1, 1, 1, -1)))  # (1, 1, n, n)
        weights = F.contrib.BilinearResize2D(eye, scale_height=1.0, scale_width=2.0).reshape((-3, 0, 0))
        weights = F.BlockGrad(F.broadcast_like(weights, rows, lhs_axes=(0,), rhs_axes=(0,)))  # (B, n, 2n)
        x = F.reshape_like(F.batch_dot(rows, weights), x, lhs_begin=1, lhs_end=2, rhs_begin=1, rhs_end=3)
    return x


#: form name (:data:`nn.norm.FORMS`) -> how :func:`upsample2x` computes
UPSAMPLE2X_FORMS: Dict[str, Callable] = {"kernel": upsample2x_kernel, "operator": upsample2x_products}


def sum_of_products(F, a, b, axis: Sequence[int]):
    """``sum(a * b)`` over ``axis`` of (B, C, H, W) tensors, axes kept.

    The two reductions of the FracTAL run as batched matrix products (same sums): over the pixels,
    one row-times-column product per channel; over the channels, a row of ones times the product per
    sample. MXNet 1.9.1's ``sum`` and its backward use a slow generic CPU kernel (the FracTAL
    similarity's sums were 8-9 % of a D6nf32 training step), ``batch_dot`` and its backward do not.
    """
    axis = tuple(axis)
    if axis == (2, 3):
        per_channel = F.batch_dot(a.reshape((-3, 1, -1)), b.reshape((-3, 1, -1)), transpose_b=True)  # (BC, 1, 1)
        return F.reshape_like(per_channel, a, lhs_begin=0, lhs_end=1, rhs_begin=0, rhs_end=2)
    if axis == (1,):
        product = (a * b).reshape((0, 0, -1))                                                      # (B, C, HW)
        ones = F.BlockGrad(F.ones_like(F.slice_axis(product, axis=2, begin=0, end=1))).reshape((0, 1, -1))
        return F.reshape_like(F.batch_dot(ones, product), F.slice_axis(a, axis=1, begin=0, end=1))  # (B, 1, ...)
    return F.sum(a * b, axis=axis, keepdims=True)
