"""The mmsegmentation engine: the config builder (pure dicts, always tested) and, wherever mmseg
imports, the built model, the converted weights reaching the backbone, and a short run whose
result keys equal the embedded engine's.

mmseg imports on the light install (``pip install mmcv-lite==2.1.0 mmengine mmsegmentation==1.2.2
ftfy regex``, about 3 minutes) with a test-only stand-in for mmcv's compiled ops
(:mod:`tests.tasks.seg_mmcv_stub`); without mmseg those tests are skipped with the reason.
"""
from __future__ import annotations

import importlib.util

import pytest
import torch

from tests.tasks import seg_mmcv_stub
from tests.tasks.seg_helpers import shapes, tiny
from transfer.engines import seg_mmseg
from transfer.errors import UserError

HAVE_MMCV = seg_mmcv_stub.install()
seg_mmseg.available.cache_clear()
MM_OK, MM_WHY = seg_mmseg.available() if HAVE_MMCV else (False, "mmcv not installed")
needs_mmseg = pytest.mark.skipif(not MM_OK, reason=f"mmsegmentation not importable ({MM_WHY}); install: "
                                 "pip install mmcv-lite==2.1.0 mmengine mmsegmentation==1.2.2 ftfy regex")
R50 = {"depth": 50, "small": False, "width": 1.0}
S = dict(crop_size=512, aux=True, aux_weight=0.4, output_stride=8, test_mode="whole")


def _fragment(tmp_path, arch):
    from converters.writers import get_writer

    from transfer.sources import random_backbone
    from transfer.backbones import arch_name, ArchSpec

    bb = random_backbone(arch_name(ArchSpec(**{k: arch[k] for k in ("depth", "small", "width")})), arch["width"])
    w = get_writer("mmseg")
    conv, _ = w.convert(bb.state_dict(), arch)
    paths = w.save(tmp_path / "bb.pth", conv, {"arch": arch})
    return bb, paths[0], seg_mmseg.read_fragment(paths[1])


