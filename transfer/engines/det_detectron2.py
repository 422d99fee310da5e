"""The detectron2 detection engine, used when detectron2 (current API, built per its INSTALL.md,
or ``scripts/install_detectron2.sh``) is importable.

1. The backbone is written as detectron2 weights with the converters' writer
   (``converters/writers/detectron2.py``: MoCo's ``convert-pretrain-to-detectron2.py`` renaming).
2. Both splits are registered in ``DatasetCatalog`` / ``MetadataCatalog`` from our readers'
   records (``XYXY_ABS`` boxes, 0-based contiguous classes, ``thing_dataset_id_to_contiguous_id``).
3. The config is built from the task settings with MoCo's overrides (:func:`build_config`, a pure
   function checked key by key against facebookresearch/moco ``detection/configs``): RGB input,
   the checkpoint's pixel mean/std in 0-255 scale, ``STRIDE_IN_1X1: False``, SyncBN, ``FREEZE_AT 0``,
   ``Res5ROIHeadsExtraNorm`` (registered here as moco ``detection/train_net.py`` does), precise BN.
4. Training is detectron2's ``DefaultTrainer`` (resume via ``resume_or_load``), multi-GPU through
   ``detectron2.engine.launch`` (``num_gpus``). Evaluation collects predictions and scores them
   with :mod:`transfer.engines.det_eval` (pycocotools' Python COCOeval and VOC07 11-point AP), so
   both engines report the same keys.
"""
from __future__ import annotations

import importlib.util
import json
import os
import traceback
from pathlib import Path
from typing import Any, Dict, List, Sequence

import torch

from converters.writers import get_writer
from transfer.devices import resolve_device
from transfer.errors import UserError

from ..checkpoint import atomic_write_text
from .base import Engine, Job, no_small_stem, register_engine
from .det_eval import evaluate, to_coco_dets
from .norm import resolve_mean_std


def _where(e: BaseException) -> str:
    """The innermost detectron2 frame of a traceback: the module that needed what is missing."""
    frames = [f for f in traceback.extract_tb(e.__traceback__) if "detectron2" in f.filename.replace("\\", "/")]
    if not frames:
        return ""
    f = frames[-1]
    fn = f.filename.replace("\\", "/")
    return f" (in {fn[fn.rindex('detectron2/'):] if 'detectron2/' in fn else fn}:{f.lineno})"


def _missing(e: BaseException, step: str) -> str:
    """One sentence naming exactly what is missing for ``step``."""
    where = _where(e)
    name = getattr(e, "name", None)
    msg = str(e).splitlines()[0][:160] if str(e) else ""
    if isinstance(e, ImportError) and (name == "detectron2._C" or "_C" in msg and "detectron2" in msg):
        return (f"{step} needs detectron2's compiled ops (detectron2._C){where}, which this install lacks: "
                f"build detectron2 from source per its INSTALL.md (scripts/install_detectron2.sh)")
    if isinstance(e, ModuleNotFoundError) and name:
        return f"{step} needs the Python module {name!r}{where}, which is not installed (pip install {name.split('.')[0]})"
    return f"{step} failed{where}: {type(e).__name__}: {msg}"


_AVAILABLE = None


def available():
    """What the engine needs, checked by doing it: import detectron2's training and modelling path
    and build (and run once, on CPU) the Mask R-CNN R-FPN model the engine configures. A build
    without ``detectron2._C`` passes when nothing on that path needs it (current detectron2 runs
    R-CNN with torchvision's ops); otherwise the reason names the missing piece and who needs it."""
    global _AVAILABLE
    if _AVAILABLE is None:
        _AVAILABLE = _check_available()
    return _AVAILABLE


