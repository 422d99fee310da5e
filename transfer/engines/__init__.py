"""Engines are adapters that train and evaluate a task: ``ENGINES`` maps a name to a callable
``available() -> (bool, reason)``; the run function lives beside it in the engine's module."""
from __future__ import annotations

from typing import Callable, Dict, Tuple

ENGINES: Dict[str, Callable[[], Tuple[bool, str]]] = {}


def register_engine(name: str, available: Callable[[], Tuple[bool, str]]) -> None:
    ENGINES[name] = available
