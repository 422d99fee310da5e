"""The mmsegmentation engine: the community's configs and runner, our converted backbone.

The config is generated from mmseg's base configs -- ``configs/_base_/models/fcn_r50-d8.py``
(``EncoderDecoder``; ``FCNHead`` on stage 4 with ``channels=512``, ``num_convs=2``,
``concat_input=True``, dropout 0.1; auxiliary ``FCNHead`` on stage 3, ``channels=256``, loss
weight 0.4; ``strides=(1, 2, 1, 1)``, ``dilations=(1, 1, 2, 4)``) and
``configs/_base_/models/upernet_r50.py`` (``UPerHead`` on all stages, ``pool_scales=(1, 2, 3, 6)``,
no dilation) -- with two changes: ``type='ResNet'`` (v1b, torchvision's stem) instead of
``ResNetV1c``, and ``init_cfg=dict(type='Pretrained', checkpoint=<our weights>, prefix='backbone.')``
from the converters' mmseg writer (:mod:`converters.writers.mmseg`). Head widths scale with the
backbone (``in_channels // 4``: 512 for R50). Schedule: ``configs/_base_/schedules/schedule_20k.py``
(SGD 0.01, momentum 0.9, wd 5e-4, ``PolyLR`` power 0.9 to 1e-4, iteration-based). Pipelines:
``configs/_base_/datasets/pascal_voc12_aug.py`` (``RandomResize`` ratio 0.5-2, ``RandomCrop``
``cat_max_ratio=0.75``, ``RandomFlip``, ``PhotoMetricDistortion``).

Datasets are ``BaseSegDataset`` over the same folders our readers use (VOC ids from
``ImageSets/Segmentation``, Cityscapes ``*_gtFine_labelTrainIds.png``, ADE20K with
``reduce_zero_label``); sets without an mmseg layout (nuclei tiles) are written once as PNGs
under ``<out>/mmseg/data``. Evaluation runs mmseg's ``IoUMetric`` (subclassed to return the
per-class values) through :func:`transfer.engines.seg_metrics.metrics_from_areas`, so the result
keys equal the embedded engine's. The trained model is saved as tensors only
(``<out>/mmseg/model_final.pth``, what ``--eval-only`` loads). No mid-run resume on this engine:
mmengine's own checkpoints pickle its message hub and numpy objects, which
``torch.load(weights_only=True)`` rightly refuses (allowing them needs ``getattr``); a rerun
trains again from the start.

Nothing here imports mmseg at module import time; :func:`available` says why it cannot run.
"""
from __future__ import annotations

import ast
import functools
import importlib.util
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
from PIL import Image

from converters.writers import get_writer

from ..checkpoint import atomic_write
from ..data.segmentation.layouts import ade_root, voc_root
from ..errors import UserError
from .base import Engine, Job, no_small_stem, register_engine
from .seg_embedded import norm_stats
from .seg_metrics import IGNORE_INDEX, metrics_from_areas

FINAL_WEIGHTS = "model_final.pth"
INSTALL_HINT = "see scripts/install_mmseg.sh (full mmcv build with CPU ops, ~35 min on 2 cores)"


@functools.lru_cache(maxsize=1)
def available() -> Tuple[bool, str]:
    for mod in ("mmengine", "mmcv", "mmseg"):
        if importlib.util.find_spec(mod) is None:
            return False, f"{mod} not installed; {INSTALL_HINT}"
    try:
        # mmsegmentation is optional (the mmseg engine only)
        import mmseg  # noqa: F401
        from mmseg.models import EncoderDecoder  # noqa: F401  (imports mmcv.ops -> mmcv._ext)
    except ModuleNotFoundError as e:
        if e.name == "mmcv._ext":
            return False, f"mmcv has no compiled ops (mmcv-lite?): mmcv._ext missing; {INSTALL_HINT}"
        return False, f"cannot import mmseg: {e}"
    except Exception as e:  # version clashes raise AssertionError/ImportError inside mmseg
        return False, f"cannot import mmseg: {type(e).__name__}: {str(e)[:200]}"
    return True, ""


