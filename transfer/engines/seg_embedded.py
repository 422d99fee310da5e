"""The embedded segmentation engine: always available, plain PyTorch + torchvision.

Model: our ResNet made dilated (output stride 8 by default, as mmseg's ``-D8`` models:
``configs/_base_/models/fcn_r50-d8.py`` sets ``strides=(1, 2, 1, 1)``, ``dilations=(1, 1, 2, 4)``,
``contract_dilation=True``; torchvision's ``replace_stride_with_dilation`` is the same for
Bottleneck) with a torchvision head -- ``FCNHead`` (``torchvision/models/segmentation/fcn.py``;
``in//4`` channels, i.e. mmseg's 512 for R50) or ``DeepLabHead`` (ASPP,
``torchvision/models/segmentation/deeplabv3.py``), built with ``weights=None`` semantics (nothing
downloaded) -- plus an auxiliary ``FCNHead`` on ``res4`` weighted 0.4 as in mmseg's FCN.

Schedule: SGD (lr 0.01, momentum 0.9, wd 5e-4) with the poly rule
``lr = (lr0 - min_lr) * (1 - it / max_iter) ** 0.9 + min_lr`` per iteration (mmseg
``configs/_base_/schedules/schedule_20k.py``: ``PolyLR(eta_min=1e-4, power=0.9, by_epoch=False)``).
Training crops: random rescale in ``ratio_range`` of ``scale`` (keep ratio), random crop (padding
image 0 / label 255), horizontal flip, light photometric jitter (mmseg's train pipeline, reduced).

Evaluation: whole-image or sliding-window inference (mmseg ``EncoderDecoder.slide_inference``:
overlapping ``crop_size`` windows at ``test_stride``, logits averaged), optional test rescale,
then a confusion matrix with ignore index 255 (:mod:`.seg_metrics`).

Every iteration draws its batch and augmentation from ``(seed, iteration)`` and seeds torch's RNG
the same way, so a run resumed from ``train_state.pt`` continues exactly as if uninterrupted.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck
from torchvision.models.segmentation.deeplabv3 import DeepLabHead
from torchvision.models.segmentation.fcn import FCNHead

from ..checkpoint import load_state, save_state
from ..data.datasets import IMAGENET_MEAN, IMAGENET_STD
from ..devices import resolve_device
from ..errors import UserError
from ..progress import Progress
from .base import Engine, Job, register_engine
from .norm import resolve_mean_std
from .seg_metrics import IGNORE_INDEX, ConfusionMatrix

STATE_FILE = "train_state.pt"


def available() -> Tuple[bool, str]:
    return True, ""


# ----------------------------------------------------------------------------- model
def dilate_backbone(bb: nn.Module, output_stride: int = 8) -> nn.Module:
    """Replace strides by dilation in the last stages until the total stride is ``output_stride``
    (in place). First block of a dilated stage keeps the previous dilation (mmseg
    ``contract_dilation``); BasicBlock dilates ``conv1`` only, as mmseg's ``BasicBlock``."""
    if output_stride not in (8, 16, 32):
        raise UserError(f"output_stride must be 8, 16 or 32, got {output_stride}")
    stride = 1 if bb.spec.small else 4
    dilation = 1
    for name in ("layer2", "layer3", "layer4"):
        layer = getattr(bb, name)
        if stride * 2 <= output_stride:
            stride *= 2
            continue
        prev, dilation = dilation, dilation * 2
        for i, block in enumerate(layer):
            d = prev if i == 0 else dilation
            convs = [block.conv2] if isinstance(block, Bottleneck) else [block.conv1]
            assert isinstance(block, (BasicBlock, Bottleneck))
            for conv in convs:
                conv.stride, conv.dilation, conv.padding = (1, 1), (d, d), (d, d)
            if block.downsample is not None:
                block.downsample[0].stride = (1, 1)
    bb.output_stride = stride
    return bb


class SegNet(nn.Module):
    """backbone (dilated) -> head on res5 [+ aux FCN head on res4] -> logits at input size."""

    def __init__(self, backbone: nn.Module, head: str, num_classes: int, aux: bool, aspp_rates=(12, 24, 36)) -> None:
        super().__init__()

        ch = backbone.stage_channels
        self.backbone = backbone
        if head == "fcn":
            self.head: nn.Module = FCNHead(ch[3], num_classes)
        elif head == "deeplabv3":
            self.head = DeepLabHead(ch[3], num_classes, tuple(int(r) for r in aspp_rates))
        else:
            raise UserError(f"embedded engine heads: fcn, deeplabv3 (got head={head!r}; upernet needs --engine mmseg)")
        self.aux = FCNHead(ch[2], num_classes) if aux else None

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        size = x.shape[-2:]
        f = self.backbone.forward_stages(x)
        out = {"out": F.interpolate(self.head(f["res5"]), size=size, mode="bilinear", align_corners=False)}
        if self.aux is not None and self.training:
            out["aux"] = F.interpolate(self.aux(f["res4"]), size=size, mode="bilinear", align_corners=False)
        return out


