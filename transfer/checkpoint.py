"""Checkpoints: atomic writes, safe loading, and the backbone export every other part reads.

Two files per run:
- ``checkpoint.pt``: the full training state for exact resume, written with ``torch.save`` and
  read back only with ``torch.load(..., weights_only=True)`` (no code from a checkpoint runs); it
  carries a sha256 of its own contents (``state_sha256``), checked by every reader, because a torch
  zip is not checksummed on load: a flipped byte in a tensor record would otherwise load silently;
- ``backbone.safetensors``: the online backbone with torchvision key names, and its metadata
  (method, form, arch, config, epochs, images seen, dataset, git commit, weights sha256) inside
  the safetensors header, all values strings (JSON where structured).
"""
from __future__ import annotations

import fcntl
import functools
import hashlib
import inspect
import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from .backbones import ResNetBackbone, backbone_from_arch
from .errors import UserError

EXPORT_FORMAT = "transfer.backbone/1"
_UMASK = os.umask(0)
os.umask(_UMASK)  # read once at import, never changed while other threads write files


def atomic_write(path: Path, write_fn) -> None:
    """Write through a temp file in the same folder, fsync, then rename: never a partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp's 0600 would make every written file private
    try:
        write_fn(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # a writer that replaces the file (safetensors) makes it 0600 again
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_text(path: Path, text: str) -> None:
    def w(tmp: str) -> None:
        with open(tmp, "w") as f:
            f.write(text)

    atomic_write(path, w)


def stamp_matches(stamp: Path, params: Dict[str, Any], outputs) -> bool:
    """True when a generated folder is complete and was made with ``params``: every path in
    ``outputs`` exists and the JSON ``stamp`` (written last, with :func:`atomic_write_text`) holds
    ``params``. An unreadable stamp counts as no stamp."""
    if not (Path(stamp).is_file() and all(Path(p).is_file() for p in outputs)):
        return False
    try:
        return json.loads(Path(stamp).read_text()) == params
    except json.JSONDecodeError:
        return False


def exclusive_build(folder_arg: str):
    """Decorator for a writer of a generated folder (scenes, tiles): it runs under an exclusive
    ``flock`` on ``<folder>/.write.lock``, so processes that ask for the same folder at once (the
    demo's parallel fine-tuning runs on a fresh machine) wait for the first to finish it, then find
    its stamp, instead of rewriting files another is reading. ``folder_arg`` names the writer's
    folder parameter."""

    def deco(fn):
        sig = inspect.signature(fn)

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            folder = Path(sig.bind(*args, **kwargs).arguments[folder_arg])
            folder.mkdir(parents=True, exist_ok=True)
            with open(folder / ".write.lock", "a") as fh:
                fcntl.flock(fh, fcntl.LOCK_EX)  # released when the file closes
                return fn(*args, **kwargs)

        return wrapper

    return deco


STATE_DIGEST_KEY = "state_sha256"


def _feed(h: "hashlib._Hash", obj: Any) -> None:
    """Hash ``obj`` by value: tensors by dtype, shape and bytes; containers in a fixed order."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(obj, dict):
        h.update(f"D{len(obj)}".encode())
        for k in sorted(obj, key=repr):
            _feed(h, k)
            _feed(h, obj[k])
    elif isinstance(obj, (list, tuple)):
        h.update(f"{'L' if isinstance(obj, list) else 'U'}{len(obj)}".encode())
        for v in obj:
            _feed(h, v)
    else:  # str, int, float, bool, None, bytes ...: their repr is their value
        h.update(f"{type(obj).__name__}:{obj!r};".encode())


def state_digest(state: Dict[str, Any]) -> str:
    """sha256 over everything in a training state except the digest itself."""
    h = hashlib.sha256()
    _feed(h, {k: v for k, v in state.items() if k != STATE_DIGEST_KEY})
    return h.hexdigest()


def verify_state_digest(state: Any, origin: Any) -> None:
    """Raise one clear error when a state carries a digest its contents do not match; a state
    without one (written before digests existed) is accepted as before."""
    if not isinstance(state, dict) or STATE_DIGEST_KEY not in state:
        return
    if state[STATE_DIGEST_KEY] != state_digest(state):
        raise UserError(f"{origin}: contents do not match the sha256 stored in the checkpoint "
                        "(file altered or corrupted on disk); refusing to use it")


def save_state(path: Path, state: Dict[str, Any]) -> None:
    """Write ``state`` atomically, with a digest of its contents stored under ``state_sha256``."""
    sealed = {**state, STATE_DIGEST_KEY: state_digest(state)}
    atomic_write(path, lambda tmp: torch.save(sealed, tmp))


def load_state(path: Path) -> Dict[str, Any]:
    """Load a full training state; any corruption becomes one clear error naming the file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise UserError(f"cannot read checkpoint {path}: corrupt or truncated (empty file)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, wrong format, pickled code objects, ...
        first = (str(e).strip().splitlines() or [""])[0][:160]
        raise UserError(f"cannot read checkpoint {path}: corrupt or truncated ({type(e).__name__}{': ' + first if first else ''})") from None
    if not isinstance(state, dict) or "step" not in state or "model" not in state:
        raise UserError(f"{path} is not a transfer training checkpoint (keys 'model' and 'step' missing)")
    verify_state_digest(state, path)
    state.pop(STATE_DIGEST_KEY, None)
    return state


def weights_sha256(sd: Dict[str, torch.Tensor]) -> str:
    """A content hash of a state dict: key names, dtypes, shapes and bytes, in sorted key order."""
    h = hashlib.sha256()
    for k in sorted(sd):
        t = sd[k].detach().cpu().contiguous()
        h.update(k.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
            capture_output=True, text=True, timeout=5,
        )
        return out.stdout.strip() if out.returncode == 0 else "unknown"
    except Exception:
        return "unknown"


def export_backbone(path: Path, backbone: ResNetBackbone, meta: Dict[str, Any]) -> Dict[str, str]:
    """Write ``backbone.safetensors``: torchvision key names, metadata in the header."""
    sd = {k: v.detach().cpu().contiguous().clone() for k, v in backbone.state_dict().items()}
    header: Dict[str, str] = {
        "format": EXPORT_FORMAT,
        "arch": json.dumps(backbone.arch_dict()),
        "weights_sha256": weights_sha256(sd),
        "git_commit": git_commit(),
    }
    for k, v in meta.items():
        header[k] = v if isinstance(v, str) else json.dumps(v)
    atomic_write(path, lambda tmp: save_file(sd, tmp, metadata=header))
    return header


def read_safetensors(path: Path) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    """(state dict, header metadata with JSON values decoded); a bad file is one clear error."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"backbone file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
        sd = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise UserError(f"cannot read {path}: not a valid safetensors file, corrupt or truncated ({e})") from None
    meta: Dict[str, Any] = {}
    for k, v in raw.items():
        try:
            meta[k] = json.loads(v)
        except (json.JSONDecodeError, TypeError):
            meta[k] = v
    return sd, meta


def read_export(path: Path) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    """Read an export: (state dict, metadata with JSON values decoded). Verifies the hash."""
    sd, meta = read_safetensors(path)
    want = meta.get("weights_sha256")
    if want and weights_sha256(sd) != want:
        raise UserError(f"{path}: weights do not match the sha256 in their metadata (file altered?)")
    return sd, meta


def load_backbone(path: Path, arch: Optional[dict] = None) -> Tuple[ResNetBackbone, Dict[str, Any]]:
    """Rebuild the backbone of an export (or a run folder / full checkpoint) with its weights."""
    path = Path(path)
    if path.is_dir():
        path = path / "backbone.safetensors"
    sd, meta = read_export(path)
    arch = arch or meta.get("arch")
    if not isinstance(arch, dict):
        raise UserError(f"{path}: no 'arch' in the metadata; pass the architecture explicitly")
    bb = backbone_from_arch(arch)
    missing, unexpected = bb.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise UserError(f"{path}: weights do not fit arch {arch}: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return bb, meta
