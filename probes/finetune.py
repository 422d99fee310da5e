"""Semi-supervised fine-tuning probe: the whole backbone plus a linear head, trained on a small
class-balanced labelled part of the train split, scored top-1 on the test split.

Protocol followed (stated so the numbers can be compared):

- SimCLR (Chen et al. 2020, appendix B.5, and google-research/simclr ``run.py`` fine-tuning
  flags): the labelled 1 % / 10 % of ImageNet is drawn *class-balanced* (about 12.8 / 128 images
  per class; the repository ships the lists as ``imagenet_subsets/{1,10}percent.txt``), the whole
  network is fine-tuned with Nesterov SGD (momentum 0.9, lr 0.05 x batch / 256, no warm-up, no
  weight decay) and the only augmentation is a random crop with a horizontal flip, resized to the
  input size. 60 epochs at 1 %, 30 at 10 %.
- BYOL (Grill et al. 2020, appendix C.2): the same setting, Nesterov SGD with a cosine-decayed
  learning rate; hyperparameters picked on a validation set held out of the *train* split.

What this module does, and where it departs from those recipes for a 2-core CPU:

- ``--labels P%`` selects ``round(P / 100 x N_train)`` images: the same number from every class
  (the remainder, one extra image each, goes to classes picked by the seed), each class's images
  drawn by a seeded permutation. The permutations do not depend on P, so with one seed the 1 %
  subset is inside the 10 % subset. A fraction too small to give every class one image is refused,
  as are 0 %, values above 100 % and anything that is not a percentage, a count or a file.
- ``--labels K`` (an integer) takes K images per class; ``--labels FILE`` reads the official
  ImageNet lists (one image name per line, e.g. ``n01440764_10026.JPEG``; also paths relative to
  the split folder, or integer row indices for in-memory datasets).
- Fine-tuning: a copy of the backbone (the source stays untouched, so frozen-feature probes on
  the same source are unaffected) with BatchNorm in training mode, a linear head initialised
  N(0, 0.01) (as SimCLR's supervised head), cross-entropy, Nesterov SGD, cosine decay to 0 over
  the steps, no warm-up, no weight decay; RandomResizedCrop (scale ``crop_scale_min``..1, aspect
  3/4..4/3) + flip. Defaults are sized for CPU: batch 64 and 30 epochs (270 steps at 1 %
  Fashion-MNIST) instead of batch 4096 and 60 epochs; crop scale from 0.35 (the Fashion-MNIST
  pretraining recipes' value at 28 px) instead of 0.08; lr 1.2 x batch / 256 (0.3 at batch 64)
  instead of SimCLR's 0.05 x batch / 256, which underfits in so few steps. The lr was chosen on the
  validation split below (1 % Fashion-MNIST, seed 0, 1000 validation images, random-init
  small_resnet18 x0.25): lr 0.0125 -> 44.9 %, 0.1 -> 73.8 %, 0.3 -> 76.3 % validation top-1.
- Nothing is chosen on the test split. ``val_per_class`` images per class, drawn from the train
  images *outside* the labelled subset, give a validation accuracy to tune epochs / lr on.
- Baselines on the same labelled subset: random init of the same architecture fine-tuned the same
  way, and multinomial logistic regression on raw pixels (:func:`probes.linear.linear_probe`, its
  L2 chosen on a validation split carved from the labelled subset).
"""
from __future__ import annotations

import copy
import math
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from transfer.backbones import ResNetBackbone, arch_name
from transfer.data import eval_transform
from transfer.errors import UserError
from transfer.sources import FeatureSource, load_source

from .features import pixel_features
from .knn import per_class_accuracy
from .linear import default_sweep, linear_probe
from .linear_sgd import train_view
from .report import write_reports
from .run import ProbeConfig, _native_size, load_inputs, with_device

PROTOCOL = ("semi-supervised fine-tuning (SimCLR / BYOL): class-balanced labelled subset of train, whole "
            "backbone + linear head, Nesterov SGD, cosine lr, no warm-up, RandomResizedCrop+flip; test top-1")
BASELINES = ("random", "pixels")
LR_PER_256 = 1.2  # chosen on a validation split of train (module docstring); SimCLR uses 0.05