def _check_available():
    try:
        # detectron2 is optional (the detectron2 engine only)
        import detectron2
    except ImportError as e:
        return False, f"detectron2 not importable ({e}); see scripts/install_detectron2.sh"
    ver = f"detectron2 {getattr(detectron2, '__version__', '?')}"
    try:
        # detectron2 is optional (the detectron2 engine only)
        from detectron2.checkpoint import DetectionCheckpointer  # noqa: F401
        from detectron2.config import get_cfg  # noqa: F401
        from detectron2.data import DatasetCatalog, MetadataCatalog  # noqa: F401
        from detectron2.engine import DefaultTrainer, launch  # noqa: F401
        from detectron2.modeling import build_model  # noqa: F401
    except Exception as e:  # a missing module, compiled op or attribute (e.g. Pillow's removed Image.LINEAR)
        return False, f"{ver} is installed but " + _missing(e, "importing its training and modelling path")
    try:
        register_extra_norm_heads()
        cfgd = build_config({"max_iter": 1, "min_size_test": 64, "max_size": 64, "fpn_channels": 16,
                             "box_head_dim": 16, "mask_head_dim": 8, "mask_on": True, "norm": "BN", "fpn_norm": "BN",
                             "rpn_post_nms_topk_test": 16, "detections_per_image": 4},
                            weights="", arch={"depth": 18, "width": 1.0}, num_classes=2, train_names=[],
                            test_names=[], out_dir=".", pixel_mean=[0.5] * 3, pixel_std=[0.25] * 3, device="cpu")
        model = build_model(to_cfgnode(cfgd))
        model.eval()
        with torch.no_grad():
            model([{"image": torch.zeros(3, 64, 64), "height": 64, "width": 64}])
    except Exception as e:
        return False, f"{ver} imports, but " + _missing(e, "building and running Mask R-CNN R18-FPN on CPU")
    return True, ""




def _tuple(v) -> List[int]:
    return [int(x) for x in (v if isinstance(v, (list, tuple)) else [v])]


