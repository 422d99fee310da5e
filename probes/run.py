"""Run probes end to end: resolve the checkpoint, load the data, get (cached) features, run the
probes and write the reports. :func:`run_probe` runs one, :func:`run_all` the three."""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from transfer.data import build_dataset
from transfer.devices import resolve_device
from transfer.errors import UserError
from transfer.sources import FeatureSource, load_source

from .features import cached_features, make_transform
from .fewshot import fewshot_eval, lowshot_curve
from .knn import weighted_knn
from .linear import SANITY_POINTS, default_sweep, linear_probe
from .linear_sgd import linear_eval_frozen
from .plots import pca_2d
from .report import write_reports

PROBES = ("knn", "linear", "fewshot")


@dataclass
class ProbeConfig:
    """Every knob of every probe, with the published defaults (seeds.md section 4)."""

    size: Optional[int] = None  # None: the checkpoint's input_size, else the images' native size
    device: str = "cpu"
    batch_size: int = 256
    cache_dir: Optional[str] = None
    use_cache: bool = True
    data_root: Optional[str] = None
    train_split: str = "train"
    test_split: str = "test"
    seed: int = 0
    # k-NN
    ks: Sequence[int] = (10, 20, 100, 200)
    temperature: float = 0.07
    # linear
    linear_protocol: str = "fast"  # fast | moco | simsiam
    l2_steps: int = 45
    l2_min: float = 1e-6
    l2_max: float = 1e5
    val_frac: float = 0.2
    linear_epochs: int = 100
    # few-shot
    n_way: int = 5
    shots: Sequence[int] = (1, 5)
    n_query: int = 15
    episodes: int = 600
    fewshot_split: str = "test"
    lowshot_shots: Optional[Sequence[int]] = None
    lowshot_seeds: int = 3
    embedding_points: int = 2000


