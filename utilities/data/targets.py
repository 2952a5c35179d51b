"""Training targets of the conditioned multitask head: segmentation, boundary and distance transform.

The paper's conditioned multitask head (Section 6.3, Fig. 7) predicts, for every class, the distance
transform of the class mask, then its boundaries, then the segmentation, as the ResUNet-a head does;
the targets follow ResUNet-a (Diakogiannis et al. 2020): a one-hot mask, a boundary mask and the
Euclidean distance transform normalised to [0, 1], each for every class (class 0 = no change,
class 1 = change).

Definitions used here, for each class ``c`` with mask ``M_c`` (pixels of class ``c``):

- **segmentation**: ``M_c`` (one-hot over the classes);
- **boundary**, one of two forms (:data:`TARGET_FORMS`):

  - ``paper`` (default): the inner contour of ``M_c``, i.e. ``M_c`` minus its erosion with the 3x3
    cross (``cv2.erode``): a pixel of class ``c`` is a boundary pixel when one of its 4 neighbours
    belongs to another class. This is a 1-pixel wide, 8-connected contour of every connected region
    (a filled s x s square has ``4 (s - 1)`` boundary pixels), the same pixels ``cv2.findContours``
    traces;
  - ``authors``: the form of the authors' public code (feevos/ceecnet): the edges found by
    ``cv2.Canny`` on the 0/1 class mask (hysteresis thresholds 0 and 1, so every step between classes
    is an edge) dilated once with the 3x3 cross (``cv2.dilate``): a band about 3 pixels wide that
    straddles the class edge, the same for a class and its complement when there are two classes;

- **distance**: ``cv2.distanceTransform(M_c, DIST_L2, DIST_MASK_PRECISE)`` (exact Euclidean distance
  of every pixel of class ``c`` to the nearest pixel of another class; 0 outside ``M_c``) scaled to
  [0, 1] by its maximum over the chip (``cv2.normalize``, ``NORM_MINMAX``); all zero when the class is
  absent. Computed by OpenCV's own algorithm, not Intel IPP's (:func:`euclidean_distance`), so that a
  chip's targets are the same bytes in every run.

The chip's edge is not treated as an object edge: a region that touches the edge of the chip goes on
outside it, so its pixels on the edge are not boundary pixels and distances are measured to other
classes only. A class that fills the whole chip therefore has no boundary; its distance is 1
everywhere in the ``paper`` form (no pixel of another class is in sight) and 0 everywhere in the
``authors`` form (min-max scaling of a constant, as in the authors' code).

The ``authors`` form also quantises the distance as the authors' chipping stores it: ``uint8(100 d)``
(truncated), read back divided by 100, so every value is a multiple of 0.01 rounded down.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Tuple

import cv2
import numpy as np

_CROSS = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))


def inner_contour(region: np.ndarray) -> np.ndarray:
    """uint8 {0, 1} pixels of ``region`` (uint8 {0, 1}) with a 4-neighbour outside it."""
    return region - cv2.erode(region, _CROSS)


def canny_band(region: np.ndarray) -> np.ndarray:
    """uint8 {0, 1} Canny edges of ``region`` (uint8 {0, 1}) dilated with the 3x3 cross."""
    return cv2.dilate(cv2.Canny(region, 0, 1), _CROSS) // 255


def euclidean_distance(region: np.ndarray) -> np.ndarray:
    """float32 exact Euclidean distance of every pixel of ``region`` (uint8 {0, 1}, not all 1) to the nearest 0.

    ``cv2.distanceTransform(region, DIST_L2, DIST_MASK_PRECISE)`` with Intel IPP switched off for the call
    (``cv2.ipp.setUseIPP`` is per thread). OpenCV 4.8 hands images of fewer than 128 x 128 pixels (any size when OpenCV
    runs one thread) to IPP's ``ippiTrueDistanceTransform_8u32f_C1R``, whose result changes in the last bit
    with the address of the output array (opencv/opencv#24082): the same chip then got different distance
    targets in two runs, and training was not repeatable. OpenCV's own algorithm gives ``sqrt`` of the exact
    squared distance, correctly rounded, wherever the arrays lie.
    """
    use_ipp = cv2.ipp.useIPP()
    cv2.ipp.setUseIPP(False)
    try:
        return cv2.distanceTransform(region, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    finally:
        cv2.ipp.setUseIPP(use_ipp)


def floor_to_hundredths(distance: np.ndarray) -> np.ndarray:
    """float32 ``floor(100 d) / 100``: the authors' ``uint8(100 d)`` record of a distance in [0, 1], read back."""
    return np.floor(distance * np.float32(100)) / np.float32(100)


def _exact(distance: np.ndarray) -> np.ndarray:
    return distance


@dataclass(frozen=True)
class TargetForm:
    """How the boundary is drawn, what distance a class that fills the whole chip gets, and how the
    distance is stored."""

    boundary: Callable[[np.ndarray], np.ndarray]
    full_distance: float
    stored: Callable[[np.ndarray], np.ndarray] = _exact


#: the target forms by name (see the module docstring)
TARGET_FORMS: Dict[str, TargetForm] = {
    "paper": TargetForm(boundary=inner_contour, full_distance=1.0),
    "authors": TargetForm(boundary=canny_band, full_distance=0.0, stored=floor_to_hundredths),
}


def make_targets(mask: np.ndarray, classes: int = 2,
                 form: str = "paper") -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One-hot segmentation, boundary and normalised distance transform of a label mask.

    Parameters
    ----------
    mask : numpy.ndarray
        ``(H, W)`` class index per pixel, in ``0 .. classes - 1`` (binary change: 0/1). Float masks
        (e.g. after interpolating augmentation) are rounded to the nearest class.
    classes : int
        Number of classes.
    form : str
        Boundary and distance form, a key of :data:`TARGET_FORMS`: ``paper`` or ``authors``.

    Returns
    -------
    segm, bound, dist : numpy.ndarray
        float32 ``(classes, H, W)`` each, values in [0, 1] (see the module docstring for the
        definitions).
    """
    if form not in TARGET_FORMS:
        raise ValueError(f"make_targets: form must be one of {', '.join(TARGET_FORMS)}, got {form!r}")
    target_form = TARGET_FORMS[form]
    labels = np.asarray(mask)
    if labels.ndim != 2:
        raise ValueError(f"make_targets: expected an (H, W) mask, got shape {labels.shape}")
    if labels.dtype.kind == "f":
        labels = np.rint(labels)
    if labels.size and (labels.min() < 0 or labels.max() >= classes):
        raise ValueError(f"make_targets: mask values must lie in 0..{classes - 1}, "
                         f"got {labels.min()}..{labels.max()}")
    shape = (classes, *labels.shape)
    segm, bound, dist = (np.zeros(shape, dtype=np.float32) for _ in range(3))
    for c in range(classes):
        region = (labels == c).view(np.uint8)
        segm[c] = region
        bound[c] = target_form.boundary(region)
        if region.all():
            dist[c] = target_form.full_distance
        else:
            dist[c] = cv2.normalize(euclidean_distance(region), None, 0.0, 1.0, cv2.NORM_MINMAX)
    return segm, bound, target_form.stored(dist)
