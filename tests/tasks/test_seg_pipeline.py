"""A few iterations of every segmentation task's pipeline (embedded engine) on synthetic data,
resume, --eval-only, the CLI, the report, and errors for bad input."""
from __future__ import annotations

import json

import pytest
import torch

from tests.tasks.seg_helpers import TINY_CKPT, shapes, tiny
from transfer.commands import run as run_cmd
from transfer.data.segmentation.nuclei import stardist_images
from transfer.engines.seg_embedded import dilate_backbone
from transfer.errors import UserError
from transfer.tasks import TASKS
from transfer.tasks import run_task

KEYS = {"task", "engine", "ckpt", "mIoU", "aAcc", "mAcc", "per_class_iou", "per_class_acc", "pixels", "iters",
        "max_iter", "num_val_images", "settings", "report", "results_file"}


def check_result(res, out, task, n_classes):
    assert KEYS <= set(res), KEYS - set(res)
    assert res["task"] == task and res["engine"] == "embedded" and res["iters"] == res["max_iter"]
    assert len(res["per_class_iou"]) == n_classes and 0 <= res["mIoU"] <= 100
    saved = json.loads((out / "results.json").read_text())
    assert saved["mIoU"] == res["mIoU"]
    assert (out / "report.md").is_file() and (out / "report.html").is_file()
    pngs = sorted((out / "report").glob("*.png"))
    assert len(pngs) == min(2, res["num_val_images"])


@pytest.mark.parametrize("task,layout,extra", [
    ("voc_seg", "voc", {}),
    ("cityscapes_seg", "cityscapes", {"test_mode": "slide", "test_stride": 24}),
    ("ade_seg", "ade", {"head": "deeplabv3"}),
])
def test_benchmark_tasks_on_synthetic_layouts(tmp_path, task, layout, extra):
    data = shapes(tmp_path / "data", layout)
    out = tmp_path / "out"
    res = run_task(task, TINY_CKPT, data=str(data), out_dir=str(out), max_iter=2, engine="embedded",
                   **tiny(**extra))
    check_result(res, out, task, TASKS.get(task).name and {"voc_seg": 21, "cityscapes_seg": 19, "ade_seg": 150}[task])


def test_shapes_task_generates_its_data(tmp_path):
    res = run_task("shapes_seg", TINY_CKPT, data=str(tmp_path / "gen"), out_dir=str(tmp_path / "out"), max_iter=2,
                   n_train=4, n_val=3, image_size=40, **tiny())
    check_result(res, tmp_path / "out", "shapes_seg", 4)
    assert (tmp_path / "gen" / "ImageSets" / "Segmentation" / "val.txt").is_file()


@pytest.mark.skipif(stardist_images() is None, reason="stardist wheel not installed (pip install --no-deps stardist==0.9.2)")
def test_nuclei_task_on_the_real_image(tmp_path):
    res = run_task("nuclei_seg", TINY_CKPT, out_dir=str(tmp_path / "out"), max_iter=2, **tiny(eval_limit=1))
    check_result(res, tmp_path / "out", "nuclei_seg", 2)
    assert res["num_train_images"] == 35 and res["num_val_images"] == 1


