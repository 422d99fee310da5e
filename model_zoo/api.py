"""The Python API in one module (``from model_zoo import api``): the same functions as :mod:`model_zoo`."""
from __future__ import annotations

from . import get, list_models, load, load_backbone, publish, resolve, show, verify_folder

__all__ = ["get", "list_models", "load", "load_backbone", "publish", "resolve", "show", "verify_folder"]
