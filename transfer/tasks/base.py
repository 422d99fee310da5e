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

    def resolve_settings(self, overrides: Dict[str, Any], max_iter: Optional[int] = None) -> Dict[str, Any]:
        """The task's settings with ``overrides`` applied; an unknown key is an error naming the
        closest known one."""
        import difflib

        from ..errors import UserError

        s = dict(self.settings)
        for k, v in overrides.items():
            if k not in s:
                close = difflib.get_close_matches(k, list(s), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise UserError(f"unknown setting {k!r} for task {self.name}{hint}; known: {sorted(s)}")
            s[k] = v
        if max_iter is not None:
            s["max_iter"] = int(max_iter)
        return s

    def require_data(self, data: Optional[str]) -> Path:
        """Where the data is, or an error printing the exact layout expected."""
        from ..errors import TaskUnavailable

        where = self.locate(str(data) if data is not None else None)
        if where is None:
            raise TaskUnavailable(f"data for {self.name} not found at {data or self.data_dir}; expected layout:\n{self.layout}")
        return where

    def locate(self, data: Optional[str]) -> Optional[Path]:
        if self.find_data is not None:
            return self.find_data(data)
        p = Path(data).expanduser() if data else data_root() / self.data_dir
        return p if p.exists() else None


TASKS: Registry[Task] = Registry("task")


def register_task(task: Task) -> Task:
    TASKS.register(task.name)(task)
    return task