def test_resume_continues_exactly_and_eval_only_reuses_the_model(tmp_path):
    data = shapes(tmp_path / "data", "voc")
    kw = dict(data=str(data), max_iter=4, n_train=4, n_val=3, image_size=40, **tiny())
    straight = run_task("shapes_seg", TINY_CKPT, out_dir=str(tmp_path / "a"), **kw)
    part = run_task("shapes_seg", TINY_CKPT, out_dir=str(tmp_path / "b"), stop_after=2, **kw)
    assert part["iters"] == 2 and part["stopped_at"] == 2
    resumed = run_task("shapes_seg", TINY_CKPT, out_dir=str(tmp_path / "b"), **kw)
    assert resumed["iters"] == 4
    a = torch.load(tmp_path / "a" / "train_state.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "b" / "train_state.pt", weights_only=True)["model"]
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert resumed["mIoU"] == straight["mIoU"]
    ev = run_task("shapes_seg", TINY_CKPT, out_dir=str(tmp_path / "b"), eval_only=True, **kw)
    assert ev["mIoU"] == straight["mIoU"] and ev["iters"] == 4
    with pytest.raises(UserError, match="no trained model"):
        run_task("shapes_seg", TINY_CKPT, out_dir=str(tmp_path / "c"), eval_only=True, **kw)
    with pytest.raises(UserError, match="belongs to another run"):
        run_task("shapes_seg", "random:small_resnet18:0.125:7", out_dir=str(tmp_path / "b"), **kw)
    # a finished run is not reused under another schedule or seed (it used to be evaluated as if
    # trained with the new settings: a shorter --max-iter reported the longer run's model)
    with pytest.raises(UserError, match="trained with max_iter=4, now max_iter=2"):
        run_task("shapes_seg", TINY_CKPT, out_dir=str(tmp_path / "b"), **{**kw, "max_iter": 2})
    with pytest.raises(UserError, match="trained with seed=0, now seed=1"):
        run_task("shapes_seg", TINY_CKPT, out_dir=str(tmp_path / "b"), seed=1, **kw)


def main(argv):
    """``transfer run`` through its own parser (as transfer.cli does), independent of other stages."""
    import argparse

    p = argparse.ArgumentParser(prog="transfer")
    sub = p.add_subparsers(dest="command")
    run_cmd.register(sub)
    args = p.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as e:
        import sys

        print(f"transfer run: error: {e}", file=sys.stderr)
        return 2


def test_cli_run_and_list(tmp_path, capsys):
    data = shapes(tmp_path / "data", "voc")
    rc = main(["run", "voc_seg", "batch_size=2", "crop_size=32", "scale=null", "test_scale=null", "workers=0",
               "eval_limit=2", "report_images=2", "progress=false", "--ckpt", TINY_CKPT, "--engine", "embedded",
               "--data", str(data), "--out", str(tmp_path / "out"), "--max-iter", "1", "--device", "cpu"])
    assert rc == 0
    res = json.loads(capsys.readouterr().out)
    assert res["iters"] == 1 and res["engine"] == "embedded"
    assert main(["run", "--list"]) == 0
    listing = capsys.readouterr().out
    for t in ("voc_seg", "cityscapes_seg", "ade_seg", "nuclei_seg", "shapes_seg"):
        assert t in listing
    assert main(["run", "voc_seg", "--ckpt", TINY_CKPT, "--data", str(tmp_path / "missing")]) == 2
    assert "expected layout" in capsys.readouterr().err


def test_bad_settings_and_engines(tmp_path):
    data = shapes(tmp_path / "data", "voc")
    with pytest.raises(UserError, match="unknown setting 'bogus'"):
        run_task("voc_seg", TINY_CKPT, data=str(data), bogus=1)
    with pytest.raises(UserError, match="embedded engine heads"):
        run_task("voc_seg", TINY_CKPT, data=str(data), out_dir=str(tmp_path / "o"), max_iter=1, engine="embedded",
                 **tiny(head="upernet"))
    with pytest.raises(UserError, match="not 'nope'|not available|small-image"):
        run_task("voc_seg", TINY_CKPT, data=str(data), out_dir=str(tmp_path / "o"), engine="mmseg", **tiny())


@pytest.mark.parametrize("arch,expect", [("resnet18", 8), ("resnet50", 8), ("small_resnet18", 8)])
def test_dilated_backbone_output_stride(arch, expect):
    from transfer.backbones import build_backbone

    bb = dilate_backbone(build_backbone(arch, width=0.125), 8)
    x = torch.zeros(1, 3, 64, 64)
    assert bb.forward_stages(x)["res5"].shape[-1] == 64 // expect
    bb16 = dilate_backbone(build_backbone(arch, width=0.125), 16)
    assert bb16.forward_stages(x)["res5"].shape[-1] == 64 // 16 if arch != "small_resnet18" else True