def test_fcn_r50_d8_config_matches_the_base_config(tmp_path):
    _, weights, frag = _fragment(tmp_path, {"depth": 18, "small": False, "width": 0.125})
    m = seg_mmseg.model_config(arch=R50, weights=None, num_classes=21, settings=dict(S, head="fcn"),
                               mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    b, d, a = m["backbone"], m["decode_head"], m["auxiliary_head"]
    assert b["type"] == "ResNet" and b["depth"] == 50 and b["dilations"] == (1, 1, 2, 4) and b["strides"] == (1, 2, 1, 1)
    assert b["contract_dilation"] and not b["deep_stem"]
    assert (d["type"], d["in_channels"], d["channels"], d["num_convs"], d["concat_input"]) == ("FCNHead", 2048, 512, 2, True)
    assert (a["in_channels"], a["channels"], a["in_index"], a["loss_decode"]["loss_weight"]) == (1024, 256, 2, 0.4)
    assert m["data_preprocessor"]["mean"] == pytest.approx([123.675, 116.28, 103.53])
    # the converters' fragment is the source of the backbone's init_cfg
    m18 = seg_mmseg.model_config(arch={"depth": 18, "small": False, "width": 0.125}, weights=str(weights),
                                 num_classes=4, settings=dict(S, head="upernet"), mean=(0.5,) * 3, std=(0.5,) * 3,
                                 fragment=frag)
    assert m18["backbone"]["init_cfg"] == dict(type="Pretrained", checkpoint=str(weights.resolve()), prefix="backbone.")
    assert m18["backbone"]["base_channels"] == 8 and m18["backbone"]["norm_cfg"]["type"] == "BN"
    assert m18["decode_head"]["type"] == "UPerHead" and m18["decode_head"]["in_channels"] == [8, 16, 32, 64]
    assert m18["backbone"]["dilations"] == (1, 1, 1, 1)


def test_config_refuses_what_mmseg_cannot_build():
    with pytest.raises(UserError, match="small-image"):
        seg_mmseg.model_config(arch={"depth": 18, "small": True, "width": 1.0}, weights=None, num_classes=2,
                               settings=dict(S, head="fcn"), mean=(0,) * 3, std=(1,) * 3)
    with pytest.raises(UserError, match="deeplabv3 runs on --engine embedded"):
        seg_mmseg.model_config(arch=R50, weights=None, num_classes=2, settings=dict(S, head="deeplabv3"),
                               mean=(0,) * 3, std=(1,) * 3)


def test_full_config_datasets_and_schedule(tmp_path):
    data = shapes(tmp_path / "voc", "voc")
    cfg = seg_mmseg.build_config(arch={"depth": 18, "small": False, "width": 0.125}, weights=None, fragment=None,
                                 classes=["bg", "a", "b", "c"], mm_layout="voc", data=data, prepared=None,
                                 settings=dict(tiny(), head="fcn", max_iter=20000, lr=0.01, momentum=0.9,
                                               weight_decay=5e-4, min_lr=1e-4, power=0.9, seed=0),
                                 work_dir=tmp_path / "w", mean=(0.5,) * 3, std=(0.5,) * 3, train_size=(40, 40))
    tr = cfg["train_dataloader"]["dataset"]
    assert tr["ann_file"] == "ImageSets/Segmentation/train.txt" and tr["data_prefix"]["seg_map_path"] == "SegmentationClass"
    assert cfg["param_scheduler"][0]["type"] == "PolyLR" and cfg["param_scheduler"][0]["power"] == 0.9
    assert cfg["train_cfg"]["max_iters"] == 20000 and cfg["optim_wrapper"]["optimizer"]["type"] == "SGD"
    assert [t["type"] for t in tr["pipeline"]][:4] == ["LoadImageFromFile", "LoadAnnotations", "RandomResize", "RandomCrop"]
    assert cfg["test_dataloader"]["dataset"]["indices"] == 3


@needs_mmseg
def test_built_model_carries_our_weights(tmp_path):
    from mmengine.config import Config
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules

    register_all_modules()
    arch = {"depth": 18, "small": False, "width": 0.125}
    bb, weights, frag = _fragment(tmp_path, arch)
    m = seg_mmseg.model_config(arch=arch, weights=str(weights), num_classes=4, settings=dict(S, crop_size=32, head="fcn"),
                               mean=(0.5,) * 3, std=(0.5,) * 3, fragment=frag)
    model = MODELS.build(Config(dict(model=m)).model)
    model.init_weights()
    ours = bb.state_dict()
    theirs = model.backbone.state_dict()
    for k in ("conv1.weight", "layer1.0.conv1.weight", "layer4.1.bn2.running_var", "layer3.0.downsample.0.weight"):
        assert torch.equal(ours[k], theirs[k]), k
    model.eval()
    out = model(torch.zeros(1, 3, 32, 32), mode="tensor")
    assert out.shape == (1, 4, 4, 4)  # output stride 8 before the final resize


@needs_mmseg
def test_short_run_has_the_embedded_engines_keys(tmp_path):
    from transfer.tasks import run_task

    data = shapes(tmp_path / "data", "voc")
    kw = dict(data=str(data), max_iter=2, n_train=4, n_val=3, image_size=40, **tiny())
    mm = run_task("shapes_seg", "random:resnet18:0.125", out_dir=str(tmp_path / "mm"), engine="mmseg", **kw)
    emb = run_task("shapes_seg", "random:resnet18:0.125", out_dir=str(tmp_path / "emb"), engine="embedded", **kw)
    assert mm["engine"] == "mmseg" and mm["iters"] == 2 and mm["num_val_images"] == 3
    common = {"mIoU", "aAcc", "mAcc", "per_class_iou", "per_class_acc", "pixels", "iters", "max_iter",
              "num_val_images", "train_time_s", "eval_time_s", "device", "report"}
    assert common <= set(mm) and common <= set(emb)
    assert list(mm["per_class_iou"]) == list(emb["per_class_iou"]) and mm["pixels"] == emb["pixels"]
    assert len(list((tmp_path / "mm" / "report").glob("*.png"))) == 2
    ev = run_task("shapes_seg", "random:resnet18:0.125", out_dir=str(tmp_path / "mm"), engine="mmseg", eval_only=True, **kw)
    assert ev["mIoU"] == mm["mIoU"]


def test_unavailable_reason_is_stated():
    ok, why = seg_mmseg.available()
    assert ok or why, "an unavailable engine must say why"
    if importlib.util.find_spec("mmseg") is None:
        assert "not installed" in why
