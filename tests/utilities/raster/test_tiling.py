"""Tiling geometry and strip streaming of large-raster inference (paper Section 8.5.1), without a model."""
import cv2
import numpy as np
import pytest

from utilities.errors import InputError
from utilities.raster.tiling import (
    TAPER_FLOOR,
    StripAccumulator,
    Tiling,
    check_window,
    reflect_index,
    stream_strips,
    window_weights,
)

GEOMETRIES = [(200, 300, 64, 16), (37, 53, 16, 8), (256, 256, 256, 64), (5, 7, 32, 8), (1, 9, 16, 4),
              (30, 40, 24, 24)]


def coverage(tiling: Tiling, size: int, origins: np.ndarray) -> np.ndarray:
    """How many windows cover each pixel of an axis of the raster (pixel i is padded pixel pad + i)."""
    pixels = tiling.pad + np.arange(size)
    return ((origins[:, None] <= pixels) & (pixels < origins[:, None] + tiling.window)).sum(axis=0)


@pytest.mark.parametrize("size", [1, 2, 3, 5, 17])
@pytest.mark.parametrize("pad", [0, 1, 4, 16, 40])
def test_reflect_index_is_numpy_reflect_padding_also_beyond_the_raster(size, pad):
    axis = np.arange(size)
    expected = np.pad(axis, pad, mode="reflect")
    np.testing.assert_array_equal(reflect_index(np.arange(-pad, size + pad), size), expected)
    if size > 1:  # and OpenCV's BORDER_REFLECT_101, which the paper's code uses
        row = cv2.copyMakeBorder(axis[None].astype(np.float32), 0, 0, pad, pad, cv2.BORDER_REFLECT_101)[0]
        np.testing.assert_array_equal(row, expected)


@pytest.mark.parametrize("height, width, window, stride", GEOMETRIES)
def test_padding_geometry(height, width, window, stride):
    t = Tiling(height, width, window, stride)
    assert t.pad == window - stride
    for size, padded, origins in ((height, t.padded_height, t.row_origins), (width, t.padded_width, t.col_origins)):
        after = padded - t.pad - size
        assert t.pad <= after < t.pad + stride  # just enough to complete the last window
        np.testing.assert_array_equal(origins, np.arange(len(origins)) * stride)
        assert origins[-1] + window == padded
    expected = np.pad(np.arange(height), (t.pad, t.padded_height - t.pad - height), mode="reflect")
    np.testing.assert_array_equal(t.source_rows(0, t.padded_height), expected)
    expected = np.pad(np.arange(width), (t.pad, t.padded_width - t.pad - width), mode="reflect")
    np.testing.assert_array_equal(t.source_cols(), expected)
    assert t.n_windows == len(t.row_origins) * len(t.col_origins)


@pytest.mark.parametrize("height, width, window, stride", GEOMETRIES)
def test_every_pixel_is_covered_equally_at_the_borders_and_inside(height, width, window, stride):
    """Padding by window - stride: each pixel, first and last ones included, lies in (window / stride)^2 windows."""
    t = Tiling(height, width, window, stride)
    per_axis = window // stride
    np.testing.assert_array_equal(coverage(t, height, t.row_origins), per_axis)
    np.testing.assert_array_equal(coverage(t, width, t.col_origins), per_axis)


def test_stride_not_dividing_the_window_still_covers_every_pixel():
    t = Tiling(50, 60, 32, 12)
    for size, origins in ((50, t.row_origins), (60, t.col_origins)):
        assert coverage(t, size, origins).min() >= 32 // 12


def test_accumulator_averages_overlapping_windows_and_moves_down():
    acc = StripAccumulator(channels=2, rows=4, width=6)
    acc.add(0, np.full((2, 4, 4), 1.0))
    acc.add(2, np.full((2, 4, 4), 3.0))
    top = acc.pop(2)
    np.testing.assert_allclose(top[:, :, :2], 1.0)
    np.testing.assert_allclose(top[:, :, 2:4], 2.0)  # two windows: (1 + 3) / 2
    np.testing.assert_allclose(top[:, :, 4:], 3.0)
    assert top.shape == (2, 2, 6)
    # the two rows below moved up (sums 1, 1 + 3, 3); the new bottom rows start empty
    acc.add(0, np.full((2, 4, 4), 5.0))
    acc.add(2, np.full((2, 4, 4), 9.0))
    np.testing.assert_allclose(acc.pop(4)[1], [[3, 3, 4.5, 4.5, 6, 6]] * 2 + [[5, 5, 7, 7, 9, 9]] * 2)


