"""The torchvision (detection) and embedded (segmentation) engines and the readers they use: malformed
input is one UserError line naming the file at fault, never a traceback, and ``--eval-only`` / resume
on a poisoned engine checkpoint (code in a pickle, a truncated or empty file, a foreign object, a
state dict of the wrong shapes) is one line and executes nothing (issue 17, section 4 item 8)."""
from __future__ import annotations

import json
import os
import pickle
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("pycocotools")

from tests.tasks.det_helpers import tiny as det_tiny  # noqa: E402
from tests.tasks.det_helpers import write_fake_deepforest  # noqa: E402
from tests.tasks.seg_helpers import TINY_CKPT, shapes  # noqa: E402
from tests.tasks.seg_helpers import tiny as seg_tiny  # noqa: E402
from transfer.data.detection import write_shapes_coco  # noqa: E402
from transfer.engines import det_torchvision as tv  # noqa: E402
from transfer.errors import UserError  # noqa: E402
from transfer.tasks import TASKS  # noqa: E402
from transfer.tasks.detection import run_detection  # noqa: E402
from transfer.tasks import run_task as run_seg  # noqa: E402

CKPT = "random:small_resnet18:0.125"


def one_line(ei, *names) -> str:
    msg = str(ei.value)
    assert "\n" not in msg, msg
    for n in names:
        assert str(n) in msg, (n, msg)
    return msg


class Payload:
    """Unpickling this runs ``open(marker, 'w')``: the poisoned file must never get that far."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def poison(kind: str, path, good, marker) -> None:
    """Write a hostile or broken engine checkpoint of ``kind`` at ``path`` (``good``: a real one)."""
    if kind == "pickle payload":
        path.write_bytes(pickle.dumps({"model": Payload(marker)}))
    elif kind == "torch.save payload":
        torch.save({"model": Payload(marker), "iter": 1, "fingerprint": None}, path)
    elif kind == "truncated":
        path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "not a dict":
        torch.save([1, 2, 3], path)
    elif kind == "model not a state dict":
        torch.save({"model": torch.zeros(3), "iter": 1}, path)
    elif kind == "wrong shapes":
        st = torch.load(good, weights_only=True)
        st["model"] = {k: torch.zeros(2) for k in st["model"]}
        torch.save(st, path)
    else:
        raise AssertionError(kind)


POISONS = ["pickle payload", "torch.save payload", "truncated", "empty", "not a dict", "model not a state dict",
           "wrong shapes"]


# --------------------------------------------------------------------------- torchvision engine
@pytest.fixture(scope="module")
def det(tmp_path_factory):
    """COCO shapes data (with masks) and a run folder holding a trained (1 iteration) model."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("engdet")
    write_shapes_coco(root / "coco", {"train2017": 4, "val2017": 2}, size=64)
    task = TASKS.get("coco_det")
    s = det_tiny(task.settings, max_iter=1)
    run_detection(task, CKPT, "torchvision", root / "coco", root / "run", s, device="cpu")
    return root, task, s


def _det_copy(det, tmp_path):
    root, task, s = det
    data = tmp_path / "coco"
    shutil.copytree(root / "coco", data)
    out = tmp_path / "run"
    out.mkdir()
    shutil.copy(root / "run" / "model_final.pt", out / "model_final.pt")
    return data, out, task, s