def build_config(s: Dict[str, Any], *, weights: str, arch: Dict[str, Any], num_classes: int,
                 train_names: Sequence[str], test_names: Sequence[str], out_dir: str,
                 pixel_mean: Sequence[float], pixel_std: Sequence[float], device: str = "cuda") -> Dict[str, Any]:
    """The detectron2 config (a nested dict of detectron2 keys) for task settings ``s``.

    Pure Python, no detectron2 import, so it is testable anywhere. Pixel statistics are given in
    0-1 scale and written in detectron2's 0-255 scale. ResNet-18/34 get ``RES2_OUT_CHANNELS: 64``
    (detectron2's BasicBlock ResNets)."""
    depth, width = int(arch["depth"]), float(arch.get("width", 1.0))
    if arch.get("small"):
        raise UserError("detectron2: the small-image stem (3x3 conv, no max-pool) has no detectron2 equivalent; "
                        "use --engine torchvision")
    stem = int(round(64 * width))
    c4 = str(s.get("head", "fpn")).lower() == "c4"
    norm = str(s.get("norm", "SyncBN"))
    resnets: Dict[str, Any] = {
        "DEPTH": depth, "NORM": norm, "STRIDE_IN_1X1": False, "STEM_OUT_CHANNELS": stem,
        "RES2_OUT_CHANNELS": stem * (4 if depth >= 50 else 1),
        "OUT_FEATURES": ["res4"] if c4 else ["res2", "res3", "res4", "res5"],
    }
    if depth >= 50:
        resnets["WIDTH_PER_GROUP"] = stem
    base = float(s.get("anchor_base", 32))
    model: Dict[str, Any] = {
        "META_ARCHITECTURE": "GeneralizedRCNN",
        "MASK_ON": bool(s.get("mask_on", False)),
        "WEIGHTS": str(weights),
        "PIXEL_MEAN": [round(float(v) * 255.0, 3) for v in pixel_mean],
        "PIXEL_STD": [round(float(v) * 255.0, 3) for v in pixel_std],
        "DEVICE": device,
        "BACKBONE": {"NAME": "build_resnet_backbone" if c4 else "build_resnet_fpn_backbone",
                     "FREEZE_AT": int(s.get("freeze_at", 0))},
        "RESNETS": resnets,
        "ANCHOR_GENERATOR": {"SIZES": [[base * 2 ** i for i in range(5)]] if c4 else [[base * 2 ** i] for i in range(5)],
                             "ASPECT_RATIOS": [[float(r) for r in s.get("anchor_ratios", [0.5, 1.0, 2.0])]]},
        "RPN": {"PRE_NMS_TOPK_TEST": int(s.get("rpn_pre_nms_topk_test", 6000 if c4 else 1000)),
                "POST_NMS_TOPK_TEST": int(s.get("rpn_post_nms_topk_test", 1000)),
                "BATCH_SIZE_PER_IMAGE": int(s.get("rpn_batch_size_per_image", 256))},
        "ROI_HEADS": {"NAME": "Res5ROIHeadsExtraNorm" if (c4 and s.get("extra_norm", True)) else
                      ("Res5ROIHeads" if c4 else "StandardROIHeads"),
                      "NUM_CLASSES": int(num_classes),
                      "BATCH_SIZE_PER_IMAGE": int(s.get("roi_batch_size_per_image", 512)),
                      "SCORE_THRESH_TEST": float(s.get("score_thresh_test", 0.05)),
                      "NMS_THRESH_TEST": float(s.get("nms_thresh_test", 0.5))},
    }
    if c4:
        model["RPN"].update({"IN_FEATURES": ["res4"], "PRE_NMS_TOPK_TRAIN": 12000, "POST_NMS_TOPK_TRAIN": 2000})
        model["ROI_HEADS"]["IN_FEATURES"] = ["res4"]
    else:  # detectron2 configs/Base-RCNN-FPN.yaml, plus SyncBN in the FPN (MoCo / mmselfsup)
        fpn_norm = str(s.get("fpn_norm", "SyncBN"))
        model["FPN"] = {"IN_FEATURES": ["res2", "res3", "res4", "res5"], "NORM": "" if fpn_norm in ("none", "None") else fpn_norm,
                        "OUT_CHANNELS": int(s.get("fpn_channels", 256))}
        model["RPN"].update({"IN_FEATURES": ["p2", "p3", "p4", "p5", "p6"], "PRE_NMS_TOPK_TRAIN": 2000,
                             "POST_NMS_TOPK_TRAIN": 1000})
        model["ROI_HEADS"]["IN_FEATURES"] = ["p2", "p3", "p4", "p5"]
        model["ROI_BOX_HEAD"] = {"NAME": "FastRCNNConvFCHead", "NUM_FC": 2, "POOLER_RESOLUTION": 7,
                                 "FC_DIM": int(s.get("box_head_dim", 1024))}
        model["ROI_MASK_HEAD"] = {"NAME": "MaskRCNNConvUpsampleHead", "NUM_CONV": 4, "POOLER_RESOLUTION": 14,
                                  "CONV_DIM": int(s.get("mask_head_dim", 256))}
    cfg: Dict[str, Any] = {
        "MODEL": model,
        "INPUT": {"FORMAT": "RGB", "MIN_SIZE_TRAIN": _tuple(s.get("min_size_train", 800)),
                  "MIN_SIZE_TEST": int(s.get("min_size_test", 800)), "MAX_SIZE_TRAIN": int(s.get("max_size", 1333)),
                  "MAX_SIZE_TEST": int(s.get("max_size", 1333))},
        "DATASETS": {"TRAIN": list(train_names), "TEST": list(test_names)},
        "DATALOADER": {"NUM_WORKERS": int(s.get("workers", 4))},
        "SOLVER": {"IMS_PER_BATCH": int(s.get("ims_per_batch", 16)), "BASE_LR": float(s.get("base_lr", 0.02)),
                   # steps at or past MAX_ITER never fire; fvcore's scheduler refuses them
                   "STEPS": sorted({v for v in _tuple(s.get("steps", [])) if v < int(s["max_iter"])}), "MAX_ITER": int(s["max_iter"]),
                   "WARMUP_ITERS": int(s.get("warmup_iters", 1000)), "WARMUP_FACTOR": float(s.get("warmup_factor", 0.001)),
                   "GAMMA": float(s.get("gamma", 0.1)), "MOMENTUM": float(s.get("momentum", 0.9)),
                   "WEIGHT_DECAY": float(s.get("weight_decay", 1e-4)),
                   "CHECKPOINT_PERIOD": int(s.get("checkpoint_period", 5000))},
        "TEST": {"PRECISE_BN": {"ENABLED": bool(s.get("precise_bn", False))}, "EVAL_PERIOD": 0,
                 "DETECTIONS_PER_IMAGE": int(s.get("detections_per_image", 100))},
        "OUTPUT_DIR": str(out_dir),
        "SEED": int(s.get("seed", 0)),
    }
    return cfg


