"""``transfer probe {knn,linear,fewshot,all,finetune} --ckpt SPEC --data NAME_OR_PATH [options]``.

``--ckpt`` takes a run folder / backbone file, ``random:ARCH[:WIDTH[:SEED]]`` or ``pixels``.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import List

from .finetune import FinetuneConfig, run_finetune
from .run import ProbeConfig, run_all, run_probe


def _ints(s: str) -> List[int]:
    try:
        return [int(v) for v in s.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {s!r}") from None


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ckpt", required=True, help="run folder, backbone.safetensors, foreign checkpoint, "
                                                 "'random:ARCH[:WIDTH[:SEED]]' or 'pixels'")
    p.add_argument("--data", required=True, help="fashion_mnist, digits, synthetic, or an ImageFolder path")
    p.add_argument("--data-root", default=None, help="folder holding the dataset files")
    p.add_argument("--out", default="runs/probes", help="report folder (default runs/probes)")
    p.add_argument("--size", type=int, default=None, help="input pixels (default: the checkpoint's input_size, "
                                                          "else the images' native size)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--cache-dir", default=None, help="feature cache (default $TRANSFER_CACHE/features or "
                                                     "~/.cache/transfer/features)")
    p.add_argument("--no-cache", action="store_true", help="always re-extract features, store nothing")
    p.add_argument("--train-split", default="train")
    p.add_argument("--test-split", default="test")
    p.add_argument("--seed", type=int, default=0)


def _knn_opts(p: argparse.ArgumentParser) -> None:
    p.add_argument("--k", type=_ints, default=[10, 20, 100, 200], help="comma-separated k (default 10,20,100,200)")
    p.add_argument("--temperature", type=float, default=0.07)


def _linear_opts(p: argparse.ArgumentParser) -> None:
    p.add_argument("--protocol", choices=["fast", "moco", "simsiam"], default="fast",
                   help="fast: L-BFGS on cached features; moco/simsiam: augmented SGD/LARS on the frozen backbone")
    p.add_argument("--l2-steps", type=int, default=45, help="L2 sweep size (log grid l2-min..l2-max)")
    p.add_argument("--l2-min", type=float, default=1e-6)
    p.add_argument("--l2-max", type=float, default=1e5)
    p.add_argument("--val-frac", type=float, default=0.2)
    p.add_argument("--epochs", type=int, default=100, help="epochs of the moco/simsiam protocols")


def _positive_int(s: str) -> int:
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {s!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {s!r}")
    return v


def _fewshot_opts(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ways", type=int, default=5)
    p.add_argument("--shots", type=_ints, default=[1, 5])
    p.add_argument("--queries", type=int, default=15)
    p.add_argument("--episodes", type=_positive_int, default=600, help="episodes per shot count (>= 1)")
    p.add_argument("--fewshot-split", choices=["train", "test"], default="test", help="episode pool")
    p.add_argument("--lowshot-shots", type=_ints, default=None, help="default 1,2,4,... up to the smallest class")
    p.add_argument("--lowshot-seeds", type=int, default=3)


def _baselines(s: str) -> List[str]:
    vals = [v.strip() for v in s.split(",") if v.strip()]
    if vals == ["none"]:
        return []
    bad = [v for v in vals if v not in ("random", "pixels")]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown baseline {bad[0]!r}; choose from random, pixels, none")
    return vals


def _finetune_opts(p: argparse.ArgumentParser) -> None:
    p.add_argument("--labels", default="1%", help="labelled part of the train split: a percentage (1%%, 10%%), "
                                                  "images per class (an integer), or a file of image ids "
                                                  "(ImageNet's official 1%%/10%% lists)")
    p.add_argument("--ft-epochs", type=int, default=30, help="fine-tuning epochs over the labelled subset (default 30)")
    p.add_argument("--ft-batch-size", type=int, default=64)
    p.add_argument("--ft-lr", type=float, default=None,
                   help="default 1.2 x batch / 256 = 0.3 at batch 64 (chosen on a train-carved validation "
                        "split; SimCLR's 0.05 x batch / 256 underfits in a CPU-sized schedule)")
    p.add_argument("--ft-momentum", type=float, default=0.9)
    p.add_argument("--no-nesterov", action="store_true", help="plain momentum instead of Nesterov")
    p.add_argument("--ft-weight-decay", type=float, default=0.0)
    p.add_argument("--crop-scale-min", type=float, default=0.35, help="RandomResizedCrop scale lower bound")
    p.add_argument("--val-per-class", type=int, default=0,
                   help="validation images per class from train images outside the labelled subset (for tuning)")
    p.add_argument("--baselines", type=_baselines, default=["random", "pixels"],
                   help="comma list of random (same arch, random init, fine-tuned the same way), pixels "
                        "(raw-pixel logistic regression), or none")
    p.add_argument("--l2-steps", type=int, default=45, help="L2 sweep size of the pixel baseline")
    p.add_argument("--ft-max-steps", type=int, default=None, help=argparse.SUPPRESS)


def finetune_config_from_args(a: argparse.Namespace):
    return FinetuneConfig(labels=a.labels, epochs=a.ft_epochs, batch_size=a.ft_batch_size, lr=a.ft_lr,
                          momentum=a.ft_momentum, nesterov=not a.no_nesterov, weight_decay=a.ft_weight_decay,
                          crop_scale_min=a.crop_scale_min, val_per_class=a.val_per_class,
                          baselines=tuple(a.baselines), max_steps=a.ft_max_steps)


def config_from_args(a: argparse.Namespace) -> ProbeConfig:
    cfg = ProbeConfig(size=a.size, device=a.device, batch_size=a.batch_size, cache_dir=a.cache_dir,
                      use_cache=not a.no_cache, data_root=a.data_root, train_split=a.train_split,
                      test_split=a.test_split, seed=a.seed)
    for attr, key in (("k", "ks"), ("temperature", "temperature"), ("protocol", "linear_protocol"),
                      ("l2_steps", "l2_steps"), ("l2_min", "l2_min"), ("l2_max", "l2_max"),
                      ("val_frac", "val_frac"), ("epochs", "linear_epochs"), ("ways", "n_way"),
                      ("shots", "shots"), ("queries", "n_query"), ("episodes", "episodes"),
                      ("fewshot_split", "fewshot_split"), ("lowshot_shots", "lowshot_shots"),
                      ("lowshot_seeds", "lowshot_seeds")):
        if hasattr(a, attr):
            setattr(cfg, key, getattr(a, attr))
    return cfg


def _print(report: dict) -> None:
    for k, v in report["summary"].items():
        if v is None:
            continue
        print(f"{k}: {v:.2f}" if isinstance(v, float) else f"{k}: {v}")
    for w in report["warnings"]:
        print(f"warning: {w}")
    for k, v in report.get("paths", {}).items():
        print(f"wrote {v}")


def _run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    if args.probe == "finetune":
        report = run_finetune(args.ckpt, args.data, Path(args.out), cfg, finetune_config_from_args(args))
    elif args.probe == "all":
        report = run_all(args.ckpt, args.data, Path(args.out), cfg)
    else:
        report = run_probe(args.probe, args.ckpt, args.data, Path(args.out), cfg)
    _print(report)
    return 0


def register(subparsers) -> None:
    """Add ``transfer probe ...`` to the top-level CLI."""
    p = subparsers.add_parser("probe", help="linear, k-NN and few-shot evaluation of a backbone",
                              description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="probe", metavar="PROBE")
    sub.required = True
    for name, adders, helptext in (
        ("knn", [_knn_opts], "weighted k-NN (DINO)"),
        ("linear", [_linear_opts], "linear probe (fast L-BFGS on cached features, or moco/simsiam)"),
        ("fewshot", [_fewshot_opts], "N-way K-shot episodes and a low-shot curve"),
        ("all", [_knn_opts, _linear_opts, _fewshot_opts], "all three probes, one combined report"),
        ("finetune", [_finetune_opts], "fine-tune the whole backbone on 1%/10% labels (SimCLR/BYOL "
                                       "semi-supervised protocol) vs random init and raw pixels"),
    ):
        sp = sub.add_parser(name, help=helptext)
        _common(sp)
        for add in adders:
            add(sp)
        sp.set_defaults(func=_run)
