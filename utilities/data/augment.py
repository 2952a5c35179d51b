"""Training augmentation for change detection (paper Section 8.3, "Data preprocessing and augmentation").

Section 8.3 reuses the semantic-segmentation augmentation of Diakogiannis et al. (2020) -- random rotations
about a random centre with a random zoom in/out, random brightness and random polygon shadows -- and adds two
transformations specific to change detection, each "implemented at a rate of 50%":

* time reversal: "reversing the order of the input images should not affect the binary change mask";
* random identity: "we randomly gave as input one of the two images, i.e. null change mask".

:class:`ChangeAugmentation` applies them to one training triplet ``(img1, img2, mask)`` following a *policy*
(:data:`POLICIES`): a sequence of draws, each of which applies at most one operation (:data:`OPERATIONS`) with
the given probabilities. Two policies:

``paper`` (default): every operation has its own independent draw, in this order:

1. rotation + zoom (geometric: one affine matrix for both dates and the mask),
2. flip (off by default: the paper lists no flips),
3. brightness (radiometric, each date independently: a nuisance between acquisitions),
4. polygon shadow (radiometric, on one randomly chosen date; shadows are not change, the mask is kept),
5. time reversal (swap the dates, keep the mask), 50 %,
6. random identity (both inputs become one of the dates, the mask becomes all zeros), 50 %.

Identity comes last so that an identity pair is exactly two copies of one (augmented) image, i.e. a true
null change; time reversal before it has no effect on such a pair, which is harmless.

``authors``: the rates and operations of the authors' public code (feevos/ceecnet). One draw applies at most
one image operation: a flip of rows, columns or both (10 % each, 30 % in all), brightness of date 1 (10 %), a
shadow on date 1 (10 %) or rotation + zoom (50 %); then one draw applies time reversal (25 %), random identity
(25 %) or neither. Their augmentor cycles through a list of operations -- the three reflections, brightness,
shadow and five rotation entries -- one per sample, and acts on the stacked dates with brightness and shadow on
the first three bands, i.e. date 1; their data set draws 50 % between a time-reversal and an identity branch,
then 50 % within each. Here the operation is drawn at random with the same rates (the same per sample when
samples are shuffled, without depending on the order a loader worker sees them in). The operations' forms:

* rotation by an angle uniform in [-85, 85] degrees about a centre uniform over the chip, zoom uniform in
  [0.75, 1.25];
* brightness: their lightness (HLS) of the RGB bands times a factor uniform in [0.5, 1.5]; here every band
  times that factor (the same for pixels whose lightness stays below half the range, and defined for any
  number of bands and dtype);
* shadow: their lightness halved inside the convex hull of 3-14 points uniform over the chip; here every band
  halved inside such a hull.

Kept from mantis in both policies: the mask is warped with nearest-neighbour interpolation and the targets are
computed after augmentation (:mod:`utilities.data.targets`), where the authors' code interpolates the one-hot mask
and its precomputed targets (soft labels); warps reflect at the borders in both.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import cv2
import numpy as np

Seed = Union[None, int, np.random.SeedSequence, np.random.Generator]
Triplet = Tuple[np.ndarray, np.ndarray, np.ndarray]
#: one draw of a policy: (operation, probability) pairs of which at most one is applied
Draw = Tuple[Tuple[str, float], ...]

#: axes flipped by the flip operation (rows, columns, both), chosen uniformly
FLIP_AXES = ((0,), (1,), (0, 1))


def _check_probability(name: str, p: float) -> float:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"ChangeAugmentation: {name} must be a probability in [0, 1], got {p!r}")
    return float(p)


def _check_range(name: str, bounds: Tuple[float, float], low: float, high: float) -> Tuple[float, float]:
    a, b = (float(v) for v in bounds)
    if not low < a <= b < high:
        raise ValueError(f"ChangeAugmentation: {name} must satisfy {low} < min <= max < {high}, got {bounds!r}")
    return a, b


def _check_choice(name: str, value: str, table: Dict[str, Any]) -> str:
    if value not in table:
        raise ValueError(f"ChangeAugmentation: {name} must be one of {', '.join(table)}, got {value!r}")
    return value


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


def star_polygon(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """3-8 vertices about a random centre of the image, radii 10-40 % of the shorter side, at angles spread
    evenly with a random offset and a jitter of a quarter step: consecutive vertices are less than 180 degrees
    apart, so the polygon contains its centre (star-shaped about it) and a shadow is never empty."""
    n_vertices = int(rng.integers(3, 9))
    centre = rng.uniform((0, 0), (width, height))
    steps = np.arange(n_vertices) + rng.uniform(-0.25, 0.25, n_vertices)
    angles = rng.uniform(0, 2 * np.pi) + steps * (2 * np.pi / n_vertices)
    radii = rng.uniform(0.1, 0.4, n_vertices) * min(height, width)
    vertices = centre + radii[:, None] * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    return np.rint(vertices).astype(np.int32)


def hull_polygon(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """The convex hull of 3-14 points uniform over the image."""
    points = rng.uniform((0, 0), (width, height), (int(rng.integers(3, 15)), 2))
    return cv2.convexHull(np.floor(points).astype(np.int32))[:, 0]


#: shadow polygon shapes: ``(rng, height, width) -> int32 (n, 2) vertices (x, y)``
SHADOW_POLYGONS: Dict[str, Callable[[np.random.Generator, int, int], np.ndarray]] = {
    "star": star_polygon, "hull": hull_polygon}

#: zoom factor distributions on ``[min, max]``: log-uniform (zooming in and out equally likely) or uniform
ZOOM_DRAWS: Dict[str, Callable[[np.random.Generator, float, float], float]] = {
    "log-uniform": lambda rng, low, high: float(np.exp(rng.uniform(np.log(low), np.log(high)))),
    "uniform": lambda rng, low, high: float(rng.uniform(low, high)),
}


@dataclass(frozen=True)
class Policy:
    """A policy: its draws (from the augmentation's probabilities) and its default parameters."""

    draws: Callable[["ChangeAugmentation"], List[Draw]]
    defaults: Dict[str, Any]


def _paper_draws(a: ChangeAugmentation) -> List[Draw]:
    return [(("rotate_zoom", a.p_rotate),), (("flip", a.p_flip),), (("brightness_date1", a.p_brightness),),
            (("brightness_date2", a.p_brightness),),
            (("shadow_date1", a.p_shadow / 2), ("shadow_date2", a.p_shadow / 2)),
            (("time_reversal", a.p_time_reversal),), (("identity", a.p_identity),)]


def _authors_draws(a: ChangeAugmentation) -> List[Draw]:
    return [(("flip", a.p_flip), ("brightness_date1", a.p_brightness), ("shadow_date1", a.p_shadow),
             ("rotate_zoom", a.p_rotate)),
            (("time_reversal", a.p_time_reversal), ("identity", a.p_identity))]


#: the policies by name (see the module docstring); every parameter of :class:`ChangeAugmentation` has a default
POLICIES: Dict[str, Policy] = {
    "paper": Policy(_paper_draws, dict(
        p_rotate=0.5, p_flip=0.0, p_brightness=0.5, p_shadow=0.25, p_time_reversal=0.5, p_identity=0.5,
        max_angle=180.0, zoom_range=(0.8, 1.25), zoom_draw="log-uniform", brightness_range=(0.8, 1.2),
        shadow_range=(0.4, 0.8), shadow_polygon="star")),
    "authors": Policy(_authors_draws, dict(
        p_rotate=0.5, p_flip=0.3, p_brightness=0.1, p_shadow=0.1, p_time_reversal=0.25, p_identity=0.25,
        max_angle=85.0, zoom_range=(0.75, 1.25), zoom_draw="uniform", brightness_range=(0.5, 1.5),
        shadow_range=(0.5, 0.5), shadow_polygon="hull")),
}

#: the operations a draw can apply, by name: ``(augmentation, triplet) -> triplet``
OPERATIONS: Dict[str, Callable[["ChangeAugmentation", Triplet], Triplet]] = {
    "rotate_zoom": lambda a, t: a.rotate_zoom(*t),
    "flip": lambda a, t: a.flip(*t),
    "brightness_date1": lambda a, t: (a.brightness(t[0]), t[1], t[2]),
    "brightness_date2": lambda a, t: (t[0], a.brightness(t[1]), t[2]),
    "shadow_date1": lambda a, t: (a.shadow(t[0]), t[1], t[2]),
    "shadow_date2": lambda a, t: (t[0], a.shadow(t[1]), t[2]),
    "time_reversal": lambda a, t: (t[1], t[0], t[2]),
    "identity": lambda a, t: a.identity(*t),
}


class ChangeAugmentation:
    """Random augmentation of a change-detection triplet, after paper Section 8.3.

    Call with ``(img1, img2, mask)``: ``img1``/``img2`` are the two dates, HWC arrays of the same shape and dtype
    (uint8, uint16, float32, ...; any number of bands), ``mask`` is the HW uint8 change mask with values {0, 1}.
    Returns a new triplet with the same shapes and dtypes; the inputs are never modified in place (an array no
    transform touched may be returned as is). The operations:

    * **rotation/zoom**: rotation by an angle uniform in ``[-max_angle, max_angle]`` degrees about a centre
      uniform over the image, with a zoom drawn from ``zoom_range`` (``zoom_draw``). One matrix
      (``cv2.getRotationMatrix2D``) warps both dates (bilinear) and the mask (nearest neighbour, so it stays
      binary), all with ``BORDER_REFLECT_101`` so no empty corners appear.
    * **flip**: rows, columns or both (one of the three, uniformly), of both dates and the mask.
    * **brightness** (of one date): the date is multiplied by a gain uniform in ``brightness_range``. A gain is
      scale-free, so it suits any dtype and radiometric scaling; integer images are rounded and clipped to their
      dtype's range.
    * **polygon shadow** (on one date): the pixels inside a random polygon (``shadow_polygon``, drawn with
      ``cv2.fillPoly``) are multiplied by a factor uniform in ``shadow_range`` (< 1). The mask is unchanged: a
      shadow is not a change. The darkening assumes non-negative radiometry (not standardised, zero-mean inputs).
    * **time reversal**: the dates are swapped, the change mask is kept.
    * **random identity**: both inputs become copies of one date (chosen at random) and the mask becomes all
      zeros.

    ``policy`` says how they combine and gives the defaults of every other parameter (``None``: the policy's).
    ``paper``: independent draws; ``p_time_reversal = p_identity = 0.5`` are the paper's ("implemented at a
    rate of 50%"). The paper gives no rate for the others; ``p_rotate = p_brightness = 0.5`` keep half of the
    samples at the original geometry/radiometry (no resampling blur), ``p_shadow = 0.25`` is lower because a
    shadow is a strong local edit that should stay an occasional nuisance. ``authors``: one image operation
    per sample and time reversal / identity exclusive, at the rates of the authors' code (module docstring);
    the probabilities within each of its draws must sum to at most 1.

    Parameters
    ----------
    policy : str
        ``paper`` or ``authors`` (:data:`POLICIES`).
    p_rotate, p_flip, p_brightness, p_shadow, p_time_reversal, p_identity : float, optional
        Probabilities of the operations. ``paper``: ``p_brightness`` is drawn for each date and ``p_shadow``
        shadows one of the dates; ``authors``: brightness and shadow act on date 1.
    max_angle : float, optional
        Largest rotation angle in degrees (``paper``: 180, any orientation, overhead imagery has no
        preferred one; ``authors``: 85).
    zoom_range : (float, float), optional
        Smallest and largest zoom factor (> 1 zooms in).
    zoom_draw : str, optional
        ``log-uniform`` (``paper``: zooming in and out equally likely) or ``uniform`` (``authors``).
    brightness_range : (float, float), optional
        Range of the brightness gain.
    shadow_range : (float, float), optional
        Range of the factor that multiplies the pixels inside a shadow polygon (< 1).
    shadow_polygon : str, optional
        ``star`` (``paper``: 3-8 vertices around a random centre that they enclose, radius 10-40 % of the
        shorter image side) or
        ``hull`` (``authors``: convex hull of 3-14 random points).
    seed : None, int, SeedSequence or Generator
        Seed of the ``numpy.random.Generator`` that draws every random choice (same seed, same outputs). Give
        each data-loader worker / Horovod rank its own seed, or they all draw the same augmentations.
    """

    def __init__(self, policy: str = "paper", *, p_rotate: Optional[float] = None, p_flip: Optional[float] = None,
                 p_brightness: Optional[float] = None, p_shadow: Optional[float] = None,
                 p_time_reversal: Optional[float] = None, p_identity: Optional[float] = None,
                 max_angle: Optional[float] = None, zoom_range: Optional[Tuple[float, float]] = None,
                 zoom_draw: Optional[str] = None, brightness_range: Optional[Tuple[float, float]] = None,
                 shadow_range: Optional[Tuple[float, float]] = None, shadow_polygon: Optional[str] = None,
                 seed: Seed = None) -> None:
        self.policy = _check_choice("policy", policy, POLICIES)
        given = dict(p_rotate=p_rotate, p_flip=p_flip, p_brightness=p_brightness, p_shadow=p_shadow,
                     p_time_reversal=p_time_reversal, p_identity=p_identity, max_angle=max_angle,
                     zoom_range=zoom_range, zoom_draw=zoom_draw, brightness_range=brightness_range,
                     shadow_range=shadow_range, shadow_polygon=shadow_polygon)
        value = {name: POLICIES[policy].defaults[name] if v is None else v for name, v in given.items()}
        for name in ("p_rotate", "p_flip", "p_brightness", "p_shadow", "p_time_reversal", "p_identity"):
            setattr(self, name, _check_probability(name, value[name]))
        if not 0.0 <= value["max_angle"] <= 180.0:
            raise ValueError(f"ChangeAugmentation: max_angle must be in [0, 180] degrees, got {value['max_angle']!r}")
        self.max_angle = float(value["max_angle"])
        self.zoom_range = _check_range("zoom_range", value["zoom_range"], 0.0, math.inf)
        self.zoom_draw = _check_choice("zoom_draw", value["zoom_draw"], ZOOM_DRAWS)
        self.brightness_range = _check_range("brightness_range", value["brightness_range"], 0.0, math.inf)
        self.shadow_range = _check_range("shadow_range", value["shadow_range"], 0.0, 1.0)
        self.shadow_polygon = _check_choice("shadow_polygon", value["shadow_polygon"], SHADOW_POLYGONS)
        self.draws = POLICIES[policy].draws(self)
        for draw in self.draws:
            total = sum(p for _, p in draw)
            if total > 1.0 + 1e-9:
                raise ValueError(f"ChangeAugmentation: policy {policy!r} applies at most one of "
                                 f"{', '.join(name for name, _ in draw)}; their probabilities sum to {total:g} > 1")
        self.rng = np.random.default_rng(seed)

    def __repr__(self) -> str:
        names = ("p_rotate", "p_flip", "p_brightness", "p_shadow", "p_time_reversal", "p_identity", "max_angle",
                 "zoom_range", "zoom_draw", "brightness_range", "shadow_range", "shadow_polygon")
        return f"{type(self).__name__}(policy={self.policy!r}, " + ", ".join(
            f"{name}={getattr(self, name)!r}" for name in names) + ")"

    def __call__(self, img1: np.ndarray, img2: np.ndarray, mask: np.ndarray) -> Triplet:
        """Augment one triplet; see the module docstring for the policies."""
        if img1.ndim != 3 or img1.shape != img2.shape or img1.dtype != img2.dtype:
            raise ValueError(f"ChangeAugmentation: img1 and img2 must be HWC arrays of one shape and dtype, got "
                             f"{img1.shape} {img1.dtype} and {img2.shape} {img2.dtype}")
        if mask.shape != img1.shape[:2]:
            raise ValueError(f"ChangeAugmentation: mask must have shape {img1.shape[:2]}, got {mask.shape}")
        triplet = (img1, img2, mask)
        for name in self.draw_operations():
            triplet = OPERATIONS[name](self, triplet)
        return triplet

    def draw_operations(self) -> List[str]:
        """Draw the operations of one sample, in the order they apply (one uniform number per draw)."""
        chosen = []
        for draw in self.draws:
            u = self.rng.random()
            for name, p in draw:
                if u < p:
                    chosen.append(name)
                    break
                u -= p
        return chosen

    def rotate_zoom(self, img1: np.ndarray, img2: np.ndarray, mask: np.ndarray) -> Triplet:
        """Rotate about a random centre with a random zoom; one matrix for both dates and the mask."""
        height, width = mask.shape
        centre = (float(self.rng.uniform(0, width - 1)), float(self.rng.uniform(0, height - 1)))
        angle = float(self.rng.uniform(-self.max_angle, self.max_angle))
        zoom = ZOOM_DRAWS[self.zoom_draw](self.rng, *self.zoom_range)
        matrix = cv2.getRotationMatrix2D(centre, angle, zoom)
        return (_warp(img1, matrix, cv2.INTER_LINEAR), _warp(img2, matrix, cv2.INTER_LINEAR),
                _warp(mask, matrix, cv2.INTER_NEAREST))

    def flip(self, img1: np.ndarray, img2: np.ndarray, mask: np.ndarray) -> Triplet:
        """Flip rows, columns or both (chosen uniformly) of both dates and the mask."""
        axes = FLIP_AXES[int(self.rng.integers(len(FLIP_AXES)))]
        return tuple(np.ascontiguousarray(np.flip(a, axis=axes)) for a in (img1, img2, mask))

    def brightness(self, img: np.ndarray) -> np.ndarray:
        """Multiply one date by a random gain from ``brightness_range``."""
        return _scale(img, self.rng.uniform(*self.brightness_range))

    def shadow(self, img: np.ndarray) -> np.ndarray:
        """Darken the inside of one random polygon (``shadow_polygon``) of one date."""
        height, width = img.shape[:2]
        inside = np.zeros((height, width), np.uint8)
        cv2.fillPoly(inside, [SHADOW_POLYGONS[self.shadow_polygon](self.rng, height, width)], 1)
        factor = np.where(inside.astype(bool), self.rng.uniform(*self.shadow_range), 1.0)
        return _scale(img, factor[:, :, None])

    def identity(self, img1: np.ndarray, img2: np.ndarray, mask: np.ndarray) -> Triplet:
        """Both inputs become copies of one date (chosen at random), the mask all zeros."""
        kept = img1 if self.rng.random() < 0.5 else img2
        return kept, kept.copy(), np.zeros_like(mask)

