"""Multitask targets (utilities/targets.py): one-hot segmentation, boundary, normalised distance transform."""
import numpy as np
import pytest

from utilities.targets import make_targets

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
        np.testing.assert_allclose(a, b, atol=1e-6)  # the precise distance transform runs in parallel
    with pytest.raises(ValueError, match="mask values must lie in 0..1"):
        make_targets(square * 2)
