"""Detection readers and bad input: each fault is one clear message naming the file and record."""
from __future__ import annotations

import json

import pytest

from transfer.data.detection import (check_nonempty, read_coco, read_voc, write_shapes_coco, write_shapes_voc,
                                     write_tree_tiles)
from transfer.errors import UserError

from .det_helpers import write_fake_deepforest


@pytest.fixture
def coco(tmp_path):
    j = write_shapes_coco(tmp_path, {"train": 3}, size=64)["train"]
    return j, tmp_path / "train"


def _edit(j, fn):
    d = json.loads(j.read_text())
    fn(d)
    j.write_text(json.dumps(d))


def test_coco_reads_with_category_gaps_and_masks(coco):
    j, imgs = coco
    sp = read_coco(j, imgs)
    assert sp.cat_ids == [1, 3, 7] and sp.classes == ["square", "disk", "triangle"]
    assert sp.has_masks and sp.num_boxes > 0
    assert set(int(v) for im in sp.images for v in im.labels) <= {1, 2, 3}


def test_coco_missing_image_names_file_and_record(coco):
    j, imgs = coco
    (imgs / "train_00001.png").unlink()
    with pytest.raises(UserError, match=r"instances_train\.json: image id 2 has file_name 'train_00001\.png', not found"):
        read_coco(j, imgs)


def test_coco_degenerate_boxes_dropped_with_count(coco):
    j, imgs = coco

    def degenerate(d):
        d["annotations"][0]["bbox"][2] = 0  # zero width
        d["annotations"][1]["bbox"] = [5, 5, -3, 4]  # negative width
    _edit(j, degenerate)
    sp = read_coco(j, imgs)
    assert sp.dropped["degenerate boxes"] == 2


def test_coco_undeclared_category_names_annotation(coco):
    j, imgs = coco
    _edit(j, lambda d: d["annotations"][2].update(category_id=2))  # 2 is a gap in 1, 3, 7
    with pytest.raises(UserError, match=r"annotation id 3 .* category_id 2, not declared in 'categories'"):
        read_coco(j, imgs)


def test_coco_empty_split(coco):
    j, imgs = coco
    _edit(j, lambda d: d.update(images=[], annotations=[]))
    with pytest.raises(UserError, match=r"instances_train\.json: training split .* has no images"):
        check_nonempty(read_coco(j, imgs), "training split")
    j.write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        read_coco(j, imgs)


def test_voc_reader_and_bad_xml(tmp_path):
    write_shapes_voc(tmp_path, {"2007": {"trainval": 3, "test": 2}, "2012": {"trainval": 2}}, size=64)
    sp = read_voc(tmp_path, "2007_trainval+2012_trainval")
    assert len(sp.images) == 5 and sp.classes == ["disk", "square", "triangle"] and sp.layout == "voc"
    xml = tmp_path / "VOC2007" / "Annotations" / "2007_trainval_00000.xml"
    xml.write_text(xml.read_text().replace("<name>", "<name>x", 1))
    with pytest.raises(UserError, match=rf"{xml.name}: object 0 has class 'x"):
        read_voc(tmp_path, "2007_trainval", classes=sp.classes)
    with pytest.raises(UserError, match="no VOC2010 folder"):
        read_voc(tmp_path, "2010_trainval")


def test_tree_tiles_hold_one_out(tmp_path):
    src = write_fake_deepforest(tmp_path / "df")
    js = write_tree_tiles(src, tmp_path / "tiles", tile=80)
    tr = read_coco(js["train"], tmp_path / "tiles" / "train")
    te = read_coco(js["test"], tmp_path / "tiles" / "test")
    assert len(te.images) == 1 and te.images[0].file.endswith("OSBS_029_0_0.png")
    assert len(tr.images) == 1 + 4  # SOAP_061 + the 160 px image cut into four 80 px tiles
    assert tr.classes == ["tree"]
