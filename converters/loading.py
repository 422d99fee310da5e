"""Open a checkpoint file without running code from it, whatever its container.

- safetensors (our ``backbone.safetensors`` export, timm/Hugging Face ``model.safetensors``):
  header + raw bytes, no code possible; metadata strings come back as well;
- torch zip or legacy ``torch.save`` files (``.pth``, ``.pt``, ``.ckpt``, ``.pth.tar``): only
  ``torch.load(weights_only=True)``, with ``argparse.Namespace`` admitted because DINO
  (``main_dino.py``: ``save_dict['args']``) and timm (``utils/checkpoint_saver.py``: ``'args'``)
  store their command line that way; any other class is refused and named in the error;
- plain pickles (detectron2 ``.pkl``): :mod:`converters.safe_pickle`.
The container is sniffed from the first bytes, not trusted from the file name.
"""
from __future__ import annotations

import argparse
import pickle
import struct
import zipfile
from pathlib import Path
from typing import Any, Dict, Tuple

import torch

from transfer.checkpoint import read_safetensors
from transfer.errors import UserError

from .safe_pickle import safe_load

# torch.save(..., _use_new_zipfile_serialization=False) starts by pickling this magic number
_LEGACY_TORCH_HEAD = b"\x80\x02\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little")


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
    raise UserError(f"{path}: not a safetensors, torch or pickle file (first bytes {head[:8]!r})")


def load_file(path: Path) -> Tuple[Any, Dict[str, Any], str]:
    """(top-level object, safetensors metadata or {}, container kind)."""
    path = Path(path)
    if path.is_dir():
        for name in ("backbone.safetensors", "checkpoint.pt"):
            if (path / name).is_file():
                path = path / name
                break
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    kind = sniff(path)
    if kind == "safetensors":
        return read_safetensors(path) + (kind,)
    if kind == "pickle":
        return safe_load(path.read_bytes(), str(path)), {}, kind
    return _load_torch(path), {}, kind


def _load_torch(path: Path) -> Any:
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        try:
            bad = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
        except Exception:
            bad = []
        bad = [b for b in bad if b != "argparse.Namespace"]
        what = f"it references {', '.join(bad[:5])}" if bad else str(e).splitlines()[0][:200]
        raise UserError(
            f"{path}: refused by torch.load(weights_only=True): {what}. Nothing from it was executed; "
            "re-save only its state_dict in the codebase that wrote it"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, KeyError) as e:
        raise UserError(f"cannot read {path}: corrupt or truncated ({type(e).__name__}: {str(e).splitlines()[0][:160]})") from None
