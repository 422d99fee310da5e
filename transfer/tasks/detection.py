"""Detection tasks: ``coco_det``, ``coco_det_c4``, ``voc_det``, ``trees_det``, ``fmnist_det``, ``shapes_det``.

A task is data (``../shared/docs/architecture.md``): a dataset layout, an engine preference and
the settings of a published protocol (``../shared/docs/seeds.md`` section 4):
- ``coco_det``: Mask R-CNN R50-FPN 1x with SyncBN in backbone and FPN, ``FREEZE_AT 0`` (MoCo's
  FPN row / mmselfsup's ``mask_rcnn_r50_fpn_mstrain_1x``), detectron2 ``Base-RCNN-FPN`` schedule.
- ``coco_det_c4``: Mask R-CNN R50-C4 as facebookresearch/moco ``detection/configs/coco_R_50_C4_2x_moco.yaml``
  (on ``Base-RCNN-C4-BN.yaml``: SyncBN, extra norm after res5, ``FREEZE_AT 0``, precise BN).
- ``voc_det``: Faster R-CNN R50-C4, VOC07+12 trainval -> VOC07 test, 24k iterations
  (moco ``detection/configs/pascal_voc_R_50_C4_24k_moco.yaml``); COCO-style AP plus VOC07 11-point AP50.
- ``trees_det``: real NEON aerial tree tiles from the deepforest wheel (``transfer.data.detection.trees``),
  one tile held out; a CPU-sized Faster R-CNN FPN schedule.
- ``fmnist_det``: scenes of Fashion-MNIST *test-split* items on cluttered backgrounds
  (``transfer.data.detection.fmnist_scenes``), written as COCO json and read by the COCO reader;
  the transfer task a Fashion-MNIST-pretrained backbone is measured on. A checkpoint without
  mean/std (``random:``) is fed Fashion-MNIST's (``default_mean``/``default_std``).
- ``shapes_det``: synthetic shapes written in COCO-json (``format=coco``) or VOC (``format=voc``)
  layout and read back by the same readers; Mask R-CNN FPN, seconds on a CPU.

Schedules are in iterations. ``--max-iter N`` on a task's reference schedule scales its
``steps`` and ``warmup_iters`` by ``N / max_iter`` (explicit ``steps=``/``warmup_iters=`` are kept).

Each task registers its own split loader (``_coco_splits``, ``_voc_splits``, ...) and
:func:`run_detection` as its runner; :func:`transfer.tasks.run_task` is the entry point
(``run_task`` here is the same function, kept for callers of the old name).
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

from ..checkpoint import atomic_write_text
from ..data import detection as D
from ..data.detection.fmnist_coco import read_fmnist_det
from ..engines import Job, select_engine
from ..engines.det_report import write_report
from ..errors import UserError
from .base import SplitLoader, Splits, Task, data_root, register_task, resolve_backbone

# Settings every detection task has (detectron2's defaults where it has one); tasks override.
COMMON: Dict[str, Any] = {
    "head": "fpn", "mask_on": False, "norm": "SyncBN", "fpn_norm": "SyncBN", "freeze_at": 0, "extra_norm": True,
    "fpn_channels": 256, "fpn_stages": "auto", "box_head_dim": 1024, "mask_head_dim": 256,
    "anchor_base": 32, "anchor_ratios": [0.5, 1.0, 2.0],
    "min_size_train": [640, 672, 704, 736, 768, 800], "max_size": 1333, "min_size_test": 800,
    "ims_per_batch": 16, "base_lr": 0.02, "momentum": 0.9, "weight_decay": 1e-4, "gamma": 0.1,
    "max_iter": 90000, "steps": [60000, 80000], "warmup_iters": 1000, "warmup_factor": 0.001,
    "checkpoint_period": 5000, "precise_bn": False, "seed": 0, "workers": 4, "flip": True, "resume": True,
    "progress": True, "report_images": 4, "vis_score": 0.5, "score_thresh_test": 0.05, "nms_thresh_test": 0.5,
    "detections_per_image": 100, "roi_batch_size_per_image": 512, "rpn_batch_size_per_image": 256,
    "rpn_pre_nms_topk_test": 1000, "rpn_post_nms_topk_test": 1000, "num_gpus": 0,
}

COCO_LAYOUT = """\
<data>/                                  (--data, or $TRANSFER_DATA/coco)
  annotations/instances_train2017.json   COCO instances json (train_json=...)
  annotations/instances_val2017.json     (test_json=...)
  train2017/*.jpg                        images named by file_name (train_images=...)
  val2017/*.jpg                          (test_images=...)"""

VOC_LAYOUT = """\
<data>/                                  (--data, or $TRANSFER_DATA/VOCdevkit)
  VOC2007/Annotations/*.xml  VOC2007/JPEGImages/*.jpg  VOC2007/ImageSets/Main/{trainval,test}.txt
  VOC2012/Annotations/*.xml  VOC2012/JPEGImages/*.jpg  VOC2012/ImageSets/Main/trainval.txt
  (splits: train_split=2007_trainval+2012_trainval test_split=2007_test)"""

TREES_LAYOUT = """\
pip install --no-deps deepforest==2.1.0   (the wheel's deepforest/data/ folder is read, never imported)
or --data <folder> holding OSBS_029.png + OSBS_029.xml, SOAP_061.*, 2019_YELL_2_*.{png,xml}
(Pascal-VOC XML boxes next to each image; holdout=OSBS_029 is the test tile)"""

SHAPES_LAYOUT = """\
synthetic, written on first use to <data> (--data, or $TRANSFER_DATA/shapes_det), format=coco|voc:
  coco/annotations/instances_{train,val}.json  coco/{train,val}/*.png
  voc/VOC2007/{Annotations,JPEGImages,ImageSets/Main/{trainval,test}.txt}"""

FMNIST_LAYOUT = """\
synthetic, written on first use to <data> (--data, or $TRANSFER_DATA/fmnist_det) from the Fashion-MNIST
t10k files (apt-get install dataset-fashion-mnist; $TRANSFER_FASHION_MNIST to point elsewhere):
  annotations/instances_{train,val,test}.json   COCO json: boxes, RLE masks of the visible pixels
  {train,val,test}/*.png                        112 px grayscale scenes (eval_split=test|val)"""


def _settings(**kw) -> Dict[str, Any]:
    s = dict(COMMON)
    s.update(kw)
    return s


COCO_DATA = {"train_json": "annotations/instances_train2017.json", "train_images": "train2017",
             "test_json": "annotations/instances_val2017.json", "test_images": "val2017"}


# ----------------------------------------------------------------------------------- data
def _find_trees(data: Optional[str]) -> Optional[Path]:
    if data:
        p = Path(data).expanduser()
        return p if p.exists() else None
    return D.deepforest_data_dir()


def _find_shapes(data: Optional[str]) -> Optional[Path]:
    return Path(data).expanduser() if data else data_root() / "shapes_det"  # written on first use


def _find_fmnist(data: Optional[str]) -> Optional[Path]:
    return Path(data).expanduser() if data else data_root() / "fmnist_det"  # written on first use


def _checked(loader: Callable[[Path, Dict[str, Any], Path], Splits]) -> SplitLoader:
    """A task's own reader, followed by the checks every detection split gets: not empty, and a
    note on the images or boxes the reader dropped."""
    def load(data: Path, s: Dict[str, Any], out_dir: Path, log: Callable[[str], None] = print) -> Splits:
        sp = loader(Path(data), s, Path(out_dir))
        D.check_nonempty(sp.train, "training split")
        D.check_nonempty(sp.test, "test split")
        for split in (sp.train, sp.test):
            note = D.drop_note(split)
            if note:
                log(note)
        return sp

    return load


def _coco_splits(data: Path, s: Dict[str, Any], out_dir: Path) -> Splits:
    tr = D.read_coco(data / s["train_json"], data / s["train_images"], name="train")
    te = D.read_coco(data / s["test_json"], data / s["test_images"], name="test")
    if tr.cat_ids != te.cat_ids:
        raise UserError(f"{te.source}: categories {te.cat_ids} differ from the training file's {tr.cat_ids} ({tr.source})")
    return Splits(tr, te)


def _voc_splits(data: Path, s: Dict[str, Any], out_dir: Path) -> Splits:
    tr = D.read_voc(data, str(s["train_split"]))
    return Splits(tr, D.read_voc(data, str(s["test_split"]), classes=tr.classes), voc_metric=True)


def _trees_splits(data: Path, s: Dict[str, Any], out_dir: Path) -> Splits:
    holdout = str(s.get("holdout", "OSBS_029"))
    jsons = D.write_tree_tiles(data, out_dir / "tiles", tile=int(s.get("tile", 400)), holdout=holdout)
    tr = D.read_coco(jsons["train"], out_dir / "tiles" / "train", name="train")
    return Splits(tr, D.read_coco(jsons["test"], out_dir / "tiles" / "test", name=f"test ({holdout})"))


def _fmnist_splits(data: Path, s: Dict[str, Any], out_dir: Path) -> Splits:
    return Splits(*read_fmnist_det(data, s))


def _shapes_splits(data: Path, s: Dict[str, Any], out_dir: Path) -> Splits:
    """Synthetic shapes, written on first use in the layout ``format`` names and read back by that
    layout's reader (so both readers are exercised on data of known content)."""
    fmt = str(s.get("format", "coco"))
    n_train, n_test = int(s.get("n_train", 32)), int(s.get("n_test", 8))
    size, seed = int(s.get("image_size", 96)), int(s.get("data_seed", 0))
    if fmt == "coco":
        root = data / "coco"
        if not (root / "annotations" / "instances_val.json").is_file():
            D.write_shapes_coco(root, {"train": n_train, "val": n_test}, size=size, seed=seed)
        tr = D.read_coco(root / "annotations" / "instances_train.json", root / "train", name="train")
        return Splits(tr, D.read_coco(root / "annotations" / "instances_val.json", root / "val", name="val"))
    if fmt == "voc":
        root = data / "voc"
        if not (root / "VOC2007" / "ImageSets" / "Main" / "test.txt").is_file():
            D.write_shapes_voc(root, {"2007": {"trainval": n_train, "test": n_test}}, size=size, seed=seed)
        tr = D.read_voc(root, "2007_trainval")
        return Splits(tr, D.read_voc(root, "2007_test", classes=tr.classes), voc_metric=True)
    raise UserError(f"shapes_det: format={fmt!r}; choose coco or voc")


# ------------------------------------------------------------------------------- schedule
def scale_schedule(task: Task, s: Dict[str, Any]) -> Dict[str, Any]:
    """A shorter ``max_iter`` than the task's reference scales the reference steps and warm-up."""
    s = dict(s)
    ref = int(task.settings["max_iter"])
    n = int(s["max_iter"])
    if n <= 0:
        raise UserError(f"max_iter={n}: must be a positive number of iterations")
    s["schedule_scaled_from"] = None
    if n != ref:
        if list(s.get("steps", [])) == list(task.settings.get("steps", [])):
            s["steps"] = [max(1, int(round(st * n / ref))) for st in task.settings["steps"]]
            s["schedule_scaled_from"] = ref
        if s.get("warmup_iters") == task.settings.get("warmup_iters"):
            s["warmup_iters"] = min(int(s["warmup_iters"]), max(0, int(round(int(task.settings["warmup_iters"]) * n / ref))))
    return s


# --------------------------------------------------------------------------------- runner
def _log(msg: str) -> None:
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()


def run_detection(task: Task, ckpt, engine: str, data, out_dir, settings: Dict[str, Any], eval_only: bool = False,
                  device: str = "auto", log=_log) -> Dict[str, Any]:
    """The runner every detection task registers: data -> engine -> metrics -> results.json + report."""
    out_dir = Path(out_dir)
    s = scale_schedule(task, settings)
    source = resolve_backbone(task, ckpt, s)
    eng = select_engine(task, engine, source.backbone.arch_dict())
    out_dir.mkdir(parents=True, exist_ok=True)
    sp = task.load_splits(Path(data), s, out_dir, log)
    tr, te = sp.train, sp.test
    if s.get("mask_on") and not tr.has_masks:
        log(f"{task.name}: {tr.source} has no masks; training Faster R-CNN (mask_on=false)")
        s["mask_on"] = False
    log(f"{task.name}: engine {eng.name}; train {len(tr.images)} images / {tr.num_boxes} boxes, "
        f"test {len(te.images)} images / {te.num_boxes} boxes; {s['max_iter']} iterations; out {out_dir}")
    t0 = time.time()
    m = eng.run(Job(task=task, source=source, train=tr, test=te, data=Path(data), settings=s, out_dir=out_dir,
                    eval_only=eval_only, device=device, voc_metric=sp.voc_metric, log=log))
    dets = m.pop("_dets")
    results: Dict[str, Any] = {"task": task.name, "engine": eng.name, "ckpt": source.describe()}
    for k in ("bbox", "segm", "voc07_AP50", "voc07_per_class"):
        if k in m:
            results[k] = m[k]
    results["data"] = {"train": tr.summary(), "test": te.summary()}
    results["schedule"] = {k: s.get(k) for k in ("max_iter", "steps", "warmup_iters", "base_lr", "ims_per_batch",
                                                  "min_size_train", "min_size_test", "schedule_scaled_from")}
    results["eval_only"] = bool(eval_only)
    results["model"] = m.get("model", {})
    results["train"] = m.get("train", {})
    results["seconds"] = round(time.time() - t0, 2)
    results["out_dir"] = str(out_dir)
    atomic_write_text(out_dir / "predictions.json", json.dumps(dets))
    results["report"] = write_report(out_dir, results, te, dets, int(s.get("report_images", 4)), float(s.get("vis_score", 0.5)))
    results = _no_nan(results)
    atomic_write_text(out_dir / "results.json", json.dumps(results, indent=1, default=str))
    return results


def _no_nan(x):
    """NaN (COCOeval's "no ground truth in this size bucket") -> None, so the JSON is strict."""
    if isinstance(x, float) and x != x:
        return None
    if isinstance(x, dict):
        return {k: _no_nan(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_no_nan(v) for v in x]
    return x


def _register(name: str, engines: Tuple[str, ...], description: str, data_dir: str, layout: str,
              settings: Dict[str, Any], loader: Callable[[Path, Dict[str, Any], Path], Splits],
              find_data: Optional[Callable[[Optional[str]], Optional[Path]]] = None) -> None:
    register_task(Task(name, "det", engines, description, data_dir, layout, settings, run_detection,
                       find_data=find_data, load_splits=_checked(loader)))


_register(
    "coco_det", ("detectron2", "torchvision"),
    "Mask R-CNN R50-FPN 1x, SyncBN in backbone and FPN, FREEZE_AT 0 (MoCo / mmselfsup); COCO 2017 train -> val",
    "coco", COCO_LAYOUT, _settings(mask_on=True, **COCO_DATA), _coco_splits)

_register(
    "coco_det_c4", ("detectron2", "torchvision"),
    "Mask R-CNN R50-C4 2x per MoCo's Base-RCNN-C4-BN (SyncBN, extra norm after res5, precise BN); COCO 2017",
    "coco", COCO_LAYOUT,
    _settings(mask_on=True, head="c4", max_iter=180000, steps=[120000, 160000], precise_bn=True,
              rpn_pre_nms_topk_test=6000, rpn_post_nms_topk_test=1000, **COCO_DATA), _coco_splits)

_register(
    "voc_det", ("detectron2", "torchvision"),
    "Faster R-CNN R50-C4, VOC07+12 trainval -> VOC07 test, 24k iterations (MoCo); AP, AP50, AP75 + VOC07 11-point AP50",
    "VOCdevkit", VOC_LAYOUT,
    _settings(head="c4", max_iter=24000, steps=[18000, 22000], warmup_iters=100, precise_bn=True,
              min_size_train=list(range(480, 801, 32)), rpn_pre_nms_topk_test=6000, rpn_post_nms_topk_test=1000,
              train_split="2007_trainval+2012_trainval", test_split="2007_test"), _voc_splits)

_register(
    "trees_det", ("torchvision", "detectron2"),
    "NEON aerial tree crowns (deepforest wheel), 400 px tiles, OSBS_029 held out; Faster R-CNN FPN, CPU-sized schedule",
    "trees", TREES_LAYOUT,
    _settings(norm="BN", fpn_norm="BN", fpn_channels=64, box_head_dim=256, anchor_base=16,
              min_size_train=[400], max_size=400, min_size_test=400, ims_per_batch=2, base_lr=0.01,
              max_iter=300, steps=[200, 260], warmup_iters=20, checkpoint_period=50, workers=0,
              detections_per_image=200, tile=400, holdout="OSBS_029"),
    _trees_splits, find_data=_find_trees)

_register(
    "shapes_det", ("torchvision", "detectron2"),
    "synthetic shapes (squares, disks, triangles) in COCO-json or VOC layout; Mask R-CNN FPN; seconds on a CPU",
    "shapes_det", SHAPES_LAYOUT,
    _settings(mask_on=True, norm="BN", fpn_norm="BN", fpn_channels=32, box_head_dim=64, mask_head_dim=16,
              anchor_base=16, min_size_train=[96], max_size=128, min_size_test=96, ims_per_batch=2, base_lr=0.01,
              max_iter=200, steps=[150, 180], warmup_iters=20, checkpoint_period=50, workers=0,
              roi_batch_size_per_image=64, rpn_batch_size_per_image=64, format="coco", n_train=32, n_test=8,
              image_size=96, data_seed=0),
    _shapes_splits, find_data=_find_shapes)

_register(
    "fmnist_det", ("torchvision", "detectron2"),
    "Fashion-MNIST test-split items composed into cluttered 112 px scenes (COCO json, generated on first use); "
    "Faster R-CNN FPN, a few CPU minutes",
    "fmnist_det", FMNIST_LAYOUT,
    _settings(norm="BN", fpn_norm="BN", fpn_channels=64, box_head_dim=256, mask_head_dim=32, anchor_base=16,
              min_size_train=[112], max_size=112, min_size_test=112, ims_per_batch=4, base_lr=0.02,
              max_iter=400, steps=[300, 370], warmup_iters=50, checkpoint_period=100, workers=0,
              roi_batch_size_per_image=128, rpn_batch_size_per_image=128, detections_per_image=50,
              n_train=300, n_val=50, n_test=150, eval_split="test", image_size=112, items=[3, 6], item_side=[28, 56],
              min_visible=0.5, fragments=[4, 10], data_seed=0, default_mean=[0.2860], default_std=[0.3530]),
    _fmnist_splits, find_data=_find_fmnist)
