"""Detection metrics shared by every engine, so both write the same keys.

- COCO-style AP through pycocotools' Python ``COCOeval`` (as detectron2's ``COCOEvaluator`` with
  ``use_fast_impl=False``, ``evaluation/coco_evaluation.py``): ``bbox`` (and ``segm`` where masks
  exist) -> ``AP, AP50, AP75, APs, APm, APl`` in percent, as detectron2 reports them (MoCo's tables).
- VOC07 11-point AP50 (``voc07_AP50``), the ``voc_eval`` of detectron2's
  ``evaluation/pascal_voc_evaluation.py`` with ``use_07_metric=True``: greedy matching by score,
  difficult boxes ignored, the precision envelope sampled at recall 0, 0.1, ..., 1.

Ground truth is built from a :class:`~transfer.data.detection.DetSplit` in memory, whatever the
layout on disk; crowd (COCO) and difficult (VOC) boxes are ``iscrowd`` there, ignored as the
respective benchmarks ignore them. Predictions: ``{"image_id", "category_id" (dataset id),
"bbox" (xywh), "score"[, "segmentation" (RLE)]}``, COCO's results format.
"""
from __future__ import annotations

import contextlib
import io
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

METRIC_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def coco_gt(split) -> "Any":
    """A pycocotools ``COCO`` object holding ``split``'s ground truth (masks when it has them)."""
    # pycocotools is optional (the detection extra)
    from pycocotools.coco import COCO

    images, anns = [], []
    for im in split.images:
        images.append({"id": im.image_id, "width": im.width, "height": im.height, "file_name": im.file})
        for j, (b, lab) in enumerate(zip(im.boxes, im.labels)):
            x0, y0, x1, y1 = (float(v) for v in b)
            a = {"id": len(anns) + 1, "image_id": im.image_id, "category_id": split.cat_ids[int(lab) - 1],
                 "bbox": [x0, y0, x1 - x0, y1 - y0], "iscrowd": int(im.crowd[j]),
                 "area": float(im.areas[j]) if im.areas is not None and len(im.areas) > j else (x1 - x0) * (y1 - y0)}
            if im.segms is not None and im.segms[j] is not None:
                a["segmentation"] = im.segms[j]
            anns.append(a)
    cats = [{"id": c, "name": n} for c, n in zip(split.cat_ids, split.classes)]
    gt = COCO()
    gt.dataset = {"images": images, "annotations": anns, "categories": cats}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
    return gt


