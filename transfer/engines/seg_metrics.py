"""Segmentation metrics from a confusion matrix: mIoU, per-class IoU, pixel accuracy (aAcc), mAcc.

Conventions follow mmsegmentation's ``IoUMetric`` (``mmseg/evaluation/metrics/iou_metric.py``:
``intersect_and_union`` per image, areas summed over the whole split, then
``total_area_to_metrics``), which is what the community's segmentation numbers (e.g. mmselfsup's
FCN/VOC12aug mIoU) are computed with; the accumulation is the confusion-matrix form of
torchvision's ``references/segmentation/utils.py`` ``ConfusionMatrix``:

- pixels whose label is ``ignore_index`` (255) are dropped before counting;
- per class ``IoU = I / U`` with ``I`` the diagonal, ``U = pred + label - I``; a class with
  ``U == 0`` (neither in the labels nor predicted anywhere in the split) has IoU ``NaN``
  (reported as ``null``) and is left out of the mean; a class predicted but never labelled has
  IoU 0 and counts;
- ``mIoU = nanmean(IoU)``, ``aAcc = sum(I) / sum(label)`` (pixel accuracy),
  ``mAcc = nanmean(I / label)``; all in percent, like mmseg.

Both segmentation engines (embedded, mmseg) report through :func:`metrics_from_areas`, so their
result keys are identical.
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

IGNORE_INDEX = 255


def _nanmean(x: np.ndarray) -> float:
    x = x[~np.isnan(x)]
    return float(x.mean()) if x.size else float("nan")


def _pct(v: float) -> Optional[float]:
    return None if v is None or math.isnan(v) else round(100.0 * float(v), 4)


def metrics_from_areas(inter: Sequence[float], pred: Sequence[float], label: Sequence[float],
                       class_names: Sequence[str]) -> Dict[str, object]:
    """Totals over a split (per class: intersection, predicted area, labelled area) -> the
    result keys shared by every engine: ``mIoU``, ``aAcc``, ``mAcc`` (percent; ``None`` when
    undefined, e.g. an all-ignore split), ``per_class_iou`` / ``per_class_acc`` (name ->
    percent or ``None``), ``pixels`` (labelled pixels counted)."""
    inter, pred, label = (np.asarray(a, dtype=np.float64) for a in (inter, pred, label))
    assert inter.shape == pred.shape == label.shape == (len(class_names),), \
        f"areas must have one entry per class ({len(class_names)}), got {inter.shape}, {pred.shape}, {label.shape}"
    union = pred + label - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, inter / union, np.nan)
        acc = np.where(label > 0, inter / label, np.nan)
    total = label.sum()
    return {
        "mIoU": _pct(_nanmean(iou)),
        "aAcc": _pct(inter.sum() / total) if total > 0 else None,
        "mAcc": _pct(_nanmean(acc)),
        "per_class_iou": {n: _pct(v) for n, v in zip(class_names, iou)},
        "per_class_acc": {n: _pct(v) for n, v in zip(class_names, acc)},
        "pixels": int(total),
    }


class ConfusionMatrix:
    """``mat[t, p]`` counts pixels labelled ``t`` and predicted ``p``; ``ignore_index`` pixels
    are skipped. Labels outside ``[0, num_classes)`` other than ``ignore_index`` are a bug in the
    reader (the readers reject them with the file's name), so they fail loudly here."""

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX) -> None:
        self.n, self.ignore_index = int(num_classes), int(ignore_index)
        self.mat = torch.zeros(self.n, self.n, dtype=torch.int64)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        pred, target = torch.as_tensor(pred), torch.as_tensor(target)
        assert pred.shape == target.shape, f"prediction {tuple(pred.shape)} vs label {tuple(target.shape)}"
        t = target.reshape(-1).to(torch.int64).cpu()
        p = pred.reshape(-1).to(torch.int64).cpu()
        keep = t != self.ignore_index
        t, p = t[keep], p[keep]
        if t.numel() == 0:
            return
        assert int(t.min()) >= 0 and int(t.max()) < self.n, f"label values outside [0, {self.n}) and != {self.ignore_index}"
        assert int(p.min()) >= 0 and int(p.max()) < self.n, "prediction outside the classes"
        self.mat += torch.bincount(t * self.n + p, minlength=self.n * self.n).reshape(self.n, self.n)

    def merge(self, other: "ConfusionMatrix") -> None:
        self.mat += other.mat

    def areas(self):
        m = self.mat.double()
        inter = torch.diag(m)
        return inter.numpy(), m.sum(0).numpy(), m.sum(1).numpy()

    def compute(self, class_names: Optional[List[str]] = None) -> Dict[str, object]:
        names = list(class_names) if class_names is not None else [str(i) for i in range(self.n)]
        inter, pred, label = self.areas()
        return metrics_from_areas(inter, pred, label, names)
