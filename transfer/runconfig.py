"""The pretraining config as typed, frozen sections, read once: ``RunConfig.from_dict(cfg)`` runs
:func:`transfer.config.validate` (which checks every key against :data:`transfer.config.SCHEMA` and
coerces it) on a copy of ``cfg`` and fills these dataclasses, so the trainer reads ``c.optim.batch_size``
(an ``int``) instead of casting ``cfg["optim"]["batch_size"]`` where it is used.

The field names and types mirror ``SCHEMA``; ``tests/core/test_runconfig.py`` fails when the two drift
apart (a key added to one and not the other, or a field whose annotation is not the schema's kind).
The plain dict stays what is saved (checkpoint, ``config.yaml``, export metadata).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, fields
from typing import Any, Dict, Optional, Union

from .config import validate


@dataclass(frozen=True)
class MethodSection:
    name: str
    form: Optional[str]
    momentum: Optional[bool]
    params: Dict[str, Any]  # free-form: each method checks its own parameters


@dataclass(frozen=True)
class ModelSection:
    arch: str
    width: float
    zero_init_residual: bool
    proj_hidden: int
    proj_dim: int
    proj_layers: int
    pred_hidden: int
    sync_bn: bool


@dataclass(frozen=True)
class DataSection:
    name: str
    root: Optional[str]
    size: int
    load_size: int
    workers: int
    aug: Dict[str, float]  # overrides of transfer.data.augment.AugmentConfig, checked by validate


@dataclass(frozen=True)
class OptimSection:
    name: str
    base_lr: float
    momentum: float
    weight_decay: float
    batch_size: int
    epochs: float
    max_steps: Optional[int]
    warmup_epochs: float
    min_lr_ratio: float
    lars_eta: float


@dataclass(frozen=True)
class EmaSection:
    base: float
    end: float


@dataclass(frozen=True)
class TrainSection:
    amp: Union[bool, str]  # True, False or "auto"
    channels_last: Union[bool, str]
    ckpt_every: int
    log_every: int
    knn_every: int
    knn_bank: int
    knn_k: int
    knn_t: float
    progress: bool
    deterministic: bool
    threads: Optional[int]
    dtype: str
    knn_split: str
    knn_val: int


@dataclass(frozen=True)
class RunConfig:
    name: Optional[str]
    out_dir: str
    seed: int
    method: MethodSection
    model: ModelSection
    data: DataSection
    optim: OptimSection
    ema: EmaSection
    train: TrainSection

    @classmethod
    def from_dict(cls, cfg: Dict[str, Any]) -> "RunConfig":
        """The typed view of a full config (``load_config``'s output); a UserError naming the key
        for a value outside its schema. ``cfg`` itself is not modified."""
        typed = copy.deepcopy(cfg)
        validate(typed)
        kw: Dict[str, Any] = {}
        for f in fields(cls):
            sub = SECTIONS.get(f.name)
            kw[f.name] = sub(**typed[f.name]) if sub is not None else typed[f.name]
        return cls(**kw)


SECTIONS = {"method": MethodSection, "model": ModelSection, "data": DataSection, "optim": OptimSection,
            "ema": EmaSection, "train": TrainSection}

