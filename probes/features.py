"""Feature extraction, batched in inference mode (AMP on GPU), and an on-disk feature cache.

The cache key is the sha256 of (source identity = weights sha256 or ``pixels``, dataset name and
root, split, image count, a hash of the labels, transform dict). Entries are safetensors files
written atomically (:func:`transfer.checkpoint.atomic_write`), so a crash never leaves a partial
entry, and every probe and rerun on the same inputs reads the same features.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file
from torch.utils.data import DataLoader

from transfer.checkpoint import atomic_write
from transfer.data import eval_transform
from transfer.errors import UserError
from transfer.sources import FeatureSource

TRANSFORM_VERSION = "eval_transform/3"  # /2: ImageNet-sized images resize 256 + centre crop 224; /3: folder images decoded as torchvision Resize + CenterCrop (off by up to a pixel before)


def default_cache_dir() -> Path:
    """``$TRANSFER_CACHE/features``, else ``~/.cache/transfer/features``."""
    root = os.environ.get("TRANSFER_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "transfer")
    return Path(root) / "features"


def make_transform(size: int, mean: Sequence[float], std: Sequence[float], pixels: bool = False) -> Dict[str, Any]:
    """The eval transform as a JSON-able dict: recorded in reports and part of the cache key."""
    return {"name": TRANSFORM_VERSION, "resize": int(size), "interpolation": "bilinear-antialias",
            "mean": [float(m) for m in mean], "std": [float(s) for s in std],
            "output": "flattened normalised pixels" if pixels else "backbone pooled features"}


def _batches(dataset, batch_size: int, num_workers: int):
    """Yield uint8 (B, C, H, W) batches: direct slices of in-memory sets, a DataLoader otherwise."""
    images = getattr(dataset, "images", None)
    if images is not None:
        for lo in range(0, images.shape[0], batch_size):
            yield images[lo:lo + batch_size]
        return

    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        collate_fn=lambda items: torch.stack([x for x, _ in items]))
    yield from loader


def pixel_features(x_uint8: torch.Tensor, size: int, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Raw-pixel baseline: resize to ``size`` (antialiased bilinear), normalise, flatten.

    Unlike :func:`eval_transform`, grayscale stays 1 channel (3 identical copies add nothing).
    """
    x = x_uint8.float().div_(255.0)
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    c = x.shape[1]
    m = torch.tensor(list(mean)[:c] if len(mean) >= c else list(mean) * c).view(1, -1, 1, 1)
    s = torch.tensor(list(std)[:c] if len(std) >= c else list(std) * c).view(1, -1, 1, 1)
    return ((x - m) / s).flatten(1)


def extract_features(backbone: Optional[torch.nn.Module], dataset, size: int,
                     mean: Sequence[float], std: Sequence[float], batch_size: int = 256,
                     device: str = "cpu", amp: Optional[bool] = None,
                     num_workers: int = 0) -> Tuple[torch.Tensor, torch.Tensor]:
    """Embed every image of ``dataset``: ``(features float32 (N, D) on CPU, labels int64 (N,))``.

    ``backbone=None`` gives flattened pixels (:func:`pixel_features`). The backbone runs in eval
    mode under ``torch.inference_mode``; ``amp`` (default: on for CUDA) autocasts to bfloat16
    where supported, else float16. Features are returned in float32, as ordinary tensors (usable
    by autograd-based probes).
    """
    with torch.inference_mode():
        feats, labels = _extract(backbone, dataset, size, mean, std, batch_size, device, amp, num_workers)
    return feats.clone(), labels.clone()


def _extract(backbone: Optional[torch.nn.Module], dataset, size: int, mean: Sequence[float],
             std: Sequence[float], batch_size: int, device: str, amp: Optional[bool],
             num_workers: int) -> Tuple[torch.Tensor, torch.Tensor]:
    n = len(dataset)
    if n == 0:
        raise UserError(f"dataset {getattr(dataset, 'name', '?')}: empty split (0 images)")
    dev = torch.device(device)
    amp = (dev.type == "cuda") if amp is None else amp
    amp_dtype = torch.bfloat16 if (dev.type == "cuda" and torch.cuda.is_bf16_supported()) else torch.float16
    if backbone is not None:
        was_training = backbone.training
        backbone.eval().to(dev)
    chunks = []
    for xb in _batches(dataset, batch_size, num_workers):
        if backbone is None:
            chunks.append(pixel_features(xb, size, mean, std))
            continue
        x = eval_transform(xb.to(dev, non_blocking=True), size, mean, std)
        with torch.autocast(device_type=dev.type, dtype=amp_dtype, enabled=bool(amp) and dev.type == "cuda"):
            f = backbone(x)
        chunks.append(f.float().cpu())
    if backbone is not None and was_training:
        backbone.train()
    feats = torch.cat(chunks)
    return feats, dataset.labels.clone().long()


def dataset_identity(dataset, split: str, root: Optional[str] = None) -> Dict[str, Any]:
    """What identifies a split in the cache key (a label hash guards against a changed folder)."""
    lab = dataset.labels.cpu().numpy().tobytes()
    return {"name": getattr(dataset, "name", "?"), "root": str(getattr(dataset, "root", root) or ""),
            "split": split, "n": len(dataset), "labels_sha256": hashlib.sha256(lab).hexdigest()[:16]}


def cache_key(identity: str, ds_id: Dict[str, Any], transform: Dict[str, Any]) -> Tuple[str, str]:
    """(hex key, canonical JSON it hashes)."""
    blob = json.dumps({"weights": identity, "dataset": ds_id, "transform": transform}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24], blob


def cached_features(source: FeatureSource, dataset, split: str, transform: Dict[str, Any],
                    cache_dir: Optional[Path] = None, use_cache: bool = True, batch_size: int = 256,
                    device: str = "cpu", root: Optional[str] = None,
                    num_workers: int = 0) -> Tuple[torch.Tensor, torch.Tensor, Dict[str, Any]]:
    """Features of one split, read from the cache or extracted and stored.

    Returns ``(features, labels, info)`` with ``info = {"cache": "hit"|"miss"|"off", "path", "key"}``.
    A corrupt entry is ignored (re-extracted and overwritten).
    """
    ds_id = dataset_identity(dataset, split, root)
    key, blob = cache_key(source.identity, ds_id, transform)
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = cache_dir / f"{key}.safetensors"
    info: Dict[str, Any] = {"cache": "off", "path": str(path), "key": key}
    if use_cache and path.is_file():
        try:
            with safe_open(str(path), framework="pt") as f:
                if (f.metadata() or {}).get("key") == blob:
                    feats = f.get_tensor("features")
                    if bool(torch.isfinite(feats).all()):  # a NaN entry (older versions cached them): redo
                        info["cache"] = "hit"
                        return feats, f.get_tensor("labels"), info
        except Exception:
            pass  # unreadable entry: re-extract below
    feats, labels = extract_features(source.backbone, dataset, transform["resize"], transform["mean"],
                                     transform["std"], batch_size=batch_size, device=device,
                                     num_workers=num_workers)
    if use_cache:
        info["cache"] = "miss"
    if use_cache and bool(torch.isfinite(feats).all()):  # NaN features fail their probe: never cache them
        atomic_write(path, lambda tmp: save_file({"features": feats.contiguous(), "labels": labels.contiguous()},
                                                 tmp, metadata={"key": blob}))
    return feats, labels, info
