"""The prediction quick-look: date 1 | date 2 | change, the change in a colour the imagery cannot hold."""
from types import SimpleNamespace

import numpy as np
import pytest

from utilities.inference.tiled import _CHANGE_COLOUR, _GAP, _Quicklook

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
