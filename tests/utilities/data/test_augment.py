"""Change-detection augmentation (paper Section 8.3) and the authors' policy (their public code)."""
import pickle

import mxnet as mx
import numpy as np
import pytest

from tests.authors_code import authors_module
from utilities.data.augment import OPERATIONS, POLICIES, ChangeAugmentation

OFF = dict(p_rotate=0.0, p_flip=0.0, p_brightness=0.0, p_shadow=0.0, p_time_reversal=0.0, p_identity=0.0)
ALL_ON = dict(p_rotate=1.0, p_flip=1.0, p_brightness=1.0, p_shadow=1.0, p_time_reversal=1.0, p_identity=1.0)
DRAWS = 4000  # samples over which rates are measured


def only(seed=0, policy="paper", **probabilities):
    """An augmentation with every transform off except ``probabilities``."""
    return ChangeAugmentation(policy, **{**OFF, **probabilities}, seed=seed)


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
    for augment in (ChangeAugmentation(seed=2), ChangeAugmentation(**{**ALL_ON, "p_identity": 0.0}, seed=3),
                    ChangeAugmentation("authors", seed=4)):
        for _ in range(20):
            out1, out2, out_mask = augment(img1, img2, mask)
            assert out1.shape == out2.shape == img1.shape and out_mask.shape == mask.shape
            assert out1.dtype == out2.dtype == img1.dtype and out_mask.dtype == np.uint8
            assert set(np.unique(out_mask)) <= {0, 1}


def test_inputs_are_not_modified():
    img1, img2, mask = pair()
    copies = [a.copy() for a in (img1, img2, mask)]
    for augment in (ChangeAugmentation(**ALL_ON, seed=0), ChangeAugmentation("authors", seed=0)):
        for _ in range(20):
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
        augment = ChangeAugmentation(**{**ALL_ON, "p_time_reversal": 0.5, "p_identity": 0.5}, seed=123)
        runs.append([augment(img1, img2, mask) for _ in range(5)])
    for a, b in zip(*runs):
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)


def test_defaults_and_repr():
    augment = ChangeAugmentation()
    assert augment.policy == "paper"
    assert augment.p_time_reversal == augment.p_identity == 0.5  # Section 8.3: "at a rate of 50%"
    text = repr(augment)
    assert text.startswith("ChangeAugmentation(policy='paper', ")
    for name in OFF:
        assert f"{name}={getattr(augment, name)}" in text


@pytest.mark.parametrize("kwargs", [dict(p_rotate=1.5), dict(p_identity=-0.1), dict(shadow_range=(0.5, 1.2)),
                                    dict(zoom_range=(1.2, 0.8)), dict(max_angle=200), dict(zoom_draw="normal"),
                                    dict(shadow_polygon="circle"), dict(policy="ours")])
def test_invalid_arguments_raise(kwargs):
    with pytest.raises(ValueError):
        ChangeAugmentation(**kwargs)


def test_mismatched_inputs_raise():
    img1, img2, mask = pair()
    with pytest.raises(ValueError):
        ChangeAugmentation()(img1, img2[:, :-1], mask)
    with pytest.raises(ValueError):
        ChangeAugmentation()(img1, img2, mask[:-1])


# ----------------------------------------------------------------------------- policies and their rates

EXPECTED_RATES = {  # per sample, with each policy's defaults
    "paper": dict(rotate_zoom=0.5, flip=0.0, brightness_date1=0.5, brightness_date2=0.5, shadow_date1=0.125,
                  shadow_date2=0.125, time_reversal=0.5, identity=0.5),
    "authors": dict(rotate_zoom=0.5, flip=0.3, brightness_date1=0.1, brightness_date2=0.0, shadow_date1=0.1,
                    shadow_date2=0.0, time_reversal=0.25, identity=0.25),
}
IMAGE_OPERATIONS = {"rotate_zoom", "flip", "brightness_date1", "brightness_date2", "shadow_date1", "shadow_date2"}


