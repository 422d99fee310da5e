"""The detectron2 engine: its config builder against MoCo's published configs (always), dataset
registration and a two-iteration run (wherever detectron2 imports, with the test-only shims for
the detectron2-cdo 0.5 sdist)."""
from __future__ import annotations

import pytest

from transfer.tasks import TASKS
from transfer.engines.det_detectron2 import build_config

from .det_helpers import d2_importable, tiny, write_fake_deepforest  # noqa: F401
from .det_moco_configs import flatten, load_moco

R50 = {"depth": 50, "small": False, "width": 1.0}
IMAGENET = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
# Keys that name things rather than set them: MoCo's WEIGHTS is "See Instructions" (ours: the
# converted .pkl); DATASETS name detectron2's builtin sets (ours: the splits we register).
NOT_COMPARED = {"MODEL.WEIGHTS", "DATASETS.TRAIN", "DATASETS.TEST"}


@pytest.mark.parametrize("task,fixture,num_classes", [
    ("voc_det", "pascal_voc_R_50_C4_24k_moco.yaml", 20),
    ("coco_det_c4", "coco_R_50_C4_2x_moco.yaml", 80),
])
def test_config_matches_moco_key_by_key(task, fixture, num_classes):
    ours = flatten(build_config(TASKS.get(task).settings, weights="w.pkl", arch=R50, num_classes=num_classes,
                                train_names=["tr"], test_names=["te"], out_dir="out",
                                pixel_mean=IMAGENET[0], pixel_std=IMAGENET[1]))
    moco = flatten(load_moco(fixture))
    assert moco.get("ROI_HEADS.NUM_CLASSES", moco.get("MODEL.ROI_HEADS.NUM_CLASSES", 80)) == num_classes
    compared = 0
    for key, want in moco.items():
        if key in NOT_COMPARED:
            continue
        assert key in ours, f"{key} missing from the generated config"
        got = ours[key]
        if isinstance(want, list):
            assert [float(v) for v in got] == pytest.approx([float(v) for v in want]), key
        else:
            assert got == want, f"{key}: generated {got!r}, MoCo {want!r}"
        compared += 1
    assert compared >= 15


def test_coco_det_fpn_config_has_syncbn_in_backbone_and_fpn():
    c = flatten(build_config(TASKS.get("coco_det").settings, weights="w.pkl", arch=R50, num_classes=80,
                             train_names=["tr"], test_names=["te"], out_dir="out",
                             pixel_mean=IMAGENET[0], pixel_std=IMAGENET[1]))
    assert c["MODEL.RESNETS.NORM"] == "SyncBN" and c["MODEL.FPN.NORM"] == "SyncBN"
    assert c["MODEL.BACKBONE.FREEZE_AT"] == 0 and c["MODEL.MASK_ON"] is True
    assert c["MODEL.BACKBONE.NAME"] == "build_resnet_fpn_backbone"
    assert c["SOLVER.MAX_ITER"] == 90000 and c["SOLVER.STEPS"] == [60000, 80000]


def test_small_stem_refused():
    from transfer.errors import UserError

    with pytest.raises(UserError, match="small-image stem"):
        build_config(TASKS.get("voc_det").settings, weights="w", arch={"depth": 18, "small": True}, num_classes=3,
                     train_names=[], test_names=[], out_dir="o", pixel_mean=IMAGENET[0], pixel_std=IMAGENET[1])


_OK, _WHY = d2_importable()
needs_d2 = pytest.mark.skipif(not _OK, reason=f"detectron2 not importable: {_WHY}")


@needs_d2
def test_generated_config_merges_into_detectron2_and_datasets_register(tmp_path):
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from transfer.data.detection import read_coco, write_shapes_coco
    from transfer.engines.det_detectron2 import register_datasets, register_extra_norm_heads, to_cfgnode

    js = write_shapes_coco(tmp_path, {"train": 3, "val": 2}, size=64)
    tr = read_coco(js["train"], tmp_path / "train")
    te = read_coco(js["val"], tmp_path / "val")
    names = register_datasets("t_det", tr, te)
    dicts = DatasetCatalog.get(names[0])
    assert len(dicts) == 3 and dicts[0]["annotations"][0]["category_id"] in (0, 1, 2)
    md = MetadataCatalog.get(names[0])
    assert md.thing_classes == ["square", "disk", "triangle"]
    assert md.thing_dataset_id_to_contiguous_id == {1: 0, 3: 1, 7: 2}
    register_extra_norm_heads()
    for task in ("coco_det", "coco_det_c4", "voc_det"):
        cfg = to_cfgnode(build_config(TASKS.get(task).settings, weights="w.pkl", arch=R50, num_classes=3,
                                      train_names=names[:1], test_names=names[1:], out_dir=str(tmp_path),
                                      pixel_mean=IMAGENET[0], pixel_std=IMAGENET[1], device="cpu"))
        assert cfg.MODEL.RESNETS.STRIDE_IN_1X1 is False and cfg.INPUT.FORMAT == "RGB"


@needs_d2
@pytest.mark.parametrize("task", ["shapes_det", "voc_det"])
def test_detectron2_engine_runs_two_iterations(tmp_path, task):
    import torch

    from transfer.data.detection import write_shapes_voc
    from transfer.tasks.detection import run_detection

    torch.set_num_threads(1)
    t = TASKS.get(task)
    s = tiny(t.settings, max_iter=2, fpn_channels=16, norm="BN", fpn_norm="BN")
    if task == "shapes_det":
        s.update(format="coco", n_train=4, n_test=2, image_size=64)
        data = tmp_path / "shapes"
    else:
        data = write_shapes_voc(tmp_path / "voc", {"2007": {"trainval": 4, "test": 2}, "2012": {"trainval": 2}}, size=64)
    r = run_detection(t, "random:resnet18", "detectron2", data, tmp_path / "out", s, device="cpu")
    assert r["engine"] == "detectron2" and set(r["bbox"]) == {"AP", "AP50", "AP75", "APs", "APm", "APl"}
    assert ("voc07_AP50" in r) == (task == "voc_det")
