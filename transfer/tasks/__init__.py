"""Transfer tasks: a task is data, not code -- a registered name with its dataset and split loader,
its engines, schedule and metric (:mod:`transfer.tasks.base`). Detection tasks are registered in
:mod:`transfer.tasks.detection`, segmentation tasks in :mod:`transfer.tasks.segmentation`;
:func:`run_task` runs any of them (the CLI's ``transfer run`` and the demo call it).
"""
from __future__ import annotations

from . import detection, segmentation  # noqa: F401  (register the tasks)
from .base import TASKS, Splits, Task, data_root, default_out, run_task

__all__ = ["TASKS", "Splits", "Task", "data_root", "default_out", "run_task"]
