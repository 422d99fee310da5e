"""The torchvision detection engine: Faster / Mask R-CNN on our ResNet, always available.

Model (``torchvision.models.detection``; weights=None everywhere, nothing is downloaded):
- ``head=fpn``: ResNet res2-res5 -> ``torchvision.ops.FeaturePyramidNetwork`` (+ max-pool P6),
  one anchor size per level (32..512, detectron2's ``Base-RCNN-FPN``), 7x7 box RoIAlign into a
  2-fc head, 14x14 mask RoIAlign into 4 convs + deconv (detectron2 ``MaskRCNNConvUpsampleHead``).
  For a small-image stem (3x3 stride-1, no max-pool; strides 1..8) the pyramid starts at res3.
- ``head=c4``: ResNet up to res4 (stride 16) feeds the RPN (5 anchor sizes, one level); res5 is
  moved into the RoI head and run on 14x14 RoIAlign crops, then averaged (detectron2
  ``Res5ROIHeads``); ``extra_norm`` adds MoCo's norm after res5 (facebookresearch/moco
  ``detection/train_net.py``, ``Res5ROIHeadsExtraNorm``); masks deconvolve the res5 map.
- Pixels are normalised with the checkpoint's mean/std (metadata) or ImageNet's.
- ``norm``: ``SyncBN`` (SyncBatchNorm under torch.distributed, otherwise plain BN -- one process
  is one sync group), ``BN`` or ``FrozenBN`` (statistics and affine fixed); ``fpn_norm`` likewise
  for the FPN (``""`` for none). ``freeze_at=k`` freezes the first k of stem, res2..res5 as
  detectron2's ``BACKBONE.FREEZE_AT`` does (requires_grad off, FrozenBN).

Training follows detectron2's ``SOLVER`` semantics: iterations, SGD momentum 0.9, weight decay
1e-4 (none on norm parameters, ``WEIGHT_DECAY_NORM: 0``), linear warm-up from
``warmup_factor`` over ``warmup_iters``, x``gamma`` at each of ``steps``; random horizontal flip;
multi-scale ``min_size_train``; images without boxes skipped (``FILTER_EMPTY_ANNOTATIONS``).
``last.pt`` (model, optimizer, iteration) is written every ``checkpoint_period`` iterations and
a run resumes from it; ``model_final.pt`` holds the trained model for ``--eval-only``.
Reference: torchvision ``references/detection/train.py`` and ``engine.py``.
"""
from __future__ import annotations

import hashlib
import json
import pickle
import re
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn
from torchvision.models.detection import FasterRCNN, MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.ops import FrozenBatchNorm2d, MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool

from transfer.checkpoint import atomic_write
from transfer.data.datasets import IMAGENET_MEAN, IMAGENET_STD
from transfer.devices import resolve_device
from transfer.errors import UserError
from transfer.progress import Progress

from .base import Engine, Job, register_engine
from .det_eval import evaluate, to_coco_dets
from .norm import resolve_mean_std

STAGES = ("stem", "res2", "res3", "res4", "res5")


def available():
    return True, ""




# ----------------------------------------------------------------------------------------- model
def _norm_layer(kind: str):
    kind = (kind or "").strip()
    if kind in ("", "none", "None"):
        return None
    if kind in ("BN", "SyncBN", "naiveSyncBN"):
        return nn.BatchNorm2d
    if kind == "FrozenBN":
        return FrozenBatchNorm2d
    raise UserError(f"norm {kind!r}: choose SyncBN, BN, FrozenBN (or '' for none where allowed)")


