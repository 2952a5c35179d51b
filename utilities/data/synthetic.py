"""Synthetic very-high-resolution change-detection scenes (~0.5 m/pixel), so demos and tests need no download.

A scene is made in two steps:

1. :func:`make_layout` draws, from the seed, every object of the scene as numbers: a grid of lots (28-36 m)
   crossed by roads of constant width, and per lot a building (a rectangle or an L made of two rectangles, with
   a roof colour, a gable or flat roof style and a height for its cast shadow), a group of trees, or bare
   ground. Real changes are drawn too: some buildings are demolished (bare soil in date 2) and some empty lots
   get a new building in date 2. So are the nuisances: seasonal vegetation colours of date 2, a shift of the
   sun, a global illumination/colour change, a sub-pixel (up to 1 pixel) mis-registration and sensor noise.
2. :func:`render_rows` paints any band of rows ``[row0, row1)`` of the two dates and of the change mask. Every
   pixel is a pure function of the layout and of its global coordinates: textures are hashed or
   value-noise functions of ``(row, column)``, objects are painted by slicing their global rectangles/discs
   into the band, and the mis-registration resamples a band rendered with a margin of rows. A scene is
   therefore identical whatever the height of the bands it is rendered in, so large scenes are written strip
   by strip in bounded memory (:func:`write_geotiff_scene`), and no per-pixel Python loop is needed.

The change mask is the union of the footprints (not the shadows) of the buildings that appeared or vanished,
in the geometry of date 1. Images are RGB (band order R, G, B).

Command line::

    python -m utilities.data.synthetic levircd OUT --n-train 4 --n-val 2 --n-test 2 --size 256
    python -m utilities.data.synthetic geotiff OUT --size 4096
"""
from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, Mapping, Optional, Sequence, Tuple

import cv2
import numpy as np

STABLE, DEMOLISHED, NEW = 0, 1, 2
STRIP_ROWS = 256  # rows rendered at a time by generate_scene (any value gives the same scene)

# RGB colours (0-255): date 1 is summer, date 2 is drawn between summer and autumn (seasonal nuisance).
_SUMMER = {"grass": (92, 124, 58), "soil": (148, 126, 98), "tree": (42, 78, 40)}
_AUTUMN = {"grass": (146, 138, 84), "soil": (152, 128, 100), "tree": (112, 96, 46)}
_BARE_SOIL = (168, 142, 112)  # demolition sites
_ASPHALT = (92, 94, 98)
_MARKING = (225, 225, 220)
_SHADOW = np.array([0.40, 0.43, 0.52], np.float32)  # shadows are darker and bluish (sky light)
_ROOFS = np.array([(172, 84, 62), (140, 62, 52), (82, 82, 88), (168, 168, 162), (100, 110, 126), (190, 176, 152)],
                  np.float32)

_LOW_BIAS_1, _LOW_BIAS_2 = np.uint32(0x7FEB352D), np.uint32(0x846CA68B)
_GOLDEN = np.uint32(0x9E3779B9)


@dataclass(frozen=True)
class Layout:
    """Everything random about a scene, drawn by :func:`make_layout`; coordinates are global pixels.

    Rectangles are ``[x0, y0, x1, y1)``. Per-date quantities are indexed by date (0: date 1, 1: date 2).
    """

    height: int
    width: int
    salt: int                 # seeds the location-hashed textures
    roads_h: np.ndarray       # (n, 2) row bands [y0, y1) of horizontal roads
    roads_v: np.ndarray       # (n, 2) column bands [x0, x1) of vertical roads
    rects: np.ndarray         # (n, 4) building rectangles (an L-shaped building has two)
    status: np.ndarray        # (n,) STABLE, DEMOLISHED or NEW, per rectangle
    roof: np.ndarray          # (n, 3) roof colour
    gable: np.ndarray         # (n,) gable roof (two slopes and a ridge) or flat roof with a parapet
    elevation: np.ndarray     # (n,) building height in pixels (sets the shadow length)
    trees: np.ndarray         # (n, 4) crown centre x, y, radius, height
    sun: np.ndarray           # (2, 2) shadow offset (dx, dy) per pixel of height, per date
    colours: Tuple[Dict[str, np.ndarray], Dict[str, np.ndarray]]  # vegetation and soil colours per date
    shift: Tuple[float, float]  # (dy, dx) mis-registration of date 2, pixels
    gain: np.ndarray          # (3,) illumination gain of date 2 per band
    offset: np.ndarray        # (3,) illumination offset of date 2 per band
    noise_std: float          # sensor noise, grey levels


# ----------------------------------------------------------------------------------------------------- textures