# ------------------------------------------------------------------ which images are labelled
@dataclass(frozen=True)
class LabelSpec:
    """A parsed ``--labels`` value: ``kind`` is ``fraction`` (value in (0, 1]), ``per_class``
    (value: images per class) or ``file`` (value: the path)."""

    kind: str
    value: Any
    text: str

    @property
    def tag(self) -> str:
        """File-name-safe short form for report names: ``1pct``, ``5perclass``, ``file-<stem>``."""
        if self.kind == "fraction":
            return f"{self.value * 100:g}pct".replace(".", "p")
        if self.kind == "per_class":
            return f"{self.value}perclass"
        return "file-" + re.sub(r"[^A-Za-z0-9_-]+", "_", Path(self.value).stem)


def parse_labels(text: str) -> LabelSpec:
    """``'1%'`` / ``'10%'`` (a fraction of the train split), ``'25'`` or ``'25/class'`` (images per
    class) or the path of an existing file listing image ids; anything else is a :class:`UserError`
    naming the value."""
    raw = str(text)
    s = raw.strip()
    if s and Path(s).expanduser().is_file():
        return LabelSpec("file", str(Path(s).expanduser()), raw)
    if s.endswith("%"):
        try:
            pct = float(s[:-1])
        except ValueError:
            raise UserError(f"--labels {raw!r}: not a percentage (use e.g. 1% or 10%)") from None
        if not math.isfinite(pct) or pct <= 0 or pct > 100:
            raise UserError(f"--labels {raw!r}: the labelled fraction must be above 0% and at most 100%")
        return LabelSpec("fraction", pct / 100.0, raw)
    m = re.fullmatch(r"(-?\d+)\s*(?:/\s*class)?", s)
    if m:
        k = int(m.group(1))
        if k < 1:
            raise UserError(f"--labels {raw!r}: images per class must be at least 1")
        return LabelSpec("per_class", k, raw)
    if "/" in s or "\\" in s or re.search(r"\.(txt|csv|lst|list)$", s, re.I):
        raise UserError(f"--labels {raw!r}: file not found")
    raise UserError(f"--labels {raw!r}: expected a percentage (1%, 10%), images per class (an integer) "
                    f"or a file listing image ids")


def _class_name(classes: Optional[Sequence[str]], c: int) -> str:
    return repr(classes[c]) if classes is not None and c < len(classes) else str(c)


def _read_id_file(path: str, dataset) -> torch.Tensor:
    """Row indices of the images a subset file names (ImageNet's official 1 % / 10 % lists)."""
    lines = [ln.strip() for ln in Path(path).read_text().splitlines()]
    ids = [ln for ln in lines if ln and not ln.startswith("#")]
    if not ids:
        raise UserError(f"--labels {path}: the file lists no image ids")
    files = getattr(dataset, "files", None)
    by_rel: Dict[str, int] = {}
    by_name: Dict[str, Optional[int]] = {}
    if files is not None:
        root = Path(getattr(dataset, "root", "."))
        for i, f in enumerate(files):
            f = Path(f)
            try:
                by_rel[f.relative_to(root).as_posix()] = i
            except ValueError:
                pass
            by_rel[f.as_posix()] = i
            by_name[f.name] = None if f.name in by_name else i  # None: the name is ambiguous
    out: List[int] = []
    missing: List[str] = []
    for s in ids:
        key = s.replace("\\", "/")
        if key in by_rel:
            out.append(by_rel[key])
        elif key in by_name:
            if by_name[key] is None:
                raise UserError(f"--labels {path}: {s!r} names more than one image; give its path "
                                f"relative to the split folder (class/{s})")
            out.append(int(by_name[key]))  # type: ignore[arg-type]
        elif files is None and re.fullmatch(r"\d+", key) and int(key) < len(dataset):
            out.append(int(key))
        else:
            missing.append(s)
    if missing:
        raise UserError(f"--labels {path}: {len(missing)} of {len(ids)} ids match no image of the train split "
                        f"(first: {missing[0]!r})")
    return torch.tensor(sorted(set(out)), dtype=torch.long)


