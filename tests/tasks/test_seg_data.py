"""Segmentation readers: standard layouts, the nuclei set, and clear errors that name the file."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tests.tasks.seg_helpers import shapes
from transfer.data.segmentation import read_ade, read_cityscapes, read_nuclei, read_voc
from transfer.data.segmentation.nuclei import stardist_images
from transfer.errors import UserError


def test_voc_layout_reads_palette_masks_with_ignore(tmp_path):
    root = shapes(tmp_path / "voc", "voc")
    tr, va = read_voc(root, "train"), read_voc(root, "val")
    assert (len(tr), len(va)) == (4, 3) and tr.num_classes == 21
    img, mask, name = tr[0]
    assert img.shape == (40, 40, 3) and img.dtype == np.uint8 and mask.shape == (40, 40)
    assert 255 in np.unique(mask) and set(np.unique(mask)) <= {0, 1, 2, 3, 255}


def test_voc_aug_and_devkit_parent(tmp_path):
    root = shapes(tmp_path / "VOCdevkit" / "VOC2012", "voc")
    (root / "SegmentationClassAug").mkdir()
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(root / "SegmentationClassAug" / "val_0000.png")
    (root / "ImageSets/Segmentation/aug.txt").write_text("val_0000\n")
    tr = read_voc(tmp_path, "train")
    assert len(tr) == 5 and tr.pairs[-1][1].parent.name == "SegmentationClassAug"


def test_cityscapes_train_ids_and_label_ids(tmp_path):
    a = read_cityscapes(shapes(tmp_path / "c1", "cityscapes"), "val")
    b = read_cityscapes(shapes(tmp_path / "c2", "cityscapes", label_ids=True), "val")
    assert a.num_classes == 19 and len(a) == len(b) == 3
    for i in range(3):  # labelIds are mapped to the same trainIds
        assert np.array_equal(a[i][1], b[i][1])


def test_ade_reduce_zero_label(tmp_path):
    ds = read_ade(shapes(tmp_path / "ADEChallengeData2016", "ade"), "train")  # parent folder accepted below
    assert ds.num_classes == 150
    assert set(np.unique(ds[0][1])) <= {0, 1, 2, 3}
    assert len(read_ade(tmp_path, "val")) == 3


@pytest.mark.skipif(stardist_images() is None, reason="stardist wheel not installed (pip install --no-deps stardist==0.9.2)")
def test_nuclei_from_the_stardist_wheel():
    tr, va = read_nuclei(stardist_images(), tile=128, val_frac=0.25)
    assert len(tr) == 35 and len(va) == 4 and tr.classes == ["background", "nucleus"]
    img, mask, _ = va[0]
    assert img.shape == (128, 128, 3) and img.dtype == np.uint8 and set(np.unique(mask)) == {0, 1}
    assert 0.05 < np.mean([t[1].mean() for t in tr.items]) < 0.5


def test_nuclei_images_masks_folder(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    img = (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 7)
    inst = np.zeros((64, 64), np.uint16)
    inst[10:20, 10:20], inst[40:50, 30:45] = 1, 2
    Image.fromarray(img).save(tmp_path / "images" / "a.tif")
    Image.fromarray(inst).save(tmp_path / "masks" / "a.tif")
    tr, va = read_nuclei(tmp_path, tile=32, val_frac=0.5)
    assert len(va) == 2 and len(tr) > 0 and tr[0][0].shape == (32, 32, 3)


# ----------------------------------------------------------------------------- bad input
def test_mask_size_differs_names_the_file(tmp_path):
    root = shapes(tmp_path / "voc", "voc")
    bad = root / "SegmentationClass" / "train_0001.png"
    Image.fromarray(np.zeros((30, 40), np.uint8)).save(bad)
    ds = read_voc(root, "train")
    with pytest.raises(UserError, match="train_0001.png.*same size"):
        ds[1]


def test_label_values_outside_classes_name_the_file(tmp_path):
    root = shapes(tmp_path / "voc", "voc")
    bad = root / "SegmentationClass" / "val_0002.png"
    m = np.zeros((40, 40), np.uint8)
    m[0, 0] = 77
    m[1, 1] = 255  # ignore is fine
    Image.fromarray(m).save(bad)
    ds = read_voc(root, "val")
    with pytest.raises(UserError, match=r"val_0002.png: label values \[77\] are outside the 21 classes"):
        ds[2]


def test_missing_files_and_layout_parts(tmp_path):
    root = shapes(tmp_path / "voc", "voc")
    (root / "SegmentationClass" / "train_0003.png").unlink()
    with pytest.raises(UserError, match="mask file missing: .*train_0003.png"):
        read_voc(root, "train")
    (root / "JPEGImages" / "val_0000.jpg").unlink()
    with pytest.raises(UserError, match="image file missing: .*val_0000.jpg"):
        read_voc(root, "val")
    with pytest.raises(UserError, match="(?s)no JPEGImages/ folder found; expected layout:\n.*SegmentationClass"):
        read_voc(tmp_path / "nothing", "train")
    with pytest.raises(UserError, match="leftImg8bit/train/ missing"):
        read_cityscapes(tmp_path, "train")
    with pytest.raises(UserError, match="no nuclei image/mask pair"):
        read_nuclei(tmp_path)


def test_rgb_mask_is_refused_with_its_name(tmp_path):
    root = shapes(tmp_path / "voc", "voc")
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(root / "SegmentationClass" / "train_0000.png")
    with pytest.raises(UserError, match="train_0000.png: expected a single-channel label image"):
        read_voc(root, "train")[0]
