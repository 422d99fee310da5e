"""The task record and registry shared by detection and segmentation.

A :class:`Task` names its kind, its engines in order of preference (the first importable one is
``--engine auto``), its default schedule and settings (overridable with ``key=value``), how to
find its data (``--data PATH``, else ``$TRANSFER_DATA/<data_dir>``, else ``~/.cache/transfer/data``
... or data shipped in a wheel), and the exact layout it expects when the data is missing.
``runner(task, ckpt, engine, data, out_dir, settings) -> results dict`` does the work; both
engines of a kind write the same result keys.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

from ..registry import Registry


def data_root() -> Path:
    """``$TRANSFER_DATA`` or ``~/.cache/transfer/data``: where task datasets live by default."""
    return Path(os.environ.get("TRANSFER_DATA") or Path.home() / ".cache" / "transfer" / "data")


@dataclass
class Task:
    name: str
    kind: str  # "det" | "seg"
    engines: Tuple[str, ...]  # preference order; "auto" picks the first importable one
    description: str
    data_dir: str  # folder name under data_root(), unless find_data says otherwise
    layout: str  # the exact layout expected, printed when data is missing
    settings: Dict[str, Any] = field(default_factory=dict)  # schedule, model, metric settings
    runner: Optional[Callable[..., Dict[str, Any]]] = None
    find_data: Optional[Callable[[Optional[str]], Optional[Path]]] = None  # bundled / synthetic sets

    def locate(self, data: Optional[str]) -> Optional[Path]:
        if self.find_data is not None:
            return self.find_data(data)
        p = Path(data).expanduser() if data else data_root() / self.data_dir
        return p if p.exists() else None


TASKS: Registry[Task] = Registry("task")


def register_task(task: Task) -> Task:
    TASKS.register(task.name)(task)
    return task
