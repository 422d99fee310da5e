"""A restricted unpickler for detectron2 ``.pkl`` weights: plain containers and numpy arrays only.

detectron2 ``.pkl`` files (``tools/convert-torchvision-to-d2.py``, MoCo's
``detection/convert-pretrain-to-detectron2.py``) are ``pickle.dump`` of
``{"model": {name: numpy array}, "__author__": str, "matching_heuristics": bool}``. Pickle can call
any importable function while loading, so :class:`SafeUnpickler` overrides ``find_class`` (the only
way a pickle reaches code) with an allow-list of the numpy reconstructors; everything else
(``os.system``, ``builtins.eval``, ``subprocess.Popen`` ...) is refused before it is looked up,
so nothing from the file runs. Follows the pattern in the Python docs, "Restricting Globals".
"""
from __future__ import annotations

import io
import pickle
from typing import Any, Callable, Dict, Tuple

import numpy as np

from transfer.errors import UserError


def _allowed() -> Dict[Tuple[str, str], Callable[..., Any]]:
    table: Dict[Tuple[str, str], Any] = {
        ("collections", "OrderedDict"): __import__("collections").OrderedDict,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }
    # numpy 1.x pickles name numpy.core.*, numpy 2.x numpy._core.*; both point to one function.
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        table[(mod, "_reconstruct")] = np.ndarray.__reduce__(np.zeros(1))[0]
        table[(mod, "scalar")] = _scalar()
    for mod in ("numpy.core.numeric", "numpy._core.numeric"):
        table[(mod, "_frombuffer")] = _frombuffer
    return table


def _scalar() -> Callable[..., Any]:
    reduced = np.float32(0).__reduce__()
    return reduced[0]


def _frombuffer(buf: Any, dtype: Any, shape: Tuple[int, ...], order: str) -> np.ndarray:
    """numpy's protocol-5 reconstructor (``numpy._core.numeric._frombuffer``), re-implemented."""
    arr = np.frombuffer(buf, dtype=dtype)
    return arr.reshape(shape, order=order) if shape else arr.reshape(())


class SafeUnpickler(pickle.Unpickler):
    """Unpickler whose ``find_class`` admits only the allow-list above."""

    _ALLOWED: Dict[Tuple[str, str], Callable[..., Any]] = {}

    def find_class(self, module: str, name: str) -> Any:
        if not SafeUnpickler._ALLOWED:
            SafeUnpickler._ALLOWED = _allowed()
        fn = SafeUnpickler._ALLOWED.get((module, name))
        if fn is None:
            raise pickle.UnpicklingError(f"refused global '{module}.{name}' (only numpy arrays and plain containers are allowed)")
        return fn

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("refused persistent id (a torch.save file, not a plain pickle)")


def safe_load(data: bytes, origin: str) -> Any:
    """Unpickle ``data`` with :class:`SafeUnpickler`; any refusal or corruption is a UserError."""
    try:
        return SafeUnpickler(io.BytesIO(data), encoding="latin1").load()
    except pickle.UnpicklingError as e:
        raise UserError(f"{origin}: refused to unpickle: {e}") from None
    except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError, MemoryError) as e:
        raise UserError(f"{origin}: corrupt or truncated pickle ({type(e).__name__}: {str(e)[:160]})") from None
