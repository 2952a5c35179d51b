"""Change metrics (paper Section 8.4) through pycm, against hand-computed confusion matrices."""
import math

import numpy as np
import pytest

from utilities.inference.metrics import METRIC_NAMES, change_metrics, confusion_counts


def test_counts_of_a_hand_made_example():
    label = np.array([[1, 1, 0, 0], [1, 0, 0, 0]])
    pred = np.array([[1, 0, 1, 0], [1, 0, 0, 0]])
    np.testing.assert_array_equal(confusion_counts(pred, label), [2, 1, 1, 4])


def test_counts_respect_the_valid_mask():
    label = np.array([1, 1, 0, 0])
    pred = np.array([1, 0, 1, 0])
    valid = np.array([True, False, False, True])
    np.testing.assert_array_equal(confusion_counts(pred, label, valid), [1, 0, 0, 1])


def test_shape_mismatch():
    with pytest.raises(ValueError, match=r"prediction shape \(2,\) differs from label shape \(3,\)"):
        confusion_counts(np.zeros(2), np.zeros(3))


def test_metrics_equal_the_paper_definitions():
    tp, fp, fn, tn = 90, 5, 10, 895
    m = change_metrics([tp, fp, fn, tn])
    assert set(m) == set(METRIC_NAMES)
    precision, recall = tp / (tp + fp), tp / (tp + fn)
    assert m["precision"] == pytest.approx(precision)
    assert m["recall"] == pytest.approx(recall)
    assert m["f1"] == pytest.approx(2 * precision * recall / (precision + recall))
    mcc = (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    assert m["mcc"] == pytest.approx(mcc)
    assert m["iou"] == pytest.approx(tp / (tp + fn + fp))
    n = tp + fp + fn + tn
    assert m["overall_accuracy"] == pytest.approx((tp + tn) / n)
    pe = ((tp + fp) * (tp + fn) + (fn + tn) * (fp + tn)) / n ** 2
    assert m["kappa"] == pytest.approx(((tp + tn) / n - pe) / (1 - pe))


def test_float64_counts_from_an_allreduce_are_accepted():
    counts = np.array([2 ** 25 + 1, 3, 5, 2 ** 26], dtype=np.float64)
    assert change_metrics(counts)["recall"] == pytest.approx((2 ** 25 + 1) / (2 ** 25 + 6))


def test_undefined_metrics_are_nan():
    m = change_metrics([0, 0, 10, 90])  # nothing predicted as change
    assert math.isnan(m["precision"])
    assert m["recall"] == 0.0 and m["overall_accuracy"] == pytest.approx(0.9)


def test_negative_counts_rejected():
    with pytest.raises(ValueError, match="must be >= 0"):
        change_metrics([1, -1, 0, 0])