def _mix(h: np.ndarray) -> np.ndarray:
    """The 'lowbias32' integer finaliser (C. Wellons), in place on a uint32 array."""
    h ^= h >> np.uint32(16)
    h *= _LOW_BIAS_1
    h ^= h >> np.uint32(15)
    h *= _LOW_BIAS_2
    h ^= h >> np.uint32(16)
    return h


def _hash(ys: np.ndarray, xs: np.ndarray, salt: int) -> np.ndarray:
    """uint32 hash of every (row, column) pair of the 1-D integer arrays ``ys`` and ``xs``, shape (len(ys), len(xs))."""
    hy = _mix(ys.astype(np.uint32) * _GOLDEN + np.uint32(salt & 0xFFFFFFFF))
    return _mix(xs.astype(np.uint32)[None, :] ^ hy[:, None])


def _uniform(ys: np.ndarray, xs: np.ndarray, salt: int) -> np.ndarray:
    """White noise in [0, 1), float32, a pure function of the global pixel coordinates."""
    return (_hash(ys, xs, salt) >> np.uint32(8)).astype(np.float32) * np.float32(2.0 ** -24)


def _smoothstep(t: np.ndarray) -> np.ndarray:
    return t * t * (3 - 2 * t)


def _value_noise(ys: np.ndarray, xs: np.ndarray, scale: int, salt: int) -> np.ndarray:
    """Smooth noise in [0, 1) with features of about ``scale`` pixels: hashed values on a lattice of step
    ``scale``, interpolated (smoothstep) along the columns, then along the rows."""
    gy, gx = ys // scale, xs // scale
    ty = _smoothstep((ys % scale).astype(np.float32) / np.float32(scale))[:, None]
    tx = _smoothstep((xs % scale).astype(np.float32) / np.float32(scale))
    lattice = _uniform(np.arange(gy[0], gy[-1] + 2), np.arange(gx[-1] + 2), salt)
    along_x = lattice[:, gx] * (1 - tx) + lattice[:, gx + 1] * tx
    rows = gy - gy[0]
    return along_x[rows] * (1 - ty) + along_x[rows + 1] * ty


def _fbm(ys: np.ndarray, xs: np.ndarray, scales: Sequence[int], salt: int) -> np.ndarray:
    """Sum of value noises at ``scales`` (weights halving from the first), normalised to [0, 1)."""
    weights = 0.5 ** np.arange(len(scales))
    total = sum(w * _value_noise(ys, xs, s, salt + i) for i, (w, s) in enumerate(zip(weights, scales)))
    return total / np.float32(weights.sum())


# ------------------------------------------------------------------------------------------------------- layout