class RecordingReader:
    """Rows of a known raster, recording every span read."""

    def __init__(self, image: np.ndarray):
        self.image, self.spans = image, []

    def __call__(self, row0, row1):
        self.spans.append((row0, row1))
        return self.image[:, row0:row1].copy()


def streamed(image, window, stride, predict, batch_size=3, blend="uniform"):
    t = Tiling(image.shape[1], image.shape[2], window, stride, blend)
    reader = RecordingReader(image)
    return t, reader, list(stream_strips(t, reader, predict, batch_size))


@pytest.mark.parametrize("height, width, window, stride", GEOMETRIES)
def test_streaming_emits_every_row_once_in_order_with_its_inputs(height, width, window, stride):
    image = np.random.default_rng(0).random((2, height, width)).astype(np.float32)
    t, reader, strips = streamed(image, window, stride, predict=lambda batch: batch * 2)
    rows = np.concatenate([np.arange(s.row, s.row + s.inputs.shape[1]) for s in strips])
    np.testing.assert_array_equal(rows, np.arange(height))  # each row once, in order
    for s in strips:
        assert s.inputs.shape[1] == s.outputs.shape[1] and s.outputs.shape[2] == width
    np.testing.assert_array_equal(np.concatenate([s.inputs for s in strips], axis=1), image)
    # a pixelwise model: every window predicts the same value at a pixel, so the average is that value
    np.testing.assert_allclose(np.concatenate([s.outputs for s in strips], axis=1), image * 2, rtol=1e-6)


@pytest.mark.parametrize("height, width, window, stride", GEOMETRIES)
def test_streaming_averages_all_windows_over_each_pixel(height, width, window, stride):
    """Each window predicts its own number: the streamed result is the mean of the numbers of the windows over
    each pixel, as a direct sum over the whole padded raster gives it."""
    counter = iter(range(10 ** 6))

    def numbered(batch):
        return np.stack([np.full((1, window, window), next(counter), np.float32) for _ in batch])

    image = np.zeros((1, height, width), np.float32)
    t, _, strips = streamed(image, window, stride, numbered)
    total = np.zeros((t.padded_height, t.padded_width))
    count = np.zeros_like(total)
    number = 0
    for r in t.row_origins:  # the order of the windows: rows of windows, left to right
        for c in t.col_origins:
            total[r:r + window, c:c + window] += number
            count[r:r + window, c:c + window] += 1
            number += 1
    expected = (total / count)[t.pad:t.pad + height, t.pad:t.pad + width]
    np.testing.assert_allclose(np.concatenate([s.outputs[0] for s in strips]), expected, rtol=1e-6)


def test_streaming_reads_each_row_about_once_in_spans_of_at_most_a_window():
    height, window, stride = 500, 32, 8
    image = np.arange(height, dtype=np.float32)[None, :, None].repeat(20, axis=2)
    t, reader, _ = streamed(image, window, stride, predict=lambda batch: batch)
    assert all(row1 - row0 <= window for row0, row1 in reader.spans)
    # interior rows once; the reflected margins (pad + up to pad + stride - 1 rows) once more
    assert sum(row1 - row0 for row0, row1 in reader.spans) <= height + 2 * t.pad + stride


def test_raster_smaller_than_a_window_is_reflect_padded_up_to_the_window():
    image = np.arange(15, dtype=np.float32).reshape(1, 3, 5)
    seen = []

    def record(batch):
        seen.extend(batch)
        return batch

    t, _, strips = streamed(image, 16, 8, record)
    rows, cols = t.source_rows(0, t.padded_height), t.source_cols()
    padded = image[0][rows][:, cols]  # folded reflections: 3 rows become 24
    np.testing.assert_array_equal(seen[0][0], padded[:16, :16])
    np.testing.assert_array_equal(np.concatenate([s.outputs for s in strips], axis=1), image)