# ----------------------------------------------------------------------------- config
def stage_channels(arch: Dict[str, Any]) -> List[int]:
    depth, width = int(arch["depth"]), float(arch.get("width", 1.0))
    expansion = 4 if depth >= 50 else 1
    return [max(4, int(round(64 * width * m))) * expansion for m in (1, 2, 4, 8)]


def _literal(node: ast.AST, env: Dict[str, Any]) -> Any:
    """Evaluate literals, ``dict(k=v, ...)`` calls and names bound earlier in the file -- nothing
    else (no code from a config fragment runs)."""
    if isinstance(node, ast.Name) and node.id in env:
        return env[node.id]
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict" and not node.args:
        return {kw.arg: _literal(kw.value, env) for kw in node.keywords}
    if isinstance(node, (ast.List, ast.Tuple)):
        items = [_literal(e, env) for e in node.elts]
        return items if isinstance(node, ast.List) else tuple(items)
    if isinstance(node, ast.Dict):
        return {_literal(k, env): _literal(v, env) for k, v in zip(node.keys, node.values)}
    return ast.literal_eval(node)


def read_fragment(path: Path) -> Dict[str, Any]:
    """The writer's Python config fragment -> its ``model`` dict, parsed (never executed)."""
    env: Dict[str, Any] = {}
    try:
        for stmt in ast.parse(Path(path).read_text(), str(path)).body:
            if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
                env[stmt.targets[0].id] = _literal(stmt.value, env)
    except (SyntaxError, ValueError) as e:
        raise UserError(f"{path}: not a config fragment of plain dicts and literals ({e})") from None
    if "model" not in env:
        raise UserError(f"{path}: no 'model = dict(...)' in the config fragment")
    return env["model"]