@dataclass
class Context:
    source: FeatureSource
    train_ds: Any
    test_ds: Any
    transform: Dict[str, Any]
    feats: Dict[str, Tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    cache: Dict[str, str] = field(default_factory=dict)
    warnings: List[str] = field(default_factory=list)


def _native_size(ds) -> int:
    images = getattr(ds, "images", None)
    if images is not None:
        return int(images.shape[-1])
    return int(getattr(ds, "load_size", 224))


def with_device(cfg: ProbeConfig) -> ProbeConfig:
    """``cfg`` with ``device`` resolved (``auto`` -> ``cuda``/``cpu``; a clear error for an unknown
    device or CUDA missing): every probe below receives a concrete torch device name."""
    return replace(cfg, device=str(resolve_device(cfg.device)))


def load_inputs(ckpt: str, data: str, cfg: ProbeConfig) -> Tuple[FeatureSource, Any, Any]:
    """The checkpoint source and both splits, with the device and empty-split checks every probe needs
    (the frozen-feature probes and the fine-tuning probe alike)."""
    resolve_device(cfg.device)  # a clear error for an unknown device or CUDA missing, before any work
    source = load_source(ckpt)
    train_ds = build_dataset(data, cfg.train_split, root=cfg.data_root)
    test_ds = build_dataset(data, cfg.test_split, root=cfg.data_root)
    for split, ds in ((cfg.train_split, train_ds), (cfg.test_split, test_ds)):
        if len(ds) == 0:
            raise UserError(f"dataset {data!r}: split {split!r} is empty")
    return source, train_ds, test_ds


def prepare(ckpt: str, data: str, cfg: ProbeConfig) -> Context:
    """Load source and both splits, decide the transform, extract or read the features."""
    source, train_ds, test_ds = load_inputs(ckpt, data, cfg)
    warnings: List[str] = []
    size = cfg.size or source.input_size or _native_size(train_ds)
    if source.input_size and size != source.input_size:
        warnings.append(f"features at {size} px but the backbone was trained at {source.input_size} px")
    mean, std, norm_from = train_ds.mean, train_ds.std, "dataset"
    if source.kind == "backbone" and source.meta.get("mean") and source.meta.get("std"):
        mean, std, norm_from = source.meta["mean"], source.meta["std"], "checkpoint"
    transform = make_transform(size, mean, std, pixels=source.kind == "pixels")
    transform["normalisation_from"] = norm_from
    ctx = Context(source, train_ds, test_ds, transform, warnings=warnings)
    key_transform = {k: v for k, v in transform.items() if k != "normalisation_from"}
    for split, ds in (("train", train_ds), ("test", test_ds)):
        f, y, info = cached_features(source, ds, getattr(cfg, f"{split}_split"), key_transform,
                                     cache_dir=Path(cfg.cache_dir) if cfg.cache_dir else None,
                                     use_cache=cfg.use_cache, batch_size=cfg.batch_size,
                                     device=cfg.device, root=cfg.data_root)
        ctx.feats[split], ctx.cache[split] = (f, y), info["cache"]
    return ctx


def _knn(ctx: Context, cfg: ProbeConfig) -> Dict[str, Any]:
    (xtr, ytr), (xte, yte) = ctx.feats["train"], ctx.feats["test"]
    return weighted_knn(xtr, ytr, xte, yte, ks=cfg.ks, T=cfg.temperature,
                        num_classes=len(ctx.train_ds.classes), device=cfg.device)


def _linear(ctx: Context, cfg: ProbeConfig) -> Dict[str, Any]:
    if cfg.linear_protocol == "fast":
        (xtr, ytr), (xte, yte) = ctx.feats["train"], ctx.feats["test"]
        return linear_probe(xtr, ytr, xte, yte, l2_values=default_sweep(cfg.l2_steps, cfg.l2_min, cfg.l2_max),
                            val_frac=cfg.val_frac, seed=cfg.seed, num_classes=len(ctx.train_ds.classes),
                            device=cfg.device)
    if ctx.source.backbone is None:
        raise UserError(f"linear protocol {cfg.linear_protocol!r} trains on a backbone; "
                        f"--ckpt pixels supports only the fast protocol")

    t = ctx.transform
    return linear_eval_frozen(ctx.source.backbone, ctx.train_ds, ctx.test_ds, t["resize"], t["mean"], t["std"],
                              recipe=cfg.linear_protocol, epochs=cfg.linear_epochs,
                              batch_size=cfg.batch_size, device=cfg.device, seed=cfg.seed)


def _fewshot(ctx: Context, cfg: ProbeConfig) -> Dict[str, Any]:
    (xtr, ytr), (xte, yte) = ctx.feats["train"], ctx.feats["test"]
    pool = ctx.feats["train" if cfg.fewshot_split == "train" else "test"]
    out: Dict[str, Any] = {"episodes": fewshot_eval(pool[0], pool[1], n_way=cfg.n_way, shots=cfg.shots,
                                                    n_query=cfg.n_query, episodes=cfg.episodes, seed=cfg.seed)}
    out["episodes"]["pool_split"] = cfg.fewshot_split
    out["lowshot"] = lowshot_curve(xtr, ytr, xte, yte, shots=cfg.lowshot_shots,
                                   seeds=[cfg.seed + i for i in range(cfg.lowshot_seeds)])
    out["warnings"] = out["episodes"]["warnings"] + out["lowshot"]["warnings"]
    return out


RUNNERS = {"knn": _knn, "linear": _linear, "fewshot": _fewshot}


def run_probes(names: Sequence[str], ckpt: str, data: str, out_dir: Optional[Path] = None,
               cfg: Optional[ProbeConfig] = None, stem: Optional[str] = None) -> Dict[str, Any]:
    """Run the named probes on one (checkpoint, dataset); write reports to ``out_dir`` when given.

    Returns the report dict (with ``paths`` to the written files when ``out_dir`` is set).
    """
    bad = [n for n in names if n not in RUNNERS]
    if bad:
        raise UserError(f"unknown probe(s) {bad}; choose from {list(RUNNERS)}")
    cfg = with_device(cfg or ProbeConfig())
    torch.manual_seed(cfg.seed)
    t0 = time.time()
    ctx = prepare(ckpt, data, cfg)
    (xtr, _), (xte, yte) = ctx.feats["train"], ctx.feats["test"]
    report: Dict[str, Any] = {
        "title": f"Probes: {ckpt} on {data}", "source": ctx.source.describe(),
        "dataset": {"name": getattr(ctx.train_ds, "name", data), "spec": data, "root": cfg.data_root,
                    "train_split": cfg.train_split, "test_split": cfg.test_split,
                    "n_train": len(ctx.train_ds), "n_test": len(ctx.test_ds),
                    "num_classes": len(ctx.train_ds.classes), "classes": list(ctx.train_ds.classes)},
        "transform": ctx.transform, "feature_dim": int(xtr.shape[1]), "cache": ctx.cache,
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()},
        "probes": {}, "timings_s": {}, "warnings": list(ctx.warnings)}
    report["timings_s"]["features"] = round(time.time() - t0, 3)
    for n in names:
        t = time.time()
        res = RUNNERS[n](ctx, cfg)
        report["probes"][n] = res
        report["timings_s"][n] = round(time.time() - t, 3)
        report["warnings"] += [f"{n}: {w}" for w in res.get("warnings", [])]
    report["warnings"] += sanity_warnings(report["probes"])
    xy, idx = pca_2d(xte, cfg.embedding_points, cfg.seed)
    report["embedding"] = {"xy": xy, "labels": yte[torch.as_tensor(idx)].numpy()}
    report["summary"] = summarize(report)
    if out_dir is not None:
        report["paths"] = {k: str(v) for k, v in write_reports(Path(out_dir), stem or "_".join(names), report).items()}
    return report