def coco_ap(gt, dets: Sequence[dict], iou_type: str = "bbox") -> Tuple[Dict[str, float], str]:
    """(``{AP, AP50, AP75, APs, APm, APl}`` in percent, COCOeval's printed summary)."""
    # pycocotools is optional (the detection extra)
    from pycocotools.cocoeval import COCOeval

    dets = [d for d in dets if iou_type != "segm" or "segmentation" in d]
    if not dets:  # COCO.loadRes refuses an empty list; no detections is AP 0 everywhere
        return {k: 0.0 for k in METRIC_KEYS}, "no detections"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        dt = gt.loadRes([dict(d) for d in dets])
        ev = COCOeval(gt, dt, iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    # COCOeval gives -1 where a size bucket has no ground truth; detectron2 reports NaN there.
    stats = [float(s) * 100.0 if s >= 0 else float("nan") for s in ev.stats[:6]]
    return dict(zip(METRIC_KEYS, stats)), buf.getvalue()


def voc_ap_11point(rec: np.ndarray, prec: np.ndarray) -> float:
    """VOC2007's 11-point interpolated AP (``use_07_metric=True``)."""
    ap = 0.0
    for t in np.arange(0.0, 1.1, 0.1):
        p = float(np.max(prec[rec >= t])) if np.sum(rec >= t) > 0 else 0.0
        ap += p / 11.0
    return ap


def _iou(box: np.ndarray, gts: np.ndarray) -> np.ndarray:
    # Continuous coordinates (no VOC "+1"): our boxes are 0-based, xyxy, float.
    ix0, iy0 = np.maximum(gts[:, 0], box[0]), np.maximum(gts[:, 1], box[1])
    ix1, iy1 = np.minimum(gts[:, 2], box[2]), np.minimum(gts[:, 3], box[3])
    inter = np.clip(ix1 - ix0, 0, None) * np.clip(iy1 - iy0, 0, None)
    union = (box[2] - box[0]) * (box[3] - box[1]) + (gts[:, 2] - gts[:, 0]) * (gts[:, 3] - gts[:, 1]) - inter
    return inter / np.maximum(union, 1e-12)


def voc07_ap50(split, dets: Sequence[dict], iou_thresh: float = 0.5) -> Tuple[float, Dict[str, float]]:
    """(mean 11-point AP50 over classes with ground truth, per-class AP) in percent."""
    cat_to_label = {c: k + 1 for k, c in enumerate(split.cat_ids)}
    per_class: Dict[str, float] = {}
    for label, name in enumerate(split.classes, start=1):
        gts: Dict[int, Tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        npos = 0
        for im in split.images:
            m = im.labels == label
            gts[im.image_id] = (im.boxes[m], im.crowd[m], np.zeros(int(m.sum()), bool))
            npos += int((~im.crowd[m]).sum())
        if npos == 0:
            continue
        cd = sorted((d for d in dets if cat_to_label.get(d["category_id"]) == label), key=lambda d: -d["score"])
        tp, fp = np.zeros(len(cd)), np.zeros(len(cd))
        for i, d in enumerate(cd):
            x, y, w, h = d["bbox"]
            box = np.array([x, y, x + w, y + h], np.float64)
            g = gts.get(d["image_id"])
            if g is None or len(g[0]) == 0:
                fp[i] = 1
                continue
            ious = _iou(box, g[0].astype(np.float64))
            j = int(np.argmax(ious))
            if ious[j] > iou_thresh:
                if g[1][j]:
                    continue  # difficult: neither TP nor FP
                if not g[2][j]:
                    tp[i], g[2][j] = 1, True
                else:
                    fp[i] = 1
            else:
                fp[i] = 1
        tp, fp = np.cumsum(tp), np.cumsum(fp)
        rec = tp / float(npos)
        prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
        per_class[name] = 100.0 * voc_ap_11point(rec, prec)
    mean = float(np.mean(list(per_class.values()))) if per_class else 0.0
    return mean, per_class


def evaluate(split, dets: Sequence[dict], with_masks: bool = False, voc: bool = False) -> Dict[str, Any]:
    """Everything an engine reports: ``{"bbox": {...}, ["segm": {...}], ["voc07_AP50": x, "voc07_per_class": {...}],
    "coco_summary": {...}}``."""
    gt = coco_gt(split)
    res: Dict[str, Any] = {}
    summaries = {}
    res["bbox"], summaries["bbox"] = coco_ap(gt, dets, "bbox")
    if with_masks:
        res["segm"], summaries["segm"] = coco_ap(gt, dets, "segm")
    if voc:
        res["voc07_AP50"], res["voc07_per_class"] = voc07_ap50(split, dets)
    res["coco_summary"] = summaries
    return res


def to_coco_dets(image_id: int, boxes, scores, labels, cat_ids: List[int], masks=None) -> List[dict]:
    """Model outputs (xyxy boxes, scores, contiguous labels 1..K, optional (N, H, W) binary masks)
    -> COCO results records with the dataset's category ids."""
    out = []
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    rles = None
    if masks is not None and len(boxes):
        # pycocotools is optional (the detection extra)
        from pycocotools import mask as mask_util

        m = np.asarray(masks, np.uint8)
        m = m.transpose(1, 2, 0) if m.ndim == 3 else m[:, :, None]
        rles = mask_util.encode(np.asfortranarray(m))
        rles = [rles] if isinstance(rles, dict) else list(rles)
    for i, (b, s, lab) in enumerate(zip(boxes, scores, labels)):
        d = {"image_id": int(image_id), "category_id": int(cat_ids[int(lab) - 1]),
             "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])], "score": float(s)}
        if rles is not None:
            r = dict(rles[i])
            r["counts"] = r["counts"].decode("ascii") if isinstance(r["counts"], bytes) else r["counts"]
            d["segmentation"] = r
        out.append(d)
    return out
