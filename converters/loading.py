"""Open a checkpoint file without running code from it, whatever its container.

- safetensors (our ``backbone.safetensors`` export, timm/Hugging Face ``model.safetensors``):
  header + raw bytes, no code possible; metadata strings come back as well;
- torch zip or legacy ``torch.save`` files (``.pth``, ``.pt``, ``.ckpt``, ``.pth.tar``): only
  ``torch.load(weights_only=True)`` plus an allow-list of data-only types (:data:`DATA_ONLY_GLOBALS`):
  ``argparse.Namespace``, because DINO (``main_dino.py``: ``save_dict['args']``) and timm
  (``utils/checkpoint_saver.py``: ``'args'``) store their command line that way; numpy arrays,
  scalars and dtypes, and mmengine's ``HistoryBuffer`` read as plain data, because every mmengine
  training checkpoint (mmselfsup / mmpretrain ``epoch_N.pth``) holds them: open-mmlab/mmengine
  ``mmengine/runner/runner.py`` ``Runner.save_checkpoint`` stores ``message_hub.state_dict()``,
  whose ``log_scalars`` are ``mmengine/logging/history_buffer.py`` ``HistoryBuffer`` objects (two
  numpy arrays and an int) and whose ``runtime_info`` holds numpy metrics. Any other class is
  refused and named in the error;
- plain pickles (detectron2 ``.pkl``): :mod:`converters.safe_pickle`.
The container is sniffed from the first bytes, not trusted from the file name (recent torch.load
hands any ``*.safetensors`` path to safetensors, so torch files are opened here and passed as a file).
A transfer training checkpoint's stored sha256 is verified on load (``transfer.checkpoint``).
A timm Hugging Face hub folder (``model.safetensors`` / ``pytorch_model.bin`` next to timm's
``config.json``, huggingface/pytorch-image-models ``timm/models/_hub.py`` ``save_for_hf``) carries
no metadata in the weights file, so its ``config.json`` is returned as ``hub_config``.
"""
from __future__ import annotations

import argparse
import json
import pickle
import struct
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch

from transfer.checkpoint import read_safetensors, verify_state_digest
from transfer.errors import UserError

from .safe_pickle import _frombuffer, _scalar, safe_load

# torch.save(..., _use_new_zipfile_serialization=False) starts by pickling this magic number
_LEGACY_TORCH_HEAD = b"\x80\x02\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little")


class HistoryBufferData:
    """What an mmengine ``HistoryBuffer`` holds (``max_length``, ``_log_history``,
    ``_count_history``), restored as attributes only: no mmengine code is imported or run.

    Since mmengine 0.7.3 (``HistoryBuffer.__getstate__``) the state also carries
    ``statistics_methods``, references to its own methods that a protocol-2 pickle spells
    ``getattr(HistoryBuffer, 'min')``; :func:`_history_buffer_attr` reads those as names."""

    def __repr__(self) -> str:
        return f"HistoryBufferData({sorted(vars(self))})"


def _history_buffer_attr(owner: Any, name: Any) -> str:
    """Stands in for ``builtins.getattr`` while loading: only ``HistoryBuffer.<name>`` is answered,
    with the name as a string (nothing is looked up); any other use is refused."""
    if owner is not HistoryBufferData or not isinstance(name, str) or not name.isidentifier():
        raise pickle.UnpicklingError(
            f"refused getattr({getattr(owner, '__name__', type(owner).__name__)}, {name!r}): only mmengine "
            "HistoryBuffer statistics names are read")
    return f"HistoryBuffer.{name}"


def _np_reconstruct() -> Any:
    return np.ndarray.__reduce__(np.zeros(1))[0]


# (object, the dotted name a pickle refers to it by): only constructors of plain data.
DATA_ONLY_GLOBALS: List[Tuple[Any, str]] = [
    (argparse.Namespace, "argparse.Namespace"),
    (np.ndarray, "numpy.ndarray"),
    (np.dtype, "numpy.dtype"),
    (HistoryBufferData, "mmengine.logging.history_buffer.HistoryBuffer"),
    (_history_buffer_attr, "builtins.getattr"),
    (_history_buffer_attr, "__builtin__.getattr"),
]
for _mod in ("numpy.core", "numpy._core"):  # numpy 1.x pickles name numpy.core, 2.x numpy._core
    DATA_ONLY_GLOBALS += [
        (_np_reconstruct(), f"{_mod}.multiarray._reconstruct"),
        (_scalar(), f"{_mod}.multiarray.scalar"),
        (_frombuffer, f"{_mod}.numeric._frombuffer"),
    ]
