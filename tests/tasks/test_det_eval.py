"""Detection metrics on hand-made cases, checked against pycocotools called directly."""
from __future__ import annotations

import contextlib
import io
import math

import numpy as np
import pytest

pytest.importorskip("pycocotools")

from transfer.data.detection import DetImage, DetSplit  # noqa: E402
from transfer.engines.det_eval import coco_gt, evaluate, voc07_ap50, voc_ap_11point  # noqa: E402


def _split(boxes_per_image, labels_per_image=None, cat_ids=(1, 3)):
    ims = []
    for i, bs in enumerate(boxes_per_image):
        b = np.asarray(bs, np.float32).reshape(-1, 4)
        lab = np.asarray(labels_per_image[i] if labels_per_image else [1] * len(b), np.int64)
        ims.append(DetImage(f"im{i}.png", 200, 200, i + 1, b, lab, np.zeros(len(b), bool),
                            areas=(b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])))
    return DetSplit("t", "hand-made", ims, ["a", "b"][: len(cat_ids)], list(cat_ids))


def _det(image_id, box, score=0.9, cat=1):
    x0, y0, x1, y1 = box
    return {"image_id": image_id, "category_id": cat, "bbox": [x0, y0, x1 - x0, y1 - y0], "score": score}


def _direct(split, dets):
    from pycocotools.cocoeval import COCOeval

    gt = coco_gt(split)
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(gt, gt.loadRes(dets), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats


def test_perfect_predictions_give_ap_100():
    sp = _split([[[10, 10, 60, 60], [100, 100, 180, 190]], [[20, 30, 50, 90]]], [[1, 2], [1]], cat_ids=(1, 3))
    dets = [_det(1, [10, 10, 60, 60]), _det(1, [100, 100, 180, 190], cat=3), _det(2, [20, 30, 50, 90])]
    r = evaluate(sp, dets, voc=True)
    assert r["bbox"]["AP"] == pytest.approx(100.0)
    assert r["bbox"]["AP50"] == pytest.approx(100.0) and r["bbox"]["AP75"] == pytest.approx(100.0)
    assert r["voc07_AP50"] == pytest.approx(100.0)


def test_shift_past_iou_threshold():
    # GT 100x100; a shift of 30 px gives IoU 70*100/(2*10000-7000) = 0.538: a hit at 0.50 only,
    # a miss from 0.55 on -> AP50 100, AP75 0, AP (mean over 0.50:0.05:0.95) = 1/10 * 100.
    sp = _split([[[0, 0, 100, 100]]])
    dets = [_det(1, [30, 0, 130, 100])]
    r = evaluate(sp, dets, voc=True)
    stats = _direct(sp, dets)
    assert r["bbox"]["AP50"] == pytest.approx(100.0) and r["bbox"]["AP75"] == pytest.approx(0.0)
    assert r["bbox"]["AP"] == pytest.approx(10.0, abs=1e-6)
    assert r["bbox"]["AP"] == pytest.approx(stats[0] * 100) and r["bbox"]["AP50"] == pytest.approx(stats[1] * 100)
    assert r["voc07_AP50"] == pytest.approx(100.0)
    # shifted further (IoU 0.25): a miss everywhere
    r2 = evaluate(sp, [_det(1, [60, 0, 160, 100])], voc=True)
    assert r2["bbox"]["AP50"] == pytest.approx(0.0) and r2["voc07_AP50"] == pytest.approx(0.0)


def test_matches_pycocotools_on_a_mixed_case():
    rng = np.random.RandomState(0)
    gts = [[[x, y, x + w, y + h] for x, y, w, h in zip(*(rng.randint(5, 120, 4) for _ in range(4)))] for _ in range(3)]
    sp = _split(gts)
    dets = []
    for i, bs in enumerate(gts):
        for b in bs:
            j = rng.randint(-12, 13, 4)
            dets.append(_det(i + 1, [b[0] + j[0], b[1] + j[1], b[2] + j[2] + 20, b[3] + j[3] + 20], float(rng.rand())))
        dets.append(_det(i + 1, [0, 0, 30, 30], 0.95))  # a confident false positive
    r = evaluate(sp, dets)
    stats = _direct(sp, dets)
    for k, v in zip(("AP", "AP50", "AP75", "APs", "APm", "APl"), stats):
        if v < 0:
            assert math.isnan(r["bbox"][k])
        else:
            assert r["bbox"][k] == pytest.approx(v * 100)


def test_no_detections_is_zero_and_voc_11point():
    sp = _split([[[0, 0, 10, 10]]])
    assert evaluate(sp, [])["bbox"]["AP"] == 0.0
    # one TP then one FP at recall 1 -> precision envelope 1 everywhere -> AP 1
    assert voc_ap_11point(np.array([1.0, 1.0]), np.array([1.0, 0.5])) == pytest.approx(1.0)
    # half the objects found at precision 1 -> 6 of 11 recall points
    assert voc_ap_11point(np.array([0.5]), np.array([1.0])) == pytest.approx(6 / 11)
    sp2 = _split([[[0, 0, 10, 10], [50, 50, 70, 70]]])
    ap, per = voc07_ap50(sp2, [_det(1, [0, 0, 10, 10])])
    assert ap == pytest.approx(100 * 6 / 11)
