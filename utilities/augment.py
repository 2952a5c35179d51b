"""Training augmentation for change detection (paper Section 8.3, "Data preprocessing and augmentation").

Section 8.3 reuses the semantic-segmentation augmentation of Diakogiannis et al. (2020) -- random rotations
about a random centre with a random zoom in/out, random brightness and random polygon shadows -- and adds two
transformations specific to change detection, each "implemented at a rate of 50%":

* time reversal: "reversing the order of the input images should not affect the binary change mask";
* random identity: "we randomly gave as input one of the two images, i.e. null change mask".

:class:`ChangeAugmentation` applies them to one training triplet ``(img1, img2, mask)`` in this fixed order:

1. rotation + zoom (geometric: one affine matrix for both dates and the mask),
2. brightness (radiometric, each date independently: a nuisance between acquisitions),
3. polygon shadow (radiometric, on one randomly chosen date; shadows are not change, the mask is kept),
4. time reversal (swap the dates, keep the mask),
5. random identity (both inputs become one of the dates, the mask becomes all zeros).

Identity comes last so that an identity pair is exactly two copies of one (augmented) image, i.e. a true
null change; time reversal before it has no effect on such a pair, which is harmless.
"""
from __future__ import annotations

import math
from typing import Tuple, Union

import cv2
import numpy as np

Seed = Union[None, int, np.random.SeedSequence, np.random.Generator]
Triplet = Tuple[np.ndarray, np.ndarray, np.ndarray]


def _check_probability(name: str, p: float) -> float:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"ChangeAugmentation: {name} must be a probability in [0, 1], got {p!r}")
    return float(p)


def _check_range(name: str, bounds: Tuple[float, float], low: float, high: float) -> Tuple[float, float]:
    a, b = (float(v) for v in bounds)
    if not low < a <= b < high:
        raise ValueError(f"ChangeAugmentation: {name} must satisfy {low} < min <= max < {high}, got {bounds!r}")
    return a, b


def _scale(img: np.ndarray, factor: Union[float, np.ndarray]) -> np.ndarray:
    """``img * factor`` in floating point, returned in ``img.dtype`` (rounded and clipped to the dtype's range)."""
    out = img.astype(np.result_type(img.dtype, np.float32)) * factor
    if np.issubdtype(img.dtype, np.integer):
        info = np.iinfo(img.dtype)
        out = np.rint(out, out=out)
    else:
        info = np.finfo(img.dtype)
    return np.clip(out, info.min, info.max).astype(img.dtype)


def _warp(array: np.ndarray, matrix: np.ndarray, interpolation: int) -> np.ndarray:
    """``cv2.warpAffine`` with reflected borders, keeping the input's shape (cv2 drops a trailing band axis of 1)."""
    height, width = array.shape[:2]
    out = cv2.warpAffine(np.ascontiguousarray(array), matrix, (width, height), flags=interpolation,
                         borderMode=cv2.BORDER_REFLECT_101)
    return out.reshape(array.shape)