def select_labelled(labels: torch.Tensor, spec: LabelSpec, seed: int = 0, num_classes: Optional[int] = None,
                    classes: Optional[Sequence[str]] = None, dataset=None) -> Tuple[torch.Tensor, Dict[str, Any]]:
    """The labelled subset: sorted row indices into the train split, and a description.

    ``dataset`` is needed only for ``file`` specs. Every class must get at least one image, else
    :class:`UserError` (naming the value and the class left empty).
    """
    labels = torch.as_tensor(labels).long().cpu()
    n = int(labels.numel())
    C = int(num_classes if num_classes is not None else (int(labels.max()) + 1 if n else 0))
    counts = torch.bincount(labels, minlength=C)[:C]
    warnings: List[str] = []
    if spec.kind == "file":
        idx = _read_id_file(spec.value, dataset)
    else:
        g = torch.Generator().manual_seed(int(seed))
        order = torch.randperm(C, generator=g)  # which classes take the remainder
        perms = [(labels == c).nonzero().squeeze(1) for c in range(C)]
        perms = [p[torch.randperm(p.numel(), generator=g)] for p in perms]
        if spec.kind == "fraction":
            total = int(round(spec.value * n))
            if total < C:
                short = _class_name(classes, int(order[total]))  # the first class left without an image
                need = 100.0 * C / n
                raise UserError(f"--labels {spec.text!r}: {total} labelled images for {C} classes leaves class "
                                f"{short} (and {C - total - 1} more) empty; use at least {need:.3g}% or a count "
                                f"per class")
            want = torch.full((C,), total // C, dtype=torch.long)
            want[order[: total - C * (total // C)]] += 1
        else:
            want = torch.full((C,), int(spec.value), dtype=torch.long)
        take = torch.minimum(want, counts)
        short_cls = [c for c in range(C) if take[c] < want[c]]
        if short_cls:
            warnings.append(f"{len(short_cls)} class(es) have fewer train images than requested "
                            f"(e.g. {_class_name(classes, short_cls[0])}: {int(counts[short_cls[0]])} < "
                            f"{int(want[short_cls[0]])}); took all of them")
        idx = torch.cat([perms[c][: int(take[c])] for c in range(C)]).sort().values
    per_class = torch.bincount(labels[idx], minlength=C)[:C]
    empty = [c for c in range(C) if per_class[c] == 0]
    if empty:
        raise UserError(f"--labels {spec.text!r} leaves class {_class_name(classes, empty[0])} without a "
                        f"labelled image ({len(empty)} class(es) empty)")
    info = {"spec": spec.text, "kind": spec.kind, "value": spec.value, "seed": int(seed), "n_labelled": int(idx.numel()),
            "n_train": n, "fraction": idx.numel() / max(n, 1), "per_class": per_class.tolist(),
            "selection": "class-balanced: the same count per class, seeded permutation per class"
            if spec.kind != "file" else "listed in a file", "warnings": warnings}
    return idx, info


def carve_validation(labels: torch.Tensor, exclude: torch.Tensor, per_class: int, seed: int,
                     num_classes: int) -> torch.Tensor:
    """``per_class`` images of each class from the train rows not in ``exclude`` (the labelled
    subset), seeded; a validation set for choosing epochs / lr without touching the test split."""
    if per_class <= 0:
        return torch.zeros(0, dtype=torch.long)
    labels = torch.as_tensor(labels).long().cpu()
    free = torch.ones(labels.numel(), dtype=torch.bool)
    free[exclude] = False
    g = torch.Generator().manual_seed(int(seed) + 7919)  # a stream apart from the selection's
    out = []
    for c in range(num_classes):
        p = (free & (labels == c)).nonzero().squeeze(1)
        out.append(p[torch.randperm(p.numel(), generator=g)][:per_class])
    return torch.cat(out).sort().values


# ------------------------------------------------------------------ fine-tuning
@dataclass
class FinetuneConfig:
    labels: str = "1%"
    epochs: int = 30
    batch_size: int = 64
    lr: Optional[float] = None  # None: LR_PER_256 x batch / 256
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 0.0
    crop_scale_min: float = 0.35
    val_per_class: int = 0
    baselines: Sequence[str] = BASELINES
    max_steps: Optional[int] = None  # cap for tests

    def base_lr(self) -> float:
        return self.lr if self.lr is not None else LR_PER_256 * self.batch_size / 256

    def check(self) -> None:
        if self.epochs < 1:
            raise UserError(f"--ft-epochs must be at least 1, got {self.epochs}")
        if self.batch_size < 2:
            raise UserError(f"--ft-batch-size must be at least 2 (BatchNorm trains on the batch), got {self.batch_size}")
        if self.lr is not None and not (self.lr > 0 and math.isfinite(self.lr)):
            raise UserError(f"--ft-lr must be a positive number, got {self.lr}")
        if not 0 < self.crop_scale_min <= 1:
            raise UserError(f"--crop-scale-min must be in (0, 1], got {self.crop_scale_min}")
        bad = [b for b in self.baselines if b not in BASELINES]
        if bad:
            raise UserError(f"--baselines: unknown {bad[0]!r}; choose from {', '.join(BASELINES)} or none")


def _gather(ds, idx: torch.Tensor) -> torch.Tensor:
    images = getattr(ds, "images", None)
    return images[idx] if images is not None else torch.stack([ds[int(j)][0] for j in idx])


@torch.no_grad()
def evaluate(backbone: nn.Module, head: nn.Module, ds, idx: Optional[torch.Tensor], size: int, mean, std,
             batch_size: int = 256, device: str = "cpu") -> Dict[str, Any]:
    """Top-1 / top-5 (%) and per-class accuracy of backbone + head on rows ``idx`` of ``ds``
    (all rows when ``None``), eval transform, BatchNorm in eval mode."""
    dev = torch.device(device)
    backbone.eval()
    head.eval()
    idx = torch.arange(len(ds)) if idx is None else idx
    nc = head.out_features
    preds, tops = [], []
    for lo in range(0, idx.numel(), batch_size):
        b = idx[lo:lo + batch_size]
        s = head(backbone(eval_transform(_gather(ds, b).to(dev), size, mean, std))).float().cpu()
        t = s.topk(min(5, nc), dim=1).indices
        preds.append(t[:, 0])
        tops.append(t)
    y = ds.labels[idx].cpu()
    pred, top = torch.cat(preds), torch.cat(tops)
    return {"top1": float((pred == y).double().mean() * 100), "top5": float((top == y[:, None]).any(1).double().mean() * 100),
            "per_class": per_class_accuracy(pred, y, nc), "n": int(idx.numel())}


def new_head(feature_dim: int, num_classes: int, seed: int = 0) -> nn.Linear:
    """The linear head, weights N(0, 0.01) and bias 0 (SimCLR's supervised head), from ``seed``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = nn.Linear(feature_dim, num_classes)
        nn.init.normal_(head.weight, 0.0, 0.01)
        nn.init.zeros_(head.bias)
    return head


def finetune_backbone(backbone: nn.Module, train_ds, labelled: torch.Tensor, size: int, mean, std,
                      cfg: FinetuneConfig, num_classes: int, seed: int = 0,
                      device: str = "cpu") -> Tuple[nn.Module, nn.Linear, Dict[str, Any]]:
    """Fine-tune a *copy* of ``backbone`` with a new linear head on rows ``labelled`` of ``train_ds``.

    Returns ``(fine-tuned backbone, head, training record)``; ``backbone`` itself is not modified.
    """
    cfg.check()
    dev = torch.device(device)
    n = int(labelled.numel())
    bs = min(cfg.batch_size, n)
    if bs < 2:
        raise UserError(f"fine-tuning needs at least 2 labelled images, got {n}")
    model = copy.deepcopy(backbone).to(dev)
    for p in model.parameters():
        p.requires_grad_(True)
    head = new_head(model.feature_dim, num_classes, seed).to(dev)
    params = list(model.parameters()) + list(head.parameters())
    base_lr = cfg.base_lr()
    opt = torch.optim.SGD(params, lr=base_lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                          weight_decay=cfg.weight_decay)
    steps_per_epoch = max(1, n // bs)  # the remainder is dropped; each epoch draws a new permutation
    total = cfg.epochs * steps_per_epoch
    if cfg.max_steps is not None:
        total = min(total, int(cfg.max_steps))
    g = torch.Generator().manual_seed(seed)
    labels = train_ds.labels
    model.train()
    head.train()
    losses: List[float] = []
    step, t0 = 0, time.time()
    with torch.enable_grad():
        while step < total:
            perm = labelled[torch.randperm(n, generator=g)]
            for i in range(steps_per_epoch):
                if step >= total:
                    break
                b = perm[i * bs:(i + 1) * bs]
                x = train_view(_gather(train_ds, b).to(dev), size, mean, std, g, scale=(cfg.crop_scale_min, 1.0))
                y = labels[b].to(dev)
                lr = base_lr * 0.5 * (1.0 + math.cos(math.pi * step / total))
                for pg in opt.param_groups:
                    pg["lr"] = lr
                loss = F.cross_entropy(head(model(x)), y)
                if not torch.isfinite(loss):
                    raise UserError(f"fine-tuning diverged at step {step} (loss {loss.item()}); lower --ft-lr "
                                    f"(now {base_lr:g})")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                losses.append(float(loss.detach()))
                step += 1
    last = losses[-steps_per_epoch:] if losses else []
    rec = {"steps": step, "steps_per_epoch": steps_per_epoch, "epochs": cfg.epochs, "batch_size": bs,
           "lr": base_lr, "momentum": cfg.momentum, "nesterov": cfg.nesterov, "weight_decay": cfg.weight_decay,
           "crop_scale": [cfg.crop_scale_min, 1.0], "schedule": "cosine to 0, no warm-up",
           "train_loss_first": losses[0] if losses else None,
           "train_loss_last_epoch": sum(last) / len(last) if last else None,
           "train_s": round(time.time() - t0, 2)}
    return model, head, rec


def _finetune_source(source: FeatureSource, train_ds, test_ds, labelled, val_idx, size, mean, std,
                     cfg: FinetuneConfig, num_classes: int, seed: int, device: str,
                     eval_batch: int) -> Dict[str, Any]:
    t0 = time.time()
    model, head, rec = finetune_backbone(source.backbone, train_ds, labelled, size, mean, std, cfg,
                                         num_classes, seed, device)
    res = evaluate(model, head, test_ds, None, size, mean, std, eval_batch, device)
    res.update(rec)
    res["val_top1"] = (evaluate(model, head, train_ds, val_idx, size, mean, std, eval_batch, device)["top1"]
                       if val_idx.numel() else None)
    res["source"] = source.describe()
    res["method"] = "fine-tuned backbone + linear head"
    res["seconds"] = round(time.time() - t0, 2)
    return res


def _pixels_logreg(train_ds, test_ds, labelled, val_idx, size: int, mean, std, seed: int, num_classes: int,
                   l2_steps: int, device: str, eval_batch: int) -> Dict[str, Any]:
    """Raw-pixel logistic regression on the same labelled images (no augmentation). Its L2 is chosen
    by :func:`linear_probe` on a split of the labelled images (``l2_val_top1``); ``val_top1`` is the
    accuracy on the same carved validation images the fine-tuned runs report."""
    t0 = time.time()

    def pix(ds, idx):
        return torch.cat([pixel_features(_gather(ds, idx[lo:lo + eval_batch]), size, mean, std)
                          for lo in range(0, idx.numel(), eval_batch)])

    xtr, ytr = pix(train_ds, labelled), train_ds.labels[labelled]
    sweep = default_sweep(l2_steps)
    r = linear_probe(xtr, ytr, pix(test_ds, torch.arange(len(test_ds))), test_ds.labels, l2_values=sweep,
                     seed=seed, num_classes=num_classes, device=device)
    keep = ("top1", "top5", "per_class", "best_l2", "n_train", "n_val", "n_test", "warnings", "protocol")
    out = {k: r[k] for k in keep if k in r}
    out["l2_val_top1"] = r.get("val_top1")
    out["val_top1"] = None
    if val_idx.numel():  # the same fit (same seed, same sweep), scored on the carved validation images
        out["val_top1"] = linear_probe(xtr, ytr, pix(train_ds, val_idx), train_ds.labels[val_idx], l2_values=sweep,
                                       seed=seed, num_classes=num_classes, device=device)["top1"]
    out["method"] = "logistic regression on raw pixels (L2 chosen on a split of the labelled subset)"
    out["source"] = {"kind": "pixels", "spec": "pixels", "weights_sha256": "pixels"}
    out["seconds"] = round(time.time() - t0, 2)
    return out


def finetune_probe(ckpt: str, data: str, cfg, ft: FinetuneConfig) -> Dict[str, Any]:
    """Run the fine-tuning probe (and its baselines); returns ``report["probes"]["finetune"]``
    plus the pieces of the report header. ``cfg`` is a :class:`probes.run.ProbeConfig`."""
    ft.check()
    spec = parse_labels(ft.labels)
    cfg = with_device(cfg)
    source, train_ds, test_ds = load_inputs(ckpt, data, cfg)
    C = len(train_ds.classes)
    labelled, sel = select_labelled(train_ds.labels, spec, cfg.seed, C, train_ds.classes, dataset=train_ds)
    val_idx = carve_validation(train_ds.labels, labelled, ft.val_per_class, cfg.seed, C)
    warnings = list(sel.pop("warnings"))
    size = cfg.size or source.input_size or _native_size(train_ds)
    if source.input_size and size != source.input_size:
        warnings.append(f"fine-tuning at {size} px but the backbone was trained at {source.input_size} px")
    mean, std = train_ds.mean, train_ds.std
    if source.kind == "backbone" and source.meta.get("mean") and source.meta.get("std"):
        mean, std = source.meta["mean"], source.meta["std"]
    runs: Dict[str, Dict[str, Any]] = {}
    args = (train_ds, test_ds, labelled, val_idx, size, mean, std, ft, C, cfg.seed, cfg.device, cfg.batch_size)
    if source.backbone is not None:
        runs["pretrained" if source.kind == "backbone" else "random"] = _finetune_source(source, *args)
        if "random" in ft.baselines and source.kind == "backbone":
            sp = source.backbone.spec
            rnd = load_source(f"random:{arch_name(sp)}:{sp.width:g}:{cfg.seed}")
            if rnd.backbone.spec != sp:  # e.g. zero_init_residual differs: rebuild with the exact spec

                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(cfg.seed)
                    rnd.backbone = ResNetBackbone(sp)
            runs["random"] = _finetune_source(rnd, *args)
    if "pixels" in ft.baselines or source.kind == "pixels":
        psize = cfg.size or _native_size(train_ds)
        runs["pixels"] = _pixels_logreg(train_ds, test_ds, labelled, val_idx, psize, train_ds.mean, train_ds.std, cfg.seed,
                                        C, cfg.l2_steps, cfg.device, cfg.batch_size)
        warnings += [f"pixels: {w}" for w in runs["pixels"].get("warnings", [])]
    result = {"protocol": PROTOCOL, "labels": sel, "n_val": int(val_idx.numel()),
              "val_from": "train images outside the labelled subset" if val_idx.numel() else None,
              "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(ft).items()},
              "runs": runs, "warnings": warnings}
    result["config"]["lr_used"] = ft.base_lr()
    return {"result": result, "source": source, "train_ds": train_ds, "test_ds": test_ds,
            "transform": {"resize": int(size), "mean": [float(m) for m in mean], "std": [float(s) for s in std],
                          "train": f"RandomResizedCrop(scale {ft.crop_scale_min}-1)+flip",
                          "test": "eval_transform (resize, normalise)"}}


def summarize_finetune(r: Dict[str, Any]) -> Dict[str, Any]:
    """Headline numbers: test top-1 of each run (``finetune_<run>_top1``) and the subset size."""
    s: Dict[str, Any] = {"finetune_labels": r["labels"]["spec"], "finetune_n_labelled": r["labels"]["n_labelled"]}
    for name, run in r["runs"].items():
        s[f"finetune_{name}_top1"] = run["top1"]
    return s


def run_finetune(ckpt: str, data: str, out_dir: Optional[Path] = None, cfg=None,
                 ft: Optional[FinetuneConfig] = None) -> Dict[str, Any]:
    """``transfer probe finetune``: fine-tune, run the baselines, write ``finetune_<labels>.{json,md,html}``."""
    cfg = cfg or ProbeConfig()
    ft = ft or FinetuneConfig()
    t0 = time.time()
    got = finetune_probe(ckpt, data, cfg, ft)
    r, source, train_ds, test_ds = got["result"], got["source"], got["train_ds"], got["test_ds"]
    report: Dict[str, Any] = {
        "title": f"Fine-tuning probe ({r['labels']['spec']} labels): {ckpt} on {data}",
        "source": source.describe(),
        "dataset": {"name": getattr(train_ds, "name", data), "spec": data, "root": cfg.data_root,
                    "train_split": cfg.train_split, "test_split": cfg.test_split,
                    "n_train": len(train_ds), "n_test": len(test_ds),
                    "num_classes": len(train_ds.classes), "classes": list(train_ds.classes)},
        "transform": got["transform"],
        "feature_dim": source.backbone.feature_dim if source.backbone is not None else None,
        "config": {"seed": cfg.seed, "device": cfg.device, "size": cfg.size, "eval_batch_size": cfg.batch_size,
                   "l2_steps": cfg.l2_steps, "finetune": r["config"]},
        "probes": {"finetune": r}, "timings_s": {"finetune": round(time.time() - t0, 3)},
        "warnings": [f"finetune: {w}" for w in r["warnings"]]}
    report["summary"] = summarize_finetune(r)
    if out_dir is not None:
        paths = write_reports(Path(out_dir), f"finetune_{parse_labels(ft.labels).tag}", report)
        report["paths"] = {k: str(v) for k, v in paths.items()}
    return report
