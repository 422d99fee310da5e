"""Test-only stand-in for mmcv's compiled ops (``mmcv._ext``), so mmsegmentation imports on the
3-minute ``mmcv-lite==2.1.0`` install. FCN and UPerNet never call a compiled op; any op that is
called raises ``NotImplementedError`` naming it. Never used by the package itself: with only
mmcv-lite installed, ``transfer`` reports the mmseg engine as unavailable.
"""
from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
import types


def install() -> bool:
    """Install the stand-in if mmcv is importable and its ``_ext`` is missing; True if mmcv's ops
    are usable (real or stand-in)."""
    if importlib.util.find_spec("mmcv") is None:
        return False
    if "mmcv._ext" in sys.modules:
        return True
    try:
        importlib.import_module("mmcv._ext")
        return True
    except ImportError:
        pass
    mod = types.ModuleType("mmcv._ext")
    mod.__doc__ = "stand-in for mmcv's compiled ops (tests only)"
    # a spec without a loader: mmengine's mmcv_full_available() then says "lite", as it should
    mod.__spec__ = importlib.machinery.ModuleSpec("mmcv._ext", None)

    def __getattr__(name: str):
        if name.startswith("__"):
            raise AttributeError(name)

        def op(*args, **kwargs):
            raise NotImplementedError(f"mmcv._ext.{name}: compiled op not available (mmcv-lite stand-in)")

        op.__name__ = name
        return op

    mod.__getattr__ = __getattr__  # type: ignore[attr-defined]
    sys.modules["mmcv._ext"] = mod
    return True
