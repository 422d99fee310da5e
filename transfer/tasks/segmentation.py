"""Segmentation transfer tasks: ``voc_seg``, ``cityscapes_seg``, ``ade_seg``, ``nuclei_seg``, ``fmnist_seg``,
``shapes_seg``.

Each task is data: a reader (standard layout at a user path, the nuclei image in the stardist
wheel, scenes of Fashion-MNIST test-split items (``fmnist_seg``: a checkpoint without mean/std,
i.e. ``random:``, gets Fashion-MNIST's), or the synthetic shapes generator), a schedule (the community's: mmselfsup/mmseg FCN
R50-D8, VOC12aug 512x512 20k iterations, Cityscapes 769x769 40k with sliding-window test,
ADE20K 512x512 80k), and two engines with the same result keys:

- ``mmseg`` (:mod:`transfer.engines.seg_mmseg`): mmsegmentation's runner on a config generated
  from its FCN / UPerNet base configs with ``type='ResNet'`` (v1b) and our converted weights;
  used when mmseg imports (with compiled mmcv ops; see ``scripts/install_mmseg.sh``);
- ``embedded`` (:mod:`transfer.engines.seg_embedded`): torchvision FCN / DeepLabV3 heads on our
  dilated ResNet; always available.

``--engine auto`` takes the first available engine in the task's order that can build the
backbone (mmseg has no small-image stem). Outputs in ``--out``: ``results.json``, ``report.md``,
``report.html`` and ``report/*.png`` (image | true mask | predicted mask), plus the engine's
checkpoint for resume. Entry point: :func:`transfer.tasks.run_task` (``run_task`` here is the same
function, kept for callers of the old name).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

from ..checkpoint import atomic_write_text
from ..data.segmentation import (
    ADE_LAYOUT,
    CITYSCAPES_LAYOUT,
    VOC_LAYOUT,
    read_ade,
    read_cityscapes,
    read_nuclei,
    read_voc,
)
from ..data.segmentation.fmnist_voc import read_fmnist_seg
from ..data.segmentation.nuclei import LAYOUT as NUCLEI_LAYOUT
from ..data.segmentation.nuclei import find_nuclei
from ..data.segmentation.shapes import CLASSES, write_shapes
from ..engines import Job, select_engine
from ..errors import UserError
from .base import SplitLoader, Splits, Task, data_root, register_task, resolve_backbone
from .seg_report import write_report

# ----------------------------------------------------------------------------- settings
COMMON: Dict[str, Any] = {
    "head": "fcn",            # fcn | deeplabv3 (embedded); fcn | upernet (mmseg)
    "max_iter": 20000,
    "batch_size": 16,
    "crop_size": 512,
    "scale": [2048, 512],     # train rescale (long, short) before ratio_range; null = keep size
    "ratio_range": [0.5, 2.0],
    "test_mode": "whole",     # whole | slide
    "test_scale": [2048, 512],
    "test_stride": None,      # slide stride; default 2/3 of crop_size
    "lr": 0.01, "momentum": 0.9, "weight_decay": 0.0005, "min_lr": 0.0001, "power": 0.9,
    "aux": True, "aux_weight": 0.4,
    "output_stride": 8,
    "norm": "ckpt",           # ckpt (the checkpoint's mean/std, else ImageNet) | imagenet
    "photometric": True,
    "seed": 0,
    "workers": 4,
    "ckpt_every": 1000,
    "stop_after": None,       # stop (and checkpoint) after this many iterations; rerun to resume
    "eval_limit": None,       # evaluate on the first N validation images only
    "report_images": 4,
    "progress": True,
}


def _settings(**over: Any) -> Dict[str, Any]:
    s = dict(COMMON)
    s.update(over)
    return s


# ----------------------------------------------------------------------------- readers
def _read_voc(data: Path, s: Dict[str, Any]):
    return read_voc(data, "train"), read_voc(data, "val")


def _read_cityscapes(data: Path, s: Dict[str, Any]):
    return read_cityscapes(data, "train"), read_cityscapes(data, "val")


def _read_ade(data: Path, s: Dict[str, Any]):
    return read_ade(data, "train"), read_ade(data, "val")


def _read_nuclei(data: Path, s: Dict[str, Any]):
    return read_nuclei(data, tile=int(s.get("tile", 128)), val_frac=float(s.get("val_frac", 0.25)))


def _read_shapes(data: Path, s: Dict[str, Any]):
    data = Path(data)
    if not (data / "ImageSets" / "Segmentation" / "val.txt").is_file():
        if data.exists() and any(data.iterdir()):
            raise UserError(f"{data}: not a shapes_seg set (ImageSets/Segmentation/val.txt missing) and not empty; "
                            "pass an empty or new folder to generate one")
        write_shapes(data, "voc", int(s["n_train"]), int(s["n_val"]), int(s["image_size"]), int(s["data_seed"]))
    return read_voc(data, "train", CLASSES), read_voc(data, "val", CLASSES)


def _read_fmnist(data: Path, s: Dict[str, Any]):
    return read_fmnist_seg(data, s)


def _find_fmnist(data: Optional[str]) -> Optional[Path]:
    # generated on first use, so always "found"
    return Path(data).expanduser() if data else data_root() / "fmnist_seg"


def _find_nuclei(data: Optional[str]) -> Optional[Path]:
    return find_nuclei(data)


def _find_shapes(data: Optional[str]) -> Optional[Path]:
    # generated on first use, so always "found"
    return Path(data).expanduser() if data else data_root() / "shapes_seg"


def _loader(reader: Callable[[Path, Dict[str, Any]], Tuple[Any, Any]]) -> SplitLoader:
    """A task's reader as its split loader, with the check every segmentation split gets."""
    def load(data: Path, s: Dict[str, Any], out_dir: Path, log: Callable[[str], None] = print) -> Splits:
        train_ds, val_ds = reader(Path(data), s)
        if len(train_ds) == 0 or len(val_ds) == 0:
            raise UserError(f"{data}: empty split (train {len(train_ds)}, val {len(val_ds)} images)")
        return Splits(train_ds, val_ds)

    return load


