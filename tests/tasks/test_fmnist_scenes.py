"""The Fashion-MNIST scene generator behind ``fmnist_det`` / ``fmnist_seg``: boxes, instance masks and
class maps exact against the pixels written, the COCO file valid for pycocotools, determinism
from the seed, and only t10k items, in disjoint pools per split."""
from __future__ import annotations

import json
from collections import defaultdict

import numpy as np
import pytest
from PIL import Image

from tests.tasks.fmnist_helpers import COUNTS, expected_visible, needs_fmnist, resized, small_settings, small_spec, t10k

pytestmark = needs_fmnist


@pytest.fixture(scope="module")
def coco_dir(tmp_path_factory):
    from transfer.data.detection.fmnist_coco import write_fmnist_coco

    root = tmp_path_factory.mktemp("fmnist_coco")
    return root, write_fmnist_coco(root, COUNTS, small_spec())


def _by_image(d):
    anns = defaultdict(list)
    for a in d["annotations"]:
        anns[a["image_id"]].append(a)
    return anns


def test_boxes_and_masks_are_exact_against_the_pixels(coco_dir):
    from pycocotools import mask as mask_util

    root, jsons = coco_dir
    items, labels = t10k()
    occluded = 0
    for split, path in jsons.items():
        d = json.loads(path.read_text())
        anns = _by_image(d)
        assert len(d["images"]) == COUNTS[split]
        for im in d["images"]:
            img = np.asarray(Image.open(root / split / im["file_name"]))
            assert img.shape == (80, 80) and img.dtype == np.uint8
            objs = anns[im["id"]]
            assert 1 <= len(objs) <= 5
            for a, vis in zip(objs, expected_visible(objs, items, 80)):
                got = mask_util.decode(a["segmentation"]).astype(bool)
                assert np.array_equal(got, vis), (split, im["file_name"], a["id"])
                ys, xs = np.nonzero(vis)
                assert a["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
                assert a["area"] == vis.sum() and a["category_id"] == labels[a["fmnist_index"]] + 1
                # the visible pixels are the resized item's own pixels, unchanged and nonzero
                patch = resized(items[a["fmnist_index"]], a["item_side"])
                x, y = a["item_xy"]
                on_canvas = np.zeros((80, 80), np.int64)
                on_canvas[y:y + a["item_side"], x:x + a["item_side"]] = patch
                assert np.array_equal(img[vis], on_canvas[vis]) and (img[vis] > 0).all()
                footprint = (patch > 0).sum()
                assert vis.sum() >= 0.5 * footprint  # partial overlap only
                occluded += int(vis.sum() < footprint)
    assert occluded >= 3, "the scenes should contain partially occluded items"


def test_coco_json_loads_in_pycocotools_and_ground_truth_scores_ap_100(coco_dir):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    _, jsons = coco_dir
    gt = COCO(str(jsons["test"]))
    assert sorted(gt.getCatIds()) == list(range(1, 11)) and len(gt.getImgIds()) == COUNTS["test"]
    for iou_type in ("bbox", "segm"):
        dets = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"],
                 "segmentation": a["segmentation"], "score": 1.0} for a in gt.dataset["annotations"]]
        ev = COCOeval(gt, gt.loadRes(dets), iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
        assert ev.stats[0] == pytest.approx(1.0) and ev.stats[1] == pytest.approx(1.0), iou_type


def test_read_back_through_the_coco_reader(tmp_path):
    from transfer.data.detection.fmnist_coco import read_fmnist_det

    tr, te = read_fmnist_det(tmp_path, small_settings())
    assert (tr.name, te.name, len(tr.images), len(te.images)) == ("train", "test", 6, 5)
    assert tr.has_masks and tr.classes[0] == "T-shirt/top" and tr.cat_ids == list(range(1, 11))
    d = json.loads((tmp_path / "annotations" / "instances_train.json").read_text())
    a = d["annotations"][0]
    x, y, w, h = a["bbox"]
    assert tr.images[0].boxes[0].tolist() == [x, y, x + w, y + h] and tr.images[0].labels[0] == a["category_id"]
    _, va = read_fmnist_det(tmp_path, small_settings(eval_split="val"))
    assert va.name == "val" and len(va.images) == 3


def test_voc_layout_holds_the_same_scenes_as_exact_class_maps(tmp_path, coco_dir):
    from transfer.data.segmentation.fmnist_voc import CLASSES, read_fmnist_seg

    root, jsons = coco_dir
    items, _ = t10k()
    train, test = read_fmnist_seg(tmp_path, small_settings())
    assert train.classes == CLASSES and len(CLASSES) == 11 and (len(train), len(test)) == (6, 5)
    for split, ds in (("train", train), ("test", test)):
        d = json.loads(jsons[split].read_text())
        anns = _by_image(d)
        for k, im in enumerate(d["images"]):
            img, mask, name = ds[k]
            assert name == im["file_name"][:-4]
            want = np.zeros((80, 80), np.int64)
            for a, vis in zip(anns[im["id"]], expected_visible(anns[im["id"]], items, 80)):
                want[vis] = a["category_id"]  # category k + 1 == class index k + 1 (0 = background)
            assert np.array_equal(mask, want), name
            png = np.asarray(Image.open(root / split / im["file_name"]), np.float64)
            assert np.abs(img[..., 0] - png).mean() < 2.0  # the VOC image is a JPEG of the same scene


def test_same_seed_same_bytes_other_seed_other_scenes(tmp_path):
    from transfer.data.detection.fmnist_coco import write_fmnist_coco

    a = write_fmnist_coco(tmp_path / "a", COUNTS, small_spec())
    b = write_fmnist_coco(tmp_path / "b", COUNTS, small_spec())
    c = write_fmnist_coco(tmp_path / "c", COUNTS, small_spec(seed=4))
    for split in COUNTS:
        assert a[split].read_bytes() == b[split].read_bytes()
        for f in sorted((tmp_path / "a" / split).glob("*.png")):
            assert f.read_bytes() == (tmp_path / "b" / split / f.name).read_bytes()
        assert a[split].read_bytes() != c[split].read_bytes()
    # a split's scenes do not depend on how many scenes the other splits have
    d = write_fmnist_coco(tmp_path / "d", {"train": 2, "val": 1, "test": COUNTS["test"]}, small_spec())
    assert d["test"].read_bytes() == a["test"].read_bytes()


def test_only_t10k_items_and_disjoint_pools(tmp_path, monkeypatch):
    import transfer.data.datasets as datasets
    from transfer.data.detection.fmnist_coco import write_fmnist_coco
    from transfer.data.detection.fmnist_scenes import split_pools

    opened = []
    real = datasets.read_idx

    def spy(path):
        opened.append(str(path))
        return real(path)

    monkeypatch.setattr(datasets, "read_idx", spy)
    jsons = write_fmnist_coco(tmp_path, {"train": 40, "val": 20, "test": 40}, small_spec())
    assert opened and all("t10k-" in p for p in opened), opened
    used = {}
    for split, path in jsons.items():
        d = json.loads(path.read_text())
        used[split] = {a["fmnist_index"] for a in d["annotations"]} | {
            i for im in d["images"] for i in im["fmnist_fragments"]}
    assert not used["train"] & used["val"] and not used["train"] & used["test"] and not used["val"] & used["test"]
    pools = split_pools(10000, 3)
    assert sum(len(p) for p in pools.values()) == 10000 and len(set().union(*map(set, pools.values()))) == 10000
    for split in used:
        assert used[split] <= set(pools[split].tolist())


def test_rewritten_for_new_settings_reused_for_the_same(tmp_path):
    from transfer.data.detection.fmnist_coco import write_fmnist_coco

    first = write_fmnist_coco(tmp_path, COUNTS, small_spec())
    victim = tmp_path / "train" / "train_00000.png"
    victim.unlink()
    write_fmnist_coco(tmp_path, COUNTS, small_spec())
    assert not victim.exists()  # same request: the stamp says the folder is complete, nothing is redone
    write_fmnist_coco(tmp_path, COUNTS, small_spec(size=96))
    assert victim.exists() and json.loads(first["train"].read_text())["images"][0]["width"] == 96


def test_bad_specs_are_user_errors(tmp_path):
    from transfer.data.detection.fmnist_coco import read_fmnist_det
    from transfer.errors import UserError

    with pytest.raises(UserError, match="item side"):
        small_spec(side=(24, 100))
    with pytest.raises(UserError, match="min_visible"):
        small_spec(min_visible=0.0)
    with pytest.raises(UserError, match="eval_split"):
        read_fmnist_det(tmp_path, small_settings(eval_split="train"))