def d2_dicts(split) -> List[dict]:
    """detectron2 dataset dicts (``XYXY_ABS`` boxes, 0-based classes) from a :class:`DetSplit`."""
    # detectron2 is optional (the detectron2 engine only)
    from detectron2.structures import BoxMode

    out = []
    for im in split.images:
        anns = []
        for j, (b, lab) in enumerate(zip(im.boxes, im.labels)):
            a = {"bbox": [float(v) for v in b], "bbox_mode": BoxMode.XYXY_ABS, "category_id": int(lab) - 1,
                 "iscrowd": int(im.crowd[j])}
            if im.segms is not None and im.segms[j] is not None:
                a["segmentation"] = im.segms[j]
            anns.append(a)
        out.append({"file_name": im.file, "image_id": im.image_id, "height": im.height, "width": im.width,
                    "annotations": anns})
    return out


def register_datasets(prefix: str, train_split, test_split) -> List[str]:
    """Register ``<prefix>_train`` / ``<prefix>_test`` (replacing earlier registrations of the names)."""
    # detectron2 is optional (the detectron2 engine only)
    from detectron2.data import DatasetCatalog, MetadataCatalog

    names = []
    for tag, sp in (("train", train_split), ("test", test_split)):
        name = f"{prefix}_{tag}"
        if name in DatasetCatalog.list():
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
        DatasetCatalog.register(name, lambda sp=sp: d2_dicts(sp))
        MetadataCatalog.get(name).set(
            thing_classes=list(sp.classes),
            thing_dataset_id_to_contiguous_id={c: k for k, c in enumerate(sp.cat_ids)},
            evaluator_type="transfer", source=sp.source)
        names.append(name)
    return names


def register_extra_norm_heads() -> None:
    """MoCo's ``Res5ROIHeadsExtraNorm`` (moco ``detection/train_net.py``): res5 + one more norm."""
    # detectron2 is optional (the detectron2 engine only)
    from detectron2.layers import get_norm
    from detectron2.modeling.roi_heads import ROI_HEADS_REGISTRY, Res5ROIHeads

    if "Res5ROIHeadsExtraNorm" in ROI_HEADS_REGISTRY:
        return

    class Res5ROIHeadsExtraNorm(Res5ROIHeads):
        def __init__(self, cfg, input_shape):
            super().__init__(cfg, input_shape)
            self.res5.add_module("norm", get_norm(cfg.MODEL.RESNETS.NORM, self.res5[-1].out_channels))

    ROI_HEADS_REGISTRY.register(Res5ROIHeadsExtraNorm)


def to_cfgnode(d: Dict[str, Any]):
    """Merge the nested dict into detectron2's default config (unknown keys fail loudly)."""
    # detectron2 is optional (the detectron2 engine only)
    from detectron2.config import CfgNode, get_cfg

    cfg = get_cfg()
    cfg.merge_from_other_cfg(CfgNode(json.loads(json.dumps(d))))
    return cfg


