"""Pixel-wise change metrics from a binary confusion matrix (paper Section 8.4), through pycm.

Counts are accumulated as ``[tp, fp, fn, tn]`` (int64, or float64 when all-reduced across Horovod
ranks: float32 loses counts above 2^24) and turned into metrics by pycm's ``ConfusionMatrix``:
precision (PPV), recall (TPR), F1, MCC, IoU (Jaccard index), overall accuracy and Cohen's kappa.
"""
from __future__ import annotations

import math
from typing import Dict, Optional

import numpy as np
from pycm import ConfusionMatrix

METRIC_NAMES = ("precision", "recall", "f1", "mcc", "iou", "overall_accuracy", "kappa")


def confusion_counts(pred: np.ndarray, label: np.ndarray, valid: Optional[np.ndarray] = None) -> np.ndarray:
    """``[tp, fp, fn, tn]`` of binary arrays ``pred`` and ``label`` (same shape; ``valid`` masks pixels)."""
    pred = np.asarray(pred, dtype=bool)
    label = np.asarray(label, dtype=bool)
    if pred.shape != label.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from label shape {label.shape}")
    if valid is not None:
        pred, label = pred[valid], label[valid]
    tp = np.count_nonzero(pred & label)
    fp = np.count_nonzero(pred & ~label)
    fn = np.count_nonzero(~pred & label)
    tn = pred.size - tp - fp - fn
    return np.array([tp, fp, fn, tn], dtype=np.int64)


def _number(value) -> float:
    """pycm reports undefined statistics as the string 'None': map them to NaN."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return math.nan
    return value


def change_metrics(counts) -> Dict[str, float]:
    """Metrics of the change class from ``[tp, fp, fn, tn]`` (see :data:`METRIC_NAMES`).

    Undefined values (e.g. precision with no positive prediction) are NaN.
    """
    tp, fp, fn, tn = (int(round(float(c))) for c in counts)
    if min(tp, fp, fn, tn) < 0:
        raise ValueError(f"confusion counts must be >= 0, got {[tp, fp, fn, tn]}")
    # pycm: matrix[actual][predicted]; class 1 = change
    cm = ConfusionMatrix(matrix={1: {1: tp, 0: fn}, 0: {1: fp, 0: tn}})
    return {
        "precision": _number(cm.PPV[1]),
        "recall": _number(cm.TPR[1]),
        "f1": _number(cm.F1[1]),
        "mcc": _number(cm.MCC[1]),
        "iou": _number(cm.J[1]),
        "overall_accuracy": _number(cm.Overall_ACC),
        "kappa": _number(cm.Kappa),
    }
