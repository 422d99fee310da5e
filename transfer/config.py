"""Pretraining configuration: defaults, YAML recipes, ``key=value`` overrides, validation.

A recipe is YAML with the sections of :data:`DEFAULTS`; ``transfer pretrain RECIPE a.b=v``
overrides any key (values parsed as YAML). Unknown keys are errors naming the key and the
closest known one. Recipes are looked up as a path first, then by name under ``configs/pretrain``
(shipped as package data, so an installed wheel finds them too).
"""
from __future__ import annotations

import copy
import difflib
from importlib import resources
from pathlib import Path
from typing import Any, Dict, List

import yaml

from .errors import UserError

DEFAULTS: Dict[str, Any] = {
    "name": None,  # run folder name under out_dir (default: recipe name)
    "out_dir": "runs",
    "seed": 0,
    "method": {"name": "unigrad", "form": None, "momentum": None, "params": {}},
    "model": {
        "arch": "resnet50",
        "width": 1.0,
        "zero_init_residual": True,
        "proj_hidden": 2048,
        "proj_dim": 2048,
        "proj_layers": 3,
        "pred_hidden": 512,
        "sync_bn": True,
    },
    "data": {
        "name": "imagenet",
        "root": None,
        "size": 224,
        "load_size": 256,
        "workers": 4,
        "aug": {},  # overrides of transfer.data.augment.AugmentConfig
    },
    "optim": {
        "name": "sgd",
        "base_lr": 0.05,  # lr = base_lr * global_batch / 256
        "momentum": 0.9,
        "weight_decay": 1e-4,
        "batch_size": 1024,  # global
        "epochs": 100,
        "max_steps": None,  # stop early (steps), schedules still span `epochs`
        "warmup_epochs": 5,
        "min_lr_ratio": 1e-3,
        "lars_eta": 0.001,
    },
    "ema": {"base": 0.996, "end": 1.0},
    "train": {
        "amp": "auto",  # auto: bf16 on GPU, off on CPU
        "channels_last": "auto",
        "ckpt_every": 500,  # steps; also at every epoch end
        "log_every": 10,
        "knn_every": 1,  # epochs; 0 = off
        "knn_bank": 10000,
        "knn_k": 20,
        "knn_t": 0.07,
        "progress": True,
        "deterministic": False,
        "threads": None,
        # float64 is for numerical checks on CPU (e.g. 2-process == 1-process): reduction-order
        # error then sits ~1e-16 relative instead of ~1e-7, far below any real discrepancy
        "dtype": "float32",
        # where the k-NN monitor takes its queries: "test" (the held-out split), or "val" = a
        # seeded ``knn_val``-image subset of train (bank: the other train images) for choosing
        # recipe settings without looking at the test set
        "knn_split": "test",
        "knn_val": 5000,
    },
}


def _merge(base: Dict[str, Any], over: Dict[str, Any], where: str) -> Dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if k not in base:
            close = difflib.get_close_matches(k, list(base), n=1)
            hint = f" (did you mean '{where}{close[0]}'?)" if close else ""
            raise UserError(f"unknown config key '{where}{k}'{hint}")
        if isinstance(base[k], dict) and k not in ("params", "aug"):
            if not isinstance(v, dict):
                raise UserError(f"config key '{where}{k}' must be a mapping, got {v!r}")
            out[k] = _merge(base[k], v, f"{where}{k}.")
        elif k in ("params", "aug"):
            if not isinstance(v, dict):
                raise UserError(f"config key '{where}{k}' must be a mapping, got {v!r}")
            out[k] = {**base[k], **v}
        else:
            out[k] = v
    return out


def recipe_dir() -> Path:
    return Path(str(resources.files("configs") / "pretrain"))


def list_recipes() -> List[str]:
    return sorted(p.stem for p in recipe_dir().glob("*.yaml"))


