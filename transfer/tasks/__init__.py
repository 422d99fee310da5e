"""Transfer tasks: a task is data, not code -- a registered name with its dataset, engines,
schedule and metric. Detection tasks live in ``transfer.tasks.detection``, segmentation tasks in
``transfer.tasks.segmentation``; each registers :class:`Task` objects into :data:`TASKS`.
"""
from __future__ import annotations

import importlib

from .base import TASKS, Task, data_root

for _mod in ("detection", "segmentation"):
    try:
        importlib.import_module(f"{__name__}.{_mod}")
    except ModuleNotFoundError as e:  # a stage not built yet
        if e.name != f"{__name__}.{_mod}":
            raise

__all__ = ["TASKS", "Task", "data_root"]