def freeze_bn(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm2d in ``module`` by a FrozenBatchNorm2d with the same statistics
    (detectron2 ``FrozenBatchNorm2d.convert_frozen_batchnorm``)."""
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        f = FrozenBatchNorm2d(module.num_features, eps=module.eps)
        if module.affine:
            f.weight.copy_(module.weight.detach())
            f.bias.copy_(module.bias.detach())
        if module.running_mean is not None:
            f.running_mean.copy_(module.running_mean)
            f.running_var.copy_(module.running_var)
        return f
    for name, child in module.named_children():
        new = freeze_bn(child)
        if new is not child:
            setattr(module, name, new)
    return module


class Trunk(nn.Module):
    """Stem + res2..res<last> of a :class:`transfer.backbones.ResNetBackbone` (its own modules,
    so pretrained weights stay in place), returning the requested stage maps."""

    def __init__(self, bb, last: str = "res5") -> None:
        super().__init__()
        self.conv1, self.bn1, self.relu, self.maxpool = bb.conv1, bb.bn1, bb.relu, bb.maxpool
        self.n = STAGES.index(last)
        for i in range(1, self.n + 1):
            setattr(self, f"layer{i}", getattr(bb, f"layer{i}"))

    def stage_modules(self, stage: str) -> List[nn.Module]:
        i = STAGES.index(stage)
        if i == 0:
            return [self.conv1, self.bn1]
        return [getattr(self, f"layer{i}")] if i <= self.n else []

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        out = {}
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        out["stem"] = x
        for i in range(1, self.n + 1):
            x = getattr(self, f"layer{i}")(x)
            out[STAGES[i]] = x
        return out


class FPNBackbone(nn.Module):
    def __init__(self, bb, in_stages: Sequence[str], out_channels: int, fpn_norm: str) -> None:
        super().__init__()

        self.body = Trunk(bb, "res5")
        self.in_stages = list(in_stages)
        chans = [bb.stage_channels[STAGES.index(s) - 1] for s in self.in_stages]
        self.fpn = FeaturePyramidNetwork(chans, out_channels, extra_blocks=LastLevelMaxPool(),
                                         norm_layer=_norm_layer(fpn_norm))
        self.out_channels = out_channels

    def forward(self, x):
        f = self.body(x)
        return self.fpn(OrderedDict((str(i), f[s]) for i, s in enumerate(self.in_stages)))


class C4Backbone(nn.Module):
    def __init__(self, bb) -> None:
        super().__init__()
        self.body = Trunk(bb, "res4")
        self.out_channels = bb.stage_channels[2]

    def forward(self, x):
        return OrderedDict([("0", self.body(x)["res4"])])


class Res5Head(nn.Module):
    """res5 on pooled RoIs [+ MoCo's extra norm], then mean-pooled (``flatten=True``: the box
    head) or kept as a map (the mask head shares the same res5 module)."""

    def __init__(self, res5: nn.Module, extra_norm: Optional[nn.Module], flatten: bool) -> None:
        super().__init__()
        self.res5 = res5
        self.norm = extra_norm if extra_norm is not None else nn.Identity()
        self.flatten = flatten

    def forward(self, x):
        x = self.norm(self.res5(x))
        return x.mean(dim=(2, 3)) if self.flatten else x


def build_model(backbone, num_classes: int, s: Dict[str, Any], meta: Optional[Dict[str, Any]] = None):
    """Faster / Mask R-CNN (``s["mask_on"]``) with ``num_classes`` foreground classes on ``backbone``."""
    head = str(s.get("head", "fpn")).lower()
    if head not in ("fpn", "c4"):
        raise UserError(f"head {head!r}: choose fpn or c4")
    _norm_layer(s.get("norm", "SyncBN"))  # validate
    freeze_at = int(s.get("freeze_at", 0))
    if not 0 <= freeze_at <= 5:
        raise UserError(f"freeze_at={freeze_at}: choose 0 (train all) .. 5 (freeze stem and res2..res5)")
    if s.get("norm") == "FrozenBN":
        freeze_bn(backbone)
    small = bool(getattr(backbone.spec, "small", False))
    base = float(s.get("anchor_base", 32))
    ratios = tuple(float(r) for r in s.get("anchor_ratios", [0.5, 1.0, 2.0]))
    mask_on = bool(s.get("mask_on", False))
    mean, std, _ = resolve_mean_std(meta or {})
    sizes_train = s.get("min_size_train", 800)
    sizes_train = tuple(int(v) for v in (sizes_train if isinstance(sizes_train, (list, tuple)) else [sizes_train]))
    common = dict(
        min_size=sizes_train, max_size=int(s.get("max_size", 1333)), image_mean=mean, image_std=std,
        box_score_thresh=float(s.get("score_thresh_test", 0.05)), box_nms_thresh=float(s.get("nms_thresh_test", 0.5)),
        box_detections_per_img=int(s.get("detections_per_image", 100)),
        box_batch_size_per_image=int(s.get("roi_batch_size_per_image", 512)),
        rpn_batch_size_per_image=int(s.get("rpn_batch_size_per_image", 256)),
    )
    ncls = num_classes + 1  # + background
    if head == "fpn":
        stages = s.get("fpn_stages", "auto")
        if stages in ("auto", None):
            stages = ["res3", "res4", "res5"] if small else ["res2", "res3", "res4", "res5"]
        fpn_ch = int(s.get("fpn_channels", 256))
        body = FPNBackbone(backbone, stages, fpn_ch, str(s.get("fpn_norm", "SyncBN")))
        n_maps = len(stages) + 1
        names = [str(i) for i in range(len(stages))]
        anchors = AnchorGenerator(tuple((base * 2 ** i,) for i in range(n_maps)), (ratios,) * n_maps)
        box_dim = int(s.get("box_head_dim", 1024))
        kw = dict(rpn_anchor_generator=anchors,
                  box_roi_pool=MultiScaleRoIAlign(names, 7, 2),
                  box_head=TwoMLPHead(fpn_ch * 49, box_dim), box_predictor=FastRCNNPredictor(box_dim, ncls),
                  rpn_pre_nms_top_n_train=2000, rpn_pre_nms_top_n_test=1000,
                  rpn_post_nms_top_n_train=1000, rpn_post_nms_top_n_test=1000)
        if mask_on:
            md = int(s.get("mask_head_dim", 256))
            kw.update(mask_roi_pool=MultiScaleRoIAlign(names, 14, 2), mask_head=MaskRCNNHeads(fpn_ch, [md] * 4, 1),
                      mask_predictor=MaskRCNNPredictor(md, md, ncls))
    else:
        body = C4Backbone(backbone)
        res5 = backbone.layer4
        res5_ch = backbone.stage_channels[3]
        extra = None
        if bool(s.get("extra_norm", True)):
            nl = _norm_layer(s.get("norm", "SyncBN"))
            extra = nl(res5_ch) if nl is not None else None
        anchors = AnchorGenerator((tuple(base * 2 ** i for i in range(5)),), (ratios,))
        kw = dict(rpn_anchor_generator=anchors,
                  box_roi_pool=MultiScaleRoIAlign(["0"], 14, 0), box_head=Res5Head(res5, extra, True),
                  box_predictor=FastRCNNPredictor(res5_ch, ncls),
                  rpn_pre_nms_top_n_train=12000, rpn_pre_nms_top_n_test=int(s.get("rpn_pre_nms_topk_test", 6000)),
                  rpn_post_nms_top_n_train=2000, rpn_post_nms_top_n_test=int(s.get("rpn_post_nms_topk_test", 1000)))
        if mask_on:
            md = int(s.get("mask_head_dim", 256))
            kw.update(mask_roi_pool=MultiScaleRoIAlign(["0"], 14, 0), mask_head=Res5Head(res5, extra, False),
                      mask_predictor=MaskRCNNPredictor(res5_ch, md, ncls))
    cls = MaskRCNN if mask_on else FasterRCNN
    model = cls(body, num_classes=None, **common, **kw)
    for stage in STAGES[:freeze_at]:
        for m in body.body.stage_modules(stage):
            for p in m.parameters():
                p.requires_grad_(False)
    if freeze_at:
        for stage in STAGES[:freeze_at]:
            for m in body.body.stage_modules(stage):
                freeze_bn(m)
        # freeze_bn replaces children in place; rebind the frozen modules on the trunk
        _rebind_frozen(body.body, freeze_at)
    if s.get("norm") in ("SyncBN", "naiveSyncBN") and torch.distributed.is_available() and torch.distributed.is_initialized():
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model


def _rebind_frozen(trunk: Trunk, freeze_at: int) -> None:
    if freeze_at >= 1 and isinstance(trunk.bn1, nn.BatchNorm2d):
        trunk.bn1 = freeze_bn(trunk.bn1)
        for p in trunk.conv1.parameters():
            p.requires_grad_(False)


# ------------------------------------------------------------------------------------------ data
def load_image(path: str) -> torch.Tensor:
    """An RGB image as (3, H, W) floats in [0, 1]; a missing, unreadable, truncated or over-sized
    (Pillow's decompression-bomb limit) file is one :class:`UserError` naming it."""
    try:
        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except FileNotFoundError:
        raise UserError(f"image file missing: {path}") from None
    except Exception as e:  # UnidentifiedImageError, truncated data, DecompressionBombError, ...
        first = (str(e).strip().splitlines() or [""])[0][:200]
        raise UserError(f"cannot read image {path}: {type(e).__name__}: {first}") from None
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)


def decode_masks(im, keep: np.ndarray, source: object = "") -> torch.Tensor:
    """COCO polygons / RLE of the kept boxes -> (N, H, W) uint8 (a filled box where none is given).
    A mask that cannot be decoded, or whose RLE size is not the image's, is one :class:`UserError`
    naming the annotation file (``source``) and the image."""
    # pycocotools is optional (the detection extra)
    from pycocotools import mask as mask_util

    out = np.zeros((int(keep.sum()), im.height, im.width), np.uint8)
    for n, j in enumerate(np.nonzero(keep)[0]):
        seg = im.segms[j] if im.segms is not None else None
        if seg is None:
            x0, y0, x1, y1 = (int(round(v)) for v in im.boxes[j])
            out[n, y0:y1, x0:x1] = 1
            continue
        where = f"{source}: image {im.file}, object {int(j)}"
        if isinstance(seg, dict) and isinstance(seg.get("size"), (list, tuple)) and \
                [int(v) for v in seg["size"]] != [im.height, im.width]:
            raise UserError(f"{where}: mask RLE size {list(seg['size'])} (height, width) is not the image's "
                            f"[{im.height}, {im.width}]")
        try:
            if isinstance(seg, list):
                rle = mask_util.merge(mask_util.frPyObjects(seg, im.height, im.width))
            elif isinstance(seg.get("counts"), list):
                rle = mask_util.frPyObjects(seg, im.height, im.width)
            else:
                rle = seg
            m = mask_util.decode(rle)
        except Exception as e:
            raise UserError(f"{where}: cannot decode its mask ({type(e).__name__}: {str(e)[:160]})") from None
        if m.shape != (im.height, im.width):
            raise UserError(f"{where}: mask is {m.shape[1]}x{m.shape[0]} (WxH), the image is {im.width}x{im.height}")
        out[n] = m
    return torch.from_numpy(out)


def read_engine_state(path: Path, what: str, hint: str) -> Dict[str, Any]:
    """A model / training state this engine saved, loaded with ``weights_only=True`` (nothing in
    the file is executed); an empty, truncated, pickled-code or foreign file is one
    :class:`UserError` naming it. ``hint`` says what to do about it."""
    path = Path(path)
    if path.stat().st_size == 0:
        raise UserError(f"{what}: cannot read {path}: empty file ({hint})")
    try:
        st = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # weights_only refused a global: code or a non-tensor object
        raise UserError(f"{what}: refused {path}: it holds pickled objects other than tensors and plain data "
                        f"(loaded with weights_only=True, nothing was executed; {hint})") from None
    except Exception as e:  # truncated zip, not a torch file
        first = re.sub(r"\x1b\[[0-9;]*m", "", (str(e).strip().splitlines() or [""])[0])[:160]
        raise UserError(f"{what}: cannot read {path}: {type(e).__name__}: {first} ({hint})") from None
    if not isinstance(st, dict) or not isinstance(st.get("model"), dict) or \
            not all(isinstance(v, torch.Tensor) for v in st["model"].values()):
        raise UserError(f"{what}: {path} is not a model saved by this engine (no 'model' state dict of tensors; {hint})")
    return st


def load_model_state(model: nn.Module, sd: Dict[str, Any], path: Path, what: str) -> None:
    """``model.load_state_dict(sd)``; missing keys, unexpected keys or wrong shapes are one line."""
    try:
        model.load_state_dict(sd)
    except (RuntimeError, TypeError, ValueError, KeyError) as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        detail = (lines[1] if len(lines) > 1 else (lines[0] if lines else type(e).__name__))[:200]
        raise UserError(f"{what}: {path} does not fit the model ({detail})") from None


class TrainSet(torch.utils.data.Dataset):
    """(image, target) pairs of a split's images that have trainable (non-crowd) boxes; index
    ``(i, flip)`` so the sampler decides the flip and a resumed run sees the same stream."""

    def __init__(self, split, with_masks: bool) -> None:
        self.split, self.with_masks = split, with_masks
        self.index = [i for i, im in enumerate(split.images) if int((~im.crowd).sum()) > 0]
        self.skipped_empty = len(split.images) - len(self.index)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, item):
        i, flip = item
        im = self.split.images[self.index[i]]
        img = load_image(im.file)
        if img.shape[1:] != (im.height, im.width):
            raise UserError(f"{self.split.source}: image {im.file} is {img.shape[2]}x{img.shape[1]}, "
                            f"the annotation says {im.width}x{im.height}")
        keep = ~im.crowd
        boxes = torch.from_numpy(im.boxes[keep].copy())
        t = {"boxes": boxes, "labels": torch.from_numpy(im.labels[keep].copy())}
        if self.with_masks:
            t["masks"] = decode_masks(im, keep, self.split.source)
        if flip:
            img = img.flip(-1)
            w = im.width
            t["boxes"] = torch.stack([w - boxes[:, 2], boxes[:, 1], w - boxes[:, 0], boxes[:, 3]], 1)
            if "masks" in t:
                t["masks"] = t["masks"].flip(-1)
        return img, t