def find_recipe(name_or_path: str) -> Path:
    p = Path(name_or_path)
    if p.is_file():
        return p
    cand = recipe_dir() / (name_or_path if name_or_path.endswith(".yaml") else f"{name_or_path}.yaml")
    if cand.is_file():
        return cand
    close = difflib.get_close_matches(p.stem, list_recipes(), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise UserError(f"config not found: {name_or_path}{hint}; built-in recipes: {', '.join(list_recipes())}")


def parse_override(item: str) -> Dict[str, Any]:
    if "=" not in item:
        raise UserError(f"override {item!r} is not of the form key=value")
    key, val = item.split("=", 1)
    try:
        value = yaml.safe_load(val) if val != "" else None
    except yaml.YAMLError:
        value = val
    node: Dict[str, Any] = {}
    cur = node
    parts = key.strip().split(".")
    for p in parts[:-1]:
        cur[p] = {}
        cur = cur[p]
    cur[parts[-1]] = value
    return node


def _deep_update(a: Dict[str, Any], b: Dict[str, Any]) -> Dict[str, Any]:
    for k, v in b.items():
        if isinstance(v, dict) and isinstance(a.get(k), dict):
            _deep_update(a[k], v)
        else:
            a[k] = v
    return a


def load_config(recipe: str | None, overrides: List[str] = ()) -> Dict[str, Any]:
    raw: Dict[str, Any] = {}
    if recipe:
        path = find_recipe(recipe)
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise UserError(f"{path}: invalid YAML ({str(e).splitlines()[0]})") from None
        if not isinstance(raw, dict):
            raise UserError(f"{path}: a recipe must be a mapping of sections")
        raw.setdefault("name", path.stem)
    ov: Dict[str, Any] = {}
    for o in overrides:
        _deep_update(ov, parse_override(o))
    m_ov = ov.get("method", {})
    if isinstance(m_ov, dict) and "name" in m_ov and "params" not in m_ov and isinstance(raw.get("method"), dict) \
            and raw["method"].get("name") != m_ov["name"]:
        # another method than the recipe's: the recipe's form, momentum and parameters do not apply
        raw["method"] = {}  # its form, momentum and parameters default to the new method's
    _deep_update(raw, ov)
    cfg = _merge(DEFAULTS, raw, "")
    validate(cfg)
    if not cfg["name"]:
        m = cfg["method"]
        cfg["name"] = f"{m['name']}_{m['form'] or 'default'}"
    return cfg


def validate(cfg: Dict[str, Any]) -> None:
    from .backbones import BACKBONES
    from .methods import METHODS

    BACKBONES.get(cfg["model"]["arch"])
    cls = METHODS.get(cfg["method"]["name"])
    form = cfg["method"]["form"]
    if form is not None and form not in cls.forms:
        raise UserError(f"method.form must be one of {cls.forms}, got {form!r}")
    o = cfg["optim"]
    if o["name"] not in ("sgd", "lars"):
        raise UserError(f"optim.name must be 'sgd' or 'lars', got {o['name']!r}")
    for k in ("batch_size", "epochs"):
        if not (isinstance(o[k], (int, float)) and o[k] > 0):
            raise UserError(f"optim.{k} must be a positive number, got {o[k]!r}")
    if int(o["batch_size"]) != o["batch_size"]:
        raise UserError(f"optim.batch_size must be an integer, got {o['batch_size']!r}")
    t = cfg["train"]
    if t["dtype"] not in ("float32", "float64"):
        raise UserError(f"train.dtype must be 'float32' or 'float64', got {t['dtype']!r}")
    if t["knn_split"] not in ("test", "val"):
        raise UserError(f"train.knn_split must be 'test' or 'val', got {t['knn_split']!r}")
    if not (isinstance(t["knn_val"], int) and not isinstance(t["knn_val"], bool) and t["knn_val"] > 0):
        raise UserError(f"train.knn_val must be a positive integer (images), got {t['knn_val']!r}")
    for k in ("ckpt_every", "log_every"):
        v = cfg["train"][k]
        if not (isinstance(v, int) and v > 0):
            raise UserError(f"train.{k} must be a positive integer (steps), got {v!r}")
    from .data.augment import AugmentConfig

    known = set(AugmentConfig.__dataclass_fields__) - {"size"}  # the size is data.size
    for k in cfg["data"]["aug"]:
        if k not in known:
            close = difflib.get_close_matches(k, sorted(known), n=1)
            hint = f" (did you mean 'data.aug.{close[0]}'?)" if close else ""
            raise UserError(f"unknown config key 'data.aug.{k}'{hint}")
