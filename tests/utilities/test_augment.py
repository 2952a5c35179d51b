"""Change-detection augmentation (paper Section 8.3)."""
import numpy as np
import pytest

from utilities.augment import ChangeAugmentation

OFF = dict(p_rotate=0.0, p_brightness=0.0, p_shadow=0.0, p_time_reversal=0.0, p_identity=0.0)


def only(seed=0, **probabilities):
    """An augmentation with every transform off except ``probabilities``."""
    return ChangeAugmentation(**{**OFF, **probabilities}, seed=seed)


def rectangles_mask(height=96, width=128):
    mask = np.zeros((height, width), np.uint8)
    mask[10:40, 15:60] = 1
    mask[55:90, 70:120] = 1
    mask[20:30, 90:100] = 1
    return mask


def pair(dtype=np.uint8, bands=3, height=96, width=128, seed=0):
    rng = np.random.default_rng(seed)
    scale = 255 if dtype == np.uint8 else 1
    img1 = (rng.random((height, width, bands)) * scale).astype(dtype)
    img2 = (rng.random((height, width, bands)) * scale).astype(dtype)
    return img1, img2, rectangles_mask(height, width)


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_rotation_zoom_keeps_dates_and_mask_aligned(dtype):
    mask = rectangles_mask()
    img = np.repeat((mask * 255).astype(dtype)[:, :, None], 3, axis=2)
    img[:, :, 1:] = 77  # other bands: anything
    augment = only(p_rotate=1.0, seed=1)
    for _ in range(40):
        out1, out2, out_mask = augment(img, img.copy(), mask)
        np.testing.assert_array_equal(out1, out2)
        assert set(np.unique(out_mask)) <= {0, 1}
        agreement = np.mean((out1[:, :, 0] > 127.5) == out_mask.astype(bool))
        assert agreement >= 0.99
    assert not np.array_equal(out_mask, mask)  # the transforms did move things


@pytest.mark.parametrize("dtype,bands", [(np.uint8, 3), (np.float32, 3), (np.uint8, 4), (np.float32, 4),
                                         (np.uint16, 1)])
def test_shapes_dtypes_and_binary_mask_under_all_transforms(dtype, bands):
    img1, img2, mask = pair(dtype, bands)
    for augment in (ChangeAugmentation(seed=2), ChangeAugmentation(1, 1, 1, 1, 0, seed=3)):
        for _ in range(20):
            out1, out2, out_mask = augment(img1, img2, mask)
            assert out1.shape == out2.shape == img1.shape and out_mask.shape == mask.shape
            assert out1.dtype == out2.dtype == img1.dtype and out_mask.dtype == np.uint8
            assert set(np.unique(out_mask)) <= {0, 1}


def test_inputs_are_not_modified():
    img1, img2, mask = pair()
    copies = [a.copy() for a in (img1, img2, mask)]
    augment = ChangeAugmentation(1, 1, 1, 1, 1, seed=0)
    for _ in range(10):
        augment(img1, img2, mask)
    for original, copy in zip((img1, img2, mask), copies):
        np.testing.assert_array_equal(original, copy)


def test_time_reversal_swaps_dates_and_keeps_mask():
    img1, img2, mask = pair()
    out1, out2, out_mask = only(p_time_reversal=1.0)(img1, img2, mask)
    np.testing.assert_array_equal(out1, img2)
    np.testing.assert_array_equal(out2, img1)
    np.testing.assert_array_equal(out_mask, mask)


def test_identity_gives_one_date_twice_and_null_mask():
    img1, img2, mask = pair()
    augment = only(p_identity=1.0)
    chosen = set()
    for _ in range(20):
        out1, out2, out_mask = augment(img1, img2, mask)
        np.testing.assert_array_equal(out1, out2)
        assert out1 is not out2
        assert out_mask.dtype == np.uint8 and not out_mask.any()
        chosen.add(0 if np.array_equal(out1, img1) else 1 if np.array_equal(out1, img2) else None)
    assert chosen == {0, 1}


def test_all_probabilities_zero_is_identity():
    img1, img2, mask = pair(np.float32, 4)
    for out, original in zip(only()(img1, img2, mask), (img1, img2, mask)):
        np.testing.assert_array_equal(out, original)


def test_brightness_scales_values_per_date_without_moving_pixels():
    img1, img2, mask = pair(np.float32)
    img1 += 0.1  # no zero pixels: the ratio below is defined everywhere
    img2 += 0.1
    out1, out2, out_mask = only(p_brightness=1.0, seed=4)(img1, img2, mask)
    gain1, gain2 = out1 / img1, out2 / img2
    np.testing.assert_allclose(gain1, gain1.flat[0], rtol=1e-5)  # one gain per date: geometry untouched
    np.testing.assert_allclose(gain2, gain2.flat[0], rtol=1e-5)
    assert gain1.flat[0] != pytest.approx(gain2.flat[0])        # drawn independently per date
    np.testing.assert_array_equal(out_mask, mask)


def test_brightness_clips_integer_images_to_dtype_range():
    img = np.full((8, 8, 3), 250, np.uint8)
    augment = ChangeAugmentation(**{**OFF, "p_brightness": 1.0}, brightness_range=(1.5, 1.5), seed=0)
    out1, _, _ = augment(img, img, np.zeros((8, 8), np.uint8))
    assert out1.dtype == np.uint8 and (out1 == 255).all()


def test_shadow_darkens_one_date_and_keeps_mask():
    img1, img2, mask = pair()
    img1 |= 1  # no zero pixels, so that darkening is visible everywhere inside the polygon
    img2 |= 1
    augment = only(p_shadow=1.0, seed=5)
    for _ in range(10):
        out1, out2, out_mask = augment(img1, img2, mask)
        np.testing.assert_array_equal(out_mask, mask)
        darker = [(out < img).any() for out, img in ((out1, img1), (out2, img2))]
        assert sorted(darker) == [False, True]
        for out, img in ((out1, img1), (out2, img2)):
            assert (out <= img).all()


def test_same_seed_same_output():
    img1, img2, mask = pair()
    runs = []
    for _ in range(2):
        augment = ChangeAugmentation(1, 1, 1, 0.5, 0.5, seed=123)
        runs.append([augment(img1, img2, mask) for _ in range(5)])
    for a, b in zip(*runs):
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)


def test_defaults_and_repr():
    augment = ChangeAugmentation()
    assert augment.p_time_reversal == augment.p_identity == 0.5  # Section 8.3: "at a rate of 50%"
    text = repr(augment)
    for name in OFF:
        assert f"{name}={getattr(augment, name)}" in text


@pytest.mark.parametrize("kwargs", [dict(p_rotate=1.5), dict(p_identity=-0.1), dict(shadow_range=(0.5, 1.2)),
                                    dict(zoom_range=(1.2, 0.8)), dict(max_angle=200)])
def test_invalid_arguments_raise(kwargs):
    with pytest.raises(ValueError):
        ChangeAugmentation(**kwargs)


def test_mismatched_inputs_raise():
    img1, img2, mask = pair()
    with pytest.raises(ValueError):
        ChangeAugmentation()(img1, img2[:, :-1], mask)
    with pytest.raises(ValueError):
        ChangeAugmentation()(img1, img2, mask[:-1])