def model_config(*, arch: Dict[str, Any], weights: Optional[str], num_classes: int, settings: Dict[str, Any],
                 mean, std, fragment: Optional[Dict[str, Any]] = None, norm: str = "BN") -> Dict[str, Any]:
    """mmseg ``EncoderDecoder`` dict: FCN-D8 or UPerNet on ``type='ResNet'`` (v1b)."""
    head = str(settings.get("head", "fcn"))
    if head not in ("fcn", "upernet"):
        raise UserError(f"mmseg engine heads: fcn, upernet (got head={head!r}; deeplabv3 runs on --engine embedded)")
    if arch.get("small"):
        raise UserError("engine mmseg: the small-image ResNet stem (3x3 conv, no max-pool) has no mmseg equivalent; "
                        "use --engine embedded")
    ch = stage_channels(arch)
    norm_cfg = dict(type=norm, requires_grad=True)
    stem = int(round(64 * float(arch.get("width", 1.0))))
    backbone = dict(type="ResNet", depth=int(arch["depth"]), num_stages=4, out_indices=(0, 1, 2, 3),
                    style="pytorch", deep_stem=False, avg_down=False, stem_channels=stem, base_channels=stem,
                    norm_cfg=norm_cfg, norm_eval=False, contract_dilation=True)
    if fragment is not None:  # the converters' writer is the source of truth for the backbone fields
        fb = dict(fragment["backbone"])
        fb.pop("norm_cfg", None)
        backbone.update(fb)
    elif weights:
        backbone["init_cfg"] = dict(type="Pretrained", checkpoint=str(weights), prefix="backbone.")
    if head == "fcn":
        os_ = int(settings.get("output_stride", 8))
        backbone.update(strides=(1, 2, 1, 1), dilations=(1, 1, 2, 4)) if os_ == 8 else \
            backbone.update(strides=(1, 2, 2, 1), dilations=(1, 1, 1, 2)) if os_ == 16 else \
            backbone.update(strides=(1, 2, 2, 2), dilations=(1, 1, 1, 1))
        decode = dict(type="FCNHead", in_channels=ch[3], in_index=3, channels=max(8, ch[3] // 4), num_convs=2,
                      concat_input=True, dropout_ratio=0.1, num_classes=num_classes, norm_cfg=norm_cfg,
                      align_corners=False, loss_decode=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=1.0))
    else:
        backbone.update(strides=(1, 2, 2, 2), dilations=(1, 1, 1, 1))
        decode = dict(type="UPerHead", in_channels=ch, in_index=[0, 1, 2, 3], pool_scales=(1, 2, 3, 6),
                      channels=max(8, ch[3] // 4), dropout_ratio=0.1, num_classes=num_classes, norm_cfg=norm_cfg,
                      align_corners=False, loss_decode=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=1.0))
    crop = int(settings["crop_size"])
    mode = str(settings.get("test_mode", "whole"))
    test_cfg = dict(mode="whole") if mode == "whole" else dict(
        mode="slide", crop_size=(crop, crop), stride=(int(settings.get("test_stride") or crop * 2 // 3),) * 2)
    model = dict(
        type="EncoderDecoder",
        data_preprocessor=dict(type="SegDataPreProcessor", mean=[255.0 * m for m in mean], std=[255.0 * s for s in std],
                               bgr_to_rgb=True, pad_val=0, seg_pad_val=IGNORE_INDEX, size=(crop, crop)),
        pretrained=None, backbone=backbone, decode_head=decode, train_cfg=dict(), test_cfg=test_cfg)
    if settings.get("aux", True):
        model["auxiliary_head"] = dict(
            type="FCNHead", in_channels=ch[2], in_index=2, channels=max(4, ch[2] // 4), num_convs=1,
            concat_input=False, dropout_ratio=0.1, num_classes=num_classes, norm_cfg=norm_cfg, align_corners=False,
            loss_decode=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=float(settings.get("aux_weight", 0.4))))
    return model


def dataset_configs(mm_layout: str, data: Path, classes: List[str], prepared: Optional[Path]) -> Tuple[dict, dict]:
    """(train, val) ``BaseSegDataset`` kwargs (without pipelines) over the user's folder."""
    meta = dict(classes=tuple(classes))
    if mm_layout == "voc":
        root = voc_root(data)
        base = dict(type="BaseSegDataset", data_root=str(root), img_suffix=".jpg", seg_map_suffix=".png",
                    metainfo=meta, reduce_zero_label=False)
        tr = dict(base, data_prefix=dict(img_path="JPEGImages", seg_map_path="SegmentationClass"),
                  ann_file="ImageSets/Segmentation/train.txt")
        if (root / "ImageSets/Segmentation/aug.txt").is_file() and (root / "SegmentationClassAug").is_dir():
            aug = dict(base, data_prefix=dict(img_path="JPEGImages", seg_map_path="SegmentationClassAug"),
                       ann_file="ImageSets/Segmentation/aug.txt")
            tr = dict(type="ConcatDataset", datasets=[tr, aug])
        va = dict(base, data_prefix=dict(img_path="JPEGImages", seg_map_path="SegmentationClass"),
                  ann_file="ImageSets/Segmentation/val.txt")
        return tr, va
    if mm_layout == "cityscapes":
        if not any((data / "gtFine" / "train").glob("*/*_gtFine_labelTrainIds.png")):
            raise UserError(f"{data}/gtFine: the mmseg engine needs *_gtFine_labelTrainIds.png (make them with mmseg "
                            "tools/dataset_converters/cityscapes.py) or use --engine embedded, which maps labelIds")
        base = dict(type="BaseSegDataset", data_root=str(data), img_suffix="_leftImg8bit.png",
                    seg_map_suffix="_gtFine_labelTrainIds.png", metainfo=meta, reduce_zero_label=False)
        return (dict(base, data_prefix=dict(img_path="leftImg8bit/train", seg_map_path="gtFine/train")),
                dict(base, data_prefix=dict(img_path="leftImg8bit/val", seg_map_path="gtFine/val")))
    if mm_layout == "ade":
        base = dict(type="BaseSegDataset", data_root=str(ade_root(data)), img_suffix=".jpg", seg_map_suffix=".png",
                    metainfo=meta, reduce_zero_label=True)
        return (dict(base, data_prefix=dict(img_path="images/training", seg_map_path="annotations/training")),
                dict(base, data_prefix=dict(img_path="images/validation", seg_map_path="annotations/validation")))
    assert prepared is not None
    base = dict(type="BaseSegDataset", data_root=str(prepared), img_suffix=".png", seg_map_suffix=".png",
                metainfo=meta, reduce_zero_label=False)
    return (dict(base, data_prefix=dict(img_path="img_dir/train", seg_map_path="ann_dir/train")),
            dict(base, data_prefix=dict(img_path="img_dir/val", seg_map_path="ann_dir/val")))


def prepare_generic(train_ds, val_ds, root: Path) -> Path:
    """Write in-memory splits as ``img_dir/{train,val}/*.png`` + ``ann_dir/{train,val}/*.png`` (once)."""
    done = root / ".complete"
    if done.is_file():
        return root
    for split, ds in (("train", train_ds), ("val", val_ds)):
        (root / "img_dir" / split).mkdir(parents=True, exist_ok=True)
        (root / "ann_dir" / split).mkdir(parents=True, exist_ok=True)
        for i in range(len(ds)):
            img, mask, name = ds[i]
            Image.fromarray(img).save(root / "img_dir" / split / f"{name}.png")
            Image.fromarray(mask.astype(np.uint8)).save(root / "ann_dir" / split / f"{name}.png")
    done.write_text("ok\n")
    return root


def build_config(*, arch: Dict[str, Any], weights: Optional[str], fragment: Optional[Dict[str, Any]],
                 classes: List[str], mm_layout: str, data: Path, prepared: Optional[Path], settings: Dict[str, Any],
                 work_dir: Path, mean, std, train_size: Tuple[int, int]) -> Dict[str, Any]:
    """The full mmengine config dict for ``Runner.from_cfg`` (pure; needs no mmseg import)."""
    crop = int(settings["crop_size"])
    max_iter = int(settings["max_iter"])
    scale = tuple(settings["scale"]) if settings.get("scale") else (max(train_size), min(train_size))
    ratio = tuple(settings.get("ratio_range") or (1.0, 1.0))
    train_pipe = [dict(type="LoadImageFromFile"), dict(type="LoadAnnotations"),
                  dict(type="RandomResize", scale=scale, ratio_range=ratio, keep_ratio=True),
                  dict(type="RandomCrop", crop_size=(crop, crop), cat_max_ratio=0.75),
                  dict(type="RandomFlip", prob=0.5)]
    if settings.get("photometric", True):
        train_pipe.append(dict(type="PhotoMetricDistortion"))
    train_pipe.append(dict(type="PackSegInputs"))
    test_pipe = [dict(type="LoadImageFromFile")]
    if settings.get("test_scale"):
        test_pipe.append(dict(type="Resize", scale=tuple(settings["test_scale"]), keep_ratio=True))
    test_pipe += [dict(type="LoadAnnotations"), dict(type="PackSegInputs")]
    tr, va = dataset_configs(mm_layout, data, classes, prepared)

    def with_pipe(d, pipe):
        if d["type"] == "ConcatDataset":
            return dict(d, datasets=[dict(x, pipeline=pipe) for x in d["datasets"]])
        return dict(d, pipeline=pipe)

    workers = int(settings.get("workers", 0))
    if settings.get("eval_limit"):
        va = dict(va, indices=int(settings["eval_limit"]))
    test_loader = dict(batch_size=1, num_workers=workers, persistent_workers=workers > 0,
                       sampler=dict(type="DefaultSampler", shuffle=False), dataset=with_pipe(va, test_pipe))
    ckpt_every = max_iter  # mmengine's own checkpoints don't load under weights_only: no mid-run resume
    return dict(
        default_scope="mmseg",
        work_dir=str(work_dir),
        model=model_config(arch=arch, weights=weights, num_classes=len(classes), settings=settings, mean=mean,
                           std=std, fragment=fragment),
        train_dataloader=dict(batch_size=int(settings["batch_size"]), num_workers=workers,
                              persistent_workers=workers > 0, sampler=dict(type="InfiniteSampler", shuffle=True),
                              dataset=with_pipe(tr, train_pipe)),
        test_dataloader=test_loader,
        test_evaluator=dict(type="TransferIoUMetric", iou_metrics=["mIoU"], ignore_index=IGNORE_INDEX),
        test_pipeline=test_pipe,
        train_cfg=dict(type="IterBasedTrainLoop", max_iters=max_iter, val_interval=max_iter + 1),
        test_cfg=dict(type="TestLoop"),
        optim_wrapper=dict(type="OptimWrapper", optimizer=dict(type="SGD", lr=float(settings["lr"]),
                                                               momentum=float(settings["momentum"]),
                                                               weight_decay=float(settings["weight_decay"])),
                           clip_grad=None),
        param_scheduler=[dict(type="PolyLR", eta_min=float(settings["min_lr"]), power=float(settings["power"]),
                              begin=0, end=max_iter, by_epoch=False)],
        default_hooks=dict(timer=dict(type="IterTimerHook"),
                           logger=dict(type="LoggerHook", interval=max(1, min(50, max_iter)), log_metric_by_epoch=False),
                           param_scheduler=dict(type="ParamSchedulerHook"),
                           checkpoint=dict(type="CheckpointHook", by_epoch=False, interval=ckpt_every, max_keep_ckpts=1,
                                           save_last=True),
                           sampler_seed=dict(type="DistSamplerSeedHook")),
        env_cfg=dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method="fork", opencv_num_threads=0),
                     dist_cfg=dict(backend="nccl")),
        log_processor=dict(by_epoch=False),
        log_level=str(settings.get("mm_log_level", "WARNING")),
        randomness=dict(seed=int(settings.get("seed", 0))),
        load_from=None,
        resume=False,
    )


# ----------------------------------------------------------------------------- metric
def _register_metric() -> None:
    # mmsegmentation is optional (the mmseg engine only)
    from mmseg.evaluation.metrics import IoUMetric
    from mmseg.registry import METRICS

    if "TransferIoUMetric" in METRICS.module_dict:
        return

    class TransferIoUMetric(IoUMetric):
        """mmseg's IoUMetric (per-image ``intersect_and_union``), reduced through
        :func:`metrics_from_areas` so per-class values come back as scalars ``IoU.<class>``."""
        def compute_metrics(self, results: list) -> Dict[str, float]:
            cols = tuple(zip(*results))
            inter, _union, pred, label = (sum(c).cpu().numpy() for c in cols)
            m = metrics_from_areas(inter, pred, label, list(self.dataset_meta["classes"]))
            out = {k: (float("nan") if m[k] is None else m[k]) for k in ("mIoU", "aAcc", "mAcc")}
            out["pixels"] = float(m["pixels"])
            for c, v in m["per_class_iou"].items():
                out[f"IoU.{c}"] = float("nan") if v is None else v
            for c, v in m["per_class_acc"].items():
                out[f"Acc.{c}"] = float("nan") if v is None else v
            return out

    METRICS.register_module(module=TransferIoUMetric)


def _unflatten(metrics: Dict[str, float], classes: List[str]) -> Dict[str, Any]:
    def v(x):
        return None if x is None or (isinstance(x, float) and np.isnan(x)) else round(float(x), 4)

    return {"mIoU": v(metrics.get("mIoU")), "aAcc": v(metrics.get("aAcc")), "mAcc": v(metrics.get("mAcc")),
            "per_class_iou": {c: v(metrics.get(f"IoU.{c}")) for c in classes},
            "per_class_acc": {c: v(metrics.get(f"Acc.{c}")) for c in classes},
            "pixels": int(metrics.get("pixels", 0))}


# ----------------------------------------------------------------------------- run
def run(job: Job) -> Dict[str, Any]:
    """Train (unless ``eval_only``) and evaluate with mmsegmentation's runner."""
    source, task_name, data, train_ds, val_ds = job.source, job.task.name, Path(job.data), job.train, job.test
    settings, out_dir, eval_only = job.settings, job.out_dir, job.eval_only  # mmseg picks its own device
    mm_layout = str(job.task.options.get("mm_layout", "generic"))
    ok, why = available()
    if not ok:
        raise UserError(f"engine mmseg is not available: {why}")
    arch = dict(source.meta.get("arch") or source.backbone.arch_dict())
    work = Path(out_dir) / "mmseg"
    work.mkdir(parents=True, exist_ok=True)
    writer = get_writer("mmseg")
    converted, _ = writer.convert(source.backbone.state_dict(), arch)
    weights = work / "backbone_mmseg.pth"
    paths = writer.save(weights, converted, {"arch": arch})
    fragment = read_fragment(paths[1]) if len(paths) > 1 else None
    prepared = prepare_generic(train_ds, val_ds, work / "data") if mm_layout == "generic" else None
    mean, std = norm_stats(source.meta, settings)
    h, w = train_ds[0][1].shape
    cfg_dict = build_config(arch=arch, weights=str(weights), fragment=fragment, classes=list(train_ds.classes),
                            mm_layout=mm_layout, data=Path(data), prepared=prepared, settings=settings, work_dir=work,
                            mean=mean, std=std, train_size=(w, h))
    # mmengine is optional (the mmseg engine only)
    from mmengine.config import Config
    from mmengine.runner import Runner
    from mmseg.utils import register_all_modules

    register_all_modules(init_default_scope=True)
    _register_metric()
    final = work / FINAL_WEIGHTS
    if eval_only:
        if not final.is_file():
            raise UserError(f"--eval-only: no trained mmseg model in {work} ({FINAL_WEIGHTS} missing); train first")
        cfg_dict["load_from"] = str(final)
        for k in ("train_dataloader", "train_cfg", "optim_wrapper", "param_scheduler"):
            cfg_dict.pop(k)
    cfg = Config(cfg_dict)
    Config(cfg_dict).dump(str(work / f"{task_name}_config.py"))
    t0 = time.time()
    runner = Runner.from_cfg(cfg)
    iters = 0
    if not eval_only:
        runner.train()
        iters = int(runner.iter)
        # tensors only: loads under torch.load(weights_only=True), unlike mmengine's own
        # checkpoints (they pickle its message hub and numpy objects)
        sd = {k: v.detach().cpu().contiguous() for k, v in runner.model.state_dict().items()}
        atomic_write(final, lambda tmp: torch.save({"state_dict": sd, "iter": torch.tensor(iters)}, tmp))
    else:
        iters = int(torch.load(final, map_location="cpu", weights_only=True).get("iter", torch.tensor(0)))
    train_s = time.time() - t0
    t1 = time.time()
    metrics = runner.test()
    res = _unflatten(metrics, list(train_ds.classes))
    n_val = len(val_ds) if not settings.get("eval_limit") else min(len(val_ds), int(settings["eval_limit"]))
    res.update({"num_val_images": n_val, "iters": iters, "max_iter": int(settings["max_iter"]),
                "train_time_s": round(train_s, 2), "eval_time_s": round(time.time() - t1, 2),
                "device": str(next(runner.model.parameters()).device), "final_loss": None,
                "normalisation": {"mean": list(mean), "std": list(std)},
                "mmseg_config": str(work / f"{task_name}_config.py"), "mmseg_weights": str(weights)})
    res["_samples"] = _samples(runner, cfg, val_ds, int(settings.get("report_images", 4)))
    return res


def _samples(runner, cfg, val_ds, k: int) -> list:
    """(image, label, prediction, name) for the first ``k`` validation images, via mmseg's
    ``inference_model`` on the trained model."""
    # mmsegmentation is optional (the mmseg engine only)
    from mmseg.apis import inference_model

    model = runner.model
    model.cfg = cfg.copy()
    model.eval()
    out = []
    for i in range(min(k, len(val_ds))):
        img, mask, name = val_ds[i]
        r = inference_model(model, np.ascontiguousarray(img[..., ::-1]))
        out.append((img, mask, r.pred_sem_seg.data[0].cpu().numpy(), name))
    return out


register_engine(Engine("mmseg", "seg", check=available, run=run, accepts=no_small_stem))
