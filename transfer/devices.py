"""The one ``--device`` resolution: ``auto`` -> CUDA when there is one, else the CPU; anything else
must be a torch device that exists here. And whether bf16 autocast pays off on a device
(``train.amp: auto``)."""
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


def bf16_native(device: torch.device) -> bool:
    """Whether ``train.amp: auto`` trains in bf16 autocast on ``device``: on CUDA where the GPU has
    bf16; on the CPU where it has AMX tiles (Intel Sapphire Rapids and later), whose bf16 matmuls
    and convolutions oneDNN uses. Measured on a 2-core AMX Xeon: the demo's SimCLR step 1.70x
    faster than fp32 (``transfer bench amp``), its whole pretraining 1.65x, with the same k-NN
    monitor (README, "bf16 on the CPU"). CPUs without AMX emulate or half-support bf16 and stay in
    fp32."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        probe = getattr(torch.cpu, "_is_amx_tile_supported", None)  # private in torch 2.x: absent -> fp32
        return bool(probe()) if probe is not None else False
    return False