def build_model(backbone: nn.Module, settings: Dict[str, Any], num_classes: int) -> SegNet:
    dilate_backbone(backbone, int(settings.get("output_stride", 8)))
    with torch.random.fork_rng(devices=[]):  # the heads' init depends on the seed only
        torch.manual_seed(int(settings.get("seed", 0)))
        return SegNet(backbone, str(settings.get("head", "fcn")), num_classes, bool(settings.get("aux", True)),
                      settings.get("aspp_rates") or (12, 24, 36))


# ----------------------------------------------------------------------------- data
def _resize(img: np.ndarray, mask: Optional[np.ndarray], h: int, w: int):
    img = np.asarray(Image.fromarray(img).resize((w, h), Image.BILINEAR))
    if mask is not None:
        mask = np.asarray(Image.fromarray(mask.astype(np.uint8)).resize((w, h), Image.NEAREST)).astype(np.int64)
    return img, mask


def scale_factor(h: int, w: int, scale: Optional[Sequence[int]]) -> float:
    """mmcv ``rescale`` with ``keep_ratio``: fit the long side in scale[0] and the short in scale[1]."""
    if not scale:
        return 1.0
    long_s, short_s = max(scale), min(scale)
    return min(long_s / max(h, w), short_s / min(h, w))


def normalise(img: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    x = torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1).float().div_(255.0)
    m = torch.tensor(list(mean), dtype=torch.float32).view(-1, 1, 1)
    s = torch.tensor(list(std), dtype=torch.float32).view(-1, 1, 1)
    return (x - m) / s


