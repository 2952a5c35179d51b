"""The prediction quick-look: date 1 | date 2 | change, the change in a colour the imagery cannot hold."""
from types import SimpleNamespace

import numpy as np
import pytest

from utilities.inference.tiled import _CHANGE_COLOUR, _GAP, _Quicklook, shrink_by_area

RED_ROOFS, ORANGE = (200, 30, 30), (230, 120, 40)


def _quicklook(height, width):
    predictor = SimpleNamespace(channels=3, mean=np.zeros((1, 3, 1, 1)), std=np.ones((1, 3, 1, 1)))
    return _Quicklook(SimpleNamespace(height=height, width=width, dtype="uint8"), predictor)


def _date(colour, height, width):
    return np.broadcast_to(np.array(colour, np.float32)[:, None, None], (3, height, width)).copy()


@pytest.mark.parametrize("height, width, stacked", [(40, 30, False), (30, 40, True)])
def test_panels_show_both_dates_and_the_change_in_magenta(height, width, stacked):
    mask = np.zeros((height, width), np.uint8)
    mask[20:, : width // 2] = 1
    mask[-1, -1] = 255  # nodata: not change
    look = _quicklook(height, width)
    for rows in (slice(0, 7), slice(7, height)):  # two strips
        look.add(_date(RED_ROOFS, height, width)[:, rows], _date(ORANGE, height, width)[:, rows], mask[rows])
    figure = look.figure()
    step = (height + _GAP, 0) if stacked else (0, width + _GAP)
    assert figure.shape == ((3 * height + 2 * _GAP, width, 3) if stacked else (height, 3 * width + 2 * _GAP, 3))
    panels = [figure[i * step[0]:i * step[0] + height, i * step[1]:i * step[1] + width] for i in range(3)]
    below_title = slice(20, height)
    assert (panels[0][below_title] == RED_ROOFS).all() and (panels[1][below_title] == ORANGE).all()
    change = panels[2][below_title]
    is_change = mask[below_title] == 1
    assert (change[is_change] == _CHANGE_COLOUR).all()
    grey = change[~is_change]
    assert (grey == grey[:, :1]).all() and (grey[:, 0] == int(np.mean(ORANGE))).all()
    gap = figure[height:height + _GAP] if stacked else figure[:, width:width + _GAP]
    assert (gap == 255).all()


def test_long_side_is_limited_for_the_whole_figure():
    look = _quicklook(1024, 3072)  # stacked: 3 x 1024 rows by 3072 columns -> halved
    assert look.stacked and look.factor == 2 and look.width == 1536


def _block_means(image, factor):
    """Independent reference: the rounded mean of every factor x factor block (partial at the last row/column)."""
    rows, cols = -(-image.shape[0] // factor), -(-image.shape[1] // factor)
    out = np.zeros((rows, cols, image.shape[2]), np.uint8)
    for i in range(rows):
        for j in range(cols):
            block = image[i * factor:(i + 1) * factor, j * factor:(j + 1) * factor].astype(np.float64)
            out[i, j] = np.floor(block.mean(axis=(0, 1)) + 0.5)
    return out


@pytest.mark.parametrize("rows, width, factor", [(3, 1, 2), (5, 2, 4), (7, 13, 2), (9, 2053, 4), (4, 2050, 4),
                                                 (18, 10980, 17), (2, 12000, 18), (6, 64, 4)])
def test_shrink_averages_blocks_of_nine_channels_at_any_width(rows, width, factor):
    """The quick-look's nine channels (three RGB panels) at widths that the factor does not divide: primes, 1,
    2050 and Sentinel-2's 10980 (factor 17, as for a 10980 x 10980 scene), each against a NumPy block mean."""
    image = np.random.default_rng(width).integers(0, 256, (rows, width, 9), dtype=np.uint8)
    shrunk = shrink_by_area(image, factor)
    assert shrunk.shape == (-(-rows // factor), -(-width // factor), 9) and shrunk.dtype == np.uint8
    np.testing.assert_array_equal(shrunk, _block_means(image, factor))


@pytest.mark.parametrize("height, width", [(2050, 2050), (10980, 10980), (12000, 12000), (7, 2053)])
def test_quicklook_of_widths_the_factor_does_not_divide(height, width):
    """The sizes that ended predict.py with an OpenCV error after the first strip: the figure is made from the
    strips added (a few rows of the large ones), each panel the block mean of its date."""
    look = _quicklook(height, width)
    assert width % look.factor  # the case OpenCV's area resize refused with nine channels
    rows = min(height, 3 * look.factor + 1)
    rng = np.random.default_rng(0)
    date1, date2 = (rng.integers(0, 256, (3, rows, width)).astype(np.float32) for _ in range(2))
    mask = np.zeros((rows, width), np.uint8)
    for start in range(0, rows, 5):  # strips of 5 rows, as stream_strips hands them out with stride 5
        look.add(date1[:, start:start + 5], date2[:, start:start + 5], mask[start:start + 5])
    figure = look.figure()
    panel_rows, panel_cols = -(-rows // look.factor), -(-width // look.factor)
    gap = _GAP if look.stacked else 0
    assert figure.shape == ((3 * panel_rows + 2 * _GAP, panel_cols, 3) if look.stacked
                            else (panel_rows, 3 * panel_cols + 2 * _GAP, 3))
    step = (panel_rows + gap, 0) if look.stacked else (0, panel_cols + _GAP)
    for i, date in enumerate((date1, date2)):  # panels lower than a title: untitled, all of them compared
        panel = figure[i * step[0]:i * step[0] + panel_rows, i * step[1]:i * step[1] + panel_cols]
        np.testing.assert_array_equal(panel, _block_means(date.transpose(1, 2, 0).astype(np.uint8), look.factor))


def test_one_pixel_figure_has_its_colours_and_no_title():
    """A title would hide a panel smaller than itself: a 1 x 1 raster's panels are its pixels."""
    look = _quicklook(1, 1)
    look.add(_date(RED_ROOFS, 1, 1), _date(ORANGE, 1, 1), np.ones((1, 1), np.uint8))
    figure = look.figure()
    assert figure.shape == (1, 3 + 2 * _GAP, 3)
    assert figure[0, 0].tolist() == list(RED_ROOFS) and figure[0, 1 + _GAP].tolist() == list(ORANGE)
    assert figure[0, -1].tolist() == _CHANGE_COLOUR.tolist()
