"""The task record and registry shared by detection and segmentation.

A :class:`Task` is data: its kind, its engines in order of preference (``--engine auto`` takes
the first available one that builds the backbone, :func:`transfer.engines.select_engine`), its
default schedule and settings (overridable with ``key=value``), how to find its data
(``--data PATH``, else ``$TRANSFER_DATA/<data_dir>``, else ``~/.cache/transfer/data`` ... or data
shipped in a wheel), the exact layout it expects when the data is missing, and its own split
loader ``load_splits(data, settings, out_dir, log) -> Splits``. ``runner`` is its kind's runner
(``transfer.tasks.detection.run_detection``, ``transfer.tasks.segmentation.runner``): source ->
splits -> engine -> results and report; every engine of a kind returns the same result keys.
``options`` holds what an engine needs to know of the task beyond the splits (mmseg's layout).

:func:`run_task` is the one entry point (CLI, demo, study).
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
import re
from typing import Any, Callable, Dict, Optional, Tuple

from ..errors import TaskUnavailable, UserError
from ..registry import Registry
from ..sources import FeatureSource, load_source
from ..suggest import did_you_mean


def data_root() -> Path:
    """``$TRANSFER_DATA`` or ``~/.cache/transfer/data``: where task datasets live by default."""
    return Path(os.environ.get("TRANSFER_DATA") or Path.home() / ".cache" / "transfer" / "data")


@dataclass
class Splits:
    """What a task's loader read: the training and test splits (engine-ready), and whether the
    test split is scored with the VOC07 metric too."""

    train: Any
    test: Any
    voc_metric: bool = False


SplitLoader = Callable[[Path, Dict[str, Any], Path, Callable[[str], None]], Splits]


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
    load_splits: Optional[SplitLoader] = None
    options: Dict[str, Any] = field(default_factory=dict)

    def resolve_settings(self, overrides: Dict[str, Any], max_iter: Optional[int] = None) -> Dict[str, Any]:
        """The task's settings with ``overrides`` applied; an unknown key is an error naming the
        closest known one."""
        s = dict(self.settings)
        for k, v in overrides.items():
            if k not in s:
                raise UserError(f"unknown setting {k!r} for task {self.name}{did_you_mean(k, s)}; known: {sorted(s)}")
            s[k] = v
        if max_iter is not None:
            try:
                s["max_iter"] = int(max_iter)
            except (TypeError, ValueError):
                raise UserError(f"max_iter={max_iter!r}: must be a whole number of iterations") from None
        return s

    def require_data(self, data: Optional[str]) -> Path:
        """Where the data is, or :class:`TaskUnavailable` printing the exact layout expected."""
        where = self.locate(str(data) if data is not None else None)
        if where is None:
            raise TaskUnavailable(f"data for {self.name} not found at {data or self.data_dir}; expected layout:\n{self.layout}")
        return where

    def locate(self, data: Optional[str]) -> Optional[Path]:
        if self.find_data is not None:
            return self.find_data(data)
        p = Path(data).expanduser() if data else data_root() / self.data_dir
        return p if p.exists() else None


def resolve_backbone(task: Task, ckpt: Any, settings: Dict[str, Any]) -> FeatureSource:
    """The backbone a task fine-tunes (any ``--ckpt`` form, or a resolved source); raw pixels are
    refused; a backbone without normalisation statistics (random init) gets the task's
    ``default_mean`` / ``default_std`` when it has them. Shared by every kind's runner."""
    src = ckpt if isinstance(ckpt, FeatureSource) else load_source(str(ckpt))
    if src.backbone is None:
        raise UserError(f"--ckpt {src.spec!r}: {task.name} fine-tunes a backbone (a checkpoint or random:ARCH), "
                        f"not raw pixels")
    if settings.get("default_mean") and not src.meta.get("mean"):
        src = dataclasses.replace(src, meta={**src.meta, "mean": settings["default_mean"], "std": settings["default_std"]})
    return src


TASKS: Registry[Task] = Registry("task")


def register_task(task: Task) -> Task:
    TASKS.register(task.name)(task)
    return task


def default_out(task: str, ckpt: str) -> Path:
    """Inside the run folder when ``ckpt`` is one (so ``transfer zoo publish`` finds the result),
    else ``runs/transfer/<task>/<ckpt name>``."""
    p = Path(ckpt)
    if p.is_dir() and (p / "backbone.safetensors").exists():
        return p / "transfer" / task
    tag = p.parent.name if p.is_file() else (p.name if p.exists() else ckpt)
    return Path("runs") / "transfer" / task / re.sub(r"[^A-Za-z0-9._-]+", "_", tag).strip("_")


def run_task(name: str, ckpt: Any, *, data: Optional[str] = None, out_dir: Optional[str] = None,
             max_iter: Optional[int] = None, device: str = "cpu", engine: str = "auto", eval_only: bool = False,
             **settings: Any) -> Dict[str, Any]:
    """Run task ``name`` on the backbone ``ckpt`` (any ``--ckpt`` form, or a resolved
    :class:`transfer.sources.FeatureSource`): the same as ``transfer run NAME --ckpt CKPT ...``.

    ``settings`` override the task's (an unknown key is a :class:`UserError` naming the closest);
    ``out_dir`` defaults to :func:`default_out`. A missing engine or missing data raises
    :class:`TaskUnavailable`. Returns the results dict (also written to ``<out_dir>/results.json``)."""
    task = TASKS.get(name)
    s = task.resolve_settings(settings, max_iter)
    where = task.require_data(data)
    out = Path(out_dir) if out_dir is not None else default_out(task.name, str(getattr(ckpt, "spec", ckpt)))
    assert task.runner is not None, f"task {task.name} registered without its kind's runner"
    return task.runner(task=task, ckpt=ckpt, engine=engine, data=where, out_dir=out, settings=s,
                       eval_only=eval_only, device=device)