class ChangeAugmentation:
    """Random augmentation of a change-detection triplet, after paper Section 8.3.

    Call with ``(img1, img2, mask)``: ``img1``/``img2`` are the two dates, HWC arrays of the same shape and dtype
    (uint8, uint16, float32, ...; any number of bands), ``mask`` is the HW uint8 change mask with values {0, 1}.
    Returns a new triplet with the same shapes and dtypes; the inputs are never modified in place (an array no
    transform touched may be returned as is). Transforms, in this order, each applied with its own probability:

    1. **rotation/zoom** (``p_rotate``): rotation by an angle uniform in ``[-max_angle, max_angle]`` degrees about
       a centre uniform over the image, with a zoom drawn log-uniformly from ``zoom_range`` (so zooming in and out
       are equally likely). One matrix (``cv2.getRotationMatrix2D``) warps both dates (bilinear) and the mask
       (nearest neighbour, so it stays binary), all with ``BORDER_REFLECT_101`` so no empty corners appear.
    2. **brightness** (``p_brightness``, per date independently): the date is multiplied by a gain uniform in
       ``brightness_range``. A gain is scale-free, so it suits any dtype and radiometric scaling; integer images
       are rounded and clipped to their dtype's range.
    3. **polygon shadow** (``p_shadow``): on one date chosen at random, the pixels inside a random star-shaped
       polygon (3-8 vertices, radius 10-40% of the shorter image side, drawn with ``cv2.fillPoly``) are multiplied
       by a factor uniform in ``shadow_range`` (< 1). The mask is unchanged: a shadow is not a change. The
       darkening assumes non-negative radiometry (not standardised, zero-mean inputs).
    4. **time reversal** (``p_time_reversal``): the dates are swapped, the change mask is kept.
    5. **random identity** (``p_identity``): both inputs become copies of one date (chosen at random) and the
       mask becomes all zeros.

    Defaults: ``p_time_reversal = p_identity = 0.5`` are the paper's ("implemented at a rate of 50%"). The paper
    gives no rate for the others; ``p_rotate = p_brightness = 0.5`` keep half of the samples at the original
    geometry/radiometry (no resampling blur), ``p_shadow = 0.25`` is lower because a shadow is a strong local
    edit that should stay an occasional nuisance.

    Parameters
    ----------
    p_rotate, p_brightness, p_shadow, p_time_reversal, p_identity : float
        Probabilities of the five transforms (``p_brightness`` is drawn separately for each date).
    max_angle : float
        Largest rotation angle in degrees (180: any orientation, overhead imagery has no preferred one).
    zoom_range : (float, float)
        Smallest and largest zoom factor (> 1 zooms in).
    brightness_range : (float, float)
        Range of the brightness gain.
    shadow_range : (float, float)
        Range of the factor that multiplies the pixels inside a shadow polygon (< 1).
    seed : None, int, SeedSequence or Generator
        Seed of the ``numpy.random.Generator`` that draws every random choice (same seed, same outputs). Give
        each data-loader worker / Horovod rank its own seed, or they all draw the same augmentations.
    """

    def __init__(self, p_rotate: float = 0.5, p_brightness: float = 0.5, p_shadow: float = 0.25,
                 p_time_reversal: float = 0.5, p_identity: float = 0.5, max_angle: float = 180.0,
                 zoom_range: Tuple[float, float] = (0.8, 1.25), brightness_range: Tuple[float, float] = (0.8, 1.2),
                 shadow_range: Tuple[float, float] = (0.4, 0.8), seed: Seed = None) -> None:
        self.p_rotate = _check_probability("p_rotate", p_rotate)
        self.p_brightness = _check_probability("p_brightness", p_brightness)
        self.p_shadow = _check_probability("p_shadow", p_shadow)
        self.p_time_reversal = _check_probability("p_time_reversal", p_time_reversal)
        self.p_identity = _check_probability("p_identity", p_identity)
        if not 0.0 <= max_angle <= 180.0:
            raise ValueError(f"ChangeAugmentation: max_angle must be in [0, 180] degrees, got {max_angle!r}")
        self.max_angle = float(max_angle)
        self.zoom_range = _check_range("zoom_range", zoom_range, 0.0, math.inf)
        self.brightness_range = _check_range("brightness_range", brightness_range, 0.0, math.inf)
        self.shadow_range = _check_range("shadow_range", shadow_range, 0.0, 1.0)
        self.rng = np.random.default_rng(seed)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(p_rotate={self.p_rotate}, p_brightness={self.p_brightness}, "
                f"p_shadow={self.p_shadow}, p_time_reversal={self.p_time_reversal}, p_identity={self.p_identity}, "
                f"max_angle={self.max_angle}, zoom_range={self.zoom_range}, "
                f"brightness_range={self.brightness_range}, shadow_range={self.shadow_range})")

    def __call__(self, img1: np.ndarray, img2: np.ndarray, mask: np.ndarray) -> Triplet:
        """Augment one triplet; see the class docstring for the transforms and their order."""
        if img1.ndim != 3 or img1.shape != img2.shape or img1.dtype != img2.dtype:
            raise ValueError(f"ChangeAugmentation: img1 and img2 must be HWC arrays of one shape and dtype, got "
                             f"{img1.shape} {img1.dtype} and {img2.shape} {img2.dtype}")
        if mask.shape != img1.shape[:2]:
            raise ValueError(f"ChangeAugmentation: mask must have shape {img1.shape[:2]}, got {mask.shape}")
        if self._happens(self.p_rotate):
            img1, img2, mask = self.rotate_zoom(img1, img2, mask)
        if self._happens(self.p_brightness):
            img1 = self.brightness(img1)
        if self._happens(self.p_brightness):
            img2 = self.brightness(img2)
        if self._happens(self.p_shadow):
            if self.rng.random() < 0.5:
                img1 = self.shadow(img1)
            else:
                img2 = self.shadow(img2)
        if self._happens(self.p_time_reversal):
            img1, img2 = img2, img1
        if self._happens(self.p_identity):
            kept = img1 if self.rng.random() < 0.5 else img2
            img1, img2, mask = kept, kept.copy(), np.zeros_like(mask)
        return img1, img2, mask

    def _happens(self, p: float) -> bool:
        return bool(self.rng.random() < p)

    def rotate_zoom(self, img1: np.ndarray, img2: np.ndarray, mask: np.ndarray) -> Triplet:
        """Rotate about a random centre with a random zoom; one matrix for both dates and the mask."""
        height, width = mask.shape
        centre = (float(self.rng.uniform(0, width - 1)), float(self.rng.uniform(0, height - 1)))
        angle = float(self.rng.uniform(-self.max_angle, self.max_angle))
        zoom = float(np.exp(self.rng.uniform(*np.log(self.zoom_range))))
        matrix = cv2.getRotationMatrix2D(centre, angle, zoom)
        return (_warp(img1, matrix, cv2.INTER_LINEAR), _warp(img2, matrix, cv2.INTER_LINEAR),
                _warp(mask, matrix, cv2.INTER_NEAREST))

    def brightness(self, img: np.ndarray) -> np.ndarray:
        """Multiply one date by a random gain from ``brightness_range``."""
        return _scale(img, self.rng.uniform(*self.brightness_range))

    def shadow(self, img: np.ndarray) -> np.ndarray:
        """Darken the inside of one random star-shaped polygon of one date."""
        height, width = img.shape[:2]
        n_vertices = int(self.rng.integers(3, 9))
        centre = self.rng.uniform((0, 0), (width, height))
        angles = np.sort(self.rng.uniform(0, 2 * np.pi, n_vertices))
        radii = self.rng.uniform(0.1, 0.4, n_vertices) * min(height, width)
        vertices = centre + radii[:, None] * np.stack([np.cos(angles), np.sin(angles)], axis=1)
        inside = np.zeros((height, width), np.uint8)
        cv2.fillPoly(inside, [np.rint(vertices).astype(np.int32)], 1)
        factor = np.where(inside.astype(bool), self.rng.uniform(*self.shadow_range), 1.0)
        return _scale(img, factor[:, :, None])