@pytest.mark.parametrize("window, stride, multiple, message", [
    (100, 64, 32, "window 100 is not a multiple of 32, which the model needs (its input sides must be multiples "
                  "of 32): use 96 or 128."),
    (16, 8, 32, "window 16 is not a multiple of 32, which the model needs (its input sides must be multiples "
                 "of 32): use 32."),
    (64, 128, 1, "window 64 and stride 128 are not usable: the tiling needs 1 <= stride <= window "
                 "(the paper: window 256, stride 64)."),
    (64, 0, 1, "window 64 and stride 0 are not usable: the tiling needs 1 <= stride <= window "
               "(the paper: window 256, stride 64)."),
])
def test_bad_window_is_refused(window, stride, multiple, message):
    with pytest.raises(InputError) as err:
        check_window(window, stride, multiple)
    assert str(err.value) == message


@pytest.mark.parametrize("height, width, window, stride", GEOMETRIES)
def test_window_rows_are_exactly_the_windows_overlapping_a_block(height, width, window, stride):
    t = Tiling(height, width, window, stride)
    for first in range(height):
        for stop in range(first + 1, min(height, first + 3 * window) + 1):
            top = t.row_origins - t.pad  # the raster row of each window's first row
            overlapping = np.flatnonzero((top < stop) & (top + window > first))
            rows = t.window_rows(first, stop)
            assert (rows.start, rows.stop) == (overlapping[0], overlapping[-1] + 1), (first, stop)
    with pytest.raises(ValueError, match=r"rows \[3, 3\) are not a non-empty range"):
        t.window_rows(3, 3)


@pytest.mark.parametrize("blend", ["uniform", "taper"])
@pytest.mark.parametrize("height, width, window, stride", GEOMETRIES)
def test_streamed_block_rows_are_bit_for_bit_those_of_the_whole_raster(height, width, window, stride, blend):
    """A block predicted alone (its rows of windows of the whole raster's grid, reflect padding only at the
    raster's own borders) gives the very bits of the whole run: same windows, batches, order of summation."""
    rng = np.random.default_rng(1)
    image = rng.random((2, height, width)).astype(np.float32)
    weights = rng.random((window, window)).astype(np.float32)  # position-dependent: windows disagree

    def predict(batch):
        return np.sin(batch * weights + batch.sum(axis=(2, 3), keepdims=True) / window)

    whole = np.concatenate([s.outputs for s in streamed(image, window, stride, predict, blend=blend)[2]], axis=1)
    t = Tiling(height, width, window, stride, blend)
    edges = sorted({0, height, *rng.integers(1, max(height, 2), size=3).tolist()})
    for first, stop in zip(edges[:-1], edges[1:]):
        strips = list(stream_strips(t, RecordingReader(image), predict, 3, rows=(first, stop)))
        assert [s.row for s in strips][0] == first
        block = np.concatenate([s.outputs for s in strips], axis=1)
        assert block.shape[1] == stop - first
        np.testing.assert_array_equal(block, whole[:, first:stop])
        np.testing.assert_array_equal(np.concatenate([s.inputs for s in strips], axis=1), image[:, first:stop])


def disagreeing_windows(window: int):
    """A model whose windows disagree about a pixel: each predicts a position-dependent map of its inputs, in
    float32 (pixelwise, so that the result does not depend on how a batch is laid out in memory)."""
    weights = np.random.default_rng(2).random((window, window)).astype(np.float32)
    return lambda batch: np.sin(batch * weights + weights).astype(np.float32)


def direct_blend(image, tiling, predict, dtype):
    """sum(w p) / sum(w) by a direct sum over the whole padded raster, windows in the streaming order."""
    padded = image[:, tiling.source_rows(0, tiling.padded_height)][:, :, tiling.source_cols()]
    weights = tiling.weights.astype(dtype)
    total = np.zeros((image.shape[0], tiling.padded_height, tiling.padded_width), dtype)
    count = np.zeros(total.shape[1:], dtype)
    w = tiling.window
    for r in tiling.row_origins:
        for c in tiling.col_origins:
            total[:, r:r + w, c:c + w] += predict(padded[None, :, r:r + w, c:c + w])[0] * weights
            count[r:r + w, c:c + w] += weights
    return (total / count)[:, tiling.pad:tiling.pad + tiling.height, tiling.pad:tiling.pad + tiling.width]