def _make_trainer_cls(split_by_name: Dict[str, Any], voc_metric: bool, out_dir: Path):
    # detectron2 is optional (the detectron2 engine only)
    from detectron2.engine import DefaultTrainer
    from detectron2.evaluation import DatasetEvaluator
    from detectron2.utils import comm

    class Collect(DatasetEvaluator):
        def __init__(self, name):
            self.split = split_by_name[name]
            self.dets: List[dict] = []

        def reset(self):
            self.dets = []

        def process(self, inputs, outputs):
            for inp, out in zip(inputs, outputs):
                inst = out["instances"].to("cpu")
                masks = inst.pred_masks.numpy() if inst.has("pred_masks") else None
                self.dets += to_coco_dets(inp["image_id"], inst.pred_boxes.tensor.numpy(), inst.scores.numpy(),
                                          inst.pred_classes.numpy() + 1, self.split.cat_ids, masks)

        def evaluate(self):
            comm.synchronize()
            parts = comm.gather(self.dets, dst=0)
            if not comm.is_main_process():
                return {}
            dets = [d for p in parts for d in p]
            m = evaluate(self.split, dets, with_masks=any("segmentation" in d for d in dets), voc=voc_metric)
            (out_dir / "inference").mkdir(parents=True, exist_ok=True)
            (out_dir / "inference" / "det_eval.json").write_text(json.dumps({"metrics": m, "dets": dets}))
            return {k: v for k, v in m.items() if k in ("bbox", "segm")}

    class Trainer(DefaultTrainer):
        @classmethod
        def build_evaluator(cls, cfg, dataset_name, output_folder=None):
            return Collect(dataset_name)

        def build_writers(self):
            # detectron2's default writers, with TensorBoard only where it is installed
            from detectron2.utils.events import CommonMetricPrinter, JSONWriter, TensorboardXWriter

            w = [CommonMetricPrinter(self.max_iter), JSONWriter(os.path.join(self.cfg.OUTPUT_DIR, "metrics.json"))]
            if importlib.util.find_spec("tensorboard") is not None:
                w.append(TensorboardXWriter(self.cfg.OUTPUT_DIR))
            return w

    return Trainer


def _main(cfg, split_by_name, voc_metric, out_dir, eval_only, resume, prefix, train_split, test_split):
    # workers started by detectron2's launch (mp.spawn) are fresh interpreters: register here too
    register_datasets(prefix, train_split, test_split)
    register_extra_norm_heads()
    # detectron2 is optional (the detectron2 engine only)
    from detectron2.checkpoint import DetectionCheckpointer

    Trainer = _make_trainer_cls(split_by_name, voc_metric, out_dir)
    if eval_only:
        model = Trainer.build_model(cfg)
        DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(cfg.MODEL.WEIGHTS, resume=True)
        return Trainer.test(cfg, model)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=resume)
    return trainer.train()


def _check_fingerprint(out_dir: Path, weights: str, s: Dict[str, Any], eval_only: bool) -> None:
    """detectron2 resumes from ``OUTPUT_DIR/last_checkpoint`` whatever produced it: refuse a folder
    trained from other weights or settings, and an ``--eval-only`` with nothing trained."""
    fp_path = out_dir / "d2_fingerprint.json"
    want = {"weights_sha256": weights,
            "settings": {k: v for k, v in sorted(s.items()) if k not in ("resume", "max_iter", "num_gpus")}}
    want = json.loads(json.dumps(want, default=str))
    trained = (out_dir / "last_checkpoint").is_file()
    if trained and fp_path.is_file():
        have = json.loads(fp_path.read_text())
        if have != want:
            raise UserError(f"{out_dir} holds a detectron2 run of other weights or settings "
                            f"({fp_path}); use another --out")
    elif trained:
        raise UserError(f"{out_dir} holds a detectron2 run without {fp_path.name}: cannot tell what it was "
                        f"trained from; use another --out")
    if eval_only and not trained:
        raise UserError(f"--eval-only: no trained detectron2 model in {out_dir} (last_checkpoint missing)")
    atomic_write_text(fp_path, json.dumps(want, indent=1))


