"""Pretraining configuration: defaults, YAML recipes, ``key=value`` overrides, validation.

A recipe is YAML with the sections of :data:`DEFAULTS`; ``transfer pretrain RECIPE a.b=v``
overrides any key (values parsed as YAML). Unknown keys are errors naming the key and the
closest known one. Recipes are looked up as a path first, then by name under ``configs/pretrain``
(shipped as package data, so an installed wheel finds them too).

A recipe may name another with ``_base: NAME`` (a path relative to the recipe's folder, ``.yaml``
optional, e.g. ``base/in1k``; then a built-in recipe name): the base is loaded first (recursively) and
the recipe states only what differs. A cycle or a missing base is an error naming the files.

:data:`SCHEMA` gives every key's type and range; :func:`validate` checks each key against it (the
error names the key and the value) and stores typed values (an integer given for a float key becomes
a float), so the trainer reads ``cfg[...]`` without casting.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import yaml

from .backbones import BACKBONES
from .data.augment import AugmentConfig
from .errors import UserError
from .methods import METHODS
from .suggest import did_you_mean

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
        "amp": "auto",  # auto: bf16 on a GPU with bf16 and on a CPU with AMX, else fp32 (devices.bf16_native)
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
            raise UserError(f"unknown config key '{where}{k}'{did_you_mean(k, base, where)}")
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
    """Built-in recipe names (``configs/pretrain/*.yaml``; the bases under ``base/`` are not recipes)."""
    return sorted(p.stem for p in recipe_dir().glob("*.yaml"))


# --list groups, in order: (name suffix, title); recipes matching none go under "other"
RECIPE_GROUPS: Tuple[Tuple[str, str], ...] = (
    ("_in1k", "UniGrad's fair comparison on ImageNet: every method in its gradient form, one identical recipe"),
    ("_paper", "each method's own published ImageNet recipe"),
    ("_fmnist", "Fashion-MNIST on 2 CPU cores: one shared small recipe, only the method differs"),
)


def recipe_description(path: Path) -> str:
    """The first comment line of a recipe file (its one-line description)."""
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            return line.lstrip("#").strip()
        if line.strip():
            break
    return ""


def recipe_groups() -> List[Tuple[str, List[Tuple[str, str]]]]:
    """``[(group title, [(recipe name, description), ...]), ...]`` for ``transfer pretrain --list``."""
    groups: Dict[str, List[Tuple[str, str]]] = {t: [] for _, t in RECIPE_GROUPS}
    other: List[Tuple[str, str]] = []
    for name in list_recipes():
        entry = (name, recipe_description(recipe_dir() / f"{name}.yaml"))
        title = next((t for suf, t in RECIPE_GROUPS if name.endswith(suf)), None)
        (groups[title] if title else other).append(entry)
    out = [(t, v) for t, v in groups.items() if v]
    if other:
        out.append(("other recipes", other))
    return out


def find_recipe(name_or_path: str) -> Path:
    p = Path(name_or_path)
    if p.is_file():
        return p
    cand = recipe_dir() / (name_or_path if name_or_path.endswith(".yaml") else f"{name_or_path}.yaml")
    if cand.is_file():
        return cand
    hint = did_you_mean(p.stem, list_recipes())
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


BASE_KEY = "_base"


def _read_yaml(path: Path) -> Dict[str, Any]:
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise UserError(f"{path}: invalid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path}: a recipe must be a mapping of sections")
    return raw


def _find_base(ref: Any, child: Path) -> Path:
    if not isinstance(ref, str) or not ref.strip():
        raise UserError(f"{child}: {BASE_KEY} must be a recipe name or path, got {ref!r}")
    fname = ref if ref.endswith(".yaml") else f"{ref}.yaml"
    for cand in (child.parent / fname, recipe_dir() / fname):
        if cand.is_file():
            return cand
    raise UserError(f"{child}: {BASE_KEY} {ref!r} not found (looked for {child.parent / fname} "
                    f"and {recipe_dir() / fname})")


def load_recipe(path: Path, _chain: Tuple[Path, ...] = ()) -> Dict[str, Any]:
    """A recipe file with its ``_base`` chain resolved: the base's sections, then the recipe's on top
    (section by section; a recipe naming another method than its base drops the base's method)."""
    key = path.resolve()
    if key in _chain:
        cycle = " -> ".join(str(p) for p in (*_chain, key))
        raise UserError(f"{path}: {BASE_KEY} cycle: {cycle}")
    raw = _read_yaml(path)
    if BASE_KEY not in raw:
        return raw
    ref = raw.pop(BASE_KEY)
    base = load_recipe(_find_base(ref, path), (*_chain, key))
    m, bm = raw.get("method"), base.get("method")
    if isinstance(m, dict) and isinstance(bm, dict) and "name" in m and m["name"] != bm.get("name"):
        base.pop("method")
    return _deep_update(base, raw)


def load_config(recipe: str | None, overrides: List[str] = ()) -> Dict[str, Any]:
    raw: Dict[str, Any] = {}
    if recipe:
        path = find_recipe(recipe)
        raw = load_recipe(path)
        raw.setdefault("name", path.stem)
    ov: Dict[str, Any] = {}
    for o in overrides:
        _deep_update(ov, parse_override(o))
    m_ov = ov.get("method", {})
    if isinstance(m_ov, dict) and "name" in m_ov and isinstance(raw.get("method"), dict) \
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


@dataclass(frozen=True)
class Field:
    """One config key's type and range. ``kind``: int | float | bool | str; ``lo``/``hi`` bound
    numbers (``lo_open``/``hi_open`` make a bound strict); ``choices`` lists the allowed values;
    ``none``: None is allowed; ``auto``: the string "auto" is allowed (for auto|true|false keys)."""

    kind: str
    lo: Optional[float] = None
    hi: Optional[float] = None
    lo_open: bool = False
    hi_open: bool = False
    choices: Tuple[Any, ...] = ()
    none: bool = False
    auto: bool = False

    def describe(self) -> str:
        what = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string"}[self.kind]
        if self.choices:
            what = "one of " + ", ".join(repr(c) for c in self.choices)
        if self.lo is not None or self.hi is not None:
            lo = "" if self.lo is None else ("(" if self.lo_open else "[") + f"{self.lo:g}"
            hi = "" if self.hi is None else f"{self.hi:g}" + (")" if self.hi_open else "]")
            if self.lo is not None and self.hi is not None:
                what += f" in {lo}, {hi}"
            elif self.lo is not None:
                what += f" {'>' if self.lo_open else '>='} {self.lo:g}"
            else:
                what += f" {'<' if self.hi_open else '<='} {self.hi:g}"
        if self.auto:
            what = "'auto' or " + what
        if self.none:
            what += " (or null)"
        return what

    def check(self, key: str, v: Any) -> Any:
        """``v`` typed (an int for a float key becomes a float), or a UserError naming ``key``."""
        given = v

        def bad() -> UserError:
            return UserError(f"config key '{key}' must be {self.describe()}, got {given!r}")

        if v is None:
            if self.none:
                return None
            raise bad()
        if self.auto and v == "auto":
            return v
        if self.kind == "bool":
            if not isinstance(v, bool):
                raise bad()
        elif self.kind == "str":
            if not isinstance(v, str):
                raise bad()
        elif self.kind == "int":
            if isinstance(v, bool) or not isinstance(v, int):
                raise bad()
        else:  # float; YAML 1.1 reads 1e-4 (no dot) as a string, so numeric strings count as numbers
            if isinstance(v, str):
                try:
                    v = float(v)
                except ValueError:
                    raise bad() from None
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise bad()
            v = float(v)
        if self.choices and v not in self.choices:
            raise bad()
        if self.lo is not None and (v < self.lo or (self.lo_open and v == self.lo)):
            raise bad()
        if self.hi is not None and (v > self.hi or (self.hi_open and v == self.hi)):
            raise bad()
        return v


def _pos_int(**kw: Any) -> Field:
    return Field("int", lo=1, **kw)


# every leaf key of DEFAULTS but the free-form mappings method.params (each method checks its own
# parameters) and data.aug (checked against AugmentConfig below)
SCHEMA: Dict[str, Field] = {
    "name": Field("str", none=True),
    "out_dir": Field("str"),
    "seed": Field("int", lo=0),
    "method.name": Field("str"),
    "method.form": Field("str", none=True),
    "method.momentum": Field("bool", none=True),
    "model.arch": Field("str"),
    "model.width": Field("float", lo=0, lo_open=True),
    "model.zero_init_residual": Field("bool"),
    "model.proj_hidden": _pos_int(),
    "model.proj_dim": _pos_int(),
    "model.proj_layers": _pos_int(),
    "model.pred_hidden": _pos_int(),
    "model.sync_bn": Field("bool"),
    "data.name": Field("str"),
    "data.root": Field("str", none=True),
    "data.size": _pos_int(),
    "data.load_size": _pos_int(),
    "data.workers": Field("int", lo=0),
    "optim.name": Field("str", choices=("sgd", "lars")),
    "optim.base_lr": Field("float", lo=0, lo_open=True),
    "optim.momentum": Field("float", lo=0, hi=1, hi_open=True),
    "optim.weight_decay": Field("float", lo=0),
    "optim.batch_size": _pos_int(),
    "optim.epochs": Field("float", lo=0, lo_open=True),
    "optim.max_steps": _pos_int(none=True),
    "optim.warmup_epochs": Field("float", lo=0),
    "optim.min_lr_ratio": Field("float", lo=0, hi=1),
    "optim.lars_eta": Field("float", lo=0, lo_open=True),
    "ema.base": Field("float", lo=0, hi=1),
    "ema.end": Field("float", lo=0, hi=1),
    "train.amp": Field("bool", auto=True),
    "train.channels_last": Field("bool", auto=True),
    "train.ckpt_every": _pos_int(),
    "train.log_every": _pos_int(),
    "train.knn_every": Field("int", lo=0),
    "train.knn_bank": _pos_int(),
    "train.knn_k": _pos_int(),
    "train.knn_t": Field("float", lo=0, lo_open=True),
    "train.progress": Field("bool"),
    "train.deterministic": Field("bool"),
    "train.threads": _pos_int(none=True),
    "train.dtype": Field("str", choices=("float32", "float64")),
    "train.knn_split": Field("str", choices=("test", "val")),
    "train.knn_val": _pos_int(),
}


def validate(cfg: Dict[str, Any]) -> None:
    """Check every key against :data:`SCHEMA` (one error naming the key and value) and store the typed
    values in ``cfg``; then the cross-key checks (registries, method form, augmentation keys)."""
    for key, field in SCHEMA.items():
        *secs, leaf = key.split(".")
        node = cfg
        for sec in secs:
            node = node[sec]
        node[leaf] = field.check(key, node[leaf])
    BACKBONES.get(cfg["model"]["arch"])
    cls = METHODS.get(cfg["method"]["name"])
    form = cfg["method"]["form"]
    if form is not None and form not in cls.forms:
        raise UserError(f"config key 'method.form' must be one of {cls.forms}, got {form!r}")
    o = cfg["optim"]
    if o["warmup_epochs"] > o["epochs"]:
        raise UserError(f"config key 'optim.warmup_epochs' must be <= optim.epochs ({o['epochs']:g}), "
                        f"got {o['warmup_epochs']!r}")
    if not isinstance(cfg["method"]["params"], dict):
        raise UserError(f"config key 'method.params' must be a mapping, got {cfg['method']['params']!r}")
    known = set(AugmentConfig.__dataclass_fields__) - {"size"}  # the size is data.size
    for k, v in cfg["data"]["aug"].items():
        if k not in known:
            raise UserError(f"unknown config key 'data.aug.{k}'{did_you_mean(k, sorted(known), 'data.aug.')}")
        hi = 1.0 if k.startswith("p_") or k in ("scale_min", "scale_max") else None
        lo_open = k in ("scale_min", "scale_max", "ratio_min", "ratio_max")
        cfg["data"]["aug"][k] = Field("float", lo=0, lo_open=lo_open, hi=hi).check(f"data.aug.{k}", v)
    aug = cfg["data"]["aug"]
    for a, b in (("scale_min", "scale_max"), ("ratio_min", "ratio_max"), ("blur_sigma_min", "blur_sigma_max")):
        lo = aug.get(a, AugmentConfig.__dataclass_fields__[a].default)
        hi = aug.get(b, AugmentConfig.__dataclass_fields__[b].default)
        if lo > hi:
            raise UserError(f"config key 'data.aug.{a}' must be <= data.aug.{b} ({hi:g}), got {lo!r}")
