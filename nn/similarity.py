"""Fractal Tanimoto similarity (paper Section 3, eqs 1-8; Listing 1).

For fuzzy binary vectors ``p, l`` with elements in [0, 1] the fractal Tanimoto of depth ``d`` is
(eq. 5)::

    T^d(p, l) = p.l / (2^d (p.p + l.l) - (2^(d+1) - 1) p.l)

Writing ``D = p.p + l.l - 2 p.l = sum (p - l)^2`` the denominator is ``2^d D + p.l``: the form
computed here. It is the same expression rearranged (no cancellation between two large terms, and
``D`` is shared with the complement, since ``(1-p) - (1-l) = l - p``). With a smoothing ``s``::

    T^d(p, l) = (p.l + s) / (2^d D + p.l + s)

so that empty masks (p = l = 0) give T = 1 with finite gradients, and T(p, p) = 1 exactly, as in
the authors' public code. The complement form (eq. 7) and the depth average (eq. 8) are::

    FT^d  = (T^d(p, l) + T^d(1-p, 1-l)) / 2
    <FT>^d = (1/d) sum_{i=0}^{d-1} FT^i          (<FT>^0 := FT^0)

The dot products are sums over ``axis``: spatial axes (2, 3) give one value per channel
(the FracTAL's channel similarity, eq. 11), axis 1 gives one value per pixel (spatial similarity,
eq. 12). Reductions keep their axes so results broadcast against the inputs.
"""
from __future__ import annotations

from typing import Callable, Dict, Sequence, Tuple

from nn import kernels
from nn.norm import current_form
from nn.ops import sum_of_products

from mxnet.gluon import HybridBlock

Axis = Sequence[int]


def tanimoto_terms(F, p, l, axis: Axis = (2, 3)) -> Tuple[object, object, object]:
    """Return ``(p.l, (1-p).(1-l), sum (p-l)^2)`` summed over ``axis`` (axes kept).

    Computed in GroupNorm's form (:func:`nn.norm.current_form`): with the kernel library, the spatial
    axes (2, 3) and the channel axis (1,) of (B, C, H, W) tensors go to its fused operator
    (:func:`tanimoto_terms_kernel`); other axes, GPUs and ONNX export compose MXNet operators
    (:func:`tanimoto_terms_products`).
    """
    form = current_form() if tuple(axis) in KERNEL_AXES else "operator"
    return TANIMOTO_TERMS_FORMS[form](F, p, l, axis)


def tanimoto_terms_products(F, p, l, axis: Axis = (2, 3)) -> Tuple[object, object, object]:
    """:func:`tanimoto_terms` from MXNet operators: three :func:`nn.ops.sum_of_products`."""
    diff = p - l
    inner = sum_of_products(F, p, l, axis)
    return inner, sum_of_products(F, 1.0 - p, 1.0 - l, axis), sum_of_products(F, diff, diff, axis)


def tanimoto_terms_kernel(F, p, l, axis: Axis = (2, 3)) -> Tuple[object, object, object]:
    """:func:`tanimoto_terms` as mantis's fused CPU operator ``mantis_tanimoto_terms``
    (``nn/kernels/fractal_attention.cc``): one pass over ``p`` and ``l`` forward and one backward, no full-size
    intermediates kept for the backward pass."""
    kernels.require("tanimoto_terms")
    return tuple(F.mantis_tanimoto_terms(p, l, over=KERNEL_AXES[tuple(axis)]))


#: axes of (B, C, H, W) tensors -> what ``mantis_tanimoto_terms`` sums over
KERNEL_AXES: Dict[Tuple[int, ...], str] = {(2, 3): "pixels", (1,): "channels"}
#: form name (:data:`nn.norm.FORMS`) -> how :func:`tanimoto_terms` computes
TANIMOTO_TERMS_FORMS: Dict[str, Callable] = {"kernel": tanimoto_terms_kernel, "operator": tanimoto_terms_products}


def _ratio(numerator, scaled_dist):
    """Eq. 5 from its sums: ``numerator / (scaled_dist + numerator)`` with ``numerator = p.l + s`` and
    ``scaled_dist = 2^d * sum (p - l)^2``."""
    return numerator / (scaled_dist + numerator)


def _scaled(dist, depth: float):
    """``2^depth * dist`` (``dist`` itself at depth 0: one graph node fewer)."""
    return dist if depth == 0 else (2.0 ** depth) * dist


def fractal_tanimoto(F, p, l, depth: float = 0, axis: Axis = (2, 3), smooth: float = 1e-5):
    """Fractal Tanimoto ``T^d(p, l)`` of eq. 5 (no complement). ``depth`` may be any real >= 0."""
    diff = p - l
    return _ratio(sum_of_products(F, p, l, axis) + smooth, _scaled(sum_of_products(F, diff, diff, axis), depth))


def fractal_tanimoto_complement(F, p, l, depth: float = 0, axis: Axis = (2, 3), smooth: float = 1e-5):
    """Fractal Tanimoto with complement ``FT^d(p, l)`` of eq. 7."""
    inner, inner_c, dist = tanimoto_terms(F, p, l, axis)
    scaled = _scaled(dist, depth)
    return 0.5 * (_ratio(inner + smooth, scaled) + _ratio(inner_c + smooth, scaled))


def mean_fractal_tanimoto(F, p, l, depth: int = 0, axis: Axis = (2, 3), smooth: float = 1e-5):
    """Depth-averaged fractal Tanimoto with complement ``<FT>^d`` of eq. 8 (``<FT>^0 = FT^0``).

    The smoothed numerators are computed once and shared by every depth (the FracTAL's graph has one
    such average per similarity: fewer nodes build faster)."""
    if depth < 0 or int(depth) != depth:
        raise ValueError(f"the depth of <FT>^d must be an integer >= 0, got {depth!r}")
    inner, inner_c, dist = tanimoto_terms(F, p, l, axis)
    numerator, numerator_c = inner + smooth, inner_c + smooth
    terms = max(int(depth), 1)
    total = None
    for i in range(terms):
        scaled = _scaled(dist, i)
        term = _ratio(numerator, scaled) + _ratio(numerator_c, scaled)
        total = term if total is None else total + term
    return total * (0.5 / terms)


class FTanimoto(HybridBlock):
    """``<FT>^d`` with complement between two tensors, reduced over ``axis`` (Listing 1).

    Parameters
    ----------
    depth : int
        ``d`` of eq. 8 (the FracTAL uses 5).
    axis : sequence of int
        Axes of the dot products: ``(2, 3)`` spatial (one value per channel), ``(1,)`` channels
        (one value per pixel).
    smooth : float
        Smoothing of numerator and denominator.
    """

    def __init__(self, depth: int = 5, axis: Axis = (2, 3), smooth: float = 1e-5, **kwargs):
        super().__init__(**kwargs)
        if depth < 0 or int(depth) != depth:
            raise ValueError(f"FTanimoto depth must be an integer >= 0, got {depth!r}")
        self.depth = int(depth)
        self.axis = tuple(axis)
        self.smooth = smooth

    def hybrid_forward(self, F, p, l):
        return mean_fractal_tanimoto(F, p, l, self.depth, self.axis, self.smooth)
