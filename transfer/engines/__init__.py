"""Engines are adapters that train and evaluate a task; the contract and the registry are in
:mod:`transfer.engines.base`. Importing this package registers every engine below."""
from __future__ import annotations

from .base import ENGINES, Engine, Job, register_engine, select_engine
from . import det_detectron2, det_torchvision, seg_embedded, seg_mmseg  # noqa: E402,F401  (register)

__all__ = ["ENGINES", "Engine", "Job", "register_engine", "select_engine"]