class IterBatches(torch.utils.data.Sampler):
    """Batches for iterations ``start..stop-1``: epoch-wise permutations of a seeded RNG, so
    iteration ``i`` always gets the same images and flips (resume sees the same stream)."""

    def __init__(self, n: int, batch: int, start: int, stop: int, seed: int, flip: bool) -> None:
        self.n, self.batch, self.start, self.stop, self.seed, self.flip = n, batch, start, stop, seed, flip

    def _epoch(self, e: int):
        rng = np.random.RandomState((self.seed * 100003 + e) % (2 ** 31))
        return rng.permutation(self.n), rng.rand(self.n) < 0.5

    def __iter__(self):
        cache = {}
        for it in range(self.start, self.stop):
            items = []
            for k in range(it * self.batch, (it + 1) * self.batch):
                e, j = divmod(k, self.n)
                if e not in cache:
                    cache.clear()
                    cache[e] = self._epoch(e)
                perm, flips = cache[e]
                items.append((int(perm[j]), bool(flips[j]) and self.flip))
            yield items

    def __len__(self) -> int:
        return self.stop - self.start


def _collate(batch):
    return tuple(zip(*batch))


# ------------------------------------------------------------------------------------- schedule
def lr_at(it: int, s: Dict[str, Any]) -> float:
    """detectron2 ``WarmupMultiStepLR``: linear warm-up from ``warmup_factor``, then x``gamma`` per step passed."""
    lr = float(s["base_lr"]) * float(s.get("gamma", 0.1)) ** sum(1 for st in s.get("steps", []) if it >= int(st))
    w = int(s.get("warmup_iters", 0))
    if it < w:
        a = it / w
        lr *= float(s.get("warmup_factor", 0.001)) * (1 - a) + a
    return lr