@pytest.mark.parametrize("height, width, window, stride", GEOMETRIES)
def test_uniform_blend_is_the_plain_average_bit_for_bit(height, width, window, stride):
    """The default blend is the paper's average, to the bit: float32 sums of the windows' predictions in the
    streaming order, divided by the number of windows."""
    image = np.random.default_rng(0).random((2, height, width)).astype(np.float32)
    predict = disagreeing_windows(window)
    t, _, strips = streamed(image, window, stride, predict)
    np.testing.assert_array_equal(window_weights(window), 1)
    expected = direct_blend(image, t, predict, np.float32)
    assert np.concatenate([s.outputs for s in strips], axis=1).tobytes() == expected.tobytes()


@pytest.mark.parametrize("height, width, window, stride", GEOMETRIES + [(50, 60, 32, 12), (40, 70, 256, 128)])
def test_taper_blend_is_the_weighted_average(height, width, window, stride):
    image = np.random.default_rng(0).random((2, height, width)).astype(np.float32)
    predict = disagreeing_windows(window)
    t, _, strips = streamed(image, window, stride, predict, blend="taper")
    streamed_out = np.concatenate([s.outputs for s in strips], axis=1)
    np.testing.assert_allclose(streamed_out, direct_blend(image.astype(np.float64), t, predict, np.float64),
                               rtol=1e-5, atol=1e-6)
    if stride < window and window // stride > 1:  # windows overlap: the blend differs from the plain average
        uniform = np.concatenate([s.outputs for s in streamed(image, window, stride, predict)[2]], axis=1)
        assert np.abs(streamed_out - uniform).max() > 1e-3


@pytest.mark.parametrize("window", [1, 2, 7, 32, 256])
def test_taper_weights_are_symmetric_positive_and_largest_at_the_centre(window):
    w = window_weights(window, "taper")
    assert w.shape == (window, window) and w.dtype == np.float32
    np.testing.assert_array_equal(w, w.T)
    np.testing.assert_array_equal(w, w[::-1])
    np.testing.assert_array_equal(w, w[:, ::-1])
    assert w.min() >= np.float32(TAPER_FLOOR ** 2) > 0 and w.max() <= 1
    profile = w[window // 2] / w[window // 2].max()
    half = profile[:(window + 1) // 2]
    assert np.all(np.diff(half) >= 0)  # rising from the edge to the centre
    if window == 256:  # the floor at the corners, 1 at the centre
        np.testing.assert_allclose(w[0, 0], TAPER_FLOOR ** 2, rtol=2e-3)
        np.testing.assert_allclose(w[window // 2, window // 2], 1, rtol=1e-3)


@pytest.mark.parametrize("window, stride", [(256, 128), (256, 64), (32, 8), (24, 8)])
def test_taper_weights_add_up_to_the_same_total_at_every_pixel_when_the_stride_divides_the_window(window, stride):
    """A cross-fade: along an axis, the windows over a pixel (at offsets i, i + stride, ...) weigh the same in
    total wherever the pixel is, so the blend changes the mixing, not the total weight."""
    profile = window_weights(window, "taper")[window // 2] / window_weights(window, "taper")[window // 2].max()
    totals = sum(np.roll(profile.astype(np.float64), k * stride) for k in range(window // stride))
    np.testing.assert_allclose(totals, totals[0], rtol=1e-6)


@pytest.mark.parametrize("height, width, window, stride", GEOMETRIES + [(50, 60, 32, 12), (70, 45, 24, 10)])
def test_taper_keeps_a_constant_prediction_constant_borders_included(height, width, window, stride):
    """Normalisation: sum(w c) / sum(w) = c at every pixel, the borders and sizes the stride does not divide
    included."""
    image = np.zeros((1, height, width), np.float32)
    _, _, strips = streamed(image, window, stride, lambda batch: np.full(batch.shape, 0.3, np.float32), blend="taper")
    np.testing.assert_allclose(np.concatenate([s.outputs for s in strips], axis=1), 0.3, rtol=1e-6)


def test_unknown_blend_is_refused():
    with pytest.raises(InputError, match=r"^blend 'gaussian' is not one of uniform, taper\.$"):
        Tiling(10, 10, 8, 4, "gaussian")