def _bands(n_cells: int, start: int, cell: int, rng: np.random.Generator, road_width: int) -> np.ndarray:
    """Road bands (centred in every k-th row or column of cells) and a boolean 'is a road cell' per cell."""
    period = int(rng.integers(3, 6))
    is_road = np.arange(n_cells) % period == rng.integers(period)
    centres = start + np.flatnonzero(is_road) * cell + cell // 2
    return np.stack([centres - road_width // 2, centres - road_width // 2 + road_width], axis=1), is_road


def _buildings(x: np.ndarray, y: np.ndarray, cell: int, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """Footprints of one building per lot (top-left corners ``x``, ``y``): rectangles, or L-shapes made of two
    rectangles. Returns the (m, 4) rectangles and, per rectangle, the index of its lot."""
    n = len(x)
    margin = 4
    size = (rng.uniform(0.4, 0.75, (2, n)) * cell).astype(int)
    w, h = size
    x0 = x + rng.integers(margin, cell - w - margin + 1)
    y0 = y + rng.integers(margin, cell - h - margin + 1)
    x1, y1 = x0 + w, y0 + h
    is_l = rng.random(n) < 0.35
    cut_w = (rng.uniform(0.35, 0.6, n) * w).astype(int)
    cut_h = (rng.uniform(0.35, 0.6, n) * h).astype(int)
    cut_right, cut_bottom = rng.random((2, n)) < 0.5
    # An L is the bounding box minus one corner: a full-height part beside the cut, and the part under/over it.
    full = np.where(is_l[:, None], np.stack([np.where(cut_right, x0, x0 + cut_w), y0,
                                             np.where(cut_right, x1 - cut_w, x1), y1], axis=1),
                    np.stack([x0, y0, x1, y1], axis=1))
    wing = np.stack([np.where(cut_right, x1 - cut_w, x0), np.where(cut_bottom, y0, y0 + cut_h),
                     np.where(cut_right, x1, x0 + cut_w), np.where(cut_bottom, y1 - cut_h, y1)], axis=1)[is_l]
    return np.concatenate([full, wing]), np.concatenate([np.arange(n), np.flatnonzero(is_l)])


def _visible_fraction(rects: np.ndarray, lot: np.ndarray, n_lots: int, height: int, width: int) -> np.ndarray:
    """Fraction of the footprint of each of the ``n_lots`` lots (rectangles ``rects`` of lots ``lot``) in the image."""
    area = np.prod(rects[:, 2:] - rects[:, :2], axis=1)
    clipped = np.clip(rects, 0, [width, height, width, height])
    inside = np.prod(clipped[:, 2:] - clipped[:, :2], axis=1)
    return np.bincount(lot, inside, n_lots) / np.maximum(np.bincount(lot, area, n_lots), 1)


def _tree_groups(x: np.ndarray, y: np.ndarray, extent: np.ndarray, counts: np.ndarray,
                 rng: np.random.Generator) -> np.ndarray:
    """``counts[i]`` crowns (x, y, radius, height) with centres in the box of size ``extent`` (w, h) at
    ``x[i], y[i]``."""
    lot = np.repeat(np.arange(len(x)), counts)
    radius = rng.integers(5, 11, len(lot))
    cx = x[lot] + rng.uniform(0, 1, len(lot)) * extent[0]
    cy = y[lot] + rng.uniform(0, 1, len(lot)) * extent[1]
    height = radius * rng.uniform(1.0, 2.0, len(lot))
    return np.stack([cx, cy, radius, height], axis=1).round().astype(int)


def _sun(rng: np.random.Generator) -> np.ndarray:
    """Shadow offset per pixel of height for date 1 (random azimuth, elevation 40-60 degrees) and date 2 (the
    azimuth moved by up to 15 degrees and the length by up to 15%: a different acquisition time)."""
    azimuth = rng.uniform(0, 2 * np.pi) + np.array([0.0, rng.uniform(-1, 1) * np.pi / 12])
    length = 1 / np.tan(np.radians(rng.uniform(40, 60))) * np.array([1.0, rng.uniform(0.85, 1.15)])
    return np.stack([np.cos(azimuth), np.sin(azimuth)], axis=1) * length[:, None]


def make_layout(height: int, width: int, seed: int = 0, *, p_building: float = 0.55, p_park: float = 0.15,
                p_new: float = 0.3, p_demolish: float = 0.08, min_changes: int = 1, season: float = 0.7,
                illumination: float = 0.15, max_shift: float = 1.0, noise_std: float = 3.0) -> Layout:
    """Draw the objects, the changes and the nuisances of a ``height`` x ``width`` scene (deterministic in ``seed``).

    Parameters
    ----------
    height, width : int
        Scene size in pixels (~0.5 m each).
    seed : int
        Seed of everything random.
    p_building, p_park : float
        Probabilities that a lot holds a building or a group of trees (the others are bare/grassy ground).
    p_new, p_demolish : float
        Probabilities that an empty lot gets a new building in date 2, and that a building is demolished.
    min_changes : int
        Lower bound on the number of changed buildings visible in the scene (extra ones are drawn if the lots allow
        it; for scenes of a few lots only, a road or trees may leave none).
    season : float
        Largest fraction (0-1) of the summer-to-autumn vegetation colour change of date 2.
    illumination : float
        Largest relative change of the global brightness of date 2 (its per-band colour change is a third).
    max_shift : float
        Largest mis-registration of date 2 along each axis, in pixels.
    noise_std : float
        Standard deviation of the sensor noise of both dates, in grey levels.

    Returns
    -------
    Layout
    """
    if height < 1 or width < 1:
        raise ValueError(f"make_layout: height and width must be >= 1, got {height} x {width}")
    rng = np.random.default_rng(seed)
    cell = int(rng.integers(56, 73))
    road_width = int(rng.integers(14, 21))
    start_y, start_x = -rng.integers(cell, size=2)
    n_rows, n_cols = -(-(height - start_y) // cell), -(-(width - start_x) // cell)
    roads_h, road_row = _bands(n_rows, start_y, cell, rng, road_width)
    roads_v, road_col = _bands(n_cols, start_x, cell, rng, road_width)

    rows, cols = np.nonzero(~road_row[:, None] & ~road_col[None, :])
    lot_x, lot_y = start_x + cols * cell, start_y + rows * cell
    n_lots = len(rows)
    rects, lot = _buildings(lot_x, lot_y, cell, rng)  # a footprint on every lot; those of unbuilt lots are dropped
    visible = _visible_fraction(rects, lot, n_lots, height, width)
    kind = np.digitize(rng.random(n_lots), [p_building, p_building + p_park])  # 0 building, 1 park, 2 empty
    status = np.full(n_lots, STABLE)
    status[(kind == 0) & (rng.random(n_lots) < p_demolish)] = DEMOLISHED
    status[(kind == 2) & (rng.random(n_lots) < p_new)] = NEW
    missing = min_changes - np.count_nonzero((status != STABLE) & (visible > 0))
    if missing > 0:  # change more lots: at random among those at least half visible, else the most visible
        free = np.flatnonzero((status == STABLE) & (kind != 1) & (visible > 0))
        extra = free[np.lexsort((rng.random(len(free)), -np.minimum(visible[free], 0.5)))[:missing]]
        status[extra] = np.where(kind[extra] == 0, DEMOLISHED, NEW)
    built = (kind[lot] == 0) | (status[lot] == NEW)
    rects, lot = rects[built], lot[built]
    roof = _ROOFS[rng.integers(len(_ROOFS), size=n_lots)] * rng.uniform(0.9, 1.1, (n_lots, 1))
    gable = rng.random(n_lots) < 0.6
    elevation = rng.uniform(6, 16, n_lots)

    parks = np.flatnonzero(kind == 1)
    quiet = np.flatnonzero((kind == 2) & (status == STABLE))
    inset = 6  # crowns centred this far inside their lot
    lot_box = np.array([cell - 2 * inset, cell - 2 * inset])
    verge = (cell - road_width) // 2
    street_x = start_x + np.flatnonzero(~road_col) * cell
    street = (np.tile(street_x, len(roads_h)), np.repeat(roads_h[:, 0] - verge + verge // 4, len(street_x)))
    trees = np.concatenate([
        _tree_groups(lot_x[parks] + inset, lot_y[parks] + inset, lot_box, rng.integers(4, 12, len(parks)), rng),
        _tree_groups(lot_x[quiet] + inset, lot_y[quiet] + inset, lot_box, rng.poisson(0.7, len(quiet)), rng),
        # street trees on the verge above each horizontal road
        _tree_groups(*street, np.array([cell, verge // 2]), rng.poisson(0.8, len(street[0])), rng),
    ])

    t = rng.uniform(0.3, 1.0) * season
    summer = {k: np.array(v, np.float32) for k, v in _SUMMER.items()}
    autumn = {k: summer[k] + t * (np.array(v, np.float32) - summer[k]) for k, v in _AUTUMN.items()}
    return Layout(
        height=height, width=width, salt=int(rng.integers(2 ** 32)), roads_h=roads_h, roads_v=roads_v,
        rects=rects, status=status[lot], roof=roof[lot].astype(np.float32), gable=gable[lot],
        elevation=elevation[lot], trees=trees, sun=_sun(rng), colours=(summer, autumn),
        shift=tuple(rng.uniform(-max_shift, max_shift, 2)),
        gain=(1 + rng.uniform(-illumination, illumination) + rng.uniform(-1, 1, 3) * illumination / 3)
        .astype(np.float32),
        offset=(rng.uniform(-50, 50, 3) * illumination).astype(np.float32), noise_std=float(noise_std))


# ---------------------------------------------------------------------------------------------------- rendering


def _rows_slice(y0: int, y1: int, row0: int, row1: int) -> slice:
    """Local slice of the global rows [y0, y1) inside the band [row0, row1) (possibly empty)."""
    return slice(min(max(y0, row0), row1) - row0, min(max(y1, row0), row1) - row0)


def _box(rect: Sequence[int], row0: int, row1: int, width: int) -> Tuple[slice, slice]:
    """Local (rows, columns) slices of the global rectangle ``[x0, y0, x1, y1)`` in the band [row0, row1)."""
    x0, y0, x1, y1 = (int(v) for v in rect)
    return _rows_slice(y0, y1, row0, row1), slice(min(max(x0, 0), width), min(max(x1, 0), width))


def _near(y0: np.ndarray, y1: np.ndarray, row0: int, row1: int, reach: float) -> np.ndarray:
    """Indices of the objects spanning rows [y0, y1) that come within ``reach`` rows of the band."""
    return np.flatnonzero((y1 + reach > row0) & (y0 - reach < row1))


def _paint_roads(img: np.ndarray, layout: Layout, ys: np.ndarray, xs: np.ndarray, grain: np.ndarray) -> None:
    """Asphalt bands with dashed white centre lines."""
    row0, row1 = int(ys[0]), int(ys[-1]) + 1
    asphalt = np.array(_ASPHALT, np.float32) * (0.94 + 0.12 * grain[:, :, None])
    dashes_x, dashes_y = (xs // 12) % 2 == 0, (ys // 12) % 2 == 0
    for y0, y1 in layout.roads_h:
        rows = _rows_slice(y0, y1, row0, row1)
        img[rows] = asphalt[rows]
        mid = (y0 + y1) // 2
        img[_rows_slice(mid - 1, mid + 1, row0, row1), dashes_x] = _MARKING
    for x0, x1 in layout.roads_v:
        cols = slice(max(x0, 0), max(x1, 0))
        img[:, cols] = asphalt[:, cols]
        mid = (x0 + x1) // 2
        img[dashes_y, max(mid - 1, 0):max(mid + 1, 0)] = _MARKING


def _disc(cx: int, cy: int, r: int, ys: np.ndarray, xs: np.ndarray,
          width: int) -> Tuple[Tuple[slice, slice], np.ndarray, np.ndarray, np.ndarray]:
    """Local (rows, columns) slices of the bounding box of a disc in the band of rows ``ys``, the coordinates
    (u, v) of its pixels relative to the centre in radii, and whether they are inside the disc."""
    rows, cols = _box((cx - r, cy - r, cx + r + 1, cy + r + 1), int(ys[0]), int(ys[-1]) + 1, width)
    u = (xs[cols] - cx)[None, :].astype(np.float32) / r
    v = (ys[rows] - cy)[:, None].astype(np.float32) / r
    return (rows, cols), u, v, u * u + v * v <= 1


def _paint_trees(img: np.ndarray, shadow: np.ndarray, layout: Layout, date: int, ys: np.ndarray,
                 xs: np.ndarray) -> None:
    """Tree crowns (shaded discs, brighter towards the sun, leafy texture); their shadow discs go to ``shadow``."""
    sun = layout.sun[date]
    crowns = np.zeros(shadow.shape, np.float32)
    cx, cy, r, z = layout.trees.T
    sx, sy = np.rint(z * sun[0]).astype(int), np.rint(z * sun[1]).astype(int)
    for i in _near(np.minimum(cy, cy + sy) - r, np.maximum(cy, cy + sy) + r + 1, int(ys[0]), int(ys[-1]) + 1, 0):
        box, _, _, inside = _disc(cx[i] + sx[i], cy[i] + sy[i], r[i], ys, xs, layout.width)
        shadow[box] |= inside
        box, u, v, inside = _disc(cx[i], cy[i], r[i], ys, xs, layout.width)
        lit = np.where(inside, 1.0 - 0.35 * (u * u + v * v) - 0.25 * (u * sun[0] + v * sun[1]), 0)
        np.maximum(crowns[box], lit, out=crowns[box])
    leaves = 0.7 + 0.6 * _value_noise(ys, xs, 3, layout.salt + 40)
    tree = crowns > 0
    img[tree] = layout.colours[date]["tree"] * (crowns * leaves)[tree][:, None]


def _present(layout: Layout, date: int) -> np.ndarray:
    """Whether each building rectangle stands at ``date`` (0 or 1)."""
    return layout.status != (NEW if date == 0 else DEMOLISHED)


def _paint_buildings(img: np.ndarray, shadow: np.ndarray, layout: Layout, date: int, ys: np.ndarray,
                 grain: np.ndarray) -> None:
    """Bare soil where buildings were demolished (date 2), cast shadows (the footprints shifted away from the sun,
    together with the tree shadows in ``shadow``), then the roofs of the buildings standing at ``date``: gable
    roofs as two slopes lit differently by the sun plus a light ridge, flat roofs with a darker parapet, a grain
    texture on all."""
    row0, row1 = int(ys[0]), int(ys[-1]) + 1
    sun = layout.sun[date]
    offsets = np.rint(layout.elevation[:, None] * sun).astype(int)
    near = _near(layout.rects[:, 1], layout.rects[:, 3], row0, row1, np.abs(offsets[:, 1]).max(initial=0))
    standing = near[_present(layout, date)[near]]
    if date == 1:
        for i in near[layout.status[near] == DEMOLISHED]:
            box = _box(layout.rects[i], row0, row1, layout.width)
            img[box] = np.array(_BARE_SOIL, np.float32) * (0.8 + 0.4 * grain[box][:, :, None])
    for i in standing:
        shadow[_box(layout.rects[i] + np.tile(offsets[i], 2), row0, row1, layout.width)] = True
    img[shadow] *= _SHADOW
    for i in standing:
        x0, y0, x1, y1 = layout.rects[i]
        colour = layout.roof[i]
        if layout.gable[i]:
            along_x = x1 - x0 >= y1 - y0
            # slope facing the sun is brighter: its outward normal is -y (top) or -x (left) for the first half
            tilt = 0.35 * (sun[1] if along_x else sun[0]) / np.hypot(*sun)
            mid = (y0 + y1) // 2 if along_x else (x0 + x1) // 2
            first = (x0, y0, x1, mid) if along_x else (x0, y0, mid, y1)
            second = (x0, mid, x1, y1) if along_x else (mid, y0, x1, y1)
            ridge = (x0, mid - 1, x1, mid + 1) if along_x else (mid - 1, y0, mid + 1, y1)
            parts = ((first, 1 + tilt), (second, 1 - tilt), (ridge, 1.2))
        else:
            parts = (((x0, y0, x1, y1), 0.8), ((x0 + 2, y0 + 2, x1 - 2, y1 - 2), 1.0))
        for rect, brightness in parts:
            img[_box(rect, row0, row1, layout.width)] = colour * brightness
        box = _box(layout.rects[i], row0, row1, layout.width)
        img[box] *= (0.92 + 0.16 * grain[box])[:, :, None]


def _render_date(layout: Layout, date: int, row0: int, row1: int) -> np.ndarray:
    """Noise-free rows [row0, row1) of ``date`` (0 or 1) in float32 RGB, before illumination and mis-registration."""
    ys, xs = np.arange(row0, row1), np.arange(layout.width)
    colours = layout.colours[date]
    grass = _smoothstep(np.clip((_fbm(ys, xs, (192, 64, 24), layout.salt) - 0.35) / 0.3, 0, 1))[:, :, None]
    texture = 0.8 + 0.25 * _fbm(ys, xs, (8, 3), layout.salt + 10) + 0.1 * _uniform(ys, xs, layout.salt + 20)
    img = (colours["soil"] + grass * (colours["grass"] - colours["soil"])) * texture[:, :, None]
    grain = _uniform(ys, xs, layout.salt + 30)
    _paint_roads(img, layout, ys, xs, grain)
    shadow = np.zeros(img.shape[:2], bool)
    _paint_trees(img, shadow, layout, date, ys, xs)
    _paint_buildings(img, shadow, layout, date, ys, grain)
    return img


def _shift(padded: np.ndarray, dy: float, dx: float, margin: int) -> np.ndarray:
    """Bilinear resampling of ``padded`` (the wanted band plus ``margin`` >= |shift| + 1 pixels on each side) so
    that content moves by (dy, dx) pixels; returns the band without the margin."""
    height, width = padded.shape[0] - 2 * margin, padded.shape[1] - 2 * margin
    iy, ix = math.floor(-dy), math.floor(-dx)
    fy, fx = np.float32(-dy - iy), np.float32(-dx - ix)

    def window(oy: int, ox: int) -> np.ndarray:
        return padded[margin + iy + oy:margin + iy + oy + height, margin + ix + ox:margin + ix + ox + width]

    return ((1 - fy) * ((1 - fx) * window(0, 0) + fx * window(0, 1))
            + fy * ((1 - fx) * window(1, 0) + fx * window(1, 1)))


def _to_uint8(img: np.ndarray, layout: Layout, ys: np.ndarray, salt: int) -> np.ndarray:
    """Add sensor noise (triangular, std ``noise_std``, hashed per pixel and band), round and clip to uint8."""
    bits = _hash(ys, np.arange(3 * layout.width), salt).reshape(img.shape)
    noise = (bits & np.uint32(0xFFFF)).astype(np.float32)
    noise += (bits >> np.uint32(16)).astype(np.float32)
    noise -= np.float32(65535)
    noise *= np.float32(layout.noise_std * math.sqrt(6) / 65536)
    noise += img
    return np.clip(np.rint(noise, out=noise), 0, 255, out=noise).astype(np.uint8)


def change_rows(layout: Layout, row0: int, row1: int) -> np.ndarray:
    """Rows [row0, row1) of the change mask: union of the footprints of demolished and new buildings (uint8 0/1)."""
    mask = np.zeros((row1 - row0, layout.width), np.uint8)
    changed = np.flatnonzero(layout.status != STABLE)
    for i in changed[_near(layout.rects[changed, 1], layout.rects[changed, 3], row0, row1, 0)]:
        mask[_box(layout.rects[i], row0, row1, layout.width)] = 1
    return mask


def render_rows(layout: Layout, row0: int, row1: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows [row0, row1) of date 1, date 2 (H x W x 3 uint8 RGB) and the change mask (H x W uint8 0/1).

    The result does not depend on how a scene is cut into bands: date 2 is rendered with a margin of rows
    (edge-replicated at the scene border) before its sub-pixel mis-registration is applied.
    """
    if not 0 <= row0 < row1 <= layout.height:
        raise ValueError(f"render_rows: need 0 <= row0 < row1 <= {layout.height}, got {row0}, {row1}")
    ys = np.arange(row0, row1)
    date1 = _to_uint8(_render_date(layout, 0, row0, row1), layout, ys, layout.salt + 50)
    margin = math.ceil(max(abs(v) for v in layout.shift)) + 1
    top, bottom = max(row0 - margin, 0), min(row1 + margin, layout.height)
    padded = np.pad(_render_date(layout, 1, top, bottom),
                    ((margin - (row0 - top), margin - (bottom - row1)), (margin, margin), (0, 0)), mode="edge")
    date2 = _shift(padded, *layout.shift, margin) * layout.gain + layout.offset
    return date1, _to_uint8(date2, layout, ys, layout.salt + 60), change_rows(layout, row0, row1)


def iter_strips(layout: Layout, rows: int = STRIP_ROWS) -> Iterator[Tuple[int, Tuple[np.ndarray, ...]]]:
    """Yield ``(row0, (date1, date2, change))`` for consecutive bands of ``rows`` rows covering the scene."""
    for row0 in range(0, layout.height, rows):
        yield row0, render_rows(layout, row0, min(row0 + rows, layout.height))


def generate_scene(height: int, width: int, seed: int = 0, **kwargs) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A synthetic change-detection scene at ~0.5 m/pixel.

    Parameters
    ----------
    height, width : int
        Scene size in pixels.
    seed : int
        Seed; the scene is a deterministic function of ``(height, width, seed, kwargs)``.
    **kwargs
        Passed to :func:`make_layout` (rates of buildings and changes, strength of the nuisances).

    Returns
    -------
    date1, date2 : np.ndarray
        H x W x 3 uint8 RGB images.
    change : np.ndarray
        H x W uint8 change mask, 1 on the footprints of buildings that appeared or vanished.
    """
    layout = make_layout(height, width, seed, **kwargs)
    out = (np.empty((height, width, 3), np.uint8), np.empty((height, width, 3), np.uint8),
           np.empty((height, width), np.uint8))
    for row0, strip in iter_strips(layout):
        for full, part in zip(out, strip):
            full[row0:row0 + len(part)] = part
    return out


# ------------------------------------------------------------------------------------------------------ writers

DEFAULT_SPLITS = {"train": 4, "val": 2, "test": 2}


def write_levircd_layout(root: Path, n_per_split: Optional[Mapping[str, int]] = None, size: int = 256,
                         seed: int = 0, **kwargs) -> Path:
    """Write synthetic scenes in the official LEVIR-CD layout ``root/<split>/{A,B,label}/<split>_<i>.png``.

    ``A`` and ``B`` hold the dates (RGB PNG), ``label`` the change mask with values 0/255, as in LEVIR-CD.

    Parameters
    ----------
    root : Path
        Output folder (created).
    n_per_split : mapping split -> count, optional
        Number of scenes per split; default ``{"train": 4, "val": 2, "test": 2}``.
    size : int
        Side of each (square) scene in pixels.
    seed : int
        Base seed; each scene gets its own seed derived from ``(seed, split, index)``.
    **kwargs
        Passed to :func:`make_layout` (e.g. ``p_new``, ``p_demolish`` for more change).

    Returns
    -------
    Path
        ``root``.
    """
    root = Path(root)
    for k, (split, count) in enumerate((n_per_split or DEFAULT_SPLITS).items()):
        folders = [root / split / name for name in ("A", "B", "label")]
        for folder in folders:
            folder.mkdir(parents=True, exist_ok=True)
        for i in range(1, count + 1):
            scene_seed = int(np.random.SeedSequence([seed, k, i]).generate_state(1)[0])
            date1, date2, change = generate_scene(size, size, scene_seed, **kwargs)
            bgr = [cv2.cvtColor(date, cv2.COLOR_RGB2BGR) for date in (date1, date2)]
            for folder, image in zip(folders, (*bgr, change * np.uint8(255))):
                path = folder / f"{split}_{i}.png"
                if not cv2.imwrite(str(path), image):
                    raise OSError(f"write_levircd_layout: could not write {path}")
    return root


def write_geotiff_scene(folder: Path, height: int, width: int, seed: int = 0, crs: str = "EPSG:32633",
                        pixel_size: float = 0.5, origin: Tuple[float, float] = (500000.0, 6500000.0),
                        block: int = 256, **kwargs) -> Dict[str, Path]:
    """Write a synthetic scene as georeferenced GeoTIFFs ``date1.tif``, ``date2.tif`` and ``label.tif``.

    The files are tiled (``block`` x ``block``), deflate-compressed, band-interleaved; the dates are 3-band RGB
    uint8, the label is 1-band uint8 0/1. The scene is rendered and written one band of ``block`` rows at a time
    (see the module docstring), so memory stays bounded for scenes of many thousand pixels; the pixels equal
    those of :func:`generate_scene` with the same arguments.

    Parameters
    ----------
    folder : Path
        Output folder (created).
    height, width : int
        Scene size in pixels.
    seed : int
        Seed of the scene.
    crs : str
        Coordinate reference system (anything ``rasterio.crs.CRS.from_user_input`` accepts).
    pixel_size : float
        Ground size of a pixel, in CRS units.
    origin : (float, float)
        CRS coordinates (x, y) of the upper-left corner.
    block : int
        Tile side, a multiple of 16; also the height of the rendered strips.
    **kwargs
        Passed to :func:`make_layout`.

    Returns
    -------
    dict
        ``{"date1": path, "date2": path, "label": path}``.
    """
    import rasterio
    from rasterio.enums import ColorInterp
    from rasterio.windows import Window

    if block <= 0 or block % 16:
        raise ValueError(f"write_geotiff_scene: block must be a positive multiple of 16, got {block}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {name: folder / f"{name}.tif" for name in ("date1", "date2", "label")}
    transform = rasterio.Affine(pixel_size, 0.0, origin[0], 0.0, -pixel_size, origin[1])
    profile = dict(driver="GTiff", height=height, width=width, dtype="uint8", crs=crs, transform=transform,
                   tiled=True, blockxsize=block, blockysize=block, compress="deflate", interleave="band")
    layout = make_layout(height, width, seed, **kwargs)
    with rasterio.open(paths["date1"], "w", count=3, photometric="RGB", **profile) as d1, \
            rasterio.open(paths["date2"], "w", count=3, photometric="RGB", **profile) as d2, \
            rasterio.open(paths["label"], "w", count=1, **profile) as lab:
        for dataset in (d1, d2):
            dataset.colorinterp = (ColorInterp.red, ColorInterp.green, ColorInterp.blue)
        for row0, (date1, date2, change) in iter_strips(layout, block):
            window = Window(0, row0, width, len(change))
            d1.write(date1.transpose(2, 0, 1), window=window)
            d2.write(date2.transpose(2, 0, 1), window=window)
            lab.write(change[None], window=window)
    return paths


# ---------------------------------------------------------------------------------------------------------- CLI


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command line: write a LEVIR-CD-like tree of PNGs, or one large GeoTIFF scene."""
    parser = argparse.ArgumentParser(prog="python -m utilities.data.synthetic", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    levir = commands.add_parser("levircd", help="PNG chips in the official LEVIR-CD layout")
    levir.add_argument("out", type=Path)
    for split, count in DEFAULT_SPLITS.items():
        levir.add_argument(f"--n-{split}", type=int, default=count, help=f"scenes in {split} (default {count})")
    levir.add_argument("--size", type=int, default=256, help="side of each scene in pixels (default 256)")
    levir.add_argument("--seed", type=int, default=0)
    geo = commands.add_parser("geotiff", help="one tiled, compressed, georeferenced scene (date1, date2, label)")
    geo.add_argument("out", type=Path)
    geo.add_argument("--size", type=int, default=4096, help="height and width in pixels (default 4096)")
    geo.add_argument("--height", type=int, help="overrides --size")
    geo.add_argument("--width", type=int, help="overrides --size")
    geo.add_argument("--seed", type=int, default=0)
    geo.add_argument("--crs", default="EPSG:32633")
    geo.add_argument("--pixel-size", type=float, default=0.5)
    geo.add_argument("--block", type=int, default=256, help="tile side and strip height (default 256)")
    args = parser.parse_args(argv)

    if args.command == "levircd":
        counts = {split: getattr(args, f"n_{split}") for split in DEFAULT_SPLITS}
        root = write_levircd_layout(args.out, counts, args.size, args.seed)
        for split, count in counts.items():
            print(f"{root / split}: {count} x (A, B, label) {args.size}x{args.size} PNG")
    else:
        paths = write_geotiff_scene(args.out, args.height or args.size, args.width or args.size, args.seed,
                                    crs=args.crs, pixel_size=args.pixel_size, block=args.block)
        for name, path in paths.items():
            print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
