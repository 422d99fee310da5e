"""mIoU / per-class IoU / pixel accuracy against an independent reference on hand-made masks."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from transfer.engines.seg_metrics import ConfusionMatrix, metrics_from_areas


def reference(preds, labels, n, ignore=255):
    """Set arithmetic per class over all pixels of all images (no confusion matrix)."""
    p = np.concatenate([np.asarray(x).ravel() for x in preds])
    t = np.concatenate([np.asarray(x).ravel() for x in labels])
    keep = t != ignore
    p, t = p[keep], t[keep]
    ious, accs = [], []
    for c in range(n):
        inter = np.sum((p == c) & (t == c))
        union = np.sum((p == c) | (t == c))
        ious.append(inter / union if union else math.nan)
        accs.append(inter / np.sum(t == c) if np.sum(t == c) else math.nan)
    valid = [v for v in ious if not math.isnan(v)]
    miou = 100 * sum(valid) / len(valid) if valid else None
    aacc = 100 * np.mean(p == t) if t.size else None
    return miou, aacc, [None if math.isnan(v) else 100 * v for v in ious]


def run_cm(preds, labels, n):
    cm = ConfusionMatrix(n)
    for p, t in zip(preds, labels):
        cm.update(torch.as_tensor(p), torch.as_tensor(t))
    return cm.compute([f"c{i}" for i in range(n)])


def check(preds, labels, n):
    got = run_cm(preds, labels, n)
    miou, aacc, ious = reference(preds, labels, n)
    assert (got["mIoU"] is None) == (miou is None)
    if miou is not None:
        assert got["mIoU"] == pytest.approx(miou, abs=1e-3)
        assert got["aAcc"] == pytest.approx(aacc, abs=1e-3)
    for i, v in enumerate(ious):
        g = got["per_class_iou"][f"c{i}"]
        assert (g is None) == (v is None), (i, g, v)
        if v is not None:
            assert g == pytest.approx(v, abs=1e-3)
    return got


def test_hand_made_masks_with_ignore():
    t = np.array([[0, 0, 1, 1],
                  [0, 255, 1, 1],
                  [2, 2, 255, 1]])
    p = np.array([[0, 1, 1, 1],
                  [0, 2, 1, 0],
                  [2, 0, 0, 1]])
    got = check([p], [t], 3)
    # by hand: class0 I=2 (0,0),(1,0) U={(0,0),(0,1),(1,0),(1,3),(2,1)} minus ignore (2,2) -> 5 => 40%
    assert got["per_class_iou"]["c0"] == pytest.approx(40.0)
    # class1: I=(0,2),(0,3),(1,2),(2,3)=4; U adds (0,1),(1,3) -> 6 => 66.67%
    assert got["per_class_iou"]["c1"] == pytest.approx(400 / 6, abs=1e-3)
    # class2: I=(2,0)=1; U = (2,0),(2,1) -> 2 => 50% ((1,1) predicted 2 but ignored)
    assert got["per_class_iou"]["c2"] == pytest.approx(50.0)
    assert got["aAcc"] == pytest.approx(100 * 7 / 10)
    assert got["pixels"] == 10


def test_class_absent_from_labels_and_predictions_is_left_out():
    t = np.array([[0, 0], [1, 1]])
    p = np.array([[0, 0], [1, 0]])
    got = check([p], [t], 4)  # classes 2, 3 never appear: NaN, not 0
    assert got["per_class_iou"]["c2"] is None and got["per_class_iou"]["c3"] is None
    assert got["mIoU"] == pytest.approx(100 * (2 / 3 + 1 / 2) / 2)


def test_class_predicted_but_absent_from_labels_counts_as_zero():
    t = np.array([[0, 0], [0, 0]])
    p = np.array([[0, 0], [0, 3]])
    got = check([p], [t], 4)
    assert got["per_class_iou"]["c3"] == 0.0
    assert got["mIoU"] == pytest.approx(100 * (3 / 4 + 0) / 2)


def test_all_ignore_image_changes_nothing_and_alone_gives_none():
    t = np.array([[0, 1], [1, 1]])
    p = np.array([[0, 1], [0, 1]])
    ign = np.full((3, 3), 255)
    anyp = np.zeros((3, 3), dtype=np.int64)
    a, b = run_cm([p], [t], 2), check([p, anyp], [t, ign], 2)
    assert a == b
    alone = run_cm([anyp], [ign], 2)
    assert alone["mIoU"] is None and alone["aAcc"] is None and alone["pixels"] == 0


def test_random_masks_match_reference_across_images():
    rng = np.random.default_rng(0)
    preds, labels = [], []
    for _ in range(5):
        t = rng.integers(0, 5, size=(7, 9))
        t[rng.random(t.shape) < 0.2] = 255
        preds.append(rng.integers(0, 5, size=(7, 9)))
        labels.append(t)
    check(preds, labels, 5)


def test_areas_form_equals_matrix_form():
    got = metrics_from_areas([1, 0], [2, 0], [1, 0], ["a", "b"])
    assert got["mIoU"] == 50.0 and got["per_class_iou"]["b"] is None and got["aAcc"] == 100.0