def run(job: Job) -> Dict[str, Any]:
    """Train (unless ``eval_only``) and evaluate with detectron2's ``DefaultTrainer``."""
    from detectron2.engine import launch  # optional heavy dependency: only when this engine runs

    source, train_split, test_split, s, out_dir = job.source, job.train, job.test, job.settings, job.out_dir
    eval_only, device, voc_metric, task_name = job.eval_only, job.device, job.voc_metric, job.task.name

    dev = resolve_device(device)
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    arch = source.backbone.arch_dict()
    writer = get_writer("detectron2")
    converted, _ = writer.convert(source.backbone.state_dict(), arch)
    pkl = out_dir / "backbone_d2.pkl"
    writer.save(pkl, converted, {**{k: v for k, v in source.meta.items() if isinstance(v, (str, int, float))},
                                 "arch": arch, "source_format": source.kind, "source_path": source.spec})
    names = register_datasets(f"transfer_{task_name}", train_split, test_split)
    mean, std, norm_src = resolve_mean_std(source.meta)
    cfgd = build_config(s, weights=str(pkl), arch=arch, num_classes=len(train_split.classes),
                        train_names=[names[0]], test_names=[names[1]], out_dir=str(out_dir),
                        pixel_mean=mean, pixel_std=std, device=dev.type)
    register_extra_norm_heads()
    cfg = to_cfgnode(cfgd)
    (out_dir / "d2_config.yaml").write_text(cfg.dump())
    split_by_name = {names[0]: train_split, names[1]: test_split}
    ngpu = int(s.get("num_gpus", 0)) or (torch.cuda.device_count() if dev.type == "cuda" else 1)
    _check_fingerprint(out_dir, source.identity, s, eval_only)
    result_file = out_dir / "inference" / "det_eval.json"
    if result_file.exists():
        result_file.unlink()
    args = (cfg, split_by_name, voc_metric, out_dir, eval_only, bool(s.get("resume", True)),
            f"transfer_{task_name}", train_split, test_split)
    if ngpu > 1:
        launch(_main, ngpu, dist_url="auto", args=args)
    else:
        _main(*args)
    if not result_file.is_file():
        raise RuntimeError(f"detectron2 finished without writing {result_file}")
    r = json.loads(result_file.read_text())
    m = r["metrics"]
    m["_dets"] = r["dets"]
    m["model"] = {"engine": "detectron2", "arch": "mask_rcnn" if s.get("mask_on") else "faster_rcnn",
                  "head": s.get("head"), "norm": s.get("norm"), "fpn_norm": s.get("fpn_norm"),
                  "freeze_at": s.get("freeze_at"), "pixel_mean": mean, "pixel_std": std, "pixel_norm_source": norm_src,
                  "device": dev.type, "config": str(out_dir / "d2_config.yaml"), "weights": str(pkl)}
    m["train"] = {"max_iter": int(s["max_iter"]), "num_gpus": ngpu}
    return m


def accepts(arch: Dict[str, Any]) -> Optional[str]:
    """detectron2's ResNet: the standard stem, and for R18/R34 the standard width (its
    ``build_resnet_backbone`` asserts ``RES2_OUT_CHANNELS == 64`` for basic blocks)."""
    why = no_small_stem(arch)
    if why is None and int(arch.get("depth", 50)) in (18, 34) and float(arch.get("width", 1.0)) != 1.0:
        why = (f"ResNet-{arch['depth']} at width {arch['width']}: detectron2 builds R18/R34 only at width 1 "
               f"(RES2_OUT_CHANNELS must be 64)")
    return why


register_engine(Engine("detectron2", "det", check=available, run=run, accepts=accepts))
