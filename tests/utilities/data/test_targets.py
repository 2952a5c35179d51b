"""Multitask targets (utilities/data/targets.py): one-hot segmentation, boundary, normalised distance transform."""
import sys
import types
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.authors_code import authors_module
from tests.utilities.fakes import write_levircd_tree
from utilities.data.targets import TARGET_FORMS, euclidean_distance, make_targets
from utilities.raster.io import read_label

LEVIRCD_SAMPLES = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "levircd_samples"

SIZE, TOP, SIDE = 32, 10, 9  # a 9 x 9 square at rows/cols 10..18 of a 32 x 32 chip


@pytest.fixture
def square():
    mask = np.zeros((SIZE, SIZE), dtype=np.uint8)
    mask[TOP:TOP + SIDE, TOP:TOP + SIDE] = 1
    return mask


def test_shapes_dtypes_and_range(square):
    for target in make_targets(square):
        assert target.shape == (2, SIZE, SIZE) and target.dtype == np.float32
        assert target.min() >= 0 and target.max() <= 1


def test_segmentation_is_one_hot(square):
    segm, _, _ = make_targets(square)
    np.testing.assert_array_equal(segm[1], square)
    np.testing.assert_array_equal(segm.sum(axis=0), 1)


def test_boundary_is_the_square_outline(square):
    _, bound, _ = make_targets(square)
    outline = square.copy()
    outline[TOP + 1:TOP + SIDE - 1, TOP + 1:TOP + SIDE - 1] = 0
    np.testing.assert_array_equal(bound[1], outline)
    assert bound[1].sum() == 4 * (SIDE - 1)
    # the background's boundary is the ring just outside the square (4-neighbours of it, no corners)
    assert bound[0].sum() == 4 * SIDE and not np.any(bound[0] * square)


