"""The one ``--device`` resolution: ``auto`` -> CUDA when there is one, else the CPU; anything else
must be a torch device that exists here."""
from __future__ import annotations

from typing import Optional

import torch

from .errors import UserError


def resolve_device(device: Optional[str]) -> torch.device:
    """``None``/``"auto"``: ``cuda`` if available, else ``cpu``. A malformed name, or ``cuda`` on a
    machine without CUDA, is a :class:`UserError` naming the flag."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        d = torch.device(device)
    except RuntimeError:
        raise UserError(f"--device {device!r}: not a torch device (cpu, cuda, cuda:1, auto)") from None
    if d.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {device}: CUDA is not available on this machine")
    return d