def fingerprint(s: Dict[str, Any], ident: str, num_classes: int) -> str:
    keys = ("head", "mask_on", "norm", "fpn_norm", "freeze_at", "fpn_channels", "fpn_stages", "box_head_dim",
            "mask_head_dim", "anchor_base", "anchor_ratios", "extra_norm", "base_lr", "ims_per_batch", "max_iter",
            "steps", "warmup_iters", "seed", "min_size_train", "max_size")
    d = {k: s.get(k) for k in keys}
    d.update(weights=ident, num_classes=num_classes)
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _param_groups(model: nn.Module, wd: float):
    norm_types = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)
    decay, no_decay = [], []
    for m in model.modules():
        for p in m.parameters(recurse=False):
            if p.requires_grad:
                (no_decay if isinstance(m, norm_types) else decay).append(p)
    return [{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}]


# ----------------------------------------------------------------------------------- train/eval
def train(model, train_split, s: Dict[str, Any], out_dir: Path, device: torch.device, fp: str,
          log=print) -> Dict[str, Any]:
    max_iter = int(s["max_iter"])
    ds = TrainSet(train_split, bool(s.get("mask_on")))
    if len(ds) == 0:
        raise UserError(f"{train_split.source}: training split {train_split.name!r} has no image with a usable box")
    opt = torch.optim.SGD(_param_groups(model, float(s.get("weight_decay", 1e-4))), lr=float(s["base_lr"]),
                          momentum=float(s.get("momentum", 0.9)))
    start = 0
    last = out_dir / "last.pt"
    if last.is_file() and bool(s.get("resume", True)):
        st = read_engine_state(last, "resume", "delete it or pass resume=false")
        if st.get("fingerprint") != fp:
            raise UserError(f"{last} belongs to a run with other settings or weights; use another --out or resume=false")
        load_model_state(model, st["model"], last, "resume")
        try:
            opt.load_state_dict(st["optimizer"])
            start = int(st["iter"])
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise UserError(f"resume: {last} has no usable optimizer state / iteration ({type(e).__name__}: "
                            f"{str(e)[:120]}); delete it or pass resume=false") from None
        log(f"resumed from {last} at iteration {start}/{max_iter}")
    model.to(device)
    for g in opt.state.values():
        for k, v in g.items():
            if torch.is_tensor(v):
                g[k] = v.to(device)
    hist: List[Dict[str, float]] = []
    if start >= max_iter:
        return {"start_iter": start, "max_iter": max_iter, "losses": hist, "train_images": len(ds),
                "skipped_empty": ds.skipped_empty, "seconds": 0.0}
    sampler = IterBatches(len(ds), int(s.get("ims_per_batch", 2)), start, max_iter, int(s.get("seed", 0)),
                          bool(s.get("flip", True)))
    loader = torch.utils.data.DataLoader(ds, batch_sampler=sampler, num_workers=int(s.get("workers", 0)),
                                         collate_fn=_collate)
    prog = Progress(max_iter, start, enabled=bool(s.get("progress", True)), unit="it", desc="train")
    period = int(s.get("checkpoint_period", 500))
    model.train()
    t0 = time.time()
    torch.manual_seed(int(s.get("seed", 0)) + start)
    for it, (images, targets) in zip(range(start, max_iter), loader):
        lr = lr_at(it, s)
        for g in opt.param_groups:
            g["lr"] = lr
        images = [im.to(device) for im in images]
        targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
        losses = model(images, targets)
        loss = sum(losses.values())
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss became infinite or NaN at iteration {it}: "
                                     + ", ".join(f"{k}={float(v):.4g}" for k, v in losses.items()))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        rec = {"iter": it + 1, "lr": lr, "loss": float(loss.detach())}
        rec.update({k: float(v.detach()) for k, v in losses.items()})
        hist.append(rec)
        prog.update(it + 1, loss=rec["loss"], lr=lr)
        if (it + 1) % period == 0 or it + 1 == max_iter:
            state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "iter": it + 1, "fingerprint": fp}
            atomic_write(last, lambda tmp: torch.save(state, tmp))
    prog.close()
    return {"start_iter": start, "max_iter": max_iter, "losses": hist, "train_images": len(ds),
            "skipped_empty": ds.skipped_empty, "seconds": time.time() - t0}


