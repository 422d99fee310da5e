"""The engine contract and registry (issue 16, item 2), in the manner of detectron2's registries.

An :class:`Engine` is a registered record:

- ``name``, ``kind`` (``"det"`` or ``"seg"``: the tasks it can run);
- ``check() -> (ok, reason)``: whether it can run on this machine, checked by doing it; the
  record's :meth:`Engine.available` turns that into ``None`` or the reason;
- ``accepts(arch) -> None | reason``: whether it can build the backbone architecture ``arch``
  (``transfer.backbones`` ``arch_dict()``: ``depth``, ``width``, ``small``);
- ``run(job: Job) -> dict``: train (unless ``job.eval_only``) and evaluate; returns the metrics of
  its kind (every engine of a kind returns the same keys; the kind's runner in ``transfer.tasks``
  adds the facts and writes results and report).

An engine module registers its record at import with :func:`register_engine`;
``transfer/engines/__init__.py`` imports every engine module, so importing
``transfer.engines`` fills :data:`ENGINES`. :func:`select_engine` is the one place that chooses.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from ..errors import TaskUnavailable, UserError
from ..registry import Registry


@dataclass(frozen=True)
class Job:
    """One engine run: the task, the backbone source, the splits its loader read, and how to run."""

    task: Any  # transfer.tasks.base.Task
    source: Any  # transfer.sources.FeatureSource with a backbone
    train: Any
    test: Any
    data: Path
    settings: Dict[str, Any]
    out_dir: Path
    eval_only: bool = False
    device: str = "auto"
    voc_metric: bool = False  # detection: also the VOC07 11-point AP50 (the VOC layout's metric)
    log: Callable[[str], None] = print


def _any_arch(arch: Dict[str, Any]) -> Optional[str]:
    return None


def no_small_stem(arch: Dict[str, Any]) -> Optional[str]:
    """For engines built on the standard ResNet: the small-image stem has no equivalent there."""
    if arch.get("small"):
        return "the small-image ResNet stem (3x3 conv, no max-pool) has no equivalent there"
    return None


@dataclass(frozen=True)
class Engine:
    name: str
    kind: str
    check: Callable[[], Tuple[bool, str]]
    run: Callable[[Job], Dict[str, Any]]
    accepts: Callable[[Dict[str, Any]], Optional[str]] = _any_arch

    def available(self) -> Optional[str]:
        """``None`` when the engine can run here, else the reason it cannot."""
        ok, why = self.check()
        return None if ok else (why or "unavailable")


ENGINES: Registry[Engine] = Registry("engine")


def register_engine(engine: Engine) -> Engine:
    ENGINES.register(engine.name)(engine)
    return engine


def select_engine(task: Any, engine: Optional[str], arch: Dict[str, Any]) -> Engine:
    """The engine that runs ``task`` on a backbone of architecture ``arch``.

    ``auto`` (or ``None``): the first engine in the task's preference order that is available and
    accepts ``arch``. A named engine the task does not list, or one that cannot build ``arch``, is
    a :class:`UserError`; an engine (or all of them) missing here is :class:`TaskUnavailable`."""
    if engine in (None, "auto"):
        why_not: List[str] = []
        for name in task.engines:
            e = ENGINES.get(name)
            why = e.available() or e.accepts(arch)
            if why is None:
                return e
            why_not.append(f"{name}: {why}")
        raise TaskUnavailable(f"no engine available for {task.name} ({'; '.join(why_not)})")
    if engine not in task.engines:
        raise UserError(f"--engine {engine!r}: task {task.name} runs on {', '.join(task.engines)} (or auto), "
                        f"not {engine!r}")
    e = ENGINES.get(engine)
    why = e.available()
    if why is not None:
        raise TaskUnavailable(f"--engine {engine}: not available here ({why})")
    why = e.accepts(arch)
    if why is not None:
        raise UserError(f"--engine {engine}: {why}; choose another engine of {task.name} ({', '.join(task.engines)})")
    return e