def test_distance_zero_outside_one_at_centre_increasing_inwards(square):
    _, _, dist = make_targets(square)
    assert not np.any(dist[1][square == 0])
    centre = TOP + SIDE // 2
    assert dist[1][centre, centre] == 1 and np.argmax(dist[1]) == centre * SIZE + centre
    profile = dist[1][centre, TOP:centre + 1]
    assert np.all(np.diff(profile) > 0)
    np.testing.assert_allclose(profile, np.arange(1, SIDE // 2 + 2) / (SIDE // 2 + 1))


def test_empty_mask_has_no_change_targets():
    segm, bound, dist = make_targets(np.zeros((16, 16), dtype=np.uint8))
    assert not segm[1].any() and not bound[1].any() and not dist[1].any()
    # the no-change class fills the chip: no boundary in sight, distance 1 everywhere
    assert segm[0].all() and not bound[0].any() and np.all(dist[0] == 1)


def test_region_touching_the_chip_edge_has_no_boundary_on_the_edge():
    mask = np.zeros((8, 8), dtype=np.uint8)
    mask[:, :3] = 1
    _, bound, _ = make_targets(mask)
    np.testing.assert_array_equal(np.flatnonzero(bound[1].any(axis=0)), [2])


def test_float_mask_is_rounded_and_out_of_range_refused(square):
    reference = make_targets(square)
    for a, b in zip(make_targets(square * 0.9 + 0.05), reference):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="mask values must lie in 0..1"):
        make_targets(square * 2)


def random_rectangles(rng, size=32, count=4):
    """uint8 {0, 1} mask: the union of ``count`` random rectangles."""
    mask = np.zeros((size, size), dtype=np.uint8)
    for _ in range(count):
        (row, col), (height, width) = rng.integers(0, size - 4, 2), rng.integers(3, size // 2, 2)
        mask[row:row + height, col:col + width] = 1
    return mask


def test_distance_is_exact_and_the_same_bytes_wherever_the_arrays_lie():
    """The distance transform is float32 sqrt of the exact squared distance to the nearest 0 (brute force in
    NumPy) for every call, each writing to a new array kept alive (so at another address). OpenCV 4.8's IPP
    path for small images differed from it in the last bit depending on the output's address (training
    then got different targets for the same chip in two runs): with it, 13 of these 20 masks failed."""
    rng = np.random.default_rng(3)
    for _ in range(20):
        mask = random_rectangles(rng, size=48, count=6)
        zero_rows, zero_cols = (z.astype(np.int32)[None, :] for z in np.nonzero(mask == 0))
        rows, cols = (a.reshape(-1, 1).astype(np.int32) for a in np.indices(mask.shape))
        squared = ((rows - zero_rows) ** 2 + (cols - zero_cols) ** 2).min(axis=1).reshape(mask.shape)
        exact = np.sqrt(squared.astype(np.float64)).astype(np.float32)
        outputs = [euclidean_distance(mask) for _ in range(8)]
        for out in outputs:
            assert out.dtype == np.float32
            np.testing.assert_array_equal(out, exact)


def test_unknown_form_refused(square):
    with pytest.raises(ValueError, match="make_targets: form must be one of paper, authors, got 'canny'"):
        make_targets(square, form="canny")


def test_authors_boundary_is_a_band_across_the_edge(square):
    """Canny + cross dilation: the band covers the paper's inner contour and the ring just outside it,
    lies within 3 pixels of the edge, and is the same for a class and its complement."""
    _, paper, _ = make_targets(square)
    segm, bound, dist = make_targets(square, form="authors")
    np.testing.assert_array_equal(bound[0], bound[1])
    assert set(np.unique(bound)) == {0, 1}
    assert np.all(bound[1] >= paper[1]) and np.all(bound[1] >= paper[0])  # both contours inside the band
    grown = cv2.dilate(square, np.ones((7, 7), np.uint8)) - cv2.erode(square, np.ones((7, 7), np.uint8))
    assert not np.any(bound[1] * (1 - grown))                                # at most 3 pixels from the edge
    np.testing.assert_array_equal(segm, make_targets(square)[0])


def test_authors_full_class_has_distance_zero():
    """A class filling the chip (every no-change chip, every random-identity sample) gets distance 0 in the
    authors' form (1 in the paper's); neither has a boundary."""
    for form, full in (("paper", 1.0), ("authors", 0.0)):
        _, bound, dist = make_targets(np.zeros((16, 16), np.uint8), form=form)
        assert not bound.any() and np.all(dist[0] == full) and not dist[1].any()
        assert TARGET_FORMS[form].full_distance == full


def _labels_in_real_format(tmp_path):
    """0/255 PNG labels: fake LEVIR-CD tiles (256 px) and, when present, the real LEVIR-CD samples."""
    root = write_levircd_tree(tmp_path / "levircd", splits=None, n=4, size=256, seed=3)
    paths = sorted((root / "label").glob("*.png"))
    if LEVIRCD_SAMPLES.is_dir():
        paths += sorted((LEVIRCD_SAMPLES / "label").glob("*.png"))
    return paths


def _authors_chipping(monkeypatch):
    """The authors' chipping module (``chopchop/chopchop2rec.py``), its thread-pool import (pathos, used
    only to run the chipping in parallel) stubbed."""
    pools = types.ModuleType("pathos.pools")
    pools.ThreadPool = None
    pathos = types.ModuleType("pathos")
    pathos.pools = pools
    monkeypatch.setitem(sys.modules, "pathos", pathos)
    monkeypatch.setitem(sys.modules, "pathos.pools", pools)
    return authors_module("chopchop.chopchop2rec")


def test_authors_form_equals_the_authors_targets(tmp_path, monkeypatch):
    """Boundary and distance targets of the ``authors`` form equal, exactly, what the authors' training
    reads: their chipping's ``get_boundary`` / ``get_distance`` on the one-hot label (value > 0 is change),
    stored as uint8 (the distance as ``uint8(100 d)``), read back by their data set as float32 with the
    distance divided by 100; their data set's own ``get_boundary`` gives the same band. On 0/255 PNG
    labels (the real LEVIR-CD samples when present) and on an all-no-change mask."""
    chipping = _authors_chipping(monkeypatch)
    dataset = authors_module("src.LVRCDDataset").LVRCDDataset
    masks = [read_label(path) for path in _labels_in_real_format(tmp_path)]
    masks.append(np.zeros((256, 256), np.uint8))
    assert any(m.any() for m in masks)
    for mask in masks:
        one_hot = np.eye(2, dtype=np.uint8)[mask].transpose(2, 0, 1)
        stored = np.concatenate([one_hot, chipping.get_boundary(one_hot), chipping.get_distance(one_hot)])
        stored = stored.astype(np.uint8).astype(np.float32)
        stored[4:] = stored[4:] / 100.
        segm, bound, dist = make_targets(mask, form="authors")
        np.testing.assert_array_equal(np.concatenate([segm, bound, dist]), stored)
        np.testing.assert_array_equal(bound, dataset.get_boundary(None, one_hot))
        assert bound.dtype == dist.dtype == np.float32


def test_authors_distance_is_floored_to_hundredths(square):
    """The authors' form is the paper's distance (same transform, same min-max scaling) floored to a
    multiple of 0.01: 1 stays 1, 0.999 becomes 0.99."""
    _, _, paper = make_targets(square)
    _, _, authors = make_targets(square, form="authors")
    np.testing.assert_array_equal(authors, np.floor(paper * np.float32(100)) / np.float32(100))
    assert np.all(authors <= paper) and np.all(paper - authors < 0.01)
    assert authors.max() == 1 and len(np.unique(authors)) < len(np.unique(paper))