def _register(name: str, engines: Tuple[str, ...], desc: str, data_dir: str, layout: str, reader, mm_layout: str,
              find=None, **settings) -> None:
    """``mm_layout``: how the mmseg engine reads the data ("voc" | "cityscapes" | "ade" | "generic")."""
    register_task(Task(name=name, kind="seg", engines=engines, description=desc, data_dir=data_dir, layout=layout,
                       settings=_settings(**settings), runner=runner, find_data=find, load_splits=_loader(reader),
                       options={"mm_layout": mm_layout}))


# ----------------------------------------------------------------------------- runner
def runner(*, task: Task, ckpt: Any, engine: str, data: Path, out_dir: Path, settings: Dict[str, Any],
           eval_only: bool = False, device: str = "auto") -> Dict[str, Any]:
    """The runner every segmentation task registers: backbone, splits and engine; train/evaluate;
    write results and report."""
    src = resolve_backbone(task, ckpt, settings)
    for k in ("max_iter", "batch_size", "crop_size"):
        if not isinstance(settings.get(k), int) or settings[k] < 1:
            raise UserError(f"setting {k} must be a positive integer, got {settings.get(k)!r}")
    out_dir = Path(out_dir)
    sp = task.load_splits(Path(data), settings, out_dir, print)
    eng = select_engine(task, engine, src.backbone.arch_dict())
    out_dir.mkdir(parents=True, exist_ok=True)
    res = eng.run(Job(task=task, source=src, train=sp.train, test=sp.test, data=Path(data), settings=settings,
                      out_dir=out_dir, eval_only=eval_only, device=device))
    samples = res.pop("_samples", [])
    out = {"task": task.name, "engine": eng.name, "ckpt": src.describe(), "data": str(data),
           "num_classes": sp.train.num_classes, "num_train_images": len(sp.train)}
    out.update(res)
    out["settings"] = {k: v for k, v in settings.items()}
    out["out_dir"] = str(out_dir)
    out["results_file"] = str(out_dir / "results.json")
    out["report"] = str(out_dir / "report.html")
    write_report(out_dir, out, samples)
    atomic_write_text(out_dir / "results.json", json.dumps(out, indent=1) + "\n")
    return out