@torch.no_grad()
def predict(model, split, s: Dict[str, Any], device: torch.device) -> List[dict]:
    """COCO-format detections for every image of ``split``."""
    model.eval().to(device)
    old = model.transform.min_size
    model.transform.min_size = (int(s.get("min_size_test", old[-1])),)
    dets: List[dict] = []
    prog = Progress(len(split.images), 0, enabled=bool(s.get("progress", True)), unit="img", desc="eval")
    try:
        for n, im in enumerate(split.images):
            img = load_image(im.file).to(device)
            out = model([img])[0]
            masks = None
            if "masks" in out:
                masks = (out["masks"][:, 0] > 0.5).cpu().numpy()
            dets += to_coco_dets(im.image_id, out["boxes"].cpu().numpy(), out["scores"].cpu().numpy(),
                                 out["labels"].cpu().numpy(), split.cat_ids, masks)
            prog.update(n + 1)
    finally:
        model.transform.min_size = old
        prog.close()
    return dets


def run(job: Job) -> Dict[str, Any]:
    """Train (unless ``eval_only``) and evaluate; returns the metrics and how they were produced."""
    source, train_split, test_split, s, out_dir = job.source, job.train, job.test, job.settings, Path(job.out_dir)
    eval_only, device, voc_metric, log = job.eval_only, job.device, job.voc_metric, job.log
    dev = resolve_device(device)
    torch.manual_seed(int(s.get("seed", 0)))
    num_classes = len(train_split.classes)
    model = build_model(source.backbone, num_classes, s, source.meta)
    fp = fingerprint(s, source.identity, num_classes)
    out_dir.mkdir(parents=True, exist_ok=True)
    final = out_dir / "model_final.pt"
    info: Dict[str, Any] = {}
    if eval_only:
        src = final if final.is_file() else out_dir / "last.pt"
        if not src.is_file():
            raise UserError(f"--eval-only: no trained model in {out_dir} (model_final.pt or last.pt); train first")
        st = read_engine_state(src, "--eval-only", "train again without --eval-only, or pass another --out")
        if st.get("fingerprint") not in (None, fp):
            raise UserError(f"--eval-only: {src} was trained with other model settings or weights")
        load_model_state(model, st["model"], src, "--eval-only")
        info["loaded"] = str(src)
    else:
        info = train(model, train_split, s, out_dir, dev, fp, log=log)
        state = {"model": model.state_dict(), "iter": info["max_iter"], "fingerprint": fp}
        atomic_write(final, lambda tmp: torch.save(state, tmp))
    t0 = time.time()
    dets = predict(model, test_split, s, dev)
    metrics = evaluate(test_split, dets, with_masks=bool(s.get("mask_on")) and test_split.has_masks, voc=voc_metric)
    metrics["eval_seconds"] = time.time() - t0
    mean, std, norm_src = resolve_mean_std(source.meta)
    metrics["model"] = {"engine": "torchvision", "arch": "mask_rcnn" if s.get("mask_on") else "faster_rcnn",
                        "head": s.get("head"), "norm": s.get("norm"), "fpn_norm": s.get("fpn_norm"),
                        "norm_effective": "SyncBatchNorm" if (s.get("norm") in ("SyncBN", "naiveSyncBN") and torch.distributed.is_available()
                                                              and torch.distributed.is_initialized()) else
                        ("FrozenBatchNorm2d" if s.get("norm") == "FrozenBN" else "BatchNorm2d"),
                        "freeze_at": s.get("freeze_at"), "pixel_mean": mean, "pixel_std": std,
                        "pixel_norm_source": norm_src, "device": str(dev), "fingerprint": fp}
    metrics["train"] = {k: v for k, v in info.items() if k != "losses"}
    if info.get("losses"):
        metrics["train"]["final_loss"] = info["losses"][-1]["loss"]
        metrics["train"]["first_loss"] = info["losses"][0]["loss"]
        _write_losses(out_dir, info["losses"])
    metrics["_dets"] = dets
    return metrics


def _write_losses(out_dir: Path, losses: List[dict]) -> None:
    p = out_dir / "metrics.jsonl"
    with open(p, "a") as f:
        for r in losses:
            f.write(json.dumps(r) + "\n")


register_engine(Engine("torchvision", "det", check=available, run=run))