def binomial_tolerance(p, n=DRAWS, sigmas=4.5):
    """Half-width of the band a rate measured over ``n`` draws stays in (4.5 sigma: ~7e-6 false alarms)."""
    return sigmas * np.sqrt(p * (1 - p) / n) + 1e-12


def applied_operations(monkeypatch, policy, n=DRAWS, seed=11):
    """The operations each of ``n`` augmented samples went through, recorded as :data:`OPERATIONS` runs them."""
    log = []
    for name, operation in list(OPERATIONS.items()):
        def recording(a, t, name=name, operation=operation):
            log[-1].append(name)
            return operation(a, t)
        monkeypatch.setitem(OPERATIONS, name, recording)
    augment = ChangeAugmentation(policy, seed=seed)
    img1, img2, mask = pair(np.float32, 3, 16, 16)
    for _ in range(n):
        log.append([])
        augment(img1, img2, mask)
    return log


def test_every_policy_defines_every_parameter():
    names = set(POLICIES["paper"].defaults)
    assert all(set(policy.defaults) == names for policy in POLICIES.values())
    for policy in POLICIES:
        augment = ChangeAugmentation(policy)
        assert {name: getattr(augment, name) for name in names} == pytest.approx(POLICIES[policy].defaults)


@pytest.mark.parametrize("policy", ["paper", "authors"])
def test_rates_measured_over_many_draws(monkeypatch, policy):
    """Each operation happens at its policy's rate, measured over 4000 samples within a binomial band."""
    log = applied_operations(monkeypatch, policy)
    for name, expected in EXPECTED_RATES[policy].items():
        measured = np.mean([name in ops for ops in log])
        assert abs(measured - expected) <= binomial_tolerance(expected), (name, measured, expected)
    assert all(len(ops) == len(set(ops)) for ops in log)  # no operation twice in one sample


def test_paper_draws_are_independent(monkeypatch):
    """paper: time reversal and identity (50 % each) come together in a quarter of the samples, and a sample
    may get several image operations."""
    log = applied_operations(monkeypatch, "paper")
    both = np.mean([{"time_reversal", "identity"} <= set(ops) for ops in log])
    assert abs(both - 0.25) <= binomial_tolerance(0.25)
    assert max(len(IMAGE_OPERATIONS.intersection(ops)) for ops in log) >= 3


def test_authors_draws_are_exclusive(monkeypatch):
    """authors: exactly one image operation per sample (its rates sum to 1), then time reversal or identity,
    never both, neither in half of the samples."""
    log = applied_operations(monkeypatch, "authors")
    for ops in log:
        assert len(IMAGE_OPERATIONS.intersection(ops)) == 1 and ops[0] in IMAGE_OPERATIONS
        assert not {"time_reversal", "identity"} <= set(ops)
    neither = np.mean([len(ops) == 1 for ops in log])
    assert abs(neither - 0.5) <= binomial_tolerance(0.5)


def test_authors_rates_are_those_of_the_authors_augmentor():
    """The authors' augmentor cycles through its operation list, one per sample: its shares are the
    ``authors`` policy's image-operation rates; its rotation and zoom ranges are the policy's."""
    module = authors_module("src.semseg_aug_cv2")
    params = module.ParamsRange()
    augmentor = module.SemSegAugmentor_CV(params)
    ours = {"reflect_x": "flip", "reflect_y": "flip", "reflect_xy": "flip", "random_brightness": "brightness_date1",
            "random_shadow": "shadow_date1", "rand_shit_rot_zoom": "rotate_zoom"}
    shares = {}
    for operation in augmentor.operations:
        shares[ours[operation.__name__]] = shares.get(ours[operation.__name__], 0) + 1 / len(augmentor.operations)
    assert augmentor.prob == 1.0  # every sample gets one operation
    (image_draw, _) = ChangeAugmentation("authors").draws
    assert shares == pytest.approx(dict(image_draw))
    defaults = POLICIES["authors"].defaults
    assert params["rot_range"] == [-defaults["max_angle"], defaults["max_angle"]]
    assert tuple(params["zoom_range"]) == defaults["zoom_range"]