# ----------------------------------------------------------------------------- the tasks
_FMNIST = """\
synthetic, written on first use to DATA (--data, or $TRANSFER_DATA/fmnist_seg) from the Fashion-MNIST t10k
files (apt-get install dataset-fashion-mnist; $TRANSFER_FASHION_MNIST to point elsewhere), VOC layout:
  JPEGImages/*.jpg  SegmentationClass/*.png (0 background, 1..10 classes)  ImageSets/Segmentation/{train,val,test}.txt
  (eval_split=test reports on test; eval_split=val to choose settings)"""
_BENCH = ("mmseg", "embedded")
_register("voc_seg", _BENCH, "FCN R50-D8 on VOC12aug, 512x512, 20k iterations (mmselfsup protocol), mIoU",
          "VOC2012", VOC_LAYOUT, _read_voc, "voc")
_register("cityscapes_seg", _BENCH, "FCN R50-D8 on Cityscapes, 769x769, 40k iterations, sliding-window test, mIoU",
          "cityscapes", CITYSCAPES_LAYOUT, _read_cityscapes, "cityscapes", max_iter=40000, batch_size=8, crop_size=769,
          scale=[2049, 1025], test_scale=[2049, 1025], test_mode="slide", test_stride=513)
_register("ade_seg", _BENCH, "FCN R50-D8 on ADE20K (150 classes), 512x512, 80k iterations, mIoU",
          "ADEChallengeData2016", ADE_LAYOUT, _read_ade, "ade", max_iter=80000)
_register("nuclei_seg", ("embedded", "mmseg"),
          "nuclei vs background on the real DSB2018 image in the stardist wheel (tiled train/val bands), mIoU",
          "nuclei", NUCLEI_LAYOUT, _read_nuclei, "generic", find=_find_nuclei, max_iter=100, batch_size=4, crop_size=96,
          scale=None, ratio_range=[0.75, 1.5], test_scale=None, workers=0, ckpt_every=50, lr=0.01,
          tile=128, val_frac=0.25)
_register("fmnist_seg", ("embedded", "mmseg"),
          "Fashion-MNIST test-split items composed into cluttered 112 px scenes (VOC layout, generated on first use); "
          "10 classes + background, mIoU", "fmnist_seg", _FMNIST, _read_fmnist, "generic", find=_find_fmnist,
          max_iter=400, batch_size=8, crop_size=112, scale=None, ratio_range=[0.75, 1.25], test_scale=None,
          workers=0, ckpt_every=100, lr=0.02, n_train=300, n_val=50, n_test=150, eval_split="test", image_size=112,
          items=[3, 6], item_side=[28, 56], min_visible=0.5, fragments=[4, 10], data_seed=0,
          default_mean=[0.2860], default_std=[0.3530])
_register("shapes_seg", ("embedded", "mmseg"),
          "synthetic circles/squares/triangles in VOC layout (generated on first use); a pipeline check, not a benchmark",
          "shapes_seg", "generated on first use into DATA (VOC layout, see voc_seg)", _read_shapes, "voc",
          find=_find_shapes, max_iter=200, batch_size=8, crop_size=64, scale=None, ratio_range=[0.75, 1.25],
          test_scale=None, workers=0, ckpt_every=100, n_train=48, n_val=16, image_size=64, data_seed=0)
