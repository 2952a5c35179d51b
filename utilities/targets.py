"""Training targets of the conditioned multitask head: segmentation, boundary and distance transform.

The paper's conditioned multitask head (Section 6.3, Fig. 7) predicts, for every class, the distance
transform of the class mask, then its boundaries, then the segmentation, as the ResUNet-a head does;
the targets follow ResUNet-a (Diakogiannis et al. 2020): a one-hot mask, a boundary mask and the
Euclidean distance transform normalised to [0, 1], each for every class (class 0 = no change,
class 1 = change).

Definitions used here, for each class ``c`` with mask ``M_c`` (pixels of class ``c``):

- **segmentation**: ``M_c`` (one-hot over the classes);
- **boundary**: the inner contour of ``M_c``, i.e. ``M_c`` minus its erosion with the 3x3 cross
  (``cv2.erode``): a pixel of class ``c`` is a boundary pixel when one of its 4 neighbours belongs to
  another class. This is a 1-pixel wide, 8-connected contour of every connected region (a filled
  s x s square has ``4 (s - 1)`` boundary pixels), the same pixels ``cv2.findContours`` traces;
- **distance**: ``cv2.distanceTransform(M_c, DIST_L2, DIST_MASK_PRECISE)`` (exact Euclidean distance
  of every pixel of class ``c`` to the nearest pixel of another class; 0 outside ``M_c``) divided by
  its maximum over the chip, so that it lies in [0, 1]; all zero when the class is absent.

The chip's edge is not treated as an object edge: a region that touches the edge of the chip goes on
outside it, so its pixels on the edge are not boundary pixels and distances are measured to other
classes only. A class that fills the whole chip therefore has no boundary and distance 1 everywhere
(no pixel of another class is in sight).
"""
from __future__ import annotations

from typing import Tuple

import cv2
import numpy as np

_CROSS = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))


def make_targets(mask: np.ndarray, classes: int = 2) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One-hot segmentation, boundary and normalised distance transform of a label mask.

    Parameters
    ----------
    mask : numpy.ndarray
        ``(H, W)`` class index per pixel, in ``0 .. classes - 1`` (binary change: 0/1). Float masks
        (e.g. after interpolating augmentation) are rounded to the nearest class.
    classes : int
        Number of classes.

    Returns
    -------
    segm, bound, dist : numpy.ndarray
        float32 ``(classes, H, W)`` each, values in [0, 1] (see the module docstring for the
        definitions).
    """
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
        bound[c] = region - cv2.erode(region, _CROSS)
        distance = cv2.distanceTransform(region, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
        if region.all():
            dist[c] = 1.0
        elif region.any():
            dist[c] = distance / distance.max()
    return segm, bound, dist