def _bomb(path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 64x64 is > 2x the limit: Pillow refuses it


@pytest.mark.parametrize("kind", ["garbage", "truncated", "bomb"])
def test_det_unreadable_test_image_is_one_line(det, tmp_path, monkeypatch, kind):
    data, out, task, s = _det_copy(det, tmp_path)
    img = sorted((data / "val2017").glob("*.png"))[0]
    if kind == "garbage":
        img.write_bytes(b"not an image at all")
    elif kind == "truncated":
        img.write_bytes(img.read_bytes()[:80])
    else:
        _bomb(img, monkeypatch)
    with pytest.raises(UserError) as ei:
        run_detection(task, CKPT, "torchvision", data, out, s, eval_only=True, device="cpu")
    one_line(ei, img if kind != "bomb" else "val2017_0000", "cannot read image")


def test_det_load_image_missing_file(tmp_path):
    with pytest.raises(UserError) as ei:
        tv.load_image(str(tmp_path / "gone.png"))
    one_line(ei, "image file missing", tmp_path / "gone.png")


def _rle(h, w):
    from pycocotools import mask as mask_util

    m = np.zeros((h, w), np.uint8, order="F")
    m[1:4, 1:4] = 1
    r = mask_util.encode(m)
    return {"size": [h, w], "counts": r["counts"].decode()}


@pytest.mark.parametrize("seg,want", [
    (_rle(10, 10), "mask RLE size [10, 10] (height, width) is not the image's [64, 64]"),
    ({"size": [64, 64], "counts": "\x01garbage"}, "cannot decode its mask"),
])
def test_det_training_mask_errors_name_the_file(det, tmp_path, seg, want):
    data, out, task, s = _det_copy(det, tmp_path)
    js = data / "annotations" / "instances_train2017.json"
    d = json.loads(js.read_text())
    for a in d["annotations"]:
        a["segmentation"] = seg
    js.write_text(json.dumps(d))
    with pytest.raises(UserError) as ei:
        run_detection(task, CKPT, "torchvision", data, tmp_path / "train", s, device="cpu")
    one_line(ei, js, "train2017_0000", want)


def test_trees_reader_unreadable_image(tmp_path):
    from transfer.data.detection.trees import write_tree_tiles

    src = write_fake_deepforest(tmp_path / "df", size=64)
    (src / "SOAP_061.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(UserError) as ei:
        write_tree_tiles(src, tmp_path / "tiles", tile=64)
    one_line(ei, src / "SOAP_061.png", src / "SOAP_061.xml")


# A poisoned model_final.pt read by --eval-only, or a poisoned last.pt read to resume (same settings).
DET_POISONS = ([("model_final.pt", True, "--eval-only", k) for k in POISONS]
               + [("last.pt", False, "resume", k) for k in ("pickle payload", "truncated", "wrong shapes")])


@pytest.mark.parametrize("fname,eval_only,said,kind", DET_POISONS, ids=[f"{c[0]}-{c[3]}" for c in DET_POISONS])
def test_det_poisoned_checkpoint(det, tmp_path, fname, eval_only, said, kind):
    data, out, task, s = _det_copy(det, tmp_path)
    marker = tmp_path / "EXECUTED"
    target = out / fname
    poison(kind, target, det[0] / "run" / fname, marker)
    with pytest.raises(UserError) as ei:
        run_detection(task, CKPT, "torchvision", data, out, s, eval_only=eval_only, device="cpu")
    one_line(ei, said, target)
    assert not marker.exists()


def test_det_eval_only_poisoned_checkpoint_cli_is_one_line(det, tmp_path, capsys):
    from transfer.cli import main

    data, out, task, s = _det_copy(det, tmp_path)
    marker = tmp_path / "EXECUTED"
    poison("torch.save payload", out / "model_final.pt", None, marker)
    args = ["run", "coco_det", *[f"{k}={json.dumps(v)}" for k, v in s.items() if k in det_tiny({}).keys() or k in
                                 ("max_iter", "progress", "workers")],
            "--ckpt", CKPT, "--engine", "torchvision", "--data", str(data), "--out", str(out), "--eval-only",
            "--device", "cpu"]
    rc = main(args)
    err = capsys.readouterr().err
    errors = [ln for ln in err.splitlines() if "error" in ln]
    assert rc == 2 and len(errors) == 1 and "Traceback" not in err, err
    assert str(out / "model_final.pt") in errors[0] and "nothing was executed" in errors[0]
    assert not marker.exists()


# --------------------------------------------------------------------------- embedded engine
@pytest.fixture(scope="module")
def seg(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("engseg")
    data = shapes(root / "data", "voc")
    run_seg("voc_seg", TINY_CKPT, data=str(data), out_dir=str(root / "run"), max_iter=1, engine="embedded",
            **seg_tiny())
    return root, data


def _seg_copy(seg, tmp_path):
    root, data = seg
    d = tmp_path / "data"
    shutil.copytree(data, d)
    out = tmp_path / "run"
    shutil.copytree(root / "run", out)
    return d, out


def _voc_files(d, split="val"):
    from transfer.data.segmentation.layouts import voc_root

    r = voc_root(d)
    first = (r / "ImageSets" / "Segmentation" / f"{split}.txt").read_text().split()[0]
    return r / "JPEGImages" / f"{first}.jpg", r / "SegmentationClass" / f"{first}.png"


def _rgb_mask(img, mask):
    Image.fromarray(np.zeros((*Image.open(mask).size[::-1], 3), np.uint8)).save(mask)


def _small_mask(img, mask):
    Image.fromarray(np.zeros((5, 7), np.uint8)).save(mask)


def _float_mask(img, mask):
    Image.fromarray(np.zeros(Image.open(mask).size[::-1], np.float32), mode="F").save(mask.with_suffix(".tif"),
                                                                                       format="TIFF")
    os.replace(mask.with_suffix(".tif"), mask)


SEG_CASES = {  # what to break -> (the file named, text expected)
    "image missing": (lambda i, m: i.unlink(), "image", "image file missing"),
    "mask missing": (lambda i, m: m.unlink(), "mask", "mask file missing"),
    "image garbage": (lambda i, m: i.write_bytes(b"no jpeg"), "image", "cannot read image"),
    "mask garbage": (lambda i, m: m.write_bytes(b"no png"), "mask", "cannot read mask"),
    "mask RGB": (_rgb_mask, "mask", "single-channel"),
    "mask wrong size": (_small_mask, "mask", "must have the same size"),
    "mask float mode": (_float_mask, "mask", "floating-point"),
}


@pytest.mark.parametrize("case", sorted(SEG_CASES))
def test_seg_malformed_sample_is_one_line(seg, tmp_path, case):
    d, out = _seg_copy(seg, tmp_path)
    img, mask = _voc_files(d)
    fn, which, want = SEG_CASES[case]
    fn(img, mask)
    with pytest.raises(UserError) as ei:
        run_seg("voc_seg", TINY_CKPT, data=str(d), out_dir=str(out), max_iter=1, engine="embedded",
                eval_only=True, **seg_tiny())
    one_line(ei, img if which == "image" else mask, want)


def test_seg_bomb_image_is_one_line(seg, tmp_path, monkeypatch):
    d, out = _seg_copy(seg, tmp_path)
    img, _ = _voc_files(d)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 200)  # the 40x40 shapes images are > 2x the limit
    with pytest.raises(UserError) as ei:
        run_seg("voc_seg", TINY_CKPT, data=str(d), out_dir=str(out), max_iter=1, engine="embedded",
                eval_only=True, **seg_tiny())
    one_line(ei, "cannot read image", "DecompressionBomb")


@pytest.mark.parametrize("kind", POISONS)
def test_seg_eval_only_poisoned_state(seg, tmp_path, kind):
    from transfer.checkpoint import load_state, save_state

    d, out = _seg_copy(seg, tmp_path)
    marker = tmp_path / "EXECUTED"
    target = out / "train_state.pt"
    good = seg[0] / "run" / "train_state.pt"
    if kind in ("wrong shapes", "model not a state dict"):  # a sealed, well-formed state of the wrong content
        st = load_state(good)
        st["model"] = {k: torch.zeros(2) for k in st["model"]} if kind == "wrong shapes" else {"x": torch.zeros(3)}
        save_state(target, st)
    else:
        poison(kind, target, good, marker)
    with pytest.raises(UserError) as ei:
        run_seg("voc_seg", TINY_CKPT, data=str(d), out_dir=str(out), max_iter=1, engine="embedded",
                eval_only=True, **seg_tiny())
    one_line(ei, target)
    assert not marker.exists()


@pytest.mark.parametrize("extra, said", [(["--max-iter", "1", "max_iter=2"], "max_iter given twice"),
                                         (["device=cpu"], "use --device"), (["out_dir=/tmp/x"], "use --out")])
def test_run_setting_that_is_an_option_is_one_line(extra, said, capsys):
    """A ``key=value`` named like one of ``transfer run``'s own options was a TypeError traceback."""
    from transfer.cli import main

    assert main(["run", "fmnist_det", "--ckpt", "random:small_resnet18:0.25:0", *extra]) == 2
    err = capsys.readouterr().err
    assert said in err and "Traceback" not in err
