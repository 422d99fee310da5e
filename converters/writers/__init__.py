"""Writers: canonical (torchvision-named) backbone -> detectron2 / mmseg / timm / torchvision files."""
from __future__ import annotations

from transfer.registry import Registry

from .base import Writer
from .detectron2 import Detectron2Writer
from .mmseg import MMSegWriter
from .timm import TimmWriter
from .torchvision import TorchvisionWriter

WRITERS: "Registry[Writer]" = Registry("converter target")
for _cls in (Detectron2Writer, MMSegWriter, TimmWriter, TorchvisionWriter):
    WRITERS.register(_cls.name)(_cls())


def get_writer(name: str) -> Writer:
    return WRITERS.get(name)


__all__ = ["WRITERS", "Writer", "get_writer"]