def sanity_warnings(probes: Dict[str, Any]) -> List[str]:
    """Cross-probe sanity line: a linear probe well below the k-NN probe on the same features
    points at a bad L2 choice or fit (the linear classifier should match or beat k-NN there)."""
    lin, knn = probes.get("linear"), probes.get("knn")
    if not lin or not knn or "top1" not in lin:
        return []
    k_best, k = knn["best_top1"], knn["best_k"]
    if lin["top1"] < k_best - SANITY_POINTS:
        return [f"sanity: linear top-1 {lin['top1']:.2f} % is {k_best - lin['top1']:.2f} points below the k-NN probe "
                f"({k_best:.2f} % at k={k}) on the same features; check the L2 sweep (chosen L2 {lin.get('best_l2', float('nan')):.3g})"]
    return []


def summarize(report: Dict[str, Any]) -> Dict[str, Any]:
    """The headline numbers: best k-NN top-1, linear top-1, few-shot means by (classifier, shots)."""
    p, s = report["probes"], {}
    if "knn" in p:
        s["knn_top1"], s["knn_best_k"] = p["knn"]["best_top1"], p["knn"]["best_k"]
        s["knn_top1_k20"] = p["knn"]["top1"].get(20)
    if "linear" in p:
        s["linear_top1"] = p["linear"]["top1"]
    if "fewshot" in p:
        ep = p["fewshot"]["episodes"]
        for k, d in ep["results"].items():
            for c, v in d.items():
                s[f"fewshot_{ep['n_way']}way_{k}shot_{c}"] = v["mean"]
    return s


def run_probe(name: str, ckpt: str, data: str, out_dir: Optional[Path] = None,
              cfg: Optional[ProbeConfig] = None) -> Dict[str, Any]:
    """One probe (``knn``, ``linear`` or ``fewshot``); reports named after it."""
    return run_probes([name], ckpt, data, out_dir, cfg, stem=name)


def run_all(ckpt: str, data: str, out_dir: Optional[Path] = None, cfg: Optional[ProbeConfig] = None) -> Dict[str, Any]:
    """k-NN, linear and few-shot on the same cached features; one combined ``report.{json,md,html}``."""
    return run_probes(list(PROBES), ckpt, data, out_dir, cfg, stem="report")