def test_authors_time_reversal_and_identity_rates_are_those_of_the_authors_dataset(tmp_path):
    """The authors' LEVIR-CD data set (one chip in its RecordIO format, their augmentor replaced by a no-op)
    swaps the dates in a quarter of the samples and gives a null-change identity pair in another quarter,
    never both: measured over 4000 samples, the ``authors`` policy's 0.25 / 0.25 within a binomial band."""
    dataset_class = authors_module("src.LVRCDDataset").LVRCDDataset
    img1, img2, mask = pair(np.uint8, 3, 16, 16)
    one_hot = np.eye(2, dtype=np.uint8)[mask].transpose(2, 0, 1)
    chip = np.concatenate([img1.transpose(2, 0, 1), img2.transpose(2, 0, 1), one_hot, one_hot, one_hot * 100])
    record = mx.recordio.MXIndexedRecordIO(str(tmp_path / "training_LVRCD_F16.idx"),
                                           str(tmp_path / "training_LVRCD_F16.rec"), "w")
    record.write_idx(0, pickle.dumps(chip))
    record.close()
    dataset = dataset_class(root=str(tmp_path), mode="train", transform=lambda base, labels: (base, labels),
                            Filter=16)
    date1, date2 = (img.transpose(2, 0, 1).astype(np.float32) for img in (img1, img2))
    swapped = identity = 0
    np.random.seed(7)
    for _ in range(DRAWS):
        t1, t2, labels = dataset[0]
        swapped += np.array_equal(t1, date2) and np.array_equal(t2, date1)
        identity += np.array_equal(t1, t2) and not labels[1].any()
    assert swapped + identity <= DRAWS
    defaults = POLICIES["authors"].defaults
    for count, ours in ((swapped, defaults["p_time_reversal"]), (identity, defaults["p_identity"])):
        assert abs(count / DRAWS - ours) <= binomial_tolerance(ours)


def test_authors_brightness_and_shadow_touch_date1_only():
    img1, img2, mask = pair(np.float32)
    img1 += 0.1
    for operation in ("p_brightness", "p_shadow"):
        augment = only(policy="authors", seed=2, **{operation: 1.0})
        for _ in range(10):
            out1, out2, out_mask = augment(img1, img2, mask)
            assert out2 is img2 and out_mask is mask and not np.array_equal(out1, img1)
            ratio = out1 / img1
            if operation == "p_brightness":
                np.testing.assert_allclose(ratio, ratio.flat[0], rtol=1e-5)
                assert 0.5 <= ratio.flat[0] <= 1.5
            else:  # halved inside the hull, untouched outside
                assert set(np.round(np.unique(ratio), 5)) == {0.5, 1.0}


def test_flip_flips_dates_and_mask_alike():
    img1, img2, mask = pair()
    augment = only(p_flip=1.0, seed=3)
    seen = set()
    for _ in range(30):
        out1, out2, out_mask = augment(img1, img2, mask)
        axes = next(axes for axes in ((0,), (1,), (0, 1)) if np.array_equal(out_mask, np.flip(mask, axes)))
        np.testing.assert_array_equal(out1, np.flip(img1, axes))
        np.testing.assert_array_equal(out2, np.flip(img2, axes))
        seen.add(axes)
    assert len(seen) == 3


def test_shadow_polygons_are_never_empty():
    """Both polygon shapes cover pixels of the image (the star encloses its centre, which is inside)."""
    for policy in POLICIES:
        augment = only(policy=policy, p_shadow=1.0, seed=8)
        img = np.ones((32, 48, 1), np.float32)
        for _ in range(200):
            out1, out2, _ = augment(img, img, np.zeros((32, 48), np.uint8))
            assert (out1 < 1).any() or (out2 < 1).any()


def test_authors_probabilities_over_one_refused():
    with pytest.raises(ValueError, match="policy 'authors' applies at most one of flip, brightness_date1, "
                                         "shadow_date1, rotate_zoom; their probabilities sum to 1.3 > 1"):
        ChangeAugmentation("authors", p_rotate=0.8)
