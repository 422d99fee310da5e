"""Every detection task's pipeline, a few iterations on synthetic data in the task's own layout
(COCO json for coco_det / coco_det_c4 / shapes_det, Pascal VOC for voc_det / shapes_det, the
deepforest folder layout for trees_det), with the torchvision engine on CPU; plus resume,
--eval-only, the CLI, and a checkpoint of the wrong architecture."""
from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("pycocotools")

from transfer.data.detection import write_shapes_coco, write_shapes_voc  # noqa: E402
from transfer.errors import UserError  # noqa: E402
from transfer.tasks import TASKS  # noqa: E402
from transfer.tasks import run_task  # noqa: E402
from transfer.tasks.detection import run_detection  # noqa: E402

from .det_helpers import tiny, write_fake_deepforest  # noqa: E402

CKPT = "random:small_resnet18:0.125"
METRICS = {"AP", "AP50", "AP75", "APs", "APm", "APl"}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("detdata")
    write_shapes_coco(root / "coco", {"train2017": 6, "val2017": 3}, size=64)
    write_shapes_voc(root / "voc", {"2007": {"trainval": 4, "test": 3}, "2012": {"trainval": 2}}, size=64)
    write_fake_deepforest(root / "trees", size=64)
    return root


CASES = [  # task, data folder, extra settings
    ("coco_det", "coco", {}),
    ("coco_det_c4", "coco", {}),
    ("voc_det", "voc", {}),
    ("trees_det", "trees", {"tile": 64}),
    ("shapes_det", "shapes", {"format": "coco", "n_train": 4, "n_test": 2, "image_size": 64}),
    ("shapes_det", "shapes", {"format": "voc", "n_train": 4, "n_test": 2, "image_size": 64}),
]


@pytest.mark.parametrize("name,folder,extra", CASES, ids=[f"{c[0]}-{c[1]}-{c[2].get('format', '')}" for c in CASES])
def test_every_task_pipeline(data, tmp_path, name, folder, extra):
    torch.set_num_threads(1)
    task = TASKS.get(name)
    s = tiny(task.settings, max_iter=2, **extra)
    r = run_detection(task, CKPT, "torchvision", data / folder, tmp_path / "out", s, device="cpu")
    assert set(r["bbox"]) == METRICS
    masks = bool(s["mask_on"]) and folder != "voc" and extra.get("format") != "voc" and name != "trees_det"
    assert ("segm" in r) == masks and (set(r["segm"]) == METRICS if "segm" in r else True)
    assert ("voc07_AP50" in r) == (name == "voc_det" or extra.get("format") == "voc")
    assert r["train"]["max_iter"] == 2 and r["schedule"]["schedule_scaled_from"] == task.settings["max_iter"]
    saved = json.loads((tmp_path / "out" / "results.json").read_text())  # strict JSON: NaN written as null
    assert saved["bbox"].keys() == r["bbox"].keys()
    md = (tmp_path / "out" / "report.md").read_text()
    assert "| bbox |" in md and "report_images/" in md
    assert len(r["report"]["images"]) == min(2, r["data"]["test"]["images"])
    if name == "trees_det":
        assert r["data"]["test"]["images"] == 1 and r["data"]["train"]["images"] == 5


def test_resume_eval_only_and_config_guard(data, tmp_path):
    torch.set_num_threads(1)
    task = TASKS.get("shapes_det")
    s = tiny(task.settings, max_iter=3, format="coco", n_train=4, n_test=2, image_size=64)
    out = tmp_path / "run"
    first = run_detection(task, CKPT, "torchvision", data / "shapes", out, s, device="cpu")
    assert first["train"]["start_iter"] == 0
    # simulate an interruption after iteration 1: the run resumes there
    st = torch.load(out / "last.pt", weights_only=True)
    st["iter"] = 1
    torch.save(st, out / "last.pt")
    again = run_detection(task, CKPT, "torchvision", data / "shapes", out, s, device="cpu")
    assert again["train"]["start_iter"] == 1 and again["train"]["max_iter"] == 3
    ev = run_detection(task, CKPT, "torchvision", data / "shapes", out, s, eval_only=True, device="cpu")
    assert ev["eval_only"] and ev["bbox"] == again["bbox"]
    with pytest.raises(UserError, match="other settings or weights"):
        run_detection(task, CKPT, "torchvision", data / "shapes", out, dict(s, base_lr=0.5), device="cpu")
    with pytest.raises(UserError, match="no trained model"):
        run_detection(task, CKPT, "torchvision", data / "shapes", tmp_path / "empty", s, eval_only=True, device="cpu")


def test_wrong_architecture_and_bad_inputs(data, tmp_path):
    from transfer.backbones import build_backbone
    from transfer.checkpoint import export_backbone

    bad = tmp_path / "bad.safetensors"
    export_backbone(bad, build_backbone("small_resnet18", 0.125), {"arch": {"depth": 50, "small": True, "width": 0.125}})
    with pytest.raises(UserError, match=r"bad\.safetensors: weights do not fit"):
        run_task("shapes_det", str(bad), data=data / "shapes", out_dir=tmp_path / "o", max_iter=1, device="cpu")
    with pytest.raises(UserError, match="not raw pixels"):
        run_task("shapes_det", "pixels", data=data / "shapes", out_dir=tmp_path / "o", max_iter=1, device="cpu")
    with pytest.raises(UserError, match="unknown setting 'lrr'"):
        run_task("shapes_det", CKPT, data=data / "shapes", out_dir=tmp_path / "o", lrr=1)
    with pytest.raises(UserError, match="expected layout"):
        run_task("coco_det", CKPT, data=tmp_path / "nowhere", out_dir=tmp_path / "o")
    with pytest.raises(UserError, match="detectron2|runs on"):
        run_task("shapes_det", CKPT, data=data / "shapes", engine="mmdet", out_dir=tmp_path / "o")


def test_cli_list_and_run(data, tmp_path, capsys):
    from transfer.cli import main

    torch.set_num_threads(1)
    assert main(["run", "--list"]) == 0
    listing = capsys.readouterr().out
    for name in ("coco_det", "coco_det_c4", "voc_det", "trees_det", "shapes_det"):
        assert name in listing
    assert "torchvision" in listing
    # overrides right after the task name: run.py's argparse takes positionals in one run
    args = ["run", "shapes_det", "--ckpt", CKPT, "--engine", "torchvision", "--data", str(data / "shapes"),
            "--out", str(tmp_path / "cli"), "--max-iter", "1", "--device", "cpu"]
    args[2:2] = [f"{k}={json.dumps(v)}" for k, v in tiny({}, format="voc", n_train=4, n_test=2, image_size=64,
                                                     **{k: v for k, v in tiny(TASKS.get("shapes_det").settings).items()
                                                        if k in ("fpn_channels", "min_size_train", "max_size",
                                                                 "min_size_test", "progress", "workers")}).items()]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["task"] == "shapes_det" and "voc07_AP50" in out and set(out["bbox"]) == METRICS