def augment(img: np.ndarray, mask: np.ndarray, rng: np.random.Generator, crop: int, scale, ratio_range,
            flip: bool = True, photometric: bool = True) -> Tuple[np.ndarray, np.ndarray]:
    h, w = mask.shape
    r = float(rng.uniform(*ratio_range)) if ratio_range else 1.0
    f = scale_factor(h, w, scale) * r
    nh, nw = max(1, int(round(h * f))), max(1, int(round(w * f)))
    if (nh, nw) != (h, w):
        img, mask = _resize(img, mask, nh, nw)
    ph, pw = max(crop - nh, 0), max(crop - nw, 0)
    if ph or pw:
        img = np.pad(img, ((0, ph), (0, pw), (0, 0)), constant_values=0)
        mask = np.pad(mask, ((0, ph), (0, pw)), constant_values=IGNORE_INDEX)
    y = int(rng.integers(0, img.shape[0] - crop + 1))
    x = int(rng.integers(0, img.shape[1] - crop + 1))
    img, mask = img[y:y + crop, x:x + crop], mask[y:y + crop, x:x + crop]
    if flip and rng.random() < 0.5:
        img, mask = img[:, ::-1], mask[:, ::-1]
    if photometric:
        f32 = img.astype(np.float32)
        if rng.random() < 0.5:
            f32 += rng.uniform(-32, 32)
        if rng.random() < 0.5:
            f32 *= rng.uniform(0.5, 1.5)
        img = np.clip(f32, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(img), np.ascontiguousarray(mask)


class TrainBatches(torch.utils.data.Dataset):
    """Item ``it`` = the whole batch of iteration ``it``, drawn from ``(seed, it)`` alone."""

    def __init__(self, ds, batch: int, crop: int, scale, ratio_range, seed: int, mean, std, photometric: bool) -> None:
        self.ds, self.batch, self.crop, self.scale, self.ratio = ds, batch, crop, scale, ratio_range
        self.seed, self.mean, self.std, self.photometric = seed, mean, std, photometric

    def __len__(self) -> int:
        return 1 << 30

    def __getitem__(self, it: int):
        rng = np.random.default_rng([self.seed, it])
        xs, ys = [], []
        for i in rng.integers(0, len(self.ds), size=self.batch):
            img, mask, _ = self.ds[int(i)]
            img, mask = augment(img, mask, rng, self.crop, self.scale, self.ratio, photometric=self.photometric)
            xs.append(normalise(img, self.mean, self.std))
            ys.append(torch.from_numpy(mask.astype(np.int64)))
        return torch.stack(xs), torch.stack(ys)


# ----------------------------------------------------------------------------- inference
@torch.no_grad()
def predict_logits(model: SegNet, x: torch.Tensor, mode: str, crop: int, stride: int) -> torch.Tensor:
    """(1, 3, H, W) -> (1, C, H, W) logits; ``mode`` "whole" or "slide"."""
    if mode == "whole":
        return model(x)["out"]
    if mode != "slide":
        raise UserError(f"test_mode must be 'whole' or 'slide', got {mode!r}")
    _, _, H, W = x.shape
    hg = max(H - crop + stride - 1, 0) // stride + 1
    wg = max(W - crop + stride - 1, 0) // stride + 1
    logits, count = None, torch.zeros(1, 1, H, W, device=x.device)
    for i in range(hg):
        for j in range(wg):
            y2, x2 = min(i * stride + crop, H), min(j * stride + crop, W)
            y1, x1 = max(y2 - crop, 0), max(x2 - crop, 0)
            out = model(x[:, :, y1:y2, x1:x2])["out"]
            if logits is None:
                logits = torch.zeros(1, out.shape[1], H, W, device=x.device)
            logits[:, :, y1:y2, x1:x2] += out
            count[:, :, y1:y2, x1:x2] += 1
    return logits / count


@torch.no_grad()
def evaluate(model: SegNet, ds, settings: Dict[str, Any], mean, std, device: torch.device,
             keep: int = 0, progress=None) -> Tuple[Dict[str, Any], List[tuple]]:
    """Confusion-matrix metrics over ``ds`` (the first ``eval_limit`` samples if set), and the
    first ``keep`` (image, label, prediction, name) for the report."""
    model.eval()
    cm = ConfusionMatrix(ds.num_classes)
    n = len(ds) if not settings.get("eval_limit") else min(len(ds), int(settings["eval_limit"]))
    mode = str(settings.get("test_mode", "whole"))
    crop = int(settings.get("crop_size", 512))
    stride = int(settings.get("test_stride") or max(1, crop * 2 // 3))
    kept = []
    for i in range(n):
        img, mask, name = ds[i]
        h, w = mask.shape
        f = scale_factor(h, w, settings.get("test_scale"))
        im = img if f == 1.0 else _resize(img, None, max(1, round(h * f)), max(1, round(w * f)))[0]
        x = normalise(im, mean, std).unsqueeze(0).to(device)
        logits = predict_logits(model, x, mode, crop, stride)
        if logits.shape[-2:] != (h, w):
            logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
        pred = logits.argmax(1)[0].cpu()
        cm.update(pred, torch.from_numpy(mask))
        if len(kept) < keep:
            kept.append((img, mask, pred.numpy(), name))
        if progress is not None:
            progress.update(i + 1)
    res = cm.compute(ds.classes)
    res["num_val_images"] = n
    return res, kept


# ----------------------------------------------------------------------------- training
def poly_lr(it: int, max_iter: int, lr0: float, min_lr: float, power: float) -> float:
    return (lr0 - min_lr) * (1 - it / max(1, max_iter)) ** power + min_lr


def norm_stats(meta: Dict[str, Any], settings: Dict[str, Any]):
    """:func:`transfer.engines.norm.resolve_mean_std` of the checkpoint (``norm: ckpt``, the default)
    or ImageNet's (any other ``norm``)."""
    mean, std, _ = resolve_mean_std(meta if settings.get("norm", "ckpt") == "ckpt" else {})
    return tuple(mean), tuple(std)


#: the settings that decide what training produces: a saved state is resumed only under the same ones
TRAIN_KEYS = ("head", "aux", "aspp_rates", "output_stride", "norm", "max_iter", "lr", "min_lr", "power", "momentum",
              "weight_decay", "batch_size", "crop_size", "scale", "ratio_range", "seed", "photometric", "aux_weight")


def train_settings(settings: Dict[str, Any]) -> Dict[str, Any]:
    """The :data:`TRAIN_KEYS` part of ``settings``, JSON-normalised (tuples as lists) for comparison."""
    return json.loads(json.dumps({k: settings.get(k) for k in TRAIN_KEYS}, default=str))


def run(job: Job) -> Dict[str, Any]:
    """Train (or resume, or skip with ``eval_only``) and evaluate; returns metrics and run facts
    (the runner adds task/backbone facts and writes the report)."""
    backbone, meta, identity = job.source.backbone, job.source.meta, job.source.identity
    train_ds, val_ds, settings, eval_only, device, desc = job.train, job.test, job.settings, job.eval_only, job.device, job.task.name
    out_dir = Path(job.out_dir)
    dev = resolve_device(device)
    num_classes = train_ds.num_classes
    model = build_model(backbone, settings, num_classes).to(dev)
    mean, std = norm_stats(meta, settings)
    max_iter = int(settings["max_iter"])
    lr0, min_lr, power = float(settings["lr"]), float(settings["min_lr"]), float(settings["power"])
    opt = torch.optim.SGD(model.parameters(), lr=lr0, momentum=float(settings["momentum"]),
                          weight_decay=float(settings["weight_decay"]))
    state_path = out_dir / STATE_FILE
    start = 0
    if state_path.exists():
        st = load_state(state_path)
        if st.get("identity") != identity or st.get("head") != settings.get("head"):
            raise UserError(f"{state_path} belongs to another run (backbone {str(st.get('identity'))[:12]}, head "
                            f"{st.get('head')}); pass another --out or delete it")
        saved, now = st.get("train_settings") or {"max_iter": st.get("max_iter", max_iter)}, train_settings(settings)
        changed = [k for k in saved if k in now and saved[k] != now[k]]
        if changed:
            k = changed[0]
            raise UserError(f"{state_path} was trained with {k}={saved[k]!r}, now {k}={now[k]!r}; "
                            f"pass another --out (or delete it) to train under the new settings")
        what = "--eval-only" if eval_only else "resume"
        try:
            model.load_state_dict(st["model"])
        except (RuntimeError, TypeError, ValueError, KeyError, AttributeError) as e:
            lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
            detail = (lines[1] if len(lines) > 1 else (lines[0] if lines else type(e).__name__))[:200]
            raise UserError(f"{what}: {state_path} does not fit the model ({detail}); "
                            f"pass another --out or delete it") from None
        try:
            if not eval_only:
                opt.load_state_dict(st["optimizer"])
            start = int(st["step"])
        except (RuntimeError, TypeError, ValueError, KeyError) as e:
            raise UserError(f"{what}: {state_path} has no usable optimizer state / step ({type(e).__name__}: "
                            f"{str(e)[:120]}); pass another --out or delete it") from None
    elif eval_only:
        raise UserError(f"--eval-only: no trained model in {out_dir} ({STATE_FILE} missing); train first without --eval-only")
    t0 = time.time()
    losses: List[float] = []
    stop_after = settings.get("stop_after")
    end = max_iter if not stop_after else min(max_iter, start + int(stop_after))
    if not eval_only and start < end:
        loader = torch.utils.data.DataLoader(
            TrainBatches(train_ds, int(settings["batch_size"]), int(settings["crop_size"]), settings.get("scale"),
                         settings.get("ratio_range"), int(settings.get("seed", 0)), mean, std,
                         bool(settings.get("photometric", True))),
            batch_size=None, sampler=range(start, end), num_workers=int(settings.get("workers", 0)))
        aux_w = float(settings.get("aux_weight", 0.4))
        bar = Progress(max_iter, start, enabled=bool(settings.get("progress", True)), desc=f"{desc} train")
        ckpt_every = int(settings.get("ckpt_every") or 0)
        model.train()
        it = start
        for x, y in loader:
            torch.manual_seed(int(settings.get("seed", 0)) * 1_000_003 + it)
            lr = poly_lr(it, max_iter, lr0, min_lr, power)
            for g in opt.param_groups:
                g["lr"] = lr
            x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
            out = model(x)
            loss = F.cross_entropy(out["out"], y, ignore_index=IGNORE_INDEX)
            if "aux" in out:
                loss = loss + aux_w * F.cross_entropy(out["aux"], y, ignore_index=IGNORE_INDEX)
            if not torch.isfinite(loss):
                if not (y != IGNORE_INDEX).any():
                    loss = out["out"].sum() * 0.0  # an all-ignore batch: nothing to learn
                else:
                    raise RuntimeError(f"non-finite loss at iteration {it}; lower lr (now {lr:g})")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            it += 1
            losses.append(float(loss.detach()))
            bar.update(it, loss=losses[-1], lr=lr)
            if (ckpt_every and it % ckpt_every == 0) or it == end:
                save_state(state_path, {"model": model.state_dict(), "optimizer": opt.state_dict(), "step": it,
                                        "identity": identity, "head": settings.get("head"), "max_iter": max_iter,
                                        "train_settings": train_settings(settings)})
        bar.close()
        start = it
    train_s = time.time() - t0
    res: Dict[str, Any] = {}
    if start < max_iter and not eval_only:
        res["stopped_at"] = start  # stop_after: resume by running the same command again
    t1 = time.time()
    bar = Progress(len(val_ds), 0, enabled=bool(settings.get("progress", True)), desc=f"{desc} eval", unit="img")
    metrics, kept = evaluate(model, val_ds, settings, mean, std, dev, keep=int(settings.get("report_images", 4)),
                             progress=bar)
    bar.close()
    res.update(metrics)
    res.update({"iters": start, "max_iter": max_iter, "train_time_s": round(train_s, 2),
                "eval_time_s": round(time.time() - t1, 2), "device": str(dev),
                "final_loss": round(float(np.mean(losses[-10:])), 5) if losses else None,
                "normalisation": {"mean": list(mean), "std": list(std)}})
    res["_samples"] = kept
    return res


register_engine(Engine("embedded", "seg", check=available, run=run))
