"""Hostile or malformed detection annotations give one UserError naming file, record and key
(issue 17, section 4 item 8), never a KeyError/TypeError/ValueError traceback."""
from __future__ import annotations

import copy
import json

import pytest

from transfer.data.detection import read_coco, write_shapes_coco
from transfer.errors import UserError


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    root = tmp_path_factory.mktemp("coco")
    js = write_shapes_coco(root, {"train": 2}, size=32)
    return root, json.loads(open(js["train"]).read())


def _with(d, fn):
    d = copy.deepcopy(d)
    fn(d)
    return d


def _seg(d, seg):
    d["annotations"][0]["segmentation"] = seg


CASES = {
    "annotations null": (lambda d: d.update(annotations=None), "'annotations' is null"),
    "images as dict": (lambda d: d.update(images={"1": d["images"][0]}), "'images' is dict"),
    "category without id": (lambda d: d["categories"][0].pop("id"), "categories[0] has no id"),
    "string category id": (lambda d: d["categories"][0].update(id="1"), "categories[0] has id '1'"),
    "image without id": (lambda d: d["images"][0].pop("id"), "images[0] has no id"),
    "image without file_name": (lambda d: d["images"][0].pop("file_name"), "has no file_name"),
    "string width": (lambda d: d["images"][0].update(width="wide"), "width 'wide'"),
    "string category_id": (lambda d: d["annotations"][0].update(category_id="1"), "category_id '1'"),
    "string image_id": (lambda d: d["annotations"][0].update(image_id="1"), "image_id '1'"),
    "string area": (lambda d: d["annotations"][0].update(area="big"), "area 'big'"),
    "annotation not an object": (lambda d: d["annotations"].append([1, 2]), "is list, expected an object"),
    "polygon too short": (lambda d: _seg(d, [[1, 2, 3, 4]]), "polygon 0"),
    "polygon odd": (lambda d: _seg(d, [[1, 2, 3, 4, 5, 6, 7]]), "polygon 0"),
    "polygon of strings": (lambda d: _seg(d, [["a", "b", "c", "d", "e", "f"]]), "polygon 0"),
    "polygon not nested": (lambda d: _seg(d, [1, 2, 3, 4, 5, 6]), "polygon 0"),
    "rle without size": (lambda d: _seg(d, {"counts": "abc"}), "RLE 'size'"),
    "rle counts wrong sum": (lambda d: _seg(d, {"counts": [1, 2], "size": [32, 32]}), "RLE 'counts'"),
    "rle counts number": (lambda d: _seg(d, {"counts": 5, "size": [32, 32]}), "RLE 'counts'"),
    "segmentation string": (lambda d: _seg(d, "mask.png"), "segmentation is str"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_malformed_coco_is_one_clear_error(coco, tmp_path, case):
    root, good = coco
    fn, want = CASES[case]
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(_with(good, fn)))
    with pytest.raises(UserError) as ei:
        read_coco(p, root / "train")
    msg = str(ei.value)
    assert str(p) in msg and want in msg and "\n" not in msg, msg


def test_valid_rle_and_polygons_still_read(coco, tmp_path):
    root, good = coco
    d = _with(good, lambda d: _seg(d, {"counts": [1000, 24], "size": [32, 32]}))
    d["annotations"][1]["segmentation"] = [[1, 1, 10, 1, 10, 10]]
    p = tmp_path / "ok.json"
    p.write_text(json.dumps(d))
    assert len(read_coco(p, root / "train").images) == 2


VOC_XML = """<annotation><filename>{name}.jpg</filename>{size}
<object><name>square</name><difficult>0</difficult><bndbox><xmin>2</xmin><ymin>2</ymin><xmax>9</xmax><ymax>9</ymax></bndbox></object>
</annotation>"""


def test_voc_size_not_a_number(tmp_path):
    from transfer.data.detection.voc import voc_records

    (tmp_path / "a.jpg").write_bytes(b"")
    (tmp_path / "a.xml").write_text(VOC_XML.format(name="a", size="<size><width>abc</width><height>20</height></size>"))
    with pytest.raises(UserError, match=r"a\.xml: <size><width> is 'abc', not a whole number"):
        voc_records([tmp_path / "a.xml"], [tmp_path / "a.jpg"], ["square"], "t", "t")


def test_voc_without_size_and_not_an_image(tmp_path):
    from transfer.data.detection.voc import voc_records

    (tmp_path / "a.jpg").write_bytes(b"this is not a jpeg")
    (tmp_path / "a.xml").write_text(VOC_XML.format(name="a", size=""))
    with pytest.raises(UserError) as ei:
        voc_records([tmp_path / "a.xml"], [tmp_path / "a.jpg"], ["square"], "t", "t")
    assert "no <size>" in str(ei.value) and "a.jpg cannot be read as an image" in str(ei.value)