# the dtype of a pickled array is rebuilt through numpy.dtype but is an instance of its concrete
# class (numpy >= 1.25: numpy.dtypes.Float64DType ...), which the unpickler must let BUILD
DATA_ONLY_GLOBALS += [(t, f"numpy.dtypes.{t.__name__}")
                      for t in sorted({type(np.dtype(c)) for c in np.sctypeDict.values()}, key=repr)]
_ALLOWED_NAMES = {name for _, name in DATA_ONLY_GLOBALS}


def _torch_reason(e: BaseException) -> str:
    """The informative line of a torch.load error (its first lines are a generic preamble)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    for i, ln in enumerate(lines):
        if ln.startswith("WeightsUnpickler error") and i + 1 < len(lines):
            return lines[i + 1][:200]
    return lines[0][:200] if lines else type(e).__name__


WEIGHT_FILES = ("backbone.safetensors", "checkpoint.pt", "model.safetensors", "pytorch_model.bin")


def sniff(path: Path) -> str:
    """'safetensors', 'torch' (zip or legacy torch.save) or 'pickle'."""
    with open(path, "rb") as f:
        head = f.read(64)
    if len(head) < 8:
        raise UserError(f"{path}: file too short ({len(head)} bytes) to be a checkpoint")
    if head[:4] == b"PK\x03\x04":
        return "torch"
    n = struct.unpack("<Q", head[:8])[0]
    if head[8:9] == b"{" and n < 100_000_000:
        return "safetensors"
    if head[:1] == b"\x80":
        return "torch" if head.startswith(_LEGACY_TORCH_HEAD) else "pickle"
    named = " (named .safetensors, but its first bytes are no safetensors header)" if Path(path).suffix == ".safetensors" else ""
    raise UserError(f"{path}: not a safetensors, torch or pickle file{named} (first bytes {head[:8]!r})")


def resolve_input(path: Path) -> Path:
    """The weights file a path names: the file itself, or the known file inside a run/hub folder."""
    path = Path(path)
    if path.is_dir():
        for name in WEIGHT_FILES:
            if (path / name).is_file():
                return path / name
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    return path


def hub_config(path: Path) -> Optional[Dict[str, Any]]:
    """timm's ``config.json`` next to the weights (``architecture`` + ``pretrained_cfg``), if any;
    a hub snapshot links its files into one folder, so the sibling of the named path is the one."""
    cfg = Path(path).parent / "config.json"
    if not cfg.is_file():
        return None
    try:
        data = json.loads(cfg.read_text())
    except (OSError, ValueError):
        return None
    # timm >= 0.9 writes architecture + pretrained_cfg; older save_for_hf dumped pretrained_cfg itself
    # (architecture at top level) with num_classes / num_features added
    if isinstance(data, dict) and isinstance(data.get("architecture"), str) and (
            "pretrained_cfg" in data or "num_features" in data or "num_classes" in data):
        return data
    return None


def load_file(path: Path) -> Tuple[Any, Dict[str, Any], str]:
    """(top-level object, safetensors metadata or {}, container kind)."""
    path = resolve_input(path)
    kind = sniff(path)
    if kind == "safetensors":
        top, meta = read_safetensors(path)
    elif kind == "pickle":
        top, meta = safe_load(path.read_bytes(), str(path)), {}
    else:
        top, meta = _load_torch(path), {}
        if isinstance(top, dict) and (top.get("format") == "transfer.checkpoint/1" or {"model", "step"} <= top.keys()):
            verify_state_digest(top, path)  # our own training state only; a peer's key of that name is theirs
    hub = hub_config(path) if "format" not in meta or meta.get("format") == "pt" else None
    if hub is not None:
        meta = {**meta, "hub_config": hub}
    return top, meta, kind


def _load_torch(path: Path) -> Any:
    named = f" (named {path.suffix} but not a safetensors file)" if path.suffix == ".safetensors" else ""
    try:
        with open(path, "rb") as f, torch.serialization.safe_globals(DATA_ONLY_GLOBALS):
            return torch.load(f, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        try:
            bad = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
        except Exception:
            bad = []
        bad = [b for b in bad if b not in _ALLOWED_NAMES]
        what = f"it references {', '.join(bad[:5])}" if bad else _torch_reason(e)
        raise UserError(
            f"{path}: refused by torch.load(weights_only=True): {what}. Nothing from it was executed; "
            "re-save only its state_dict in the codebase that wrote it"
        ) from None
    except Exception as e:  # truncated zip, bad records, wrong magic ...: one line, no traceback
        first = (str(e).splitlines() or [""])[0][:160]
        raise UserError(f"cannot read {path}{named}: corrupt or truncated torch file ({type(e).__name__}: {first})") from None
