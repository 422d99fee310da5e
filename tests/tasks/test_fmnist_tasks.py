"""``fmnist_det`` and ``fmnist_seg`` run a few iterations on every engine of their kind that imports
here (torchvision / detectron2; embedded / mmseg), on small scenes read back through the COCO and
VOC readers; a random-init backbone is fed Fashion-MNIST's mean/std, a checkpoint keeps its own."""
from __future__ import annotations

import pytest
import torch

from tests.tasks import seg_mmcv_stub
from tests.tasks.det_helpers import d2_importable, tiny as det_tiny
from tests.tasks.fmnist_helpers import needs_fmnist, small_settings
from tests.tasks.seg_helpers import tiny as seg_tiny
from transfer.tasks import TASKS

pytestmark = needs_fmnist
D2_OK, D2_WHY = d2_importable()
HAVE_MMCV = seg_mmcv_stub.install()


def _mmseg():
    from transfer.engines import seg_mmseg

    seg_mmseg.available.cache_clear()
    return seg_mmseg.available() if HAVE_MMCV else (False, "mmcv not installed")


MM_OK, MM_WHY = _mmseg()
FMNIST_MEAN = pytest.approx([0.286] * 3)


def _det_settings(**over):
    t = TASKS.get("fmnist_det")
    s = det_tiny(t.settings, max_iter=2, min_size_train=[80], max_size=80, min_size_test=80)
    s.update(small_settings(n_test=3))
    s.update(over)
    return t, s


@pytest.mark.parametrize("engine,ckpt", [
    ("torchvision", "random:small_resnet18:0.125"),
    pytest.param("detectron2", "random:resnet18",  # no small-image stem, and R18 at full width only
                 marks=pytest.mark.skipif(not D2_OK, reason=f"detectron2 not importable: {D2_WHY}")),
])
def test_fmnist_det_runs_on_the_engine(tmp_path, engine, ckpt):
    from transfer.tasks.detection import run_detection

    torch.set_num_threads(1)
    t, s = _det_settings()
    r = run_detection(t, ckpt, engine, tmp_path / "data", tmp_path / "out", s, device="cpu")
    assert r["engine"] == engine and set(r["bbox"]) == {"AP", "AP50", "AP75", "APs", "APm", "APl"}
    assert r["data"]["train"]["images"] == 6 and r["data"]["test"]["images"] == 3
    assert r["data"]["test"]["source"].endswith("instances_test.json") and r["data"]["train"]["classes"] == 10
    assert r["model"]["pixel_mean"] == FMNIST_MEAN  # random init: the task's statistics, not ImageNet's
    assert (tmp_path / "out" / "results.json").is_file()


def test_fmnist_det_keeps_a_checkpoints_own_normalisation(tmp_path):
    from transfer.sources import load_source
    from transfer.tasks.detection import run_detection

    torch.set_num_threads(1)
    t, s = _det_settings(max_iter=1, n_test=2)
    src = load_source("random:small_resnet18:0.125")
    src.meta.update(mean=[0.5], std=[0.25])
    r = run_detection(t, src, "torchvision", tmp_path / "data", tmp_path / "out", s, device="cpu")
    assert r["model"]["pixel_mean"] == pytest.approx([0.5] * 3) and r["model"]["pixel_std"] == pytest.approx([0.25] * 3)


@pytest.mark.parametrize("engine,ckpt", [
    ("embedded", "random:small_resnet18:0.125"),
    pytest.param("mmseg", "random:resnet18:0.125",  # mmseg has no small-image stem
                 marks=pytest.mark.skipif(not MM_OK, reason=f"mmsegmentation not importable: {MM_WHY}")),
])
def test_fmnist_seg_runs_on_the_engine(tmp_path, engine, ckpt):
    from transfer.tasks import run_task

    torch.set_num_threads(1)
    kw = seg_tiny(crop_size=64, eval_limit=None)
    kw.update(small_settings(n_test=3))
    r = run_task("fmnist_seg", ckpt, data=str(tmp_path / "data"), out_dir=str(tmp_path / "out"), max_iter=2,
                 engine=engine, **kw)
    assert r["engine"] == engine and r["iters"] == 2 and r["num_val_images"] == 3
    assert r["num_classes"] == 11 and len(r["per_class_iou"]) == 11
    assert r["normalisation"]["mean"] == FMNIST_MEAN
    assert r["mIoU"] is not None and 0.0 <= r["mIoU"] <= 100.0
