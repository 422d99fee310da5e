"""The study setting and its cells.

A cell is (method, variant, seed). The variants are UniGrad's three columns:

- ``orig``: the method's original loss, with its own default momentum-encoder choice
  (MoCo/BYOL/DirectPred with one, SimCLR/SimSiam/Barlow Twins/VICReg without);
- ``grad``: the gradient form (UniGrad's surrogate), without a momentum encoder;
- ``grad_ema``: the gradient form with the momentum encoder.

A variant runs only where the method's ``.forms`` allow it. UniGrad is defined by its gradient; its
``orig`` is its loss form (same gradient as ``grad_ema``), kept as an equivalence check.

Every cell shares one setting: the ``<method>_fmnist`` recipes on Fashion-MNIST (identical but for
the method and its parameters), else :data:`GENERIC` through ``load_config(None, ...)`` with the
method's parameters taken from its ``_fmnist`` recipe (sized for the same 256-d projector); the
budget (steps, batch) and ``--set`` overrides apply to every cell alike.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..errors import UserError


@dataclass(frozen=True)
class Variant:
    key: str  # used in folder names
    label: str  # used in tables
    form: str
    momentum: Optional[bool]  # None: the method's default


VARIANTS: Dict[str, Variant] = {
    "orig": Variant("orig", "original", "loss", None),
    "grad": Variant("grad", "grad, no EMA", "grad", False),
    "grad_ema": Variant("grad_ema", "grad + EMA", "grad", True),
}
VARIANT_ALIASES = {"orig": "orig", "original": "orig", "loss": "orig", "grad": "grad", "grad-ema": "grad_ema",
                   "grad+ema": "grad_ema", "grad_ema": "grad_ema", "ema": "grad_ema"}


@dataclass(frozen=True)
class Budget:
    steps: int
    batch: int
    seeds: int
    probe_train: int  # probe features from this many train images (0 = all); the same subset for every cell
    probe_test: int  # 0 = the whole test split
    l2_steps: int  # linear probe L2 sweep length
    episodes: int  # few-shot episodes
    transfer_iters: int  # detection / segmentation fine-tuning iterations
    transfer_seeds: int  # transfer runs on the first K seeds of each method's default form
    note: str = ""


#: Budgets. ``cpu60`` / ``cpu150``: every registered method (12), three variants, two seeds (72 cells)
#: on Fashion-MNIST with 2 free cores (``--jobs 2``), from the throughput model in :func:`estimate`.
BUDGETS: Dict[str, Budget] = {
    "tiny": Budget(4, 32, 2, 512, 512, 3, 50, 2, 1, "seconds per cell: tests and smoke runs"),
    "small": Budget(60, 128, 2, 5000, 0, 45, 200, 10, 1, "a few minutes per method"),
    "cpu60": Budget(60, 128, 2, 5000, 0, 45, 200, 10, 1, "all methods x 3 variants x 2 seeds in about 60 min on 2 cores"),
    "cpu150": Budget(220, 128, 2, 10000, 0, 45, 600, 30, 1, "all methods x 3 variants x 2 seeds in about 150 min on 2 cores"),
}

#: The shared setting off Fashion-MNIST: what every ``<method>_fmnist.yaml`` recipe says, minus the data.
GENERIC: Dict[str, Any] = {
    "model.arch": "small_resnet18", "model.width": 0.25, "model.proj_hidden": 512, "model.proj_dim": 256,
    "model.proj_layers": 3, "model.pred_hidden": 128, "model.sync_bn": True, "model.zero_init_residual": True,
    "data.aug.scale_min": 0.35, "data.aug.p_blur": 0.0,
    "optim.name": "sgd", "optim.base_lr": 0.05, "optim.momentum": 0.9, "optim.weight_decay": 1e-4,
    "optim.min_lr_ratio": 0.001, "ema.base": 0.99, "ema.end": 1.0,
}


@dataclass
class StudySpec:
    data: str
    out: str
    methods: List[str]
    variants: List[str]
    seeds: int
    steps: int
    batch: int
    budget: str = "custom"
    size: Optional[int] = None
    jobs: int = 1
    threads: Optional[int] = None
    device: str = "cpu"
    probe_train: int = 0
    probe_test: int = 0
    l2_steps: int = 45  # the probes' default grid (1e5 .. 1e-6), as every other entry point
    episodes: int = 200
    det_task: Optional[str] = "trees_det"
    seg_task: Optional[str] = "nuclei_seg"
    transfer_iters: int = 10
    transfer_seeds: int = 1
    baselines: bool = True
    overrides: List[str] = field(default_factory=list)
    retry_failed: bool = False
    command: str = ""

    def to_json(self) -> Dict[str, Any]:
        return asdict(self)

    @property
    def transfer_tasks(self) -> List[Tuple[str, str]]:
        return [(k, t) for k, t in (("det", self.det_task), ("seg", self.seg_task)) if t]


@dataclass(frozen=True)
class Cell:
    method: str
    family: str
    variant: str
    seed: int
    form: str
    momentum: bool
    is_default: bool  # the method's default form and momentum: runs the transfer tasks

    @property
    def cell_id(self) -> str:
        return f"{self.method}__{self.variant}__s{self.seed}"

    @property
    def label(self) -> str:
        return VARIANTS[self.variant].label


def parse_variants(text: Optional[str]) -> List[str]:
    if not text:
        return list(VARIANTS)
    out: List[str] = []
    for t in text.split(","):
        t = t.strip().lower()
        if not t:
            continue
        if t not in VARIANT_ALIASES:
            raise UserError(f"--forms: unknown variant {t!r}; choose from loss (original), grad, grad+ema")
        if VARIANT_ALIASES[t] not in out:
            out.append(VARIANT_ALIASES[t])
    if not out:
        raise UserError("--forms: no variant given")
    return out


def parse_methods(text: Optional[str]) -> List[str]:
    from ..methods import METHODS

    if not text or text == "all":
        return METHODS.names()
    out = []
    for m in text.split(","):
        m = m.strip()
        if m:
            METHODS.get(m)  # a clear error for an unknown name
            if m not in out:
                out.append(m)
    if not out:
        raise UserError("--methods: no method given")
    return out


def plan_cells(methods: Sequence[str], variants: Sequence[str], seeds: int) -> List[Cell]:
    """Seed-major order: a study stopped half-way has complete seeds, not complete methods."""
    from ..methods import METHODS

    cells: List[Cell] = []
    for seed in range(seeds):
        for m in methods:
            cls = METHODS.get(m)
            default = (cls.default_form, bool(cls.default_momentum))
            for v in variants:
                var = VARIANTS[v]
                if var.form not in cls.forms:
                    continue
                mom = bool(cls.default_momentum) if var.momentum is None else var.momentum
                cells.append(Cell(m, cls.family or m, v, seed, var.form, mom, (var.form, mom) == default))
    return cells


def default_cells(cells: Sequence[Cell]) -> List[Cell]:
    return [c for c in cells if c.is_default]


# ------------------------------------------------------------------------------ configs
def recipe_for(method: str) -> Optional[str]:
    from ..config import list_recipes

    name = f"{method}_fmnist"
    return name if name in list_recipes() else None


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v)
    return str(v)


def budget_overrides(steps: int, batch: int, n_train: int) -> Dict[str, Any]:
    """Steps and batch as config keys; the lr and EMA schedules span exactly ``steps``."""
    spe = n_train // batch
    if spe < 1:
        raise UserError(f"the dataset has {n_train} training images, fewer than --batch {batch}")
    epochs = steps / spe
    return {"optim.batch_size": batch, "optim.epochs": epochs, "optim.max_steps": steps,
            "optim.warmup_epochs": 0.1 * epochs, "train.knn_every": 0, "train.progress": False,
            "train.ckpt_every": max(10, min(100, steps // 5 or 1)), "train.log_every": max(1, min(10, steps // 20 or 1)),
            "data.workers": 0}


def cell_config(spec: StudySpec, cell: Cell, n_train: int, native_size: int) -> Dict[str, Any]:
    from ..config import load_config, parse_override

    recipe = recipe_for(cell.method)
    run = {"out_dir": str(Path(spec.out) / "cells"), "name": cell.cell_id, "seed": cell.seed,
           "method.form": cell.form, "method.momentum": cell.momentum}
    run.update(budget_overrides(spec.steps, spec.batch, n_train))
    if spec.data == "fashion_mnist" and recipe:
        base: Dict[str, Any] = {}
        if spec.size:
            base["data.size"] = spec.size
    else:
        base = dict(GENERIC)
        base.update({"method.name": cell.method, "data.name": spec.data, "data.size": spec.size or native_size})
        if recipe:  # the method's parameters, sized for the shared 256-d projector
            import yaml

            from ..config import find_recipe

            params = ((yaml.safe_load(find_recipe(recipe).read_text()) or {}).get("method") or {}).get("params") or {}
            for k, v in params.items():
                base[f"method.params.{k}"] = v
        recipe = None
    items = [f"{k}={_fmt(v)}" for k, v in {**base, **run}.items()] + list(spec.overrides)
    for o in spec.overrides:
        parse_override(o)  # refuse a malformed --set early, naming it
    cfg = load_config(recipe, items)
    return cfg


def setting_summary(cfg: Dict[str, Any]) -> Dict[str, Any]:
    """The parts of a cell config that every cell shares (for the table and the doc)."""
    m, d, o = cfg["model"], cfg["data"], cfg["optim"]
    return {"arch": m["arch"], "width": m["width"], "proj": f"{m['proj_hidden']}-{m['proj_hidden']}-{m['proj_dim']}"
            if int(m["proj_layers"]) == 3 else f"{m['proj_layers']} layers, {m['proj_hidden']} -> {m['proj_dim']}",
            "pred_hidden": m["pred_hidden"], "data": d["name"], "size": d["size"], "aug": d["aug"],
            "optimizer": o["name"], "base_lr": o["base_lr"], "lr": o["base_lr"] * o["batch_size"] / 256,
            "weight_decay": o["weight_decay"], "batch": o["batch_size"], "steps": o["max_steps"],
            "warmup_frac": 0.1, "ema": [cfg["ema"]["base"], cfg["ema"]["end"]]}


# ------------------------------------------------------------------------------ time model
#: Throughput of a whole 2-core x86 machine running two 1-thread jobs (calibration.md; ``bench
#: trainer``; one Fashion-MNIST cell measured on a shared core: ~190 pairs/s, features ~2,600 img/s,
#: 5,000-sample 5-value L2 sweep 1.5 s): a width-1/4 small ResNet-18 at 28 px trains ~400 image
#: pairs/s; the momentum encoder's extra forward costs ~25 %; feature extraction ~5,000 img/s;
#: L-BFGS linear probe ~3e-5 s per (sample x L2 value); detection ``trees_det`` ~2.1 s/iteration +
#: 30 s set-up/eval, segmentation ``nuclei_seg`` ~2.1 s/iteration + 15 s (docs/detection.md,
#: docs/segmentation.md, rescaled to 2 cores). ``--img-per-s`` rescales the training rate.
RATES = {"train_img_s": 400.0, "ema_cost": 1.25, "feat_img_s": 5000.0, "linear_s": 3e-5, "episode_s": 0.001,
         "cell_overhead_s": 2.0, "det_iter_s": 2.1, "det_fixed_s": 30.0, "seg_iter_s": 2.1, "seg_fixed_s": 15.0}


def estimate(spec: StudySpec, cells: Sequence[Cell], n_train: int, n_test: int,
             rates: Optional[Dict[str, float]] = None, size: int = 28) -> Dict[str, float]:
    """Seconds of a 2-core machine for the whole study (all cells from scratch)."""
    r = {**RATES, **(rates or {})}
    px = (size / 28.0) ** 2  # conv cost grows with the pixel count
    train = sum(spec.steps * spec.batch / r["train_img_s"] * (r["ema_cost"] if c.momentum else 1.0) * px for c in cells)
    ptr = spec.probe_train or n_train
    pte = spec.probe_test or n_test
    n_probe = len(cells) + ((spec.seeds + 1) if spec.baselines else 0)
    per_probe = ((ptr + pte) / r["feat_img_s"] * px + ptr * spec.l2_steps * r["linear_s"]
                 + 2 * spec.episodes * r["episode_s"] + r["cell_overhead_s"])
    probes = n_probe * per_probe
    n_tr = len({(c.method) for c in cells if c.is_default}) * min(spec.transfer_seeds, spec.seeds)
    if spec.baselines:
        n_tr += min(spec.transfer_seeds, spec.seeds)
    transfer = 0.0
    for kind, _ in spec.transfer_tasks:
        transfer += n_tr * (spec.transfer_iters * r[f"{kind}_iter_s"] + r[f"{kind}_fixed_s"])
    return {"train_s": train, "probes_s": probes, "transfer_s": transfer, "total_s": train + probes + transfer,
            "cells": len(cells), "probe_runs": n_probe, "transfer_runs": n_tr * len(spec.transfer_tasks),
            "images_per_cell": spec.steps * spec.batch}


def fmt_seconds(s: float) -> str:
    s = float(s)
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.2f} h"


def ceil_div(a: int, b: int) -> int:
    return int(math.ceil(a / b))
